"""GLIDE models, diffusion maths, samplers, tokenizers, checkpoints, trainer."""


def __getattr__(name):
    # `training.load` without importing torch when `import training` alone is enough.
    if name == "load":
        from training.api import load

        return load
    raise AttributeError(f"module 'training' has no attribute {name!r}")
