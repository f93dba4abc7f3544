"""Embedding speed: the embed stage's batched worker vs a per-image loop, and FLOP/s against this CPU's matmul peak.

    python -m benchmarks.embed [--arch ViT-B-16] [--pairs 16] [--batch-size 16] [--reps 3] [--threads 1]

Both sides embed the same shard of --pairs sample-world images (JPEG, 341x256 as `glide ingest` stores
them: three crops each) with the same open_clip model (random weights saved to a file and loaded
through the `ARCH=WEIGHTS` path a user gives; timing does not depend on the weights):
  batched    filtering.embed_worker.EmbedWorker.embed_shard, what each `glide embed` actor runs: reads
             the Arrow shard, decodes batches of --batch-size pairs on a thread pool ahead of the
             model, runs them in forwards of `forward_pairs` (on a CPU a cache-sized part of a batch,
             see filtering.clip_features.CPU_FORWARD_BYTES), writes the output shard;
  per-image  the same decode and model, one image (its three crops) per forward, nothing written.
Their embeddings must agree (asserted). Each side first runs untimed (warm-up: oneDNN builds its
kernels per shape); repetitions alternate which side runs first; pairs/s are medians.
FLOP/s: FLOPs of one pair (three crops) by torch's FlopCounterMode (multiply-add = 2; on the unfused
attention path, which it can see into) x the batched side's pairs/s, as a fraction of the median
speed of a 2048^2 fp32 matmul measured here with the same threads before every repetition (a busy
machine slows both alike).
ratio = peak fraction / 0.5 (goal: the batched worker reaches >= 50% of the matmul peak); the batched
vs per-image speed-up is reported beside it.
Ends with one JSON line {"benchmark": "embed", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.sampling import matmul_peak_flops

PEAK_GOAL = 0.5


def write_pairs_shard(path: Path, pairs: int, seed: int = 0) -> None:
    """One pairs shard of sample-world images stretched to 341x256 JPEGs (ingest's default size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    import shards as sh
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_world import generate_world

    world = path.parent / "world"
    generate_world(SampleWorldConfig(count=pairs, seed=seed, image_size=256, bad_rows=False), world)
    rows = []
    for i, truth in enumerate(pq.read_table(world / "truth.parquet").to_pylist()):
        image = Image.open(world / truth["path"]).convert("RGB").resize((341, 256), Image.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=95)
        data, url = buf.getvalue(), f"http://127.0.0.1/{i:06d}.jpg"
        rows.append({"uid": sh.compute_uid(url, truth["caption"]), "url": url, "caption": truth["caption"],
                     "image": data, "image_format": "jpeg", "width": 341, "height": 256, "original_width": 341,
                     "original_height": 256, "sha256": hashlib.sha256(data).hexdigest(), "source": f"bench:{i}"})
    sh.write_table(str(path), pa.Table.from_pylist(rows, schema=sh.PAIRS_SCHEMA))


def count_pair_flops(features) -> int:
    """FLOPs of one pair's three crops. open_clip's attention runs on PyTorch's fused fast path in
    inference, whose inside the counter does not see: counted with it and fused SDPA switched off."""
    import numpy as np
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    crops = np.zeros((1, 3, features.crop_size, features.crop_size, 3), np.uint8)
    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]), counter:
            features.encode_crops(crops)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def main(argv=None) -> int:
    import numpy as np
    import open_clip
    import torch

    import shards as sh
    from filtering.clip_features import load_clip_features
    from filtering.embed_worker import EmbedWorker

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ViT-B-16", help="open_clip architecture (random weights)")
    p.add_argument("--pairs", type=int, default=16, help="images in the shard")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per forward of the batched side")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per side (alternating)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of both sides and the matmul peak (default 1: on a shared machine a busy "
                        "core stalls every multi-threaded op at its barrier)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that a model has random weights: it is meant to

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        weights = tmp / f"{args.arch}.bin"
        torch.save(open_clip.create_model(args.arch, device="cpu").state_dict(), weights)
        spec = f"{args.arch}={weights}"
        shard = tmp / "in" / "part-00000.arrow"
        write_pairs_shard(shard, args.pairs)
        features = load_clip_features(spec, "cpu", batch_size=args.batch_size)
        worker = EmbedWorker({"clip": spec, "batch_size": args.batch_size, "cpus_per_worker": args.threads},
                             "cpu", features=features)
        out = {"pairs": str(tmp / "out" / "pairs.arrow"), "rejects": str(tmp / "out" / "rejects.arrow")}

        def batched():
            outcome = worker.embed_shard(str(shard), out["pairs"], out["rejects"])
            assert outcome.kept == args.pairs, outcome
            return np.array(sh.read_table(out["pairs"]).column("clip_embedding").to_pylist(), np.float32)

        def per_image():
            rows = []
            for batch in sh.iter_shard_batches(str(shard), ["image"]):
                for data in batch.column("image").to_pylist():
                    rows.append(features.encode_crops(features.crops_of(data)[None])[0].numpy())
            return np.stack(rows)

        sides = {"batched": batched, "per-image": per_image}
        print(f"{args.arch}: warm-up ...", file=sys.stderr)
        outputs = {name: fn() for name, fn in sides.items()}
        times: dict[str, list[float]] = {name: [] for name in sides}
        peaks = []
        for rep in range(args.reps):
            peaks.append(matmul_peak_flops(reps=3))
            for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
                t0 = time.perf_counter()
                outputs[name] = sides[name]()
                times[name].append(time.perf_counter() - t0)
                print(f"  rep {rep + 1}/{args.reps} {name}: {args.pairs / times[name][-1]:.3f} pairs/s",
                      file=sys.stderr)
        diff = float(np.abs(outputs["batched"] - outputs["per-image"]).max())
        assert diff < 2e-3, f"batched and per-image embeddings differ by {diff}"
        flops = count_pair_flops(features)

    rate = {name: args.pairs / statistics.median(t) for name, t in times.items()}
    peak = statistics.median(peaks)
    fraction = flops * rate["batched"] / peak
    print(f"\n{args.arch} three-crop embedding of {args.pairs} pairs (341x256 JPEG), median of {args.reps} alternating "
          f"reps, {args.threads} torch thread(s); matmul peak {peak / 1e9:.1f} GFLOP/s (2048^2 fp32); load "
          f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    header = f"{'side':<12}{'fwd':>6}{'pairs/s':>10}{'speed-up':>10}{'GFLOP/pair':>12}{'GFLOP/s':>10}{'of peak':>9}"
    print(header)
    print("-" * len(header))
    for name, batch in (("per-image", 1), ("batched", features.forward_pairs)):
        gflops = flops * rate[name] / 1e9
        print(f"{name:<12}{batch:>6}{rate[name]:>10.3f}{rate[name] / rate['per-image']:>9.2f}x"
              f"{flops / 1e9:>12.1f}{gflops:>10.1f}{gflops * 1e9 / peak:>8.0%}")
    print("batched: the embed stage's worker (Arrow in and out, decoding on a thread pool ahead of the model),\n"
          "fwd = pairs per forward; per-image: one image's three crops per forward. Max abs difference of the\n"
          "embeddings: "
          f"{diff:.2e}.")
    print(json.dumps({"benchmark": "embed", "ratio": round(fraction / PEAK_GOAL, 3), "arch": args.arch,
                      "pairs": args.pairs, "batch_size": args.batch_size, "forward_pairs": features.forward_pairs,
                      "threads": args.threads,
                      "pairs_per_s_batched": round(rate["batched"], 4),
                      "pairs_per_s_per_image": round(rate["per-image"], 4),
                      "speedup": round(rate["batched"] / rate["per-image"], 3),
                      "gflop_per_pair": round(flops / 1e9, 2), "gflops": round(flops * rate["batched"] / 1e9, 2),
                      "matmul_peak_gflops": round(peak / 1e9, 2), "peak_fraction": round(fraction, 3),
                      "max_abs_diff": diff}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
