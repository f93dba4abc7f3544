"""Do a dataset's captions fit the model's text context? A caption longer than text_ctx tokens (with
its framing) is cut silently by the tokenizer, and a model trained on cut captions never learns the
words past the cut: the two-shape sample world's captions (up to 29 tokens) under the demo base's 12
lost their background and stand-in clauses, and the base drew backgrounds at chance.

    fit = caption_fit("DATA", tokenizer, text_ctx=12)      # the first 2000 captions, read before Ray starts
    fit.cut, fit.sampled, fit.longest, fit.example
    print(fit.warning("DATA"))                               # one line, or None when every caption fits
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import shards as sh

SAMPLE = 2000


@dataclass(frozen=True)
class CaptionFit:
    text_ctx: int
    sampled: int
    cut: int
    longest: int                 # tokens with framing
    example: Optional[str]       # the longest caption that is cut

    def warning(self, data: str) -> Optional[str]:
        if not self.cut:
            return None
        return (f"train: warning: {self.cut:,} of {self.sampled:,} captions read from {data} need more than the "
                f"model's text_ctx of {self.text_ctx} tokens (the longest {self.longest}); the words past it are "
                f"cut, e.g. {self.example!r}: a model config with text_ctx >= {self.longest} keeps them")


def framed_length(tokenizer, text: str) -> int:
    """Tokens `text` takes as the model sees it, framing (e.g. CLIP's start and end) included."""
    ids = tokenizer.encode(text)
    return int(sum(tokenizer.padded_tokens_and_mask(ids, len(ids) + 8)[1]))


def caption_fit(data: str, tokenizer, text_ctx: int, sample: int = SAMPLE) -> Optional[CaptionFit]:
    """The first `sample` captions of dataset `data` measured against text_ctx; None when the dataset
    has no readable shards yet (its own checks report that)."""
    captions = []
    try:
        for batch in sh.iter_record_batches(data, columns=["caption"]):
            captions += [c for c in batch.column(0).to_pylist() if c]
            if len(captions) >= sample:
                break
    except (sh.UserError, OSError, ValueError):
        return None
    captions = captions[:sample]
    if not captions:
        return None
    lengths = [framed_length(tokenizer, c) for c in captions]
    longest = max(lengths)
    cut = [c for c, n in zip(captions, lengths) if n > text_ctx]
    return CaptionFit(text_ctx=text_ctx, sampled=len(captions), cut=len(cut), longest=longest,
                      example=max(cut, key=len) if cut else None)
