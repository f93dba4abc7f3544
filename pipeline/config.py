"""Pipeline config: one YAML file, one section per stage, validated into typed objects.

Unknown keys, wrong types and missing files are `UserError`s that name the key
and the file. CLI flags override config values through `override()`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from shards import UserError


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Ray resources a stage sets through its own options (cpus_per_worker, GPUs "auto"), never by placement.
_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


class StagePlacement(Section):
    """Where one stage's Ray tasks or actors may run on a cluster: extra resources and node labels."""

    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each task or actor of the stage asks for, e.g. "
                                          "{crawl: 1}: only nodes that offer them (`ray start --resources`, a "
                                          "node type's `resources`) run the stage")
    node_labels: dict[str, str] = Field(
        default_factory=dict, description="Ray node labels the stage's tasks or actors need, e.g. {node-pool: gpu} "
                                          "(a Ray label selector: '!v' excludes v, 'in(a,b)' matches either)")

    @field_validator("resources")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in _BUILTIN_RESOURCES:
                raise ValueError(f"'{name}' is set by the stage's own options, not by placement; name custom "
                                 f"resources here")
            if amount <= 0:
                raise ValueError(f"resource '{name}' must be positive, got {amount}")
        return value


class PlacementConfig(Section):
    """Per stage: the resources and node labels its Ray work asks for. Empty (the default) runs anywhere,
    which is all the embedded Ray needs; a cluster uses it to keep crawls on CPU nodes and models on GPU nodes.
    Scheduling never changes what a stage computes, so it is not part of any stage's config digest."""

    ingest: StagePlacement = Field(default_factory=StagePlacement, description="crawl tasks (glide ingest)")
    embed: StagePlacement = Field(default_factory=StagePlacement, description="CLIP actors (glide embed)")
    filter: StagePlacement = Field(default_factory=StagePlacement, description="filter actors (glide filter)")
    train: StagePlacement = Field(default_factory=StagePlacement,
                                  description="Ray Train workers (glide train): resources only")

    @model_validator(mode="after")
    def _train_places_by_resources(self) -> "PlacementConfig":
        if self.train.node_labels:
            raise ValueError("train.node_labels: Ray Train places its workers by resources only; give "
                             "train.resources (a custom resource the training nodes offer)")
        return self


class RayConfig(Section):
    address: Optional[str] = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); None starts an embedded local Ray"
    )
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs for the embedded Ray (default: all)")
    dashboard: bool = Field(False, description="start the dashboard of the embedded Ray (bound to 127.0.0.1)")
    log_to_driver: bool = Field(False, description="show Ray worker logs in this terminal")
    placement: PlacementConfig = Field(default_factory=PlacementConfig,
                                       description="per stage: custom resources / node labels its Ray work needs")


class SampleWorldConfig(Section):
    count: int = Field(2000, ge=1, description="number of good images in the world")
    seed: int = Field(0, description="random seed; the world is a pure function of it")
    image_size: int = Field(128, ge=16, le=4096, description="side of the generated images (pixels)")
    max_shapes: int = Field(3, ge=1, le=4, description="most shapes per scene (1: one big shape per image)")
    people_fraction: float = Field(0.1, ge=0, le=1, description="fraction of images with a stick figure")
    violence_fraction: float = Field(0.1, ge=0, le=1, description="fraction with a blade glyph")
    hate_fraction: float = Field(0.1, ge=0, le=1, description="fraction with the marker glyph")
    caption_mentions_fraction: float = Field(
        0.5, ge=0, le=1, description="chance that a caption mentions a category glyph present in its image"
    )
    false_mention_fraction: float = Field(
        0.02, ge=0, le=1, description="chance that a caption mentions a category whose glyph is not there"
    )
    distractor_fraction: float = Field(
        0.15, ge=0, le=1, description="fraction of images with near-miss look-alikes (fork, pen, snowman, plus sign...)"
    )
    png_fraction: float = Field(0.1, ge=0, le=1, description="fraction of images stored as PNG instead of JPEG")
    standin_scale: float = Field(
        1.0, ge=0.5, le=3, description="size of the stand-ins and near misses, times the default (bigger for worlds "
        "trained at a few pixels, where a default stand-in is a smudge)"
    )
    bad_rows: bool = Field(True, description="add 404s, a non-image, a truncated JPEG, an oversized image, a slow URL")
    host: str = Field("127.0.0.1", description="address the sample-world server binds to")
    port: int = Field(0, ge=0, le=65535, description="port of the server (0: any free port)")
    slow_seconds: float = Field(
        15.0, gt=0, le=600, description="delay of the slow URL (longer than a short ingest timeout)"
    )
    oversized_side: int = Field(
        20000, ge=1000, le=65535, description="side of the oversized (decompression-bomb) PNG"
    )


