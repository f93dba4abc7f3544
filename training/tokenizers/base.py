"""The interface every tokenizer offers to models, trainers and samplers."""
from __future__ import annotations


class Tokenizer:
    """Text <-> token ids, plus the fixed-length padded batches the text transformer reads.

    Subclasses set `n_vocab`, `pad_token` and implement `encode`, `decode` and
    `padded_tokens_and_mask(tokens, text_ctx)`.
    """

    type_name = ""
    n_vocab: int
    pad_token: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def padded_tokens_and_mask(self, tokens: list[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        raise NotImplementedError

    def batch(self, texts, text_ctx: int):
        """Encode, truncate and pad `texts` (list of B strings).

        Returns (tokens LongTensor [B, text_ctx], mask BoolTensor [B, text_ctx]); mask is True at
        real tokens. The empty caption "" is all padding with an all-False mask: the
        classifier-free "no caption" input.
        """
        import torch

        if isinstance(texts, str):
            texts = [texts]
        rows, masks = [], []
        for text in texts:
            tokens, mask = self.padded_tokens_and_mask(self.encode(text) if text else [], text_ctx)
            rows.append(tokens)
            masks.append(mask)
        if not rows:
            return torch.zeros(0, text_ctx, dtype=torch.long), torch.zeros(0, text_ctx, dtype=torch.bool)
        return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_vocab={self.n_vocab})"
