"""The stages `glide run` knows, in pipeline order: one `Stage` entry each.

A stage reads artefacts (kinds such as "pairs", "embeddings", "filters") that earlier stages of the
same pipeline wrote, writes its own, and runs as the real `glide` command (in this process, inside
`glide run`'s Ray session), printed first. Adding a stage (evaluate, report) is one entry in STAGES:
what it reads and writes, the config that decides its output (`identity`), the digests of inputs from
outside the pipeline (`external`), and how it runs.

Artefacts and where they go (DS: run.datasets, default OUT; OUT: run.out):
    pairs        DS/dataset (ingest), then DS/dataset-filtered (filter) or OUT/dataset-filtered (label)
    crawl        DS/dataset (ingest): the unfiltered pairs, which train-base-unfiltered reads
    world        OUT/world: the sample world and its ground truth (ingest without run.lists)
    embeddings   DS/dataset-emb
    filters      DS/filters (fit-filters) or OUT/filters (label)
    model-KIND   OUT/runs/KIND
    samples      OUT/samples (OUT/samples/base: the base's images the upsampler started from)
    evaluation   OUT/evaluation: `glide evaluate`'s report folder (metrics.json, index.html, cached samples)
    held-out     OUT/evaluation-world: the evaluate stage's held-out world and prompts (when it makes them)
    claims       OUT/claims: the paper's claims measured (claims.json, index.html; pipeline.run.claims_stage)
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import shards as sh
from pipeline.run.fingerprint import canonical, checkpoint_digest, dataset_digest, tree_digest

PAIRS, WORLD, EMBEDDINGS, FILTERS, SAMPLES = "pairs", "world", "embeddings", "filters", "samples"
EVALUATION, HELD_OUT, CRAWL, CLAIMS = "evaluation", "held-out", "crawl", "claims"


def model(kind: str) -> str:
    return f"model-{kind}"


@dataclass
class Context:
    """One pipeline config, resolved: the config, its file, and where outputs go."""

    config: object            # pipeline.config.PipelineConfig
    config_file: str
    out: str                  # local folder
    datasets: str             # folder or fsspec URI

    @property
    def run(self):
        return self.config.run

    def dataset(self, name: str) -> str:
        return sh.join(self.datasets, name)

    def local(self, *parts: str) -> str:
        return str(Path(self.out, *parts))


def artefact_digest(kind: str, path: str) -> Optional[str]:
    """The identity of one artefact as it is now (None: missing or unfinished)."""
    if kind in (PAIRS, EMBEDDINGS, CRAWL):
        return dataset_digest(path)
    if kind == WORLD:
        return tree_digest(sh.join(path, "truth.parquet"))
    if kind == FILTERS:
        from filtering.filter_files import filters_digest

        try:
            return filters_digest(path)
        except sh.UserError:
            return None
    if kind.startswith("model-"):
        return checkpoint_digest(path)
    return tree_digest(path)


def glide(*argv) -> None:
    """Run `glide ARGV` in this process as a user would type it (printed first); a failure ends the
    pipeline with the command's own exit code."""
    from pipeline.cli import main

    argv = [str(a) for a in argv]
    print(f"\n$ glide {shlex.join(argv)}", flush=True)
    code = main(argv)
    sys.stdout.flush()
    if code:
        raise StageExit(argv[0], code)


class StageExit(Exception):
    """A stage's command exited non-zero (its own message is already printed)."""

    def __init__(self, command: str, code: int):
        super().__init__(f"`glide {command}` exited with code {code}")
        self.code = code


def _without(section, *keys: str) -> dict:
    """A config section as a dict, less the keys that only decide how fast it runs (not what it writes)."""
    return {k: v for k, v in section.model_dump(mode="json").items() if k not in keys}


# --------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------
def _world_mode(ctx: Context) -> bool:
    return not ctx.run.lists


