"""Inference precision is decided once (:func:`peftsent.speed.inference_precision`): for ``bfloat16`` every path
that scores reviews (train's final evaluation, ``eval``, ``predict``, windows and cut reviews) runs the model
with its weights stored in bf16, not float32 weights under autocast, and gives the float32 tensors back. Each
test fails on ffd8c6b, where bf16 inference was autocast over float32 weights."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from peftsent.modeling import build_model
from peftsent.recipe import resolve_recipe
from peftsent.speed import can_merge, inference_precision, merged_in_memory

from conftest import TEXTS, _vocab, logits_of, tiny_recipe
from test_methods import AWAY, PAIRS

#: every method kind of the catalogue that runs on CPU, started away from the identity (test_methods.AWAY)
METHODS = {"full": {"name": "full"}, **{m: {"name": m, **options} for m, options in AWAY.items()}}
CASES = [(arch, "full") for arch in sorted({a for a, _ in PAIRS})] + PAIRS


def _floating(model) -> dict:
    return {f"{kind}:{name}": t for kind, named in (("p", model.named_parameters()), ("b", model.named_buffers()))
            for name, t in named if t.is_floating_point()}


@pytest.mark.parametrize(("arch", "method"), CASES, ids=[f"{a}-{m}" for a, m in CASES])
@pytest.mark.parametrize("merge", [False, True], ids=["unmerged", "merged"])
def test_bf16_inference_stores_every_tensor_in_bf16_and_gives_float32_back(arch, method, merge, tiny_models,
                                                                            reviews_csv, tmp_path):
    model, tokenizer, _ = build_model(resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "r",
                                                                 METHODS[method])))
    if merge and not can_merge(model):
        pytest.skip("the method does not merge exactly: scored unmerged")
    model.eval()
    before = {k: t.detach().clone() for k, t in _floating(model).items()}
    reference = logits_of(model, tokenizer)
    with merged_in_memory(model) if merge else contextlib.nullcontext(), inference_precision(model, "bfloat16") as stored:
        assert stored == len(before) > 0
        assert {t.dtype for t in _floating(model).values()} == {torch.bfloat16}
        fast = logits_of(model, tokenizer)
    assert not torch.equal(fast, reference)  # bf16 really ran
    torch.testing.assert_close(fast, reference, atol=0.06, rtol=0.06)
    after = _floating(model)
    assert after.keys() == before.keys()
    for key, value in after.items():
        assert value.dtype == torch.float32, key
        # unmerge subtracts the merged delta again: float32 rounding (AdaLoRA up to 2e-6), bit-exact unmerged
        torch.testing.assert_close(value, before[key], atol=1e-5 if merge else 0, rtol=0)
    with inference_precision(model, "float32") as stored:  # as it is (merge/unmerge rounds the weights by ~1e-7)
        assert stored == 0
        torch.testing.assert_close(logits_of(model, tokenizer), reference, atol=1e-5 if merge else 0,
                                   rtol=1e-5 if merge else 0)


def test_inference_precision_refuses_an_unknown_dtype(tiny_models, reviews_csv, tmp_path):
    model, _, _ = build_model(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r")))
    with pytest.raises(ValueError, match="dtype must be one of"):
        with inference_precision(model, "float16"):
            pass


def _record_weight_dtypes(monkeypatch) -> list:
    """The word-embedding weight's dtype at every forward that reaches it: the storage the model ran in."""
    seen, real = [], torch.nn.Embedding.forward
    vocab = len(_vocab())

    def spy(self, ids):
        if self.num_embeddings == vocab:
            seen.append(self.weight.dtype)
        return real(self, ids)

    monkeypatch.setattr(torch.nn.Embedding, "forward", spy)
    return seen


@pytest.mark.parametrize(("arch", "method", "long_reviews"), [("bert", "lora", "window"),
                                                             ("roberta", "full", "truncate")])
def test_every_scoring_path_runs_bf16_weights(arch, method, long_reviews, tiny_models, reviews_csv, tmp_path,
                                              monkeypatch, capsys):
    """A run trained under bf16 autocast is scored in bf16 by train's final evaluation, ``eval`` and
    ``predict`` (the run's own precision), each with bf16-stored weights; ``--dtype float32`` never is, and
    ``eval`` still reproduces ``metrics.json``."""
    from peftsent import training_args
    from peftsent.eval import evaluate
    from peftsent.predict import main as predict_main
    from peftsent.train import train

    def predict(*options) -> list[float]:
        capsys.readouterr()
        assert predict_main([str(run), *options, *TEXTS]) == 0
        return [json.loads(line)["probabilities"]["positive"] for line in capsys.readouterr().out.splitlines()]

    monkeypatch.setattr(training_args, "bf16_available", lambda: True)
    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", METHODS[method], max_steps=2, bf16="auto")
    raw["model"].update(long_reviews=long_reviews)
    seen = _record_weight_dtypes(monkeypatch)
    run = train(resolve_recipe(raw))
    phases = {"train": list(seen)}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["inference"]["dtype"] == "bfloat16"
    seen.clear()
    result = evaluate(str(run))
    phases["eval"] = list(seen)
    assert {k: result[k] for k in metrics["test"]} == metrics["test"]
    seen.clear()
    probabilities = predict()  # the run's own precision
    phases["predict"] = list(seen)
    for phase, dtypes in phases.items():
        assert torch.bfloat16 in dtypes, f"{phase}: the model never ran with bf16 weights ({set(dtypes)})"
    seen.clear()
    exact = predict("--dtype", "float32")
    evaluate(str(run), dtype="float32")
    assert set(seen) == {torch.float32}
    assert probabilities == pytest.approx(exact, abs=0.02)


@pytest.mark.parametrize("manager", ["inference_precision", "frozen_weights_in"])
def test_a_failure_while_casting_gives_every_cast_tensor_back(manager, tiny_models, reviews_csv, tmp_path,
                                                             monkeypatch):
    """Out of memory (or Ctrl-C) on the 10th bf16 cast: the nine tensors already cast are float32 again, and a
    float32 forward still runs (found by a breaker: they stayed bf16 and the next forward failed)."""
    from peftsent import speed

    model, tokenizer, _ = build_model(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r",
                                                                 METHODS["lora"])))
    before = {k: t.detach().clone() for k, t in _floating(model).items()}
    reference = logits_of(model, tokenizer)
    real, count = torch.Tensor.to, {"n": 0}

    def flaky(self, *args, **kwargs):
        if args and args[0] is torch.bfloat16:
            count["n"] += 1
            if count["n"] == 10:
                raise torch.OutOfMemoryError("out of memory (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", flaky)
    with pytest.raises(torch.OutOfMemoryError):
        with getattr(speed, manager)(model, "bfloat16"):
            pass
    monkeypatch.setattr(torch.Tensor, "to", real)
    assert count["n"] == 10
    for key, value in _floating(model).items():
        assert value.dtype == torch.float32 and torch.equal(value, before[key]), key
    assert torch.equal(logits_of(model, tokenizer), reference)
