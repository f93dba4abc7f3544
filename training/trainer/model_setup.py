"""What a run trains: its model config and starting weights (fresh, or `--init CKPT`).

`--init` loads a checkpoint (EMA weights preferred, as fine-tuning starts from them). For the
inpaint kinds a base/upsampler checkpoint is converted (training.inpaint_convert: extra input
channels zero-initialised); an inpainting checkpoint is taken as it is.
"""
from __future__ import annotations

from pathlib import Path

from shards import UserError
from training.model_kind import ModelKind
from training.trainer.config import TrainConfig


def resolve_model_config(cfg: TrainConfig):
    """The ModelConfig of the model this run trains (validated; UserError naming the source)."""
    from training.inpaint_convert import inpaint_config
    from training.model_config import load_model_config

    want = ModelKind(cfg.kind)
    explicit = cfg.model_name() if (cfg.model if isinstance(cfg.model, str) else cfg.model.get(cfg.kind)) else None
    if cfg.init and not explicit:
        from training.checkpoint import resolve_checkpoint_dir

        source = str(resolve_checkpoint_dir(cfg.init))
    else:
        source = cfg.model_name()
    model_cfg = load_model_config(source)
    if model_cfg.kind == want:
        return model_cfg
    if want.inpaint_source == model_cfg.kind:
        return inpaint_config(model_cfg)
    raise UserError(f"{source}: model kind {model_cfg.kind!r} cannot be trained as {cfg.kind!r} "
                    f"(give --model-config with kind {want!r})")


def initial_state_dict(init: str, model_cfg, *, verify: bool = True) -> dict:
    """Weights from checkpoint `init` for a `model_cfg` model (converted for inpainting if needed).

    verify=False: the file was verified earlier in this run (`verify_init_checkpoint`)."""
    from training.checkpoint import load_state_dict, model_config_of, resolve_checkpoint_dir
    from training.inpaint_convert import inpaint_state_dict

    directory = resolve_checkpoint_dir(init)
    state, meta, name = load_state_dict(directory, use_ema=True, verify=verify)
    src_cfg = model_config_of(directory, meta)
    if src_cfg.kind != model_cfg.kind:
        if ModelKind(model_cfg.kind).inpaint_source != src_cfg.kind:
            raise UserError(f"{directory / name}: a {src_cfg.kind!r} checkpoint cannot initialise a "
                            f"{model_cfg.kind!r} model")
        state = inpaint_state_dict(state, src_cfg)
    return state


def load_initial_weights(model, init: str, model_cfg, *, verify: bool = True) -> None:
    """Copy `init`'s weights into `model`; a shape or key mismatch is a UserError naming the checkpoint."""
    from training.checkpoint import check_state_dict, resolve_checkpoint_dir

    state = initial_state_dict(init, model_cfg, verify=verify)
    check_state_dict(model.state_dict(), state, str(Path(resolve_checkpoint_dir(init))))
    model.load_state_dict(state, strict=True)


def verify_init_checkpoint(init: str, *, resuming: bool) -> None:
    """The driver's one check of `--init`, before workers start (they load it unverified).

    Hashes what the run reads: the weights file workers load (not when resuming, which ignores
    them) and the tokenizer files (always read: tokenizer_base_dir). A damaged file is a UserError.
    """
    from training.checkpoint import (TOKENIZER_DIR, read_checkpoint_meta, resolve_checkpoint_dir, verify_files,
                                     weights_file_name)

    directory = resolve_checkpoint_dir(init)
    meta = read_checkpoint_meta(directory)
    names = [name for name in meta["files"] if name.startswith(f"{TOKENIZER_DIR}/")]
    if not resuming:
        names.insert(0, weights_file_name(meta, use_ema=True))
    verify_files(directory, meta, names)


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
                     caption_clauses=cfg.caption_clauses if cfg.kind == "clip" else 0.0,
                     random_crop=cfg.random_crop, shuffle_buffer=cfg.shuffle_buffer,
                     data_loop_period=cfg.data_loop_period)
    if ModelKind(cfg.kind).super_res and not (model_cfg.extra or {}).get("low_res_size"):
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
