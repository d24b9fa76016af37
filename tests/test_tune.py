"""peftsent.tune: search spaces checked up front, trials as ordinary runs, resumable studies, pruning, best.yaml."""

import csv
import json
import pytest
import yaml

from peftsent.errors import PeftsentError, RecipeError
from peftsent.recipe import load_recipe
from peftsent.tune import main, tune

from conftest import tiny_recipe

SPACE = {"train.learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]}, "method.r": {"choice": [2, 4]},
         "method.lora_dropout": {"uniform": [0.0, 0.2]}}


def _recipe_file(tmp_path, tiny_models, reviews_csv, tune_section, arch="bert", **train):
    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "runs" / "r", **{"max_steps": 2, **train})
    raw["tune"] = tune_section
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _rows(out):
    return list(csv.DictReader((out / "trials.csv").open()))


BAD_SPACES = [
    ({"train.learnin_rate": {"uniform": [0.0, 1.0]}}, "train.learnin_rate does not exist; did you mean 'learning_rate'?"),
    ({"train.learning_rate": {"log_uniform": [1.0e-3, 1.0e-5]}}, "empty range [0.001, 1e-05]"),
    ({"method.r": {"choice": []}}, "an empty choice searches nothing"),
    ({"method.r": {"normal": [4, 8]}}, "expected one distribution"),
    ({"train.learning_rate": {"log_uniform": [0.0, 1.0e-3]}}, "log_uniform needs 0 < low"),
    ({"method.name": {"choice": ["lora", "ia3"]}}, "one study searches one method"),
    ({"metric": "test_accuracy", "method.r": {"choice": [2, 4]}}, "'test_accuracy' is a test-split metric"),
    ({"metric": "eval_test_f1", "method.r": {"choice": [2, 4]}}, "is a test-split metric"),
    ({"sampler_sed": 1, "method.r": {"choice": [2, 4]}}, "tune.sampler_sed: unknown setting; did you mean 'sampler_seed'?"),
    ({"metric": "accuracy"}, "tune: no search keys"),
]


@pytest.mark.parametrize("section,message", BAD_SPACES, ids=[m.split(":")[0][:30] for _, m in BAD_SPACES])
def test_bad_search_space_is_rejected_by_the_recipe_loader(section, message, tiny_models, reviews_csv, tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe_file(tmp_path, tiny_models, reviews_csv, section))
    assert message in str(err.value)


def test_every_search_space_problem_in_one_message_exit_2_nothing_written(tiny_models, reviews_csv, tmp_path, capsys):
    section = {k: v for spec, _ in BAD_SPACES[:5] for k, v in spec.items()}
    section["metric"] = "test_accuracy"  # with: an unknown key, an empty choice, a log range from 0
    path = _recipe_file(tmp_path, tiny_models, reviews_csv, section)
    assert main([path, "--trials", "2", "--out", str(tmp_path / "tune")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "4 problems" in err
    assert not (tmp_path / "tune").exists()


def test_a_bound_the_recipe_rejects_is_caught_before_any_trial(tiny_models, reviews_csv, tmp_path, monkeypatch):
    section = {"train.per_device_train_batch_size": {"int": [0, 8]}, "train.learning_rate": {"uniform": [-1.0, 1.0]}}
    path = _recipe_file(tmp_path, tiny_models, reviews_csv, section)
    monkeypatch.setattr("peftsent.train.train", lambda *a, **k: pytest.fail("a trial trained"))
    with pytest.raises(RecipeError) as err:
        tune(path, trials=1, out=str(tmp_path / "tune"))
    assert "per_device_train_batch_size: the value 0 makes the recipe invalid" in str(err.value)
    assert "learning_rate: the value -1.0 makes the recipe invalid" in str(err.value)


def test_lower_is_better_metrics_are_minimised(tiny_models, reviews_csv, tmp_path):
    from peftsent.tune import tune_spec

    for metric, direction in (("log_loss", "minimize"), ("eval_loss", "minimize"), ("ece", "minimize"),
                              ("macro_f1", "maximize")):
        recipe = load_recipe(_recipe_file(tmp_path, tiny_models, reviews_csv, {"metric": metric, **SPACE}))
        assert tune_spec(recipe).direction == direction


def test_study_trains_trials_writes_reports_and_resumes(tiny_models, reviews_csv, tmp_path):
    from peftsent.train import main as train_main

    path = _recipe_file(tmp_path, tiny_models, reviews_csv, {"pruner": "none", **SPACE}, arch="distilbert")
    out = tmp_path / "tune"
    result = tune(path, trials=2, out=str(out))
    rows = _rows(out)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "COMPLETE")]
    for row in rows:  # each trial is an ordinary run, validation only; its parameters and metrics are in the CSV
        summary = json.loads((out / "trials" / f"trial-{row['number']}" / "metrics.json").read_text())
        assert "test" not in summary
        assert float(row["val accuracy"]) == summary["validation"]["accuracy"] == float(row["objective: validation accuracy"])
        assert row["param method.r"] in {"2", "4"} and float(row["wall seconds"]) > 0
    assert {"history.png", "best.yaml", "study.json", "tune.db"} <= {p.name for p in out.iterdir()}
    # best.yaml is a complete recipe that train runs as is, with the test split
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert "tune" not in best and best["train"]["output_dir"] == str(out / "best")
    assert best["method"]["r"] == result["summary"]["best_params"]["method.r"]
    assert train_main([str(out / "best.yaml")]) == 0
    assert "test" in json.loads((out / "best" / "metrics.json").read_text())
    # the same command with more trials resumes the study: numbering continues
    tune(path, trials=3, out=str(out))
    assert [r["number"] for r in _rows(out)] == ["0", "1", "2"]
    assert (out / "trials" / "trial-2" / "metrics.json").is_file()


