"""`glide model info NAME_OR_PATH [--json]`: parameter counts and FLOPs of a model config;
`glide model list`: the configs shipped with the package (training/model_configs/)."""
from __future__ import annotations

import json


def register(subparsers, common) -> None:
    p = subparsers.add_parser("model", parents=[common], help="inspect GLIDE model configs",
                              description="Inspect GLIDE model configs (shipped in the package as "
                                          "training/model_configs/*.json, or any JSON file).")
    sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", parents=[common], help="the shipped model configs: name, kind, image size",
                             description="List the model configs shipped with the package.")
    listing.set_defaults(func=run_list)
    info = sub.add_parser(
        "info", parents=[common], help="parameter counts and forward FLOPs (no weights allocated)",
        description="Count parameters (visual / text / total) and forward FLOPs per image of a model, "
                    "built on the meta device so even the 3.5B model takes seconds and no memory.")
    info.add_argument("model", metavar="NAME_OR_PATH",
                      help="a shipped config's name (e.g. tiny, glide-filtered-base; see `glide model "
                           "list`), a JSON file, or a checkpoint folder holding config.json")
    info.add_argument("--json", action="store_true",
                      help='print {"params": {"total", "visual", "text"}, "flops_per_image"} as JSON')
    info.set_defaults(func=run_info)


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def run_list(args) -> int:
    from training.model_config import available_model_configs, load_model_config

    names = available_model_configs()
    width = max(len(n) for n in names)
    for name in names:
        cfg = load_model_config(name)
        print(f"{name:<{width}}  {cfg.kind.value:<17}  {cfg.image_size}px")
    return 0


def run_info(args) -> int:
    from training.model_config import load_model_config, resolve_model_config_path
    from training.model_info import model_info

    cfg = load_model_config(args.model)
    info = model_info(cfg)
    if args.json:
        print(json.dumps(info.to_json_dict()))
        return 0
    rows = [
        ("model", f"{args.model} ({resolve_model_config_path(args.model)})"),
        ("kind", cfg.kind.value),
        ("image size", f"{cfg.image_size}x{cfg.image_size}"),
        ("params: total", f"{info.total:>17,}  ({_human(info.total)})"),
        ("params: visual", f"{info.visual:>17,}  ({_human(info.visual)})"),
        ("params: text", f"{info.text:>17,}  ({_human(info.text)})"),
        ("FLOPs / image", f"{info.flops_per_image:>17,}  ({_human(info.flops_per_image)}, batch-1 forward)"),
    ]
    rows += [(f"  {op}", f"{n:>17,}") for op, n in sorted(info.flops_by_op.items(), key=lambda kv: -kv[1])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
