"""analyze reads kept predictions (never re-scoring), writes its report and plots, and refuses bad input."""

import json
import shutil

import pytest

from peftsent.analyze import analyze, main
from peftsent.predictions import COLUMNS, read_predictions
from peftsent.recipe import resolve_recipe
from peftsent.train import train

from conftest import make_reviews, tiny_recipe, write_csv

PLOTS = {"analysis.md", "confusion.png", "reliability.png", "length.png", "slices.png"}


def _long_reviews(n: int, seed: int):
    """Reviews, every fourth one longer than the tiny models' 32 tokens."""
    rows = make_reviews(n, seed)
    return [(text + " the movie was" * 12 if i % 4 == 0 else text, label) for i, (text, label) in enumerate(rows)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_csv(root / "reviews.csv", _long_reviews(64, 0)), write_csv(root / "other.csv", _long_reviews(40, 1))


@pytest.fixture(scope="module")
def run(tiny_models, data, tmp_path_factory):
    raw = tiny_recipe(tiny_models["distilbert"], data[0], tmp_path_factory.mktemp("runs") / "lora",
                      {"name": "lora", "init_lora_weights": False}, learning_rate=1e-2)
    raw["eval"] = {"also": [str(data[1])]}
    return train(resolve_recipe(raw))


def _no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("analyze scored the model although predictions exist")

    monkeypatch.setattr("peftsent.inference.predict_logits", refuse)
    monkeypatch.setattr("peftsent.eval.evaluate", refuse)


def test_training_keeps_predictions_of_every_split_scored(run, data):
    metrics = json.loads((run / "metrics.json").read_text())
    for stem, count in (("reviews-validation", 16), ("reviews-test", 16), ("other-test", metrics["also"][str(data[1])]["count"])):
        frame = read_predictions(run / f"predictions-{stem}.jsonl")
        assert set(COLUMNS) <= set(frame.columns) and len(frame) == count
        assert list(frame["probabilities"].iloc[0]) == ["negative", "positive"]
        assert (frame["truncated"] == (frame["n_tokens"] > 32)).all() and frame["truncated"].any()
        assert ((frame["p_positive"] > 0.5) == (frame["predicted"] == 1)).all()
    accuracy = (read_predictions(run / "predictions-reviews-test.jsonl").eval("gold == predicted")).mean()
    assert accuracy == pytest.approx(metrics["test"]["accuracy"])


def test_analysis_reads_predictions_and_never_rescores(run, monkeypatch, capsys):
    _no_model(monkeypatch)
    assert main([str(run)]) == 0
    out = run / "analysis" / "reviews-test"
    assert PLOTS <= {p.name for p in out.iterdir()}
    report = (out / "analysis.md").read_text()
    for section in ("Confusion matrix", "Calibration", "by review length", "truncated", "Slices", "heuristic",
                    "Most confidently wrong", "Least confident right"):
        assert section in report
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "slice contrast" in printed


def test_numbers_come_from_the_same_metrics_as_training(run, monkeypatch):
    _no_model(monkeypatch)
    saved = json.loads((run / "metrics.json").read_text())["test"]
    result = analyze(str(run))
    metrics = next(iter(result["summary"].values()))["metrics"]
    assert metrics["accuracy"] == saved["accuracy"] and metrics["ece"] == pytest.approx(saved["ece"], abs=1e-6)
    extremes = next(iter(result["summary"].values()))
    assert all(r["gold"] != (r["p_positive"] > 0.5) for r in extremes["confidently_wrong"])


def test_out_of_domain_predictions_are_analysed_too(run, data, monkeypatch):
    _no_model(monkeypatch)
    result = analyze(str(run), data=str(data[1]))
    assert result["sources"] == [str(run / "predictions-other-test.jsonl")]


def test_against_shows_where_each_wins(run, tmp_path, monkeypatch):
    _no_model(monkeypatch)
    flipped = tmp_path / "predictions-flipped.jsonl"
    lines = [json.loads(line) for line in (run / "predictions-reviews-test.jsonl").read_text().splitlines()]
    with flipped.open("w") as handle:
        for line in lines:  # a model that always disagrees
            line["logits"], line["predicted"] = line["logits"][::-1], 1 - line["predicted"]
            handle.write(json.dumps(line) + "\n")
    result = analyze(str(run), against=str(flipped), out=str(tmp_path / "vs"))
    right = sum(line["gold"] == line["predicted"] for line in lines)
    assert result["head_to_head"]["a_wins"] == right and result["head_to_head"]["b_wins"] == len(lines) - right
    assert "Head to head" in (tmp_path / "vs" / "analysis.md").read_text()


def test_calibrate_refits_on_validation_predictions(run, tmp_path, monkeypatch):
    _no_model(monkeypatch)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "calibration.json").unlink()
    result = analyze(str(copy), calibrate=True)
    saved = json.loads((copy / "calibration.json").read_text())
    assert saved["temperature"] == result["calibration"]["temperature"]
    assert {"validation", "analyzed"} <= set(saved)


def test_target_without_predictions_is_scored_once(run, tiny_models, data, tmp_path, monkeypatch):
    out = tmp_path / "a"
    analyze(str(run / "adapter"), out=str(out))  # no predictions of the bare adapter yet: eval makes them once
    assert (run / "eval" / "predictions-adapter-reviews-test.jsonl").is_file()
    _no_model(monkeypatch)
    analyze(str(run / "adapter"), out=str(out))


