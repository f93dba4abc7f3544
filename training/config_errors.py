"""One line per bad config: a pydantic ValidationError as `SOURCE: key 'K': what is wrong`.

    tiny.json: key 'num_channels': Input should be a valid integer (got 'a')
    tiny.json: unknown key 'foo'
    tiny.json: key 'channel_mult': ... (cross-field checks raise ValueError("key 'K': ..."))

Only the first error is reported: one line, and fixing it usually fixes the rest.
"""
from __future__ import annotations

from typing import Callable, Optional

from pydantic import ValidationError

from shards import UserError


def user_error(err: ValidationError, source: str,
               key_name: Optional[Callable[[str], str]] = None, noun: str = "key") -> UserError:
    """The first error of `err` as a UserError naming `source` and the key.

    key_name maps a dotted field path to the name the user wrote (e.g. the noised CLIP's
    "max_text_len" is the model config's "text_ctx"). noun: what a key is called ("config key" in
    pipeline configs, whose keys are dotted section paths).
    """
    first = err.errors(include_url=False)[0]
    key = ".".join(str(part) for part in first["loc"])
    if key and key_name is not None:
        key = key_name(key)
    if first["type"] == "extra_forbidden":
        return UserError(f"{source}: unknown {noun} '{key}'")
    message = first["msg"]
    if first["type"] == "value_error":  # our own checks: the message already names its key
        message = message.removeprefix("Value error, ")
    if not key:
        return UserError(f"{source}: {message}")
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) or first["type"] == "missing" else f" (got {value!r})"
    return UserError(f"{source}: {noun} '{key}': {message}{shown}")
