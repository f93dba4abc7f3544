"""`glide train KIND --data DATASET -o RUN`: train a GLIDE model with DeepSpeed under Ray Train.

Flags override the config's `train` section. Rerunning the same command resumes the run.
"""
from __future__ import annotations

import argparse

from pipeline.commands.common import add_config_option, load_section, model_kind_argument
from training.model_kind import kind_help


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "train", parents=[common], help="train a GLIDE model (base, upsampler, base-inpaint, upsampler-inpaint, clip)",
        description="Train a GLIDE model on Arrow shards with DeepSpeed ZeRO inside Ray Train workers. "
                    "Rerunning the same command resumes from the newest checkpoint in RUN.")
    p.add_argument("kind", type=model_kind_argument, metavar="KIND", help=kind_help())
    p.add_argument("--data", metavar="DATASET", default=None, help="dataset folder with shards/")
    p.add_argument("--output", "-o", metavar="RUN", default=None,
                   help="run folder: checkpoints/, exports/, tensorboard/, metrics.jsonl")
    add_config_option(p)
    p.add_argument("--model-config", dest="model", metavar="NAME", default=None,
                   help="model config: a shipped name (e.g. tiny; see `glide model list`), a JSON file or a "
                        "checkpoint")
    p.add_argument("--init", metavar="CKPT", default=None,
                   help="start from this checkpoint or run folder (inpaint kinds: converted)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="Ray Train workers")
    p.add_argument("--gpus-per-worker", type=float, default=None, metavar="G", help="GPUs per worker (0: CPU)")
    p.add_argument("--cpus-per-worker", type=float, default=None, metavar="C", help="CPUs per worker")
    p.add_argument("--zero-stage", type=int, default=None, choices=(0, 1, 2, 3), metavar="S",
                   help="DeepSpeed ZeRO stage 0-3")
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"), help="bf16, fp16 (GPU) or fp32")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="images per worker per micro-step")
    p.add_argument("--grad-accum", type=int, default=None, metavar="K", help="micro-steps per optimizer step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=None, metavar="N", help="learning-rate warm-up steps")
    p.add_argument("--ema-rate", type=float, default=None, metavar="R", help="EMA decay per step")
    p.add_argument("--cfg-dropout", type=float, default=None, metavar="P",
                   help="fraction of captions replaced by the empty one (classifier-free guidance)")
    p.add_argument("--clip-mode", default=None, choices=("noised", "clean"),
                   help="kind clip: noised (default: GLIDE's CLIP for guidance, on noised images) or clean "
                        "(on clean images: a CLIP for image features, e.g. glide embed --clip RUN)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="train until this step")
    p.add_argument("--save-every", type=int, default=None, metavar="N", help="checkpoint + export every N steps")
    p.add_argument("--log-every", type=int, default=None, metavar="N", help="metrics every N steps")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--max-failures", type=int, default=None, metavar="N", help="worker-group restarts allowed")
    p.set_defaults(func=run)


FLAG_KEYS = ("kind", "data", "output", "model", "init", "workers", "gpus_per_worker", "cpus_per_worker",
             "zero_stage", "precision", "batch_size", "grad_accum", "lr", "warmup_steps", "ema_rate",
             "cfg_dropout", "clip_mode", "max_steps", "save_every", "log_every", "seed", "max_failures")


def run(args: argparse.Namespace) -> int:
    from pipeline.ray_session import ray_session

    config, train = load_section(args, "train", {k: getattr(args, k) for k in FLAG_KEYS})
    from training.trainer.launcher import prepare_run, run_training

    prepared = prepare_run(train)  # bad input fails here, before Ray starts (and is checked only here)
    if config.ray.num_cpus is None and not (config.ray.address or args.ray_address):
        import os

        # The Ray Data readers and decoders need CPUs besides the training workers.
        config.ray.num_cpus = max(os.cpu_count() or 1, int(train.workers * train.cpus_per_worker) + 2)
    with ray_session(config.ray):
        run_training(train, prepared, worker_resources=config.ray.placement.train.resources)
    return 0
