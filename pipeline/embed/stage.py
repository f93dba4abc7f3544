"""`embed` as a stage: DATASET -> Ray actors holding a CLIP -> DATASET_EMB (shards, rejects, manifest).

One output shard per input shard, under the same name. A task's key digests the input shard and what
decides the embeddings (the CLIP's weights and the feature recipe), so a rerun resumes, and one with
another batch size or worker count reuses the shards already written.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import sys
from typing import Optional, TextIO

import shards as sh
from pipeline.config import EmbedConfig, RayConfig
from pipeline.ingest.stage import check_dataset_path
from pipeline.stages import FileInfo, Report, ShardJob, ShardResult, ShardTask, StageSpec, WorkerContext, run_stage

STAGE = "embed"
# The feature recipe (filtering.clip_features); change it when the features a CLIP gives change.
FEATURE_RECIPE = "three-crop-mean-l2-v1"
MAX_AUTO_CPUS = 8  # decoding threads a GPU actor takes by default


class EmbedActor:
    """The stage's per-worker class: filtering's EmbedWorker (the CLIP loaded once per Ray actor)
    answering in the stage runner's types."""

    def __init__(self, cfg: dict, context: WorkerContext):
        from filtering.embed_worker import EmbedWorker

        self.worker = EmbedWorker(cfg, context.device)

    def process(self, job: ShardJob, report: Report) -> ShardResult:
        (input_path,) = job.args
        out = self.worker.embed_shard(input_path, job.pairs_path, job.rejects_path, report)
        return ShardResult(input=out.input, kept=out.kept, rejected=dict(out.rejected),
                           shard=FileInfo(name=posixpath.basename(job.pairs_path), **out.shard),
                           rejects=FileInfo(name=posixpath.basename(job.rejects_path), **out.rejects))


def embed_spec(cfg: dict) -> StageSpec:
    """Ray actors holding the model: one GPU each where the cluster has GPUs."""
    return StageSpec(name=STAGE, worker=EmbedActor, num_cpus=cfg["cpus_per_worker"], num_gpus="auto",
                     max_workers=cfg["workers"])


def task_key(input_sha256: str, identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(f"{input_sha256}:{digest}".encode()).hexdigest()[:32]


def plan_tasks(dataset: str, manifest: dict, identity: dict) -> list[ShardTask]:
    """One task per input shard of a finished dataset, under the input shard's name."""
    return [ShardTask(name=s["name"], rows=int(s["rows"]), key=task_key(s["sha256"], identity),
                      args=(sh.join(dataset, sh.SHARDS_DIR, s["name"]),))
            for s in manifest.get(sh.SHARDS_DIR, [])]


def default_cpus_per_worker(resources: dict) -> float:
    """1 on a CPU cluster (one actor per core); on a GPU cluster the CPUs per GPU (at most
    MAX_AUTO_CPUS), so each GPU actor decodes with enough threads to keep its GPU fed."""
    gpus = resources.get("GPU", 0)
    if gpus < 1:
        return 1.0
    return float(max(1, min(MAX_AUTO_CPUS, int(resources.get("CPU", 1) // gpus))))


def check_paths(dataset: str, output: str) -> None:
    fs_in, p_in = sh.url_to_fs(dataset)
    fs_out, p_out = sh.url_to_fs(output)
    if type(fs_in) is type(fs_out) and p_in.rstrip("/") == p_out.rstrip("/"):
        raise sh.UserError(f"{output}: the output dataset must differ from the input dataset")
    check_dataset_path(output)


def run_embed(dataset: str, output: str, cfg: EmbedConfig, ray_cfg: RayConfig, *,
              stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> dict:
    """Embed every pair of the finished `dataset` into `output`; resumes a killed run. Returns the manifest."""
    import ray

    from filtering.clip_source import resolve_clip
    from pipeline.ray_session import ray_session

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    check_paths(dataset, output)
    manifest = sh.read_manifest(dataset)
    source = resolve_clip(cfg.clip)  # bad input fails here, before Ray starts
    clip = source.describe()
    identity = {"clip": {k: clip[k] for k in ("family", "arch", "weights_sha256", "dim", "crop_size") if k in clip},
                "recipe": FEATURE_RECIPE}
    tasks = plan_tasks(dataset, manifest, identity)
    rows = sum(t.rows for t in tasks)
    print(f"{STAGE}: {rows:,} pairs in {len(tasks)} shard(s) with CLIP {cfg.clip} ({clip['dim']}-d, three "
          f"{clip['crop_size']}px crops)", file=stderr, flush=True)
    with ray_session(ray_cfg):
        config = cfg.model_dump(mode="json")
        if config["cpus_per_worker"] is None:
            config["cpus_per_worker"] = default_cpus_per_worker(ray.cluster_resources())
        return run_stage(embed_spec(config).placed(ray_cfg.placement), dataset=output, tasks=tasks, cfg=config,
                         retries=cfg.shard_retries, inputs=[sh.input_ref(dataset)],
                         record_config={**config, "clip_model": clip},
                         stdout=stdout, stderr=stderr)
