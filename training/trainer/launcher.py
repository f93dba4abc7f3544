"""The driver side of `glide train`: check the inputs, build the data stream, run Ray Train.

    RUN/checkpoints/step-NNNNNNN/   DeepSpeed checkpoints (Ray Train's run "checkpoints" in RUN)
    RUN/exports/step-NNNNNNN/       EMA + raw weights, safetensors (training.load / glide sample)
    RUN/tensorboard/                TensorBoard event files
    RUN/metrics.jsonl               every logged step, one JSON object a line
    RUN/train-config.json           the resolved TrainConfig and model config of the last start

Rerunning the same command resumes from the newest checkpoint: the driver checks its manifests and
sizes, each worker hashes its own files before loading (checkpointing.py), so every file is hashed
once. Ray Train's FailureConfig restarts the workers from the newest checkpoint when one dies.
Errors from the workers come back as one line: a worker's UserError is re-raised here as a UserError.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from shards import UserError, write_json_atomic
from training.trainer.config import TrainConfig


def prepare_run(cfg: TrainConfig) -> dict:
    """Everything checked before Ray starts: paths, precision, model config, init weights, resume point.

    Call it once per run and hand the result to `run_training`: it hashes the `--init` files and
    the resume state, which nothing after it hashes again."""
    cfg = cfg.for_kind()
    from training.trainer.checkpointing import (latest_checkpoint_dir, inspect_checkpoint, read_verified_rank_state,
                                                state_name)
    from training.trainer.engine import check_precision
    from training.trainer.model_setup import resolve_model_config, tokenizer_base_dir, verify_init_checkpoint

    if not cfg.data:
        raise UserError("glide train: --data DATASET is required (or train.data in the config)")
    if not cfg.output:
        raise UserError("glide train: -o RUN is required (or train.output in the config)")
    if cfg.init and "://" not in cfg.init:  # the workers run in other folders: a relative path is the caller's
        cfg = cfg.model_copy(update={"init": str(Path(cfg.init).resolve())})
    check_precision(cfg, "cuda" if cfg.use_gpu else "cpu")
    data_dir = cfg.data if "://" in cfg.data else str(Path(cfg.data).resolve())
    if "://" not in data_dir and not Path(data_dir).is_dir():
        raise UserError(f"{cfg.data}: no such dataset folder")
    run_dir = Path(cfg.output).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{cfg.output}: exists and is not a folder")
    model_cfg = resolve_model_config(cfg)
    resume_dir, start_step, position, verified = None, 0, None, []
    latest = latest_checkpoint_dir(run_dir)
    if latest is not None:
        listing = inspect_checkpoint(latest)
        if listing.world_size != cfg.workers:
            raise UserError(f"{latest}: written by {listing.world_size} workers; resume with "
                            f"--workers {listing.world_size} (asked for {cfg.workers})")
        state = read_verified_rank_state(listing, 0)
        resume_dir, start_step, position = str(latest), int(state["step"]), state.get("position")
        verified = [str((latest / state_name(0)).resolve())]
    if cfg.init:
        verify_init_checkpoint(cfg.init, resuming=resume_dir is not None)  # a damaged --init fails here
    tokenizer_dir = tokenizer_base_dir(cfg)
    return {"data_dir": data_dir, "run_dir": run_dir, "model_cfg": model_cfg, "resume_dir": resume_dir,
            "verified": verified, "start_step": start_step, "position": position, "init": cfg.init,
            "tokenizer_dir": tokenizer_dir, "caption_fit": _caption_fit(data_dir, model_cfg, tokenizer_dir)}


def _caption_fit(data_dir: str, model_cfg, tokenizer_dir):
    """How the dataset's first captions fit the model's text_ctx (training.data.caption_fit)."""
    from training.data.caption_fit import caption_fit
    from training.tokenizers import build_tokenizer

    return caption_fit(data_dir, build_tokenizer(model_cfg.tokenizer, base_dir=tokenizer_dir), model_cfg.text_ctx)


def epochs_needed(cfg: TrainConfig, rows: int, start_step: int) -> int:
    """Epochs the data stream must cover so every worker reaches max_steps (plus slack)."""
    if rows <= 0:
        raise UserError(f"{cfg.data}: dataset has no rows")
    per_step = cfg.batch_size * cfg.grad_accum * cfg.workers
    needed = (cfg.max_steps - start_step + 1) * per_step + cfg.shuffle_buffer * cfg.workers
    return max(1, math.ceil(needed / rows) + 1)


def run_training(cfg: TrainConfig, run: dict | None = None, *, stream=None,
                 worker_resources: dict | None = None) -> dict:
    """Train as `cfg` says (Ray must be initialised); returns {"step", "run_dir", "export"}.

    run: `prepare_run(cfg)`'s result when the caller checked the inputs before starting Ray.
    worker_resources: custom Ray resources each training worker asks for besides its CPUs and GPUs
    (where it may run on a cluster; it does not change what is computed)."""
    import ray
    import shards
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    from training.data import DataPosition, build_train_dataset, train_data_config
    from training.model_info import model_info
    from training.trainer.checkpointing import CHECKPOINTS_DIR
    from training.trainer.loop import train_worker
    from training.trainer.metrics import DriverProgress
    from training.trainer.model_setup import train_task

    stream = stream or sys.stderr
    cfg = cfg.for_kind()
    run = run if run is not None else prepare_run(cfg)
    run_dir: Path = run["run_dir"]
    run_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = run["model_cfg"]
    if run["start_step"] >= cfg.max_steps:
        print(f"train: {run_dir} is already at step {run['start_step']} (max_steps {cfg.max_steps})", file=stream)
        return {"step": run["start_step"], "run_dir": str(run_dir), "export": _latest_export(run_dir)}
    write_json_atomic(str(run_dir / "train-config.json"),
                      {"train": cfg.model_dump(mode="json"), "model": model_cfg.to_dict()})

    task = train_task(cfg, model_cfg)
    start = DataPosition.from_dict(run["position"]) if run["position"] else None
    epochs = epochs_needed(cfg, shards.dataset_rows(run["data_dir"]), run["start_step"])
    dataset = build_train_dataset(run["data_dir"], task, start_position=start, num_epochs=epochs)
    flops = model_info(model_cfg).flops_per_image

    queue = Queue(maxsize=10_000)
    loop_config = {"train": cfg.model_dump(mode="json"), "model": model_cfg.to_dict(), "run_dir": str(run_dir),
                   "resume_dir": run["resume_dir"], "verified": run["verified"],
                   "tokenizer_dir": run["tokenizer_dir"], "init": None if run["resume_dir"] else run["init"],
                   "flops_per_image": flops, "queue": queue}
    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    resources.update(worker_resources or {})
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(run_dir), name=CHECKPOINTS_DIR,
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        datasets={"train": dataset},
        dataset_config=train_data_config(),
    )
    where = f"resuming at step {run['start_step']}" if run["resume_dir"] else "from scratch"
    print(f"train: {cfg.kind} ({model_cfg.kind}, {model_cfg.image_size}px) on {cfg.workers} worker(s), "
          f"ZeRO-{cfg.zero_stage}, {cfg.precision}, {where} -> {run_dir}", file=stream, flush=True)
    fit = run.get("caption_fit")
    if fit is not None and fit.warning(cfg.data):
        print(fit.warning(cfg.data), file=stream, flush=True)
    printer = DriverProgress(queue, cfg.max_steps, run["start_step"], stream).start()
    try:
        trainer.fit()
    except Exception as e:  # Ray wraps worker errors; bring back one line
        raise _one_line_error(e) from None
    finally:
        printer.stop()
        try:
            ray.kill(queue.actor)
        except Exception:
            pass
    export = _latest_export(run_dir)
    print(f"train: done; latest export {export}", file=stream, flush=True)
    return {"step": cfg.max_steps, "run_dir": str(run_dir), "export": export}


def _latest_export(run_dir: Path) -> str | None:
    from training.checkpoint import resolve_checkpoint_dir

    try:
        return str(resolve_checkpoint_dir(run_dir))
    except UserError:
        return None


def _causes(error: BaseException):
    """The error, the worker errors Ray Train collected, and their causes (depth-first)."""
    seen, stack = set(), [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            stack.extend(failures.values())
        for attr in ("cause", "__cause__", "__context__", "error"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)


def _one_line_error(error: BaseException) -> Exception:
    """A worker's UserError as a UserError; anything else as a RuntimeError with the worker's first line."""
    causes = list(_causes(error))
    users = [e for e in causes if isinstance(e, UserError)]
    if users:
        # Ray re-raises a task's error as a subclass of both RayTaskError and the original type;
        # the original (its `cause`) carries the one-line message.
        plain = [e for e in users if not type(e).__module__.startswith("ray")]
        return UserError(_first_line((plain or users)[0]))
    root = causes[-1] if causes else error
    for e in causes:  # the innermost worker exception is the informative one
        if not type(e).__module__.startswith("ray"):
            root = e
            break
    return RuntimeError(f"training failed: {type(root).__name__}: {_first_line(root)}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "ray::", "Training worker")):
            return line
    return text.splitlines()[0] if text else type(e).__name__
