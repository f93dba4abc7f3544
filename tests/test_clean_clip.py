"""The clean CLIP's training step: the contrastive loss on the clean images at t = 0 (no noise drawn),
while the noised CLIP's step stays as it was. (`glide train clip --clip-mode clean` end to end is in
test_embed_stage.py.)"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def clip_and_batch():
    from training.diffusion import create_diffusion
    from training.factory import create_model
    from training.model_config import load_model_config
    from training.nn.noised_clip import clip_tokens_and_mask
    from training.tokenizers import build_tokenizer

    cfg = load_model_config("tiny-clip")
    torch.manual_seed(0)
    model = create_model(cfg, device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    tokens, mask = clip_tokens_and_mask(build_tokenizer(cfg), ["a red circle", "a blue square", "a green star"],
                                        cfg.text_ctx)
    batch = {"x0": torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, "tokens": tokens, "mask": mask}
    return model, create_diffusion(cfg, timestep_respacing=""), batch


def test_clean_mode_is_the_contrastive_loss_on_x0_at_t0(clip_and_batch):
    from training.nn.noised_clip import clip_contrastive_loss
    from training.trainer.objectives import step_loss_fn

    model, diffusion, batch = clip_and_batch
    clean = step_loss_fn("clip", clip_mode="clean")
    with torch.no_grad():
        out = clean(model, diffusion, batch, torch.Generator().manual_seed(1), torch.device("cpu"))
        again = clean(model, diffusion, batch, torch.Generator().manual_seed(2), torch.device("cpu"))
        expected = clip_contrastive_loss(model(batch["x0"], torch.zeros(3, dtype=torch.long), batch["tokens"],
                                               batch["mask"]))
    assert out["t"].tolist() == [0, 0, 0]
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(again["loss"], out["loss"])  # nothing random: no noise, no timesteps


def test_noised_mode_stays_the_default_and_draws_timesteps(clip_and_batch):
    from training.trainer.config import TrainConfig
    from training.trainer.objectives import step_loss_fn

    model, diffusion, batch = clip_and_batch
    assert TrainConfig(kind="clip").clip_mode == "noised"
    with torch.no_grad():
        out = step_loss_fn("clip")(model, diffusion, batch, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert out["t"].tolist() != [0, 0, 0]


def test_clip_mode_is_a_checked_train_key_and_flag():
    from pipeline.cli import build_parser
    from pipeline.config import PipelineConfig, override
    from shards import UserError

    assert PipelineConfig.model_validate({"train": {"clip_mode": "clean"}}).train.clip_mode == "clean"
    with pytest.raises(UserError, match="config key 'clip_mode'"):
        override(PipelineConfig().train, {"clip_mode": "blurry"})
    args = build_parser().parse_args(["train", "clip", "--clip-mode", "clean"])
    assert args.clip_mode == "clean"


def test_a_repeated_caption_is_a_positive_for_every_image_it_captions():
    from training.nn.noised_clip import clip_contrastive_loss

    alike = torch.tensor([[4.0, 4.0, 0.0], [4.0, 4.0, 0.0], [0.0, 0.0, 4.0]])   # images 0, 1 score both alike
    apart = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])   # each image its own text only
    distinct = torch.tensor([[1, 5, 2], [1, 6, 2], [1, 7, 2]])
    repeated = torch.tensor([[1, 5, 2], [1, 5, 2], [1, 7, 2]])   # rows 0 and 1: "with a knife" twice
    torch.testing.assert_close(clip_contrastive_loss(apart, distinct), clip_contrastive_loss(apart))
    # distinct captions: telling the two images apart is right; one caption twice: scoring them alike is
    assert clip_contrastive_loss(apart, distinct) < clip_contrastive_loss(alike, distinct) - 0.3
    assert clip_contrastive_loss(alike, repeated) < clip_contrastive_loss(apart, repeated) - 0.3


def test_a_clause_true_of_an_image_captioned_otherwise_is_its_positive_too():
    """"with a knife" picked as one knife image's text is also true of a knife image captioned by its
    colours this epoch: the loss must not teach the text to tell those two apart."""
    from training.data.caption_keys import described_keys, positives_matrix, text_keys
    from training.nn.noised_clip import clip_contrastive_loss

    captions = ["a red circle on a blue background, with a knife",
                "a green star on a red background, With a knife",
                "a blue square on a white background"]
    texts = ["with a knife", "a green star on a red background", "a blue square on a white background"]
    positives = positives_matrix(torch.from_numpy(described_keys(captions)), torch.from_numpy(text_keys(texts)))
    assert positives.tolist() == [[True, False, False],
                                  [True, True, False],     # the knife clause is true of image 1 as well
                                  [False, False, True]]
    knife_to_both = torch.tensor([[4.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    knife_to_one = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    assert clip_contrastive_loss(knife_to_both, positives=positives) < \
        clip_contrastive_loss(knife_to_one, positives=positives) - 0.3
    # plain InfoNCE (what the same-caption rule gives here, the three texts distinct) prefers the opposite
    assert clip_contrastive_loss(knife_to_one) < clip_contrastive_loss(knife_to_both)


def test_each_item_a_caption_lists_after_with_is_a_positive_of_its_image_on_its_own():
    """An image with a person and a knife is a positive of "with a knife": taken as one clause, the
    list made it a negative, and with it a third to a half of the worlds' knife images."""
    from training.data.caption_keys import caption_clauses, described_keys, positives_matrix, text_keys

    three = "a red circle on a blue background, with a person, a knife and a strange symbol"
    assert caption_clauses(three) == ["a red circle on a blue background", "with a person", "with a knife",
                                      "with a strange symbol"]
    captions = [three, "a green star on a red background, with a knife and a person",
                "a blue square on a white background, with a strange symbol"]
    texts = ["with a knife", "with a person", "with a strange symbol", "a blue square on a white background"]
    positives = positives_matrix(torch.from_numpy(described_keys(captions)), torch.from_numpy(text_keys(texts)))
    assert positives.tolist() == [[True, True, True, False],
                                  [True, True, False, False],
                                  [False, False, True, True]]
    # commas outside a "with" list stay clauses of their own
    assert caption_clauses("a big red circle, a small blue square") == ["a big red circle", "a small blue square"]


