"""Every supported (architecture, method) pair trains, saves, reloads and (if mergeable) merges exactly."""

import pytest
import torch

import peftsent.train as train_module
from peftsent.errors import RecipeError
from peftsent.loading import load_target
from peftsent.methods import METHODS
from peftsent.modeling import load_base_model, merge_adapter
from peftsent.recipe import resolve_recipe
from peftsent.registry import ARCHITECTURES

from conftest import ARCHS, logits_of, tiny_recipe, train_keeping_model

#: options that start each adapter away from the identity, so the round-trip checks can fail
AWAY = {
    "lora": {"init_lora_weights": False},
    "adalora": {"init_lora_weights": False},
    "ia3": {"init_ia3_weights": False},
    "loha": {"init_weights": False},
    "lokr": {"init_weights": False},
    "vera": {"init_weights": False, "r": 8},
    "ln_tuning": {},
    "prompt_tuning": {"num_virtual_tokens": 4},
    "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
    "bottleneck": {"init_weights": False, "variant": "houlsby", "reduction_factor": 4},
}
PAIRS = [(arch, method) for arch in ARCHS for method in AWAY if method not in ARCHITECTURES[arch].unsupported]
UNSUPPORTED = [(arch, method) for arch, spec in ARCHITECTURES.items() for method in spec.unsupported]


def test_every_catalogue_method_is_covered():
    assert set(AWAY) | {"full", "qlora", "prefix_tuning"} == set(METHODS)


@pytest.mark.parametrize(("arch", "method"), PAIRS, ids=[f"{a}-{m}" for a, m in PAIRS])
def test_method_trains_reloads_and_merges(arch, method, tiny_models, reviews_csv, tmp_path, monkeypatch):
    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", {"name": method, **AWAY[method]},
                      learning_rate=1e-2)
    run, in_memory, tokenizer = train_keeping_model(resolve_recipe(raw), monkeypatch)
    import json

    report = json.loads((run / "metrics.json").read_text())["parameters"]
    trainable = sum(p.numel() for n, p in in_memory.named_parameters() if p.requires_grad)
    assert report["trainable"] == trainable and report["adapter"] > 0 and report["head"] > 0

    trained = logits_of(in_memory, tokenizer)
    base = logits_of(load_base_model(str(tiny_models[arch])), tokenizer)
    assert not torch.allclose(trained, base, atol=1e-4), "the adapter changed nothing: the test could not fail"
    reloaded = load_target(str(run))
    assert torch.allclose(logits_of(reloaded.model, tokenizer), trained, atol=1e-5)
    if METHODS[method].mergeable:
        merged = merge_adapter(load_target(str(run)).model)
        assert torch.allclose(logits_of(merged, tokenizer), trained, atol=1e-5)


@pytest.mark.parametrize(("arch", "method"), UNSUPPORTED, ids=[f"{a}-{m}" for a, m in UNSUPPORTED])
def test_unsupported_pair_is_rejected_when_resolved(arch, method, tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", {"name": method})
    with pytest.raises(RecipeError) as info:
        resolve_recipe(raw)
    assert f"'{method}' does not work with {arch}" in str(info.value) and "methods that do: full, lora" in str(info.value)


def test_prompt_methods_leave_room_for_virtual_tokens(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "prompt_tuning", "num_virtual_tokens": 10})
    raw["model"]["max_length"] = 512  # tiny BERT has 64 positions
    run = train_module.train(resolve_recipe(raw))
    loaded = load_target(str(run))
    assert loaded.max_length == 64 - 10
    from peftsent.predict import predict_texts

    assert len(list(predict_texts(loaded, ["good " * 500]))) == 1  # no position overflow


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rejection only happens without CUDA")
def test_qlora_is_rejected_without_cuda(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "qlora"})
    with pytest.raises(RecipeError, match="needs a CUDA GPU"):
        resolve_recipe(raw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="qlora needs CUDA")
def test_qlora_trains_and_merges_on_a_full_precision_base(tiny_models, reviews_csv, tmp_path):
    from peftsent.merge import merge

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "qlora"})
    run = train_module.train(resolve_recipe(raw))
    target, parity = merge(run, probe_size=8)
    assert parity is not None and (target / "config.json").is_file()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_tuning_reason_still_holds(arch):
    """The registry says these encoders take no past_key_values; fail if transformers changes that."""
    import inspect

    import transformers

    encoder = {"distilbert": transformers.DistilBertModel, "bert": transformers.BertModel,
               "roberta": transformers.RobertaModel}[arch]
    assert "past_key_values" not in inspect.signature(encoder.forward).parameters
    assert "prefix_tuning" in ARCHITECTURES[arch].unsupported


def test_readme_capability_table_matches_the_registry():
    from pathlib import Path

    from peftsent.methods import capability_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = "<!-- capability-table:start -->\n", "\n<!-- capability-table:end -->"
    assert start in readme and end in readme, "README.md lost its capability-table markers"
    embedded = readme.split(start, 1)[1].split(end, 1)[0]
    assert embedded == capability_table(), "README is stale: paste the output of python -m peftsent.methods"
