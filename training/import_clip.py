"""Import glide-text2im's released noised CLIP (clip_image_enc.pt, clip_text_enc.pt).

glide ships the two towers as two files whose keys are the towers' own (`blocks.input.w_t`, ...).
`convert_clip_checkpoint(state_dict, tower)` converts ONE of them into this project's key layout
(`image_encoder.<key>` or `text_encoder.<key>`, plus `logit_scale`) and infers the sizes it can see
from the shapes; `merge_clip_halves` joins the image and the text half into one checkpoint.
`clip_tower_of` tells which tower a released file holds; `missing_clip_half` tells a loader which
half a checkpoint still lacks. Towers are named as glide's files: "clip-image", "clip-text" (the
model's kind is always "clip").

Sizes glide does not store: the number of heads (glide's head width is always 64, so
n_head = width / 64), the logit scale (fixed at 100) and the diffusion schedule (1000 cosine steps);
those, and every size of the half not imported, take the released values (NoisedClipConfig defaults).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch

from shards import UserError
from training.nn.clip_encoders import ImageEncoder, TextEncoder
from training.noised_clip_config import NoisedClipConfig, noised_clip_config

TOWERS = {"clip-image": "image_encoder", "clip-text": "text_encoder"}
HEAD_STATE = 64  # glide's n_head_state_{image,text}
_IMAGE_FIELDS = ("image_size", "patch_size", "n_head_state_image", "n_head_image", "n_xf_blocks_image",
                 "n_timesteps", "beta_schedule")
_BLOCK = re.compile(r"^blocks\.block_(\d+)\.")


def convert_clip_checkpoint(state_dict: Mapping[str, Any], tower: str) -> tuple[dict[str, torch.Tensor], Any]:
    """One released noised-CLIP tower -> (state dict in this project's layout, ModelConfig).

    tower: "clip-image" (clip_image_enc.pt) or "clip-text" (clip_text_enc.pt). The result holds that
    tower's keys under `image_encoder.` / `text_encoder.` and `logit_scale`; the ModelConfig (kind
    "clip", CLIP tokenizer) has the sizes read from the shapes and the released sizes elsewhere.

    The two towers become one checkpoint by importing both into the same folder: when the folder
    already holds the other half, combine them with `merge_clip_halves(existing, new)`; a checkpoint
    with one half only loads for nothing (`missing_clip_half` names what is absent). Keys may also
    come already prefixed (`image_encoder.blocks...`, e.g. re-importing an export).

    Every key and shape is checked against the tower the inferred config builds; a missing,
    unexpected, non-float or mis-shaped tensor raises a one-line UserError naming the key.
    """
    if tower not in TOWERS:
        raise UserError(f"noised CLIP tower {tower!r}: expected one of {', '.join(TOWERS)}")
    prefix = TOWERS[tower] + "."
    source = f"{tower} checkpoint"
    tensors = _plain_tensors(state_dict, prefix, source)
    clip_cfg = _infer_image_config(tensors, source) if tower == "clip-image" else _infer_text_config(tensors, source)
    _check_against(_tower(clip_cfg, tower), tensors, source)
    out = {prefix + k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    out["logit_scale"] = torch.tensor(math.log(clip_cfg.logit_scale), dtype=torch.float32)
    return out, clip_cfg.to_model_config()


def merge_clip_halves(first: tuple[Mapping[str, torch.Tensor], Any],
                      second: tuple[Mapping[str, torch.Tensor], Any]) -> tuple[dict[str, torch.Tensor], Any]:
    """Join an imported image tower and text tower: (state_dict, ModelConfig) x 2 -> one.

    Image sizes come from the half holding `image_encoder.*`, text sizes from the other; a later
    half replaces the same tower of an earlier one. The joint width n_embd must agree.
    """
    halves = {}
    for sd, cfg in (first, second):
        for tower in ("image_encoder", "text_encoder"):
            if any(k.startswith(tower + ".") for k in sd):
                halves[tower] = (sd, noised_clip_config(cfg))
    if len(halves) < 2:
        raise UserError("clip checkpoint merge: need one image and one text tower, got "
                        f"{', '.join(sorted(halves)) or 'neither'}")
    (img_sd, img_cfg), (txt_sd, txt_cfg) = halves["image_encoder"], halves["text_encoder"]
    if img_cfg.n_embd != txt_cfg.n_embd:
        raise UserError(f"clip checkpoint merge: image tower projects to {img_cfg.n_embd} dims but the "
                        f"text tower to {txt_cfg.n_embd} (key 'blocks.output.f.w')")
    fields = txt_cfg.to_dict() | {k: getattr(img_cfg, k) for k in _IMAGE_FIELDS}
    fields.update(logit_scale=img_cfg.logit_scale, learn_logit_scale=img_cfg.learn_logit_scale)
    merged_cfg = NoisedClipConfig.from_fields(fields, "clip checkpoint merge")
    merged = {k: v for k, v in img_sd.items() if k.startswith("image_encoder.")}
    merged |= {k: v for k, v in txt_sd.items() if k.startswith("text_encoder.")}
    merged["logit_scale"] = img_sd.get("logit_scale", txt_sd.get("logit_scale"))
    if merged["logit_scale"] is None:
        merged["logit_scale"] = torch.tensor(math.log(merged_cfg.logit_scale))
    return merged, merged_cfg.to_model_config()


def missing_clip_half(state_dict: Mapping[str, Any]) -> str | None:
    """"clip-image" / "clip-text" if that tower is absent from a noised-CLIP state dict, else None."""
    for tower, prefix in TOWERS.items():
        if not any(k.startswith(prefix + ".") for k in state_dict):
            return tower
    return None


def clip_tower_of(state_dict: Mapping[str, Any]) -> str | None:
    """"clip-image" / "clip-text": the tower a released file holds, from its input block's keys.

    Only the image tower has patches and a timestep table, only the text tower a vocabulary; keys
    may carry this project's prefix. None when neither shows (convert_clip_checkpoint then names
    what is missing).
    """
    names = {k.split(".", 1)[1] if k.startswith(tuple(p + "." for p in TOWERS.values())) else k
             for k in state_dict if isinstance(k, str)}
    image = {"blocks.input.patch_proj", "blocks.input.w_t", "blocks.input.pred_state"} & names
    text = "blocks.input.w_voc" in names
    if image and not text:
        return "clip-image"
    if text and not image:
        return "clip-text"
    return None


# ---- helpers --------------------------------------------------------------------------------------
def _plain_tensors(state_dict: Mapping[str, Any], prefix: str, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping):
        raise UserError(f"{source}: expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    out = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise UserError(f"{source}: key {key!r} is not a string")
        name = key[len(prefix):] if key.startswith(prefix) else key
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: key {key!r} is a {type(value).__name__}, not a tensor")
        if not value.is_floating_point():
            raise UserError(f"{source}: key {key!r} has dtype {value.dtype}, expected floating point")
        out[name] = value
    return out


def _need(tensors: dict[str, torch.Tensor], key: str, ndim: int, source: str) -> tuple[int, ...]:
    if key not in tensors:
        raise UserError(f"{source}: missing key {key!r}")
    shape = tuple(tensors[key].shape)
    if len(shape) != ndim:
        raise UserError(f"{source}: key {key!r} has shape {list(shape)}, expected {ndim} dimensions")
    return shape


def _n_blocks(tensors: dict[str, torch.Tensor], source: str) -> int:
    found = {int(m.group(1)) for k in tensors if (m := _BLOCK.match(k))}
    if not found:
        raise UserError(f"{source}: no transformer blocks (keys 'blocks.block_<i>.*')")
    return max(found) + 1  # gaps show up as missing keys of the expected tower


def _heads(width: int, key: str, source: str) -> int:
    if width % HEAD_STATE:
        raise UserError(f"{source}: key {key!r}: width {width} is not a multiple of the head width {HEAD_STATE}")
    return width // HEAD_STATE


def _infer_image_config(tensors: dict[str, torch.Tensor], source: str) -> NoisedClipConfig:
    if "blocks.input.pred_state" in tensors and "blocks.input.w_t" not in tensors:
        raise UserError(f"{source}: key 'blocks.input.pred_state': an un-noised CLIP image tower "
                        "(no timestep table 'blocks.input.w_t')")
    n_timesteps, width = _need(tensors, "blocks.input.w_t", 2, source)
    proj = _need(tensors, "blocks.input.patch_proj", 4, source)
    if proj[1] != 3 or proj[2] != proj[3]:
        raise UserError(f"{source}: key 'blocks.input.patch_proj' has shape {list(proj)}, expected "
                        f"[width, 3, p, p]")
    n_pos = _need(tensors, "blocks.input.w_pos", 2, source)[0]
    side = math.isqrt(max(n_pos - 1, 0))
    if n_pos < 2 or side * side != n_pos - 1:
        raise UserError(f"{source}: key 'blocks.input.w_pos': {n_pos} positions is not 1 + a square")
    n_embd = _need(tensors, "blocks.output.f.w", 2, source)[0]
    return _config(source, image_size=side * proj[2], patch_size=proj[2], n_embd=n_embd,
                   n_head_image=_heads(width, "blocks.input.w_t", source), n_head_state_image=HEAD_STATE,
                   n_xf_blocks_image=_n_blocks(tensors, source), n_timesteps=n_timesteps)


def _infer_text_config(tensors: dict[str, torch.Tensor], source: str) -> NoisedClipConfig:
    n_vocab, width = _need(tensors, "blocks.input.w_voc", 2, source)
    max_text_len = _need(tensors, "blocks.input.w_pos", 2, source)[0]
    n_embd = _need(tensors, "blocks.output.f.w", 2, source)[0]
    return _config(source, n_vocab=n_vocab, max_text_len=max_text_len, n_embd=n_embd,
                   n_head_text=_heads(width, "blocks.input.w_voc", source), n_head_state_text=HEAD_STATE,
                   n_xf_blocks_text=_n_blocks(tensors, source))


def _config(source: str, **fields: Any) -> NoisedClipConfig:
    return NoisedClipConfig.from_fields(fields, source)


def _tower(cfg: NoisedClipConfig, tower: str) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only
        if tower == "clip-image":
            return ImageEncoder(cfg.image_size, cfg.patch_size, cfg.n_embd, cfg.n_head_image,
                                cfg.n_xf_blocks_image, cfg.n_head_state_image, cfg.n_timesteps)
        return TextEncoder(cfg.n_vocab, cfg.max_text_len, cfg.n_embd, cfg.n_head_text,
                           cfg.n_xf_blocks_text, cfg.n_head_state_text)


def _check_against(tower: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    for key, shape in expected.items():
        if key not in tensors:
            raise UserError(f"{source}: missing key {key!r}")
        if tuple(tensors[key].shape) != shape:
            raise UserError(f"{source}: key {key!r} has shape {list(tensors[key].shape)}, "
                            f"expected {list(shape)}")
    for key in tensors:
        if key not in expected:
            raise UserError(f"{source}: unexpected key {key!r}")
