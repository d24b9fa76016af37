"""Mistakes found by trying to break the CLIs: each ends in one PeftsentError, and nothing is deleted."""

import pytest
import yaml

from peftsent.errors import MergeError, PeftsentError, RecipeError, RunDirError
from peftsent.recipe import load_recipe, resolve_recipe
from peftsent.train import preflight, train

from conftest import tiny_recipe


@pytest.fixture(scope="module")
def run(tiny_models, reviews_csv, tmp_path_factory):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path_factory.mktemp("runs") / "lora", {"name": "lora"})
    return train(resolve_recipe(raw))


def test_overwrite_refuses_a_directory_that_is_not_a_run(tiny_models, reviews_csv, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.txt").write_text("months of work")
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, precious))
    with pytest.raises(RunDirError, match="nothing was deleted"):
        preflight(recipe, overwrite=True)
    assert (precious / "chapter1.txt").read_text() == "months of work"


def test_output_dir_cannot_be_the_working_directory(tiny_models, reviews_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path))
    with pytest.raises(RunDirError, match="working directory"):
        preflight(recipe, overwrite=True)


def test_output_dir_below_a_file_is_refused(tiny_models, reviews_csv, tmp_path):
    (tmp_path / "afile").write_text("x")
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "afile" / "run"))
    with pytest.raises(RunDirError, match="is a file"):
        preflight(recipe)


@pytest.mark.parametrize("option", [{"r": 0}, {"lora_dropout": 1.5}, {"target_modules": []}])
def test_method_values_peft_rejects_are_caught_before_loading(option, tiny_models, reviews_csv, tmp_path):
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r", {"name": "lora", **option}))
    with pytest.raises(RecipeError, match="method"):
        preflight(recipe)


def test_train_values_checked_at_resolve(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r", seed=-1, per_device_train_batch_size=0,
                      metric_for_best_model="f2", push_to_hub=True)
    with pytest.raises(RecipeError) as info:
        resolve_recipe(raw)
    assert len(info.value.problems) == 4


def test_yaml_no_gets_a_quoting_hint(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r", save_strategy=False)
    with pytest.raises(RecipeError, match="quote the word"):
        resolve_recipe(raw)


def test_non_text_recipe_and_non_string_method(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RecipeError, match="UTF-8"):
        load_recipe(tmp_path / "bin.yaml")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"model": {"name": "minilm-l6"}, "data": {"name": "imdb-offline"},
                                                         "method": {"name": ["lora"]}}))
    with pytest.raises(RecipeError, match="expected one method name"):
        load_recipe(tmp_path / "list.yaml")


def test_merge_refuses_to_overwrite_its_own_run(run):
    for out in (run, run / "adapter", run.parent):
        with pytest.raises(MergeError, match="would overwrite the run"):
            from peftsent.merge import merge

            merge(run, out=out, force=True, probe_size=4)
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "recipe.yaml").is_file()


def test_merge_force_only_replaces_merged_models(run, tmp_path):
    from peftsent.merge import merge

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    with pytest.raises(MergeError, match="nothing was touched"):
        merge(run, out=other, force=True, probe_size=4)
    assert (other / "keep.txt").exists()


def test_predict_unreadable_files_and_bad_batch_size(run, tmp_path, capsys):
    from peftsent.predict import main

    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "empty.csv").write_text("")
    for path in ("bin.txt", "empty.csv"):
        assert main([str(run), "--file", str(tmp_path / path)]) == 2
        assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "good", "--batch-size", "0"])
    assert exit_info.value.code == 2


def test_compare_refuses_recipes_that_share_a_run_directory(tiny_models, reviews_csv, tmp_path, monkeypatch):
    from peftsent.compare import compare

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / folder)
        (tmp_path / folder / "lora.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr("peftsent.train.train", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(PeftsentError, match="several recipes would train into"):
        compare(recipes=[str(tmp_path / "a" / "lora.yaml"), str(tmp_path / "b" / "lora.yaml")],
                out=str(tmp_path / "cmp"), overrides=["train.max_steps=1"])
