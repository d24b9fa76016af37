import json

import pytest
import torch

import peftsent.train as train_module
from peftsent.errors import MergeError
from peftsent.loading import load_target
from peftsent.merge import TOLERANCES, merge
from peftsent.modeling import merge_adapter
from peftsent.recipe import resolve_recipe

from conftest import ARCHS, logits_of, tiny_recipe, train_keeping_model

AWAY = {"lora": {"name": "lora", "init_lora_weights": False}, "ia3": {"name": "ia3", "init_ia3_weights": False}}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", list(AWAY))
def test_trained_reloaded_merged_and_exported_logits_agree(arch, method, tiny_models, reviews_csv, tmp_path, monkeypatch):
    from peftsent.modeling import load_base_model

    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", AWAY[method], learning_rate=1e-2)
    run, in_memory, tokenizer = train_keeping_model(resolve_recipe(raw), monkeypatch)
    trained = logits_of(in_memory, tokenizer)
    base = logits_of(load_base_model(str(tiny_models[arch])), tokenizer)
    assert not torch.allclose(trained, base, atol=1e-4), "adapter is identity: the test could not fail"

    reloaded = load_target(str(run))
    assert torch.allclose(logits_of(reloaded.model, tokenizer), trained, atol=1e-5)
    merged_in_memory = merge_adapter(load_target(str(run)).model)
    assert torch.allclose(logits_of(merged_in_memory, tokenizer), trained, atol=1e-5)

    target, parity = merge(run, probe_size=16)
    assert parity.passed and parity.max_abs_logit_diff <= 1e-4 and parity.agreement == 1.0
    from transformers import AutoModelForSequenceClassification

    from peftsent.calibration import read_temperature

    exported = AutoModelForSequenceClassification.from_pretrained(target)
    temperature = read_temperature(run)  # folded into the exported classifier: its logits are trained / T
    assert temperature is not None and exported.config.peftsent_temperature == pytest.approx(temperature)
    assert torch.allclose(logits_of(exported, tokenizer), trained / temperature, atol=1e-5)
    assert exported.config.id2label == {0: "negative", 1: "positive"}


@pytest.fixture(scope="module")
def lora_run(tiny_models, reviews_csv, tmp_path_factory):
    raw = tiny_recipe(tiny_models["distilbert"], reviews_csv, tmp_path_factory.mktemp("runs") / "lora", AWAY["lora"])
    return train_module.train(resolve_recipe(raw))


def test_merged_directory_holds_exactly_a_model(lora_run):
    target, _ = merge(lora_run, probe_size=8, force=True)
    assert {p.name for p in target.iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"}
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["DistilBertForSequenceClassification"]
    card = (target / "README.md").read_text()
    assert "max |delta logit|" in card and "from_pretrained" in card


def test_merged_model_works_in_a_plain_pipeline(lora_run):
    from transformers import pipeline

    target, _ = merge(lora_run, probe_size=8, force=True)
    classify = pipeline("text-classification", model=str(target))
    result = classify(["a great movie", "an awful movie"])
    assert {r["label"] for r in result} <= {"negative", "positive"}


def test_adapter_loads_with_plain_peft_and_keeps_the_trained_head(lora_run, tiny_models):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = AutoModelForSequenceClassification.from_pretrained(tiny_models["distilbert"], num_labels=2)
    plain = PeftModel.from_pretrained(base, lora_run / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(lora_run / "adapter")
    ours = load_target(str(lora_run))
    assert torch.allclose(logits_of(plain, tokenizer), logits_of(ours.model, tokenizer), atol=1e-6)


def test_second_merge_is_a_no_op(lora_run):
    merge(lora_run, probe_size=8, force=True)
    target, parity = merge(lora_run, probe_size=8)
    assert parity is None and target.is_dir()


def test_failing_parity_writes_nothing(lora_run, tmp_path, monkeypatch):
    monkeypatch.setitem(TOLERANCES, "float32", -1.0)
    with pytest.raises(MergeError, match="nothing was written"):
        merge(lora_run, out=tmp_path / "export", probe_size=8)
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export*"))


def test_bf16_export_reports_its_parity(lora_run, tmp_path):
    target, parity = merge(lora_run, out=tmp_path / "bf16", dtype="bfloat16", probe_size=8)
    assert parity.tolerance == TOLERANCES["bfloat16"] and 0 <= parity.agreement <= 1
    assert json.loads((target / "config.json").read_text())["dtype"] == "bfloat16"


def test_full_run_has_nothing_to_merge(tiny_models, reviews_csv, tmp_path):
    run = train_module.train(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "full", {"name": "full"})))
    with pytest.raises(MergeError, match="nothing to merge.*model"):
        merge(run)


def test_merge_cli_user_errors(tmp_path, capsys):
    from peftsent.merge import main

    assert main([str(tmp_path)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


def test_eval_of_the_merged_directory_equals_eval_of_the_run(lora_run):
    from peftsent.eval import evaluate

    merge(lora_run, probe_size=8, force=True)
    from_run = evaluate(str(lora_run))
    from_merged = evaluate(str(lora_run / "merged"))  # data and max length come from the run's recipe
    assert from_merged["count"] == from_run["count"] and from_merged["accuracy"] == from_run["accuracy"]
    assert from_merged["log_loss"] == pytest.approx(from_run["log_loss"], abs=1e-5)
    assert (lora_run / "eval" / "merged-reviews-test.json").is_file()
