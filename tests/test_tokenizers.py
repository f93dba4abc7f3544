"""Tokenizers: GPT-2 BPE from encoder.json / vocab.bpe (as glide-text2im's released models use it)
and CLIP BPE from open_clip's bundled vocabulary; the padded batches the text transformer reads."""
import gzip
import json

import pytest
import torch

from shards import UserError
from reference_glide import write_tiny_gpt2_vocab
from training.tokenizers import build_tokenizer, vocabulary_files
from training.tokenizers.gpt2_bpe import GPT2Tokenizer


@pytest.fixture
def vocab(tmp_path):
    enc_path, bpe_path, encoder, merges = write_tiny_gpt2_vocab(tmp_path / "plain")
    return {"encoder_path": enc_path, "bpe_path": bpe_path, "encoder": encoder, "merges": merges,
            "tok": GPT2Tokenizer.from_files(enc_path, bpe_path)}


def test_gpt2_merges_learned_words_into_single_tokens(vocab):
    tok, encoder = vocab["tok"], vocab["encoder"]
    ids = tok.encode("a red cube and a blue sphere")
    # "Ġ" marks a leading space in GPT-2 vocabularies; every trained word is one token
    assert ids == [encoder[s] for s in ["a", "Ġred", "Ġcube", "Ġand", "Ġa", "Ġblue", "Ġsphere"]]
    assert tok.decode(ids) == "a red cube and a blue sphere"


def test_gpt2_round_trip_is_byte_level_for_any_text(vocab):
    tok = vocab["tok"]
    text = "naïve café 🙂 — zebra\ttab\nnew line  two  spaces 42!?"
    ids = tok.encode(text)
    assert tok.decode(ids) == text  # already lower case: nothing lost, whatever the script
    # a word the vocabulary never saw is spelled byte by byte: 4 ids for the 4 UTF-8 bytes of 🙂
    assert len(tok.encode("🙂")) == 4
    assert all(0 <= i < tok.n_vocab - 1 for i in ids)


def test_gpt2_lowercases_like_glide(vocab):
    tok = vocab["tok"]
    assert tok.encode("A RED Cube") == tok.encode("a red cube")
    assert tok.decode(tok.encode("A RED Cube")) == "a red cube"


def test_gpt2_reads_gzipped_files_like_plain_ones(vocab, tmp_path):
    enc_gz, bpe_gz, _, _ = write_tiny_gpt2_vocab(tmp_path / "gz", gzipped=True)
    assert enc_gz.read_bytes()[:2] == b"\x1f\x8b"
    tok_gz = GPT2Tokenizer.from_files(enc_gz, bpe_gz)
    text = "two yellow spheres above a green cube"
    assert tok_gz.encode(text) == vocab["tok"].encode(text)
    assert tok_gz.n_vocab == vocab["tok"].n_vocab == len(vocab["encoder"])


def test_gpt2_padding_follows_glide(vocab):
    tok = vocab["tok"]
    pad = tok.n_vocab - 1  # glide's end_token: the last id ("<|endoftext|>")
    assert tok.pad_token == pad
    tokens, mask = tok.padded_tokens_and_mask([5, 6, 7], 5)
    assert tokens == [5, 6, 7, pad, pad] and mask == [True, True, True, False, False]
    tokens, mask = tok.padded_tokens_and_mask(list(range(10)), 4)  # truncate, no end token added
    assert tokens == [0, 1, 2, 3] and mask == [True] * 4
    assert tok.decode(tok.padded_tokens_and_mask(tok.encode("a red cube"), 8)[0]) == "a red cube"


def test_batch_gives_long_tokens_bool_mask_and_empty_caption_all_padding(vocab):
    tok = vocab["tok"]
    tokens, mask = tok.batch(["a red cube", "", "the green sphere " * 20], 6)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool and tokens.shape == mask.shape == (3, 6)
    assert mask[0].tolist() == [True, True, True, False, False, False]
    assert not mask[1].any() and (tokens[1] == tok.pad_token).all()  # the classifier-free caption
    assert mask[2].all()


