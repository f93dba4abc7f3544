"""`glide checkpoint import|info`: bring released weights in, and inspect checkpoint folders.

    glide checkpoint import --from glide-text2im --kind base base.pt -o ckpt/glide-base \\
        --bpe encoder.json.gz vocab.bpe.gz
    glide checkpoint import --from glide-text2im --kind clip clip_image_enc.pt -o ckpt/glide-clip
    glide checkpoint info ckpt/glide-base
"""
from __future__ import annotations

import json

SOURCES = ("glide-text2im",)


def register(subparsers, common) -> None:
    p = subparsers.add_parser("checkpoint", parents=[common], help="import and inspect model checkpoints",
                              description="Import released checkpoints and inspect checkpoint folders "
                                          "(see docs/checkpoints.md).")
    sub = p.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)

    imp = sub.add_parser(
        "import", parents=[common], help="convert a released checkpoint file into a checkpoint folder",
        description="Convert one of openai/glide-text2im's released .pt files (base.pt, upsample.pt, "
                    "base_inpaint.pt, upsample_inpaint.pt, clip_image_enc.pt, clip_text_enc.pt) into a "
                    "checkpoint folder: every key and shape is checked against the released config, "
                    "weights are stored as float32 safetensors, the GPT-2 vocabulary goes into "
                    "tokenizer/. Importing both noised-CLIP towers (--kind clip) into the same folder "
                    "joins them.")
    imp.add_argument("src", metavar="SRC.pt", help="the released checkpoint file")
    imp.add_argument("--from", dest="source", required=True, choices=SOURCES, help="where SRC comes from")
    imp.add_argument("--kind", required=True, metavar="KIND",
                     help="which model SRC holds: base, upsampler, base-inpaint, upsampler-inpaint or clip "
                          "(the CLIP tower is read from SRC); glide's names upsample, upsample-inpaint, "
                          "clip-image and clip-text are accepted too")
    imp.add_argument("-o", "--output", required=True, metavar="DST", help="checkpoint folder to write")
    imp.add_argument("--bpe", nargs=2, metavar=("ENCODER_JSON", "VOCAB_BPE"), default=None,
                     help="GPT-2 vocabulary files, plain or gzipped (default: an installed glide_text2im's)")
    imp.add_argument("--model-config", default=None, metavar="NAME_OR_PATH",
                     help="model config to check SRC against instead of the released one for --kind")
    imp.add_argument("--force", action="store_true", help="replace a checkpoint already at DST")
    imp.set_defaults(func=run_import)

    info = sub.add_parser("info", parents=[common], help="kind, step, parameters and sha256 check of a checkpoint",
                          description="Summarise a checkpoint folder (or a run folder's latest export) and "
                                      "verify its files against the sha256 recorded in config.json; exits 2 "
                                      "when a file is missing or changed.")
    info.add_argument("path", metavar="DIR", help="checkpoint folder or training run folder")
    info.add_argument("--no-verify", action="store_true", help="skip hashing the files")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=run_info)


def run_import(args) -> int:
    from training.import_glide import import_glide_checkpoint

    dst = import_glide_checkpoint(args.src, args.output, args.kind, bpe=args.bpe, config=args.model_config,
                                  overwrite=args.force)
    print(f"imported {args.kind} from {args.src} -> {dst}")
    return 0


def run_info(args) -> int:
    from shards import UserError
    from training.checkpoint import checkpoint_info

    info = checkpoint_info(args.path, verify=not args.no_verify)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        weights = info["files"].get("model.safetensors", {})
        rows = [("path", info["path"]), ("kind", info["kind"]),
                ("step", "-" if info["step"] is None else info["step"]), ("created", info["created"]),
                ("parameters", f"{weights.get('parameters', 0):,}" if "parameters" in weights else "?")]
        imported = info["extra"].get("imported_from") if isinstance(info["extra"], dict) else None
        if imported:
            for entry in imported if isinstance(imported, list) else [imported]:
                what = ", ".join(str(entry[k]) for k in ("kind", "tower") if entry.get(k))
                rows.append(("imported from", f"{entry.get('repo')} {entry.get('file')} ({what})"))
        for name, entry in info["files"].items():
            detail = f"{entry['sha256']:<12} {entry.get('bytes') or 0:>14,} B"
            if "tensors" in entry:
                detail += f"  {entry['tensors']} tensors, {'/'.join(entry['dtypes'])}"
            if "error" in entry:
                detail += f"  {entry['error']}"
            rows.append((f"  {name}", detail))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    if not info["ok"]:
        bad = [n for n, e in info["files"].items() if e["sha256"] not in ("ok", "not checked") or "error" in e]
        raise UserError(f"{info['path']}: verification failed for {', '.join(bad)}")
    return 0
