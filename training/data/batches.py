"""`iter_train_batches`: one worker's stream of decoded rows -> model-ready tensor batches.

Per batch (B = batch_size, S = task.image_size, on the CPU; the trainer moves them):
  x0             float32 [B, 3, S, S] in [-1, 1]
  tokens, mask   LongTensor / BoolTensor [B, text_ctx] from the model's tokenizer; a
                 cfg_dropout fraction of captions is replaced by "" (all padding), decided by
                 (seed, epoch, uid) so it does not depend on worker count or order; for the CLIP a
                 caption_clauses fraction by one of its clauses (`training_caption`)
  text_keys      kind clip: int64 [B], the key of the text each row trains with
  described_keys kind clip: int64 [B, K], keys of the row's caption and its clauses, -1 padded:
                 the contrastive loss's positives (training.data.caption_keys)
  low_res        upsampler kinds: float32 [B, 3, s, s], x0 downsampled (bicubic, antialiased)
  inpaint_mask   inpaint kinds: float32 [B, 1, S, S], 1 = keep, 0 = erased (glide-text2im)
  inpaint_image  inpaint kinds: x0 * inpaint_mask (the upsampler still gets the full low_res)

Equal step counts across workers: Ray Train's split gives every worker the same number of rows,
and a worker emits one batch per B rows it reads, corrupt or not. A corrupt row is counted,
warned about and never trained on: its slot is filled with a copy of a good row of the same batch.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from training.data.caption_keys import caption_clauses, described_keys, text_keys
from training.data.masks import random_keep_mask
from training.data.position import DataPosition, derived_seed, derived_uniform, row_rng
from training.data.task import TrainTask

log = logging.getLogger(__name__)


@dataclass
class _Row:
    epoch: int
    shard: int
    uid: str
    caption: str
    image: np.ndarray  # uint8 [S, S, 3]

    @property
    def key(self) -> tuple[int, int]:
        return (self.epoch, self.shard)


def caption_dropped(task: TrainTask, epoch: int, uid: str) -> bool:
    """True if this row's caption is replaced by "" this epoch (classifier-free guidance)."""
    return task.kind != "clip" and derived_uniform(task.seed, "cfg-dropout", epoch, uid) < task.cfg_dropout


def training_caption(task: TrainTask, epoch: int, uid: str, caption: str) -> str:
    """The caption a row trains with this epoch: "" when dropped (classifier-free guidance); for the
    CLIP (kind clip), with chance `task.caption_clauses`, one of its comma-separated clauses picked at
    random when it has several ("a red circle on a blue background, with a knife" -> "with a knife"):
    short captions, as web alt text often is, make the CLIP learn what long ones mention only in
    passing. Decided by (seed, epoch, uid), like the dropout."""
    if caption_dropped(task, epoch, uid):
        return ""
    if task.caption_clauses <= 0 or derived_uniform(task.seed, "caption-clause", epoch, uid) >= task.caption_clauses:
        return caption
    clauses = caption_clauses(caption)
    if len(clauses) < 2:
        return caption
    pick = int(derived_uniform(task.seed, "caption-clause-pick", epoch, uid) * len(clauses))
    return clauses[min(pick, len(clauses) - 1)]


