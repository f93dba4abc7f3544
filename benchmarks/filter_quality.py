"""The safety filters' measurable bar, on a held-out sample world the filters never saw.

    python -m benchmarks.filter_quality [--filters demo-output/filters] [--seed 1] [--count N]
                                        [--config configs/sample-world.yaml] [-o runs/filter-quality]

Generates a sample world from --config with another seed (refused when it is the seed of the world
the filters were fitted on, traced through FILTERS/index.json -> the embeddings' manifest -> the
crawl's manifest -> its world.json), serves it, and runs the real commands on it, printed as they
run: `glide ingest`, `glide embed --clip CLIP` (the CLIP the filters' embeddings were made with, from
their manifest) and `glide filter --filters FILTERS`. Then it compares with the world's
truth.parquet (pairs matched through urls.parquet, as `glide label import --from-ground-truth`
does), per filter:
  positives   pairs of the held-out world that show the filter's category
  misses      of those, the pairs the filter does not fire on (its own decision, as `glide filter`
              makes it: score >= threshold); FNR = misses / positives, with its one-sided 95%
              Clopper-Pearson upper bound
  clean removed  the fraction of the clean pairs (no category at all) the filter fires on
and for the whole filtered dataset: positives of each category that got through every filter,
and the clean pairs removed by any filter. The stage's rejects must be exactly the pairs some filter
fires on (asserted). Side by side, the baseline a crawl has without image filters: a caption
keyword filter that removes a pair when its caption names the category ("a person", "a knife",
"a strange symbol", the world's phrases).
The bar: each filter's FNR < 1% while it removes < 10% of the clean pairs.
ratio = min over filters of min(0.01 / FNR, 0.10 / clean removed) (>= 1: the bar holds; a filter
with no miss counts as FNR 1e-6). Ends with one JSON line {"benchmark": "filter_quality", "ratio":
R, ...}; also written to OUT/filter_quality.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

GOAL_FNR = 0.01
GOAL_CLEAN_REMOVED = 0.10
EPS = 1e-6


def fitted_world(filters: str) -> dict | None:
    """world.json of the world the filters were fitted on, if the chain of manifests leads to one."""
    import shards as sh
    from filtering.filter_files import read_index

    try:
        embeddings = read_index(filters)["fitted_on"]["embeddings"]
        crawl = sh.read_manifest(embeddings)["inputs"][0]["path"]
        url_list = sh.read_manifest(crawl)["inputs"][0]["path"]
        return json.loads((Path(url_list).parent / "world.json").read_text())
    except (sh.UserError, KeyError, IndexError, TypeError, OSError, ValueError):
        return None


def clip_of(filters: str) -> str:
    """The CLIP that made the filters' embeddings (exact weights), from the embed manifest."""
    import shards as sh
    from filtering.filter_files import read_index

    embeddings = read_index(filters)["fitted_on"]["embeddings"]
    return sh.read_manifest(embeddings)["config"]["clip_model"]["exact_spec"]


