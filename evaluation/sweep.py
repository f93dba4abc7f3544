"""`glide evaluate` as a library: sample a guidance sweep (cached), compute every metric per setting,
store it all in the report folder and build REPORT/index.html from it.

    request = EvaluationRequest(model="ckpt/base", upsampler="ckpt/up", prompts_file="prompts.txt",
                                reference="ref-images/", guidance=[1, 3], features="scene:clf/",
                                samples_per_setting=32, output="report/")
    check_request(request)           # bad input -> UserError naming it, before Ray or torch work
    summary = run_evaluation(request, ray_session=...)   # a factory of a Ray session (pipeline.ray_session)

The report folder (docs/evaluation.md, "the report folder"; settings.json and samples/index.parquet are a
contract `glide pairs make` reads):
    settings.json           {setting: {"guidance", "clip_guidance", "model", "upsampler"}}, and "clip"
                            (the noised CLIP's path) in a CLIP-guided setting
    samples/index.parquet   setting, prompt_index, prompt, seed, path: one row per sample
    samples/<setting>/      the PNGs and their chunk markers (evaluation.sample_cache)
    metrics.json            every metric per setting, the features used, caption-accuracy predictions
    lineage.json            checkpoints and their digests, prompts file, reference folder, sampler, command
    memorisation.json, memorisation/   the memorisation check, when --train-embeddings is given
    plots/, grids/, index.html          drawn from the files above (evaluation.report_page)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import shards as sh
from evaluation.sample_cache import checkpoint_digest, plan_chunks, write_index
from evaluation.scene_attributes import is_world_prompt_list
from evaluation.sweep_settings import sweep_settings

CACHE_DIR = "cache"   # reference statistics, inside the report folder


@dataclass
class EvaluationRequest:
    model: str
    prompts_file: str
    reference: str
    guidance: Sequence[float]
    features: str
    output: str
    upsampler: Optional[str] = None
    clip_guidance: Sequence[float] = ()
    clip: Optional[str] = None                 # noised CLIP checkpoint for CLIP guidance
    score_clip: Optional[str] = None           # CLIP for the CLIP score (open_clip ARCH=WEIGHTS or a clean CLIP)
    scene_classifier: Optional[str] = None
    train_embeddings: Optional[str] = None     # embed-stage dataset of the training set (memorisation)
    samples_per_setting: int = 16
    batch_size: int = 8
    seed: int = 0
    steps: str = "100"
    upsampler_steps: str = "fast27"
    upsample_temp: float = 0.997
    low_res_consistency: bool = True
    workers: Optional[int] = None
    device: Optional[str] = None
    command: str = ""
    prompts: list[str] = field(default_factory=list)   # filled by check_request


def read_prompts(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise sh.UserError(f"{path}: cannot read prompts ({e.strerror if isinstance(e, OSError) else e})") from None
    if not prompts:
        raise sh.UserError(f"{path}: no prompts (one caption per line expected)")
    return prompts


def check_request(req: EvaluationRequest) -> None:
    """Every input checked cheaply (paths exist, numbers make sense); UserError naming the first bad one."""
    from evaluation.image_folder import list_images
    from training.checkpoint import resolve_checkpoint_dir

    for flag, path, kinds in (("--model", req.model, ("base",)), ("--upsampler", req.upsampler, ("upsampler",)),
                              ("--clip", req.clip, ("clip",))):
        if path:
            try:
                resolve_checkpoint_dir(path)
                kind = checkpoint_digest(path)["kind"]
            except sh.UserError as e:
                raise sh.UserError(f"{flag}: {e}") from None
            if kind not in kinds:
                raise sh.UserError(f"{flag}: {path} is a {kind!r} checkpoint, not {' or '.join(map(repr, kinds))}")
    if req.clip_guidance and not req.clip:
        raise sh.UserError("--clip-guidance: needs --clip (a noised CLIP checkpoint to guide with)")
    if req.samples_per_setting < 2:
        raise sh.UserError(f"--samples-per-setting: {req.samples_per_setting}; the metrics need at least 2")
    if req.batch_size < 1:
        raise sh.UserError(f"--batch-size: must be at least 1, got {req.batch_size}")
    if req.workers is not None and req.workers < 1:
        raise sh.UserError(f"--workers: must be at least 1, got {req.workers}")
    from evaluation.feature_spec import parse_features

    parse_features(req.features)
    req.prompts = read_prompts(req.prompts_file)
    list_images(req.reference)
    if req.scene_classifier and not Path(req.scene_classifier, "scene-classifier.json").is_file():
        raise sh.UserError(f"--scene-classifier: {req.scene_classifier}: no scene-classifier.json there")
    if req.train_embeddings:
        from evaluation.memorisation import training_clip

        training_clip(req.train_embeddings)
    if Path(req.output).exists() and not Path(req.output).is_dir():
        raise sh.UserError(f"-o: {req.output} exists and is not a folder")


def _sampler(req: EvaluationRequest) -> dict:
    return {"steps": str(req.steps), "upsampler_steps": str(req.upsampler_steps), "upsample_temp": req.upsample_temp,
            "upsample": bool(req.upsampler), "low_res_consistency": req.low_res_consistency}


def run_evaluation(req: EvaluationRequest, stream=None, ray_session=None) -> dict:
    """Sample what is missing, compute the metrics, store everything, build index.html; returns
    {"report", "index_html", "sampled", "cached", "metrics"}. ray_session: a context manager factory
    that starts (or joins) Ray, entered only when something is left to sample; None: Ray is up."""
    from training.sampling.session import SessionConfig

    from evaluation.sweep_sampler import sample_chunks

    stream = stream or sys.stderr
    report = Path(req.output)
    report.mkdir(parents=True, exist_ok=True)
    settings = sweep_settings(req.guidance, req.clip_guidance)
    digests = {"model": checkpoint_digest(req.model),
               "upsampler": checkpoint_digest(req.upsampler) if req.upsampler else None,
               "clip": checkpoint_digest(req.clip) if req.clip else None}
    identity = {"model": digests["model"]["sha256"], "upsampler": (digests["upsampler"] or {}).get("sha256"),
                "clip": (digests["clip"] or {}).get("sha256"), "sampler": _sampler(req)}
    chunks = plan_chunks(settings, req.prompts, req.samples_per_setting, req.batch_size, req.seed, identity)
    missing = [c for c in chunks if not c.is_done(report)]
    cached = sum(len(c.prompts) for c in chunks) - sum(len(c.prompts) for c in missing)
    print(f"evaluate: {len(settings)} settings x {req.samples_per_setting} samples; {cached} cached, "
          f"{sum(len(c.prompts) for c in missing)} to sample", file=stream, flush=True)
    config = SessionConfig(base=req.model, upsampler=req.upsampler, clip=req.clip, device=req.device)
    sampler = _sampler(req)
    sampling_s = 0.0
    if missing:
        with ray_session() if ray_session else contextlib.nullcontext():
            sampling_s = sample_chunks(report, missing, config, sampler, workers=req.workers, stream=stream)
    write_index(report, chunks)
    sh.write_json_atomic(str(report / "settings.json"), {
        s.name: {"guidance": s.guidance, "clip_guidance": s.clip_guidance, "model": req.model,
                 "upsampler": req.upsampler, **({"clip": req.clip} if s.clip_guidance is not None else {})}
        for s in settings})
    metrics = compute_metrics(req, report, stream)
    lineage = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": req.command,
        "model": digests["model"], "upsampler": digests["upsampler"], "clip": digests["clip"],
        "prompts": {"path": str(req.prompts_file), "count": len(req.prompts),
                    "sha256": hashlib.sha256("\n".join(req.prompts).encode()).hexdigest(),
                    "sample_world": is_world_prompt_list(req.prompts)},
        "reference": metrics.pop("reference"), "sampler": {**sampler, "batch_size": req.batch_size, "seed": req.seed},
        "samples_per_setting": req.samples_per_setting, "scene_classifier": metrics.pop("scene_classifier"),
        "score_clip": req.score_clip, "train_embeddings": req.train_embeddings,
        "sampling_seconds": round(sampling_s, 1), "sampled": sum(len(c.prompts) for c in missing),
    }
    sh.write_json_atomic(str(report / "metrics.json"), metrics)
    sh.write_json_atomic(str(report / "lineage.json"), lineage)
    if req.train_embeddings:
        memorisation_check(req, report, stream)
    else:  # an earlier run's check is not this run's
        (report / "memorisation.json").unlink(missing_ok=True)
    from evaluation.report_page import build_report

    page = build_report(report)
    return {"report": str(report), "index_html": str(page), "sampled": sum(len(c.prompts) for c in missing),
            "cached": cached, "metrics": metrics["settings"]}


def compute_metrics(req: EvaluationRequest, report: Path, stream) -> dict:
    """metrics.json's content, plus "reference" and "scene_classifier" for the lineage."""
    from evaluation.feature_spec import load_features
    from evaluation.reference_stats import reference_statistics
    from evaluation.sample_cache import read_index
    from evaluation.sweep_metrics import load_sample_images, setting_metrics

    index = read_index(report).to_pylist()
    extractor = load_features(req.features, device=req.device or "cpu")
    first = load_sample_images(report, [index[0]["path"]])
    size = int(first.shape[1])
    reference = reference_statistics(req.reference, extractor, size, report / CACHE_DIR)
    print(f"evaluate: reference statistics of {reference.count} images at {size}px "
          f"({'cached' if reference.from_cache else 'computed'}; {extractor.kind} features)", file=stream, flush=True)
    clip = None
    if req.score_clip:
        from evaluation.features import ClipImageFeatures

        clip = ClipImageFeatures(req.score_clip, device=req.device or "cpu")
    classifier, classifier_info = None, None
    if req.scene_classifier:
        if is_world_prompt_list(req.prompts):
            from evaluation.scene_classifier import SceneClassifier

            classifier = SceneClassifier.load(req.scene_classifier)
            classifier_info = classifier.info
        else:
            print("evaluate: the prompts are not all sample-world captions: no caption accuracy", file=stream)
    out = {}
    for name in dict.fromkeys(r["setting"] for r in index):
        rows = [r for r in index if r["setting"] == name]
        images = load_sample_images(report, [r["path"] for r in rows])
        out[name] = setting_metrics(images, [r["prompt"] for r in rows], extractor=extractor, reference=reference,
                                    clip=clip, classifier=classifier)
        acc = out[name]["caption_accuracy"]
        line = f"evaluate: {name}: FID {out[name]['fid']:.3f}"
        if acc:
            line += f", caption accuracy {100 * acc['all']:.1f}% (all attributes)"
        print(line, file=stream, flush=True)
    ref = reference.description
    return {"settings": out, "features": extractor.describe(),
            "reference": {"folder": ref["images"]["folder"], "count": reference.count,
                          "listing_sha256": ref["images"]["listing_sha256"], "image_size": size,
                          "cache_file": str(reference.cache_file)},
            "scene_classifier": classifier_info}


