"""Several processes (torchrun / accelerate launch, CPU gloo): one staging directory, one writer, whole-split metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(recipe_file: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "peftsent.train", str(recipe_file), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=recipe_file.parent, timeout=600)


def _two_process_recipe(tiny_models, reviews_csv, tmp_path) -> Path:
    # per-device eval batches of 3 over 16 reviews: uneven shards, so whole-split gathering is exercised
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / "two", max_steps=4, eval_strategy="steps",
                      eval_steps=2, save_strategy="steps", save_steps=2, learning_rate=0.03,
                      per_device_train_batch_size=4, per_device_eval_batch_size=3, metric_for_best_model="log_loss",
                      disable_tqdm=True)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_processes_write_one_run_with_whole_split_metrics(tiny_models, reviews_csv, tmp_path):
    from peftsent.eval import evaluate

    result = _torchrun(_two_process_recipe(tiny_models, reviews_csv, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "two"
    assert sorted(p.name for p in run.parent.iterdir()) == ["two"]  # one stage, renamed once, nothing left over
    assert result.stdout.count("run directory:") == 1  # the main process reports
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timing"]["world_size"] == 2
    for split in ("validation", "test"):  # what one process computes for the same weights
        alone = evaluate(str(run), split=split)
        assert alone["count"] == metrics[split]["count"] == 16
        assert alone["accuracy"] == metrics[split]["accuracy"]
        assert alone["log_loss"] == pytest.approx(metrics[split]["log_loss"], abs=1e-6)
    state = json.loads((run / "trainer_state.json").read_text())
    for entry in (e for e in state["log_history"] if "eval_loss" in e):  # the mean loss, not world_size times it
        # (the Trainer averages batch means, padded shards included: close to the exact log-loss, not equal)
        assert entry["eval_loss"] == pytest.approx(entry["eval_log_loss"], abs=0.05)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes(tiny_models, reviews_csv, tmp_path):
    recipe_file = _two_process_recipe(tiny_models, reviews_csv, tmp_path)
    whole = tmp_path / "whole.yaml"
    raw = yaml.safe_load(recipe_file.read_text())
    raw["train"]["output_dir"] = str(tmp_path / "runs" / "whole")
    whole.write_text(yaml.safe_dump(raw))
    assert _torchrun(whole).returncode == 0
    killed = _torchrun(recipe_file, env={"PEFTSENT_TEST_KILL_AT": "save-2"})
    assert killed.returncode != 0 and not (tmp_path / "runs" / "two").exists()
    resumed = _torchrun(recipe_file, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "runs" / "whole" / "metrics.json").read_text())
    got = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    assert got["resumed_from"] == "checkpoint-2"
    for split in ("validation", "test"):
        assert got[split]["accuracy"] == expected[split]["accuracy"]
        assert got[split]["log_loss"] == pytest.approx(expected[split]["log_loss"], abs=1e-6)


def _rdzv_node(recipe_file: Path, port: int, rank: int) -> subprocess.Popen:
    """One 'machine' of a two-node torchrun launch with c10d rendezvous (both on 127.0.0.1 here)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "peftsent-test",
               # two 'machines' on one host: say which one hosts the rendezvous store (real machines know)
               "--rdzv-conf", f"is_host={int(rank == 0)}",
               "-m", "peftsent.train", str(recipe_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=recipe_file.parent)


