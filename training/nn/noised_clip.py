"""GLIDE's noised CLIP: image/text encoders with a contrastive head, trained on noised images x_t.

`create_noised_clip(cfg)` is the factory `training.factory.create_model` calls for `kind: "clip"`.
Its sizes come from the model config's kind-specific fields (`NoisedClipConfig`, in
training.noised_clip_config: pydantic, no torch); the defaults are the released glide-text2im noised
CLIP. Inside `with torch.device("meta"):` it allocates nothing.

State dict: `image_encoder.<glide key>`, `text_encoder.<glide key>` (see `clip_encoders`) and
`logit_scale` (log of the softmax temperature; glide keeps it fixed at log 100). With `image_tower:
"conv"` the image tower is the project's ConvImageEncoder instead (its own keys; not glide's).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.nn.clip_encoders import ConvImageEncoder, ImageEncoder, TextEncoder
from training.noised_clip_config import LOGIT_SCALE_MAX, NoisedClipConfig, noised_clip_config

CLIP_SOT, CLIP_EOT = 49406, 49407  # its start / end of text ids


def clip_tokens_and_mask(tokenizer: Any, texts: Sequence[str], text_ctx: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (tokens [B, text_ctx] long, mask [B, text_ctx] bool), framed as glide's CLIP.

    glide's `padded_tokens_and_len`: [SOT] + ids[:text_ctx - 2] + [EOT], zero padded; the mask is
    True on SOT..EOT. Unlike the diffusion model's "no caption" input, an empty caption is still
    [SOT, EOT] (the CLIP has no unconditional text). `tokenizer`: the project's CLIP tokenizer
    (`build_tokenizer({"type": "clip"})`).
    """
    if isinstance(texts, str):
        texts = [texts]
    tokens = torch.zeros(len(texts), text_ctx, dtype=torch.long)
    mask = torch.zeros(len(texts), text_ctx, dtype=torch.bool)
    for row, text in enumerate(texts):
        ids = [tokenizer.start_token] + tokenizer.encode(text)[: text_ctx - 2] + [tokenizer.end_token]
        tokens[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = True
    return tokens, mask


def _positive_pairs(logits: torch.Tensor, tokens: torch.Tensor | None,
                    positives: torch.Tensor | None) -> torch.Tensor:
    """[B_img, B_txt] float, 1 where text j is a positive of image i: `positives`, else rows with the
    same tokens, else the diagonal."""
    if positives is not None:
        return positives.to(logits.dtype)
    if tokens is not None:
        return (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1).to(logits.dtype)
    return torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype)


