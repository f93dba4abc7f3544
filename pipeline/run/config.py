"""The `run` section of a pipeline config: what `glide run` runs and where its outputs go.

Its own pydantic base (not pipeline.config.Section): pipeline.config imports this module to add the
section, so importing back would be circular. Same rules: unknown keys and wrong types are errors.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator,
                      model_validator)

from pipeline.demo_filters import DEMO_PLAN
from pipeline.evaluation_demo import HELD_OUT_SEED, REFERENCE_IMAGES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LabelPlanConfig(_Section):
    """The `label` stage's plan (pipeline.demo_filters.LabelPlan): labels answered from the sample
    world's ground truth, active-learning rounds, then the final fit and filter. Defaults: the demo's."""

    random: dict[str, PositiveInt] = Field(dict(DEMO_PLAN.random), description="filter -> random pairs labelled")
    searches: dict[str, list[str]] = Field({k: list(v) for k, v in DEMO_PLAN.searches.items()},
                                           description="filter -> CLIP text queries for seed positives")
    per_query: PositiveInt = Field(DEMO_PLAN.per_query, description="pairs queued per query")
    rounds: int = Field(DEMO_PLAN.rounds, ge=0, description="active-learning rounds")
    per_round: PositiveInt = Field(DEMO_PLAN.per_round, description="pairs queued per filter per round")
    round_target_fnr: float = Field(DEMO_PLAN.round_target_fnr, gt=0, lt=0.5,
                                    description="target FNR of the provisional fits (they only pick what to label)")
    target_fnr: float = Field(DEMO_PLAN.target_fnr, gt=0, lt=0.5, description="target FNR of the final filters")
    held_out: int = Field(DEMO_PLAN.held_out, ge=2, description="final fit: labelled pairs held out per filter")
    seed: int = Field(DEMO_PLAN.seed, description="seed of the random draws")


class SampleStageConfig(_Section):
    """The `sample` stage: `glide sample` of the pipeline's base (and upsampler) on these captions."""

    prompts: list[str] = Field(min_length=1, description="captions to sample")
    per_prompt: PositiveInt = Field(4, description="images per caption")
    guidance: float = Field(3.0, ge=0, description="classifier-free guidance scale")
    steps: str = Field("100", description="sampling steps (a number or a respacing such as fast27)")
    seed: int = Field(0, description="random seed")
    upsampler: Optional[str] = Field(None, description="upsampler checkpoint, when the pipeline trains none "
                                                       "(default: the train-upsampler stage's run, if any)")
    low_res_consistency: bool = Field(True, description="hold the upsampler to the base image's colours")


class HeldOutWorldConfig(_Section):
    """The evaluate stage's held-out world: the `sample_world` section with another seed, for prompts the
    model never saw and real images for the reference statistics."""

    seed: int = Field(HELD_OUT_SEED, description="its seed (another than sample_world.seed)")
    images: PositiveInt = Field(REFERENCE_IMAGES, description="its images: the reference images, and the captions "
                                                              "the prompts are taken from")


