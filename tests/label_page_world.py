"""What the labelling page's tests share: a dataset of small real pictures, a database with a queue and
raters, `glide serve` as a real subprocess, and the OS's headless Chromium."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from filtering.labels import LabelStore
from filtering.labels.queues import QueueItem
from label_world import unit, write_vectors_dataset

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is a folder of the checkout, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.label_load import Server  # noqa: E402,F401  (the page tests and the load benchmark share it)

MARKUP = '<img src=x onerror="window.pwned=1"><b>bold?</b><script>window.pwned=2</script> & "quotes"'
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (150, 60, 200), (30, 180, 190)]


def picture(i: int, size=(96, 64)) -> bytes:
    """A small PNG: a coloured background with a white square whose place depends on i."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, COLOURS[i % len(COLOURS)])
    x = (i * 13) % (size[0] - 20)
    ImageDraw.Draw(img).rectangle([x, 20, x + 20, 40], fill=(255, 255, 255))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def picture_dataset(folder, n: int, *, markup_at=None, seed: int = 0) -> tuple[str, list[str]]:
    """An embeddings dataset of n pictures captioned "a picture number i", except pair `markup_at`,
    whose caption is MARKUP (untrusted web text); (path, uids)."""
    captions = [MARKUP if i == markup_at else f"a picture number {i}" for i in range(n)]
    vectors = unit(np.random.default_rng(seed).standard_normal((n, 8)))
    return write_vectors_dataset(folder, vectors, captions=captions, images=[picture(i) for i in range(n)],
                                 batch_rows=16)


def queue_db(db, dataset: str, uids, *, filter_name="people", labels_per_item=1, name=None):
    """A database with one random queue of `uids` from `dataset`; returns the queue's info."""
    with LabelStore(str(db)) as store:
        return store.create_queue(filter_name=filter_name, kind="random", items=[QueueItem(u) for u in uids],
                                  dataset=dataset, name=name, labels_per_item=labels_per_item)


def rater_tokens(db, names, *, admin=False) -> dict[str, str]:
    with LabelStore(str(db)) as store:
        return {name: store.add_rater(name, admin=admin) for name in names}


def chromium_or_skip():
    """The Playwright module and the OS's Chromium path; skips where it is missing, except in CI
    (GLIDE_REQUIRE_BROWSER=1, set by .ci/run, which installs it)."""
    required = os.environ.get("GLIDE_REQUIRE_BROWSER") == "1"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e .[dev])")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        if required:
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs it: apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


@contextlib.contextmanager
def opened_in_chromium(path, width: int = 1240, height: int = 900):
    """A page of headless Chromium showing the local file PATH (a report), loaded; closed afterwards."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(Path(path).as_uri())
            page.wait_for_load_state("load")
            yield page
        finally:
            browser.close()
