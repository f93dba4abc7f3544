"""A FILTERS folder: one RBF-SVM per category, saved without pickle, loadable anywhere.

    FILTERS/index.json            {"format": "glide-svm-filters", "version": 1, "embedding_model",
                                   "embedding_dim", "order": [names], "filters": {name: {...}}, ...}
    FILTERS/<name>.json           scalars: gamma, intercept, threshold, the fit's figures (info)
    FILTERS/<name>.safetensors    support_vectors (n_sv, D) float32, dual_coef (n_sv,) float64,
                                  held_out_scores (m,) float64, held_out_labels (m,) uint8
    FILTERS/report/index.html     the fit's report (filter_report.py)

`order` is the order filters are applied in: a removed pair's reason names the first that fires.
Local paths or fsspec URIs. A file that fails to load (missing, truncated, wrong keys, shapes or
types) is a UserError naming it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

import shards as sh
from filtering.svm_filter import SvmFilter

FORMAT = "glide-svm-filters"
FILTER_FORMAT = "glide-svm-filter"
VERSION = 1
INDEX = "index.json"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # becomes a column (score_<name>) and file names
# The sample world's categories come first, in this order; any other filter after them, by name.
CANONICAL_ORDER = ("people", "violence", "hate")
TENSORS = {"support_vectors": (np.float32, 2), "dual_coef": (np.float64, 1),
           "held_out_scores": (np.float64, 1), "held_out_labels": (np.uint8, 1)}
SCALARS = ("gamma", "intercept", "threshold")


def check_filter_name(name: str, source: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise sh.UserError(f"{source}: filter name {name!r} must be lowercase letters, digits and _ "
                           f"(it becomes the column score_<name>)")
    return name


def filter_order(names) -> list[str]:
    names = set(names)
    return [n for n in CANONICAL_ORDER if n in names] + sorted(names - set(CANONICAL_ORDER))


@dataclass
class FilterSet:
    """Loaded filters in the order they are applied."""

    filters: list[SvmFilter]
    embedding_model: str
    embedding_dim: int
    path: str = ""

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.filters]


def save_filters(folder: str, filters: list[SvmFilter], *, extra_index: dict | None = None) -> str:
    """Write every filter, then index.json last (its presence means the folder is complete)."""
    import safetensors.numpy

    if not filters:
        raise ValueError("no filters to save")
    models = {f.embedding_model for f in filters}
    dims = {f.dim for f in filters}
    if len(models) != 1 or len(dims) != 1:
        raise ValueError(f"filters fitted on different embeddings: {sorted(models)} {sorted(dims)}")
    by_name = {f.name: f for f in filters}
    order = filter_order(by_name)
    sh.remove(sh.join(folder, INDEX))  # a half-rewritten folder must not look complete
    for name in order:
        f = by_name[name]
        tensors = {"support_vectors": np.ascontiguousarray(f.support_vectors, dtype=np.float32),
                   "dual_coef": np.ascontiguousarray(f.dual_coef, dtype=np.float64),
                   "held_out_scores": np.ascontiguousarray(f.held_out_scores, dtype=np.float64),
                   "held_out_labels": np.ascontiguousarray(f.held_out_labels, dtype=np.uint8)}
        data = safetensors.numpy.save(tensors, metadata={"format": FILTER_FORMAT, "version": str(VERSION)})
        sh.write_bytes_atomic(sh.join(folder, f"{name}.safetensors"), data)
        sh.write_json_atomic(sh.join(folder, f"{name}.json"), {
            "format": FILTER_FORMAT, "version": VERSION, "name": name, "kernel": "rbf",
            "embedding_model": f.embedding_model, "embedding_dim": f.dim, "n_support": len(f.dual_coef),
            "gamma": f.gamma, "intercept": f.intercept, "threshold": f.threshold,
            "decision": "removed when score >= threshold; score = sum dual_coef * exp(-gamma |x - sv|^2) + intercept",
            "weights": f"{name}.safetensors", "info": f.info})
    index = {"format": FORMAT, "version": VERSION, "embedding_model": models.pop(), "embedding_dim": dims.pop(),
             "order": order, "filters": {n: {"config": f"{n}.json", "weights": f"{n}.safetensors"} for n in order},
             **(extra_index or {})}
    sh.write_json_atomic(sh.join(folder, INDEX), index)
    return sh.join(folder, INDEX)


def read_index(folder: str) -> dict:
    path = sh.join(folder, INDEX)
    index = _read_json(path, f"not a filters folder (no {INDEX}; `glide fit-filters -o` writes one)")
    if index.get("format") != FORMAT:
        raise sh.UserError(f"{path}: not a {FORMAT} index (format {index.get('format')!r})")
    _check_version(index, path)
    order = index.get("order")
    if not isinstance(order, list) or not order or not isinstance(index.get("filters"), dict):
        raise sh.UserError(f"{path}: key 'order' must list the filters and 'filters' describe each")
    for name in order:
        check_filter_name(name, path)
        if name not in index["filters"]:
            raise sh.UserError(f"{path}: filter {name!r} is in 'order' but not in 'filters'")
    return index


def load_filters(folder: str) -> FilterSet:
    """Every filter of a FILTERS folder, in its order; UserError naming the file that fails."""
    index = read_index(folder)
    filters = [load_filter(folder, name) for name in index["order"]]
    for f in filters:
        if f.embedding_model != index.get("embedding_model") or f.dim != index.get("embedding_dim"):
            raise sh.UserError(f"{sh.join(folder, f.name + '.json')}: fitted on {f.embedding_model!r} "
                               f"({f.dim}-d) but {INDEX} says {index.get('embedding_model')!r} "
                               f"({index.get('embedding_dim')}-d)")
    return FilterSet(filters=filters, embedding_model=index["embedding_model"],
                     embedding_dim=int(index["embedding_dim"]), path=folder)


def filters_digest(folder: str) -> str:
    """sha256 over index.json and every filter's files: the filters' identity for resume keys."""
    import hashlib

    index = read_index(folder)
    h = hashlib.sha256()
    for name in [INDEX] + [f"{n}{ext}" for n in index["order"] for ext in (".json", ".safetensors")]:
        h.update(name.encode() + b"\0" + _read_bytes(sh.join(folder, name), "filter file not found"))
    return h.hexdigest()


def load_filter(folder: str, name: str) -> SvmFilter:
    json_path = sh.join(folder, f"{name}.json")
    meta = _read_json(json_path, "filter file not found")
    if meta.get("format") != FILTER_FORMAT or meta.get("name") != name or meta.get("kernel") != "rbf":
        raise sh.UserError(f"{json_path}: not the rbf {FILTER_FORMAT} {name!r} "
                           f"(format {meta.get('format')!r}, name {meta.get('name')!r})")
    _check_version(meta, json_path)
    for key in SCALARS:
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise sh.UserError(f"{json_path}: key '{key}' must be a finite number, got {value!r}")
    if not isinstance(meta.get("embedding_model"), str) or not isinstance(meta.get("embedding_dim"), int):
        raise sh.UserError(f"{json_path}: keys 'embedding_model' (text) and 'embedding_dim' (integer) are required")
    weights_path = sh.join(folder, f"{name}.safetensors")
    t = _read_tensors(weights_path)
    n_sv, dim = t["support_vectors"].shape
    if dim != meta["embedding_dim"] or t["dual_coef"].shape != (n_sv,) or meta.get("n_support") != n_sv:
        raise sh.UserError(f"{weights_path}: support_vectors {t['support_vectors'].shape} and dual_coef "
                           f"{t['dual_coef'].shape} do not match {json_path} (n_support {meta.get('n_support')}, "
                           f"embedding_dim {meta['embedding_dim']})")
    if t["held_out_scores"].shape != t["held_out_labels"].shape:
        raise sh.UserError(f"{weights_path}: held_out_scores and held_out_labels differ in length")
    if not (np.isfinite(t["support_vectors"]).all() and np.isfinite(t["dual_coef"]).all()):
        raise sh.UserError(f"{weights_path}: support_vectors or dual_coef hold NaN or infinity")
    return SvmFilter(name=name, support_vectors=t["support_vectors"], dual_coef=t["dual_coef"],
                     gamma=float(meta["gamma"]), intercept=float(meta["intercept"]),
                     threshold=float(meta["threshold"]), embedding_model=meta["embedding_model"],
                     info=dict(meta.get("info") or {}), held_out_scores=t["held_out_scores"],
                     held_out_labels=t["held_out_labels"].astype(bool))


def _read_bytes(path: str, missing: str) -> bytes:
    fs, p = sh.url_to_fs(path)
    try:
        with fs.open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise sh.UserError(f"{path}: {missing}") from None
    except (IsADirectoryError, PermissionError) as e:
        raise sh.UserError(f"{path}: cannot be read ({e.strerror or e})") from None


def _read_json(path: str, missing: str) -> dict:
    try:
        data = json.loads(_read_bytes(path, missing).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise sh.UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise sh.UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_version(data: dict, path: str) -> None:
    version = data.get("version")
    if not isinstance(version, int) or version < 1 or version > VERSION:
        raise sh.UserError(f"{path}: version {version!r} is not one this code reads (1..{VERSION})")


def _read_tensors(path: str) -> dict:
    import safetensors.numpy

    data = _read_bytes(path, "filter weights not found")
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as e:  # SafetensorError and friends: truncated or not safetensors at all
        raise sh.UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    if set(tensors) != set(TENSORS):
        raise sh.UserError(f"{path}: holds tensors {sorted(tensors)}, expected {sorted(TENSORS)}")
    for key, (dtype, ndim) in TENSORS.items():
        if tensors[key].dtype != dtype or tensors[key].ndim != ndim:
            raise sh.UserError(f"{path}: tensor '{key}' is {tensors[key].dtype} with {tensors[key].ndim} dims, "
                               f"expected {np.dtype(dtype)} with {ndim}")
    return tensors
