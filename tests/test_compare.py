import csv

import pytest
import yaml

from peftsent.compare import compare, main
from peftsent.errors import PeftsentError

from conftest import tiny_recipe


def _write_recipe(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture()
def recipes(tiny_models, reviews_csv, tmp_path):
    out = []
    for method in ("full", "lora", "ia3"):
        raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / method, {"name": method})
        out.append(_write_recipe(tmp_path / f"{method}.yaml", raw))
    return out


def test_compare_trains_missing_runs_and_writes_table_csv_plot(recipes, tmp_path):
    result = compare(recipes=recipes, seeds=2, out=str(tmp_path / "cmp"))
    (rows,) = result["groups"].values()
    assert [row.runs[0].recipe["method"]["name"] for row in rows] == ["full", "lora", "ia3"]
    assert all(len(row.runs) == 2 for row in rows)
    assert (tmp_path / "runs" / "lora-seed1" / "metrics.json").is_file()
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.md", "compare.csv", "compare.png"}
    lines = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [line["method"] for line in lines] == ["full", "lora", "ia3"] and " ± " in lines[1]["test acc"]
    # every metric cell is traceable to the runs' metrics.json
    accs = [r.metrics["test"]["accuracy"] for r in rows[1].runs]
    import statistics

    assert lines[1]["test acc"] == f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}"
    assert "Budget, equal for every row" in result["markdown"]


def test_compare_reuses_finished_runs(recipes, tmp_path, monkeypatch):
    compare(recipes=recipes[:1], out=str(tmp_path / "a"))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("peftsent.train.train", no_training)
    result = compare(recipes=recipes[:1], out=str(tmp_path / "b"))
    assert len(next(iter(result["groups"].values()))) == 1


def test_runs_with_different_budgets_go_to_separate_tables(tiny_models, reviews_csv, tmp_path):
    from peftsent.recipe import resolve_recipe
    from peftsent.train import train

    a = train(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "a")))
    b = train(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "b", max_steps=2)))
    result = compare(run_dirs=[str(a), str(b)], out=str(tmp_path / "cmp"))
    assert len(result["groups"]) == 2
    assert "separate tables" in result["markdown"] and "## Table 2" in result["markdown"]


def test_compare_user_errors(tmp_path, capsys):
    with pytest.raises(PeftsentError, match="nothing to compare"):
        compare()
    assert main([str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_overrides_train_into_the_compare_directory(recipes, tmp_path):
    result = compare(recipes=recipes[1:2], out=str(tmp_path / "cmp"), overrides=["train.max_steps=2"])
    assert (tmp_path / "cmp" / "runs" / "lora" / "metrics.json").is_file()
    assert not (tmp_path / "runs" / "lora").exists()
    assert "train.max_steps=2" in result["markdown"] and "2 steps" in result["markdown"]


def test_markdown_rows_have_as_many_cells_as_the_header(recipes, tmp_path):
    result = compare(recipes=recipes[:2], out=str(tmp_path / "cmp"))
    table = [line for line in result["markdown"].splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1, "a cell contains '|' and breaks the table"


# issue 24, item 3: compare compares like with like
def _train(raw):
    from peftsent.recipe import resolve_recipe
    from peftsent.train import train

    return train(resolve_recipe(raw))


def test_runs_of_changed_data_are_refused_not_averaged(tiny_models, tmp_path, capsys):
    """Same path, same recipe and seed, content changed between the runs: not one row of 2 seeds."""
    from conftest import make_reviews, write_csv

    data = tmp_path / "reviews.csv"
    write_csv(data, make_reviews(64, seed=0))
    a = _train(tiny_recipe(tiny_models["bert"], data, tmp_path / "a"))
    write_csv(data, make_reviews(64, seed=1))
    b = _train(tiny_recipe(tiny_models["bert"], data, tmp_path / "b"))
    capsys.readouterr()
    assert main([str(a), str(b), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "data fingerprints differ" in err and str(a) in err and str(b) in err
    assert "--separate" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cmp").exists()
    result = compare(run_dirs=[str(a), str(b)], out=str(tmp_path / "cmp"), separate=True)
    assert len(result["groups"]) == 2
    assert all(len(rows) == 1 and len(rows[0].runs) == 1 for rows in result["groups"].values())
    assert "fingerprint" in result["markdown"]


@pytest.fixture(scope="module")
def like_runs(tiny_models, reviews_csv, tmp_path_factory):
    """a; b: a's recipe and seed again; c: seed 7; d: a larger test split."""
    root = tmp_path_factory.mktemp("like")
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, root / "d")
    raw["data"]["test_size"] = 20
    return {"a": _train(tiny_recipe(tiny_models["bert"], reviews_csv, root / "a")),
            "b": _train(tiny_recipe(tiny_models["bert"], reviews_csv, root / "b")),
            "c": _train(tiny_recipe(tiny_models["bert"], reviews_csv, root / "c", seed=7)),
            "d": _train(raw)}


def test_runs_of_different_test_splits_are_refused(like_runs, tmp_path, capsys):
    a, d = like_runs["a"], like_runs["d"]
    assert main([str(a), str(d), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "test splits differ" in err and "16 of" in err and "20 of" in err


def test_runs_of_different_label_sets_are_refused(like_runs, tmp_path, capsys):
    import shutil

    a, b = like_runs["a"], tmp_path / "b"
    shutil.copytree(like_runs["b"], b)
    recipe = yaml.safe_load((b / "recipe.yaml").read_text())
    recipe["data"]["labels"] = ["bad", "good"]  # class names as a run with a label set records them
    (b / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main([str(a), str(b), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "label sets differ" in err and "negative, positive" in err and "bad, good" in err


def test_rows_state_seeds_and_a_repeat_is_not_a_second_seed(like_runs, tmp_path):
    a, b, c = like_runs["a"], like_runs["b"], like_runs["c"]
    result = compare(run_dirs=[str(a), str(b), str(c)], out=str(tmp_path / "cmp"))
    ((row,),) = result["groups"].values()
    assert [r.path for r in row.runs] == [a, c] and [r.path for r in row.repeats] == [b]
    lines = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert lines[0]["seeds"] == "2 (42, 7)"
    assert f"{b} (seed 42, as {a})" in result["markdown"]