class EvaluateStageConfig(_Section):
    """The `evaluate` stage: `glide evaluate` of the pipeline's base (and upsampler) at each guidance scale,
    into OUT/evaluation (metrics.json, index.html). Its samples are cached there by what they depend on,
    so a rerun samples only what is new (a guidance scale added, another model)."""

    guidance: list[NonNegativeFloat] = Field([1.0, 3.0], min_length=1, description="classifier-free guidance scales")
    samples_per_setting: int = Field(16, ge=2, description="samples per guidance scale")
    batch_size: PositiveInt = Field(8, description="images per sampling call (part of every sample's cache key)")
    steps: str = Field("100", description="base sampling steps (a number or a respacing such as fast27)")
    upsampler_steps: str = Field("fast27", description="upsampler sampling steps")
    low_res_consistency: bool = Field(True, description="hold the upsampler to the base image's colours")
    seed: int = Field(0, description="first noise seed")
    features: str = Field(description="feature network of FID and precision/recall: scene:DIR, clip:MODEL or "
                                      "inception:FILE")
    scene_classifier: Optional[str] = Field(None, description="scene classifier for caption accuracy "
                                                              "(sample-world prompts)")
    prompts: Optional[str] = Field(None, description="prompts file, one caption per line (default: the held-out "
                                                     "world's first samples_per_setting captions)")
    reference: Optional[str] = Field(None, description="folder of real images (default: the held-out world's)")
    held_out: HeldOutWorldConfig = Field(default_factory=HeldOutWorldConfig)
    upsample: bool = Field(True, description="run an upsampler after the base (false: the base alone)")
    upsampler: Optional[str] = Field(None, description="upsampler checkpoint (default: the train-upsampler "
                                                       "stage's run, else run.sample.upsampler)")
    workers: Optional[PositiveInt] = Field(None, description="sampling actors (speed only; default: one per CPU)")
    clip_guidance: list[PositiveFloat] = Field(default_factory=list, description="CLIP guidance scales (each a "
                                                                                  "setting without classifier-free guidance)")
    clip: Optional[str] = Field(None, description="noised CLIP of the CLIP guidance (default: the train-clip stage's run)")
    score_clip: Optional[str] = Field(None, description="CLIP of the CLIP score: a clean CLIP checkpoint or open_clip "
                                                        "ARCH=WEIGHTS (none: no CLIP score)")


class DetectorStageConfig(_Section):
    """The claims stage's stand-in detector (evaluation.standin_detector): trained on a world made from
    the `sample_world` section with `train_seed`, calibrated on one with `holdout_seed`; or `path`, a
    detector `glide train-standin-detector` made."""

    path: Optional[str] = Field(None, description="a trained detector folder (default: train one)")
    train_images: PositiveInt = Field(6000, description="images of its training world")
    holdout_images: PositiveInt = Field(2000, description="images of its calibration world")
    train_seed: int = Field(111, description="seed of its training world")
    holdout_seed: int = Field(222, description="seed of its calibration world")
    steps: PositiveInt = Field(2000, description="training steps (64 images each)")
    input_size: PositiveInt = Field(64, description="side images are resized to (a multiple of 16)")
    blur_size: int = Field(16, ge=0, description="half the training images sample-like: blurred down to this size and back, noised "
                                                 "(the base's resolution; 0: none)")
    max_false_positive: float = Field(0.01, ge=0, lt=1, description="share of the calibration world's clean "
                                                                    "images each threshold may flag")


def _respacing(spec: str) -> str:
    from training.diffusion.respace import space_timesteps

    try:  # the demo's models have 1000 steps; a model with fewer is checked again when it samples
        space_timesteps(1000, spec)
    except ValueError as e:
        raise ValueError(str(e)) from None
    return spec


class FewerStepsConfig(_Section):
    """Claim 5: one `glide evaluate` per sampler at the claims' guidance, on the evaluate stage's prompts,
    reference and features; the first spec of each list is the reference the others are checked against."""

    base: list[str] = Field(["250", "ddim50", "ddim25"], min_length=1,
                            description="base samplers (respacing specs: N is ancestral, ddimN is DDIM)")
    upsampler: list[str] = Field(["250", "fast27"], description="upsampler samplers, on the base's samples "
                                                                 "at the evaluate stage's steps (empty: none)")
    samples: Optional[PositiveInt] = Field(None, description="samples per sampler (default: the evaluate stage's "
                                                             "samples_per_setting)")

    @field_validator("base", "upsampler")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        value = [_respacing(str(v)) for v in value]
        if len(set(value)) != len(value):
            raise ValueError("a sampler is listed twice")
        return value


class InpaintingClaimConfig(_Section):
    """Claim 4: the train-inpaint model (mode finetuned) and the pipeline's base (mode replace) fill the same
    masks: a box over the shape of one-shape scenes from a world of the `sample_world` section with
    `world_seed` (no stand-ins, no near misses), asked for another shape in another colour."""

    images: PositiveInt = Field(32, description="masks (scenes) filled by each model")
    world_seed: int = Field(333, description="seed of the scenes' world")
    steps: str = Field("50", description="base sampling steps of the fills")

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: str) -> str:
        return _respacing(str(value))