class TrainBatches:
    """Iterator of (batch: dict[str, Tensor], position: DataPosition) over one worker's rows.

    Counters for the trainer's logs: `rows_read`, `corrupt_rows` (skipped), `skipped_rows`
    (before start_position).
    """

    def __init__(self, source, batch_size: int, task: TrainTask, tokenizer,
                 start_position: DataPosition | None = None, rank: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: must be >= 1")
        self.source, self.batch_size, self.task, self.tokenizer = source, batch_size, task, tokenizer
        self.start = start_position
        rank = _world_rank() if rank is None else rank
        start_key = start_position.to_dict() if start_position else None
        self._rng = np.random.default_rng(derived_seed(task.seed, "shuffle", start_key, rank))
        self.rows_read = self.corrupt_rows = self.skipped_rows = 0
        self._last_rows: list[_Row] = []
        self._gen = self._generate()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    # ---- the stream -----------------------------------------------------------------------
    def _generate(self):
        B, hold = self.batch_size, self.task.shuffle_buffer
        buffer: list[_Row] = []
        held = Counter()  # keys of rows in the buffer, for the position
        last_key = None
        start = (self.start.epoch, self.start.shard) if self.start else None
        emitted = 0

        def position() -> DataPosition:
            keys = list(held)
            if last_key is not None:
                keys.append(last_key)
            if not keys:
                return self.start or DataPosition()
            return DataPosition(*min(keys))

        for raw in self.source.iter_batches(batch_size=B, batch_format="numpy"):
            for i in range(len(raw["uid"])):
                key = (int(raw["epoch"][i]), int(raw["shard"][i]))
                if start is not None and key < start:
                    self.skipped_rows += 1
                    continue
                self.rows_read += 1
                last_key = key
                if not raw["ok"][i]:
                    self._count_corrupt(raw["uid"][i], key)
                    continue
                buffer.append(_Row(key[0], key[1], str(raw["uid"][i]), str(raw["caption"][i]), raw["image"][i]))
                held[key] += 1
            while self.rows_read - hold >= (emitted + 1) * B:
                rows = self._take(buffer, held)
                emitted += 1
                yield self._collate(rows), position()
        while self.rows_read >= (emitted + 1) * B:  # end of stream: drain the shuffle buffer
            rows = self._take(buffer, held)
            emitted += 1
            yield self._collate(rows), position()

    def _take(self, buffer: list[_Row], held: Counter) -> list[_Row]:
        """B rows from the buffer (random ones when shuffling); copies of good rows fill any gap."""
        B = self.batch_size
        n = min(B, len(buffer))
        if self.task.shuffle_buffer:
            rows = []
            for j in sorted(self._rng.choice(len(buffer), n, replace=False).tolist(), reverse=True):
                buffer[j], buffer[-1] = buffer[-1], buffer[j]  # swap-remove; highest index first
                rows.append(buffer.pop())
        else:  # stream order
            rows = buffer[:n]
            del buffer[:n]
        for row in rows:
            held[row.key] -= 1
            if held[row.key] <= 0:
                del held[row.key]  # keep position() proportional to the buffer, not the run
        if not rows:  # every row of this batch was corrupt
            rows = list(self._last_rows) or [self._grey_row()]
        while len(rows) < B:
            rows.append(rows[int(self._rng.integers(len(rows)))])
        self._last_rows = rows
        return rows

    def _grey_row(self) -> _Row:
        S = self.task.image_size
        return _Row(0, 0, "", "", np.full((S, S, 3), 128, dtype=np.uint8))

    def _count_corrupt(self, uid, key) -> None:
        self.corrupt_rows += 1
        n = self.corrupt_rows
        if n <= 10 or (n & (n - 1)) == 0:  # the first ten, then at powers of two
            log.warning("skipped corrupt row uid=%s (epoch %d, shard %d): image does not decode; "
                        "%d corrupt rows so far", uid, key[0], key[1], n)

    # ---- tensors --------------------------------------------------------------------------
    def _collate(self, rows: list[_Row]) -> dict:
        import torch
        import torch.nn.functional as F

        task = self.task
        images = torch.from_numpy(np.stack([r.image for r in rows]))
        x0 = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
        captions = [training_caption(task, r.epoch, r.uid, r.caption) for r in rows]
        tokens, mask = self.tokenizer.batch(captions, task.text_ctx)
        batch = {"x0": x0, "tokens": tokens, "mask": mask}
        if task.kind == "clip":
            batch["text_keys"] = torch.from_numpy(text_keys(captions))
            batch["described_keys"] = torch.from_numpy(described_keys([r.caption for r in rows]))
        if task.is_upsampler:
            low = F.interpolate(x0, size=(task.low_res_size, task.low_res_size), mode="bicubic",
                                align_corners=False, antialias=True)
            batch["low_res"] = low.clamp_(-1.0, 1.0)
        if task.is_inpaint:
            masks = np.stack([random_keep_mask(row_rng(task.seed, "mask", r.epoch, r.uid),
                                               task.image_size, task.inpaint)[0] for r in rows])
            keep = torch.from_numpy(masks)[:, None]
            batch["inpaint_mask"] = keep
            batch["inpaint_image"] = x0 * keep
        return batch


def iter_train_batches(dataset_shard, batch_size: int, task: TrainTask, tokenizer,
                       start_position: DataPosition | None = None) -> TrainBatches:
    """Batches for one worker from `dataset_shard` (`ray.train.get_dataset_shard("train")`, or any
    Ray Dataset / DataIterator from `build_train_dataset`). Yields (batch, position); see module doc.
    """
    return TrainBatches(dataset_shard, batch_size, task, tokenizer, start_position)


def _world_rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return 0
