"""Inpainting measured (issue 13's claim 4): the same masks filled by an inpainting fine-tune and by
the Appendix E replacement mode of the plain base, scored for the seam at the mask's edge and for
what is drawn inside it.

    tasks = [InpaintingTask(image_path, box_mask(centre, radius, 16), prompt, caption), ...]
    seam(images, regenerate)            # per image: mean RGB step (0..1) across the mask's edge
    table = inpainting_table(tasks, {"finetuned": images_a, "replace": images_b}, classifier, low_res)

The claims stage's tasks (pipeline.inpainting_tasks) take a one-shape scene of the sample world, erase
a box over the shape and ask for another shape in another colour on the same background ("a blue star
on a green background" where a red circle was), so what the classifier reads inside the box says whether
the caption was followed, and the background at the box's edge says whether the fill fits its surround.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX_MARGIN = 1.2   # the erased box: the shape's extent times this (a shape's corners reach past its radius)


@dataclass(frozen=True)
class InpaintingTask:
    image: str              # the world image (path)
    regenerate: np.ndarray  # bool [size, size]: True inside the erased box
    prompt: str             # the caption the fill is asked for
    original_caption: str


def box_mask(position, radius: float, size: int) -> np.ndarray:
    """bool [size, size]: the pixels whose centres lie in the box of half-side radius * BOX_MARGIN."""
    half = radius * BOX_MARGIN
    centres = (np.arange(size) + 0.5) / size
    inside_x = np.abs(centres - position[0]) <= half
    inside_y = np.abs(centres - position[1]) <= half
    return inside_y[:, None] & inside_x[None, :]


def seam(images: np.ndarray, regenerate: np.ndarray) -> np.ndarray:
    """float [N]: the mean absolute RGB difference (0..1) between neighbouring pixels one on each side of
    the mask's edge. images uint8 [N, H, W, 3]; regenerate bool [N, H, W] (or [H, W]) at the same size."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    m = np.broadcast_to(np.asarray(regenerate, dtype=bool), x.shape[:3])
    total = np.zeros(len(x), np.float64)
    count = np.zeros(len(x), np.float64)
    for axis in (1, 2):
        a = np.take(x, range(x.shape[axis] - 1), axis=axis)
        b = np.take(x, range(1, x.shape[axis]), axis=axis)
        crossing = np.take(m, range(m.shape[axis] - 1), axis=axis) != np.take(m, range(1, m.shape[axis]), axis=axis)
        step = np.abs(a - b).mean(-1)
        total += (step * crossing).sum(axis=(1, 2))
        count += crossing.sum(axis=(1, 2))
    if (count == 0).any():
        raise ValueError("a mask without an edge (all kept or all regenerated)")
    return total / count


def inpainting_table(tasks: list[InpaintingTask], low_res: dict[str, np.ndarray], final: dict[str, np.ndarray],
                     originals: np.ndarray, classifier=None) -> dict:
    """{"modes": {mode: {"seam", "seam_std", "colour", "kind", "background", "all", "samples"}}, "original_seam"}.

    low_res: mode -> uint8 [N, size, size, 3], the base's fill at the masks' size (the seam is measured
    there, before an upsampler could blur it); final: mode -> the images the classifier reads (upsampled
    when an upsampler ran); originals: uint8 [N, size, size, 3], the world images at the masks' size."""
    from evaluation.scene_attributes import attributes_of_caption

    regenerate = np.stack([t.regenerate for t in tasks])
    out = {"modes": {}, "original_seam": float(seam(originals, regenerate).mean()), "tasks": len(tasks)}
    wanted = [attributes_of_caption(t.prompt) for t in tasks]
    for mode, images in low_res.items():
        s = seam(images, regenerate)
        row = {"seam": float(s.mean()), "seam_std": float(s.std()), "samples": len(tasks)}
        if classifier is not None:
            got = classifier.predict(final[mode])
            for attribute in ("colour", "kind", "background"):
                if attribute in classifier.classes:
                    row[attribute] = float(np.mean([g[attribute] == w[attribute] for g, w in zip(got, wanted)]))
            row["all"] = float(np.mean([all(g[a] == w[a] for a in ("colour", "kind", "background") if a in g)
                                        for g, w in zip(got, wanted)]))
        out["modes"][mode] = row
    return out
