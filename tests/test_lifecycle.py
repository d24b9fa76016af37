"""The run life cycle (peftsent.rundir): staging, lock, kill at any moment, --resume, early stopping, seeds."""

import json
import multiprocessing
import os
import shutil
import signal

import pytest
import torch
import yaml

from peftsent.recipe import resolve_recipe
from peftsent.rundir import KILL_AT_ENV, KILL_SIGNAL_ENV, LOCK_FILE, is_finished_run, stage_path
from peftsent.train import main, train
from peftsent.training_args import make_training_args

from conftest import assert_same_history, run_history, tiny_recipe

#: 6 optimizer steps, a checkpoint and an evaluation every 2, selection by log-loss, float32
STEPS = dict(max_steps=6, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
             metric_for_best_model="log_loss", learning_rate=3e-2)


@pytest.fixture
def one_thread():
    """Float32 on one thread: a resumed run must reproduce the uninterrupted one to 1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe_file(tiny_models, reviews_csv, tmp_path, name="run", **train):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / name, **{**STEPS, **train})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, resolve_recipe(raw)


def _killed_at(point: str, recipe_file) -> int:
    """Run ``python -m peftsent.train RECIPE`` in a forked process that SIGKILLs itself at ``point``."""
    def child():
        os.environ[KILL_AT_ENV] = point
        os._exit(main([str(recipe_file)]))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=300)
    return process.exitcode


def _scores(run) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {f"{split}_{key}": metrics[split][key] for split in ("validation", "test") for key in ("accuracy", "log_loss")}


def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_metrics(one_thread, tiny_models, reviews_csv,
                                                                         tmp_path, capsys):
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path, "whole")
    expected = _scores(train(recipe))
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path)
    stage = stage_path(recipe.run_dir)
    for point in ("step-1", "save-2", "final-evaluation", "rename"):
        assert _killed_at(point, path) == -signal.SIGKILL, point
        assert not recipe.run_dir.exists(), f"killed at {point}: a run directory appeared"
        assert stage.is_dir() and (stage / LOCK_FILE).is_file()
        if point == "step-1":  # before the first checkpoint: nothing to resume, and the message says why
            assert main([str(path), "--resume"]) == 2
            err = capsys.readouterr().err
            assert "nothing can be resumed" in err and "first checkpoint" in err and "--overwrite" in err
            assert main([str(path)]) == 2  # a staged run is never silently replaced
            err = capsys.readouterr().err
            assert "--resume" in err and "--overwrite" in err and "is gone" in err
            assert stage.is_dir(), "nothing is deleted by a refused command"
            train(recipe, overwrite=True)  # discards the stage, trains from scratch
            assert _scores(recipe.run_dir) == pytest.approx(expected, abs=1e-6)
            shutil.rmtree(recipe.run_dir)
            continue
        run = train(recipe, resume=True)
        assert _scores(run) == pytest.approx(expected, abs=1e-6), point
        assert is_finished_run(run) and not stage.exists()
        assert not list(run.glob("checkpoint-*")) and not (run / LOCK_FILE).exists()
        state = json.loads((run / "trainer_state.json").read_text())
        assert state["global_step"] == 6, point  # the whole run's history, not the best checkpoint's copy
        shutil.rmtree(run)


def _stage_by_hand(recipe, lock: dict | None = None, checkpoint_files=()) -> None:
    """A staging directory as an interrupted run leaves it (no training needed)."""
    stage = stage_path(recipe.run_dir)
    stage.mkdir(parents=True)
    recipe.dump(stage / "recipe.yaml")
    if lock is not None:
        (stage / LOCK_FILE).write_text(json.dumps(lock))
    if checkpoint_files:
        checkpoint = stage / "checkpoint-2"
        checkpoint.mkdir()
        for name in checkpoint_files:
            (checkpoint / name).write_text("{}")


def test_a_live_lock_is_reported_with_pid_and_host(tiny_models, reviews_csv, tmp_path, capsys):
    import socket

    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path)
    holder = os.getppid()  # a live process on this host that is not this one
    _stage_by_hand(recipe, {"pid": holder, "host": socket.gethostname(), "started": "now"})
    for argv in ([str(path)], [str(path), "--resume"], [str(path), "--overwrite"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"process {holder} on {socket.gethostname()}" in err and "Traceback" not in err
    assert stage_path(recipe.run_dir).is_dir() and not recipe.run_dir.exists()


@pytest.mark.parametrize("case", ["nothing-staged", "other-recipe", "damaged-checkpoint"])
def test_resume_refusals_delete_nothing(case, tiny_models, reviews_csv, tmp_path, capsys):
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path)
    expected = {"nothing-staged": "nothing is staged", "other-recipe": "train.learning_rate: 0.03 staged, 0.01 now",
                "damaged-checkpoint": "damaged (missing optimizer.pt"}[case]
    if case != "nothing-staged":
        files = ["trainer_state.json", "scheduler.pt", "rng_state.pth", "model.safetensors"]
        _stage_by_hand(recipe, None, files)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [str(path), "--resume"] + (["train.learning_rate=0.01"] if case == "other-recipe" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_best_checkpoint_by_log_loss_is_kept_and_early_stopping_is_recorded(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "lora"}, max_steps=8,
                      eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1, learning_rate=0.05,
                      metric_for_best_model="log_loss", early_stopping_patience=2)
    recipe = resolve_recipe(raw)
    assert recipe.train["greater_is_better"] is False
    metrics = json.loads((train(recipe) / "metrics.json").read_text())
    state = json.loads((recipe.run_dir / "trainer_state.json").read_text())
    evals = [(e["step"], e["eval_log_loss"]) for e in state["log_history"] if "eval_log_loss" in e]
    best_step = min(evals, key=lambda e: e[1])[0]
    assert best_step != evals[-1][0], "the test needs a run whose best checkpoint is not the last"
    assert metrics["best_checkpoint"] == f"checkpoint-{best_step}"
    raw_validation = {**metrics["validation"], **metrics["validation"].get("uncalibrated", {})}  # before temperature
    assert raw_validation["log_loss"] == pytest.approx(dict(evals)[best_step], abs=1e-4)
    assert metrics["early_stopping"]["stopped_at_step"] == evals[-1][0] == best_step + 2 < 8
    assert state["global_step"] == evals[-1][0]  # the whole run's history


def test_seed_governs_initialisation_and_inference_leaves_the_rng_alone(tiny_models, reviews_csv, tmp_path):
    from peftsent.data import load_splits, tokenize_splits
    from peftsent.inference import predict_logits
    from peftsent.loading import load_target

    def run(name, seed):  # learning rate 0: only the initialisation decides the metrics
        raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / name, learning_rate=0.0, seed=seed)
        return json.loads((train(resolve_recipe(raw)) / "metrics.json").read_text())["test"]["log_loss"]

    first = run("a", 42)
    torch.rand(1000)  # another run (or compare) drew from the global RNG in between
    assert run("b", 42) == first
    assert run("c", 43) != first  # compare --seeds: seed + k gives another initialisation
    loaded = load_target(str(tmp_path / "a"))
    splits = load_splits(loaded.run.recipe().data)
    tokenized = tokenize_splits(splits, loaded.tokenizer, loaded.policy)
    state = torch.random.get_rng_state()
    predict_logits(loaded.model, loaded.tokenizer, tokenized["test"], progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("metric,expected", [("log_loss", False), ("loss", False), ("eval_ece", False),
                                             ("accuracy", True), ("roc_auc", True), ("macro_f1", True)])
def test_greater_is_better_follows_the_selection_metric(metric, expected, tmp_path):
    raw = tiny_recipe(tmp_path, tmp_path / "r.csv", tmp_path / "run", metric_for_best_model=metric)
    from peftsent.recipe import _build

    assert _build(raw, "<dict>").train["greater_is_better"] is expected
    raw["train"]["greater_is_better"] = not expected  # a recipe that says so wins
    assert _build(raw, "<dict>").train["greater_is_better"] is (not expected)


@pytest.mark.parametrize("key,value,hint", [
    ("resume_from_checkpoint", "runs/x/checkpoint-2", "--resume"),
    ("overwrite_output_dir", True, "--overwrite"),
    ("do_train", True, "remove the key"),
    ("do_eval", True, "eval_strategy"),
    ("do_predict", True, "eval.test"),
    ("early_stopping_patience", 0, "expected an integer >= 1"),
    ("early_stopping_threshold", -0.1, "expected >= 0"),
])
def test_train_keys_peftsent_controls_are_refused_naming_the_alternative(key, value, hint, tiny_models,
                                                                        reviews_csv, tmp_path):
    from peftsent.errors import RecipeError

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", **{key: value})
    with pytest.raises(RecipeError, match=f"train.{key}") as err:
        resolve_recipe(raw)
    assert hint in str(err.value)


def test_early_stopping_needs_evaluations_to_compare(tiny_models, reviews_csv, tmp_path):
    from peftsent.errors import RecipeError

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", early_stopping_patience=2,
                      eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    with pytest.raises(RecipeError, match="load_best_model_at_end: true and an eval_strategy"):
        resolve_recipe(raw)


@pytest.mark.gpu
def test_cuda_bf16_run_killed_after_a_checkpoint_resumes(tiny_models, reviews_csv, tmp_path):
    """CUDA-only paths: CUDA RNG states in the checkpoint, bf16 autocast, the reload check's bf16 tolerance."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path, "whole", bf16=True)
    expected = _scores(train(recipe))
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path, bf16=True)
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, KILL_AT_ENV: "save-2", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    killed = subprocess.run([sys.executable, "-m", "peftsent.train", str(path)], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL  # a forked child cannot use CUDA: a fresh process
    got = _scores(train(recipe, resume=True))
    # bf16 kernels on CUDA are deterministic for a fixed batch order; a looser bound is stated in the note
    assert got == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("method", [{"name": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16},
                                    {"name": "adalora", "init_r": 4, "target_r": 1}])
def test_methods_whose_checkpoints_cannot_continue_say_so(method, tiny_models, reviews_csv, tmp_path, capsys):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", method, **STEPS)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    _stage_by_hand(resolve_recipe(raw), None, ["trainer_state.json", "optimizer.pt", "scheduler.pt",
                                               "rng_state.pth", "adapter_model.safetensors"])
    assert main([str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{method['name']} runs cannot be continued" in err and "--overwrite" in err
    assert stage_path(tmp_path / "run").is_dir()


def test_resume_refuses_data_that_changed_since_the_run_was_staged(tiny_models, reviews_csv, tmp_path, capsys):
    from conftest import make_reviews, write_csv

    data = write_csv(tmp_path / "data.csv", make_reviews(64, seed=0))
    raw = tiny_recipe(tiny_models["bert"], data, tmp_path / "run", **STEPS)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    import subprocess
    import sys

    env = {**os.environ, KILL_AT_ENV: "save-4"}  # killed after checkpoint-2 and checkpoint-4 are complete
    killed = subprocess.run([sys.executable, "-m", "peftsent.train", str(path)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode != 0 and not is_finished_run(tmp_path / "run"), killed.stderr[-2000:]
    write_csv(data, make_reviews(64, seed=1))  # same file name, other reviews
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the data changed since the run was staged" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing deleted
    write_csv(data, make_reviews(64, seed=0))  # the data it started on: it continues
    assert main([str(path), "--resume"]) == 0 and is_finished_run(tmp_path / "run")


#: 4 epochs of 8 optimizer steps (32 training reviews, batches of 4), length-grouped batches, dropout on: an
#: evaluation and a checkpoint every 3 steps, which does not divide the epoch, so checkpoint-21 is 5 steps into
#: epoch 3 of 4
MID_EPOCH = dict(max_steps=-1, num_train_epochs=4, per_device_train_batch_size=4, eval_strategy="steps",
                 eval_steps=3, save_strategy="steps", save_steps=3, metric_for_best_model="log_loss",
                 learning_rate=2e-2, train_sampling_strategy="group_by_length")


@pytest.mark.parametrize("point,resumed_from", [("save-21", "checkpoint-21"), ("step-23", "checkpoint-21")])
def test_a_run_stopped_in_the_middle_of_a_later_epoch_resumes_to_the_same_history(
        point, resumed_from, one_thread, tiny_models, reviews_csv, tmp_path, monkeypatch):
    """SIGKILL right after checkpoint-21, or SIGINT (Ctrl-C) two steps later: the resumed run evaluates to the
    same losses at every in-training evaluation, keeps the same best checkpoint, fits the same temperature and
    scores validation and test as the uninterrupted run."""
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path, "whole", **MID_EPOCH)
    expected = run_history(train(recipe))
    assert expected["global_step"] == 32 and len([e for e in expected["history"] if "eval_loss" in e]) == 11
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path, **MID_EPOCH)
    if point.startswith("step"):
        monkeypatch.setenv(KILL_SIGNAL_ENV, "SIGINT")
        assert _killed_at(point, path) == 130  # Ctrl-C: exit status 130, the stage kept
    else:
        assert _killed_at(point, path) == -signal.SIGKILL
    assert not recipe.run_dir.exists() and (stage_path(recipe.run_dir) / resumed_from).is_dir()
    run = train(recipe, resume=True)
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] == resumed_from
    assert_same_history(run_history(run), expected)


def test_an_uninterrupted_run_draws_each_epochs_order_from_the_global_rng_as_before(
        one_thread, tiny_models, reviews_csv, tmp_path, monkeypatch):
    """Exact resume must not change the batches of a run that is never interrupted: the length-grouped sampler
    keeps transformers' own draw (no generator, torch's global RNG when the epoch's iteration begins), so the
    first epoch's order is the one transformers alone draws after ``set_seed(seed)``: the DataLoader iterator's
    base seed, then the sampler's permutation. Every checkpoint keeps the RNG state its epoch began with."""
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    drawn = []
    original = LengthGroupedSampler.__iter__

    def recorded(self):
        order = list(original(self))
        drawn.append((self.generator, self.lengths, self.batch_size, order))
        yield from order

    monkeypatch.setattr(LengthGroupedSampler, "__iter__", recorded)
    path, recipe = _recipe_file(tiny_models, reviews_csv, tmp_path, **{**MID_EPOCH, "num_train_epochs": 2})
    run = train(recipe)
    drawn = [draw for draw in drawn if draw[2] == 4]  # training batches of 4 (validation: 16, seeded generator)
    assert len(drawn) == 2 and all(generator is None for generator, *_ in drawn)
    _, lengths, batch_size, order = drawn[0]
    with torch.random.fork_rng():
        torch.manual_seed(make_training_args(recipe, output_dir=str(tmp_path / "x")).seed)
        torch.empty((), dtype=torch.int64).random_()  # torch.utils.data's _BaseDataLoaderIter base seed
        assert order == get_length_grouped_indices(lengths, batch_size)
    assert drawn[1][3] != order  # epoch 2 draws its own order from where the global RNG stands then
    assert run_history(run)["global_step"] == 16
