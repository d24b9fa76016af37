"""Issue 24, item 4: a full disk is one message (exit 2), never a traceback; nothing finished-looking stays, and
a staged run resumes once there is room. Runs on a real tmpfs filled up by a real file at a chosen moment."""

import json
import os
import subprocess

import pytest
import yaml

from peftsent.rundir import is_finished_run, stage_path

from conftest import tiny_recipe

#: 6 optimizer steps, a checkpoint and an evaluation every 2
STEPS = dict(max_steps=6, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
             metric_for_best_model="log_loss")
#: bytes left free when the disk is filled: less than any checkpoint or weights file of a tiny model
LEFT = 8 * 1024


@pytest.fixture
def disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk (unmounted at the end); skipped where mounting is not allowed."""
    point = tmp_path / "disk"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(point, left: int = LEFT):
    """Fill the filesystem at ``point`` with one file until ``left`` bytes are free; returns the file."""
    filler = point / "filler.bin"
    stat = os.statvfs(point)
    with filler.open("ab") as handle:
        handle.write(b"\0" * max(stat.f_bavail * stat.f_frsize - left, 0))
    return filler


def the_error(err: str, prog: str) -> str:
    """The one error line of a command's standard error (and that there is no traceback)."""
    assert "Traceback" not in err
    assert err.count(f"{prog}: error:") == 1, err  # (progress bars may share its line: \r, not \n)
    return err[err.index(f"{prog}: error:"):].splitlines()[0]


def _recipe_file(tiny_models, reviews_csv, where, tmp_path, method="lora"):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, where / "run", {"name": method}, **STEPS)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, where / "run"


def _fill_at(monkeypatch, point_name: str, disk):
    """Fill ``disk`` when the run reaches life-cycle point ``point_name`` (peftsent.rundir.kill_point's names:
    step-N in the training loop, final-evaluation before the final evaluation and save)."""
    import peftsent.rundir
    import peftsent.train

    real = peftsent.rundir.kill_point

    def filling(name):
        if name == point_name:
            fill(disk)
        real(name)

    for module in (peftsent.rundir, peftsent.train):  # train calls it by its own name
        monkeypatch.setattr(module, "kill_point", filling, raising=False)


def test_full_disk_while_saving_a_checkpoint(disk, tiny_models, reviews_csv, tmp_path, capsys, monkeypatch):
    from peftsent.train import main

    recipe, run = _recipe_file(tiny_models, reviews_csv, disk, tmp_path)
    _fill_at(monkeypatch, "step-3", disk)  # checkpoint-2 is written, checkpoint-4 cannot be
    assert main([str(recipe)]) == 2
    line = the_error(capsys.readouterr().err, "peftsent.train")
    assert f"tmpfs mounted at {disk}" in line and "checkpoint-4" in line and "free of" in line
    assert "needed (a checkpoint of this run)" in line and "checkpoint-2 is kept" in line and "--resume" in line
    assert not run.exists()  # nothing finished-looking
    assert [p.name for p in stage_path(run).glob("checkpoint-*")] == ["checkpoint-2"]  # the cut one is gone
    monkeypatch.undo()
    (disk / "filler.bin").unlink()
    assert main([str(recipe), "--resume"]) == 0
    assert is_finished_run(run) and json.loads((run / "metrics.json").read_text())["resumed_from"] == "checkpoint-2"


def test_full_disk_while_saving_the_trained_model(disk, tiny_models, reviews_csv, tmp_path, capsys, monkeypatch):
    from peftsent.train import main

    recipe, run = _recipe_file(tiny_models, reviews_csv, disk, tmp_path, method="full")
    _fill_at(monkeypatch, "final-evaluation", disk)
    assert main([str(recipe)]) == 2
    line = the_error(capsys.readouterr().err, "peftsent.train")
    assert f"tmpfs mounted at {disk}" in line and "saving the trained model" in line and "--resume" in line
    assert not run.exists() and not (stage_path(run) / "metrics.json").exists()
    monkeypatch.undo()
    (disk / "filler.bin").unlink()
    assert main([str(recipe), "--resume"]) == 0
    assert is_finished_run(run)


def test_full_disk_while_merging_evaluating_and_comparing(disk, tiny_models, reviews_csv, tmp_path, capsys):
    from peftsent.eval import main as eval_main
    from peftsent.merge import main as merge_main
    from peftsent.recipe import resolve_recipe
    from peftsent.train import train

    run = train(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "lora"})))
    filler = fill(disk)
    capsys.readouterr()
    assert merge_main([str(run), "--out", str(disk / "merged")]) == 2
    line = the_error(capsys.readouterr().err, "peftsent.merge")
    assert f"tmpfs mounted at {disk}" in line and str(disk / "merged") in line and "needed" in line
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]  # no merged/, no half-written stage
    assert not (run / "merge.json").exists()

    assert eval_main([str(run), "--out", str(disk / "eval")]) == 2
    line = the_error(capsys.readouterr().err, "peftsent.eval")
    assert f"tmpfs mounted at {disk}" in line and str(disk / "eval") in line
    assert not list((disk / "eval").glob("*"))  # no half report

    from peftsent.compare import main as compare_main

    assert compare_main([str(run), "--out", str(disk / "cmp")]) == 2
    line = the_error(capsys.readouterr().err, "peftsent.compare")
    assert f"tmpfs mounted at {disk}" in line and not list((disk / "cmp").glob("*"))

    filler.unlink()
    assert merge_main([str(run), "--out", str(disk / "merged")]) == 0
    assert (disk / "merged" / "config.json").is_file()
    assert eval_main([str(run), "--out", str(disk / "eval")]) == 0


def test_each_writer_s_full_disk_error_is_recognised(disk):
    """torch.save (RuntimeError "unexpected pos"), safetensors (SafetensorError) and json (OSError ENOSPC)."""
    import torch
    from safetensors.torch import save_file

    from peftsent.errors import ResourceError
    from peftsent.rundir import resource_errors, write_json

    fill(disk)
    tensors = {"w": torch.zeros(256 * 1024)}
    writers = {"torch": lambda: torch.save(tensors, disk / "x.pt"),
               "safetensors": lambda: save_file(tensors, str(disk / "x.safetensors")),
               "json": lambda: write_json(disk / "x.json", {"w": "x" * 2 ** 20})}
    for name, write in writers.items():
        with pytest.raises(ResourceError, match=f"no space left on device tmpfs .*mounted at {disk}.*free of"):
            with resource_errors(disk / name, f"writing {name}", cleanup=[disk / "x.pt", disk / "x.safetensors"]):
                write()
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]


def test_out_of_memory_is_a_message(tmp_path):
    from peftsent.errors import ResourceError
    from peftsent.rundir import resource_errors

    with pytest.raises(ResourceError, match="out of memory in .* while scoring"):
        with resource_errors(tmp_path, "scoring"):
            raise MemoryError()
    with pytest.raises(ValueError):  # anything else passes unchanged
        with resource_errors(tmp_path, "scoring"):
            raise ValueError("not a resource")
