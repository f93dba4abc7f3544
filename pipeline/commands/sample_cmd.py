"""`glide sample | inpaint | sdedit`: images from a checkpoint, written as PNGs plus a grid.

    glide sample --model ckpt/base --prompt "a red cube" --guidance 3 --batch-size 4 -o out/
    glide sample --model runs/demo --prompts captions.txt --steps ddim50 --upsampler ckpt/up -o out/
    glide inpaint --model ckpt/base-inpaint --image photo.png --mask mask.png --prompt "a hat" -o out/
    glide sdedit --model ckpt/base --image sketch.png --prompt "a castle" --strength 0.6 -o out/

OUT gets sample-0000.png ... (one per image), grid.png and settings.json (every setting and the
prompt of each image). Masks: WHITE marks the pixels to regenerate, black the ones to keep.
A thin shell over training.sampling.session (what evaluation samples with too): flags in, PNGs out.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_STEPS = "100"


def _add_common(p: argparse.ArgumentParser, *, batch_help: str) -> None:
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="checkpoint folder, or a training run folder (its latest export)")
    p.add_argument("--steps", default=DEFAULT_STEPS, metavar="N",
                   help="sampling steps: a count (\"100\"), section counts (\"10,10,3,2,2\"), \"fast27\" or "
                        f"\"ddimN\" (default {DEFAULT_STEPS})")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default=None,
                   help="ancestral (ddpm) or DDIM; default ddim for --steps ddimN, else ddpm")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 = deterministic)")
    p.add_argument("--guidance", type=float, default=None, metavar="S",
                   help="classifier-free guidance scale (1 = none; default 3)")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help=batch_help)
    p.add_argument("--forward-batch", type=int, default=None, metavar="R",
                   help="most rows per network call (guidance runs 2 x batch rows; default: all in one call)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    p.add_argument("--upsampler", default=None, metavar="CKPT", help="upsampler checkpoint to run after the base")
    p.add_argument("--upsampler-steps", default="fast27", metavar="N", help="upsampler respacing (default fast27)")
    p.add_argument("--upsample-temp", type=float, default=0.997, metavar="T",
                   help="scale of the upsampler's starting noise (default 0.997)")
    p.add_argument("--no-low-res-consistency", dest="low_res_consistency", action="store_false",
                   help="let the upsampler's colours drift from the base image's (glide-text2im's sampling; "
                        "default: each step's prediction is held to the base image, docs/sampling.md)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the PNGs and settings.json")


def register(subparsers, common) -> None:
    s = subparsers.add_parser("sample", parents=[common], help="generate images from captions",
                              description="Sample a base model with classifier-free guidance (and an optional "
                                          "upsampler); writes one PNG per image, grid.png and settings.json.")
    prompts = s.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", metavar="TEXT", help="one caption")
    prompts.add_argument("--prompts", metavar="FILE", help="a text file with one caption per line")
    s.add_argument("--per-prompt", type=int, default=None, metavar="N",
                   help="images per caption (default: --batch-size with --prompt, 1 with --prompts)")
    s.add_argument("--clip", default=None, metavar="CKPT",
                   help="noised CLIP checkpoint for CLIP guidance (then --guidance defaults to 1: none)")
    s.add_argument("--clip-guidance", type=float, default=3.0, metavar="S", help="CLIP guidance scale (default 3)")
    _add_common(s, batch_help="images per forward batch (default 4)")
    s.set_defaults(func=run_sample)

    i = subparsers.add_parser("inpaint", parents=[common], help="regenerate a masked region of an image",
                              description="Fill the WHITE region of --mask in --image to match --prompt. "
                                          "An inpainting checkpoint is conditioned on the known pixels; any other "
                                          "base model uses the GLIDE paper's replacement method (Appendix E).")
    i.add_argument("--image", required=True, help="the image to edit")
    i.add_argument("--mask", required=True, help="mask image: white = regenerate, black = keep")
    i.add_argument("--prompt", required=True, metavar="TEXT", help="caption of the edited image")
    i.add_argument("--mode", choices=("finetuned", "replace"), default=None,
                   help="default: finetuned for inpainting checkpoints, else replace")
    _add_common(i, batch_help="variations to generate (default 4)")
    i.set_defaults(func=run_inpaint)

    e = subparsers.add_parser("sdedit", parents=[common], help="turn a sketch into an image (SDEdit)",
                              description="Noise --image part-way and denoise it towards --prompt (SDEdit).")
    e.add_argument("--image", required=True, help="the sketch or image to start from")
    e.add_argument("--prompt", required=True, metavar="TEXT", help="caption of the result")
    start = e.add_mutually_exclusive_group()
    start.add_argument("--strength", type=float, default=None,
                       help="fraction of the process to run, in (0, 1] (default 0.6; 1 = ignore the image)")
    start.add_argument("--t-start", type=int, default=None, metavar="T",
                       help="start at this step of the model's original process (0..diffusion_steps-1)")
    _add_common(e, batch_help="variations to generate (default 4)")
    e.set_defaults(func=run_sdedit)


# ---- shared ------------------------------------------------------------------------------------
def _open_session(args):
    """Check the flags cheaply (before torch is imported), then load the models once."""
    from shards import UserError
    from training.checkpoint import resolve_checkpoint_dir

    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
    if args.forward_batch is not None and args.forward_batch < 1:
        raise UserError(f"--forward-batch: must be at least 1, got {args.forward_batch}")
    for path in (args.model, args.upsampler, getattr(args, "clip", None)):
        if path:
            resolve_checkpoint_dir(path)  # a wrong path fails now, before torch is imported
    for path in (getattr(args, "image", None), getattr(args, "mask", None)):
        if path and not os.path.isfile(path):
            raise UserError(f"{path}: no such image file")
    from training.sampling.session import SampleSettings, SamplingSession, SessionConfig, pick_device

    pick_device(args.device, what="--device")
    settings = SampleSettings(steps=args.steps, sampler=args.sampler, eta=args.eta, guidance=args.guidance,
                              clip_guidance=getattr(args, "clip_guidance", None), seed=args.seed,
                              batch_size=args.batch_size, forward_batch=args.forward_batch,
                              upsampler_steps=args.upsampler_steps, upsample_temp=args.upsample_temp,
                              low_res_consistency=args.low_res_consistency)
    config = SessionConfig(base=args.model, upsampler=args.upsampler, clip=getattr(args, "clip", None),
                           device=args.device)
    return SamplingSession(config, progress=not args.no_progress), settings


BASE_FOLDER = "base"   # OUT/base: the base's images before upsampling (the same draws, same seeds)


def _write(samples, output, command: str, extra: dict) -> None:
    """OUT/sample-NNNN.png, grid.png and settings.json (the command, every setting, each image's prompt);
    when upsampled, also the base's images the upsampler started from, OUT/base/sample-NNNN.png."""
    from training.sampling.images import save_samples

    paths = save_samples(samples.images, output)
    images = [{"file": p.name, "prompt": prompt} for p, prompt in zip(paths, samples.prompts)]
    if samples.base_images is not None:
        for item, base in zip(images, save_samples(samples.base_images, Path(output) / BASE_FOLDER)):
            item["base_file"] = f"{BASE_FOLDER}/{base.name}"
    settings = {"command": command, **samples.settings, **extra, "images": images}
    (Path(output) / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(f"wrote {len(paths)} images, grid.png and settings.json to {output} "
          f"({settings['seconds']} s on {settings['device']})")


def _read_prompts(args) -> list[str]:
    from shards import UserError

    if args.prompt is not None:
        if not args.prompt.strip():
            raise UserError("--prompt: empty caption")
        return [args.prompt]
    try:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{args.prompts}: cannot read prompts: {e}") from None
    if not prompts:
        raise UserError(f"{args.prompts}: no captions (one per line expected)")
    return prompts


# ---- commands ------------------------------------------------------------------------------------
def run_sample(args) -> int:
    from shards import UserError

    prompts = _read_prompts(args)
    per_prompt = args.per_prompt or (args.batch_size if args.prompt is not None else 1)
    if per_prompt < 1:
        raise UserError(f"--per-prompt: must be at least 1, got {per_prompt}")
    session, settings = _open_session(args)
    samples = session.text_to_image([p for p in prompts for _ in range(per_prompt)], settings)
    _write(samples, args.output, "sample", {"per_prompt": per_prompt})
    return 0


def run_inpaint(args) -> int:
    session, settings = _open_session(args)
    samples = session.inpaint(args.image, args.mask, args.prompt, settings, n=args.batch_size, mode=args.mode)
    _write(samples, args.output, "inpaint", {"image": args.image, "mask": args.mask})
    return 0


def run_sdedit(args) -> int:
    session, settings = _open_session(args)
    samples = session.sdedit(args.image, args.prompt, settings, n=args.batch_size, strength=args.strength,
                             t_start=args.t_start)
    _write(samples, args.output, "sdedit", {"image": args.image})
    return 0
