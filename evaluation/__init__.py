"""FID / IS / precision-recall / CLIP score, guidance sweeps, Elo, reports."""