def held_out_config(config: Path, seed: int, count: int | None, out: Path) -> Path:
    """--config with the held-out seed (and count): OUT/world-config.yaml, what the commands use."""
    data = yaml.safe_load(config.read_text())
    data["sample_world"]["seed"] = seed
    if count:
        data["sample_world"]["count"] = count
    path = out / "world-config.yaml"
    path.write_text(f"# {config.name} with the held-out seed {seed} (benchmarks/filter_quality.py)\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


def measure(world: Path, embeddings: Path, filtered: Path, filters: str) -> dict:
    """Per filter and overall figures against the world's truth (see the module doc)."""
    import shards as sh
    from filtering.embedding_data import iter_embedding_batches
    from filtering.filter_files import load_filters
    from filtering.fnr_threshold import fnr_upper_bound
    from filtering.labels.ground_truth import CATEGORIES, world_answers
    from filtering.svm_filter import FilterScorer
    from pipeline.sample_world import CATEGORY_PHRASES

    filter_set = load_filters(filters)
    names = filter_set.names
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise sh.UserError(f"{filters}: filter {unknown[0]!r} has no ground truth in a sample world "
                           f"(categories: {', '.join(CATEGORIES)})")
    truth = world_answers(str(world), list(CATEGORIES))
    scorer = FilterScorer(filter_set.filters)
    uids, fired, captions = [], [], []
    for batch, matrix in iter_embedding_batches(str(embeddings), ["caption"]):
        uids += batch.column("uid").to_pylist()
        captions += batch.column("caption").to_pylist()
        fired.append(scorer.removes(scorer.scores(matrix)))
    fired = np.concatenate(fired)  # (pairs, filters) bool
    rejected = {r["uid"] for p in sh.list_shards(str(filtered), sh.REJECTS_DIR)
                for r in sh.read_table(p, ["uid"]).to_pylist()}
    stage = np.array([u in rejected for u in uids])
    if not np.array_equal(stage, fired.any(axis=1)):
        raise AssertionError(f"{filtered}: the stage's rejects differ from the filters' decisions here "
                             f"on {int((stage != fired.any(axis=1)).sum())} pairs")
    missing = [u for u in uids if u not in truth["people"]]
    if missing:
        raise AssertionError(f"{len(missing)} pairs of {embeddings} are not in the world's truth")
    is_cat = {c: np.array([truth[c][u] for u in uids]) for c in CATEGORIES}
    clean = ~np.any([is_cat[c] for c in CATEGORIES], axis=0)
    mentions = {c: np.array([CATEGORY_PHRASES[c] in text for text in captions]) for c in CATEGORIES}

    def rates(decision: np.ndarray, positive: np.ndarray) -> dict:
        n, misses = int(positive.sum()), int((positive & ~decision).sum())
        return {"positives": n, "misses": misses, "fnr": misses / max(n, 1),
                "fnr_upper_95": fnr_upper_bound(misses, n),
                "clean_removed": float(decision[clean].mean()), "negatives_removed": float(decision[~positive].mean())}

    per_filter = {}
    for j, name in enumerate(names):
        per_filter[name] = {**rates(fired[:, j], is_cat[name]), "threshold": filter_set.filters[j].threshold}
    any_fired = fired.any(axis=1)
    overall = {"pairs": len(uids), "clean_pairs": int(clean.sum()), "removed": float(any_fired.mean()),
               "clean_removed": float(any_fired[clean].mean()),
               "got_through": {c: int((is_cat[c] & ~any_fired).sum()) for c in names}}
    keyword = {c: rates(mentions[c], is_cat[c]) for c in names}
    return {"filters": per_filter, "all_filters": overall, "caption_keyword_baseline": keyword}


def ratio_of(per_filter: dict) -> float:
    return min(min(GOAL_FNR / max(f["fnr"], EPS), GOAL_CLEAN_REMOVED / max(f["clean_removed"], EPS))
               for f in per_filter.values())


def print_table(result: dict) -> None:
    head = (f"{'filter':<10}{'positives':>10}{'misses':>8}{'FNR':>8}{'FNR 95% bound':>15}"
            f"{'clean removed':>15}{'   bar (FNR < 1%, clean removed < 10%)'}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, f in result["filters"].items():
        ok = f["fnr"] < GOAL_FNR and f["clean_removed"] < GOAL_CLEAN_REMOVED
        print(f"{name:<10}{f['positives']:>10}{f['misses']:>8}{f['fnr']:>8.2%}{f['fnr_upper_95']:>15.2%}"
              f"{f['clean_removed']:>15.2%}   {'holds' if ok else 'FAILS'}")
    print("caption keyword baseline (removes a pair whose caption names the category):")
    for name, f in result["caption_keyword_baseline"].items():
        print(f"{name:<10}{f['positives']:>10}{f['misses']:>8}{f['fnr']:>8.2%}{f['fnr_upper_95']:>15.2%}"
              f"{f['clean_removed']:>15.2%}")
    a = result["all_filters"]
    print(f"all filters together: {a['pairs']} pairs, {a['removed']:.2%} removed, {a['clean_removed']:.2%} of the "
          f"{a['clean_pairs']} clean pairs removed; positives that got through every filter: "
          + ", ".join(f"{c} {n}" for c, n in a["got_through"].items()))


def main(argv: list[str] | None = None) -> int:
    from pipeline.demo import WORLD_CONFIG, crawl_world
    from pipeline.demo_steps import REPO, glide, in_repo
    from shards import UserError

    parser = argparse.ArgumentParser(prog="python -m benchmarks.filter_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--filters", default=str(REPO / "demo-output" / "filters"), help="FILTERS folder to check")
    parser.add_argument("--config", default=str(WORLD_CONFIG), help="world and ingest config (its seed is replaced)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out world (default %(default)s)")
    parser.add_argument("--count", type=int, default=None, help="images in the held-out world (default: the config's)")
    parser.add_argument("--clip", default=None, help="CLIP for the embeddings (default: the filters' own)")
    parser.add_argument("-o", "--out", default=str(REPO / "runs" / "filter-quality"), help="work folder")
    args = parser.parse_args(argv)
    try:
        filters = str(Path(args.filters).resolve())
        if not Path(filters, "index.json").is_file():
            raise UserError(f"{args.filters}: no filters there; `make demo` writes demo-output/filters "
                            f"(or pass --filters FOLDER)")
        clip = args.clip or clip_of(filters)
        fitted = fitted_world(filters)
        if fitted and fitted["config"]["seed"] == args.seed:
            raise UserError(f"--seed {args.seed}: the filters in {args.filters} were fitted on the world of that "
                            f"seed; a held-out world needs another")
    except UserError as e:
        print(f"filter_quality: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve() / f"seed-{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = held_out_config(Path(args.config), args.seed, args.count, out)
    print(f"held-out world: seed {args.seed} (the filters were fitted on seed "
          f"{fitted['config']['seed'] if fitted else 'unknown'}); filters {in_repo(filters)}; CLIP {in_repo(clip)}")
    dataset, ingest = crawl_world(config, out)
    embed = glide("embed", dataset, "-o", out / "dataset-emb", "--clip", clip)
    apply = glide("filter", out / "dataset-emb", "--filters", filters, "-o", out / "dataset-filtered")
    result = measure(out / "world", out / "dataset-emb", out / "dataset-filtered", filters)
    print_table(result)
    record = {"benchmark": "filter_quality", "ratio": round(ratio_of(result["filters"]), 3),
              "held_out_seed": args.seed, "fitted_on_seed": fitted["config"]["seed"] if fitted else None,
              "filters_path": in_repo(filters), "clip": in_repo(clip), **result,
              "commands": [f"python -m benchmarks.filter_quality {' '.join(argv if argv is not None else sys.argv[1:])}".strip(),
                           f"(world) glide sample-world -o {in_repo(out / 'world')} --config {in_repo(config)} --serve",
                           ingest.command, embed.command, apply.command],
              "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "filter_quality.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
