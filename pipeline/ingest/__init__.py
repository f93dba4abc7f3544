"""The ingest stage: URL lists -> Arrow pair shards, crawled with img2dataset's pieces on Ray.

url_lists (stream lists into input shards) -> shard_worker (per shard: fetch + images)
-> stage (fan-out through pipeline.stages, manifest last). safety holds the crawl rules.
"""
import os

# img2dataset imports albumentations, whose import-time update check would try the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def import_img2dataset(name: str):
    """img2dataset.<name> (downloader, resizer) without running img2dataset/__init__.

    That __init__ imports img2dataset.main -> writer -> webdataset -> torch: seconds and
    hundreds of MB in every Ray worker that only needs the downloader and the Resizer.
    The package is registered un-executed with a module __getattr__ that runs the real
    __init__ on first use of anything else (e.g. `img2dataset.download`), so other code
    in the same process still sees the whole package.
    """
    import importlib
    import importlib.util
    import sys

    if "img2dataset" not in sys.modules:
        spec = importlib.util.find_spec("img2dataset")
        package = importlib.util.module_from_spec(spec)

        def __getattr__(attr):
            del package.__getattr__  # run the real __init__ once, then behave normally
            spec.loader.exec_module(package)
            return getattr(package, attr)

        package.__getattr__ = __getattr__
        sys.modules["img2dataset"] = package
    return importlib.import_module(f"img2dataset.{name}")