def clip_sigmoid_loss(logits: torch.Tensor, tokens: torch.Tensor | None = None,
                      reduction: str = "mean", positives: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's loss over a [B, B] logit matrix (scale * cos + bias): each pair a binary decision,
    label 1 for the positive pairs (as `clip_contrastive_loss` finds them) and 0 elsewhere, summed
    over texts and averaged over images (reduction "none": the per-image sums)."""
    same = _positive_pairs(logits, tokens, positives)
    per_image = F.binary_cross_entropy_with_logits(logits, same, reduction="none").sum(dim=1)
    return per_image if reduction == "none" else per_image.mean()


def clip_contrastive_loss(logits: torch.Tensor, tokens: torch.Tensor | None = None,
                          reduction: str = "mean", positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a [B, B] image-by-text logit matrix whose diagonal holds the pairs.

    positives [B_img, B_txt] bool (diagonal True): text j counts as a positive of image i wherever
    True, the target spread evenly over each row's (image to text) and each column's (text to image)
    positives; the trainer passes which texts are true of which images
    (training.data.caption_keys). tokens [B, L] instead: rows with the same caption are each other's
    positives. Short captions repeat within a batch ("with a knife"), and as plain InfoNCE's negatives
    they would push apart images that share the very thing the caption names. With neither, or with
    only the diagonal positive, this is CLIP's loss."""
    same = _positive_pairs(logits, tokens, positives)
    image_to_text = same / same.sum(dim=1, keepdim=True)
    text_to_image = (same / same.sum(dim=0, keepdim=True)).t()
    return 0.5 * (F.cross_entropy(logits, image_to_text, reduction=reduction)
                  + F.cross_entropy(logits.t(), text_to_image, reduction=reduction))


class NoisedCLIP(nn.Module):
    """Contrastive image-text model whose image tower sees noised images x_t and their timestep t.

    Inputs: x_t [B, 3, S, S] in the diffusion's [-1, 1] scale, t [B] integer timesteps of the full
    (unrespaced) schedule, tokens [B, L] CLIP BPE ids (SOT ... EOT, zero padded), mask [B, L] bool,
    True on SOT..EOT (only its row sums, the text lengths, are used: attention is causal).
    """

    def __init__(self, config: NoisedClipConfig):
        super().__init__()
        self.clip_config = config  # (create_model also attaches the ModelConfig as .config)
        if config.image_tower == "conv":
            self.image_encoder = ConvImageEncoder(config.image_size, config.conv_widths, config.n_embd,
                                                  config.n_timesteps)
        else:
            self.image_encoder = ImageEncoder(
                image_size=config.image_size, patch_size=config.patch_size, n_embd=config.n_embd,
                n_head=config.n_head_image, n_xf_blocks=config.n_xf_blocks_image,
                n_head_state=config.n_head_state_image, n_timestep=config.n_timesteps, patch_stem=config.patch_stem)
        self.text_encoder = TextEncoder(
            n_vocab=config.n_vocab, max_text_len=config.max_text_len, n_embd=config.n_embd,
            n_head=config.n_head_text, n_xf_blocks=config.n_xf_blocks_text,
            n_head_state=config.n_head_state_text)
        self.logit_scale = nn.Parameter(torch.full((), math.log(config.logit_scale)),
                                        requires_grad=config.learn_logit_scale)
        if config.contrastive_loss == "sigmoid":  # only then: softmax checkpoints keep glide's keys
            self.logit_bias = nn.Parameter(torch.full((), float(config.logit_bias)))

    def logit_scale_value(self) -> torch.Tensor:
        """exp(logit_scale), clamped at CLIP's maximum of 100."""
        return self.logit_scale.clamp(max=math.log(LOGIT_SCALE_MAX)).exp()

    def encode_image(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B, 3, S, S] in [-1, 1], t [B] -> unit-norm image embeddings [B, n_embd]."""
        z = self.image_encoder((x_t + 1) * 127.5, t)
        return z / (torch.linalg.vector_norm(z, dim=-1, keepdim=True) + 1e-12)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, L], mask [B, L] -> unit-norm text embeddings [B, n_embd].

        A row with an all-False mask (the project tokenizer's empty caption) is read as glide frames
        the empty caption: [SOT, EOT].
        """
        text_len = mask.long().sum(dim=-1)
        empty = text_len == 0
        framed = torch.zeros_like(tokens)
        framed[:, 0], framed[:, 1] = CLIP_SOT, CLIP_EOT
        tokens = torch.where(empty[:, None], framed, tokens)
        text_len = torch.where(empty, torch.full_like(text_len, 2), text_len)
        z = self.text_encoder(tokens, text_len)
        return z / (torch.linalg.vector_norm(z, dim=-1, keepdim=True) + 1e-12)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """-> logits [B_img, B_txt] = exp(logit_scale) * cos(image_i, text_j) (+ logit_bias with the
        sigmoid loss: then sigmoid(logits) is the model's probability that the text is true of the image)."""
        z_i = self.encode_image(x_t, t)
        z_t = self.encode_text(tokens, mask)
        logits = self.logit_scale_value() * z_i @ z_t.t().to(z_i.dtype)
        if self.clip_config.contrastive_loss == "sigmoid":
            logits = logits + self.logit_bias.to(logits.dtype)
        return logits

    def example_inputs(self, batch: int = 1) -> tuple[tuple, dict]:
        """Zero inputs of the right shapes on the current default device (parameter/FLOP counts)."""
        cfg = self.clip_config
        x_t = torch.zeros(batch, 3, cfg.image_size, cfg.image_size)
        t = torch.zeros(batch, dtype=torch.long)
        tokens = torch.zeros(batch, cfg.max_text_len, dtype=torch.long)
        mask = torch.ones(batch, cfg.max_text_len, dtype=torch.bool)
        return (x_t, t, tokens, mask), {}

    def contrastive_loss(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                         mask: torch.Tensor, positives: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The configured loss on the batch's matching pairs (`clip_loss_function`).

        Returns (loss scalar with grad, exp(logit_scale) detached, for logging).
        """
        logits = self(x_t, t, tokens, mask)
        loss = clip_loss_function(self.clip_config.contrastive_loss)
        return loss(logits, tokens, positives=positives), self.logit_scale_value().detach()


def clip_loss_function(name: str):
    """"softmax" -> clip_contrastive_loss, "sigmoid" -> clip_sigmoid_loss (NoisedClipConfig.contrastive_loss)."""
    return {"softmax": clip_contrastive_loss, "sigmoid": clip_sigmoid_loss}[name]


def create_noised_clip(cfg: Any) -> NoisedCLIP:
    """Build the noised CLIP described by a ModelConfig (kind "clip"), a mapping or NoisedClipConfig.

    Parameters go to the current default device, so `with torch.device("meta"):` counts parameters
    and FLOPs of the released 64x64 size without allocating memory.
    """
    return NoisedCLIP(noised_clip_config(cfg))
