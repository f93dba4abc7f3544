"""The CLIP models image features run on: an open_clip model with local weights, or a clean CLIP
this project trained. Both expose one small interface:

    encoder.encode_pixels(x)   x [B, 3, S, S] float in [0, 1] on encoder.device -> [B, D] (not normalised)
    encoder.encode_text(texts) list of B strings -> [B, D] (not normalised)
    encoder.logit_scale()      the model's softmax temperature exp(logit_scale) (100 for OpenAI's CLIPs)
    encoder.image_size (S), encoder.dim (D), encoder.device

Each applies its own pixel normalisation (open_clip: the model's mean/std; ours: CLIP's statistics on
the 0..255 scale, inside the image tower). `load_encoder(source, device)` builds the one a
filtering.clip_source.ClipSource names.
"""
from __future__ import annotations

from shards import UserError
from filtering.clip_source import GLIDE_CLIP, ClipSource, is_torchscript_archive


def load_encoder(source: ClipSource, device: str):
    if source.family == GLIDE_CLIP:
        return GlideClipEncoder(source, device)
    return OpenClipEncoder(source, device)


class OpenClipEncoder:
    """`open_clip.create_model(arch, pretrained=WEIGHTS)`, eval mode, on `device`."""

    def __init__(self, source: ClipSource, device: str):
        import open_clip
        import torch

        arch = source.arch
        if arch.endswith(".json"):  # a custom config: registered under its file name in this process
            from pathlib import Path

            open_clip.add_model_config(Path(arch).expanduser())
            arch = Path(arch).stem
        try:
            if is_torchscript_archive(source.path):
                model = _load_openai_archive(_random_init(arch), source.path)
            else:  # a state dict (.bin/.pt/.pth: torch.load with weights_only, no pickled code; .safetensors)
                model = open_clip.create_model(arch, pretrained=source.path, device="cpu", weights_only=True)
        except Exception as e:  # whatever the file holds, the message names it and the architecture
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{source.path}: not loadable as {source.arch} weights ({first[:200]})") from None
        self.model = model.to(device).eval()
        self.arch = arch
        self.device = torch.device(device)
        self.image_size = source.crop_size
        self.dim = source.dim
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._tokenizer = None

    def encode_pixels(self, x):
        return self.model.encode_image((x - self.mean) / self.std)

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def encode_text(self, texts: list[str]):
        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self.arch)
        return self.model.encode_text(self._tokenizer(list(texts)).to(self.device))


def _random_init(arch: str):
    """open_clip's model without weights, its "initialized randomly" warning held back: the weights follow."""
    import logging

    import open_clip

    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(arch, device="cpu")
    finally:
        logging.disable(logging.NOTSET)


def _load_openai_archive(model, path: str):
    """OpenAI's released CLIP files are TorchScript archives, which torch.load refuses under
    weights_only: read by torch.jit.load (TorchScript's own unpickler, no Python code), as open_clip does."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's files are TorchScript all the same
        warnings.simplefilter("ignore", FutureWarning)
        state = torch.jit.load(path, map_location="cpu").state_dict()
    buffers_not_saved = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    state = {k: v for k, v in state.items()
             if k not in ("input_resolution", "context_length", "vocab_size") and k not in buffers_not_saved}
    model.load_state_dict(state, strict=True)
    return model


class GlideClipEncoder:
    """A clean CLIP trained here (training.load): the image tower at timestep 0, the text tower with
    the checkpoint's CLIP tokenizer, framed as in training (training.nn.noised_clip)."""

    def __init__(self, source: ClipSource, device: str):
        import torch

        import training

        loaded = training.load(source.path, device=device)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = torch.device(device)
        self.image_size = source.crop_size
        self.dim = source.dim
        self.text_ctx = self.model.clip_config.max_text_len

    def encode_pixels(self, x):
        import torch

        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.model.image_encoder(x * 255.0, t)  # the tower takes 0..255 pixels

    def logit_scale(self) -> float:
        return float(self.model.logit_scale_value().detach())

    def encode_text(self, texts: list[str]):
        from training.nn.noised_clip import clip_tokens_and_mask

        tokens, mask = clip_tokens_and_mask(self.tokenizer, list(texts), self.text_ctx)
        return self.model.encode_text(tokens.to(self.device), mask.to(self.device))
