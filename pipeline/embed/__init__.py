"""The embed stage: pairs shards -> the same pairs with the paper's three-crop CLIP embedding.

The per-shard work and the CLIP live in `filtering` (embed_worker, clip_features); stage.py plans
one task per input shard and runs them through pipeline.stages on Ray actors that hold the model.
"""
