"""`glide train-scene-classifier WORLD_DIR -o DIR [--holdout WORLD_DIR2]`: the small CNN that reads a
sample-world scene's attributes from pixels (evaluation.scene_classifier), trained on the world's
ground truth; its accuracy on a held-out world (another seed) is printed and saved with it.

    glide sample-world -o runs/scene-train --count 3000 --seed 101 --image-size 64 --max-shapes 2
    glide sample-world -o runs/scene-holdout --count 1000 --seed 202 --image-size 64 --max-shapes 2
    glide train-scene-classifier runs/scene-train --holdout runs/scene-holdout -o runs/scene-classifier
"""
from __future__ import annotations

import json


def register(subparsers, common) -> None:
    p = subparsers.add_parser("train-scene-classifier", parents=[common],
                              help="train the sample world's scene classifier (caption accuracy of samples)",
                              description="Train a small CNN on a sample world's truth.parquet to read background "
                                          "colour, the lead shape's colour and kind, the shape count and the "
                                          "placement of two shapes from pixels; glide evaluate uses it for "
                                          "caption accuracy. Saved as model.safetensors + scene-classifier.json.")
    p.add_argument("world", metavar="WORLD_DIR", help="a `glide sample-world -o` folder to train on")
    p.add_argument("--holdout", metavar="WORLD_DIR", help="another world (other seed) to measure accuracy on")
    p.add_argument("--epochs", type=int, default=12, help="passes over the world (default 12)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed (default 0)")
    p.add_argument("--input-size", type=int, default=32, metavar="PX",
                   help="side images are resized to (a multiple of 8; default 32; 48 reads small shapes better)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the held-out accuracy")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the classifier")
    p.set_defaults(func=run)


def run(args) -> int:
    from evaluation.scene_classifier import read_world_images, train_scene_classifier
    from shards import UserError

    if args.epochs < 1:
        raise UserError(f"--epochs: must be at least 1, got {args.epochs}")
    holdout = read_world_images(args.holdout, size=args.input_size) if args.holdout else None  # fails before training
    clf = train_scene_classifier(args.world, epochs=args.epochs, seed=args.seed, input_size=args.input_size, log=print)
    print(f"trained on {clf.info['images']} images of {args.world} in {clf.info['seconds']} s; "
          f"attributes: {', '.join(f'{k} ({len(v)} classes)' for k, v in clf.classes.items())}")
    if holdout is not None:
        accuracy = clf.accuracy(holdout.images, holdout.labels)
        clf.info["holdout"] = accuracy
        clf.info["holdout_world"] = args.holdout
        clf.info["holdout_images"] = len(holdout.images)
        print(f"held-out accuracy on {len(holdout.images)} images of {args.holdout}: "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in accuracy.items()))
    print(f"saved: {clf.save(args.output)}")
    if args.json:
        print(json.dumps({"holdout": clf.info.get("holdout"), "seconds": clf.info["seconds"]}))
    return 0