def test_build_tokenizer_reads_vocabulary_from_checkpoint_folder(vocab, tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "tokenizer").mkdir(parents=True)
    (ckpt / "tokenizer" / "encoder.json").write_bytes(vocab["encoder_path"].read_bytes())
    (ckpt / "tokenizer" / "vocab.bpe").write_bytes(vocab["bpe_path"].read_bytes())
    tok = build_tokenizer({"type": "gpt2"}, base_dir=ckpt)
    assert tok.encode("a blue sphere") == vocab["tok"].encode("a blue sphere")
    # what an export of this model must carry along (save_checkpoint(tokenizer_files=...))
    assert vocabulary_files({"type": "gpt2"}, ckpt) == {"encoder.json": ckpt / "tokenizer" / "encoder.json",
                                                        "vocab.bpe": ckpt / "tokenizer" / "vocab.bpe"}
    assert vocabulary_files({"type": "clip"}) == {}
    with pytest.raises(UserError, match="encoder.json"):
        build_tokenizer({"type": "gpt2"}, base_dir=tmp_path / "elsewhere")
    with pytest.raises(UserError, match="unknown type"):
        build_tokenizer({"type": "sentencepiece"})
    with pytest.raises(UserError, match="unknown key"):
        build_tokenizer({"type": "clip", "lowercase": False})


def test_bad_vocabulary_files_are_user_errors_naming_the_file(vocab, tmp_path):
    bad_json = tmp_path / "encoder.json"
    bad_json.write_text("{not json")
    with pytest.raises(UserError, match="encoder.json: not a JSON encoder file"):
        GPT2Tokenizer.from_files(bad_json, vocab["bpe_path"])
    partial = dict(vocab["encoder"])
    del partial["Ġ"]  # the space byte
    partial = {s: i for i, s in enumerate(partial)}
    no_space = tmp_path / "partial.json"
    no_space.write_text(json.dumps(partial))
    with pytest.raises(UserError, match="partial.json: vocabulary lacks 1 of the 256 byte symbols"):
        GPT2Tokenizer.from_files(no_space, vocab["bpe_path"])
    bad_bpe = tmp_path / "vocab.bpe.gz"
    bad_bpe.write_bytes(gzip.compress(b"#version: 0.2\nr e\nthree parts here\n"))
    with pytest.raises(UserError, match="vocab.bpe.gz: line 3 is not a merge pair"):
        GPT2Tokenizer.from_files(vocab["encoder_path"], bad_bpe)


def _open_clip_tokenizer_module():
    """open_clip's tokenizer.py itself, loaded without the package __init__ (which builds model
    registries and imports timm: seconds we need not spend)."""
    import importlib.util
    from pathlib import Path

    folder = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer_under_test", folder / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clip_tokenizer_matches_open_clip():
    SimpleTokenizer = _open_clip_tokenizer_module().SimpleTokenizer
    tok = build_tokenizer({"type": "clip"})
    ref = SimpleTokenizer()
    assert tok.n_vocab == 49408
    texts = ["a red cube on a blue background", "Hello,  World!! café 🙂 &amp; naïve 2024", "don't STOP"]
    for text in texts:
        assert tok.encode(text) == ref.encode(text)
    assert tok.decode(tok.encode("A Red  Cube!")) == "a red cube !"
    ours, mask = tok.batch(texts + ["x " * 100], 16)
    theirs = ref(texts + ["x " * 100], context_length=16)  # <start> ids <end>, zero padded, truncated
    assert torch.equal(ours, theirs)
    assert mask.sum(1).tolist() == [(row != 0).sum().item() for row in theirs]
    empty, empty_mask = tok.batch([""], 16)
    assert not empty_mask.any() and (empty == tok.pad_token).all()
