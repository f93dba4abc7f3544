"""Evaluation: the paper's metrics (FID, Inception Score, precision/recall, CLIP score) and Elo from
pairwise human judgements, each usable on its own. docs/evaluation.md describes them.

    from evaluation import frechet_distance
    fid = frechet_distance(mu1, sigma1, mu2, sigma2)                   # float64, exact at d = 2048

    extractor = load_feature_extractor(inception="pt_inception.pth")   # or clip="ViT-B-16=weights.bin"
    reference = reference_statistics("ref-images/", extractor, image_size=256, cache_dir="cache/")
    metrics = image_metrics(extractor.extract(images), reference, extractor)

    result = fit_elo(Judgements.from_table(read_judgements_file("votes.csv"), "votes.csv"))
    result.to_json(); print(result.format_table())

Modules: frechet (Frechet distance, Gaussian statistics), features (Inception-v3 / CLIP feature
networks), image_folder (center crop, image listing), reference_stats (cached reference statistics),
inception_score, precision_recall, clip_score, image_metrics (all of them at once), elo (the fit,
bootstrap, win rates), judgements (judgements from files or the labels database).
Heavy imports (torch, torch-fidelity, open_clip) happen inside the functions that need them.
"""
from evaluation.clip_score import clip_score, clip_scores
from evaluation.elo import EloResult, fit_elo, fit_elo_scores, win_matrix
from evaluation.features import (ClipImageFeatures, FeatureExtractor, ImageFeatures, InceptionFeatures,
                                 load_feature_extractor)
from evaluation.frechet import frechet_distance, gaussian_statistics
from evaluation.image_folder import center_crop, list_images
from evaluation.image_metrics import image_metrics
from evaluation.inception_score import inception_score
from evaluation.judgements import Judgements, read_judgements_db, read_judgements_file, select_judgements
from evaluation.precision_recall import PrecisionRecall, precision_recall
from evaluation.reference_stats import ReferenceStatistics, reference_statistics

__all__ = [
    "frechet_distance", "gaussian_statistics", "load_feature_extractor", "FeatureExtractor", "InceptionFeatures",
    "ClipImageFeatures", "ImageFeatures", "center_crop", "list_images", "reference_statistics",
    "ReferenceStatistics", "inception_score", "precision_recall", "PrecisionRecall", "clip_score", "clip_scores",
    "image_metrics", "fit_elo", "fit_elo_scores", "win_matrix", "EloResult", "Judgements", "read_judgements_file",
    "read_judgements_db", "select_judgements",
]
