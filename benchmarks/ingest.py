"""Ingest benchmark: `glide ingest` vs plain img2dataset vs the decode+resize CPU bound.

    python -m benchmarks.ingest [--images 800] [--reps 3] [--threads 16] [--mem-rows 10000000]

Throughput: the same URL list from the local sample-world server, the same 2 processes,
16 download threads each, smaller side 256 (keep ratio), JPEG q95. Both run as a user runs
them (a fresh process each: Ray start-up / process-pool spawn included), alternating which
goes first, medians reported. The CPU bound is img2dataset's Resizer over the same image
bytes in a plain loop, times the cores. Memory: peak RSS of sharding a generated 10M-row
URL list vs a 1M-row one (each in its own subprocess); flat means ratio < 1.3.
Ends with one JSON line: {"benchmark": "ingest", "ratio": ours / img2dataset pairs/s, ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORES = 2

I2D_SCRIPT = """
import sys, img2dataset
urls, out, threads, shard = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
img2dataset.download(url_list=urls, input_format="parquet", url_col="url", caption_col="caption",
    output_format="parquet", output_folder=out, processes_count=2, thread_count=threads,
    image_size=256, resize_mode="keep_ratio", encode_format="jpg", encode_quality=95,
    number_sample_per_shard=shard, distributor="multiprocessing", timeout=10, retries=0,
    extract_exif=False, enable_wandb=False)
