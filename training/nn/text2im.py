"""Text-conditional GLIDE networks: base, upsampler, inpainting base and inpainting upsampler.

    model(x_t, timesteps, tokens=None, mask=None, *, text_emb=None, low_res=None,
          inpaint_image=None, inpaint_mask=None) -> [B, 6, H, W]   (eps, then variance interp. v)

Text path (glide-text2im's Text2ImUNet): token + positional embeddings; where mask is False the
position takes the learned padding embedding (xf_padding); a transformer (no attention mask);
final LayerNorm; the LAST token's projection (transformer_proj) is added to the timestep embedding,
and the whole sequence xf_out [B, xf_width, L] becomes extra keys/values in every attention layer.
`encode_text` runs that once, so samplers can pass its result as `text_emb=` at every step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.model_kind import ModelKind
from training.nn.layers import LayerNorm32, convert_modules
from training.nn.text_transformer import Transformer
from training.nn.unet import UNetModel

# Parameter names of the text side ("text" in model info); everything else is "visual".
TEXT_PARAM_PREFIXES = ("transformer.", "token_embedding.", "positional_embedding", "padding_embedding",
                       "final_ln.", "transformer_proj.")


class Text2ImUNet(UNetModel):
    """Base model: x_t [B, 3, H, W] -> [B, out_channels, H, W] conditioned on a caption.

    Attributes used by samplers/trainers: text_ctx, in_channels (channels of x_t, 3), image_size,
    conv_in_channels (channels of the first conv: x_t plus conditioning images).
    """

    extra_in_channels = 0  # conditioning channels concatenated to x_t (set by the variants)

    def __init__(self, *, text_ctx: int, xf_width: int, xf_layers: int, xf_heads: int, xf_final_ln: bool,
                 n_vocab: int, xf_padding: bool = False, image_size: int = 64, in_channels: int = 3,
                 use_checkpoint: bool = False, **unet_kwargs):
        super().__init__(in_channels=in_channels + self.extra_in_channels,
                         encoder_channels=xf_width or None, use_checkpoint=use_checkpoint, **unet_kwargs)
        self.in_channels = in_channels
        self.image_size = image_size
        self.text_ctx = text_ctx
        self.xf_width = xf_width
        self.xf_padding = xf_padding
        if xf_width:
            self.transformer = Transformer(text_ctx, xf_width, xf_layers, xf_heads, use_checkpoint)
            self.final_ln = LayerNorm32(xf_width) if xf_final_ln else None
            self.token_embedding = nn.Embedding(n_vocab, xf_width)
            self.positional_embedding = nn.Parameter(torch.empty(text_ctx, xf_width, dtype=torch.float32))
            self.transformer_proj = nn.Linear(xf_width, self.model_channels * 4)
            if xf_padding:
                self.padding_embedding = nn.Parameter(torch.empty(text_ctx, xf_width, dtype=torch.float32))
            self._init_text_params()

    def _init_text_params(self) -> None:
        # glide leaves these torch.empty (weights always came from training); give them a sane start.
        if self.positional_embedding.device.type == "meta":
            return
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        if self.xf_padding:
            nn.init.normal_(self.padding_embedding, std=0.01)

    def convert_to_dtype(self, dtype: torch.dtype) -> "Text2ImUNet":
        """Run torso and transformer in `dtype` (fp16/bf16); norms, time embedding, head stay fp32."""
        self.convert_torso_to_dtype(dtype)
        if self.xf_width:
            convert_modules(self.transformer, dtype, (nn.Linear,))
            convert_modules(self, dtype, (nn.Embedding,))
            self.transformer_proj.to(dtype)
        return self

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """tokens [B, text_ctx] (int), mask [B, text_ctx] (True = real token) ->
        {"xf_proj": [B, 4*model_channels], "xf_out": [B, xf_width, text_ctx]}."""
        if not self.xf_width:
            raise ValueError("this model has no text encoder (xf_width = 0)")
        if tokens is None:
            raise ValueError("tokens are required (or pass text_emb=)")
        xf_in = self.token_embedding(tokens.long())
        xf_in = xf_in + self.positional_embedding[None]
        if self.xf_padding:
            if mask is None:
                raise ValueError("mask is required when xf_padding is on")
            xf_in = torch.where(mask.bool()[..., None], xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.transformer.resblocks[0].attn.c_qkv.weight.dtype
                                           if self.transformer.layers else self.dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])
        return {"xf_proj": xf_proj, "xf_out": xf_out.permute(0, 2, 1)}

    def add_encoder_kv(self, text_emb: dict[str, torch.Tensor]) -> dict:
        """encode_text's dict plus "encoder_kv": every attention layer's projection of xf_out
        (UNetModel.project_encoder_kv), which forward then uses instead of projecting xf_out at each
        call. For samplers: the caption is fixed for a whole run, so this runs once, not per step."""
        return {**text_emb, "encoder_kv": self.project_encoder_kv(text_emb["xf_out"])}

    def conditioning_channels(self, x, low_res, inpaint_image, inpaint_mask) -> torch.Tensor:
        """The network input: x_t plus this variant's conditioning channels, [B, conv_in_channels, H, W]."""
        if low_res is not None or inpaint_image is not None or inpaint_mask is not None:
            raise ValueError(f"{type(self).__name__} takes no low_res / inpaint_image / inpaint_mask")
        return x

    def forward(self, x, timesteps, tokens=None, mask=None, *, text_emb=None, low_res=None,
                inpaint_image=None, inpaint_mask=None):
        """x [B, 3, H, W], timesteps [B] -> [B, 6, H, W]."""
        emb = self.embed_timesteps(timesteps)
        xf_out = None
        if self.xf_width:
            if text_emb is None:
                text_emb = self.encode_text(tokens, mask)
            emb = emb + text_emb["xf_proj"].to(emb)
            xf_out = text_emb.get("encoder_kv", text_emb["xf_out"])
        h = self.conditioning_channels(x, low_res, inpaint_image, inpaint_mask)
        return self.run_torso(h, emb, xf_out)