def test_the_clean_step_uses_the_batch_s_caption_keys(clip_and_batch):
    from training.data.caption_keys import described_keys, positives_matrix, text_keys
    from training.nn.noised_clip import clip_contrastive_loss
    from training.trainer.objectives import step_loss_fn

    model, diffusion, batch = clip_and_batch
    captions = ["a red circle, with a knife", "a blue square, with a knife", "a green star"]
    texts = ["with a knife", "a blue square", "a green star"]
    keyed = {**batch, "text_keys": torch.from_numpy(text_keys(texts)),
             "described_keys": torch.from_numpy(described_keys(captions))}
    with torch.no_grad():
        out = step_loss_fn("clip", clip_mode="clean")(model, diffusion, keyed, torch.Generator().manual_seed(1),
                                                       torch.device("cpu"))
        logits = model(batch["x0"], torch.zeros(3, dtype=torch.long), batch["tokens"], batch["mask"])
    positives = positives_matrix(keyed["described_keys"], keyed["text_keys"])
    torch.testing.assert_close(out["loss"], clip_contrastive_loss(logits, positives=positives))
    assert not torch.allclose(out["loss"], clip_contrastive_loss(logits))


def test_sigmoid_loss_is_one_binary_decision_per_pair():
    from training.nn.noised_clip import clip_sigmoid_loss

    logits = torch.tensor([[3.0, -2.0], [1.0, 0.5]])
    positives = torch.tensor([[True, False], [True, True]])
    expected = -(torch.nn.functional.logsigmoid(torch.tensor([3.0, 2.0, 1.0, 0.5]))).sum() / 2
    torch.testing.assert_close(clip_sigmoid_loss(logits, positives=positives), expected)
    per_image = clip_sigmoid_loss(logits, positives=positives, reduction="none")
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image.mean(), expected)


def test_sigmoid_loss_pulls_a_hard_positive_however_many_share_its_text():
    """"with a knife" true of n images of the batch: softmax spreads one unit of target over them, so
    the pull on one badly scored (small, covered) knife shrinks as 1/n; the sigmoid loss pulls it as
    hard whatever n is, as a detector's loss does."""
    from training.nn.noised_clip import clip_contrastive_loss, clip_sigmoid_loss

    def pull_on_hard_positive(loss, n):
        b = 16
        logits = torch.zeros(b, b)
        logits[:n, 0] = 5.0
        logits[0, 0] = -5.0              # image 0: a knife the text "with a knife" (column 0) scores low
        logits = logits.requires_grad_()
        positives = torch.eye(b, dtype=torch.bool)
        positives[:n, 0] = True
        loss(logits, positives=positives).backward()
        return -float(logits.grad[0, 0])

    softmax = [pull_on_hard_positive(clip_contrastive_loss, n) for n in (2, 8)]
    sigmoid = [pull_on_hard_positive(clip_sigmoid_loss, n) for n in (2, 8)]
    assert softmax[1] < 0.8 * softmax[0]      # 0.035 against 0.047
    assert sigmoid[1] == pytest.approx(sigmoid[0])
    assert sigmoid[1] > 1.5 * softmax[1]       # 0.062


def test_a_sigmoid_clip_learns_its_bias_and_trains_with_its_own_loss():
    from training.diffusion import create_diffusion
    from training.factory import create_model
    from training.model_config import load_model_config
    from training.nn.noised_clip import clip_sigmoid_loss, clip_tokens_and_mask
    from training.tokenizers import build_tokenizer
    from training.trainer.objectives import step_loss_fn

    cfg = load_model_config("tiny-clip")
    cfg = cfg.model_copy(update={"extra": {**cfg.extra, "contrastive_loss": "sigmoid", "logit_scale": 10.0,
                                           "learn_logit_scale": True}})
    torch.manual_seed(0)
    model = create_model(cfg, device="cpu")
    assert "logit_bias" in model.state_dict() and model.logit_bias.requires_grad
    assert model.logit_bias.item() == -10.0
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    tokens, mask = clip_tokens_and_mask(build_tokenizer(cfg), ["a red circle", "a blue square"], cfg.text_ctx)
    t = torch.zeros(2, dtype=torch.long)
    z = model.logit_scale_value() * model.encode_image(x0, t) @ model.encode_text(tokens, mask).T
    torch.testing.assert_close(model(x0, t, tokens, mask), z - 10.0)
    batch = {"x0": x0, "tokens": tokens, "mask": mask}
    out = step_loss_fn("clip", clip_mode="clean", clip_loss="sigmoid")(
        model, create_diffusion(cfg, timestep_respacing=""), batch, torch.Generator().manual_seed(0),
        torch.device("cpu"))
    torch.testing.assert_close(out["loss"], clip_sigmoid_loss(model(x0, t, tokens, mask), tokens))
    out["loss"].backward()
    assert model.logit_bias.grad is not None and float(model.logit_bias.grad) != 0.0
    # a softmax CLIP keeps glide's state dict: no bias key
    assert "logit_bias" not in create_model(load_model_config("tiny-clip"), device="cpu").state_dict()