"""

MEM_SCRIPT = """
import resource, sys, time
from pipeline.ingest.url_lists import shard_url_lists
t = time.time()
rec = shard_url_lists([sys.argv[1]], sys.argv[2], url_col="url", caption_col="caption", shard_size=10000)
print(rec["rows"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.time() - t)
"""


def run_glide(urls: Path, out: Path, config: Path, shard: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "ingest", str(urls), "-o", str(out),
                           "-c", str(config), "--shard-size", str(shard)],
                          cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"glide ingest failed:\n{proc.stderr[-2000:]}")
    return elapsed


def glide_pairs(out: Path) -> int:
    import shards as sh

    return sh.read_manifest(str(out))["counts"]["kept"]


def run_img2dataset(urls: Path, out: Path, threads: int, shard: int) -> float:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", I2D_SCRIPT, str(urls), str(out), str(threads), str(shard)],
                          cwd=REPO, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"img2dataset failed:\n{proc.stderr[-2000:]}")
    return elapsed


def img2dataset_pairs(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_table(p, columns=["status"]).column("status").to_pylist().count("success")
               for p in sorted(out.glob("*.parquet")))


def decode_resize_bound(world: Path) -> float:
    """Images/s of decode+resize+encode in one plain loop, times the cores."""
    from pipeline.ingest.images import ImageProcessor

    process = ImageProcessor(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=False,
                             output_format="jpeg", encode_quality=95, min_image_size=0, max_pixels=89_478_485)
    blobs = [p.read_bytes() for p in sorted((world / "images").iterdir())]
    start = time.perf_counter()
    for data in blobs:
        image, reason, _ = process(data)
        assert image is not None, reason
    return CORES * len(blobs) / (time.perf_counter() - start)


def write_big_list(path: Path, rows: int) -> None:
    """A `rows`-row parquet URL list, written in chunks (never whole in memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    chunk = 1_000_000
    schema = pa.schema([("url", pa.string()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            idx = pa.array(np.arange(start, min(rows, start + chunk))).cast(pa.string())
            url = pc.binary_join_element_wise("https://images.example.com/photos/", idx, ".jpg", "")
            caption = pc.binary_join_element_wise("a photo of a red square on a blue background, number ",
                                                  idx, "")
            writer.write_table(pa.table([url, caption], schema=schema))


def peak_rss_sharding(path: Path, out: Path) -> tuple[int, float]:
    proc = subprocess.run([sys.executable, "-c", MEM_SCRIPT, str(path), str(out)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    rows, rss, seconds = proc.stdout.split()
    return int(rss), float(seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--mem-rows", type=int, default=10_000_000)
    args = ap.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    from pipeline.config import SampleWorldConfig
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    world = tmp / "world"
    print(f"generating a sample world of {args.images} images (320 px) in {tmp}", file=sys.stderr)
    generate_world(SampleWorldConfig(count=args.images, seed=0, image_size=320, bad_rows=False), world)
    shard = max(1, -(-args.images // (2 * CORES)))  # two shards per process: both tools load-balance
    config = tmp / "glide.yaml"
    config.write_text(f"ray:\n  num_cpus: {CORES}\ningest:\n  allow_private_networks: true\n"
                      f"  threads: {args.threads}\n  image_size: 256\n  timeout: 10\n")
    times: dict[str, list[float]] = {"glide": [], "img2dataset": []}
    pairs: dict[str, int] = {}
    with SampleWorldServer(world) as server:
        urls = write_url_list(world, server.base_url, path=tmp / "urls.parquet", bad_rows=False)
        for rep in range(args.reps):
            order = ["glide", "img2dataset"] if rep % 2 == 0 else ["img2dataset", "glide"]
            for name in order:
                out = tmp / f"{name}-{rep}"
                if name == "glide":
                    times[name].append(run_glide(urls, out, config, shard))
                    pairs[name] = glide_pairs(out)
                else:
                    times[name].append(run_img2dataset(urls, out, args.threads, shard))
                    pairs[name] = img2dataset_pairs(out)
                print(f"  rep {rep} {name:<12} {times[name][-1]:6.1f} s  {pairs[name]} pairs", file=sys.stderr)
    bound = decode_resize_bound(world)

    medians = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: pairs[k] / medians[k] for k in times}
    ratio = rate["glide"] / rate["img2dataset"]

    print(f"sharding {args.mem_rows // 10:,} and {args.mem_rows:,}-row URL lists for peak memory", file=sys.stderr)
    small, big = tmp / "small.parquet", tmp / "big.parquet"
    write_big_list(small, args.mem_rows // 10)
    write_big_list(big, args.mem_rows)
    rss_small, t_small = peak_rss_sharding(small, tmp / "mem-small")
    rss_big, t_big = peak_rss_sharding(big, tmp / "mem-big")
    mem_ratio = rss_big / rss_small

    print(f"\ningest benchmark: {args.images} URLs from the local sample-world server, {CORES} cores, "
          f"{args.threads} threads/process, {args.reps} alternating reps (medians, start-up included)")
    print(f"  {'':<34}{'seconds':>10}{'pairs':>8}{'pairs/s':>10}")
    print(f"  {'glide ingest (Ray tasks)':<34}{medians['glide']:>10.1f}{pairs['glide']:>8}{rate['glide']:>10.1f}")
    print(f"  {'img2dataset (multiprocessing)':<34}{medians['img2dataset']:>10.1f}{pairs['img2dataset']:>8}"
          f"{rate['img2dataset']:>10.1f}")
    print(f"  {'decode+resize bound (loop x cores)':<34}{'':>10}{'':>8}{bound:>10.1f}")
    print(f"  ratio glide / img2dataset: {ratio:.2f} (goal >= 1.0)")
    print(f"  list sharding peak RSS: {args.mem_rows // 10:,} rows {rss_small / 2**20:.0f} MiB ({t_small:.1f} s), "
          f"{args.mem_rows:,} rows {rss_big / 2**20:.0f} MiB ({t_big:.1f} s): x{mem_ratio:.2f} (goal < 1.3)")
    print(json.dumps({
        "benchmark": "ingest", "ratio": round(ratio, 3),
        "glide_pairs_per_s": round(rate["glide"], 1), "img2dataset_pairs_per_s": round(rate["img2dataset"], 1),
        "decode_resize_bound_pairs_per_s": round(bound, 1), "glide_seconds": round(medians["glide"], 2),
        "img2dataset_seconds": round(medians["img2dataset"], 2), "pairs": pairs["glide"],
        "peak_rss_mb_small": round(rss_small / 2**20), "peak_rss_mb_big": round(rss_big / 2**20),
        "peak_rss_ratio": round(mem_ratio, 3), "memory_flat": mem_ratio < 1.3,
    }))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