def _ingest_writes(ctx: Context) -> dict:
    writes = {PAIRS: ctx.dataset("dataset"), CRAWL: ctx.dataset("dataset")}
    if _world_mode(ctx):
        writes[WORLD] = ctx.local("world")
    return writes


def _ingest_identity(ctx: Context) -> dict:
    identity = {"ingest": _without(ctx.config.ingest, "threads", "shard_retries")}
    if _world_mode(ctx):  # the world is a pure function of its config; where it is served is not part of it
        identity["sample_world"] = _without(ctx.config.sample_world, "host", "port")
    return identity


def _ingest_external(ctx: Context) -> dict:
    return {f"list {p}": tree_digest(p) for p in ctx.run.lists}


def _run_ingest(ctx: Context, reads: dict, writes: dict) -> None:
    if not _world_mode(ctx):
        glide("ingest", *ctx.run.lists, "-o", writes[PAIRS], "--config", ctx.config_file)
        return
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    world_cfg = ctx.config.sample_world
    info = generate_world(world_cfg, Path(writes[WORLD]))
    print(f"sample world: {info.count} images, {world_cfg.image_size}px, seed {world_cfg.seed} -> {writes[WORLD]}; "
          + ", ".join(f"{n} show {c}" for c, n in info.categories.items()), flush=True)
    with SampleWorldServer(Path(writes[WORLD]), host=world_cfg.host, port=world_cfg.port,
                           slow_seconds=world_cfg.slow_seconds) as server:
        urls = write_url_list(Path(writes[WORLD]), server.base_url)
        print(f"serving on {server.base_url}; URL list {urls}", flush=True)
        glide("ingest", urls, "-o", writes[PAIRS], "--config", ctx.config_file)


# --------------------------------------------------------------------------------------------------
# embed
# --------------------------------------------------------------------------------------------------
def clip_digest(spec: str) -> Optional[str]:
    """The CLIP's weights: the file of ARCH=FILE, or the checkpoint a folder resolves to."""
    if "=" in spec:
        return tree_digest(spec.split("=", 1)[1].strip())
    return checkpoint_digest(spec) if Path(spec).exists() else None


def _run_embed(ctx: Context, reads: dict, writes: dict) -> None:
    glide("embed", reads[PAIRS], "-o", writes[EMBEDDINGS], "--config", ctx.config_file)


# --------------------------------------------------------------------------------------------------
# label (from the sample world's ground truth: labels, active learning, final fit and filter)
# --------------------------------------------------------------------------------------------------
def _label_writes(ctx: Context) -> dict:
    # pipeline.demo_filters writes these names under OUT
    return {FILTERS: ctx.local("filters"), PAIRS: ctx.local("dataset-filtered")}


def _label_identity(ctx: Context) -> dict:
    identity = {"label_plan": ctx.run.label_plan.model_dump(mode="json")}
    if not ctx.run.fit_config:
        identity["fit_filters"] = ctx.config.fit_filters.model_dump(mode="json")
    return identity


def _run_label(ctx: Context, reads: dict, writes: dict) -> None:
    from pipeline.demo_filters import LabelPlan, label_fit_filter

    if "://" in reads[EMBEDDINGS]:
        raise sh.UserError(f"{ctx.config_file}: run.datasets: the label stage (labels from the ground truth) "
                           f"needs local datasets; give run.labels to fit and filter datasets in {ctx.datasets}")
    p = ctx.run.label_plan
    plan = LabelPlan(random=dict(p.random), searches={k: tuple(v) for k, v in p.searches.items()},
                     per_query=p.per_query, rounds=p.rounds, per_round=p.per_round,
                     round_target_fnr=p.round_target_fnr, target_fnr=p.target_fnr, held_out=p.held_out,
                     seed=p.seed, config=Path(ctx.run.fit_config or ctx.config_file))
    try:
        label_fit_filter(Path(reads[EMBEDDINGS]), Path(reads[WORLD]), Path(ctx.out), plan, first_step=1)
    except SystemExit as e:  # demo_steps.glide ends a failed step with SystemExit(message)
        print(e, file=sys.stderr, flush=True)
        raise StageExit("label", 1) from None


