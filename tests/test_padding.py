"""Batch padding is decided once (:class:`peftsent.speed.BatchPadding`): every path that runs the model on
tokenized reviews (training steps, training's validation passes, the final evaluation over windows, ``eval``,
``predict``) pads a batch to a multiple of 32 tokens, never beyond the run's token length. Few distinct
shapes keep oneDNN's per-shape primitive cache (and the process's RSS) small. Each test fails on d3db77e,
where every batch was padded to its own longest row."""

from __future__ import annotations

import json

import pytest
import torch

from peftsent.recipe import resolve_recipe
from peftsent.speed import PAD_TO_MULTIPLE_OF, BatchPadding

from conftest import ARCHS, _vocab, make_reviews, tiny_recipe, write_csv
from test_one_truth import long_reviews

METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "init_lora_weights": False},
    # 8 virtual tokens: the capped length (64 positions - 8 = 56) is no multiple of 32 and rounding up must stop there
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 8},
}
DEFAULT_CASES = {("bert", "lora"), ("distilbert", "prompt_tuning"), ("roberta", "full")}


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    """Reviews of 8 tokens and of 20-72: batches padded to 32 and to the cap both occur."""
    rows = [row for pair in zip(long_reviews(24), make_reviews(24, seed=3)) for row in pair]
    return write_csv(tmp_path_factory.mktemp("pad") / "mixed.csv", rows)


def test_padded_length_rounds_up_to_the_multiple_and_stops_at_max_length():
    padding = BatchPadding(tokenizer=None, max_length=56)
    with pytest.raises(ValueError, match="empty batch"):
        padding([])
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        BatchPadding(None, 56, pad_to_multiple_of=0)
    assert PAD_TO_MULTIPLE_OF == 32
    assert [padding.padded_length(n) for n in (1, 31, 32, 33, 55, 56)] == [32, 32, 32, 56, 56, 56]
    assert padding.padded_length(70) == 70  # a row longer than max_length is never cut here
    assert BatchPadding(None, 512).padded_length(481) == 512


def test_batch_padding_pads_every_column_and_masks_the_padding(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    rows = [tokenizer("a great movie"), tokenizer("awful and boring plot, the acting was not very good")]
    batch = BatchPadding(tokenizer, 48)([dict(r, labels=i) for i, r in enumerate(rows)])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape == (2, 32)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(r["input_ids"]) for r in rows]
    assert batch["labels"].tolist() == [0, 1]


def test_batches_are_padded_on_the_right_whatever_the_tokenizer_says(tiny_models, tmp_path):
    """A tokenizer saved with padding_side left (many hub tokenizers are) must not shift positions or pool a pad
    token in place of [CLS]: predict of one review equals an unpadded forward pass (found by a breaker: 4.5e-3)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peftsent.loading import load_target
    from peftsent.predict import predict_texts

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_models["bert"], num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1})
    left = AutoTokenizer.from_pretrained(tiny_models["bert"], padding_side="left")
    model.save_pretrained(tmp_path / "left")
    left.save_pretrained(tmp_path / "left")
    batch = BatchPadding(left, 48)([left("a great movie"), left("awful and boring plot, not very good")])
    assert batch["attention_mask"][:, 0].tolist() == [1, 1]  # every row starts at position 0

    texts = ["a great movie", "awful and boring plot, the acting was not very good but the story was the best"]
    loaded = load_target(str(tmp_path / "left"))
    served = [p["probabilities"]["positive"] for p in predict_texts(loaded, texts, batch_size=2, dtype="float32")]
    with torch.no_grad():
        exact = [torch.softmax(loaded.model(**left([t], return_tensors="pt")).logits, -1)[0, 1].item() for t in texts]
    assert served == pytest.approx(exact, abs=1e-6)


def _record_lengths(monkeypatch) -> list[int]:
    """Sequence lengths of every batch that reaches the word embeddings (virtual-token embeddings left out)."""
    seen, real = [], torch.nn.Embedding.forward
    vocab = len(_vocab())

    def spy(self, ids):
        if self.num_embeddings == vocab and ids.dim() == 2:
            seen.append(ids.shape[1])
        return real(self, ids)

    monkeypatch.setattr(torch.nn.Embedding, "forward", spy)
    return seen


@pytest.mark.parametrize(("arch", "method"), [
    pytest.param(a, m, marks=() if (a, m) in DEFAULT_CASES else pytest.mark.slow) for a in ARCHS for m in METHODS])
def test_every_path_pads_batches_to_the_same_few_lengths(arch, method, tiny_models, long_csv, tmp_path, monkeypatch):
    from peftsent.eval import evaluate
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.train import train

    raw = tiny_recipe(tiny_models[arch], long_csv, tmp_path / "run", METHODS[method], max_steps=3,
                      per_device_train_batch_size=4, per_device_eval_batch_size=5, eval_strategy="steps",
                      eval_steps=2, save_strategy="no", load_best_model_at_end=False)
    raw["data"].update(validation_size=8, test_size=8)
    raw["model"].update(max_length=60, long_reviews="window", stride=8)
    seen = _record_lengths(monkeypatch)
    run = train(resolve_recipe(raw))
    cap = json.loads((run / "metrics.json").read_text())["max_length"]
    saved = next(run.glob("*/tokenizer_config.json"))  # adapter/ or model/: a plain pipeline pads as peftsent does
    assert json.loads(saved.read_text())["padding_side"] == "right"
    assert cap == (56 if method == "prompt_tuning" else 60)
    trained = list(seen)
    evaluate(str(run))
    evaluate(str(run), long_reviews="truncate", dtype="float32")
    loaded = load_target(str(run))
    list(predict_texts(loaded, [text for text, _ in long_reviews(12, seed=1)], batch_size=3))
    list(predict_texts(loaded, [text for text, _ in long_reviews(12, seed=1)], batch_size=3, long_reviews="truncate"))

    assert len(trained) > 6 and len(seen) > len(trained)  # training steps, validation, windows; eval; predict
    assert set(seen) <= {32, cap}, f"batch lengths {sorted(set(seen))}: expected multiples of 32 up to {cap}"
    assert {32, cap} <= set(seen) and cap in trained  # both the rounding and the cap were exercised
