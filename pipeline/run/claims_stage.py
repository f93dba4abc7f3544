"""The `claims` stage of `glide run`: the paper's claims measured on the pipeline's own models, into
OUT/claims (claims.json, index.html; evaluation.claims_page).

    1  guidance   from the evaluate stage's report (metrics.json, settings.json): evaluation.claims
    2  CLIP guidance  from the same report's CLIP-guided settings (run.evaluate.clip_guidance: the noised
                  CLIP of train-clip guides, run.evaluate.score_clip scores)
    3  filtering  the stand-in detector (trained and calibrated on two worlds of the sample_world
                  section with other seeds, or run.claims.detector.path), then the same category
                  prompts sampled from the filtered base (train-base) and the unfiltered one
                  (train-base-unfiltered), counted (evaluation.category_draws); the filters' fit
                  figures beside them

    4  inpainting the train-inpaint model (mode finetuned) and the base (mode replace) fill the same boxes over
                  the shapes of one-shape scenes (run.claims.inpainting), asked for another shape:
                  the seam at the box's edge and the caption accuracy inside (evaluation.inpainting)
    5  fewer steps  one `glide evaluate` per sampler (run.claims.fewer_steps: 250-step ancestral, DDIM 50
                  and 25 for the base; 250 steps and fast27 for the upsampler) at the claims' guidance on
                  the evaluate stage's prompts, reference and features, into OUT/claims/fewer-steps/

A claim whose inputs the pipeline lacks (no evaluate stage, no unfiltered base) is listed as not
measured, with why.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import shards as sh



def _detector(ctx, out: Path):
    """The stand-in detector: run.claims.detector.path, or trained here on two fresh worlds."""
    from evaluation.standin_detector import StandinDetector, train_standin_detector
    from pipeline.sample_world import generate_world

    d = ctx.run.claims.detector
    if d.path:
        return StandinDetector.load(d.path)
    world = ctx.config.sample_world
    train, holdout = out / "detector-worlds" / "train", out / "detector-worlds" / "holdout"
    generate_world(world.model_copy(update={"seed": d.train_seed, "count": d.train_images}), train)
    generate_world(world.model_copy(update={"seed": d.holdout_seed, "count": d.holdout_images}), holdout)
    print(f"claims: training the stand-in detector on {d.train_images} images (seed {d.train_seed}), "
          f"{d.steps} steps", flush=True)
    detector = train_standin_detector(train, steps=d.steps, input_size=d.input_size, blur_size=d.blur_size,
                                      log=lambda line: print(f"  detector {line}", flush=True))
    for name, c in detector.calibrate(holdout, d.max_false_positive).items():
        print(f"  detector {name}: detects {100 * c['true_positive_rate']:.1f}% of {c['positives']} with it, "
              f"flags {100 * c['false_positive_rate']:.1f}% of {c['negatives']} without", flush=True)
    detector.save(out / "detector")
    return detector


def _save_draws(images: dict, folder: Path, out: Path) -> dict[str, list[str]]:
    """PNGs of each category's draws under FOLDER; their paths relative to OUT."""
    from PIL import Image

    paths = {}
    for category, batch in images.items():
        (folder / category).mkdir(parents=True, exist_ok=True)
        paths[category] = []
        for i, image in enumerate(batch):
            path = folder / category / f"{i:04d}.png"
            Image.fromarray(image).save(path)
            paths[category].append(str(path.relative_to(out)))
    return paths


def _guidance_samples(evaluation: Path, settings: dict, out: Path) -> dict:
    """Claim 1's grids: the evaluate report's first samples of each setting (the same prompts and seeds in
    each), copied under OUT/guidance-samples so the claims page stands alone."""
    import shutil

    from evaluation.report_page import grid_rows
    from evaluation.sample_cache import read_index

    index = read_index(evaluation)
    found = {"settings": {}, "prompts": []}
    for name, rows in grid_rows(index, list(settings)).items():
        if not rows:
            continue
        folder = out / "guidance-samples" / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, row in enumerate(rows):
            target = folder / f"{i:04d}.png"
            shutil.copyfile(evaluation / row["path"], target)
            paths.append(str(target.relative_to(out)))
        found["settings"][name] = paths
        found["prompts"] = found["prompts"] or [{"prompt": r["prompt"], "seed": r["seed"]} for r in rows]
    return found


def _filters_fit(filters: str | None) -> dict:
    """{filter: its fit figures} from a fit-filters folder (nothing without one)."""
    if not filters:
        return {}
    from filtering.filter_files import load_filters

    return {f.name: dict(f.info) for f in load_filters(filters).filters}