# --------------------------------------------------------------------------------------------------
# fit-filters and filter (labels given as a file)
# --------------------------------------------------------------------------------------------------
def labels_digest(labels: str) -> Optional[str]:
    """A labels file's digest; a SQLite URL's file; None for a database server (never reused)."""
    if labels.startswith("sqlite:///"):
        return tree_digest(labels[len("sqlite:///"):])
    return None if "://" in labels else tree_digest(labels)


def _run_fit_filters(ctx: Context, reads: dict, writes: dict) -> None:
    glide("fit-filters", "--labels", ctx.run.labels, "--embeddings", reads[EMBEDDINGS], "-o", writes[FILTERS],
          "--config", ctx.config_file)


def _run_filter(ctx: Context, reads: dict, writes: dict) -> None:
    glide("filter", reads[EMBEDDINGS], "--filters", reads[FILTERS], "-o", writes[PAIRS], "--config", ctx.config_file)


# --------------------------------------------------------------------------------------------------
# train KIND
# --------------------------------------------------------------------------------------------------
TRAINED_KIND = {"base-unfiltered": "base", "inpaint": "base-inpaint"}   # run.train key -> what `glide train` trains
TRAIN_DATA = {"base-unfiltered": CRAWL}       # run.train key -> the pairs it reads (default: PAIRS)
TRAIN_INIT = {"inpaint": model("base")}       # run.train key -> the model it starts from (unless init is given)


def train_section(ctx: Context, kind: str):
    """The `train` section with run.train.KIND's keys applied (a bad key: one line naming it and the file)."""
    from pipeline.config import override

    section = ctx.config.train.model_copy(deep=True)
    return override(section, {"kind": TRAINED_KIND.get(kind, kind), **ctx.run.train[kind]},
                    source=f"{ctx.config_file}: run.train.{kind}")


def _train_identity(kind: str) -> Callable[[Context], dict]:
    return lambda ctx: {"train": _without(train_section(ctx, kind), "data", "output", "max_failures")}


def _train_external(kind: str) -> Callable[[Context], dict]:
    def external(ctx: Context) -> dict:
        init = train_section(ctx, kind).init
        return {"init": checkpoint_digest(init)} if init else {}
    return external


def _run_train(kind: str):
    def run(ctx: Context, reads: dict, writes: dict) -> None:
        from pipeline.config import to_yaml

        # the resolved section as the config the command reads: every train key works, not only those with flags
        resolved = ctx.config.model_copy(update={"train": train_section(ctx, kind)})
        config = sh.join(ctx.out, "pipeline-state", f"train-{kind}.yaml")
        Path(config).parent.mkdir(parents=True, exist_ok=True)
        Path(config).write_text(f"# written by glide run from {ctx.config_file} (run.train.{kind} applied)\n"
                                + to_yaml(resolved))
        init = [] if kind not in TRAIN_INIT or train_section(ctx, kind).init else ["--init", reads[TRAIN_INIT[kind]]]
        glide("train", TRAINED_KIND.get(kind, kind), "--data", reads[TRAIN_DATA.get(kind, PAIRS)], *init,
              "-o", writes[model(kind)], "--config", config)
    return run


# --------------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------------
def _sample_upsampler(ctx: Context, reads: dict) -> Optional[str]:
    return reads.get(model("upsampler")) or ctx.run.sample.upsampler


def _run_sample(ctx: Context, reads: dict, writes: dict) -> None:
    s = ctx.run.sample
    prompts = Path(ctx.out) / "prompts.txt"
    prompts.write_text("\n".join(s.prompts) + "\n")
    common = ["--prompts", prompts, "--per-prompt", s.per_prompt, "--guidance", s.guidance, "--steps", s.steps,
              "--seed", s.seed]
    upsampler = _sample_upsampler(ctx, reads)
    consistency = [] if s.low_res_consistency else ["--no-low-res-consistency"]
    # with an upsampler, glide sample also keeps the base's images it started from (OUT/samples/base)
    glide("sample", "--model", reads[model("base")], *(["--upsampler", upsampler, *consistency] if upsampler else []),
          *common, "-o", writes[SAMPLES])


