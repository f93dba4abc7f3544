"""GLIDE networks: ADM UNet blocks, text transformer, the four text-conditional variants."""
from training.nn.text2im import (
    TEXT_PARAM_PREFIXES,
    VARIANTS,
    InpaintText2ImUNet,
    SuperResInpaintText2ImUNet,
    SuperResText2ImUNet,
    Text2ImUNet,
)

__all__ = ["TEXT_PARAM_PREFIXES", "VARIANTS", "Text2ImUNet", "SuperResText2ImUNet", "InpaintText2ImUNet",
           "SuperResInpaintText2ImUNet"]
