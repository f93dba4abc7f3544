"""`glide plan-memory CONFIG --gpus N --gpu-mem GB`: per-GPU training memory under ZeRO 0-3."""
from __future__ import annotations

import argparse
import json


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "plan-memory", parents=[common], help="per-GPU training memory under ZeRO 0-3, and the stage to use",
        description="Per-GPU memory for weights, gradients, optimizer state (mixed-precision Adam, ZeRO "
                    "partitioning, as DeepSpeed's estimators count it) and activations (measured on the meta "
                    "device) under ZeRO stages 0-3, with the lowest stage that fits.")
    p.add_argument("config", metavar="CONFIG",
                   help="model config: a shipped name (tiny, glide-paper-base, ...; `glide model list`) or a JSON path")
    p.add_argument("--gpus", type=_positive_int, default=1, help="data-parallel GPUs in total (default 1)")
    p.add_argument("--gpu-mem", type=_positive_float, default=80.0, metavar="GB",
                   help="memory per GPU in GB (2^30 bytes; default 80)")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B",
                   help="micro-batch per GPU (default 8)")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="keep only block inputs and recompute one block at a time in backward")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from training.memory_plan import format_plan, measure_model, plan_memory
    from training.model_config import load_model_config

    cfg = load_model_config(args.config)
    sizes = measure_model(cfg)
    options = dict(gpus=args.gpus, gpu_mem_gb=args.gpu_mem, batch_size=args.batch_size,
                   precision=args.precision, activation_checkpointing=args.activation_checkpointing)
    plan = plan_memory(sizes, **options)
    if args.json:
        out = {"zero_stages": {s: {k: p[k] for k in ("model_states_gb", "activations_gb", "total_gb")}
                               for s, p in plan["zero_stages"].items()},
               "recommended_stage": plan["recommended_stage"]}
        print(json.dumps(out))
    else:
        print(format_plan(str(args.config), sizes, plan, **options))
    return 0