# --------------------------------------------------------------------------------------------------
# evaluate (`glide evaluate` writes REPORT/index.html itself: no separate report stage)
# --------------------------------------------------------------------------------------------------
def _held_out_needed(ctx: Context) -> bool:
    e = ctx.run.evaluate
    return e is not None and not (e.prompts and e.reference)


def _evaluate_writes(ctx: Context) -> dict:
    writes = {EVALUATION: ctx.local("evaluation")}
    if _held_out_needed(ctx):
        writes[HELD_OUT] = ctx.local("evaluation-world")
    return writes


def _evaluate_identity(ctx: Context) -> dict:
    if ctx.run.evaluate is None:
        return {"evaluate": None}
    identity = {"evaluate": _without(ctx.run.evaluate, "workers")}
    if _held_out_needed(ctx):  # the held-out world is the sample_world section with its own seed and size
        identity["sample_world"] = _without(ctx.config.sample_world, "host", "port")
    return identity


def _evaluate_outside_upsampler(ctx: Context) -> Optional[str]:
    """The upsampler checkpoint from outside the pipeline the evaluation uses (None: the trained one or none)."""
    e = ctx.run.evaluate
    if not e.upsample:
        return None
    return e.upsampler or (ctx.run.sample.upsampler if ctx.run.sample else None)


def _evaluate_upsampler(ctx: Context, reads: dict) -> Optional[str]:
    e = ctx.run.evaluate
    if not e.upsample:
        return None
    return e.upsampler or reads.get(model("upsampler")) or _evaluate_outside_upsampler(ctx)


def _features_path(spec: str) -> Optional[str]:
    """The weights a KIND:PATH feature spec names (clip:ARCH=FILE: the file); None for a name without a file."""
    path = spec.split(":", 1)[1] if ":" in spec else spec
    path = path.split("=", 1)[1] if "=" in path else path
    return path if Path(path).exists() else None


def _evaluate_external(ctx: Context) -> dict:
    e = ctx.run.evaluate
    if e is None:
        return {}
    external = {"features": tree_digest(_features_path(e.features)) if _features_path(e.features) else e.features}
    for key in ("scene_classifier", "prompts", "reference", "clip"):
        if getattr(e, key):
            external[key] = tree_digest(getattr(e, key))
    if e.score_clip:
        external["score_clip"] = tree_digest(_features_path(f"clip:{e.score_clip}")) if _features_path(f"clip:{e.score_clip}") \
            else e.score_clip
    upsampler = _evaluate_outside_upsampler(ctx)
    if upsampler:  # digested even when a trained upsampler takes its place, as the sample stage does
        external["upsampler"] = checkpoint_digest(upsampler)
    return external


def _clip_guidance_args(ctx: Context, reads: dict) -> list:
    """--clip-guidance, --clip (run.evaluate.clip, else the train-clip stage's run) and --score-clip."""
    e = ctx.run.evaluate
    args = ["--score-clip", e.score_clip] if e.score_clip else []
    if e.clip_guidance:
        clip = e.clip or reads.get(model("clip"))
        if not clip:
            raise sh.UserError(f"{ctx.config_file}: run.evaluate.clip_guidance needs a noised CLIP: run.evaluate.clip "
                               "or a train-clip stage (run.train.clip)")
        args += ["--clip-guidance", ",".join(f"{g:g}" for g in e.clip_guidance), "--clip", clip]
    return args


