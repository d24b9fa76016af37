import pytest

from peftsent.errors import RecipeError
from peftsent.modeling import build_model
from peftsent.recipe import resolve_recipe

from conftest import ARCHS, tiny_recipe

METHODS = ("full", "lora", "ia3")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_parameter_report_matches_the_model(arch, method, tiny_models, reviews_csv, tmp_path):
    recipe = resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "r", {"name": method}))
    model, _, report = build_model(recipe)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.trainable == trainable
    if method == "full":
        assert report.adapter == 0 and report.frozen == 0
    else:
        assert report.adapter > 0 and report.head > 0 and report.backbone_trainable == 0
        # total excludes peft's frozen copies of the head (original_module)
        base_total = sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)
        assert report.total == base_total
    head = {"distilbert": ("pre_classifier", "classifier"), "bert": ("classifier",), "roberta": ("classifier",)}[arch]
    expected_head = sum(p.numel() for n, p in model.named_parameters()
                        if p.requires_grad and any(f"{h}." in n for h in head) and ".original_module." not in n)
    assert report.head == expected_head


def test_config_carries_label_names(tiny_models, reviews_csv, tmp_path):
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r"))
    model, _, _ = build_model(recipe)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}


def test_target_module_that_matches_nothing_is_rejected(tiny_models, reviews_csv, tmp_path):
    method = {"name": "lora", "target_modules": ["query", "vlaue"]}
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r", method))
    with pytest.raises(RecipeError, match="'vlaue' matches no module"):
        build_model(recipe)


def _dropouts(model):
    """{module path: p} of every dropout in ``model``, and the attention dropout its config holds."""
    import torch

    probs = {name: m.p for name, m in model.named_modules()
             if isinstance(m, torch.nn.Dropout) and ".lora_dropout." not in name}  # method.lora_dropout decides those
    config = model.config
    attention = getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", None))
    return probs, attention


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ("full", "lora"))
def test_model_dropout_switches_off_the_encoder_dropout_only(arch, method, tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "r", {"name": method})
    kept, _ = _dropouts(build_model(resolve_recipe(raw))[0])
    assert any(p > 0 for name, p in kept.items() if ".encoder." in name or ".transformer." in name)
    raw["model"]["dropout"] = 0.0
    model = build_model(resolve_recipe(raw))[0]
    probs, attention = _dropouts(model)
    encoder = {name: p for name, p in probs.items() if ".embeddings." in name or ".encoder." in name or ".transformer." in name}
    assert encoder and set(encoder.values()) == {0.0}, encoder
    assert attention == 0.0
    # the classification head keeps the checkpoint's dropout (0.1 for BERT/RoBERTa, 0.2 for DistilBERT)
    head = {name: p for name, p in probs.items() if name not in encoder and ".original_module" not in name}
    assert head and all(p == kept[name] > 0 for name, p in head.items()), (head, kept)


def test_model_dropout_out_of_range_is_a_recipe_error(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r")
    raw["model"]["dropout"] = 1.0
    with pytest.raises(RecipeError, match=r"model.dropout: expected a probability in \[0, 1\)"):
        resolve_recipe(raw)
