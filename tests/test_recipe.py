from pathlib import Path

import pytest
import yaml

from peftsent.errors import RecipeError
from peftsent.recipe import load_recipe, resolve_recipe

from conftest import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(ROOT.joinpath("recipes").rglob("*.yaml"))


#: shipped recipes named for what they are for, not for their method (recipes/quick/best.yaml: the most accurate;
#: recipes/tweet_eval.yaml, recipes/sst5.yaml: their datasets, three and five classes)
NAMED_FOR_A_PURPOSE = {"best", "tweet_eval", "sst5"}


def _raw(tiny_models, reviews_csv, tmp_path, arch="bert", **method):
    return tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", method={"name": "lora", **method})


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_resolves(path):
    import torch

    if path.stem == "qlora" and not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="needs a CUDA GPU"):
            load_recipe(path)
        return
    recipe = load_recipe(path)
    if path.stem not in NAMED_FOR_A_PURPOSE:  # the other recipes are named for their method
        assert recipe.method_name in path.stem or recipe.method_name == path.stem
    assert recipe.train["output_dir"].startswith("runs/")
    assert recipe.model_type in {"bert", "distilbert", "roberta"}


def test_every_shipped_recipe_has_a_command_header():
    for path in RECIPES:
        header = path.read_text().splitlines()[:4]
        command = f"python -m peftsent.train {path.relative_to(ROOT)}"
        assert any(command in line for line in header), path


def test_unknown_key_names_path_and_closest_key(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path, lora_alpah=16)
    with pytest.raises(RecipeError) as info:
        resolve_recipe(raw)
    assert "method.lora_alpah" in str(info.value) and "did you mean 'lora_alpha'" in str(info.value)


def test_all_problems_reported_at_once(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path, r="eight")
    raw["train"]["lerning_rate"] = 1e-3
    raw["model"]["max_lenght"] = 12
    raw["evaluation"] = {}
    with pytest.raises(RecipeError) as info:
        resolve_recipe(raw)
    assert len(info.value.problems) == 4
    text = str(info.value)
    for fragment in ("method.r: expected int", "train.lerning_rate", "'learning_rate'", "model.max_lenght",
                     "'max_length'", "evaluation: unknown section", "'eval'"):
        assert fragment in text


