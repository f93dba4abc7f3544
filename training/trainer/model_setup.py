"""What a run trains: its model config and starting weights (fresh, or `--init CKPT`).

`--init` loads a checkpoint (EMA weights preferred, as fine-tuning starts from them). For the
inpaint kinds a base/upsampler checkpoint is converted (training.inpaint_convert: extra input
channels zero-initialised); an inpainting checkpoint is taken as it is.
"""
from __future__ import annotations

from pathlib import Path

from shards import UserError
from training.trainer.config import TrainConfig

_INPAINT_SOURCE = {"base-inpaint": "base", "upsampler-inpaint": "upsampler"}


def resolve_model_config(cfg: TrainConfig):
    """The ModelConfig of the model this run trains (validated; UserError naming the source)."""
    from training.inpaint_convert import inpaint_config
    from training.model_config import load_model_config

    want = cfg.model_kind
    explicit = cfg.model_name() if (cfg.model if isinstance(cfg.model, str) else cfg.model.get(cfg.kind)) else None
    if cfg.init and not explicit:
        from training.checkpoint import resolve_checkpoint_dir

        source = str(resolve_checkpoint_dir(cfg.init))
    else:
        source = cfg.model_name()
    model_cfg = load_model_config(source)
    if model_cfg.kind == want:
        return model_cfg
    if _INPAINT_SOURCE.get(want) == model_cfg.kind:
        return inpaint_config(model_cfg)
    raise UserError(f"{source}: model kind {model_cfg.kind!r} cannot be trained as {cfg.kind!r} "
                    f"(give --model-config with kind {want!r})")


def initial_state_dict(init: str, model_cfg) -> dict:
    """Weights from checkpoint `init` for a `model_cfg` model (converted for inpainting if needed)."""
    from training.checkpoint import load_state_dict, model_config_of, resolve_checkpoint_dir
    from training.inpaint_convert import inpaint_state_dict

    directory = resolve_checkpoint_dir(init)
    state, meta, name = load_state_dict(directory, use_ema=True)
    src_cfg = model_config_of(directory, meta)
    if src_cfg.kind != model_cfg.kind:
        if _INPAINT_SOURCE.get(model_cfg.kind) != src_cfg.kind:
            raise UserError(f"{directory / name}: a {src_cfg.kind!r} checkpoint cannot initialise a "
                            f"{model_cfg.kind!r} model")
        state = inpaint_state_dict(state, src_cfg)
    return state


def load_initial_weights(model, init: str, model_cfg) -> None:
    """Copy `init`'s weights into `model`; a shape or key mismatch is a UserError naming the checkpoint."""
    from training.checkpoint import check_state_dict, resolve_checkpoint_dir

    state = initial_state_dict(init, model_cfg)
    check_state_dict(model.state_dict(), state, str(Path(resolve_checkpoint_dir(init))))
    model.load_state_dict(state, strict=True)


def tokenizer_base_dir(cfg: TrainConfig) -> str | None:
    """Where the tokenizer's vocabulary files live: the init checkpoint's folder, if any."""
    if not cfg.init:
        return None
    from training.checkpoint import resolve_checkpoint_dir

    return str(resolve_checkpoint_dir(cfg.init))


def train_task(cfg: TrainConfig, model_cfg):
    """The data side of the run (training.data.TrainTask), sized from the model config."""
    from training.data import TrainTask

    overrides = dict(cfg_dropout=cfg.cfg_dropout if cfg.kind != "clip" else 0.0, seed=cfg.seed,
                     random_crop=cfg.random_crop, shuffle_buffer=cfg.shuffle_buffer)
    if cfg.kind.startswith("upsampler") and not (model_cfg.extra or {}).get("low_res_size"):
        overrides["low_res_size"] = model_cfg.image_size // 4  # model_info's default too
    return TrainTask.for_model(cfg.kind, model_cfg, **overrides)



def training_tokenizer(model_cfg, base_dir: str | None = None):
    """The tokenizer the data pipeline encodes captions with: the model's own; for the noised CLIP,
    framed as glide's CLIP expects ([SOT] ids [EOT], mask over SOT..EOT)."""
    from training.tokenizers import build_tokenizer

    tokenizer = build_tokenizer(model_cfg.tokenizer, base_dir=base_dir)
    return ClipFramedTokenizer(tokenizer) if model_cfg.kind == "clip" else tokenizer


class ClipFramedTokenizer:
    """`.batch(texts, ctx)` through training.nn.noised_clip.clip_tokens_and_mask."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def batch(self, texts, text_ctx: int):
        from training.nn.noised_clip import clip_tokens_and_mask

        return clip_tokens_and_mask(self.tokenizer, texts, text_ctx)
