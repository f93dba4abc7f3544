"""Small evaluation networks on disk without pickle: DIR/model.safetensors plus a JSON file that
names the format, records the weights' sha256 and everything needed to rebuild the network.

    save_network(dir, network, "scene-classifier.json", {"format": F, "version": V, ...})
    meta, state = load_network(dir, "scene-classifier.json", F, V, hint="train one with `glide ...`")

The JSON is written last, so it marks a finished save; a weights file that is not the one the JSON
records is refused (one line naming it).
"""
from __future__ import annotations

import json
from pathlib import Path

import shards as sh

WEIGHTS_FILE = "model.safetensors"


def save_network(directory: str | Path, network, config_file: str, meta: dict) -> Path:
    from safetensors.torch import save as safetensors_bytes

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    sh.write_bytes_atomic(str(out / WEIGHTS_FILE), safetensors_bytes(state))
    sh.write_json_atomic(str(out / config_file), {**meta, "weights_sha256": sh.file_digest(str(out / WEIGHTS_FILE)).sha256})
    return out


def load_network(directory: str | Path, config_file: str, fmt: str, version: int, hint: str) -> tuple[dict, dict]:
    """(the JSON, the state dict) of a network saved by `save_network`; UserError naming what is wrong."""
    from safetensors.torch import load_file

    root = Path(directory)
    try:
        meta = json.loads((root / config_file).read_text())
    except (OSError, ValueError):
        raise sh.UserError(f"{directory}: not a {fmt} (no readable {config_file}); {hint}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt or meta.get("version") != version:
        raise sh.UserError(f"{directory}: {config_file} is not a version {version} {fmt}")
    weights = root / WEIGHTS_FILE
    if not weights.is_file() or sh.file_digest(str(weights)).sha256 != meta.get("weights_sha256"):
        raise sh.UserError(f"{weights}: missing or not the weights {config_file} records")
    try:
        return meta, load_file(str(weights))
    except Exception as e:  # a corrupt file with the recorded digest cannot happen; keep the message anyway
        raise sh.UserError(f"{weights}: not a safetensors file ({e})") from None
