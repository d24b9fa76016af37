"""Fast paths stay correct: tokenized-split cache, in-memory merge, bf16 evaluation with agreement, MFU formula."""

import json

import pytest

from conftest import ARCHS, TEXTS, logits_of


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenized"


def _splits(texts, labels=None):
    import datasets

    labels = labels or [i % 2 for i in range(len(texts))]
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": labels})})


def _tokenizer(tiny_models, arch="bert"):
    from peftsent.modeling import load_tokenizer

    return load_tokenizer(str(tiny_models[arch]))


def test_tokenized_splits_are_reused_across_calls(tiny_models, cache_dir, monkeypatch):
    from peftsent import data
    from peftsent.tokenization import TokenPolicy

    tokenizer = _tokenizer(tiny_models)
    first = data.tokenize_splits(_splits(TEXTS), tokenizer, TokenPolicy(32))
    files = sorted(cache_dir.glob("*.arrow"))
    assert len(files) == 1
    # a second call must read the file, not tokenize: a tokenizer that fails proves it is not called
    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: pytest.fail("tokenized again"))
    second = data.tokenize_splits(_splits(TEXTS), tokenizer, TokenPolicy(32))
    assert second["train"]["input_ids"] == first["train"]["input_ids"]
    assert second["train"]["length"] == first["train"]["length"]
    assert sorted(cache_dir.glob("*.arrow")) == files


@pytest.mark.parametrize("change", ["max_length", "text", "label", "tokenizer"])
def test_cache_key_changes_with_data_tokenizer_and_length(tiny_models, cache_dir, change):
    from peftsent import data
    from peftsent.tokenization import TokenPolicy

    tokenizer = _tokenizer(tiny_models)
    base = data.tokenize_splits(_splits(TEXTS), tokenizer, TokenPolicy(32))
    texts, labels, length, other = list(TEXTS), [i % 2 for i in range(len(TEXTS))], 32, tokenizer
    if change == "max_length":
        length = 4
    elif change == "text":
        texts[0] = texts[0] + " really"
    elif change == "label":
        labels[0] = 1 - labels[0]
    else:
        other = _tokenizer(tiny_models, "roberta")
        other.add_tokens(["zzzz"])  # same files, different vocabulary
    changed = data.tokenize_splits(_splits(texts, labels), other, TokenPolicy(length))
    assert len(list(cache_dir.glob("*.arrow"))) == 2
    if change == "max_length":
        assert max(changed["train"]["length"]) == 4 < max(base["train"]["length"])


