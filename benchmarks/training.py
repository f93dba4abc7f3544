"""Training step throughput: the DeepSpeed engine vs a plain PyTorch loop, and 2 Ray Train workers vs 1.

    python -m benchmarks.training [--model tiny] [--batch-size 8] [--precision fp32|bf16]

1. One process (CPU accelerator, gloo, ZeRO 0): the same model (same initial weights), the same
   fixed batch, the same AdamW (project param groups, lr schedule), the same loss
   (diffusion.training_losses through training.trainer.objectives.diffusion_step_loss) and the same
   gradient clipping, stepped by `training.trainer.engine.build_engine`'s DeepSpeed engine and by a
   plain `loss.backward(); clip; opt.step()` loop. Repetitions alternate (which side goes first
   alternates too); images/s are medians. ratio = deepspeed / plain (goal >= 0.95: no framework tax).
   Also per CPU-second of the process (one torch thread): on a shared machine wall-clock rates move
   with other load, CPU time much less.
2. Ray Train: the same DeepSpeed step in a TorchTrainer with 1 and then 2 workers (1 CPU and 1
   torch thread each, per-worker batch fixed), steps/s timed inside the workers; speed-up = global
   images/s of 2 workers / 1 worker (ideal 2 on a machine with 2 free cores).
Ends with one JSON line {"benchmark": "training", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time


def _setup(model_name: str, batch_size: int, precision: str, seed: int = 0):
    """(model_cfg, TrainConfig, diffusion, fixed batch) for one benchmark side."""
    import torch

    from training.diffusion import create_diffusion
    from training.model_config import load_model_config
    from training.trainer.config import TrainConfig

    model_cfg = load_model_config(model_name)
    cfg = TrainConfig(kind="base", batch_size=batch_size, precision=precision, zero_stage=0, grad_clip=1.0,
                      lr=1e-4, warmup_steps=10)
    g = torch.Generator().manual_seed(seed)
    S, L = model_cfg.image_size, model_cfg.text_ctx
    batch = {"x0": torch.rand(batch_size, 3, S, S, generator=g) * 2 - 1,
             "tokens": torch.randint(1, model_cfg.n_vocab, (batch_size, L), generator=g),
             "mask": torch.ones(batch_size, L, dtype=torch.bool)}
    return model_cfg, cfg, create_diffusion(model_cfg), batch


def _deepspeed_stepper(model, cfg, diffusion, batch, device):
    import torch

    from training.trainer.engine import build_engine
    from training.trainer.objectives import diffusion_step_loss, forward_context

    engine, _ = build_engine(model, cfg)
    counter = [0]

    def step():
        counter[0] += 1
        gen = torch.Generator().manual_seed(counter[0])
        with forward_context(device.type, cfg.precision):
            out = diffusion_step_loss(engine, diffusion, batch, gen, device)
        engine.backward(out["loss"])
        engine.step()
        return float(out["loss"].detach())

    return step


def _plain_stepper(model, cfg, diffusion, batch, device):
    import torch

    from training.trainer.engine import lr_multiplier, param_groups
    from training.trainer.objectives import diffusion_step_loss, forward_context

    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                            eps=cfg.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, cfg))
    counter = [0]

    def step():
        counter[0] += 1
        gen = torch.Generator().manual_seed(counter[0])
        with forward_context(device.type, cfg.precision):
            out = diffusion_step_loss(model, diffusion, batch, gen, device)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return float(out["loss"].detach())

    return step


def bench_single_process(args) -> dict:
    from training.trainer.engine import select_accelerator

    device_type = select_accelerator()  # before DeepSpeed is imported
    import torch

    from training.factory import create_model
    from training.trainer.engine import init_distributed

    device = torch.device(device_type)
    init_distributed()
    model_cfg, cfg, diffusion, batch = _setup(args.model, args.batch_size, args.precision)
    torch.manual_seed(0)
    ds_model = create_model(model_cfg, device=device)
    plain_model = create_model(model_cfg, device=device)
    plain_model.load_state_dict(ds_model.state_dict())
    ds_model.train(), plain_model.train()
    sides = {"deepspeed": _deepspeed_stepper(ds_model, cfg, diffusion, batch, device),
             "plain": _plain_stepper(plain_model, cfg, diffusion, batch, device)}
    first = {name: step() for name, step in sides.items()}  # same weights, batch, noise: same loss
    for step in sides.values():
        step()  # warm-up
    rates = {name: [] for name in sides}
    cpu_rates = {name: [] for name in sides}  # per CPU-second of this process: robust to other load
    for rep in range(args.reps):
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                sides[name]()
            images = args.steps * args.batch_size
            rates[name].append(images / (time.perf_counter() - t0))
            cpu_rates[name].append(images / (time.process_time() - c0))
        print(f"  rep {rep + 1}/{args.reps}: " + ", ".join(
            f"{n} {rates[n][-1]:.1f} img/s ({cpu_rates[n][-1]:.1f} per CPU-s)" for n in sides),
            file=sys.stderr, flush=True)
    med = {name: statistics.median(r) for name, r in rates.items()}
    cpu_med = {name: statistics.median(r) for name, r in cpu_rates.items()}
    return {"deepspeed_images_per_s": med["deepspeed"], "plain_images_per_s": med["plain"],
            "deepspeed_images_per_cpu_s": cpu_med["deepspeed"], "plain_images_per_cpu_s": cpu_med["plain"],
            "first_step_loss": first}


def _ray_worker(config: dict) -> None:
    """Ray Train worker: DeepSpeed steps on a fixed batch; reports steps/s timed after warm-up."""
    import torch

    torch.set_num_threads(1)
    from training.trainer.engine import select_accelerator

    device_type = select_accelerator()
    import ray.train
    import torch.distributed as dist

    from training.factory import create_model
    from training.trainer.engine import init_distributed

    init_distributed()
    device = torch.device(device_type)
    model_cfg, cfg, diffusion, batch = _setup(config["model"], config["batch_size"], config["precision"],
                                              seed=ray.train.get_context().get_world_rank())
    torch.manual_seed(0)
    model = create_model(model_cfg, device=device).train()
    step = _deepspeed_stepper(model, cfg, diffusion, batch, device)
    for _ in range(config["warmup"]):
        step()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    dist.barrier()
    elapsed = time.perf_counter() - t0
    if ray.train.get_context().get_world_rank() == 0:  # the driver reads it (same machine)
        with open(config["result_file"], "w") as f:
            json.dump({"steps_per_s": config["steps"] / elapsed}, f)


def bench_ray_workers(args) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs = {1: [], 2: []}
    order = [1, 2, 2, 1, 1, 2][: 2 * args.ray_reps]  # alternating, balanced
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, workers in enumerate(order):
                result_file = f"{tmp}/result-{i}.json"
                trainer = TorchTrainer(
                    _ray_worker,
                    train_loop_config={"model": args.model, "batch_size": args.batch_size,
                                       "precision": args.precision, "warmup": 2, "steps": args.ray_steps,
                                       "result_file": result_file},
                    scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                                 resources_per_worker={"CPU": 1}),
                    torch_config=TorchConfig(backend="gloo"),
                    run_config=RunConfig(storage_path=tmp, name=f"bench-{i}-{workers}"),
                )
                trainer.fit()
                with open(result_file) as f:
                    steps_per_s = json.load(f)["steps_per_s"]
                runs[workers].append(steps_per_s)
                print(f"  ray train, {workers} worker(s): {steps_per_s:.2f} steps/s "
                      f"({steps_per_s * workers * args.batch_size:.1f} img/s)", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    out = {w: statistics.median(r) for w, r in runs.items()}
    return {"ray_1_worker_steps_per_s": out[1], "ray_2_workers_steps_per_s": out[2],
            "ray_speedup_2_over_1": 2 * out[2] / out[1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="model config name or path (default tiny)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--steps", type=int, default=8, help="steps per timed repetition")
    p.add_argument("--reps", type=int, default=7, help="alternating repetitions per side")
    p.add_argument("--ray-steps", type=int, default=20, help="timed steps per Ray Train run")
    p.add_argument("--ray-reps", type=int, choices=(1, 2, 3), default=2,
                   help="Ray Train runs per worker count, alternating 1,2,2,1,... (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in the single process (default 1: stable figures on a shared machine)")
    p.add_argument("--skip-ray", action="store_true", help="only the single-process comparison")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    print(f"training step: DeepSpeed (ZeRO 0) vs plain PyTorch, model {args.model}, batch {args.batch_size}, "
          f"{args.precision}", file=sys.stderr, flush=True)
    single = bench_single_process(args)
    ray_figs = {} if args.skip_ray else bench_ray_workers(args)
    ratio = single["deepspeed_images_per_s"] / single["plain_images_per_s"]
    cpu_ratio = single["deepspeed_images_per_cpu_s"] / single["plain_images_per_cpu_s"]

    rows = [("plain PyTorch loop, images/s", f"{single['plain_images_per_s']:.1f}"),
            ("DeepSpeed engine (ZeRO 0), images/s", f"{single['deepspeed_images_per_s']:.1f}"),
            ("ratio deepspeed / plain (goal >= 0.95)", f"{ratio:.3f}"),
            ("same, per CPU-second of the process", f"{cpu_ratio:.3f}")]
    if ray_figs:
        rows += [("Ray Train 1 worker, steps/s", f"{ray_figs['ray_1_worker_steps_per_s']:.2f}"),
                 ("Ray Train 2 workers, steps/s", f"{ray_figs['ray_2_workers_steps_per_s']:.2f}"),
                 ("speed-up 2 workers / 1 (images/s)", f"{ray_figs['ray_speedup_2_over_1']:.2f}")]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value:>8}")
    print(f"(medians of {args.reps} alternating repetitions x {args.steps} steps; "
          f"{time.perf_counter() - t0:.0f} s in all)")
    result = {"benchmark": "training", "ratio": round(ratio, 4), "model": args.model,
              "batch_size": args.batch_size, "precision": args.precision,
              "deepspeed_images_per_s": round(single["deepspeed_images_per_s"], 2),
              "plain_images_per_s": round(single["plain_images_per_s"], 2), "ratio_cpu_time": round(cpu_ratio, 4),
              "same_first_loss": abs(single["first_step_loss"]["deepspeed"] - single["first_step_loss"]["plain"]) < 1e-5}
    result.update({k: round(v, 3) for k, v in ray_figs.items()})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