def test_override_of_missing_key_is_an_error(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    with pytest.raises(RecipeError) as info:
        resolve_recipe(raw, ["train.learning_rat=1e-3", "nosection.x=1", "train=3"])
    text = str(info.value)
    assert "'learning_rate'" in text and "unknown section 'nosection'" in text and "expected section.key=value" in text


def test_override_values_parse_as_yaml(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    recipe = resolve_recipe(raw, ["train.learning_rate=3e-4", "method.r=4", "method.target_modules=[query, value]"])
    assert recipe.train["learning_rate"] == pytest.approx(3e-4)
    assert recipe.method["r"] == 4 and recipe.method["target_modules"] == ["query", "value"]


def test_method_name_override_switches_schema(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    recipe = resolve_recipe(raw, ["method.name=ia3"])
    assert recipe.method_name == "ia3" and recipe.method["feedforward_modules"] == ["output.dense"]


def test_unknown_method_suggests_closest(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    with pytest.raises(RecipeError, match="did you mean 'lora'"):
        resolve_recipe(raw, ["method.name=lroa"])


def test_wrong_type_is_an_error(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    raw["train"]["per_device_train_batch_size"] = 1.5
    with pytest.raises(RecipeError, match="train.per_device_train_batch_size: expected int"):
        resolve_recipe(raw)


def test_yaml_reads_exponent_floats(tmp_path, tiny_models, reviews_csv):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    raw["train"]["learning_rate"] = "PLACEHOLDER"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw).replace("PLACEHOLDER", "1e-3"))
    assert load_recipe(path).train["learning_rate"] == pytest.approx(1e-3)


def test_missing_file_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_modules_to_save_must_list_the_new_head(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path, arch="distilbert", modules_to_save=["classifier"])
    with pytest.raises(RecipeError, match="missing: pre_classifier"):
        resolve_recipe(raw)


def test_task_type_is_fixed(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path, task_type="CAUSAL_LM")
    with pytest.raises(RecipeError, match="method.task_type"):
        resolve_recipe(raw)


def test_training_arguments_own_checks_are_reported(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    raw["train"].update(eval_strategy="steps", eval_steps=2.5)
    with pytest.raises(RecipeError, match="train: --eval_steps must be an integer"):
        resolve_recipe(raw)


def test_peft_config_checks_are_reported(tiny_models, reviews_csv, tmp_path):
    raw = _raw(tiny_models, reviews_csv, tmp_path, use_dora=True, init_lora_weights="loftq")
    with pytest.raises(RecipeError, match="method:"):
        resolve_recipe(raw)


def test_defaults_are_filled_per_architecture(tiny_models, reviews_csv, tmp_path):
    recipe = resolve_recipe(_raw(tiny_models, reviews_csv, tmp_path, arch="distilbert"))
    assert recipe.method["target_modules"] == ["q_lin", "k_lin", "v_lin", "out_lin", "ffn.lin1", "ffn.lin2"]
    assert recipe.method["modules_to_save"] == ["pre_classifier", "classifier"]
    assert recipe.train["metric_for_best_model"] == "accuracy"


def test_resolved_recipe_round_trips(tiny_models, reviews_csv, tmp_path):
    recipe = resolve_recipe(_raw(tiny_models, reviews_csv, tmp_path))
    recipe.dump(tmp_path / "resolved.yaml")
    again = load_recipe(tmp_path / "resolved.yaml")
    assert again.to_dict() == recipe.to_dict()


def test_finished_qlora_run_recipe_loads_without_cuda(tiny_models, reviews_csv, tmp_path):
    """eval and merge of a qlora run use a full-precision base, so they need no CUDA."""
    raw = _raw(tiny_models, reviews_csv, tmp_path)
    raw["method"] = {"name": "qlora", "r": 4}
    recipe = resolve_recipe(raw, for_training=False)
    assert recipe.method["bnb_4bit_quant_type"] == "nf4" and recipe.method["r"] == 4


def _yaml_value(annotation):
    """A value of ``annotation`` as YAML would give it (lists for tuples), or None where no simple one exists."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        values = [_yaml_value(arg) for arg in args if arg is not type(None)]
        return next((value for value in values if value is not None), None)
    if origin is typing.Literal:
        return args[0]
    if origin is tuple:
        items = [args[0]] if len(args) == 2 and args[1] is Ellipsis else list(args)
        values = [_yaml_value(arg) for arg in items]
        return None if None in values else values
    if origin in (list, set, frozenset) and args:
        value = _yaml_value(args[0])
        return None if value is None else [value]
    if origin is dict and len(args) == 2:
        value = _yaml_value(args[1])
        return None if value is None else {"key": value}
    return {bool: True, int: 1, float: 0.5, str: "x"}.get(annotation)


def _tuple_fields():
    """(path, annotation) of every recipe key whose type holds a tuple: every method's config fields, the
    Trainer's arguments and peftsent's own sections."""
    from peftsent.methods import METHODS
    from peftsent.recipe import section_schema

    fields = {}
    for name in METHODS:
        for key, annotation in (section_schema("method", {"method": {"name": name}}) or {}).items():
            if "tuple" in str(annotation).lower():
                fields[f"method.{key}"] = annotation
    for section in ("model", "data", "train", "eval"):
        for key, annotation in section_schema(section, {section: {}}).items():
            if "tuple" in str(annotation).lower():
                fields[f"{section}.{key}"] = annotation
    return sorted(fields.items(), key=lambda item: item[0])


@pytest.mark.parametrize(("path", "annotation"), _tuple_fields(), ids=[path for path, _ in _tuple_fields()])
def test_a_tuple_key_takes_the_lists_yaml_gives(path, annotation):
    """YAML has no tuples: a key typed with one (peft's ``layer_replication: list[tuple[int, int]]``) takes the
    lists YAML reads, still checked element by element."""
    from peftsent.recipe import _type_problem

    value = _yaml_value(annotation)
    if value is None:
        pytest.skip(f"no simple YAML value for {annotation}")
    assert _type_problem(path, value, annotation) is None


def test_layer_replication_trains_and_reads_back(tiny_models, reviews_csv, tmp_path):
    """``method.layer_replication`` from YAML: refused as 'expected Optional ... a valid tuple' before; now the
    run trains, and its saved recipe.yaml loads back for predict; a wrong element is still named."""
    from peftsent.predict import main as predict_main
    from peftsent.train import train

    recipe_file = tmp_path / "lr.yaml"
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run",
                      {"name": "lora", "layer_replication": [[0, 2], [1, 2]]})
    recipe_file.write_text(yaml.safe_dump(raw))
    run = train(load_recipe(recipe_file))
    assert load_recipe(Path(run) / "recipe.yaml").method["layer_replication"] == [[0, 2], [1, 2]]
    assert predict_main([str(run), "a great movie"]) == 0
    raw["method"]["layer_replication"] = [[0, "two"]]
    recipe_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=r"method.layer_replication: expected .*list\[tuple\[int, int\]\]"):
        load_recipe(recipe_file)
