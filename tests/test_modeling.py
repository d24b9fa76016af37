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