class ClaimsStageConfig(_Section):
    """The `claims` stage: the paper's claims measured on this pipeline's models, into OUT/claims
    (claims.json, index.html). Claim 1 reads the evaluate stage's report; claim 3 samples the filtered
    base and the train-base-unfiltered one on prompts asking for each filtered category."""

    per_prompt: PositiveInt = Field(8, description="samples per category prompt and model")
    steps: str = Field("50", description="base sampling steps of the category draws")
    guidance: float = Field(3.0, ge=0, description="classifier-free guidance of the category draws")
    seed: int = Field(0, description="first noise seed (sample j of a prompt: seed + j)")
    upsample: bool = Field(True, description="upsample the draws (the upsampler as the evaluate stage picks it)")
    detector: DetectorStageConfig = Field(default_factory=DetectorStageConfig)
    fewer_steps: Optional[FewerStepsConfig] = Field(default_factory=FewerStepsConfig,
                                                    description="claim 5's samplers (null: not measured)")
    inpainting: InpaintingClaimConfig = Field(default_factory=InpaintingClaimConfig,
                                              description="claim 4's masks (measured when run.train.inpaint is set)")


class RunConfig(_Section):
    """Where `glide run` writes, which stages it runs, and the settings no stage section holds."""

    out: str = Field("pipeline-output", description="local folder: the run's records (pipeline-state/), the "
                                                    "sample world, labels, filters, training runs, samples")
    datasets: Optional[str] = Field(None, description="folder or fsspec URI (s3://bucket/path) of the datasets "
                                                      "(dataset, dataset-emb, dataset-filtered); default: OUT")
    stages: Optional[list[str]] = Field(None, description="stages to run, in pipeline order (default: every "
                                                          "stage whose settings this config gives)")
    lists: list[str] = Field(default_factory=list, description="URL lists to ingest (files or URIs); empty: "
                                                               "generate and serve the sample_world section's world")
    labels: Optional[str] = Field(None, description="labels for fit-filters (CSV/Arrow/Parquet or a SQLite .db); "
                                                    "none: the label stage answers from the world's ground truth")
    label_plan: LabelPlanConfig = Field(default_factory=LabelPlanConfig)
    fit_config: Optional[str] = Field(None, description="label stage: config file of its fits (default: this file)")
    train: dict[Literal["base", "upsampler", "base-unfiltered", "clip", "inpaint"], dict[str, Any]] = Field(
        default_factory=dict, description="kind -> `train` keys that differ for that kind's run (e.g. {base: "
                                          "{init: checkpoints/demo/base, max_steps: 100}}); a kind listed is "
                                          "trained; base-unfiltered: the base's recipe on the unfiltered crawl; "
                                          "clip: a CLIP on the pairs (noised by default: the evaluate stage's CLIP "
                                          "guidance); inpaint: the pipeline's base fine-tuned for inpainting")
    sample: Optional[SampleStageConfig] = Field(None, description="the sample stage (absent: not run)")
    evaluate: Optional[EvaluateStageConfig] = Field(None, description="the evaluate stage (absent: not run)")
    claims: Optional[ClaimsStageConfig] = Field(None, description="the claims stage (absent: not run)")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        from pipeline.run.stages import STAGE_NAMES

        for name in value or []:
            if name not in STAGE_NAMES:
                raise ValueError(f"unknown stage '{name}' (stages: {', '.join(STAGE_NAMES)})")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a stage is listed twice")
        return value

    @model_validator(mode="after")
    def _clip_for_guidance(self):
        if self.evaluate and self.evaluate.clip_guidance and not self.evaluate.clip and "clip" not in self.train:
            raise ValueError("evaluate.clip_guidance needs a noised CLIP: evaluate.clip, or a train-clip stage (train.clip)")
        return self
