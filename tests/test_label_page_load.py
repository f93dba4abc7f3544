"""50 raters labelling at once over loopback, 40 answers each, against `glide serve` in its own process:
every one of the 2,000 answers stored exactly once (resends included), no pair over its 2 raters,
no "database is locked", every reply a 200. Correctness only: the latency is measured by
`python -m benchmarks.label_load`, with the same load driver."""
from __future__ import annotations

import pytest

from label_page_world import Server  # puts the checkout on sys.path for benchmarks/
from benchmarks.label_load import check_stored, make_world, run_raters  # noqa: I001

RATERS, LABELS = 50, 40


@pytest.mark.slow
def test_fifty_raters_at_once_store_every_answer_exactly_once(tmp_path):
    db, dataset, tokens = make_world(tmp_path, items=RATERS * LABELS // 2 + 2 * RATERS, raters=RATERS)
    with Server(db, "--dataset", dataset, "--gold-every", 0) as server:
        result = run_raters(server.url, tokens, LABELS, resend_every=10)
        output = server.kill()
    assert result.errors == []
    assert result.answers == RATERS * LABELS and result.resends == RATERS * LABELS // 10
    assert check_stored(db, RATERS * LABELS) == []
    assert "locked" not in output.lower() and "Traceback" not in output
