"""Temperature scaling: the fit, where it is kept, and that a merged model keeps it."""

import json

import numpy as np
import pytest

from peftsent.calibration import CALIBRATION_FILE, fit_temperature, read_temperature, write_calibration
from peftsent.recipe import resolve_recipe
from peftsent.train import train

from conftest import ARCHS, tiny_recipe


def test_fit_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at logit margin z
    logits = np.stack([np.zeros_like(z), 3.0 * z], axis=1)  # three times too confident
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)


def test_fit_lowers_validation_log_loss():
    from peftsent.metrics import classification_metrics

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, size=(500, 2))
    labels = rng.integers(0, 2, 500)  # logits carry no signal: the best T flattens them
    t = fit_temperature(logits, labels)
    assert t > 3 and classification_metrics(labels, logits / t)["log_loss"] < classification_metrics(labels, logits)["log_loss"]


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_model_in_a_plain_pipeline_gives_predict_probabilities(arch, tiny_models, reviews_csv, tmp_path):
    """1/T folded into the last classifier layer (RoBERTa: classifier.out_proj): pipeline == peftsent.predict.
    (Trained with eval.calibrate off, which writes no calibration; the temperature is then set by hand.)"""
    from transformers import pipeline

    from peftsent.loading import load_target
    from peftsent.merge import merge
    from peftsent.predict import predict_texts

    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", {"name": "lora", "init_lora_weights": False},
                      learning_rate=1e-2)
    raw["eval"] = {"calibrate": False}
    run = train(resolve_recipe(raw))
    assert not (run / CALIBRATION_FILE).exists() and "calibration" not in json.loads((run / "metrics.json").read_text())
    write_calibration(run, 3.0, "test", {})  # far from 1, so an unfolded merge fails the comparison
    target, _ = merge(run, probe_size=8)
    texts = ["a great movie, loved it", "awful and boring plot", "the acting was not very good"]
    ours = [p["probabilities"]["positive"] for p in predict_texts(load_target(str(run)), texts)]
    classify = pipeline("text-classification", model=str(target), top_k=None)
    theirs = [{s["label"]: s["score"] for s in scores}["positive"] for scores in classify(texts)]
    assert theirs == pytest.approx(ours, abs=1e-5)
    assert json.loads((target / "config.json").read_text())["peftsent_temperature"] == 3.0
    assert read_temperature(run) == 3.0
