"""`glide evaluate`: a guidance sweep of a checkpoint, sampled as Ray work (cached), every metric per
setting, and an HTML report (evaluation.sweep; docs/evaluation.md).

    glide evaluate --model checkpoints/demo/base --upsampler checkpoints/demo/upsampler \\
        --prompts prompts.txt --reference world/images --guidance 1,3 --features scene:checkpoints/demo/scene-classifier \\
        --scene-classifier checkpoints/demo/scene-classifier --samples-per-setting 32 -o runs/eval
    glide evaluate ... --features inception:pt_inception-2015-12-05-6726825d.pth --score-clip ViT-B-16=vit.bin \\
        --clip-guidance 1,2 --clip runs/noised-clip --train-embeddings runs/embedded -o report/
"""
from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "evaluate", parents=[common], help="sample a guidance sweep and write an HTML report of every metric",
        description="Sample N images per guidance setting as Ray work (one actor per model copy; cached, so a "
                    "rerun samples only what is missing), compute FID, IS, precision/recall, CLIP score and the "
                    "scene classifier's caption accuracy per setting, and write REPORT/index.html.")
    p.add_argument("--model", required=True, metavar="CKPT", help="base checkpoint (or training run folder)")
    p.add_argument("--upsampler", metavar="CKPT", help="upsampler checkpoint run after the base")
    p.add_argument("--prompts", required=True, metavar="FILE", help="captions, one per line")
    p.add_argument("--reference", required=True, metavar="DIR", help="folder of reference images (FID, precision/recall)")
    p.add_argument("--guidance", default="1,2,3,4", metavar="S1,S2", help="classifier-free guidance scales (default 1,2,3,4)")
    p.add_argument("--clip-guidance", default="", metavar="S1,S2", help="CLIP guidance scales (needs --clip)")
    p.add_argument("--clip", metavar="CKPT", help="noised CLIP checkpoint to guide with (--clip-guidance)")
    p.add_argument("--features", required=True, metavar="KIND:PATH",
                   help="feature network of the image metrics: inception:PT_INCEPTION_FILE, clip:MODEL or "
                        "scene:SCENE_CLASSIFIER_DIR")
    p.add_argument("--score-clip", metavar="MODEL", help="CLIP for the CLIP score (ARCH=WEIGHTS or a clean CLIP)")
    p.add_argument("--scene-classifier", metavar="DIR",
                   help="scene classifier (glide train-scene-classifier) for caption accuracy on sample-world prompts")
    p.add_argument("--train-embeddings", metavar="DATASET",
                   help="the training set's embed-stage dataset: run the memorisation check against it")
    p.add_argument("--samples-per-setting", type=int, default=16, metavar="N", help="samples per setting (default 16)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per sampling call (default 8)")
    p.add_argument("--seed", type=int, default=0, help="first noise seed (default 0)")
    p.add_argument("--steps", default="100", help="base sampling steps (respacing spec, default 100)")
    p.add_argument("--upsampler-steps", default="fast27", help="upsampler respacing (default fast27)")
    p.add_argument("--no-low-res-consistency", dest="low_res_consistency", action="store_false",
                   help="sample the upsampler without holding it to the base image's colours")
    p.add_argument("--workers", type=int, default=None, metavar="K",
                   help="sampling actors (default: one per GPU, else per CPU, at most one per chunk)")
    p.add_argument("--device", default=None, help="torch device of the workers (default: cuda when present)")
    p.add_argument("-o", "--output", required=True, metavar="REPORT", help="report folder")
    p.set_defaults(func=run)


def request_from_args(args):
    from evaluation.sweep import EvaluationRequest
    from evaluation.sweep_settings import parse_scales

    return EvaluationRequest(
        model=args.model, upsampler=args.upsampler, prompts_file=args.prompts, reference=args.reference,
        guidance=parse_scales(args.guidance, "--guidance"),
        clip_guidance=parse_scales(args.clip_guidance, "--clip-guidance") if args.clip_guidance.strip() else [],
        clip=args.clip, features=args.features, score_clip=args.score_clip, scene_classifier=args.scene_classifier,
        train_embeddings=args.train_embeddings, samples_per_setting=args.samples_per_setting,
        batch_size=args.batch_size, seed=args.seed, steps=args.steps, upsampler_steps=args.upsampler_steps,
        low_res_consistency=args.low_res_consistency, workers=args.workers, device=args.device, output=args.output,
        command="glide " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0] else "glide evaluate")


def run(args: argparse.Namespace) -> int:
    from evaluation.sweep import check_request, run_evaluation

    request = request_from_args(args)
    from pipeline.config import RayConfig
    from pipeline.ray_session import ray_session

    check_request(request)
    ray_cfg = RayConfig(address=args.ray_address, log_to_driver=args.debug)
    result = run_evaluation(request, ray_session=lambda: ray_session(ray_cfg))  # Ray only if sampling is left
    print(f"sampled {result['sampled']} images ({result['cached']} cached); report: {result['index_html']}")
    return 0
