"""The ingest stage: URL lists -> Arrow pair shards, crawled with img2dataset's pieces on Ray.

url_lists (stream lists into input shards) -> shard_worker (per shard: fetch + images)
-> stage (fan-out through pipeline.stage_runner, manifest last). safety holds the crawl rules.
"""
import os

# img2dataset imports albumentations, whose import-time update check would try the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
