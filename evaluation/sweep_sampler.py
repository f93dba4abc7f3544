"""Sampling a sweep's missing chunks as Ray work: one actor per model copy, chunks spread over them.

    done = sample_chunks(report_dir, missing_chunks, SessionConfig(base=..., upsampler=...),
                         sampler={"steps": "100", ...}, workers=2)

Each actor (SweepWorker) loads the base (+ upsampler, + noised CLIP) once into a
training.sampling.SamplingSession and samples whole chunks; the driver writes each chunk's PNGs and
marker as it arrives (evaluation.sample_cache), so a killed run keeps every finished chunk. Ray must
be initialised by the caller (pipeline's ray session). A progress line (shards.Progress) counts
images as chunks finish. A chunk whose worker dies is retried on a new worker (bounded).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from evaluation.sample_cache import Chunk, write_chunk

MAX_ATTEMPTS = 3


class SweepWorker:
    """Holds one SamplingSession; samples one chunk per call."""

    def __init__(self, config, sampler: dict):
        from training.sampling.session import SamplingSession

        self.session = SamplingSession(config)
        self.sampler = sampler

    def sample(self, number: int, prompts: list[str], guidance: float, clip_guidance: Optional[float], seed: int):
        """(number, uint8 [B, S, S, 3], seconds) for one chunk."""
        from training.sampling.session import SampleSettings

        started = time.time()
        settings = SampleSettings(guidance=guidance, clip_guidance=clip_guidance, seed=seed,
                                  batch_size=len(prompts), **self.sampler)
        images = self.session.text_to_image(prompts, settings).uint8()
        return number, images, time.time() - started


def default_workers(chunks: int) -> int:
    """One actor per GPU on a GPU cluster, else one per CPU; never more than there are chunks."""
    import ray

    resources = ray.cluster_resources()
    slots = int(resources.get("GPU", 0)) or int(resources.get("CPU", 1))
    return max(1, min(chunks, slots))


def sample_chunks(report: Path, chunks: Sequence[Chunk], config, sampler: dict, *,
                  workers: Optional[int] = None, stream=None, attempts: int = MAX_ATTEMPTS) -> float:
    """Sample `chunks` (the missing ones) into `report`; returns the seconds it took.

    A chunk whose actor dies (a lost node, a killed process) is sampled again on a fresh actor, up to
    `attempts` times in all; a chunk that still fails, or whose sampling raises, stops the run with
    StageFailed naming it (every finished chunk stays on disk for the rerun)."""
    import ray
    from ray.exceptions import RayActorError

    from shards import Progress, StageFailed, UserError

    if not chunks:
        return 0.0
    started = time.time()
    count = workers or default_workers(len(chunks))
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    worker_class = ray.remote(num_cpus=1, num_gpus=gpus)(SweepWorker)
    queue = list(enumerate(chunks))[::-1]           # popped from the end: chunk order
    tries = {number: 0 for number, _ in queue}
    errors: dict[int, list[str]] = {}
    in_flight = {}                                  # ref -> (number, actor)

    def submit(actor) -> None:
        number, chunk = queue.pop()
        tries[number] += 1
        ref = actor.sample.remote(number, list(chunk.prompts), chunk.setting.guidance, chunk.setting.clip_guidance,
                                  chunk.seed)
        in_flight[ref] = (number, actor)

    total = sum(len(c.prompts) for c in chunks)
    with Progress(f"sampling ({count} worker{'s' if count > 1 else ''})", total, unit="images",
                  stream=stream, interval=5.0) as bar:
        for _ in range(min(count, len(queue))):
            submit(worker_class.remote(config, sampler))
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            number, actor = in_flight.pop(ref)
            try:
                _, images, seconds = ray.get(ref)
            except RayActorError as e:
                errors.setdefault(number, []).append(f"worker died: {str(e).splitlines()[0][:200]}")
                if tries[number] >= attempts:
                    raise StageFailed(f"sampling: chunk {number} of {chunks[number].setting.name} failed "
                                      f"{tries[number]} times ({'; '.join(errors[number])})") from None
                print(f"sampling: a worker died on chunk {number} ({chunks[number].setting.name}); "
                      f"sampling it again on a new worker", file=stream or sys.stderr, flush=True)
                queue.append((number, chunks[number]))
                actor = worker_class.remote(config, sampler)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, UserError):   # bad input the worker found (e.g. a bad respacing spec)
                    raise UserError(str(cause)) from None
                raise StageFailed(f"sampling: chunk {number} of {chunks[number].setting.name} failed: "
                                  f"{str(cause or e).strip().splitlines()[0][:300]}") from None
            else:
                chunk = chunks[number]
                write_chunk(report, chunk, images, seconds)
                bar.note(last=chunk.setting.name)
                bar.update(len(images))
            if queue:
                submit(actor)
    return time.time() - started
