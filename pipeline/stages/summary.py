"""The end-of-stage table: rows/s, kept, rejected by reason, where the output is."""
from __future__ import annotations

from pipeline.stages.types import ShardResult


def total_counts(results: list[ShardResult]) -> dict:
    """{"input", "kept", "rejected": {reason: n}} summed over shards."""
    counts = {"input": 0, "kept": 0, "rejected": {}}
    for r in results:
        counts["input"] += r.input
        counts["kept"] += r.kept
        for reason, n in r.rejected.items():
            counts["rejected"][reason] = counts["rejected"].get(reason, 0) + n
    return counts


def total_extra(results: list[ShardResult]) -> dict:
    out: dict[str, int] = {}
    for r in results:
        for k, v in r.extra.items():
            out[k] = out.get(k, 0) + v
    return out


def summary_table(stage: str, dataset: str, counts: dict, seconds: float, new_rows: int,
                  skipped: int, shards: int) -> str:
    rejected = counts["rejected"]
    n_rej = sum(rejected.values())
    total = max(counts["input"], 1)
    rows = [("input rows", f"{counts['input']:,}", ""),
            ("kept", f"{counts['kept']:,}", f"{100 * counts['kept'] / total:.1f}%"),
            ("rejected", f"{n_rej:,}", f"{100 * n_rej / total:.1f}%")]
    rows += [(f"  {reason}", f"{n:,}", f"{100 * n / total:.1f}%")
             for reason, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))]
    rows += [("shards", f"{shards:,}", f"{skipped} reused" if skipped else ""),
             ("time", f"{seconds:,.1f} s", ""),
             ("rows/s (this run)", f"{new_rows / max(seconds, 1e-6):,.1f}", "")]
    width = max(len(r[0]) for r in rows)
    lines = [f"{stage} summary"] + [f"  {a:<{width}}  {b:>12}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"  dataset: {dataset}")
    return "\n".join(lines)
