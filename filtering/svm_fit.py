"""Fit one category's RBF-SVM: held-out split, C and gamma by cross-validation, threshold tuning.

    labels of one filter -> stratified split: `held_out` pairs (at most half) and the training rest
    training split       -> GridSearchCV over C x gamma (stratified k-fold, ROC AUC), refit on it all
    held-out positives   -> threshold with FNR <= target at 95% confidence (fnr_threshold.py)

Gamma is searched as multiples of scikit-learn's "scale" value 1 / (D * var(X)), which adapts to
how spread the embeddings are. Classes are weighted as balanced: positives are the rare class,
and the bias is tuned afterwards anyway, so the search ranks candidates by ROC AUC alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

import shards as sh
from filtering.fnr_threshold import NotEnoughPositives, min_positives, tune_threshold
from filtering.svm_filter import SvmFilter


@dataclass(frozen=True)
class FitOptions:
    target_fnr: float = 0.01
    held_out: int = 1024
    cv_folds: int = 3
    c_values: tuple = (1.0, 10.0, 100.0)
    gamma_scales: tuple = (0.5, 2.0, 8.0)
    seed: int = 0

    @property
    def fits_per_filter(self) -> int:
        """Cross-validation fits of the grid search (the unit of fit-filters' progress)."""
        return len(self.c_values) * len(self.gamma_scales) * self.cv_folds


@dataclass(frozen=True)
class Split:
    """One filter's labels split into the training part and the held-out part (x: float64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray


def split_labels(name: str, x: np.ndarray, y: np.ndarray, options: FitOptions, source: str) -> Split:
    """Stratified split holding out `held_out` pairs (at most half); UserError when the held-out
    positives cannot show the target. `source` names the labels in errors."""
    from sklearn.model_selection import train_test_split

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    need = 2 * options.cv_folds  # enough of each class for the split and every fold
    if positives < need or negatives < need:
        raise sh.UserError(f"{source}: filter '{name}' has {positives} positive and {negatives} negative labels "
                           f"matching the embeddings; it needs at least {need} of each")
    n_held = min(options.held_out, len(y) // 2)
    x_train, x_held, y_train, y_held = train_test_split(x, y, test_size=n_held, stratify=y,
                                                        random_state=options.seed)
    held_positives = int(y_held.sum())
    if held_positives < min_positives(options.target_fnr):
        raise sh.UserError(not_enough_message(source, name, held_positives, len(y_held), positives, len(y),
                                              options))
    return Split(x_train, y_train, x_held, y_held)


def fit_filter(name: str, split: Split, options: FitOptions, *, embedding_model: str, source: str,
               report: Optional[Callable[[int], None]] = None) -> SvmFilter:
    """Grid search on the training part, threshold on the held-out positives."""
    from sklearn.metrics import roc_auc_score

    svc, search, scale = _grid_search(split.x_train, split.y_train, options, report)
    y_held = split.y_held
    held_scores = svc.decision_function(split.x_held)
    try:
        choice = tune_threshold(held_scores[y_held], options.target_fnr)
    except NotEnoughPositives as e:  # split_labels checked the count; kept as the rule's own guard
        raise sh.UserError(f"{source}: filter '{name}': {e}") from None
    info = {
        "C": float(search.best_params_["C"]), "gamma_scale": float(search.best_params_["gamma"] / scale),
        "cv_auc": float(search.best_score_), "held_out_auc": float(roc_auc_score(y_held, held_scores)),
        "target_fnr": options.target_fnr, "fnr": choice.fnr, "fnr_upper_95": choice.fnr_upper_95,
        "misses": choice.misses, "held_out_positives": choice.positives,
        "held_out_negatives": int((~y_held).sum()),
        "held_out_negatives_removed": float(np.mean(held_scores[~y_held] >= choice.threshold)),
        "train_positives": int(split.y_train.sum()), "train_negatives": int((~split.y_train).sum()),
        "cv_folds": options.cv_folds, "seed": options.seed,
    }
    return SvmFilter.from_svc(name, svc, threshold=choice.threshold, embedding_model=embedding_model, info=info,
                              held_out_scores=held_scores, held_out_labels=y_held)


def _grid_search(x, y, options: FitOptions, report):
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    scale = 1.0 / (x.shape[1] * float(x.var()) or 1.0)  # scikit-learn's gamma="scale"
    grid = {"C": list(options.c_values), "gamma": [f * scale for f in options.gamma_scales]}
    auc = get_scorer("roc_auc")

    def counted_auc(estimator, xs, ys):  # GridSearchCV calls it once per fit: our progress tick
        if report is not None:
            report(1)
        return auc(estimator, xs, ys)

    search = GridSearchCV(SVC(kernel="rbf", class_weight="balanced"), grid, scoring=counted_auc, n_jobs=1,
                          refit=True, cv=StratifiedKFold(options.cv_folds, shuffle=True, random_state=options.seed))
    search.fit(x, y)
    return search.best_estimator_, search, scale


def not_enough_message(source: str, name: str, held_positives: int, held: int, positives: int, labelled: int,
                       options: FitOptions) -> str:
    """What is missing, in labels a person can go and get (one line)."""
    needed = min_positives(options.target_fnr)
    share = positives / labelled
    held_needed = math.ceil(needed / share)             # held-out pairs that hold `needed` positives
    labels_needed = 2 * held_needed                     # at most half the labels are held out
    text = (f"{source}: filter '{name}': {held_positives} held-out positives (of {held} held-out labels) cannot "
            f"show an FNR <= {options.target_fnr:g} at 95% confidence; that needs at least {needed} even with "
            f"no misses: ")
    if labelled >= labels_needed:
        return text + f"hold out more labels (--held-out {held_needed})"
    more_positives = max(needed - held_positives, 2 * needed - positives)
    return text + (f"label about {more_positives} more positives ({labels_needed} labels in all at this "
                   f"{share:.0%} positive share) and use --held-out {held_needed}")