def _fewer_steps(ctx, base: str, evaluation: Path, out: Path, upsampler: str | None) -> list[dict]:
    """Claim 5's evaluations, one report per sampler under OUT/fewer-steps; their rows for
    evaluation.claims.fewer_steps_claim."""
    from pipeline.run.stages import glide
    from training.sampling.session import SampleSettings

    c, e = ctx.run.claims, ctx.run.evaluate
    fs = c.fewer_steps
    lineage = json.loads((evaluation / "lineage.json").read_text())
    prompts, reference = lineage["prompts"]["path"], lineage["reference"]["folder"]
    samples = fs.samples or e.samples_per_setting
    plan = [("base", spec, e.upsampler_steps) for spec in fs.base]
    if upsampler:
        plan += [("upsampler", e.steps, spec) for spec in fs.upsampler]
    runs = []
    for stage, base_steps, upsampler_steps in plan:
        spec = base_steps if stage == "base" else upsampler_steps
        report = out / "fewer-steps" / f"{stage}-{spec}"
        glide("evaluate", "--model", base, *(["--upsampler", upsampler, "--upsampler-steps", upsampler_steps]
                                             if upsampler else []),
              "--prompts", prompts, "--reference", reference, "--guidance", f"{c.guidance:g}", "--features", e.features,
              *(["--scene-classifier", e.scene_classifier] if e.scene_classifier else []),
              "--samples-per-setting", samples, "--batch-size", e.batch_size, "--steps", base_steps,
              *([] if e.low_res_consistency else ["--no-low-res-consistency"]), "--seed", e.seed,
              *(["--workers", e.workers] if e.workers else []), "-o", report)
        metrics = json.loads((report / "metrics.json").read_text())["settings"]
        done = json.loads((report / "lineage.json").read_text())
        sampler = SampleSettings(steps=spec).method if stage == "base" else "ddpm"
        runs.append({"stage": stage, "steps": spec, "sampler": sampler, "metrics": next(iter(metrics.values())),
                     "report": str(report.relative_to(out)),
                     "seconds_per_sample": round(done["sampling_seconds"] / done["sampled"], 3) if done["sampled"] else None})
    return runs


def _inpainting(ctx, base: str, inpaint: str, out: Path, upsampler: str | None) -> dict:
    """Claim 4's fills: both models on the same masks, prompts and seeds; their PNGs under OUT/inpainting."""
    import numpy as np
    from PIL import Image

    from evaluation.inpainting import inpainting_table
    from evaluation.scene_classifier import SceneClassifier
    from pipeline.inpainting_tasks import inpainting_tasks
    from pipeline.sample_world import generate_world
    from training.sampling.images import load_image, to_uint8
    from training.sampling.session import SampleSettings, SamplingSession, SessionConfig

    c = ctx.run.claims
    p = c.inpainting
    world = out / "inpainting" / "world"
    generate_world(ctx.config.sample_world.model_copy(update={
        "seed": p.world_seed, "count": p.images, "max_shapes": 1, "people_fraction": 0.0, "violence_fraction": 0.0,
        "hate_fraction": 0.0, "distractor_fraction": 0.0, "false_mention_fraction": 0.0, "bad_rows": False}), world)
    sessions = {"finetuned": SamplingSession(SessionConfig(base=inpaint, upsampler=upsampler), progress=False),
                "replace": SamplingSession(SessionConfig(base=base, upsampler=upsampler), progress=False)}
    size = sessions["replace"].base.model.image_size
    tasks = inpainting_tasks(world, p.images, size, seed=c.seed)
    originals = np.concatenate([to_uint8(load_image(t.image, size)) for t in tasks])
    low, final, paths = {}, {}, {}
    for mode, session in sessions.items():
        print(f"claims: inpainting {len(tasks)} masks with the {mode} {'model' if mode == 'finetuned' else 'mode'} "
              f"({session.config.base})", flush=True)
        lows, finals = [], []
        for i, task in enumerate(tasks):
            settings = SampleSettings(steps=p.steps, guidance=c.guidance, seed=c.seed + i, upsample=bool(upsampler))
            samples = session.inpaint(task.image, task.regenerate, task.prompt, settings, n=1, mode=mode)
            finals.append(samples.uint8())
            lows.append(to_uint8(samples.base_images) if samples.base_images is not None else samples.uint8())
        low[mode], final[mode] = np.concatenate(lows), np.concatenate(finals)
        (out / "inpainting" / mode).mkdir(parents=True, exist_ok=True)
        paths[mode] = []
        for i, image in enumerate(final[mode]):
            Image.fromarray(image).save(out / "inpainting" / mode / f"{i:04d}.png")
            paths[mode].append(f"inpainting/{mode}/{i:04d}.png")
    (out / "inpainting" / "masked").mkdir(parents=True, exist_ok=True)
    paths["masked"] = []
    for i, (image, task) in enumerate(zip(originals, tasks)):
        masked = image.copy()
        masked[task.regenerate] = 128   # the erased box, grey
        side = final["replace"].shape[1]   # shown beside the fills at their size
        Image.fromarray(masked).resize((side, side), Image.NEAREST).save(out / "inpainting" / "masked" / f"{i:04d}.png")
        paths["masked"].append(f"inpainting/masked/{i:04d}.png")
    e = ctx.run.evaluate
    classifier = SceneClassifier.load(e.scene_classifier) if e and e.scene_classifier else None
    table = inpainting_table(tasks, low, final, originals, classifier)
    table["prompts"] = [t.prompt for t in tasks]
    table["images"] = paths
    table["settings"] = {"steps": p.steps, "guidance": c.guidance, "seed": c.seed, "upsampled": bool(upsampler),
                         "scene_classifier": e.scene_classifier if classifier else None}
    return table