def test_cache_can_be_turned_off(tiny_models, tmp_path, monkeypatch):
    from peftsent import data
    from peftsent.tokenization import TokenPolicy

    monkeypatch.setenv("PEFTSENT_CACHE", "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    out = data.tokenize_splits(_splits(TEXTS), _tokenizer(tiny_models), TokenPolicy(32))
    assert out["train"]["length"] and not list(tmp_path.rglob("*.arrow"))


def _peft_config(arch, method):
    from peft import IA3Config, LoHaConfig, LoraConfig

    from peftsent.registry import arch_spec

    spec = arch_spec(arch)
    if method == "lora":
        return LoraConfig(target_modules=list(spec.linear_modules), modules_to_save=list(spec.head_modules),
                          init_lora_weights=False)
    if method == "loha":
        return LoHaConfig(target_modules=list(spec.linear_modules), modules_to_save=list(spec.head_modules),
                          init_weights=False)
    return IA3Config(target_modules=list(spec.ia3_target_modules), feedforward_modules=list(spec.ia3_feedforward_modules),
                     modules_to_save=list(spec.head_modules), init_ia3_weights=False)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora"])
def test_merged_in_memory_gives_the_adapter_logits_and_restores_the_weights(tiny_models, arch, method):
    import torch
    from peft import get_peft_model

    from peftsent.modeling import load_base_model, load_tokenizer
    from peftsent.speed import merged_in_memory

    torch.manual_seed(0)
    model = get_peft_model(load_base_model(str(tiny_models[arch])), _peft_config(arch, method))
    tokenizer = load_tokenizer(str(tiny_models[arch]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unmerged = logits_of(model, tokenizer)
    with model.disable_adapter():
        plain = logits_of(model, tokenizer)
    assert not torch.allclose(unmerged, plain, atol=1e-4)  # the adapter changes the logits: the test can fail
    with merged_in_memory(model) as merged:
        assert merged
        inside = logits_of(model, tokenizer)
    torch.testing.assert_close(inside, unmerged, atol=1e-5, rtol=1e-5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=1e-6, rtol=1e-6)


def test_models_that_cannot_merge_exactly_are_left_alone(tiny_models):
    from peft import get_peft_model

    from peftsent.modeling import load_base_model
    from peftsent.speed import can_merge, merged_in_memory

    assert not can_merge(get_peft_model(load_base_model(str(tiny_models["bert"])), _peft_config("bert", "ia3")))
    model = load_base_model(str(tiny_models["bert"]))
    assert not can_merge(model)
    with merged_in_memory(model) as merged:
        assert merged is False


def test_bf16_evaluation_reports_its_agreement_with_float32(tiny_models, cache_dir):
    import numpy as np
    from peft import LoraConfig, get_peft_model

    from peftsent import data
    from peftsent.tokenization import TokenPolicy
    from peftsent.inference import predict_checked, predict_logits
    from peftsent.modeling import load_base_model

    tokenizer = _tokenizer(tiny_models)
    model = get_peft_model(load_base_model(str(tiny_models["bert"])),
                           LoraConfig(target_modules=["query", "value"], init_lora_weights=False))
    split = data.tokenize_splits(_splits(TEXTS * 6), tokenizer, TokenPolicy(32))["train"]
    reference, labels, _ = predict_logits(model, tokenizer, split, progress=False)
    logits, fast_labels, _, report = predict_checked(model, tokenizer, split, batch_size=4, dtype="bfloat16",
                                                     probe=10, progress=False)
    assert report["dtype"] == "bfloat16" and report["merged"] is True
    assert report["agreement"]["n"] == 10
    assert 0 < report["agreement"]["max_abs_dlogit"] < 0.1  # bf16 really ran, and stayed close
    assert (fast_labels == labels).all()
    np.testing.assert_allclose(logits, reference, atol=0.1)
    _, _, _, exact = predict_checked(model, tokenizer, split, dtype="float32", progress=False)
    assert exact["agreement"] is None and exact["dtype"] == "float32"


def test_eval_and_predict_take_a_dtype(tiny_models, reviews_csv, tmp_path, capsys, cache_dir):
    from peftsent.eval import main as eval_main
    from peftsent.predict import main as predict_main

    target = str(tiny_models["bert"])
    assert eval_main([target, "--data", str(reviews_csv), "--dtype", "bfloat16", "--out", str(tmp_path), "--allow-random-weights", "--label-order", "negative,positive"]) == 0
    written = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert written["inference"]["dtype"] == "bfloat16" and written["inference"]["agreement"]["n"] > 0
    assert "agreement with float32" in capsys.readouterr().out
    assert predict_main([target, "--dtype", "float32", "--allow-random-weights", "--label-order", "negative,positive", *TEXTS]) == 0
    exact = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in exact] == TEXTS  # batched by length, printed in input order
    assert predict_main([target, "--dtype", "bfloat16", "--allow-random-weights", "--label-order", "negative,positive", *TEXTS]) == 0
    captured = capsys.readouterr()
    assert "vs float32 on the first 3 texts" in captured.err
    fast = [json.loads(line) for line in captured.out.splitlines()]
    for f, e in zip(fast, exact):  # an untrained head sits near p = 0.5, so compare probabilities, not labels
        assert f["text"] == e["text"]
        assert abs(list(f["probabilities"].values())[-1] - list(e["probabilities"].values())[-1]) < 0.02


def test_predict_batches_by_length_without_changing_results(tiny_models):
    import numpy as np

    from peftsent.loading import load_target
    from peftsent.predict import text_logits

    loaded = load_target(str(tiny_models["bert"]), allow_random_weights=True, label_order="negative,positive")  # untrained head: fixed within this load
    texts = [TEXTS[2], TEXTS[0], TEXTS[1], TEXTS[2] + " " + TEXTS[2]]
    together = text_logits(loaded, texts, batch_size=4)
    one_by_one = np.concatenate([text_logits(loaded, [t], batch_size=1) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_training_flops_follow_kaplan_for_bert_base():
    from transformers import BertConfig

    from peftsent.speed import mfu, training_flops_per_token

    config = BertConfig()  # bert-base: L=12, d=768, d_ff=3072
    n = 12 * (4 * 768**2 + 2 * 768 * 3072)  # 84,934,656 non-embedding weights
    assert n == 84_934_656
    assert training_flops_per_token(config, 128, full=True) == 6 * n + 12 * 12 * 128 * 768
    assert training_flops_per_token(config, 128, full=False, adapter_params=1000) == 4 * n + 6000 + 12 * 12 * 128 * 768
    assert mfu(1000, 1e9, 4e12) == pytest.approx(0.25)


def test_gpu_benchmark_skips_cleanly_without_cuda(capsys):
    import importlib.util

    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the gpu-marked test runs the benchmark")
    spec = importlib.util.spec_from_file_location("gpu_imdb", "benchmarks/gpu_imdb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 0
    assert "skipped" in capsys.readouterr().out


@pytest.mark.gpu
def test_gpu_benchmark_runs_a_short_epoch():
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = importlib.util.spec_from_file_location("gpu_imdb", "benchmarks/gpu_imdb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--reviews", "2048", "--lengths", "256"]) == 0


def test_a_bf16_run_with_frozen_weights_in_bf16_is_reproduced_by_eval(tiny_models, reviews_csv, tmp_path):
    """End to end under bf16 autocast (frozen weights stored in bf16 while training): the model is float32
    again for the final evaluation, and eval of the run reproduces metrics.json exactly."""
    import torch

    import peftsent.train as train_module
    from peftsent.eval import evaluate
    from peftsent.recipe import resolve_recipe
    from peftsent.training_args import bf16_available

    from conftest import tiny_recipe

    if not bf16_available():
        pytest.skip("no native bf16 on this CPU")
    seen = {}
    real = train_module._final_evaluation

    def spy(trainer, *args, **kwargs):
        seen["dtypes"] = {p.dtype for p in trainer.model.parameters()}
        return real(trainer, *args, **kwargs)

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "lora"}, bf16=True, max_steps=2)
    import unittest.mock

    with unittest.mock.patch.object(train_module, "_final_evaluation", spy):
        run = train_module.train(resolve_recipe(raw))
    assert seen["dtypes"] == {torch.float32}
    metrics = json.loads((run / "metrics.json").read_text())
    result = evaluate(str(run))
    assert {k: result[k] for k in metrics["test"]} == metrics["test"]
