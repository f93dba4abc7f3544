"""The sweep's samples on disk, cached: a rerun samples only what is missing.

Samples are drawn in CHUNKS of up to `batch_size` images, the unit a worker samples in one call.
Sample j of a setting (0 <= j < N) shows prompt j mod P (P prompts) and lies in chunk j // batch_size,
sampled with the noise seed `seed + chunk number`. The chunks are the same for every setting, so the
same (prompt_index, seed) in two settings is the same prompt from the same starting noise (the one
generator of a call draws the batch's noise in a fixed order: training.sampling.session).

A chunk's key is the sha256 of everything its pixels depend on: the checkpoints' weight digests,
the sampler settings (steps, upsampler steps and temperature), the setting (guidance scales, the
noised CLIP's digest), its prompts in order, its seed and the batch size. Its files:

    REPORT/samples/<setting>/<key[:16]>-<k>.png   image k of the chunk
    REPORT/samples/<setting>/<key[:16]>.json      written after its PNGs: marks the chunk as done

so a changed model, setting or prompt gives new keys (and new samples), while adding a guidance
scale, or running again after a crash, samples only the chunks whose marker is missing. Files of
settings left out of a run stay: running them again later finds them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

import shards as sh
from evaluation.sweep_settings import Setting

SAMPLES_DIR = "samples"
INDEX_FILE = "samples/index.parquet"


def checkpoint_digest(path: str) -> dict:
    """{"path", "sha256"} of a checkpoint: the sha256 of its weight files' digests (its config.json
    records them), so it names the exact weights without reading them."""
    from training.checkpoint import resolve_checkpoint_dir

    folder = resolve_checkpoint_dir(path)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise sh.UserError(f"{path}: unreadable checkpoint config.json ({e})") from None
    files = config.get("files") or {}
    if not files:
        raise sh.UserError(f"{folder}/config.json: records no weight files")
    text = json.dumps({name: info.get("sha256") for name, info in sorted(files.items())}, sort_keys=True)
    return {"path": str(path), "folder": str(folder), "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "step": config.get("step"), "kind": config.get("kind")}


@dataclass(frozen=True)
class Chunk:
    setting: Setting
    number: int
    prompt_indices: tuple[int, ...]
    prompts: tuple[str, ...]
    seed: int
    key: str

    @property
    def folder(self) -> str:
        return f"{SAMPLES_DIR}/{self.setting.name}"

    def png(self, k: int) -> str:
        """Path of image k, relative to the report folder."""
        return f"{self.folder}/{self.key[:16]}-{k}.png"

    @property
    def marker(self) -> str:
        return f"{self.folder}/{self.key[:16]}.json"

    def is_done(self, report: Path) -> bool:
        return (report / self.marker).is_file() and all((report / self.png(k)).is_file()
                                                        for k in range(len(self.prompts)))


def plan_chunks(settings: Sequence[Setting], prompts: Sequence[str], samples_per_setting: int, batch_size: int,
                seed: int, identity: dict) -> list[Chunk]:
    """Every chunk of every setting (see the module doc). identity: what the pixels depend on
    besides the setting, prompts and seed (checkpoint digests, sampler settings)."""
    chunks = []
    for setting in settings:
        mine = identity
        if setting.clip_guidance is None and identity.get("clip") is not None:
            # the noised CLIP only touches CLIP-guided pixels: adding --clip keeps the other settings cached
            mine = {**identity, "clip": None}
        for number, start in enumerate(range(0, samples_per_setting, batch_size)):
            indices = tuple(j % len(prompts) for j in range(start, min(start + batch_size, samples_per_setting)))
            texts = tuple(prompts[i] for i in indices)
            what = {"identity": mine, "setting": setting.to_json(), "prompts": texts, "seed": seed + number,
                    "batch_size": batch_size}
            key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
            chunks.append(Chunk(setting, number, indices, texts, seed + number, key))
    return chunks


def write_chunk(report: Path, chunk: Chunk, images: np.ndarray, seconds: float) -> None:
    """The chunk's PNGs, then its marker (atomic writes: a killed run leaves no half file)."""
    import io

    from PIL import Image

    (report / chunk.folder).mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        sh.write_bytes_atomic(str(report / chunk.png(k)), buffer.getvalue())
    sh.write_json_atomic(str(report / chunk.marker), {
        "key": chunk.key, "setting": chunk.setting.name, "seed": chunk.seed, "prompts": list(chunk.prompts),
        "prompt_indices": list(chunk.prompt_indices), "seconds": round(seconds, 2),
        "files": [chunk.png(k) for k in range(len(chunk.prompts))]})


def index_table(chunks: Sequence[Chunk]):
    """REPORT/samples/index.parquet's rows (the contract in docs/evaluation.md): setting, prompt_index
    (int32), prompt, seed (int64), path (relative PNG path); one row per sample."""
    import pyarrow as pa

    rows = [(c.setting.name, i, p, c.seed, c.png(k)) for c in chunks
            for k, (i, p) in enumerate(zip(c.prompt_indices, c.prompts))]
    schema = pa.schema([("setting", pa.string()), ("prompt_index", pa.int32()), ("prompt", pa.string()),
                        ("seed", pa.int64()), ("path", pa.string())])
    return pa.Table.from_arrays([pa.array([r[i] for r in rows], type=schema.field(i).type) for i in range(5)],
                                schema=schema)


def write_index(report: Path, chunks: Sequence[Chunk]) -> Path:
    import pyarrow.parquet as pq

    path = report / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with sh.atomic_open(str(path)) as f:
        pq.write_table(index_table(chunks), f)
    return path


def read_index(report: Path):
    import pyarrow.parquet as pq

    path = Path(report) / INDEX_FILE
    if not path.is_file():
        raise sh.UserError(f"{report}: not an evaluation report (no {INDEX_FILE}); run `glide evaluate -o {report}`")
    return pq.read_table(path)

