"""Every CLI answers --help at once, and a user mistake ends in one message and exit status 2."""

import subprocess
import sys

import pytest

CLIS = ["train", "eval", "merge", "predict", "compare", "methods", "tune", "baseline", "analyze", "export"]


def _run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.parametrize("verb", CLIS)
def test_help_exits_zero(verb):
    result = _run(f"peftsent.{verb}", "--help")
    assert result.returncode == 0 and "usage:" in result.stdout and "examples:" in result.stdout


def test_misspelled_key_is_one_message_without_traceback(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: minilm-l6}\ndata: {name: imdb-offline}\nmethod: {name: lora, lora_alpah: 16}\n")
    result = _run("peftsent.train", str(recipe))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "method.lora_alpah" in result.stderr and "did you mean 'lora_alpha'" in result.stderr


def test_missing_recipe_file_is_a_user_error(tmp_path):
    result = _run("peftsent.train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "file not found" in result.stderr and "Traceback" not in result.stderr


def test_hub_recipe_offline_fails_fast_naming_the_offline_alternative(tmp_path):
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    result = _run("peftsent.train", str(root / "recipes" / "lora.yaml"),
                  f"train.output_dir={tmp_path / 'run'}", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.name=minilm-l6" in result.stderr and "data.name=imdb-offline" in result.stderr
    assert "recipes/quick/lora.yaml" in result.stderr
    assert not (tmp_path / "run").exists()


def test_sigterm_during_training_leaves_only_a_resumable_stage(tiny_models, reviews_csv, tmp_path):
    import signal
    import time

    import yaml

    from conftest import tiny_recipe

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / "r", max_steps=100000)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    process = subprocess.Popen([sys.executable, "-m", "peftsent.train", str(tmp_path / "r.yaml")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not list((tmp_path / "runs").glob(".r.partial/checkpoint-*/trainer_state.json")):
        time.sleep(0.2)  # training is under way and one checkpoint is complete
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    left = list((tmp_path / "runs").iterdir())
    assert not (tmp_path / "runs" / "r").exists()  # never a directory that looks finished
    # the complete checkpoint is kept, unlocked, for --resume
    assert [p.name for p in left] == [".r.partial"] and "--resume" in err
    assert not (left[0] / "peftsent.lock").exists()


# ---------------------------------------------------------------- the peftsent console script

VERBS = ["train", "merge", "eval", "predict", "compare", "methods", "analyze", "tune", "baseline", "export", "serve"]


def test_console_script_is_declared():
    import importlib
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["peftsent"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert scripts["peftsent-train"] == "peftsent.train:main"


def test_peftsent_help_lists_every_verb():
    result = _run("peftsent", "--help")
    assert result.returncode == 0
    assert all(f"\n  {verb} " in result.stdout for verb in VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_answers_help_through_peftsent(verb):
    import importlib.util

    from peftsent.__main__ import VERBS as DISPATCH

    if importlib.util.find_spec(DISPATCH[verb][0]) is None:
        pytest.skip(f"{DISPATCH[verb][0]} is not in this branch")
    result = _run("peftsent", verb, "--help")
    assert result.returncode == 0 and f"usage: peftsent {verb}" in result.stdout


def test_peftsent_user_errors_match_the_module_commands(tmp_path, capsys):
    from peftsent.__main__ import main

    assert main(["trian"]) == 2 and "did you mean 'train'?" in capsys.readouterr().err
    assert main([]) == 2
    missing = str(tmp_path / "missing.yaml")
    assert main(["train", missing]) == 2 == _run("peftsent.train", missing).returncode
    assert "file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's own status, as with python -m peftsent.compare
        main(["compare", "--seeds", "x"])
    assert exit_.value.code == 2
