"""The rater checks on a crowd: with 50 attentive raters, each check run 50 times at alpha 0.01 would flag
someone who did nothing wrong in about one run of three; Holm's adjustment across the raters keeps
everyone attentive unflagged, while raters who answer by position or pick the noise are still flagged."""
from __future__ import annotations

import random

import pytest

from evaluation import comparison_store as cs
from evaluation.judgement_quality import ALPHA, holm, rater_checks
from filtering.labels import LabelStore
from pairs_report_world import write_report

ATTENTIVE, VOTES = 48, 40


def test_holm_adjusts_in_order_and_never_below_bonferroni_rank():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def _vote_round_robin(store, ids: dict, choose) -> None:
    """Every rater votes once in turn, as a crowd working at the same time does, VOTES times."""
    for i in range(VOTES):
        for name, rater_id in ids.items():
            pair = cs.next_pair(store, rater_id)
            assert pair is not None, f"{name} ran out after {i} votes"
            assert cs.vote(store, rater_id, cs.PageVote(f"{name}-{pair.id}", pair.id, choose(name, pair)))


@pytest.mark.slow
def test_a_crowd_of_attentive_raters_is_not_flagged_and_the_bad_ones_are(tmp_path, glide_cli, capsys):
    report = write_report(tmp_path / "report", prompts=300)
    db = tmp_path / "labels.db"
    assert glide_cli("pairs", "make", "--report", report, "--settings", "guidance-1,guidance-3,guidance-5",
                     "--question", "photorealism", "-n", 800, "--obvious", 0.1, "--duplicates", 0.05,
                     "--votes-per-pair", 3, "--db", db) == 0, capsys.readouterr().err
    rng = random.Random(14)  # a seed where one attentive rater's unadjusted p falls below ALPHA
    rank = {"guidance-1": 0, "guidance-3": 1, "guidance-5": 2}

    def choose(name, pair):
        side_b = "right" if pair.a_side == "left" else "left"
        if name == "lefty":
            return "left"
        if pair.model_b == "noise":
            return side_b if name == "noisy" else pair.a_side
        # attentive: the higher guidance four times in five, whichever side it is on
        a_better = (rank[pair.model_a] > rank[pair.model_b]) == (rng.random() < 0.8)
        return pair.a_side if a_better else side_b

    with LabelStore(str(db)) as store:
        names = [f"rater{r:02d}" for r in range(ATTENTIVE)] + ["lefty", "noisy"]
        ids = {}
        for name in names:
            store.add_rater(name)
            ids[name] = next(r.id for r in store.raters() if r.name == name)
        _vote_round_robin(store, ids, choose)
        checks = {c.rater: c for c in rater_checks(store, question="photorealism")}
    attentive = [checks[f"rater{r:02d}"] for r in range(ATTENTIVE)]
    # without the adjustment this crowd would have an innocent rater flagged
    assert min(c.majority_p for c in attentive) < ALPHA
    assert [name for name, c in checks.items() if c.flagged] == ["lefty", "noisy"]
    assert "obvious" in checks["noisy"].flagged
    assert all(c.majority_p_holm >= c.majority_p for c in attentive)
