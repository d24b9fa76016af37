"""``peftsent export``: ONNX directories with parity checked against float32 PyTorch, loadable by eval and predict."""

import json

import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra: pip install 'peftsent[export]'")
pytest.importorskip("onnx", reason="ONNX export needs the export extra: pip install 'peftsent[export]'")

import peftsent.train as train_module  # noqa: E402
from peftsent.errors import ExportError, ModelError, PeftsentError  # noqa: E402
from peftsent.eval import evaluate  # noqa: E402
from peftsent.export import TOLERANCES, export  # noqa: E402
from peftsent.export import main as export_main  # noqa: E402
from peftsent.loading import load_target  # noqa: E402
from peftsent.merge import merge  # noqa: E402
from peftsent.predict import main as predict_main  # noqa: E402
from peftsent.predict import predict_texts  # noqa: E402
from peftsent.recipe import resolve_recipe  # noqa: E402

from conftest import TEXTS, make_reviews, tiny_recipe  # noqa: E402

MORE = TEXTS + [text for text, _ in make_reviews(13, seed=3)]
#: (architecture, method): an adapter run (merged before export) and a full fine-tuning run
RUNS = {"distilbert-lora": ("distilbert", {"name": "lora", "init_lora_weights": False}),
        "bert-full": ("bert", {"name": "full"})}
EXPORT_FILES = {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "export.json", "README.md"}


@pytest.fixture(scope="module")
def runs(tiny_models, reviews_csv, tmp_path_factory):
    """One finished tiny run per RUNS entry (the full run scores long reviews over windows, head+tail)."""
    out = {}
    for name, (arch, method) in RUNS.items():
        raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path_factory.mktemp("runs") / name, method,
                          learning_rate=5e-2, max_steps=3)
        if name == "bert-full":
            raw["model"].update(truncation="head+tail", long_reviews="window", stride=4, max_length=16)
        out[name] = train_module.train(resolve_recipe(raw))
    return out


@pytest.fixture(scope="module")
def exports(runs):
    """(run name, precision) -> (export directory, Parity)."""
    return {(name, precision): export(str(run), quantize=None if precision == "float32" else precision,
                                      probe_size=16)
            for name, run in runs.items() for precision in ("float32", "int8")}


def _reference(runs, name):
    """What a user compares an export with: the merged model of an adapter run, the run itself for full."""
    run = runs[name]
    if name.endswith("lora"):
        return str(merge(run, probe_size=8, force=True)[0])
    return str(run)


@pytest.mark.parametrize("precision", ["float32", "int8"])
@pytest.mark.parametrize("name", list(RUNS))
def test_predict_on_the_export_matches_predict_on_the_model(name, precision, runs, exports):
    directory, parity = exports[(name, precision)]
    assert directory == runs[name] / ("onnx" if precision == "float32" else "onnx-int8")
    assert {p.name for p in directory.iterdir()} == EXPORT_FILES
    record = json.loads((directory / "export.json").read_text())
    tolerance = record["parity"]["tolerance"]
    assert record["precision"] == precision and record["parity"]["passed"]
    assert record["labels"] == ["negative", "positive"] and record["parity"]["max_abs_dprob"] == parity.max_abs_dprob
    assert tolerance == {"max_abs_dprob": TOLERANCES[precision].max_abs_dprob,
                         "min_agreement": TOLERANCES[precision].min_agreement}
    assert record["temperature"] is not None  # tiny runs are calibrated: the temperature is folded into the graph
    ours = list(predict_texts(load_target(str(directory)), MORE))
    theirs = list(predict_texts(load_target(_reference(runs, name)), MORE))
    gaps = [abs(a["probabilities"]["positive"] - b["probabilities"]["positive"]) for a, b in zip(ours, theirs)]
    assert max(gaps) <= tolerance["max_abs_dprob"] + 1e-6
    if precision == "float32":  # exact up to summation order: every label the same, probabilities to 1e-5
        assert max(gaps) <= 1e-5 and [a["label"] for a in ours] == [b["label"] for b in theirs]
    else:  # int8 differs; it may flip only reviews as close to p = 0.5 as the tolerance
        for a, b, gap in zip(ours, theirs, gaps):
            assert a["label"] == b["label"] or abs(b["probabilities"]["positive"] - 0.5) <= gap
        assert parity.max_abs_dprob > 0  # int8 really changed the weights: the comparison could fail


def test_eval_of_an_export_scores_like_the_model(runs, exports):
    directory, _ = exports[("distilbert-lora", "float32")]
    ours = evaluate(str(directory), dtype="auto")
    theirs = evaluate(_reference(runs, "distilbert-lora"), dtype="float32")
    assert ours["inference"]["runtime"] == "onnxruntime float32" and ours["inference"]["dtype"] == "float32"
    assert ours["count"] == theirs["count"] and ours["accuracy"] == theirs["accuracy"]
    assert ours["log_loss"] == pytest.approx(theirs["log_loss"], abs=1e-5)
    assert ours["written_to"].endswith("onnx-reviews-test.json")  # in the run's eval/, named after the export
    quantized = evaluate(str(exports[("distilbert-lora", "int8")][0]))
    assert quantized["inference"]["runtime"] == "onnxruntime int8" and quantized["count"] == theirs["count"]