@pytest.mark.parametrize("args, message", [
    (["--split", "dev"], "unknown split 'dev'"),
    (["--slice", "irony"], "unknown slice 'irony'"),
    (["--slice", "sarcasm"], "slice sarcasm is empty"),
    (["--calibrate", "--data", "x.csv"], None),
])
def test_bad_input_is_one_message_and_exit_2(run, args, message, tmp_path, capsys, monkeypatch):
    if message is None:  # --calibrate on a merged-like target that is not a run
        args, message = ["--calibrate"], "fits the temperature of a run directory"
        target = str(run / "predictions-reviews-test.jsonl")
    else:
        target = str(run)
    assert main([target, *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_target_cannot_make_predictions(tmp_path, capsys):
    assert main([str(tmp_path / "nothing"), "--data", "imdb-offline", "--out", str(tmp_path / "out")]) == 2
    assert "no predictions of" in capsys.readouterr().err


def test_against_other_reviews_is_refused(run, data, capsys, tmp_path):
    other = str(run / "predictions-other-test.jsonl")
    assert main([str(run), "--against", other, "--out", str(tmp_path / "out")]) == 2
    assert "do not hold the same reviews" in capsys.readouterr().err


def test_eval_writes_predictions_beside_its_report(run):
    from peftsent.eval import evaluate

    result = evaluate(str(run), split="validation")
    frame = read_predictions(run / "eval" / "predictions-reviews-validation.jsonl")
    assert result["predictions"].endswith("predictions-reviews-validation.jsonl") and len(frame) == result["count"]


def test_window_scoring_averages_windows_and_equals_truncation_when_a_review_fits(run):
    from peftsent.eval import evaluate
    from peftsent.inference import window_logits
    from peftsent.loading import load_target

    from conftest import logits_of

    loaded = load_target(str(run))
    short, long = "a great movie", "a great movie " + "the plot was boring " * 12
    logits, windows, _ = window_logits(loaded.model, loaded.tokenizer, [short, long], loaded.max_length, stride=8)
    assert windows.tolist()[0] == 1 and windows.tolist()[1] > 1
    assert logits[0] == pytest.approx(logits_of(loaded.model, loaded.tokenizer, [short])[0].numpy(), abs=1e-5)
    result = evaluate(str(run), long_reviews="window", stride=8)
    assert result["long_reviews"] == "window (stride 8)"
    assert (run / "eval" / "predictions-reviews-test-window-stride8.jsonl").is_file()  # an explicit stride: named


def test_bad_stride_is_a_user_error(run, capsys):
    from peftsent.eval import main as eval_main
    from peftsent.predict import main as predict_main

    assert eval_main([str(run), "--long-reviews", "window", "--stride", "40"]) == 2
    assert "--stride 40" in capsys.readouterr().err
    assert predict_main([str(run), "a movie", "--long-reviews", "window", "--stride", "-1"]) == 2
    assert eval_main([str(run), "--stride", "8"]) == 2
    assert "applies to windows only" in capsys.readouterr().err


def test_compare_shows_the_out_of_domain_column(run, data, tmp_path):
    from peftsent.compare import compare

    result = compare([str(run)], out=str(tmp_path / "cmp"))
    assert f"{data[1]} test acc" in result["markdown"]


def test_compare_reuses_a_run_saved_before_the_new_eval_keys(run, tmp_path):
    """A run whose recipe.yaml predates eval.calibrate / eval.also is the same recipe with their defaults."""
    import yaml

    from peftsent.compare import is_reusable
    from peftsent.recipe import load_recipe

    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    saved = yaml.safe_load((copy / "recipe.yaml").read_text())
    saved["train"]["output_dir"] = str(copy)
    saved["eval"].pop("calibrate")
    (copy / "recipe.yaml").write_text(yaml.safe_dump(saved))
    assert is_reusable(load_recipe(copy / "recipe.yaml"))


def test_training_fits_and_keeps_the_temperature(run):
    from peftsent.calibration import CALIBRATION_FILE

    saved = json.loads((run / CALIBRATION_FILE).read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert saved["temperature"] > 0 and metrics["calibration"]["temperature"] == saved["temperature"]
    for split in ("validation", "test"):  # before/after reported; uncalibrated numbers kept beside
        assert set(saved[split]) == {"before", "after"}
        assert metrics[split]["uncalibrated"]["log_loss"] == pytest.approx(saved[split]["before"]["log_loss"])
        assert metrics[split]["log_loss"] == pytest.approx(saved[split]["after"]["log_loss"])
    assert saved["validation"]["after"]["log_loss"] <= saved["validation"]["before"]["log_loss"] + 1e-9


def test_eval_and_predict_apply_the_temperature(run, tmp_path):
    from peftsent.calibration import write_calibration
    from peftsent.eval import evaluate
    from peftsent.loading import load_target
    from peftsent.metrics import softmax
    from peftsent.predict import predict_texts

    from conftest import logits_of

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    write_calibration(copy, 2.5, "test", {})
    result = evaluate(str(copy))
    assert result["temperature"] == 2.5 and "uncalibrated" in result
    assert read_predictions(copy / "eval" / "predictions-reviews-test.jsonl")["temperature"].eq(2.5).all()
    loaded = load_target(str(copy))
    raw = logits_of(loaded.model, loaded.tokenizer, ["a great movie"]).numpy()
    served = next(predict_texts(loaded, ["a great movie"]))
    assert served["probabilities"]["positive"] == pytest.approx(softmax(raw / 2.5)[0, 1], abs=1e-5)
