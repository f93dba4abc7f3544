"""Claim 4's instruments: the seam across a mask's edge, the masks and prompts made from a sample
world's one-shape scenes, the table of both fills and the claim's check."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluation.claims import inpainting_claim
from evaluation.inpainting import box_mask, inpainting_table, seam
from pipeline.inpainting_tasks import inpainting_tasks
from evaluation.scene_attributes import attributes_of_caption


def flat(colour, size=8, n=1):
    return np.broadcast_to(np.array(colour, np.uint8), (n, size, size, 3)).copy()


def test_the_seam_is_the_step_across_the_masks_edge_and_nothing_else():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    background = flat((0, 0, 0))
    assert seam(background, mask)[0] == 0.0
    # a fill of another colour steps by that colour at every crossing pair, whatever is drawn deeper inside
    filled = background.copy()
    filled[0, 2:6, 2:6] = (255, 255, 0)
    filled[0, 3:5, 3:5] = (0, 0, 255)
    assert seam(filled, mask)[0] == pytest.approx(2 / 3)
    # a step inside the kept region (far from the edge) is not a seam
    far = background.copy()
    far[0, :, 7] = 255
    assert seam(far, mask)[0] == 0.0
    # per image, and a mask without an edge is an error
    both = np.concatenate([background, filled])
    assert seam(both, mask).tolist() == pytest.approx([0.0, 2 / 3])
    with pytest.raises(ValueError, match="without an edge"):
        seam(background, np.ones((8, 8), bool))


def test_the_box_covers_the_shape_with_a_margin():
    mask = box_mask((0.5, 0.5), 0.3, 16)
    assert mask.sum() == 12 * 12 and mask[8, 8] and not mask[0, 0] and not mask[8, 1] and mask[8, 2]


def test_tasks_are_one_shape_scenes_asked_for_another_shape_in_another_colour(tmp_path):
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_world import generate_world

    generate_world(SampleWorldConfig(count=40, seed=5, image_size=32, max_shapes=2, bad_rows=False), tmp_path / "w")
    truth = {r["path"]: r for r in pq.read_table(tmp_path / "w" / "truth.parquet").to_pylist()}
    tasks = inpainting_tasks(tmp_path / "w", count=3, size=16, seed=0)
    assert len(tasks) == 3
    for task in tasks:
        row = truth[task.image.split("/w/", 1)[1]]
        scene = json.loads(row["scene"])
        assert len(scene["shapes"]) == 1 and not scene["glyphs"] and not scene["distractors"]
        was, wanted = attributes_of_caption(row["caption"].split(",")[0]), attributes_of_caption(task.prompt)
        assert wanted["background"] == was["background"]
        assert wanted["colour"] not in (was["colour"], was["background"]) and wanted["kind"] != was["kind"]
        assert task.regenerate.shape == (16, 16) and 0 < task.regenerate.sum() < 256
    assert inpainting_tasks(tmp_path / "w", count=3, size=16, seed=0)[0].prompt == tasks[0].prompt   # seeded
    with pytest.raises(ValueError, match="one-shape scenes"):
        inpainting_tasks(tmp_path / "w", count=400, size=16)


class Reader:
    """A scene classifier that reads colour from the centre pixel and says 'circle' and 'blue' background."""
    classes = {"colour": ["red", "green"], "kind": ["circle"], "background": ["blue"]}

    def predict(self, images):
        return [{"colour": "red" if im[4, 4, 0] > 128 else "green", "kind": "circle", "background": "blue"}
                for im in images]


def test_the_table_and_the_claim_favour_the_fill_with_the_smaller_seam():
    from evaluation.inpainting import InpaintingTask

    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    tasks = [InpaintingTask("a.png", mask, "a red circle on a blue background", "x")] * 2
    originals = flat((0, 0, 255), n=2)
    good = originals.copy()
    good[:, 3:5, 3:5] = (255, 0, 0)             # a red shape inside, blue up to the edge
    bad = originals.copy()
    bad[:, 2:6, 2:6] = (0, 255, 0)              # a green box: a seam, and the wrong colour
    table = inpainting_table(tasks, {"finetuned": good, "replace": bad}, {"finetuned": good, "replace": bad},
                             originals, Reader())
    assert table["original_seam"] == 0.0 and table["modes"]["finetuned"]["seam"] == 0.0
    assert table["modes"]["replace"]["seam"] == pytest.approx(2 / 3)
    assert table["modes"]["finetuned"]["colour"] == 1.0 and table["modes"]["replace"]["colour"] == 0.0
    assert table["modes"]["finetuned"]["all"] == 1.0
    claim = inpainting_claim(table)
    assert claim["holds"] and [r["mode"] for r in claim["rows"]] == ["finetuned", "replace"]
    assert "0.0000 vs 0.6667" in claim["checks"][0]["detail"]
    swapped = inpainting_table(tasks, {"finetuned": bad, "replace": good}, {"finetuned": bad, "replace": good}, originals)
    assert not inpainting_claim(swapped)["holds"] and "colour" not in swapped["modes"]["replace"]
    with pytest.raises(ValueError, match="same masks"):
        inpainting_claim({"modes": {"replace": table["modes"]["replace"]}, "original_seam": 0.0})
