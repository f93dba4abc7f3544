"""Pairwise comparison tasks from an evaluation report (`glide pairs make`): which two images a rater sees.

    samples = read_report_samples("report/")                 # REPORT/samples/index.parquet, checked
    tasks = plan_pairs(samples, ["guidance-1", "guidance-3"], n=200, seed=0,
                       duplicate_fraction=0.05, obvious_fraction=0.05)

The report folder (the contract `glide evaluate` writes): REPORT/samples/index.parquet, one row per
sample, columns setting (string), prompt_index (int32), prompt (string), seed (int64), path (string,
a PNG relative to REPORT); the same (prompt_index, seed) in two settings is the same prompt and noise
seed. REPORT/settings.json maps each setting to its parameters.

A comparison shows two settings' samples of one (prompt_index, seed), so the only difference a rater
can see is the setting's. Which setting is drawn on the left is random per task and stored
(`a_side`), so the position bias can be measured and taken out. Check items, mixed in:
  duplicate  an earlier comparison again, sides swapped: a rater who answers by position, or at
             random, contradicts themselves on it
  obvious    a sample against pure noise: anyone looking picks the sample
Neither counts for the Elo fit (evaluation.judgement_quality reads them to check the raters).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Optional, Sequence

import shards as sh

QUESTIONS = {"photorealism": "Which image is more photorealistic?",
             "caption": "Which image better matches the caption?"}
NOISE_MODEL = "noise"           # model_b of an obvious pair
DUPLICATE_GAP = 5               # a duplicate comes at least this many positions after its original
INDEX = "samples/index.parquet"
COLUMNS = {"setting": "string", "prompt_index": "integer", "prompt": "string", "seed": "integer", "path": "string"}


@dataclass(frozen=True)
class Sample:
    setting: str
    prompt_index: int
    prompt: str
    seed: int
    path: str            # relative to the report


@dataclass(frozen=True)
class PairTask:
    """One thing a rater is shown: model_a's image on `a_side`, model_b's on the other side."""

    kind: str                        # compare / duplicate / obvious
    prompt_index: int
    prompt: str
    seed: int
    model_a: str
    model_b: str                     # obvious: NOISE_MODEL
    image_a: str                     # relative to the report
    image_b: Optional[str]           # obvious: None (the noise is made when served)
    a_side: str                      # left / right
    noise_seed: Optional[int] = None
    duplicate_of: Optional[int] = None   # a duplicate: the position of its original in the plan


def check_question(question: str) -> str:
    if question not in QUESTIONS:
        raise sh.UserError(f"--question {question!r}: one of {', '.join(QUESTIONS)}")
    return question


def read_report_samples(report: str) -> list[Sample]:
    """The samples of `report` (UserError naming the index file and the column or row when it is not
    the contract's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = Path(report) / INDEX
    if not Path(report).is_dir():
        raise sh.UserError(f"--report {report}: not a folder")
    if not index.is_file():
        raise sh.UserError(f"{index}: missing (is {report} a report folder glide evaluate wrote?)")
    try:
        table = pq.read_table(index)
    except (pa.ArrowInvalid, OSError) as e:
        raise sh.UserError(f"{index}: not a readable Parquet file ({str(e).splitlines()[0][:160]})") from None
    for name, kind in COLUMNS.items():
        if name not in table.column_names:
            raise sh.UserError(f"{index}: no column {name!r} (the index needs {', '.join(COLUMNS)})")
        t = table.schema.field(name).type
        ok = pa.types.is_integer(t) if kind == "integer" else (pa.types.is_string(t) or pa.types.is_large_string(t))
        if not ok:
            raise sh.UserError(f"{index}: column {name!r} holds {t}, not {kind}")
        if table.column(name).null_count:
            raise sh.UserError(f"{index}: column {name!r} has empty values")
    rows = table.select(list(COLUMNS)).to_pylist()
    samples = [Sample(**row) for row in rows]
    seen: set[tuple] = set()
    for number, s in enumerate(samples, 1):
        key = (s.setting, s.prompt_index, s.seed)
        if key in seen:
            raise sh.UserError(f"{index}: row {number}: setting {s.setting!r}, prompt {s.prompt_index}, seed {s.seed} "
                               f"appears twice")
        seen.add(key)
    return samples


def read_report_settings(report: str) -> dict:
    """REPORT/settings.json ({setting: parameters}); {} when the report has none."""
    path = Path(report) / "settings.json"
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise sh.UserError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(settings, dict):
        raise sh.UserError(f"{path}: not a JSON object of setting -> parameters")
    return settings


def image_path(report: str, relative: str, where: str) -> Path:
    """The file `relative` names inside `report`; UserError when it is missing or leads out of it."""
    root = Path(report).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise sh.UserError(f"{where}: image path {relative!r} leads outside the report folder")
    if not path.is_file():
        raise sh.UserError(f"{where}: image {relative!r} is missing")
    return path


def _check_count(n: int, fraction: float) -> int:
    """round(n x fraction), but at least one when the fraction is not 0 (a small run is checked too)."""
    return max(1, round(n * fraction)) if fraction > 0 else 0


def plan_pairs(samples: Sequence[Sample], settings: Sequence[str], n: int, *, seed: int = 0,
               duplicate_fraction: float = 0.05, obvious_fraction: float = 0.05,
               where: str = "report") -> list[PairTask]:
    """`n` comparisons between `settings` (every two of them in turn, each on prompts and seeds all of them
    sampled, no (settings, prompt, seed) twice), plus round(n x fraction) duplicates and obvious pairs (at
    least one of each whose fraction is not 0),
    in the order raters get them (positions are list indices)."""
    if len(set(settings)) != len(settings) or len(settings) < 2:
        raise sh.UserError(f"--settings {','.join(settings)}: give two or more different settings")
    if n < 1:
        raise sh.UserError(f"-n {n}: give at least one comparison")
    for name, value in (("--duplicates", duplicate_fraction), ("--obvious", obvious_fraction)):
        if not 0.0 <= value <= 1.0:
            raise sh.UserError(f"{name} {value}: a fraction between 0 and 1")
    known = sorted({s.setting for s in samples})
    for s in settings:
        if s == NOISE_MODEL:
            raise sh.UserError(f"--settings: {NOISE_MODEL!r} is the name obvious pairs give pure noise")
        if s not in known:
            raise sh.UserError(f"--settings: {s!r} is not a setting of {where} (it has {', '.join(known)})")
    by_key: dict[tuple[int, int], dict[str, Sample]] = {}
    for s in samples:
        if s.setting in settings:
            by_key.setdefault((s.prompt_index, s.seed), {})[s.setting] = s
    shared = sorted(k for k, found in by_key.items() if len(found) == len(settings))
    if not shared:
        raise sh.UserError(f"{where}: no prompt and seed was sampled by all of {', '.join(settings)}")
    setting_pairs = list(combinations(settings, 2))
    if n > len(shared) * len(setting_pairs):
        raise sh.UserError(f"-n {n}: {where} allows {len(shared) * len(setting_pairs)} different comparisons of "
                           f"{', '.join(settings)} ({len(shared)} prompts and seeds x {len(setting_pairs)} pairs)")
    rng = random.Random(seed)
    keys_left = {pair: rng.sample(shared, len(shared)) for pair in setting_pairs}
    compares = []
    for k in range(n):
        pair = setting_pairs[k % len(setting_pairs)]
        key = keys_left[pair].pop()
        a, b = rng.sample(pair, 2)       # which setting is "a" is arbitrary; the side is what matters
        sa_, sb_ = by_key[key][a], by_key[key][b]
        compares.append(PairTask("compare", sa_.prompt_index, sa_.prompt, sa_.seed, a, b, sa_.path, sb_.path,
                                 rng.choice(("left", "right"))))
    order: list[PairTask] = list(compares)
    rng.shuffle(order)
    for _ in range(_check_count(n, obvious_fraction)):
        key = rng.choice(shared)
        sample = by_key[key][rng.choice(list(settings))]
        task = PairTask("obvious", sample.prompt_index, sample.prompt, sample.seed, sample.setting, NOISE_MODEL,
                        sample.path, None, rng.choice(("left", "right")), noise_seed=rng.getrandbits(31))
        order.insert(rng.randint(0, len(order)), task)
    originals = rng.sample(compares, min(len(compares), _check_count(n, duplicate_fraction)))
    duplicates = []
    for original in originals:
        at = next(i for i, t in enumerate(order) if t is original)
        flipped = "right" if original.a_side == "left" else "left"
        duplicate = replace(original, kind="duplicate", a_side=flipped)
        order.insert(rng.randint(min(at + 1 + DUPLICATE_GAP, len(order)), len(order)), duplicate)
        duplicates.append((duplicate, original))
    position = {id(t): i for i, t in enumerate(order)}
    linked = {id(d): position[id(o)] for d, o in duplicates}
    return [replace(t, duplicate_of=linked[id(t)]) if id(t) in linked else t for t in order]