def memorisation_check(req: EvaluationRequest, report: Path, stream) -> None:
    """memorisation.json and the closest training images' thumbnails (evaluation.memorisation)."""
    from filtering.clip_features import load_clip_features

    from evaluation.memorisation import (embed_samples, nearest_training_images, training_clip, training_images,
                                         thumbnail_png)
    from evaluation.report_page import CLOSEST_PAIRS
    from evaluation.sample_cache import read_index
    from evaluation.sweep_metrics import load_sample_images

    spec = training_clip(req.train_embeddings)
    clip = load_clip_features(spec, device=req.device or "cpu")
    rows = read_index(report).to_pylist()
    images = load_sample_images(report, [r["path"] for r in rows])
    found = nearest_training_images(embed_samples(clip, images), req.train_embeddings)
    order = sorted(range(len(rows)), key=lambda i: found.distance[i])[:CLOSEST_PAIRS]
    thumbs = training_images(found, order)
    (report / "memorisation").mkdir(exist_ok=True)
    samples = []
    for i, r in enumerate(rows):
        item = {**r, "distance": float(found.distance[i]), "train_uid": found.uid[i],
                "train_caption": found.caption[i], "train_image": None}
        if i in thumbs:
            name = f"memorisation/{found.uid[i]}.png"
            sh.write_bytes_atomic(str(report / name), thumbnail_png(thumbs[i], images.shape[1]))
            item["train_image"] = name
        samples.append(item)
    sh.write_json_atomic(str(report / "memorisation.json"), {
        "dataset": req.train_embeddings, "clip": spec, "searched": found.searched, "samples": samples})
    print(f"evaluate: memorisation: {len(rows)} samples against {found.searched} training images; "
          f"smallest CLIP distance {min(found.distance):.4f}", file=stream, flush=True)