def test_pruned_trial_leaves_no_run_and_no_best(tiny_models, reviews_csv, tmp_path, capsys):
    import optuna

    steps = dict(max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2)
    path = _recipe_file(tmp_path, tiny_models, reviews_csv, SPACE, **steps)
    out = tmp_path / "tune"
    # accuracy is always below 1.1: the validation report at step 2 of 4 prunes the trial
    result = tune(path, trials=1, out=str(out), pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    (row,) = _rows(out)
    assert row["state"] == "PRUNED" and row["last reported step"] == "2"
    assert not (out / "trials").exists() or not list((out / "trials").iterdir())
    assert result["best"] is None and not (out / "best.yaml").exists()


def test_a_study_refuses_trials_of_another_recipe(tiny_models, reviews_csv, tmp_path, monkeypatch):
    path = _recipe_file(tmp_path, tiny_models, reviews_csv, SPACE)
    out = tmp_path / "tune"
    monkeypatch.setattr("peftsent.tune._objective", lambda *a: (lambda trial: 0.5))
    tune(path, trials=1, out=str(out))
    with pytest.raises(PeftsentError, match="started with another recipe or search space"):
        tune(path, ["data.sample_seed=3"], trials=2, out=str(out))


def test_peftsent_tune_is_the_same_command(tiny_models, reviews_csv, tmp_path, capsys):
    from peftsent.__main__ import main as peftsent

    path = _recipe_file(tmp_path, tiny_models, reviews_csv, {"metric": "test_accuracy", **SPACE})
    for run in (lambda: peftsent(["tune", path, "--trials", "1"]), lambda: main([path, "--trials", "1"])):
        assert run() == 2
        err = capsys.readouterr().err
        assert "test-split metric" in err and "Traceback" not in err


def test_pruning_callback_never_prunes_the_last_evaluation():
    import optuna
    from types import SimpleNamespace

    from peftsent.tune import TuneSpec, pruning_callback

    class Trial:
        reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return True

    trial = Trial()
    callback = pruning_callback(trial, TuneSpec((), "loss", 0))
    callback.on_evaluate(None, SimpleNamespace(global_step=10, max_steps=10), None, metrics={"eval_loss": 0.5})
    with pytest.raises(optuna.TrialPruned):
        callback.on_evaluate(None, SimpleNamespace(global_step=5, max_steps=10), None, metrics={"eval_loss": 0.7})
    assert trial.reports == [(10, 0.5), (5, 0.7)]


@pytest.mark.parametrize("name", ["lora", "full"])
def test_shipped_search_spaces_pass_the_up_front_checks(name):
    from pathlib import Path

    from peftsent.tune import check_values, tune_spec

    path = str(Path(__file__).resolve().parent.parent / "recipes" / "quick" / f"{name}.yaml")
    spec = tune_spec(load_recipe(path))
    check_values(path, [], spec)
    assert spec.direction == "maximize" and spec.params


def test_unusable_storage_is_one_message_and_writes_nothing(tiny_models, reviews_csv, tmp_path, capsys):
    path = _recipe_file(tmp_path, tiny_models, reviews_csv, SPACE)
    assert main([path, "--trials", "1", "--storage", "nonsense://x", "--out", str(tmp_path / "tune")]) == 2
    assert "--storage nonsense://x: cannot open it" in capsys.readouterr().err
    assert not (tmp_path / "tune").exists()
