"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", section 4.2).

One scalar ``T > 0`` divides the logits: ``softmax(logits / T)``. It is fitted on the
validation split by minimising the log-loss (negative log-likelihood, nats per review)
with ``torch.optim.LBFGS`` over ``log T`` (so T stays positive). Predictions (argmax) never
change; only probabilities do.

Where it lives: ``<run>/calibration.json`` (written at the end of training when
``eval.calibrate`` is true, or by ``python -m peftsent.analyze RUN --calibrate``).
eval and predict apply it to a run (or an adapter inside a run); ``merge`` folds ``1/T``
into the final classifier layer and records ``peftsent_temperature`` in the merged
config, so a plain ``transformers.pipeline`` gives the same probabilities as
``peftsent.predict`` on the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from peftsent.metrics import classification_metrics
from peftsent.rundir import write_json

CALIBRATION_FILE = "calibration.json"
#: config attribute of a merged model holding the temperature folded into its weights
CONFIG_KEY = "peftsent_temperature"


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The temperature minimising the mean log-loss of ``softmax(logits / T)``.

    ``logits``: (n, num_labels) float; ``labels``: (n,) ints. Returns T > 0 (unitless).
    Uses ``torch.optim.LBFGS`` on ``log T``, starting from T = 1.
    """
    import torch

    x = torch.tensor(np.array(logits, dtype=np.float64))
    y = torch.tensor(np.array(labels, dtype=np.int64))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def scale(logits: np.ndarray, temperature: float | None) -> np.ndarray:
    """``logits / T`` (unchanged when ``temperature`` is None). (n, k) -> (n, k)."""
    logits = np.asarray(logits)
    return logits if temperature is None else logits / temperature


def before_after(logits: np.ndarray, labels: np.ndarray, temperature: float, ece_bins: int = 15) -> dict:
    """ECE and log-loss of ``logits`` uncalibrated and divided by ``temperature`` (peftsent.metrics)."""
    before = classification_metrics(labels, logits, ece_bins)
    after = classification_metrics(labels, scale(logits, temperature), ece_bins)
    return {"before": {k: before[k] for k in ("ece", "log_loss")},
            "after": {k: after[k] for k in ("ece", "log_loss")}}


def write_calibration(directory: Path, temperature: float, fitted_on: str, report: dict) -> Path:
    """Write ``calibration.json``: temperature, what it was fitted on, ECE/log-loss before and after."""
    path = Path(directory) / CALIBRATION_FILE
    write_json(path, {"temperature": temperature, "method": "temperature scaling (Guo et al. 2017)",
                      "fitted_on": fitted_on, **report})
    return path


def read_temperature(run_path: Path | None) -> float | None:
    """The run's fitted temperature, or None when the run has no calibration.json."""
    if run_path is None:
        return None
    path = Path(run_path) / CALIBRATION_FILE
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["temperature"])


def temperature_for(loaded) -> float | None:
    """The temperature eval/predict apply to a loaded target (``peftsent.loading.Loaded``).

    A weights directory carrying its own calibration.json (a run's ``adapter/`` or ``model/``, also when
    copied elsewhere): that one. A run, or an adapter inside a run: the run's calibration.json. A merged
    model: None, since a merge folds the temperature into the weights (``peftsent_temperature``).
    """
    own = Path(loaded.location) / CALIBRATION_FILE if loaded.kind in ("adapter", "model") else None
    if own is not None and own.is_file():
        return read_temperature(own.parent)
    if loaded.kind in ("run", "adapter") and loaded.run is not None:
        return read_temperature(loaded.run.path)
    return None


def final_linear(model):
    """The last ``torch.nn.Linear`` with ``num_labels`` outputs: the layer whose output is the logits
    (DistilBERT/BERT ``classifier``, RoBERTa ``classifier.out_proj``)."""
    import torch

    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {model.config.num_labels} outputs")
    return layers[-1]


def fold_temperature(model, temperature: float) -> None:
    """Divide the final classifier layer's weight and bias by ``temperature`` in place, so the model's
    logits become ``logits / T``; record T in ``model.config.peftsent_temperature``."""
    import torch

    layer = final_linear(model)
    with torch.no_grad():
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)
    setattr(model.config, CONFIG_KEY, float(temperature))


def describe(calibration: dict) -> str:
    """One line of a ``calibration`` report (metrics.json / calibration.json): T and test (else validation)
    ECE and log-loss before -> after."""
    split = "test" if "test" in calibration else "validation"
    before, after = calibration[split]["before"], calibration[split]["after"]
    return (f"temperature scaling: T = {calibration['temperature']:.3f} (fitted on validation); {split} ECE "
            f"{before['ece']:.4f} -> {after['ece']:.4f}, log-loss {before['log_loss']:.4f} -> {after['log_loss']:.4f}")
