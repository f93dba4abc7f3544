"""The GLIDE trainer: DeepSpeed ZeRO engines inside Ray Train workers.

    config.py         TrainConfig, the `train` section of a pipeline config (pydantic, no torch)
    engine.py         DeepSpeed engine: ZeRO stage, precision, AdamW + warmup schedule, clipping
    ema.py            EMA of the weights, also under ZeRO-3 (EMA of each rank's partition)
    objectives.py     what one step computes per model kind (hybrid diffusion loss, CLIP contrastive)
    loop.py           the per-worker training loop
    checkpointing.py  DeepSpeed checkpoints reported to Ray Train, verification, safetensors exports
    metrics.py        console progress and TensorBoard / JSONL metrics
    launcher.py       the driver: TorchTrainer set-up, progress, errors back as one line

Importing this package is cheap: torch, deepspeed and ray load inside the functions that need them.
"""