def _upsample_like(low_res: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if low_res is None:
        raise ValueError("low_res is required by upsampler models")
    return F.interpolate(low_res, x.shape[-2:], mode="bilinear", align_corners=False)


def _inpaint_inputs(x, inpaint_image, inpaint_mask):
    if inpaint_image is None:
        inpaint_image = torch.zeros_like(x)
    if inpaint_mask is None:
        inpaint_mask = torch.zeros_like(x[:, :1])
    return inpaint_image * inpaint_mask, inpaint_mask


class SuperResText2ImUNet(Text2ImUNet):
    """Upsampler: low_res [B, 3, h, w] is bilinearly resized to x's size and concatenated after x."""

    extra_in_channels = 3

    def conditioning_channels(self, x, low_res, inpaint_image, inpaint_mask):
        if inpaint_image is not None or inpaint_mask is not None:
            raise ValueError("SuperResText2ImUNet takes no inpaint_image / inpaint_mask")
        return torch.cat([x, _upsample_like(low_res, x)], dim=1)


class InpaintText2ImUNet(Text2ImUNet):
    """Inpainting base: input [x, inpaint_image * mask, mask] (mask 1 = known pixel)."""

    extra_in_channels = 4

    def conditioning_channels(self, x, low_res, inpaint_image, inpaint_mask):
        if low_res is not None:
            raise ValueError("InpaintText2ImUNet takes no low_res")
        return torch.cat([x, *_inpaint_inputs(x, inpaint_image, inpaint_mask)], dim=1)


class SuperResInpaintText2ImUNet(Text2ImUNet):
    """Inpainting upsampler: input [x, inpaint_image * mask, mask, upsampled low_res]."""

    extra_in_channels = 7

    def conditioning_channels(self, x, low_res, inpaint_image, inpaint_mask):
        return torch.cat([x, *_inpaint_inputs(x, inpaint_image, inpaint_mask), _upsample_like(low_res, x)], dim=1)


VARIANTS = {
    ModelKind.BASE: Text2ImUNet,
    ModelKind.UPSAMPLER: SuperResText2ImUNet,
    ModelKind.BASE_INPAINT: InpaintText2ImUNet,
    ModelKind.UPSAMPLER_INPAINT: SuperResInpaintText2ImUNet,
}