def run_claims(ctx, reads: dict, writes: dict, upsampler: str | None) -> None:
    from evaluation.category_draws import category_draw_rates
    from evaluation.claims import (clip_guidance_claim, fewer_steps_claim, filtering_claim, guidance_claim,
                                   inpainting_claim)
    from evaluation.claims_page import CLAIMS_FILE, build_claims_page
    from pipeline.provenance import git_state
    from pipeline.run.stages import CLAIMS, EVALUATION, FILTERS, model
    from training.sampling.session import SampleSettings, SamplingSession, SessionConfig

    c = ctx.run.claims
    out = Path(writes[CLAIMS])
    out.mkdir(parents=True, exist_ok=True)
    data = {"command": "glide " + shlex.join(sys.argv[1:]) if sys.argv[1:] else f"glide run {ctx.config_file}",
            "commit": git_state()["commit"], "claims": {}, "missing": {}, "draws": {}}

    evaluation = reads.get(EVALUATION)
    if evaluation:
        metrics = json.loads((Path(evaluation) / "metrics.json").read_text())
        settings = json.loads((Path(evaluation) / "settings.json").read_text())
        data["evaluation"] = {"metrics": metrics, "settings": settings}
        data["guidance_samples"] = _guidance_samples(Path(evaluation), settings, out)
        try:
            data["claims"]["guidance"] = guidance_claim(metrics, settings)
        except ValueError as e:
            data["missing"]["guidance"] = str(e)
        try:
            data["claims"]["clip_guidance"] = clip_guidance_claim(metrics, settings)
        except ValueError as e:
            data["missing"]["clip_guidance"] = f"{e} (run.evaluate.clip_guidance, with run.train.clip or run.evaluate.clip)"
    else:
        data["missing"]["guidance"] = data["missing"]["clip_guidance"] = "the pipeline has no evaluate stage (run.evaluate)"

    unfiltered = reads.get(model("base-unfiltered"))
    if unfiltered:
        detector = _detector(ctx, out)
        data["detector"] = detector.info.get("calibration")
        settings = SampleSettings(steps=c.steps, guidance=c.guidance, seed=c.seed, upsample=bool(upsampler))
        tables = {}
        for name, base in (("filtered", reads[model("base")]), ("unfiltered", unfiltered)):
            print(f"claims: sampling the {name} base ({base}) on the category prompts, {c.per_prompt} each",
                  flush=True)
            session = SamplingSession(SessionConfig(base=base, upsampler=upsampler), progress=False)
            table = category_draw_rates(session, detector, settings, per_prompt=c.per_prompt, keep_images=True)
            data["draws"][name] = _save_draws(table.pop("images"), out / "draws" / name, out)
            tables[name] = table
            print("  " + ", ".join(f"{cat} {100 * t['rate']:.1f}%" for cat, t in table["categories"].items())
                  + " (ordinary prompts: " + ", ".join(f"{cat} {100 * r:.1f}%" for cat, r in table["baseline"].items())
                  + ")", flush=True)
        data["draw_tables"] = tables
        data["claims"]["filtering"] = filtering_claim(tables["filtered"], tables["unfiltered"],
                                                      _filters_fit(reads.get(FILTERS)))
    else:
        data["missing"]["filtering"] = "the pipeline trains no unfiltered base (run.train.base-unfiltered)"

    inpaint = reads.get(model("inpaint"))
    if inpaint:
        table = _inpainting(ctx, reads[model("base")], inpaint, out, upsampler)
        data["inpainting"] = table
        data["claims"]["inpainting"] = inpainting_claim(table)
    else:
        data["missing"]["inpainting"] = "the pipeline trains no inpainting model (run.train.inpaint)"

    if c.fewer_steps is None:
        data["missing"]["fewer_steps"] = "run.claims.fewer_steps is null"
    elif not evaluation:
        data["missing"]["fewer_steps"] = "the pipeline has no evaluate stage (its prompts, reference and features)"
    else:
        runs = _fewer_steps(ctx, reads[model("base")], Path(evaluation), out, upsampler)
        try:
            data["claims"]["fewer_steps"] = fewer_steps_claim(runs)
        except ValueError as e:
            data["missing"]["fewer_steps"] = str(e)

    sh.write_json_atomic(str(out / CLAIMS_FILE), data)
    page = build_claims_page(out)
    for name, claim in data["claims"].items():
        print(f"claim {name}: {'held' if claim['holds'] else 'did not hold'}; "
              + "; ".join(f"{ch['check']}: {ch['detail']}" for ch in claim["checks"]), flush=True)
    print(f"claims report: {page}", flush=True)
