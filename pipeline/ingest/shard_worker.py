"""One input shard -> one pairs shard + one rejects shard (runs inside a Ray task).

Downloads run in a thread pool (img2dataset's download_image behind the safe opener);
decode/resize/encode runs in this thread with img2dataset's Resizer, as img2dataset's
own Downloader does. Every input row ends up in exactly one of the two output files.
"""
from __future__ import annotations

import hashlib
import posixpath
from multiprocessing.pool import ThreadPool
from threading import Semaphore
import pyarrow as pa

import shards as sh
from pipeline.ingest import safety
from pipeline.ingest.fetch import Fetcher
from pipeline.ingest.images import ImageProcessor
from pipeline.stages import FileInfo, Report, ShardJob, ShardResult

STAGE = "ingest"
_FLUSH_ROWS = 256  # rows per record batch: bounds the images held in memory


class _Buffers:
    """Rows waiting to be written as one record batch, per output file."""

    def __init__(self, pairs: sh.ShardWriter, rejects: sh.ShardWriter):
        self.pairs_writer, self.rejects_writer = pairs, rejects
        self.pairs: list[dict] = []
        self.rejects: list[dict] = []
        self.rejected: dict[str, int] = {}
        self.kept = 0

    def keep(self, row: dict) -> None:
        self.pairs.append(row)
        self.kept += 1
        if len(self.pairs) >= _FLUSH_ROWS:
            self.flush()

    def reject(self, uid, url, caption, reason: str, detail: str) -> None:
        self.rejects.append({"uid": uid, "url": url, "caption": caption, "stage": STAGE,
                             "reason": reason, "detail": detail, "score": None})
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if len(self.rejects) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.pairs:
            self.pairs_writer.write(pa.Table.from_pylist(self.pairs, schema=sh.PAIRS_SCHEMA))
            self.pairs = []
        if self.rejects:
            self.rejects_writer.write(pa.Table.from_pylist(self.rejects, schema=sh.REJECTS_SCHEMA))
            self.rejects = []


def ingest_shard(job: ShardJob, cfg: dict, report: Report = lambda n: None) -> ShardResult:
    """Crawl the rows of the input shard `job.args[0]`. `cfg` is the resolved IngestConfig as a dict."""
    (input_path,) = job.args
    pairs_path, rejects_path = job.pairs_path, job.rejects_path
    table = sh.read_table(input_path)
    urls = table.column("url").to_pylist()
    captions = table.column("caption").to_pylist()
    sources = table.column("source").to_pylist()
    uids = [sh.compute_uid(u or "", c) for u, c in zip(urls, captions)]
    del table

    fetcher = Fetcher(timeout=cfg["timeout"], retries=cfg["retries"], retry_backoff=cfg["retry_backoff"],
                      user_agent_token=cfg["user_agent_token"],
                      disallowed_header_directives=cfg["disallowed_header_directives"])
    process = ImageProcessor(image_size=cfg["image_size"], resize_mode=cfg["resize_mode"],
                             resize_only_if_bigger=cfg["resize_only_if_bigger"],
                             output_format=cfg["output_format"], encode_quality=cfg["encode_quality"],
                             min_image_size=cfg["min_image_size"], max_pixels=cfg["max_pixels"])

    # At most 2x threads downloaded images wait for the resizer (img2dataset's bound).
    in_flight = Semaphore(cfg["threads"] * 2)

    def work():
        for item in enumerate(urls):
            in_flight.acquire()
            yield item

    pairs = sh.ShardWriter(pairs_path, sh.PAIRS_SCHEMA)
    try:
        rejects = sh.ShardWriter(rejects_path, sh.REJECTS_SCHEMA)
    except BaseException:
        pairs.abort()
        raise
    try:
        out = _Buffers(pairs, rejects)
        done = 0
        with safety.safe_opener(cfg["allow_private_networks"], cfg["max_image_bytes"]), \
                ThreadPool(min(cfg["threads"], max(1, len(urls)))) as pool:
            for i, data, reason, detail in pool.imap_unordered(fetcher, work()):
                try:
                    _handle(out, process, i, data, reason, detail, uids, urls, captions, sources, cfg)
                finally:
                    in_flight.release()
                done += 1
                if done % 16 == 0:
                    report(16)
        report(done % 16)
        out.flush()
        shard_info = pairs.close()
        rejects_info = rejects.close()
    except BaseException:
        pairs.abort()
        rejects.abort()
        raise
    return ShardResult(input=len(urls), kept=out.kept, rejected=out.rejected,
                       shard=FileInfo(name=posixpath.basename(pairs_path), **shard_info),
                       rejects=FileInfo(name=posixpath.basename(rejects_path), **rejects_info))


def _handle(out: _Buffers, process: ImageProcessor, i: int, data, reason, detail, uids, urls, captions,
            sources, cfg) -> None:
    if data is None:
        out.reject(uids[i], urls[i], captions[i], reason.value, detail or "")
        return
    try:
        image, reason, detail = process(data)
    except Exception as e:  # a bug in decoding must not lose the row
        image, reason, detail = None, "internal_error", f"{type(e).__name__}: {e}"[:500]
    if image is None:
        out.reject(uids[i], urls[i], captions[i], reason, detail or "")
        return
    out.keep({
        "uid": uids[i], "url": urls[i], "caption": captions[i], "image": image.data,
        "image_format": cfg["output_format"], "width": image.width, "height": image.height,
        "original_width": image.original_width, "original_height": image.original_height,
        "sha256": hashlib.sha256(image.data).hexdigest(), "source": sources[i],
    })
