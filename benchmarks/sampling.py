"""Guided sampling speed: our sampler vs a plain loop, and FLOP/s against this CPU's matmul peak.

    python -m benchmarks.sampling [--models tiny,glide-filtered-base] [--steps N] [--reps 3]

For each model config (random weights; timing does not depend on them), classifier-free guided
DDPM sampling of --batch-size images at guidance --guidance for --steps steps (default 10 for tiny,
2 for larger models, whose guided step is ~1.8 TFLOP):
  ours   training.sampling as `glide sample` runs it (text and its attention keys/values encoded once
         per run, inference_mode, fused attention, channels-last (NHWC) weights and activations),
         both guidance halves as one batched forward,
         run in network calls of guidance.auto_forward_batch rows (all rows, unless CPU activations
         would exceed 32 MiB); "one-call" forces all rows into one call, shown beside it;
  plain  the same diffusion maths and weights (a copy of the model as built: NCHW), but every step
         re-encodes the caption and the empty caption (tokens= into the model) and runs the
         conditional and unconditional halves as two forwards.
Weights are random, with glide's zero-initialised layers filled in (else every output is 0 and
the comparison is empty). Same seed, same noise: the final images must match (asserted). Each
side first runs one untimed step (warm-up); repetitions alternate which side runs first; seconds
per step are medians. FLOP/s: FLOPs of one guided step (torch's FlopCounter on a one-image batch,
times the batch size; multiply-add = 2) / our median seconds per step, as a fraction of the median
speed of a large fp32 matmul measured here with the same threads (sampled before every repetition,
so a busy machine slows both alike).
ratio = min over models of (speed-up / goal) and, for the released size, (peak fraction / 0.8):
goals are tiny >= 1.5x, released base >= 1.1x and >= 80% of matmul peak; >= 1 means all hold.
Runs on 1 torch thread unless --threads says otherwise (see its help: a shared machine).
Ends with one JSON line {"benchmark": "sampling", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

GOALS = {"tiny": 1.5}
DEFAULT_STEPS = {"tiny": 10}  # others: 2
DEFAULT_GOAL = 1.1  # the released base size (and any other non-tiny config)
PEAK_GOAL = 0.8


def matmul_peak_flops(n: int = 2048, reps: int = 5) -> float:
    """Median FLOP/s of an n x n fp32 matmul (2 n^3 FLOPs) on this CPU, with torch's threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def trained_like(model):
    """Fill the parameters glide zero-initialises (output convs, attention proj_out) with small
    noise: with them at 0 every output is exactly 0 and the equal-output check would prove nothing."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


class _Tokenizer:
    """Deterministic stand-in token ids in the model's vocabulary (timing does not depend on them)."""

    def __init__(self, n_vocab: int):
        self.n_vocab = n_vocab

    def encode(self, text: str) -> list[int]:
        return [1 + sum(map(ord, w)) % (self.n_vocab - 1) for w in text.split()]

    def padded_tokens_and_mask(self, tokens, ctx):
        tokens = list(tokens)[:ctx]
        return tokens + [0] * (ctx - len(tokens)), [True] * len(tokens) + [False] * (ctx - len(tokens))


def _ours(model, diffusion, tokenizer, prompts, scale, steps, seed, forward_batch=None):
    import torch

    from training.sampling.guidance import text_model_fn
    from training.sampling.samplers import sample_loop

    def run():
        g = torch.Generator().manual_seed(seed)
        model_fn = text_model_fn(model, tokenizer, prompts, scale, forward_batch=forward_batch)
        size = model.image_size
        return sample_loop(diffusion, model_fn, (len(prompts), 3, size, size), generator=g,
                           start_step=steps - 1)
    return run


