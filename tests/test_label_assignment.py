"""Handing items to raters (k labels per item, expiring leases, gold items), agreement and gold accuracy,
and finding pairs by uid: on a real SQLite file."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

import shards as sh
from filtering.labels import LabelStore, NewLabel
from filtering.labels.assignment import NotServed, PageAnswer, Policy, next_item, progress, submit, take_back
from filtering.labels.gold import GoldItem, add_gold, gold_from_file, list_gold
from filtering.labels.pair_index import PairIndex
from filtering.labels.quality import agreement, answer_times, cohen_kappa, fleiss_kappa, gold_accuracy
from filtering.labels.queues import QueueItem
from label_page_world import picture, picture_dataset
from label_world import uid_of

U = [uid_of(i) for i in range(40)]
NO_GOLD = Policy(lease_s=600, gold_every=0)


@pytest.fixture
def store(tmp_path):
    with LabelStore(str(tmp_path / "labels.db")) as s:
        yield s


def raters(store, *names):
    for name in names:
        store.add_rater(name)
    return {r.name: r for r in store.raters()}


def answer(item, value="yes", client_id=None, **fields):
    return PageAnswer(client_id=client_id or f"{item.uid}-{value}-{id(fields)}", uid=item.uid, filter=item.filter,
                      answer=value, queue_id=item.queue_id, **fields)


def test_k_raters_get_each_item_and_no_more_while_they_hold_leases(store):
    store.create_queue(filter_name="people", kind="random", items=[QueueItem(u) for u in U[:3]], labels_per_item=2)
    r = raters(store, "ana", "ben", "cy")
    first = {name: next_item(store, r[name], NO_GOLD) for name in ("ana", "ben", "cy")}
    assert first["ana"].uid == first["ben"].uid == U[0]   # two raters share item 0 (k = 2) ...
    assert first["cy"].uid == U[1]                        # ... so the third gets item 1
    assert next_item(store, r["ana"], NO_GOLD) == first["ana"]  # a reload gives back the leased item
    assert submit(store, r["ana"], answer(first["ana"], "yes", "a1")) is True
    assert submit(store, r["ana"], answer(first["ana"], "yes", "a1")) is False  # a resend: stored once
    assert next_item(store, r["ana"], NO_GOLD).uid == U[1]      # item 1 has cy's lease and room for one more
    assert next_item(store, r["ben"], NO_GOLD).uid == U[0]      # still ben's
    assert len(store.history(U[0], "people")) == 1


def test_an_expired_lease_frees_its_place(store):
    store.create_queue(filter_name="people", kind="random", items=[QueueItem(u) for u in U[:2]])
    r = raters(store, "ana", "ben", "cy")
    now = dt.datetime.now(dt.timezone.utc)
    short = Policy(lease_s=60, gold_every=0)
    assert next_item(store, r["ana"], short, now=now).uid == U[0]
    assert next_item(store, r["ben"], short, now=now + dt.timedelta(seconds=30)).uid == U[1]
    assert next_item(store, r["cy"], short, now=now + dt.timedelta(seconds=59)) is None  # both leased (k = 1)
    later = now + dt.timedelta(seconds=61)                     # ana walked away: her lease ran out
    assert next_item(store, r["cy"], short, now=later).uid == U[0]
    assert next_item(store, r["ben"], short, now=later).uid == U[1]   # ben's lease is live (and renewed)
    assert next_item(store, r["ana"], short, now=later) is None


def test_items_answered_elsewhere_are_not_served_and_the_end_is_none(store):
    queue = store.create_queue(filter_name="hate", kind="random", items=[QueueItem(u) for u in U[:3]])
    store.add_label(U[0], "hate", "no", "import")              # answered from another door
    r = raters(store, "ana")
    seen = []
    while (item := next_item(store, r["ana"], NO_GOLD, queue_id=queue.id)) is not None:
        seen.append(item.uid)
        submit(store, r["ana"], answer(item, "skip", f"k{len(seen)}"))
    assert seen == [U[1], U[2]]
    [mine] = progress(store, r["ana"])
    assert (mine.queue.items, mine.queue.answered, mine.mine) == (3, 3, 2)


def test_a_gold_item_is_mixed_in_every_nth_pair_and_scored(store, tmp_path):
    store.create_queue(filter_name="people", kind="random", items=[QueueItem(u) for u in U[:10]])
    add_gold(store, [GoldItem("people", U[30], True), GoldItem("people", U[31], False)])
    assert add_gold(store, [GoldItem("people", U[30], False)]) == (0, 1)  # a gold pair keeps its answer
    r = raters(store, "ana")
    policy = Policy(lease_s=600, gold_every=3)
    shown = []
    for i in range(8):
        item = next_item(store, r["ana"], policy)
        shown.append((item.uid, item.gold))
        submit(store, r["ana"], answer(item, "yes", f"g{i}"))  # ana says yes to everything
    assert [gold for _, gold in shown] == [False, False, True, False, False, True, False, False]
    assert [uid for uid, gold in shown if gold] == [U[30], U[31]]
    [score] = gold_accuracy(store)
    assert (score.rater, score.filter, score.answered, score.correct, score.accuracy) == ("ana", "people", 2, 1, 0.5)
    csv = tmp_path / "gold.csv"
    csv.write_text(f"uid,filter,label\n{U[32]},violence,yes\n{U[33]},violence,skip\n")
    assert gold_from_file(str(csv)) == [GoldItem("violence", U[32], True)]


def test_an_answer_for_a_pair_the_queue_does_not_hold_is_refused(store):
    queue = store.create_queue(filter_name="people", kind="random", items=[QueueItem(U[0])])
    r = raters(store, "ana")
    with pytest.raises(NotServed):
        submit(store, r["ana"], PageAnswer("x1", U[5], "people", "yes", queue.id))
    with pytest.raises(NotServed):
        submit(store, r["ana"], PageAnswer("x2", U[0], "violence", "yes", queue.id))  # another filter
    with pytest.raises(sh.UserError, match="answer 'maybe'"):
        submit(store, r["ana"], PageAnswer("x3", U[0], "people", "maybe", queue.id))


def test_undo_gives_the_pair_back_to_its_rater_several_steps_back(store):
    store.create_queue(filter_name="people", kind="random", items=[QueueItem(u) for u in U[:4]])
    r = raters(store, "ana", "ben")
    answered = []
    for i in range(3):
        item = next_item(store, r["ana"], NO_GOLD)
        submit(store, r["ana"], answer(item, "no", f"u{i}", answer_ms=800 + 100 * i))
        answered.append(item.uid)
    undone = [store.undo("ana", client_id=f"undo{i}") for i in range(2)]
    assert [u.uid for u in undone] == [answered[2], answered[1]]
    back = [take_back(store, r["ana"], u.label_id, NO_GOLD) for u in undone]  # as the page does
    assert [b.uid for b in back] == [answered[2], answered[1]]
    assert next_item(store, r["ben"], NO_GOLD).uid == U[3]     # the undone pairs are ana's again, leased
    assert next_item(store, r["ana"], NO_GOLD).uid == answered[1]
    [times] = answer_times(store)
    assert (times.rater, times.labels, times.median_s) == ("ana", 1, 0.8)


def test_raters_racing_in_threads_never_over_assign_an_item(store):
    store.create_queue(filter_name="people", kind="random", items=[QueueItem(u) for u in U[:30]], labels_per_item=2)
    r = raters(store, *[f"r{i}" for i in range(6)])
    errors = []

    def work(rater):
        try:
            n = 0
            while (item := next_item(store, rater, NO_GOLD)) is not None:
                submit(store, rater, answer(item, "yes", f"{rater.name}-{n}"))
                n += 1
        except Exception as e:  # noqa: BLE001 - the assertion below shows it
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(rater,)) for rater in r.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    per_item = {u: len({h["rater"] for h in store.history(u, "people")}) for u in U[:30]}
    assert set(per_item.values()) == {2} and sum(len(store.history(u, "people")) for u in U[:30]) == 60


def test_kappas_match_known_values():
    from sklearn.metrics import cohen_kappa_score

    a = list("yyynnnyyny" "nnyy")
    b = list("yynnnnyyyy" "nyyn")
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(list("yyy"), list("yyy")) is None  # one category: chance agreement is 1
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa([[2, 0], [0, 2], [1, 0]]) == pytest.approx(1.0)  # an item with one answer is left out


def test_agreement_per_filter_from_the_stored_answers(store):
    rows = {"ana": "yyynnnyyny", "ben": "yynnnnyyyy", "cy": "yyynnnyyny"}
    store.add_labels([NewLabel(U[i], "people", "yes" if v == "y" else "no", name)
                      for name, answers in rows.items() for i, v in enumerate(answers)])
    store.add_label(U[20], "people", "yes", "ana")           # answered by one rater: not shared
    store.add_label(U[0], "people", "skip", "dee")            # a skip is no answer
    result = agreement(store, "people")
    assert (result.items, result.raters) == (10, 3)
    pairs = {(p.rater_a, p.rater_b): p for p in result.pairs}
    assert pairs[("ana", "cy")].kappa == pytest.approx(1.0) and pairs[("ana", "cy")].shared == 10
    assert pairs[("ana", "ben")].kappa == pytest.approx(cohen_kappa(list(rows["ana"]), list(rows["ben"])))
    counts = [[sum(rows[r][i] == c for r in rows) for c in "yn"] for i in range(10)]
    assert result.fleiss == pytest.approx(fleiss_kappa(counts))


def test_pairs_are_found_by_uid_only(tmp_path):
    path, uids = picture_dataset(tmp_path / "emb", 40)
    index = PairIndex()
    assert len(index.add(path)) == 40
    pair = index.get(uids[33])
    assert (pair.caption, pair.image, pair.image_format) == ("a picture number 33", picture(33), "png")
    assert index.get(uid_of(999)) is None and index.get("../../etc/passwd") is None and index.get("") is None
    assert index.get(uids[5].upper()) is None and index.knows(uids[0])


def test_list_gold_by_filter(store):
    add_gold(store, [GoldItem("people", U[1], True), GoldItem("hate", U[2], False)])
    assert list_gold(store, "hate") == [GoldItem("hate", U[2], False)]
    with pytest.raises(sh.UserError, match="not a pair uid"):
        add_gold(store, [GoldItem("hate", "nope", True)])
