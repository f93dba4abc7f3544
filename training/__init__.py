"""GLIDE models, diffusion maths, samplers, tokenizers, checkpoints, trainer."""