def _plain(model, diffusion, tokenizer, prompts, scale, steps, seed):
    import torch

    from training.sampling.guidance import tokenize_prompts

    def run():
        g = torch.Generator().manual_seed(seed)
        cond_tokens, cond_mask = tokenize_prompts(tokenizer, prompts, model.text_ctx)
        uncond_tokens, uncond_mask = tokenize_prompts(tokenizer, [""] * len(prompts), model.text_ctx)

        def guided(x, t):
            cond = model(x, t, tokens=cond_tokens, mask=cond_mask)  # re-encodes the text every call
            uncond = model(x, t, tokens=uncond_tokens, mask=uncond_mask)
            eps = uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
            return torch.cat([eps, cond[:, 3:]], dim=1)

        size = model.image_size
        with torch.no_grad():
            x = torch.randn((len(prompts), 3, size, size), generator=g)
            for i in range(steps - 1, -1, -1):
                t = torch.full((len(prompts),), i, dtype=torch.long)
                noise = torch.randn(x.shape, generator=g) if i > 0 else torch.zeros_like(x)
                x = diffusion.p_sample(guided, x, t, noise=noise)["sample"]
        return x
    return run


def count_flops(fn) -> int:
    """FLOPs of fn() by torch's FlopCounterMode (multiply-add = 2), on SDPA's maths path: the fused
    CPU attention kernel does the same FLOPs but the counter does not see inside it (counts 0)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), counter:
        fn()
    return counter.get_total_flops()


def step_flops(model, tokenizer, prompts, scale) -> dict:
    """FLOPs for `prompts`: "ours" one guided step (the batched forward), "ours_encode" ours' text
    encoding (once per run), "plain" one step of the plain loop (two encodings, two forwards).
    Steps are counted on one prompt, times the batch (their FLOPs are per row: saves time)."""
    import torch

    from training.sampling.guidance import text_model_fn, tokenize_prompts

    size, n = model.image_size, len(prompts)
    x, t = torch.randn(1, 3, size, size), torch.full((1,), 10, dtype=torch.long)
    cond = tokenize_prompts(tokenizer, prompts[:1], model.text_ctx)
    uncond = tokenize_prompts(tokenizer, [""], model.text_ctx)
    model_fn = text_model_fn(model, tokenizer, prompts[:1], scale)
    return {"ours": n * count_flops(lambda: model_fn(x, t)),
            "ours_encode": count_flops(lambda: text_model_fn(model, tokenizer, prompts, scale)),
            "plain": n * count_flops(lambda: (model(x, t, *cond), model(x, t, *uncond)))}


def bench_model(name: str, args, peaks: list) -> dict:
    import torch

    from training.diffusion import create_diffusion
    from training.factory import create_model
    from training.model_config import load_model_config
    from training.sampling.guidance import auto_forward_batch

    cfg = load_model_config(name)
    torch.manual_seed(0)
    model = trained_like(create_model(cfg, device="cpu").eval())
    plain_model = copy.deepcopy(model)  # ours converts `model` to channels-last; the plain loop keeps NCHW
    # "100" respacing, sampled from its last `steps` steps: realistic timesteps, short run
    diffusion = create_diffusion(cfg, "100")
    tokenizer = _Tokenizer(cfg.n_vocab)
    prompts = [f"a photo of object {i} on a table" for i in range(args.batch_size)]
    steps = args.steps or DEFAULT_STEPS.get(name, 2)

    def make_sides(n_steps):
        return {"ours": _ours(model, diffusion, tokenizer, prompts, args.guidance, n_steps, args.seed),
                "ours_one": _ours(model, diffusion, tokenizer, prompts, args.guidance, n_steps, args.seed,
                                  forward_batch=2 * len(prompts)),
                "plain": _plain(plain_model, diffusion, tokenizer, prompts, args.guidance, n_steps, args.seed)}

    for warm_up in make_sides(1).values():  # one untimed step each: oneDNN builds its kernels per shape
        warm_up()
    sides = make_sides(steps)
    times, outputs, diff = {side: [] for side in sides}, {}, 0.0
    for rep in range(args.reps):
        peaks.append(matmul_peak_flops(reps=3))  # sampled between reps: the same load as the timings
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for side in order:
            t0 = time.perf_counter()
            outputs[side] = sides[side]()
            times[side].append((time.perf_counter() - t0) / steps)
            print(f"  {name} rep {rep + 1}/{args.reps} {side}: {times[side][-1]:.3f} s/step", file=sys.stderr)
        for side in ("ours", "ours_one"):
            diff = max(diff, (outputs[side] - outputs["plain"]).abs().max().item())
            assert torch.allclose(outputs[side], outputs["plain"], rtol=1e-3, atol=1e-3), \
                f"{name}: outputs differ by {diff}"
    ours, ours_one = statistics.median(times["ours"]), statistics.median(times["ours_one"])
    plain = statistics.median(times["plain"])
    peak = statistics.median(peaks)
    counted = step_flops(model, tokenizer, prompts, args.guidance)
    flops = counted["ours"] + counted["ours_encode"] / steps  # ours' work per step, encoding amortised
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "steps": steps,
            "image_size": cfg.image_size, "s_per_step_ours": ours, "s_per_step_plain": plain,
            "s_per_step_one": ours_one, "speedup_one": plain / ours_one,
            "rows_per_call": auto_forward_batch(model, torch.empty(2 * len(prompts), 3, cfg.image_size,
                                                                   cfg.image_size)),
            "speedup": plain / ours, "goal": GOALS.get(name, DEFAULT_GOAL), "max_abs_diff": diff,
            "gflop_per_step": flops / 1e9, "gflop_per_step_plain": counted["plain"] / 1e9,
            "gflop_encode_per_run": counted["ours_encode"] / 1e9,
            # the speed-up if both sides ran at the same FLOP rate: what removing work alone can give
            "flop_bound_speedup": counted["plain"] / flops,
            "gflops": flops / ours / 1e9, "peak_fraction": flops / ours / peak}


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,glide-filtered-base", help="model configs, comma-separated")
    p.add_argument("--steps", type=int, default=None, help="sampling steps per run (default: 10 tiny, 2 others)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per side (alternating)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1; 0: torch's choice). On a shared machine a busy core makes "
                        "every multi-threaded op wait at its barrier: per-step times then swing 10-100x")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    peaks = [matmul_peak_flops()]
    print(f"matmul peak (2048^2 fp32, {torch.get_num_threads()} threads): {peaks[0] / 1e9:.1f} GFLOP/s",
          file=sys.stderr)
    rows = []
    for name in args.models.split(","):
        print(f"benchmarking {name} ...", file=sys.stderr)
        rows.append(bench_model(name.strip(), args, peaks))
    peak = statistics.median(peaks)

    print(f"\nguided DDPM sampling, batch {args.batch_size}, guidance {args.guidance}, median of {args.reps} "
          f"alternating reps, {torch.get_num_threads()} threads; matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    header = (f"{'model':<22}{'params':>12}{'steps':>6}{'plain s/step':>14}{'ours s/step':>13}{'speed-up':>10}"
              f"{'goal':>7}{'rows/call':>10}{'one-call s/step':>16}{'one x':>7}{'plain GFLOP':>12}{'ours GFLOP':>12}"
              f"{'FLOP x':>9}{'GFLOP/s':>9}{'of peak':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<22}{r['params']:>12,}{r['steps']:>6}{r['s_per_step_plain']:>14.4f}"
              f"{r['s_per_step_ours']:>13.4f}{r['speedup']:>9.2f}x{r['goal']:>6.1f}x{r['rows_per_call']:>10}"
              f"{r['s_per_step_one']:>16.4f}{r['speedup_one']:>6.2f}x{r['gflop_per_step_plain']:>12.2f}{r['gflop_per_step']:>12.2f}"
              f"{r['flop_bound_speedup']:>8.3f}x{r['gflops']:>9.1f}{r['peak_fraction']:>8.0%}")
    print("ours: `glide sample`'s default: the 2 x batch guided rows in network calls of rows/call (all in one\n"
          "call unless CPU activations would exceed 32 MiB, see guidance.auto_forward_batch); one-call: forced\n"
          "into one call.\n"
          "GFLOP per step (ours: its once-per-run text encoding amortised over the steps), counted as direct\n"
          "convolution (oneDNN may execute fewer: > 100% of the matmul rate is possible); FLOP x = plain GFLOP /\n"
          "ours GFLOP: the speed-up from doing less work alone, at equal FLOP rates.")
    ratios = [r["speedup"] / r["goal"] for r in rows]
    ratios += [r["peak_fraction"] / PEAK_GOAL for r in rows if r["model"] != "tiny"]
    result = {"benchmark": "sampling", "ratio": round(min(ratios), 3),
              "matmul_peak_gflops": round(peak / 1e9, 2),
              **{f"{r['model']}_{k}": (round(v, 4) if isinstance(v, float) else v)
                 for r in rows for k, v in r.items() if k != "model"}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