def _run_evaluate(ctx: Context, reads: dict, writes: dict) -> None:
    from pipeline.evaluation_demo import caption_accuracy_lines, held_out_world

    e = ctx.run.evaluate
    prompts, reference = e.prompts, e.reference
    if HELD_OUT in writes:
        world, made = held_out_world(ctx.config.sample_world, Path(writes[HELD_OUT]), seed=e.held_out.seed,
                                     images=e.held_out.images, prompts_count=e.samples_per_setting)
        print(f"held-out world: {e.held_out.images} images, seed {e.held_out.seed} -> {world}", flush=True)
        prompts, reference = prompts or made, reference or world / "images"
    upsampler = _evaluate_upsampler(ctx, reads)
    # the report folder is kept between runs: its samples are cached under keys of everything they depend
    # on (weights, prompts, setting, seed), so a rerun samples only what changed (evaluation.sample_cache)
    glide("evaluate", "--model", reads[model("base")], *(["--upsampler", upsampler] if upsampler else []),
          "--prompts", prompts, "--reference", reference, "--guidance", ",".join(f"{g:g}" for g in e.guidance),
          "--features", e.features, *(["--scene-classifier", e.scene_classifier] if e.scene_classifier else []),
          "--samples-per-setting", e.samples_per_setting, "--batch-size", e.batch_size, "--steps", e.steps,
          "--upsampler-steps", e.upsampler_steps,
          *([] if e.low_res_consistency else ["--no-low-res-consistency"]), "--seed", e.seed, *(["--workers", e.workers] if e.workers else []),
          *_clip_guidance_args(ctx, reads), "-o", writes[EVALUATION])
    for line in caption_accuracy_lines(Path(writes[EVALUATION])):
        print(f"  {line}", flush=True)


# --------------------------------------------------------------------------------------------------
# claims (pipeline.run.claims_stage)
# --------------------------------------------------------------------------------------------------
def _claims_identity(ctx: Context) -> dict:
    if ctx.run.claims is None:
        return {"claims": None}
    identity = {"claims": ctx.run.claims.model_dump(mode="json")}
    # the detector's worlds and the inpainting scenes are the sample_world section with other seeds
    if not ctx.run.claims.detector.path or "inpaint" in ctx.run.train:
        identity["sample_world"] = _without(ctx.config.sample_world, "host", "port")
    return identity


def _claims_upsamplers(ctx: Context) -> tuple[Optional[str], Optional[str]]:
    """(run.evaluate.upsampler, run.sample.upsampler): the claims stage's upsamplers from outside the pipeline."""
    e, s = ctx.run.evaluate, ctx.run.sample
    return (e.upsampler if e else None), (s.upsampler if s else None)


def _claims_upsampler(ctx: Context, reads: dict) -> Optional[str]:
    """The evaluate stage's upsampler, else the trained one, else the sample stage's."""
    if not ctx.run.claims.upsample:
        return None
    evaluate, sample = _claims_upsamplers(ctx)
    return evaluate or reads.get(model("upsampler")) or sample


def _claims_external(ctx: Context) -> dict:
    if ctx.run.claims is None:
        return {}
    external = {}
    if ctx.run.claims.detector.path:
        external["detector"] = tree_digest(ctx.run.claims.detector.path)
    evaluate, sample = _claims_upsamplers(ctx)
    if ctx.run.claims.upsample and (evaluate or sample):
        external["upsampler"] = checkpoint_digest(evaluate or sample)
    return external


