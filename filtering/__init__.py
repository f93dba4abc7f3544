"""CLIP features, SVM filters, threshold tuning, active learning, labelling."""
