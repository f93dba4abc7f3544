"""`glide label ...`: fill labelling queues, import and export labels, show where labelling stands.

    glide label sample --db DB --embeddings DATASET_EMB --filter NAME -n N       random pairs
    glide label search --db DB --embeddings DATASET_EMB --filter NAME --query TEXT -n N [--clip MODEL]
    glide label next   --db DB --embeddings DATASET_EMB --filter NAME --filters FILTERS -n N
    glide label import --db DB FILE | --from-ground-truth WORLD_DIR [--queue Q] [--filter NAME] [--uids FILE]
    glide label export --db DB -o FILE [--filter NAME] [--with-skips]
    glide label status --db DB [--json]
    glide label raters add NAME [--admin] | list | revoke NAME     sign-in links for the labelling page
    glide label gold   --db DB FILE | --from-ground-truth WORLD_DIR --embeddings DATASET_EMB --filter NAME -n N
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "label", parents=[common], help="labels for the safety filters: queues, import/export, status",
        description="Pick pairs for people to label (random, CLIP text search, nearest the current filter's "
                    "boundary), import labels (a file, or a sample world's ground truth), export them, and show "
                    "progress. Labels live in a database: a SQLite file (WAL mode) or any SQLAlchemy URL.")
    sub = p.add_subparsers(dest="label_command", metavar="ACTION")
    sub.required = True

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        q.add_argument("--db", default=None, metavar="DB",
                       help="labels database: a path (SQLite file) or an SQLAlchemy URL (default: label.db "
                            "of the config)")
        add_config_option(q)
        q.set_defaults(func=run, label_action=name)
        return q

    def picking(name: str, help_text: str) -> argparse.ArgumentParser:
        q = action(name, help_text)
        q.add_argument("--embeddings", required=True, metavar="DATASET_EMB",
                       help="dataset with a clip_embedding column (glide embed)")
        q.add_argument("--filter", required=True, metavar="NAME", help="the filter the labels are for (people, ...)")
        q.add_argument("-n", type=int, default=None, metavar="N", help="pairs to queue (default: label.count, 100)")
        q.add_argument("--queue", default=None, metavar="NAME", help="name of the new queue (default: FILTER-KIND-ID)")
        q.add_argument("--labels-per-item", type=int, default=1, metavar="K",
                       help="raters the labelling page asks per pair (default 1; 2 or more measures agreement)")
        return q

    q = picking("sample", "queue N random pairs not yet labelled or queued for the filter")
    q.add_argument("--seed", type=int, default=None, help="seed of the draw (default: a fresh one, recorded)")
    q = picking("search", "queue the N unlabelled pairs most similar to a text query (CLIP text features)")
    q.add_argument("--query", required=True, help='what to look for, e.g. "a knife"')
    q.add_argument("--clip", default=None, metavar="MODEL",
                   help="CLIP for the query's text features (default: the one that embedded DATASET_EMB)")
    q = picking("next", "active learning: queue the N unlabelled pairs nearest the filter's current boundary")
    q.add_argument("--filters", required=True, metavar="FILTERS", help="filters folder (glide fit-filters)")
    q.add_argument("--boundary", choices=("svm", "threshold"), default=None,
                   help="nearest the SVM's boundary (score 0; default) or its tuned removal threshold")

    q = action("import", "store labels from a file, or answer queued pairs from a sample world's ground truth")
    q.add_argument("file", nargs="?", metavar="FILE",
                   help="CSV/TSV, Arrow or Parquet with columns uid, filter, label [, rater, created, client_id]")
    q.add_argument("--from-ground-truth", default=None, metavar="WORLD_DIR",
                   help="answer from WORLD_DIR/truth.parquet (pairs found through WORLD_DIR/urls.parquet)")
    q.add_argument("--queue", default=None, metavar="NAME", help="ground truth: answer this queue's pending items")
    q.add_argument("--filter", default=None, metavar="NAME", help="ground truth: only this filter's items")
    q.add_argument("--uids", default=None, metavar="FILE",
                   help="ground truth: answer these pairs (one uid per line) instead of the queued ones")
    q.add_argument("--rater", default="import", help="rater of rows that name none (default: import)")

    q = action("export", "write every rater's current answers to a labels file (fit-filters reads it)")
    q.add_argument("-o", "--output", required=True, metavar="FILE", help=".csv, .tsv, .arrow or .parquet")
    q.add_argument("--filter", default=None, metavar="NAME", help="only this filter's labels")
    q.add_argument("--with-skips", action="store_true", help="also write skips (label 'skip')")

    q = action("status", "labelled yes/no/skip and queued pairs per filter, and each queue's progress")
    q.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")

    q = action("raters", "the labelling page's raters: add one (prints their sign-in link), list, revoke")
    q.add_argument("raters_action", choices=("add", "list", "revoke"), metavar="add|list|revoke")
    q.add_argument("name", nargs="?", metavar="NAME", help="the rater (add, revoke)")
    q.add_argument("--admin", action="store_true", help="add: the rater may also create queues and export")
    q.add_argument("--url", default=None, metavar="URL",
                   help="the app's address as the rater reaches it (default: serve.url, else http://HOST:PORT "
                        "of the config's serve section)")

    q = action("gold", "add gold items (pairs with a known answer) that the labelling page mixes in")
    q.add_argument("file", nargs="?", metavar="FILE", help="labels file whose yes/no rows are the known answers")
    q.add_argument("--from-ground-truth", default=None, metavar="WORLD_DIR",
                   help="pick pairs of --embeddings whose answer the sample world knows, half of them yes")
    q.add_argument("--embeddings", default=None, metavar="DATASET_EMB", help="ground truth: the pairs to pick from")
    q.add_argument("--filter", default=None, metavar="NAME", help="only this filter (ground truth: required)")
    q.add_argument("-n", type=int, default=None, metavar="N", help="ground truth: gold pairs to pick (default 20)")
    q.add_argument("--seed", type=int, default=0, help="ground truth: seed of the pick")


def run(args: argparse.Namespace) -> int:
    from shards import UserError

    n = getattr(args, "n", None)
    if n is not None and n < 1:
        raise UserError(f"-n: {n} pairs; give at least 1")
    _, section = load_section(args, "label", {"db": args.db, "count": n, "boundary": getattr(args, "boundary", None)})
    if not section.db:
        raise UserError("--db: give the labels database (a path or an SQLAlchemy URL), or set label.db in the config")
    return ACTIONS[args.label_action](args, section)


def _store(section, *, create: bool = True):
    from filtering.labels import LabelStore

    return LabelStore(section.db, create=create, busy_timeout_s=section.busy_timeout_s)


def _filter_name(text: str) -> str:
    from filtering.filter_files import check_filter_name

    return check_filter_name(text, "--filter")


def _report_queue(queue, args, section) -> int:
    from filtering.labels.database import display_name

    if queue is None:
        print(f"label {args.label_action}: no pair of {args.embeddings} is left unlabelled and unqueued "
              f"for {args.filter}; nothing queued")
        return 0
    line = f"queued {queue.items} pairs for {queue.filter} in queue {queue.name} ({queue.kind}"
    if queue.kind == "search":
        line += f', "{queue.query}"'
    elif queue.kind == "active":
        line += f", filters {queue.filter_version[:12]}, boundary {queue.params['boundary']}"
    print(line + f") in {display_name(section.db)}")
    return 0


def _sample(args, section) -> int:
    from filtering.labels.pickers import queue_random

    filter_name = _filter_name(args.filter)  # bad input fails before the database is created
    with _store(section) as store:
        queue = queue_random(store, args.embeddings, filter_name, section.count, seed=args.seed, name=args.queue,
                             labels_per_item=args.labels_per_item)
        return _report_queue(queue, args, section)


def _search(args, section) -> int:
    import torch

    from filtering.labels.pickers import queue_search, text_encoder

    filter_name = _filter_name(args.filter)
    encode_text, described = text_encoder(args.embeddings, args.clip, "cuda" if torch.cuda.is_available() else "cpu")
    with _store(section) as store:
        queue = queue_search(store, args.embeddings, filter_name, args.query, section.count, encode_text,
                             model=described, name=args.queue, labels_per_item=args.labels_per_item)
        return _report_queue(queue, args, section)


def _next(args, section) -> int:
    import torch

    from filtering.labels.pickers import queue_active

    filter_name = _filter_name(args.filter)
    with _store(section) as store:
        queue = queue_active(store, args.embeddings, filter_name, args.filters, section.count,
                             boundary=section.boundary, device="cuda" if torch.cuda.is_available() else "cpu",
                             memory_mb=section.kernel_memory_mb, name=args.queue,
                             labels_per_item=args.labels_per_item)
        return _report_queue(queue, args, section)


def _import(args, section) -> int:
    from shards import UserError

    if bool(args.file) == bool(args.from_ground_truth):
        raise UserError("label import: give a labels FILE or --from-ground-truth WORLD_DIR (one of them)")
    if args.file and (args.queue or args.uids):
        raise UserError("label import: --queue and --uids go with --from-ground-truth")
    with _store(section) as store:
        if args.file:
            from filtering.labels.label_files import read_labels_file
            from filtering.labels.raters import check_rater_name

            check_rater_name(args.rater, "--rater")
            # the whole file is checked before anything is stored: a bad row stores none of it
            labels = [label for label in read_labels_file(args.file, rater=args.rater)
                      if args.filter is None or label.filter == args.filter]
            result = store.add_labels(labels, where=args.file)
            print(f"imported {result.stored} labels from {args.file} into {store.name}"
                  f" ({result.duplicates} already there)")
            return 0
        from filtering.labels.ground_truth import answer_from_world

        uids = _read_uids(args.uids) if args.uids else None
        result = answer_from_world(store, args.from_ground_truth, queue=args.queue,
                                   filter_name=_filter_name(args.filter) if args.filter else None, uids=uids)
        print(f"answered {result['stored']} from the ground truth of {args.from_ground_truth} "
              f"({result['duplicates']} already there, {result['not_in_world']} pairs not in the world)")
        return 0


def _read_uids(path: str) -> list[str]:
    from shards import UserError

    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip().lower() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the uids file ({e.strerror if isinstance(e, OSError) else e})") from None


def _export(args, section) -> int:
    from filtering.labels.label_files import file_kind, write_labels_file

    file_kind(args.output)  # a wrong suffix fails before the database is opened
    with _store(section, create=False) as store:
        answers = store.answers(_filter_name(args.filter) if args.filter else None, skips=args.with_skips)
    rows = write_labels_file(args.output, answers)
    print(f"exported {rows} labels to {args.output}")
    return 0


def _status(args, section) -> int:
    with _store(section, create=False) as store:
        status = store.status()
    print(status_table(status))
    if args.json:
        figures = {"filters": status["filters"],
                   "queues": {q.name: {"filter": q.filter, "kind": q.kind, "items": q.items, "answered": q.answered,
                                       "pending": q.pending} for q in status["queues"]}}
        print(json.dumps(figures))
    sys.stdout.flush()
    return 0


def status_table(status: dict) -> str:
    head = f"{'filter':<12}{'yes':>8}{'no':>8}{'skip':>7}{'queued':>8}"
    lines = [head, "-" * len(head)]
    for name, f in status["filters"].items():
        lines.append(f"{name:<12}{f['yes']:>8}{f['no']:>8}{f['skip']:>7}{f['queued']:>8}")
    if status["queues"]:
        head = f"{'queue':<28}{'filter':<10}{'kind':<8}{'items':>7}{'answered':>10}{'pending':>9}  picked by"
        lines += ["", head, "-" * len(head)]
        for q in status["queues"]:
            lines.append(f"{q.name:<28}{q.filter:<10}{q.kind:<8}{q.items:>7}{q.answered:>10}{q.pending:>9}  "
                         f"{q.picked_by}")
    return "\n".join(lines)


def _raters(args, section) -> int:
    from shards import UserError

    if args.raters_action in ("add", "revoke") and not args.name:
        raise UserError(f"label raters {args.raters_action}: give the rater's NAME")
    if args.raters_action == "add":
        from pipeline.config import load_config
        from pipeline.webapp.links import base_url, signin_link

        base = args.url or base_url(load_config(args.config).serve)
        with _store(section) as store:
            token = store.add_rater(args.name, admin=args.admin)
        role = "admin" if args.admin else "rater"
        print(f"{role} {args.name}: {signin_link(base, token)}")
        print("the link is the sign-in: send it privately; it is shown once (only its hash is stored), and "
              "`glide label raters add` again replaces it")
        return 0
    with _store(section, create=False) as store:
        if args.raters_action == "revoke":
            if not store.revoke_rater(args.name):
                raise UserError(f"label raters revoke: no rater named {args.name!r} in {store.name}")
            print(f"revoked {args.name}: their link no longer signs in; their labels stay")
            return 0
        for rater in store.raters():
            state = "revoked" if rater.revoked else "admin" if rater.is_admin else "rater"
            print(f"{rater.name:<24}{state}")
    return 0


def _gold(args, section) -> int:
    from filtering.labels.gold import add_gold, gold_from_file, gold_from_world, list_gold
    from shards import UserError

    if bool(args.file) == bool(args.from_ground_truth):
        raise UserError("label gold: give a labels FILE or --from-ground-truth WORLD_DIR (one of them)")
    filter_name = _filter_name(args.filter) if args.filter else None
    if args.from_ground_truth and (filter_name is None or not args.embeddings):
        raise UserError("label gold --from-ground-truth: give --filter NAME and --embeddings DATASET_EMB")
    with _store(section) as store:
        if args.file:
            items = gold_from_file(args.file, filter_name)
        else:
            have = {g.uid for g in list_gold(store, filter_name)}
            items = gold_from_world(args.from_ground_truth, args.embeddings, filter_name, args.n or 20,
                                    seed=args.seed, exclude=have)
        added, already = add_gold(store, items, where=args.file or args.from_ground_truth)
    yes = sum(item.answer for item in items)
    print(f"added {added} gold items ({yes} yes, {len(items) - yes} no among those given; {already} already gold)")
    return 0


ACTIONS = {"sample": _sample, "search": _search, "next": _next, "import": _import, "export": _export,
           "status": _status, "raters": _raters, "gold": _gold}