class IngestConfig(Section):
    url_col: str = Field("url", description="column holding the image URL")
    caption_col: str = Field("caption", description="column holding the caption")
    input_format: Optional[Literal["parquet", "csv", "tsv", "jsonl"]] = Field(
        None, description="format of the URL lists (default: from the file extension)"
    )
    image_size: int = Field(256, ge=8, le=8192, description="output size (pixels) of the smaller side")
    resize_mode: Literal["keep_ratio", "center_crop", "no"] = Field(
        "keep_ratio", description="keep_ratio: smaller side to image_size; center_crop: square crop; no: as downloaded"
    )
    resize_only_if_bigger: bool = Field(False, description="never upscale small images")
    output_format: Literal["jpeg", "png", "webp"] = Field("jpeg", description="encoding of stored images")
    encode_quality: int = Field(95, ge=1, le=100, description="JPEG/WebP quality")
    shard_size: int = Field(10000, ge=1, description="pairs per shard")
    threads: int = Field(32, ge=1, description="download threads inside each Ray task")
    timeout: float = Field(10.0, gt=0, description="total seconds allowed per request")
    retries: int = Field(
        2, ge=0, description="retries per URL of transient failures (timeout, 5xx, 429, connection reset)"
    )
    retry_backoff: float = Field(
        1.0, ge=0, le=60, description="seconds before the first retry; doubles each retry, with jitter"
    )
    shard_retries: int = Field(3, ge=0, description="retries of a failed shard task before the stage gives up")
    max_image_bytes: int = Field(20_000_000, ge=1, description="largest download accepted (bytes)")
    max_pixels: int = Field(89_478_485, ge=1, description="decompression-bomb limit (pixels of the source image)")
    min_image_size: int = Field(0, ge=0, description="reject images whose smaller side is below this")
    allow_private_networks: bool = Field(
        False, description="allow hosts on private, loopback, link-local or reserved addresses"
    )
    disallowed_header_directives: list[str] = Field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"],
        description="X-Robots-Tag directives that opt an image out (img2dataset's default)",
    )
    user_agent_token: Optional[str] = Field("glide-pipeline", description="token added to the User-Agent")


class EmbedConfig(Section):
    clip: str = Field(
        "ViT-B-16", description="CLIP: ARCH=WEIGHTS_FILE (an open_clip architecture or model config .json with a local "
                                "weights file; OpenAI weights need ARCH-quickgelu) or a clean CLIP checkpoint/run "
                                "folder trained here (glide train clip --clip-mode clean)")
    batch_size: int = Field(32, ge=1, description="pairs per batch (three crops each): decoded ahead together; one "
                                                  "forward pass on a GPU, cache-sized parts of it on a CPU")
    workers: Optional[int] = Field(None, ge=1, description="most Ray actors, each holding the model (default: "
                                                           "as many as the CPUs or GPUs allow)")
    cpus_per_worker: Optional[float] = Field(
        None, gt=0, description="CPUs per actor: its torch threads on CPU and its decoding threads (default: 1 "
                                "on a CPU cluster; the CPUs per GPU, at most 8, on a GPU cluster)")
    shard_retries: int = Field(3, ge=0, description="retries of a failed shard before the stage gives up")


class FitFiltersConfig(Section):
    filters: Optional[list[str]] = Field(None, description="filters to fit (default: every filter the labels name)")
    target_fnr: float = Field(0.01, gt=0, lt=0.5, description="false-negative rate each filter must stay under, "
                                                              "at 95% confidence on its held-out positives")
    held_out: int = Field(1024, ge=2, description="labelled pairs held out per filter (stratified; at most half) "
                                                  "to tune and check the threshold")
    cv_folds: int = Field(3, ge=2, le=20, description="stratified folds of the C x gamma grid search")
    c_values: list[PositiveFloat] = Field([1.0, 10.0, 100.0], min_length=1, description="SVM C values searched")
    gamma_scales: list[PositiveFloat] = Field(
        [0.5, 2.0, 8.0], min_length=1, description="RBF gamma values searched, as multiples of 1 / (D * var(X))")
    seed: int = Field(0, description="seed of the held-out split and the folds")
    report_examples: int = Field(8, ge=0, le=64, description="report examples per side of each boundary")
    kernel_memory_mb: int = Field(256, ge=1, description="working memory of the scoring kernel per chunk")