def test_export_keeps_the_scoring_settings_outside_the_run(runs, tmp_path):
    run = runs["bert-full"]
    out, _ = export(str(run), out=tmp_path / "elsewhere", probe_size=8)
    moved = load_target(str(out))  # no run around it: the policy comes from the saved tokenizer alone
    assert moved.run is None and moved.kind == "onnx"
    assert moved.policy == load_target(str(run)).policy
    assert (moved.policy.truncation, moved.policy.long_reviews, moved.policy.stride) == ("head+tail", "window", 4)
    long = " ".join(["the movie was good but the plot was awful and boring"] * 6)
    ours = list(predict_texts(moved, [long]))[0]
    theirs = list(predict_texts(load_target(str(run)), [long]))[0]
    assert ours["probabilities"]["positive"] == pytest.approx(theirs["probabilities"]["positive"], abs=1e-5)
    card = (out / "README.md").read_text()
    assert "Parity check" in card and "onnxruntime" in card and "head+tail" in card


def test_cli_export_then_predict(runs, tmp_path, capsys):
    out = tmp_path / "cli-onnx"
    assert export_main([str(runs["distilbert-lora"] / "adapter"), "--out", str(out), "--probe-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "max |dp|" in printed and "tolerance 0.0001" in printed
    assert predict_main([str(out), *TEXTS[:2]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in lines] == TEXTS[:2]
    assert all(row["label"] in ("negative", "positive") for row in lines)
    assert predict_main([str(out), "--dtype", "bfloat16", "a film"]) == 2  # the graph's precision is its own
    assert "precision it was exported in" in capsys.readouterr().err


def test_export_above_tolerance_writes_nothing(runs, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(ExportError, match="parity check failed.*nothing was written"):
        export(str(runs["distilbert-lora"]), quantize="int8", out=out, probe_size=16, max_dprob=0.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no staging leftovers either


def test_export_refuses_user_mistakes_before_any_compute(runs, exports, tiny_models, reviews_csv, tmp_path):
    with pytest.raises(ExportError) as err:
        export(str(runs["distilbert-lora"]), fmt="tflite", quantize="int4", probe_size=0)
    assert all(flag in str(err.value) for flag in ("--format tflite", "--quantize int4", "--probe-size"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an ONNX export"):
        export(str(runs["distilbert-lora"]), out=taken)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="already holds an ONNX export; pass --force"):
        export(str(runs["distilbert-lora"]))  # exports' fixture wrote RUN/onnx
    with pytest.raises(ExportError, match="no recipe.*--data"):
        export(str(tiny_models["bert"]), out=tmp_path / "bare")
    with pytest.raises(ExportError, match="already an ONNX export"):
        export(str(runs["distilbert-lora"] / "onnx"), out=tmp_path / "again")
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "prompt",
                      {"name": "prompt_tuning", "num_virtual_tokens": 2})
    prompt = train_module.train(resolve_recipe(raw))
    with pytest.raises(ExportError, match="cannot be merged.*peftsent predict"):
        export(str(prompt), out=tmp_path / "prompt-onnx", probe_size=4)
    assert issubclass(ExportError, PeftsentError) and issubclass(ModelError, PeftsentError)


def test_missing_onnxruntime_names_the_extra(runs, exports, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import raises ImportError
    with pytest.raises(ModelError, match=r"pip install 'peftsent\[export\]'"):
        export(str(runs["distilbert-lora"]), out=tmp_path / "none")
    with pytest.raises(ModelError, match=r"onnxruntime.*pip install 'peftsent\[export\]'"):
        load_target(str(exports[("distilbert-lora", "float32")][0]))
    assert not (tmp_path / "none").exists()


def test_export_of_a_merged_model_folds_the_temperature_once(runs, tmp_path):
    merged = _reference(runs, "distilbert-lora")  # merge folded T into the classifier already
    out, parity = export(merged, out=tmp_path / "from-merged", probe_size=8)
    record = json.loads((out / "export.json").read_text())
    assert record["temperature"] is None and parity.max_abs_dprob <= 1e-5
    ours = [p["probabilities"]["positive"] for p in predict_texts(load_target(str(out)), MORE)]
    theirs = [p["probabilities"]["positive"] for p in predict_texts(load_target(str(runs["distilbert-lora"])), MORE)]
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-5  # the run's own calibrated probabilities


def test_bottleneck_adapters_export_without_a_merge(tiny_models, reviews_csv, tmp_path):
    method = {"name": "bottleneck", "init_weights": False, "variant": "houlsby", "reduction_factor": 4}
    run = train_module.train(resolve_recipe(tiny_recipe(tiny_models["roberta"], reviews_csv, tmp_path / "run",
                                                        method, learning_rate=5e-2)))
    out, parity = export(str(run), probe_size=8)  # the adapters are ordinary modules: they are in the graph
    assert parity.passed and parity.max_abs_dprob <= 1e-4
    ours = [p["probabilities"]["positive"] for p in predict_texts(load_target(str(out)), MORE)]
    theirs = [p["probabilities"]["positive"] for p in predict_texts(load_target(str(run)), MORE)]
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-5