def _run_claims(ctx: Context, reads: dict, writes: dict) -> None:
    from pipeline.run.claims_stage import run_claims

    run_claims(ctx, reads, writes, _claims_upsampler(ctx, reads))


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline. `reads`: artefact kinds from earlier stages (`optional_reads`: used
    when an earlier stage writes them); `identity`: the resolved config that decides the output;
    `external`: digests of inputs from outside the pipeline; `fresh_on_change`: remove the old output
    before a rerun with another fingerprint (a training run would otherwise resume at its last step)."""

    name: str
    in_default: Callable[[Context], bool]
    reads: tuple[str, ...]
    writes: Callable[[Context], dict]
    identity: Callable[[Context], dict]
    run: Callable[[Context, dict, dict], None]
    external: Callable[[Context], dict] = field(default=lambda ctx: {})
    optional_reads: tuple[str, ...] = ()
    fresh_on_change: bool = False


STAGES: list[Stage] = [
    Stage("ingest", lambda ctx: True, (), _ingest_writes, _ingest_identity, _run_ingest, _ingest_external),
    Stage("embed", lambda ctx: True, (PAIRS,), lambda ctx: {EMBEDDINGS: ctx.dataset("dataset-emb")},
          lambda ctx: {"embed": _without(ctx.config.embed, "batch_size", "workers", "cpus_per_worker",
                                         "shard_retries")},
          _run_embed, lambda ctx: {"clip": clip_digest(ctx.config.embed.clip)}),
    Stage("label", lambda ctx: not ctx.run.labels and _world_mode(ctx), (EMBEDDINGS, WORLD), _label_writes, _label_identity, _run_label,
          # without run.fit_config the fits read this file's fit_filters section, already in the identity
          lambda ctx: {"fit_config": tree_digest(ctx.run.fit_config)} if ctx.run.fit_config else {}),
    Stage("fit-filters", lambda ctx: bool(ctx.run.labels), (EMBEDDINGS,), lambda ctx: {FILTERS: ctx.dataset("filters")},
          lambda ctx: {"fit_filters": ctx.config.fit_filters.model_dump(mode="json")}, _run_fit_filters,
          lambda ctx: {"labels": labels_digest(ctx.run.labels)} if ctx.run.labels else {}, fresh_on_change=True),
    Stage("filter", lambda ctx: bool(ctx.run.labels), (EMBEDDINGS, FILTERS),
          lambda ctx: {PAIRS: ctx.dataset("dataset-filtered")},
          lambda ctx: {"filter": _without(ctx.config.filter, "workers", "shard_retries", "kernel_memory_mb")},
          _run_filter),
    *[Stage(f"train-{kind}", (lambda k: lambda ctx: k in ctx.run.train)(kind),
            (TRAIN_DATA.get(kind, PAIRS),) + ((TRAIN_INIT[kind],) if kind in TRAIN_INIT else ()),
            (lambda k: lambda ctx: {model(k): ctx.local("runs", k)})(kind), _train_identity(kind), _run_train(kind),
            _train_external(kind), fresh_on_change=True)
      for kind in ("base", "upsampler", "base-unfiltered", "clip", "inpaint")],
    Stage("sample", lambda ctx: ctx.run.sample is not None, (model("base"),), lambda ctx: {SAMPLES: ctx.local("samples")},
          lambda ctx: {"sample": ctx.run.sample.model_dump(mode="json") if ctx.run.sample else None}, _run_sample,
          lambda ctx: {"upsampler": checkpoint_digest(ctx.run.sample.upsampler)}
          if ctx.run.sample and ctx.run.sample.upsampler else {},
          optional_reads=(model("upsampler"),), fresh_on_change=True),
    # not fresh_on_change: the report's sample cache keeps what is still valid (see _run_evaluate)
    Stage("evaluate", lambda ctx: ctx.run.evaluate is not None, (model("base"),), _evaluate_writes,
          _evaluate_identity, _run_evaluate, _evaluate_external, optional_reads=(model("upsampler"), model("clip"))),
    Stage("claims", lambda ctx: ctx.run.claims is not None, (model("base"),), lambda ctx: {CLAIMS: ctx.local("claims")},
          _claims_identity, _run_claims, _claims_external,
          optional_reads=(model("base-unfiltered"), model("upsampler"), model("inpaint"), EVALUATION, FILTERS),
          fresh_on_change=True),
]
STAGE_NAMES = [s.name for s in STAGES]


def identity_of(stage: Stage, ctx: Context) -> dict:
    return canonical(stage.identity(ctx))