class FilterConfig(Section):
    kernel_memory_mb: int = Field(256, ge=1, description="working memory of the scoring kernel per chunk")
    report_examples: int = Field(8, ge=0, le=64, description="report examples per side of each boundary")
    workers: Optional[int] = Field(None, ge=1, description="most Ray actors, each holding the filters")
    shard_retries: int = Field(3, ge=0, description="retries of a failed shard before the stage gives up")


class LabelConfig(Section):
    db: Optional[str] = Field(None, description="labels database: a SQLite file path or an SQLAlchemy URL "
                                                "(postgresql://...); created and migrated on first use")
    count: int = Field(100, ge=1, description="pairs each new queue takes (-n)")
    boundary: Literal["svm", "threshold"] = Field(
        "svm", description="label next: pairs nearest the SVM's own boundary (score 0) or its tuned removal threshold")
    busy_timeout_s: float = Field(30.0, gt=0, description="how long a write waits for SQLite's write lock")
    kernel_memory_mb: int = Field(256, ge=1, description="label next: working memory of the scoring kernel per chunk")


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="address `glide serve` binds to (127.0.0.1: this machine only)")
    port: int = Field(8765, ge=0, le=65535, description="port of the web app (0: any free port, printed)")
    url: Optional[str] = Field(None, description="the app's address as raters reach it, for the links "
                                                 "`glide serve --admin` and `glide label raters add` print "
                                                 "(default http://HOST:PORT)")
    dataset: Optional[str] = Field(None, description="embeddings dataset the admin page queues pairs from (its "
                                                     "images and captions are shown; queues name their own too)")
    filters: Optional[str] = Field(None, description="current filters folder (glide fit-filters): the admin "
                                                     "page's active-learning queues pick pairs near its boundary")
    lease_s: float = Field(600.0, gt=0, description="seconds an item stays with the rater it was handed to")
    gold_every: int = Field(10, ge=0, description="one gold item (known answer) in this many pairs shown; 0: none")


from training.trainer.config import TrainConfig  # noqa: E402  (the `train` section; pydantic only)
from pipeline.run.config import RunConfig  # noqa: E402  (the `run` section of `glide run`)


class PipelineConfig(Section):
    """The whole pipeline config; every section optional with defaults."""

    ray: RayConfig = Field(default_factory=RayConfig)
    sample_world: SampleWorldConfig = Field(default_factory=SampleWorldConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    fit_filters: FitFiltersConfig = Field(default_factory=FitFiltersConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    quick: dict[str, Any] = Field(default_factory=dict, description="overrides `glide run --quick` lays over the "
                                  "other sections (same shape, merged key by key): the reduced run of an experiment")


def merge_sections(base: dict, over: dict) -> dict:
    """BASE with OVER laid over it key by key (nested mappings merged, anything else replaced)."""
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (merge_sections(merged[key], value)
                       if isinstance(value, dict) and isinstance(merged.get(key), dict) else value)
    return merged


def _validation_error(err: ValidationError, source: str) -> UserError:
    from training.config_errors import user_error  # the one wording of config errors (model configs too)

    return user_error(err, source, noun="config key")


def load_config(path: str | os.PathLike | None, quick: bool = False) -> PipelineConfig:
    """Read and validate a pipeline config; None gives the defaults. QUICK: its `quick` section laid over
    the rest (the reduced run; the result has no `quick` section). A `quick` section is validated
    merged either way, so a wrong key in it is an error before any run, quick or not."""
    if path is None:
        return PipelineConfig()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: a pipeline config must be a mapping of sections, got {type(data).__name__}")
    over = data.get("quick") or {}
    if not isinstance(over, dict):
        raise UserError(f"{p}: quick: must be a mapping of sections to override, got {type(over).__name__}")
    if quick and not over:
        raise UserError(f"{p}: --quick: this config has no quick section (the overrides of its reduced run)")
    try:
        full = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e, str(p)) from None
    if not over:
        return full
    reduced = {k: v for k, v in merge_sections(data, over).items() if k != "quick"}
    try:
        reduced_config = PipelineConfig.model_validate(reduced)
    except ValidationError as e:
        raise _validation_error(e, f"{p} (its quick section)") from None
    return reduced_config if quick else full


def override(section: Section, values: dict[str, Any], source: str = "command line") -> Section:
    """Apply CLI flag values (None means 'not given') on top of a config section."""
    for key, value in values.items():
        if value is None:
            continue
        if key not in type(section).model_fields:
            raise UserError(f"{source}: unknown config key '{key}'")
        try:
            setattr(section, key, value)
        except ValidationError as e:
            raise _validation_error(e, source) from None
    return section


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
