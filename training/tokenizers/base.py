"""The interface every tokenizer offers to models, trainers and samplers."""
from __future__ import annotations

from abc import ABC, abstractmethod


class Tokenizer(ABC):
    """Text <-> token ids, plus the fixed-length padded batches the text transformer reads.

    Subclasses set `n_vocab`, `pad_token`, `decoder` ({id: symbol}) and `special_ids`, and implement
    `encode`, `decode` and `padded_tokens_and_mask(tokens, text_ctx)`.
    """

    type_name = ""
    n_vocab: int
    pad_token: int
    decoder: dict[int, str]
    special_ids: frozenset[int]

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without framing or padding (padded_tokens_and_mask adds those)."""

    @abstractmethod
    def decode(self, ids) -> str:
        """The text of token ids; padding and framing tokens are skipped."""

    @abstractmethod
    def padded_tokens_and_mask(self, tokens: list[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        """The model input for `tokens`: framed as this tokenizer requires, truncated and padded to
        text_ctx; and the mask, True at real ids."""

    def joined_symbols(self, ids) -> str:
        """The vocabulary symbols of `ids` joined, special ids skipped; unknown ids are a ValueError."""
        symbols = []
        for i in ids:
            i = int(i)
            if i in self.special_ids:
                continue
            if i not in self.decoder:
                raise ValueError(f"token id {i} is outside the vocabulary (n_vocab {self.n_vocab})")
            symbols.append(self.decoder[i])
        return "".join(symbols)

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
