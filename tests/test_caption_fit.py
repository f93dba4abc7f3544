"""A caption longer than the model's text context is cut by the tokenizer without a word; `glide train`
measures the dataset's first captions before Ray starts and says so in one line."""
from __future__ import annotations

import hashlib

import pyarrow as pa

from shards import PAIRS_SCHEMA, compute_uid, join, shard_name, write_table
from training.data.caption_fit import caption_fit, framed_length
from training.tokenizers import build_tokenizer

SHORT = "a red circle on a blue background"
LONG = ("a small purple circle to the left of a small white triangle on a gray background, "
        "with a person, a knife and a strange symbol")


def write_captions(dataset: str, captions: list[str]) -> str:
    rows = []
    for i, caption in enumerate(captions):
        data = b"not decoded here"
        url = f"http://127.0.0.1/{i}.png"
        rows.append({"uid": compute_uid(url, caption), "url": url, "caption": caption, "image": data,
                     "image_format": "png", "width": 8, "height": 8, "original_width": 8, "original_height": 8,
                     "sha256": hashlib.sha256(data).hexdigest(), "source": f"urls:0:{i}"})
    write_table(join(dataset, "shards", shard_name(0)), pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))
    return dataset


def test_the_fit_counts_captions_past_the_text_context_with_their_framing(tmp_path):
    tokenizer = build_tokenizer({"type": "clip"})
    assert framed_length(tokenizer, SHORT) == len(tokenizer.encode(SHORT)) + 2   # CLIP's start and end
    data = write_captions(str(tmp_path / "data"), [SHORT, LONG, SHORT, ""])
    fit = caption_fit(data, tokenizer, text_ctx=12)
    assert (fit.sampled, fit.cut, fit.longest, fit.example) == (3, 1, framed_length(tokenizer, LONG), LONG)
    line = fit.warning("DATA")
    assert line.startswith("train: warning: 1 of 3 captions read from DATA need more than the model's text_ctx of 12")
    assert f"text_ctx >= {fit.longest} keeps them" in line
    roomy = caption_fit(data, tokenizer, text_ctx=32)
    assert roomy.cut == 0 and roomy.warning("DATA") is None
    assert caption_fit(str(tmp_path / "empty"), tokenizer, 12) is None   # no shards: the dataset checks say so


def test_prepare_run_measures_the_captions_against_the_models_text_ctx(tmp_path):
    from training.trainer.config import TrainConfig
    from training.trainer.launcher import prepare_run

    data = write_captions(str(tmp_path / "data"), [LONG] * 3)
    short_ctx = prepare_run(TrainConfig(kind="base", model="demo-base", data=data, output=str(tmp_path / "a")))
    assert short_ctx["caption_fit"].cut == 3 and short_ctx["caption_fit"].text_ctx == 12
    assert prepare_run(TrainConfig(kind="base", model="miniature-base", data=data,
                                   output=str(tmp_path / "b")))["caption_fit"].cut == 0