@pytest.mark.slow
def test_two_nodes_rendezvous_through_c10d_and_write_one_run(tiny_models, reviews_csv, tmp_path):
    """The multi-node command of docs/scale-out.md (torchrun --nnodes 2 --rdzv-backend c10d), with both nodes on
    this machine and CPU gloo: what it does not test is the network between machines."""
    from peftsent.eval import evaluate

    recipe_file, port = _two_process_recipe(tiny_models, reviews_csv, tmp_path), _free_port()
    nodes = [_rdzv_node(recipe_file, port, rank) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    run = tmp_path / "runs" / "two"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timing"]["world_size"] == 2
    assert sum(o.count("run directory:") for o in outputs) == 1  # one writer across the two nodes
    alone = evaluate(str(run), split="test")
    assert alone["accuracy"] == metrics["test"]["accuracy"]
    assert alone["log_loss"] == pytest.approx(metrics["test"]["log_loss"], abs=1e-6)


@pytest.mark.slow
def test_accelerate_launch_multi_gpu_runs_two_processes_with_the_same_metrics(tiny_models, reviews_csv, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 (on CPUs: gloo) trains what torchrun trains."""
    recipe_file = _two_process_recipe(tiny_models, reviews_csv, tmp_path)
    assert _torchrun(recipe_file).returncode == 0
    raw = yaml.safe_load(recipe_file.read_text())
    raw["train"]["output_dir"] = str(tmp_path / "runs" / "accelerate")
    (tmp_path / "accelerate.yaml").write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "peftsent.train", str(tmp_path / "accelerate.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    by_torchrun = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    by_accelerate = json.loads((tmp_path / "runs" / "accelerate" / "metrics.json").read_text())
    assert by_accelerate["timing"]["world_size"] == 2
    for split in ("validation", "test"):
        assert by_accelerate[split]["accuracy"] == by_torchrun[split]["accuracy"]
        assert by_accelerate[split]["log_loss"] == pytest.approx(by_torchrun[split]["log_loss"], abs=1e-6)


@pytest.mark.gpu
def test_two_gpus_with_nccl_write_one_run_with_whole_split_metrics(tiny_models, reviews_csv, tmp_path):
    """torchrun --nproc_per_node 2 on two CUDA devices (NCCL): the run of test_two_processes_... on GPUs."""
    import torch

    from peftsent.eval import evaluate

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA devices, found {torch.cuda.device_count()}")
    result = _torchrun(_two_process_recipe(tiny_models, reviews_csv, tmp_path), env={"NCCL_DEBUG": "INFO"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NCCL INFO" in result.stdout + result.stderr  # the processes talked through NCCL, not gloo
    run = tmp_path / "runs" / "two"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timing"]["world_size"] == 2 and result.stdout.count("run directory:") == 1
    for split in ("validation", "test"):  # one process, one GPU, the same weights
        alone = evaluate(str(run), split=split)
        assert alone["count"] == metrics[split]["count"] == 16
        assert alone["accuracy"] == metrics[split]["accuracy"]
        assert alone["log_loss"] == pytest.approx(metrics[split]["log_loss"], abs=1e-4)

@pytest.mark.slow
@pytest.mark.parametrize("point,signal_name,resumed_from", [("save-9", "SIGKILL", "checkpoint-9"),
                                                            ("step-11", "SIGINT", "checkpoint-9")])
def test_two_processes_stopped_in_the_middle_of_a_later_epoch_resume_to_the_same_history(
        point, signal_name, resumed_from, tiny_models, reviews_csv, tmp_path):
    """4 epochs of 4 steps per process (32 reviews, batches of 4 on each of 2), length-grouped batches, an
    evaluation and a checkpoint every 3 steps: checkpoint-9 is 1 step into epoch 3 of 4. Stopped there (SIGKILL)
    or two steps later (SIGINT), the resumed run reproduces every evaluation of the uninterrupted one."""
    from conftest import assert_same_history, run_history

    def recipe_file(name):
        raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / name, max_steps=-1,
                          num_train_epochs=4, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=3,
                          save_strategy="steps", save_steps=3, metric_for_best_model="log_loss",
                          learning_rate=2e-2, train_sampling_strategy="group_by_length", disable_tqdm=True)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    whole = _torchrun(recipe_file("whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = run_history(tmp_path / "runs" / "whole")
    assert expected["global_step"] == 16
    path = recipe_file("two")
    killed = _torchrun(path, env={"PEFTSENT_TEST_KILL_AT": point, "PEFTSENT_TEST_KILL_SIGNAL": signal_name})
    assert killed.returncode != 0 and not (tmp_path / "runs" / "two").exists()
    assert (tmp_path / "runs" / ".two.partial" / resumed_from).is_dir()
    resumed = _torchrun(path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = tmp_path / "runs" / "two"
    assert json.loads((got / "metrics.json").read_text())["resumed_from"] == resumed_from
    assert_same_history(run_history(got), expected)
