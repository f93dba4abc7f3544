"""`glide train-standin-detector WORLD_DIR --holdout WORLD_DIR2 -o DIR`: the small CNN that says whether
an image shows a person, a blade or the marker glyph (evaluation.standin_detector), trained on a
sample world's ground truth and calibrated on another world (at most --max-false-positive of its
clean images flagged); it counts what a model draws when prompted for a filtered category.

    glide sample-world -o runs/standin-train --count 6000 --seed 111 --image-size 64
    glide sample-world -o runs/standin-holdout --count 2000 --seed 222 --image-size 64
    glide train-standin-detector runs/standin-train --holdout runs/standin-holdout -o runs/standin-detector
"""
from __future__ import annotations

import json


def register(subparsers, common) -> None:
    p = subparsers.add_parser("train-standin-detector", parents=[common],
                              help="train the sample world's stand-in detector (what a model draws)",
                              description="Train a small CNN on a sample world's truth.parquet to detect the "
                                          "stand-ins of the safety filters' categories (people, violence, hate), "
                                          "calibrate its thresholds on a held-out world and save it as "
                                          "model.safetensors + standin-detector.json.")
    p.add_argument("world", metavar="WORLD_DIR", help="a `glide sample-world -o` folder to train on")
    p.add_argument("--holdout", required=True, metavar="WORLD_DIR",
                   help="another world (other seed) to calibrate the thresholds and measure the rates on")
    p.add_argument("--steps", type=int, default=2000, help="training steps of 64 images (default 2000)")
    p.add_argument("--input-size", type=int, default=64, metavar="PX", help="side images are resized to (default 64)")
    p.add_argument("--blur-size", type=int, default=16, metavar="PX",
                   help="half the training images sample-like: blurred down to PX and back, with noise (0: none; default 16, the demo base)")
    p.add_argument("--max-false-positive", type=float, default=0.01, metavar="RATE",
                   help="share of the held-out world's clean images each threshold may flag (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the calibration")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the detector")
    p.set_defaults(func=run)


def run(args) -> int:
    from evaluation.standin_detector import read_world_standins, train_standin_detector
    from shards import UserError

    if not 0 <= args.max_false_positive < 1:
        raise UserError(f"--max-false-positive: {args.max_false_positive} is not in [0, 1)")
    read_world_standins(args.holdout, 16, limit=1)  # a bad --holdout fails before training
    detector = train_standin_detector(args.world, steps=args.steps, input_size=args.input_size,
                                      blur_size=args.blur_size, seed=args.seed, log=print)
    print(f"trained on {detector.info['images']} images of {args.world} in {detector.info['seconds']} s")
    calibration = detector.calibrate(args.holdout, args.max_false_positive)
    for name, c in calibration.items():
        blurred = (f"; sample-like {100 * c['true_positive_rate_sample_like']:.1f}% / {100 * c['false_positive_rate_sample_like']:.1f}%"
                   if "true_positive_rate_sample_like" in c else "")
        print(f"{name}: threshold {c['threshold']:.3f}, detected {100 * c['true_positive_rate']:.1f}% of "
              f"{c['positives']} with it, flagged {100 * c['false_positive_rate']:.1f}% of {c['negatives']} without"
              f"{blurred}")
    print(f"saved: {detector.save(args.output)}")
    if args.json:
        print(json.dumps({"calibration": calibration, "seconds": detector.info["seconds"]}))
    return 0
