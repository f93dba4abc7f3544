"""Every image metric of one set of samples against reference statistics, in one call.

    extractor = load_feature_extractor(inception=..., clip=...)
    reference = reference_statistics("coco-val/", extractor, 256, "cache/")
    samples = extractor.extract(images)                 # uint8 [N, 256, 256, 3], center-cropped
    metrics = image_metrics(samples, reference, extractor)
    # {"fid", "inception_score", "inception_score_std", "precision", "recall", "samples", "reference",
    #  "features": extractor.describe(), "notes": [...]}

A metric the features cannot give (the Inception Score on CLIP features, precision/recall without
the reference features) is None, with the reason in "notes". The result always says which features
it was computed on; samples and reference must come from the same extractor (same digest).
"""
from __future__ import annotations

from evaluation.features import FeatureExtractor, ImageFeatures
from evaluation.frechet import frechet_distance, gaussian_statistics
from evaluation.inception_score import inception_score
from evaluation.precision_recall import DEFAULT_BLOCK, precision_recall
from evaluation.reference_stats import ReferenceStatistics


def image_metrics(samples: ImageFeatures, reference: ReferenceStatistics, extractor: FeatureExtractor, *,
                  is_splits: int = 10, k: int = 3, block_size: int = DEFAULT_BLOCK) -> dict:
    if reference.description.get("features_digest") != extractor.digest():
        raise ValueError("image_metrics: the reference statistics were computed with other features "
                         f"({reference.description.get('features', {}).get('network')}, digest "
                         f"{str(reference.description.get('features_digest'))[:12]}) than the samples' "
                         f"({extractor.describe().get('network')}, digest {extractor.digest()[:12]})")
    n = samples.pool.shape[0]
    notes = []
    mu, sigma = gaussian_statistics(samples.pool)
    out = {"fid": frechet_distance(mu, sigma, reference.mu, reference.sigma), "samples": n,
           "reference": reference.count, "inception_score": None, "inception_score_std": None,
           "precision": None, "recall": None, "k": k}
    if samples.logits is None:
        notes.append(f"no Inception Score: the {extractor.kind} features have no class logits")
    elif n < is_splits:
        notes.append(f"no Inception Score: {n} samples, fewer than its {is_splits} splits")
    else:
        out["inception_score"], out["inception_score_std"] = inception_score(samples.logits, is_splits)
    if reference.features is None:
        notes.append("no precision/recall: the reference statistics were kept without their features")
    elif min(n, reference.features.shape[0]) <= k:
        notes.append(f"no precision/recall: needs more than k={k} samples and reference images")
    else:
        pr = precision_recall(reference.features, samples.pool, k=k, block_size=block_size)
        out["precision"], out["recall"] = pr.precision, pr.recall
    out["features"] = extractor.describe()
    out["notes"] = notes
    return out
