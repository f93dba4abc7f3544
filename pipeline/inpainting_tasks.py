"""The inpainting tasks of the claims stage (issue 13's claim 4), drawn from a sample world.

A task takes a scene with one shape and nothing else, erases a box over the shape, and asks for another
shape in another colour on the same background, so the scene classifier can tell whether the fill
followed its caption. It lives in pipeline because the sample world does: evaluation only scores tasks.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from evaluation.inpainting import InpaintingTask, box_mask


def inpainting_tasks(world: Path, count: int, size: int, seed: int = 0) -> list[InpaintingTask]:
    """`count` tasks from a sample world's one-shape scenes without stand-ins or near misses."""
    import pyarrow.parquet as pq

    from pipeline.sample_world import PALETTE, SHAPE_KINDS, describe_scene

    rng = random.Random(seed)
    rows = pq.read_table(Path(world) / "truth.parquet").to_pylist()
    tasks = []
    for row in rows:
        scene = json.loads(row["scene"])
        if len(scene["shapes"]) != 1 or scene["glyphs"] or scene["distractors"]:
            continue
        shape = scene["shapes"][0]
        colour = rng.choice([c for c in PALETTE if c not in (scene["background"], shape["colour"])])
        kind = rng.choice([k for k in SHAPE_KINDS if k != shape["kind"]])
        wanted = {**scene, "shapes": [{**shape, "colour": colour, "kind": kind}]}
        tasks.append(InpaintingTask(image=str(Path(world) / row["path"]),
                                    regenerate=box_mask(shape["position"], shape["radius"], size),
                                    prompt=describe_scene(wanted), original_caption=row["caption"]))
        if len(tasks) == count:
            return tasks
    raise ValueError(f"{world}: {len(tasks)} one-shape scenes without stand-ins, {count} needed")
