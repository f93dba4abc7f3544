"""Does the demo's model draw what the caption says? Colour accuracy of `glide sample` output.

    python -m pipeline.caption_accuracy SAMPLES_DIR        # a `glide sample -o` folder
    python -m pipeline.caption_accuracy --prompts-out FILE  # write the 11 probe prompts (one per background colour)

For every image in SAMPLES_DIR/settings.json it reads the colour names of the prompt ("a red circle
on a blue background"), takes the image's background colour (median of the border ring) and
foreground colour (median of the central pixels that differ from the background) and names each by
the nearest pipeline.sample_world.PALETTE colour. Prints "background right in X of Y" and the same
for the shape's colour, plus a confusion list, and --json for machines.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.sample_world import PALETTE, SHAPE_KINDS

NAMES = list(PALETTE)
RGB = np.array([PALETTE[n] for n in NAMES], dtype=np.float32)  # [11, 3]
_CAPTION = re.compile(r"^an? (\w+) (\w+) on an? (\w+) background")


def caption_colours(prompt: str) -> tuple[str, str, str] | None:
    """'a red circle on a blue background' -> ('red', 'circle', 'blue'); None if not that form."""
    m = _CAPTION.match(prompt)
    return (m.group(1), m.group(2), m.group(3)) if m and m.group(1) in PALETTE else None


def nearest_name(rgb: np.ndarray) -> str:
    return NAMES[int(np.argmin(((RGB - rgb) ** 2).sum(axis=1)))]


def image_colours(img: np.ndarray) -> tuple[str, str]:
    """img uint8 [H, W, 3] -> (foreground name, background name)."""
    x = img.astype(np.float32)
    h, w, _ = x.shape
    r = max(1, h // 16)
    ring = np.concatenate([x[:r].reshape(-1, 3), x[-r:].reshape(-1, 3),
                           x[:, :r].reshape(-1, 3), x[:, -r:].reshape(-1, 3)])
    bg = np.median(ring, axis=0)
    centre = x[h // 4: h - h // 4, w // 4: w - w // 4].reshape(-1, 3)
    far = centre[np.sqrt(((centre - bg) ** 2).sum(axis=1)) > 60]
    fg = np.median(far, axis=0) if len(far) >= centre.shape[0] // 20 else bg
    return nearest_name(fg), nearest_name(bg)


def _images(samples: Path, key: str) -> list[dict]:
    """settings.json's images that have `key` ("file"; "base_file": the base's image before upsampling)."""
    settings = json.loads((samples / "settings.json").read_text())
    return [item for item in settings["images"] if key in item]


def score(samples: Path, key: str = "file") -> dict:
    rows = []
    for item in _images(samples, key):
        want = caption_colours(item["prompt"])
        if want is None:
            continue
        fg, bg = image_colours(np.asarray(Image.open(samples / item[key]).convert("RGB")))
        rows.append({"file": item[key], "prompt": item["prompt"], "fg": fg, "bg": bg,
                     "fg_ok": fg == want[0], "bg_ok": bg == want[2]})
    n = len(rows)
    return {"images": n, "background_right": sum(r["bg_ok"] for r in rows),
            "foreground_right": sum(r["fg_ok"] for r in rows),
            "both_right": sum(r["bg_ok"] and r["fg_ok"] for r in rows), "rows": rows}


def scene_accuracy(samples: Path, classifier: str | Path) -> dict:
    """Caption accuracy of the upsampled images and of the base's images they were upsampled from (the
    same draws), read by the scene classifier: {"images": N, "final": {attribute: share}, "base": {...}},
    "all attributes" included. Only images with a sample-world caption and a base image count."""
    from evaluation.scene_attributes import attributes_of_caption
    from evaluation.scene_classifier import SceneClassifier

    clf = SceneClassifier.load(classifier)
    items = [(item, want) for item in _images(samples, "base_file")
             if (want := attributes_of_caption(item["prompt"])) is not None]
    out = {"images": len(items)}
    for name, key in (("base", "base_file"), ("final", "file")):
        images = [np.asarray(Image.open(samples / item[key]).convert("RGB")) for item, _ in items]
        predicted = clf.predict(np.stack(images)) if images else []
        attrs = [a for a in clf.classes if items and a in items[0][1]]
        right = [{a: p[a] == want[a] for a in attrs} for p, (_, want) in zip(predicted, items)]
        out[name] = {a: float(np.mean([r[a] for r in right])) if right else 0.0 for a in attrs}
        out[name]["all attributes"] = float(np.mean([all(r.values()) for r in right])) if right else 0.0
    return out


def probe_prompts() -> list[str]:
    """One prompt per background colour, each with a different shape colour and shape."""
    out = []
    for i, bg in enumerate(NAMES):
        fg = NAMES[(i + 3) % len(NAMES)]
        shape = SHAPE_KINDS[i % len(SHAPE_KINDS)]
        art = lambda w: "an" if w[0] in "aeiou" else "a"  # noqa: E731
        out.append(f"{art(fg)} {fg} {shape} on {art(bg)} {bg} background")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", nargs="?", help="a `glide sample -o` folder (settings.json + PNGs)")
    p.add_argument("--prompts-out", help="write the probe prompts (one per background colour) here")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per image")
    args = p.parse_args(argv)
    if args.prompts_out:
        Path(args.prompts_out).write_text("\n".join(probe_prompts()) + "\n")
        print(f"wrote {len(probe_prompts())} prompts to {args.prompts_out}")
    if not args.samples:
        return 0
    res = score(Path(args.samples))
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    if args.verbose:
        for r in res["rows"]:
            print(f"{r['file']}: {r['prompt']!r:50} -> {r['fg']} on {r['bg']}"
                  f"{'' if r['fg_ok'] and r['bg_ok'] else '   x'}")
    n = res["images"]
    print(f"background colour right in {res['background_right']} of {n}; shape colour right in "
          f"{res['foreground_right']} of {n}; both in {res['both_right']} of {n}  "
          f"(chance: 1 in {len(NAMES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
