"""The end summary of `make demo`: what a `glide run` of the demo pipeline made, and where it is.

    python -m pipeline.demo_summary demo-output     # OUT of the pipeline (configs/demo.yaml's run.out)

Everything is read from OUT: the stage records in OUT/pipeline-state (each stage's outputs and seconds,
the CLIP the embed stage used), the filters' figures from their folder's JSON (FNR, its 95% bound,
held-out positives, share of the crawl removed), the caption colour check of the samples
(pipeline.caption_accuracy) and the evaluation's caption accuracy per setting (its metrics.json).
A stage the pipeline did not run is left out. A missing folder is one line naming it (exit code 2).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import shards as sh
from pipeline.run.fingerprint import read_state
from pipeline.run.stages import (EMBEDDINGS, EVALUATION, FILTERS, PAIRS, SAMPLES, STAGE_NAMES, WORLD, model)

PROVENANCE_FILE = "provenance.json"


def stage_records(out: Path) -> dict[str, dict]:
    """{stage: record} of the stages that finished in OUT; UserError when OUT holds none."""
    if not out.is_dir():
        raise sh.UserError(f"{out}: no such folder (run `glide run PIPELINE.yaml` first; its run.out)")
    records = {name: r for name in STAGE_NAMES if (r := read_state(str(out), name)) and r["status"] == "finished"}
    if not records:
        raise sh.UserError(f"{out / 'pipeline-state'}: no finished stage recorded there (not a glide run's output)")
    return records


def output(records: dict, stage: str, kind: str) -> Optional[str]:
    return (records.get(stage, {}).get("outputs") or {}).get(kind, {}).get("path")


def filter_figures(folder: str) -> dict[str, dict]:
    """{filter: the final fit's figures} from FOLDER/NAME.json, in the folder's order."""
    from filtering.filter_files import read_index

    fs, path = sh.url_to_fs(folder)
    if not fs.isdir(path):
        raise sh.UserError(f"{folder}: no such filters folder")
    figures = {}
    for name in read_index(folder)["order"]:
        with fs.open(sh.join(path, f"{name}.json"), "rb") as f:
            figures[name] = json.loads(f.read().decode("utf-8"))["info"]
    return figures


def describe_shipped(models: dict[str, Path]) -> None:
    """Where shipped checkpoints are and how they were made (their provenance.json)."""
    for kind, path in models.items():
        prov_file = Path(path) / PROVENANCE_FILE
        if not prov_file.is_file():
            raise sh.UserError(f"{prov_file}: missing; run `make demo FROM_SCRATCH=1` or `make demo-checkpoints` "
                               f"to train the checkpoints")
        prov = json.loads(prov_file.read_text())
        train = prov["train"]
        print(f"   {kind}: {path}  ({prov['weights']})")
        print(f"      made {prov['date']} on commit {prov['git']['commit'][:12]}"
              f"{' with uncommitted changes' if prov['git']['uncommitted_changes'] else ''}"
              f" by `{prov['regenerate']}`:")
        print(f"      $ {train['command']}")
        print(f"      {train['steps']} steps in {train['wall_s'] / 60:.1f} min, {train['images_per_s']:.0f} img/s"
              f" on {prov['host']['cpus']} CPU cores; dataset manifest sha256 {prov['dataset']['manifest_sha256'][:12]}")


def upsampling_lines(acc: dict) -> list[str]:
    """What the upsampler kept of the base's caption accuracy, on the same draws."""
    if not acc["images"]:
        return []
    base, final = acc["base"]["all attributes"], acc["final"]["all attributes"]
    kept = f"{final / base:.0%} of the base's" if base else "the base had none right"
    per = ", ".join(f"{a} {acc['base'][a]:.0%} -> {acc['final'][a]:.0%}" for a in acc["base"] if a != "all attributes")
    return [f"upsampling kept {kept} caption accuracy on the same {acc['images']} draws (scene classifier): "
            f"all attributes {base:.0%} -> {final:.0%}; {per}"]


def print_summary(out: Path, filters_folder: Optional[str] = None) -> None:
    from pipeline.caption_accuracy import scene_accuracy, score
    from pipeline.evaluation_demo import caption_accuracy_lines

    records = stage_records(out)
    seconds = {name: r["seconds"] for name, r in records.items() if r.get("seconds") is not None}
    print(f"\n== {out}: {len(records)} stages finished; seconds of each one's last run: "
          + ", ".join(f"{n} {s:.0f}" for n, s in seconds.items()) + f" (total {sum(seconds.values()) / 60:.1f} min)")

    filters = filters_folder or output(records, "label", FILTERS) or output(records, "fit-filters", FILTERS)
    if filters:
        print("   filters (FNR bound on the held-out labels, share of this crawl each removes):")
        for name, f in filter_figures(filters).items():
            print(f"      {name:<10} FNR {f['fnr']:.2%} (95% bound {f['fnr_upper_95']:.2%} on "
                  f"{f['held_out_positives']} held-out positives), removes {f['removed_fraction']:.1%}")

    clip = (records.get("embed", {}).get("config", {}).get("embed") or {}).get("clip")
    filtered = output(records, "label", PAIRS) or output(records, "filter", PAIRS)
    base = output(records, "train-base", model("base"))
    upsampler = output(records, "train-upsampler", model("upsampler")) or \
        (records.get("sample", {}).get("config", {}).get("sample") or {}).get("upsampler")
    samples, evaluation = output(records, "sample", SAMPLES), output(records, "evaluate", EVALUATION)
    report_of = lambda folder: f"{folder}/report/index.html"  # noqa: E731  (fit-filters and filter write one)
    rows = [
        ("world and truth", output(records, "ingest", WORLD), "truth.parquet, index.html"),
        ("crawl", output(records, "ingest", PAIRS), "manifest.json, shards/, rejects/"),
        ("CLIP", clip, "shipped" if clip and Path(clip, PROVENANCE_FILE).is_file() else ""),
        ("embeddings", output(records, "embed", EMBEDDINGS), ""),
        ("labels", "label" in records and str(out / "labels.db"), f"glide label status --db {out / 'labels.db'}"),
        ("filters", filters, filters and f"fit report: {report_of(filters)}"),
        ("filtered dataset", filtered, filtered and f"filter report: {report_of(filtered)}"),
        ("base", base, filtered and f"trained on {filtered}"),
        ("upsampler", upsampler, "trained in this pipeline" if "train-upsampler" in records else "shipped"),
        ("samples", samples and f"{samples}/grid.png",
         samples and Path(samples, "base").is_dir() and f"before upsampling: {samples}/base/grid.png"),
        ("evaluation", evaluation and f"{evaluation}/index.html", evaluation and f"glide report {evaluation} rebuilds it"),
    ]
    for what, where, note in rows:
        if where:
            print(f"   {what + ':':<18}{where}" + (f"  ({note})" if note else ""))

    if samples and Path(samples, "settings.json").is_file():
        for name, key in (("before upsampling", "base_file"), ("final", "file")):
            s = score(Path(samples), key)
            if s["images"]:
                print(f"   captioned colours ({name}): background {s['background_right']}/{s['images']}, shape "
                      f"{s['foreground_right']}/{s['images']}  (python -m pipeline.caption_accuracy {samples})")
        classifier = (records.get("evaluate", {}).get("config", {}).get("evaluate") or {}).get("scene_classifier")
        if classifier and Path(classifier).is_dir():
            for line in upsampling_lines(scene_accuracy(Path(samples), classifier)):
                print(f"   {line}")
    if evaluation and Path(evaluation, "metrics.json").is_file():
        for line in caption_accuracy_lines(Path(evaluation)):
            print(f"   evaluation {line}")
    if filters and clip:
        print("   apply these filters to another crawl (the same CLIP makes its features):")
        print(f"      glide embed OTHER_DATASET -o OTHER_EMB --clip {clip}")
        print(f"      glide filter OTHER_EMB --filters {filters} -o OTHER_FILTERED")
        print(f"   check them on a held-out world: python -m benchmarks.filter_quality --filters {filters}")
    if (out / "runs").is_dir():
        print(f"   training curves: tensorboard --logdir {out / 'runs'}")
    init = (records.get("train-base", {}).get("config", {}).get("train") or {}).get("init")
    shipped = {kind: Path(path) for kind, path in (("CLIP", clip), ("base (before this training)", init),
                                                   ("upsampler", upsampler))
               if path and Path(path, PROVENANCE_FILE).is_file()}
    if shipped:
        print("   shipped checkpoints used, and how they were made (make demo FROM_SCRATCH=1 trains them instead):")
        describe_shipped(shipped)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.demo_summary", description=__doc__.splitlines()[0])
    p.add_argument("out", help="the pipeline's output folder (its run.out), e.g. demo-output")
    p.add_argument("--filters", default=None, help="filters folder (default: the one the pipeline wrote)")
    args = p.parse_args(argv)
    try:
        print_summary(Path(args.out), args.filters)
    except sh.UserError as e:
        print(f"demo_summary: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
