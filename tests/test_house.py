"""What a user reads agrees with what happened: merge.json survives a moved run, the model card says how its
metrics were scored, eval.also results are printed, progress bars stay out of logs that are not terminals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftsent.merge import PARITY_FILE, merge
from peftsent.recipe import resolve_recipe
from peftsent.train import train

from conftest import make_reviews, tiny_recipe, write_csv

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("house")
    data = write_csv(root / "reviews.csv", make_reviews(64))
    other = write_csv(root / "other.csv", [(f"{t} indeed", y) for t, y in make_reviews(40, seed=9)])
    raw = tiny_recipe(tiny_models["bert"], data, root / "runs" / "lora", {"name": "lora", "init_lora_weights": False})
    raw["eval"] = {"also": [str(other)]}
    return train(resolve_recipe(raw)), other


def test_merge_json_records_paths_relative_to_the_run(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "moved" / "run"
    shutil.copytree(run_dir, copy)
    outside = tmp_path / "exports" / "merged"
    merge(copy, out=outside, probe_size=8)
    record = json.loads((copy / PARITY_FILE).read_text())
    assert not Path(record["output"]).is_absolute()
    assert (copy / record["output"]).resolve() == outside.resolve()
    # move the run together with its export: the record still finds it, so a second merge is a no-op
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(tmp_path / "moved"), str(moved / "moved"))
    shutil.move(str(tmp_path / "exports"), str(moved / "exports"))
    target, parity = merge(moved / "moved" / "run", out=moved / "exports" / "merged", probe_size=8)
    assert parity is None and target == moved / "exports" / "merged"


def test_model_card_says_how_the_metrics_were_scored(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    target, _ = merge(copy, probe_size=8)
    card = (target / "README.md").read_text()
    dtype = metrics["inference"]["dtype"]
    assert "float32 adapter model" not in card  # the old heading, whatever the run was scored in
    assert f"Scored by the run's final evaluation (peftsent {metrics['peftsent_version']}) in {dtype}" in card
    assert f"each review truncated to {metrics['max_length']} tokens" in card
    adapter_card = (copy / "adapter" / "README.md").read_text()
    assert f"in {dtype}" in adapter_card


def _cli(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # as a user's shell would have it
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**env, "PYTHONPATH": str(ROOT)})


def test_train_prints_eval_also_beside_test_and_no_progress_bars_in_logs(run, tiny_models, tmp_path):
    """Output that is not a terminal (a log file, CI) gets no tqdm redraws; eval.also is a column of the table."""
    _, other = run
    data = write_csv(tmp_path / "reviews.csv", make_reviews(64, seed=1))
    raw = tiny_recipe(tiny_models["bert"], data, tmp_path / "run", max_steps=4, logging_steps=1)
    raw["model"]["long_reviews"] = "window"  # peftsent's own bar over windows too
    raw["eval"] = {"also": [str(other)]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    done = _cli(["peftsent.train", str(tmp_path / "r.yaml")], tmp_path)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("| metric |"))
    assert header == f"| metric | validation | test | {other} (test) |"
    assert "\r" not in done.stderr and "it/s]" not in done.stderr and "examples/s]" not in done.stderr


def test_a_user_tqdm_setting_wins(monkeypatch):
    from peftsent.cli import quiet_progress_bars

    monkeypatch.setenv("TQDM_DISABLE", "")
    quiet_progress_bars()
    assert os.environ["TQDM_DISABLE"] == ""
    monkeypatch.delenv("TQDM_DISABLE")
    quiet_progress_bars()  # pytest's stderr is captured, not a terminal
    assert os.environ["TQDM_DISABLE"] == "1"
