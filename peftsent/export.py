"""``peftsent export TARGET --format onnx [--quantize int8] [--out DIR]``: a run, adapter or merged model as a
parity-checked ONNX directory that ONNX Runtime serves without PyTorch, transformers or peft.

The target is loaded in float32 (:func:`peftsent.loading.load_target`); an adapter is folded into its base
(:func:`peftsent.modeling.merge_adapter`, the merge of ``peftsent merge``); the run's calibration temperature is
folded into the final classifier layer (:func:`peftsent.calibration.fold_temperature`, as a merge does), so
softmax of the graph's logits gives the probabilities ``peftsent predict`` gives. ``torch.onnx.export`` writes
the graph (:mod:`peftsent.onnx_runtime`); ``--quantize int8`` rewrites it with ONNX Runtime's dynamic int8
quantizer. The written directory is then loaded back as ``eval`` and ``predict`` load it and scored on probe
reviews of the validation split against the float32 PyTorch model (max |dp| of the positive class and
prediction agreement); above the tolerance nothing is written (``rundir.staging``).

An export directory holds ``model.onnx``, ``config.json`` (``id2label``, ``peftsent_temperature``), the tokenizer
with peftsent's scoring settings in tokenizer_config.json (``model_max_length``, ``truncation_side``,
``peftsent_truncation``, ``peftsent_long_reviews``, ``peftsent_stride``), ``export.json`` (precision, tolerance,
parity, versions) and a model card ``README.md``.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from peftsent import __version__
from peftsent.calibration import fold_temperature, temperature_for
from peftsent.cli import make_parser, positive_int, run_cli
from peftsent.data import load_splits, tokenize_splits
from peftsent.errors import ExportError
from peftsent.inference import predict_logits
from peftsent.loading import load_target, target_run
from peftsent.methods import METHODS, method_spec
from peftsent.modeling import merge_adapter
from peftsent.onnx_runtime import (
    EXPORT_FILE,
    ONNX_FILE,
    OPSET,
    export_onnx,
    is_onnx_dir,
    load_onnx,
    quantize_int8,
    require_onnx,
)
from peftsent.recipe import DataSection
from peftsent.rundir import staging, write_json
from peftsent.speed import agreement
from peftsent.training_args import EVAL_BATCH_SIZE

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class Tolerance:
    """The most an export may differ from the float32 PyTorch model on the probe reviews."""

    max_abs_dprob: float
    """max over reviews of |p_export(positive) - p_pytorch(positive)| (probabilities, temperature applied)"""
    min_agreement: float
    """fraction of reviews whose predicted class must be the same"""


#: per precision. float32: ONNX Runtime and PyTorch differ by summation order only (5e-7 in a probability on
#: a MiniLM-L6 LoRA run; 1e-4 leaves room for other kernels), and no prediction may change. int8: dynamic
#: quantization rounds every MatMul weight to 8 bits and every activation per batch: on the same run (200
#: validation reviews) max |dp| 0.067 and 97.5 % agreement (reviews near p = 0.5 flip), so 0.2 and 95 %.
#: Both can be overridden (--max-dprob, --min-agreement).
TOLERANCES = {"float32": Tolerance(1e-4, 1.0), "int8": Tolerance(0.2, 0.95)}

EPILOG = """examples:
  peftsent export runs/quick/lora                       # -> runs/quick/lora/onnx (float32)
  peftsent export runs/quick/lora --quantize int8       # -> runs/quick/lora/onnx-int8
  peftsent export runs/quick/lora/merged --out exports/lora-onnx
  peftsent export my-merged-model --data imdb-offline --out my-onnx   # no run: name the probe reviews

Check every number with the same commands as any model:
  peftsent eval runs/quick/lora/onnx-int8
  peftsent predict runs/quick/lora/onnx "a wonderful film"

Needs the export extra: pip install 'peftsent[export]'  (onnx, onnxruntime).
"""


@dataclass(frozen=True)
class Parity:
    """The written export (loaded back through ONNX Runtime) vs the float32 PyTorch model on probe reviews."""

    probe_size: int
    """reviews of the validation split"""
    max_abs_dprob: float
    """max |p_export(positive) - p_pytorch(positive)|"""
    max_abs_dlogit: float
    """max over reviews and classes of |logit_export - logit_pytorch| (temperature applied to both)"""
    agreement: float
    """fraction of reviews whose predicted class is the same"""
    precision: str
    """``float32`` or ``int8``"""
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return self.max_abs_dprob <= self.tolerance.max_abs_dprob and self.agreement >= self.tolerance.min_agreement


def default_out(target: str, precision: str) -> Path:
    """``RUN/onnx`` (float32) or ``RUN/onnx-int8`` for a run or a directory inside one; else a sibling
    ``<target>-onnx[-int8]`` (for a hub id: in the working directory)."""
    name = "onnx" if precision == "float32" else f"onnx-{precision}"
    run = target_run(target)
    if run is not None:
        return run.path / name
    path = Path(target).expanduser()
    if path.is_dir():
        return path.resolve().parent / f"{path.resolve().name}-{name}"
    return Path(f"{target.replace('/', '--')}-{name}")


def _check_request(fmt: str, quantize: str | None, probe_size: int, tolerance: Tolerance) -> None:
    problems = []
    if fmt not in FORMATS:
        problems.append(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        problems.append(f"--quantize {quantize}: expected one of {', '.join(QUANTIZATIONS)} (or none: float32)")
    if probe_size < 1:
        problems.append(f"--probe-size {probe_size}: expected at least 1 review")
    if not 0 <= tolerance.max_abs_dprob <= 1:
        problems.append(f"--max-dprob {tolerance.max_abs_dprob}: expected a probability difference in [0, 1]")
    if not 0 <= tolerance.min_agreement <= 1:
        problems.append(f"--min-agreement {tolerance.min_agreement}: expected a fraction in [0, 1]")
    if problems:
        raise ExportError("; ".join(problems))


def _check_out(out: Path, target: str, force: bool) -> None:
    """Refuse an output that is or holds the target, or that exists and is not an export (or is one, unforced)."""
    resolved, source = out.resolve(), Path(target).expanduser().resolve()
    if Path(target).expanduser().exists() and (resolved == source or resolved in source.parents):
        raise ExportError(f"--out {out} would overwrite the target {target}; choose another directory")
    run = target_run(target)
    if run is not None and resolved == run.path.resolve():
        raise ExportError(f"--out {out} would overwrite the run {run.path}; choose another directory")
    if out.exists():
        if not is_onnx_dir(out):
            raise ExportError(f"{out} exists and is not an ONNX export; --force only replaces exports, so nothing "
                              f"was touched: choose another --out")
        if not force:
            raise ExportError(f"{out} already holds an ONNX export; pass --force to replace it")


def _probe_section(target: str, data: str | None, probe_size: int):
    run = target_run(target)
    if data is None and run is None:
        raise ExportError(f"{target} carries no recipe, so there are no validation reviews for the parity check: "
                          f"name a dataset with --data (e.g. --data imdb-offline)")
    section = run.recipe().data if data is None else DataSection(name=data)
    return dataclasses.replace(section, max_eval_samples=probe_size)


def _needs_merge(loaded) -> bool:
    """True for a peft adapter, which is merged into its base before export; False for a full model or a
    bottleneck model (its adapters are ordinary modules, exported as they are). Raises ExportError for an
    export and for methods that cannot merge (prompt methods)."""
    from transformers import PreTrainedModel

    if loaded.kind == "onnx":
        raise ExportError(f"{loaded.location} is already an ONNX export; export its run or merged model instead")
    model = loaded.model
    if isinstance(model, PreTrainedModel):
        return False
    config = model.peft_config[model.active_adapter]
    method = str(getattr(config.peft_type, "value", config.peft_type)).lower()
    if method not in METHODS or not method_spec(method).mergeable:
        raise ExportError(f"{loaded.location}: method '{method}' cannot be merged into the base weights, so it "
                          f"has no standalone graph to export; serve it with the adapter instead: "
                          f"peftsent predict {loaded.location}")
    return True


def export(target: str, fmt: str = "onnx", quantize: str | None = None, out: str | Path | None = None,
           probe_size: int = 256, data: str | None = None, force: bool = False,
           max_dprob: float | None = None, min_agreement: float | None = None,
           batch_size: int = EVAL_BATCH_SIZE) -> tuple[Path, Parity]:
    """Export ``target`` (a run, adapter, model directory or hub id) as an ONNX directory; returns (directory,
    Parity).

    ``quantize``: None (float32 weights) or ``int8`` (dynamic int8). ``out``: default :func:`default_out`.
    ``probe_size``: validation reviews of the parity check, from the run's data or ``data``. ``max_dprob`` /
    ``min_agreement``: the tolerance (default :data:`TOLERANCES` of the precision). Raises ExportError for a
    bad request, an unmergeable method, an existing output (unless ``force`` and it is an export) or a failed
    parity check (nothing is written then); ModelError when onnx/onnxruntime are missing; the errors of
    :func:`peftsent.loading.load_target` and :func:`peftsent.data.load_splits`.
    """
    precision = quantize or "float32"
    default = TOLERANCES.get(precision, TOLERANCES["float32"])
    tolerance = Tolerance(default.max_abs_dprob if max_dprob is None else max_dprob,
                          default.min_agreement if min_agreement is None else min_agreement)
    _check_request(fmt, quantize, probe_size, tolerance)
    require_onnx()
    out = Path(out) if out else default_out(target, precision)
    _check_out(out, target, force)
    splits = load_splits(_probe_section(target, data, probe_size), splits=["validation"], both_classes=False)

    loaded = load_target(target)  # float32, the reference
    probes = tokenize_splits(splits, loaded.tokenizer, loaded.policy)["validation"]
    merge = _needs_merge(loaded)  # an unexportable target fails before any compute
    reference = loaded.canonical(predict_logits(loaded.model, loaded.tokenizer, probes, batch_size, progress=False,
                                                max_length=loaded.max_length)[0])
    model = merge_adapter(loaded.model) if merge else loaded.model  # the merge of `peftsent merge`
    temperature = temperature_for(loaded)
    if temperature is not None:  # the probabilities predict gives: logits / T, folded into the classifier
        fold_temperature(model, temperature)
        reference = reference / temperature
    with staging(out, overwrite=force) as work:
        inputs = _write_graph(model, loaded.tokenizer, work, precision)
        model.config.save_pretrained(work)
        loaded.policy.configure(loaded.tokenizer).save_pretrained(work)
        exported = load_onnx(work)
        logits = loaded.canonical(predict_logits(exported, loaded.tokenizer, probes, batch_size, progress=False,
                                                 max_length=loaded.max_length)[0])
        check = agreement(logits, reference)
        parity = Parity(check["n"], check["max_abs_dprob"], check["max_abs_dlogit"], check["prediction_agreement"],
                        precision, tolerance)
        if not parity.passed:
            raise ExportError(
                f"parity check failed ({precision}): max |dp| {parity.max_abs_dprob:.3g} (tolerance "
                f"{tolerance.max_abs_dprob:g}), agreement {100 * parity.agreement:.2f} % (at least "
                f"{100 * tolerance.min_agreement:g} %) on {parity.probe_size} validation reviews; nothing was written")
        record = _record(target, loaded, parity, temperature, inputs)
        record["labels"] = [model.config.id2label[i] for i in range(model.config.num_labels)]
        write_json(work / EXPORT_FILE, record)
        (work / "README.md").write_text(model_card(record, out))
    return out, parity


def _write_graph(model, tokenizer, work: Path, precision: str) -> list[str]:
    """``work/model.onnx``: the float32 graph, or its dynamic int8 rewrite (the float32 graph in a scratch
    directory, never beside the result). Returns the graph's input names."""
    import logging

    if precision == "float32":
        return export_onnx(model, tokenizer, work / ONNX_FILE)
    with tempfile.TemporaryDirectory(prefix="peftsent-export-") as scratch:
        inputs = export_onnx(model, tokenizer, Path(scratch) / ONNX_FILE)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process (shape inference) on the root logger
        try:
            quantize_int8(Path(scratch) / ONNX_FILE, work / ONNX_FILE)
        finally:
            root.setLevel(level)
    return inputs


def _record(target: str, loaded, parity: Parity, temperature: float | None, inputs: list[str]) -> dict:
    """export.json: what was exported, how it scores, how close it is to the float32 PyTorch model."""
    import datetime

    import onnx
    import onnxruntime
    import torch

    policy = loaded.policy
    return {
        "format": "onnx", "file": ONNX_FILE, "precision": parity.precision, "opset": OPSET, "inputs": inputs,
        "output": "logits (batch, num_labels) float32, temperature folded in: softmax gives the probabilities",
        "source": str(target), "run": str(loaded.run.path.resolve()) if loaded.run is not None else None,
        "temperature": temperature,
        "scoring": {"max_length": policy.max_length, "truncation": policy.truncation,
                    "long_reviews": policy.long_reviews, "stride": policy.stride},
        "parity": {"reference": "float32 PyTorch model of the source (adapter unmerged), temperature applied",
                   "probe": f"{parity.probe_size} reviews of the validation split",
                   "max_abs_dprob": parity.max_abs_dprob, "max_abs_dlogit": parity.max_abs_dlogit,
                   "agreement": parity.agreement, "tolerance": dataclasses.asdict(parity.tolerance),
                   "passed": parity.passed},
        "versions": {"peftsent": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def model_card(record: dict, out: Path) -> str:
    """README.md of an export directory: what it is, how to run it (ONNX Runtime alone, or peftsent), its
    scoring settings and the parity check, from ``record`` (export.json) and the directory ``out``."""
    parity, scoring, labels = record["parity"], record["scoring"], record["labels"]
    quantized = ("Weights of every MatMul in int8, one scale per output channel (ONNX Runtime dynamic "
                 "quantization: activations quantized per batch at run time)." if record["precision"] == "int8"
                 else "float32 weights.")
    side = "left" if scoring["truncation"] == "tail" else "right"
    calibrated = (f"The run's calibration temperature T = {record['temperature']:.4f} is folded into the final "
                  f"classifier layer: softmax of `logits` gives the calibrated probabilities."
                  if record["temperature"] is not None else "No calibration temperature to fold.")
    truncation = ("head+tail (a plain tokenizer cannot express it: with the tokenizer alone the first tokens are "
                  "kept; `peftsent predict` applies head+tail)" if scoring["truncation"] == "head+tail"
                  else scoring["truncation"])
    windows = (f"; reviews longer than {scoring['max_length']} tokens are scored over windows (stride "
               f"{scoring['stride'] if scoring['stride'] is not None else scoring['max_length'] // 2}), their logits "
               f"averaged, by `peftsent predict` / `eval`" if scoring["long_reviews"] == "window" else "")
    feed = ", ".join(f'"{n}": enc["{n}"]' for n in record["inputs"])
    return f"""---
library_name: onnx
pipeline_tag: text-classification
tags: [sentiment-analysis, peftsent, onnx, {record['precision']}]
---

# {Path(record['source']).name}: {record['precision']} ONNX

A sentiment classifier (labels, in index order: {', '.join(f'`{name}`' for name in labels)}) exported by peftsent
{record['versions']['peftsent']} from `{record['source']}` to ONNX (opset {record['opset']}). {quantized}
{calibrated}

## Scoring settings
max length {scoring['max_length']} tokens, truncation {truncation}{windows}. They are saved in
tokenizer_config.json (`model_max_length`, `truncation_side`, `peftsent_truncation`, `peftsent_long_reviews`,
`peftsent_stride`).

## Parity check
On {parity['probe']}, this graph (run by ONNX Runtime) against the float32 PyTorch model:
max |dp| = {parity['max_abs_dprob']:.3g} (tolerance {parity['tolerance']['max_abs_dprob']:g}),
max |delta logit| = {parity['max_abs_dlogit']:.3g},
prediction agreement = {100 * parity['agreement']:.2f} % (at least {100 * parity['tolerance']['min_agreement']:g} %).

## Use
```bash
peftsent predict {out} "a wonderful film"
peftsent eval {out} --data imdb-offline --split test
```
With ONNX Runtime alone (no PyTorch):
```python
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer

tokenizer = Tokenizer.from_file("{out}/tokenizer.json")
tokenizer.enable_truncation({scoring['max_length']}, direction="{side}")
session = ort.InferenceSession("{out}/{record['file']}")
ids = tokenizer.encode("a wonderful film")
enc = {{"input_ids": np.array([ids.ids]), "attention_mask": np.array([ids.attention_mask]),
       "token_type_ids": np.array([ids.type_ids])}}
logits = session.run(["logits"], {{{feed}}})[0]
probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.export",
                         "Export a run, adapter or merged model to ONNX, parity-checked against float32 PyTorch.",
                         EPILOG)
    parser.add_argument("target", help="a run directory, adapter directory, merged/model directory or hub id")
    parser.add_argument("--format", default="onnx", choices=list(FORMATS), help="export format (default: onnx)")
    parser.add_argument("--quantize", choices=list(QUANTIZATIONS),
                        help="dynamic int8 weights through ONNX Runtime's quantizer (default: none, float32)")
    parser.add_argument("--out", help="output directory (default: RUN/onnx or RUN/onnx-int8; outside a run, "
                                      "a sibling TARGET-onnx[-int8])")
    parser.add_argument("--data", help="dataset of the parity probe's validation reviews (default: the run's data)")
    parser.add_argument("--probe-size", type=positive_int, default=256,
                        help="validation reviews of the parity check (default: 256)")
    parser.add_argument("--max-dprob", type=float,
                        help="tolerance: max |dp| against float32 PyTorch (default: "
                             + ", ".join(f"{k} {v.max_abs_dprob:g}" for k, v in TOLERANCES.items()) + ")")
    parser.add_argument("--min-agreement", type=float,
                        help="tolerance: least fraction of equal predictions (default: "
                             + ", ".join(f"{k} {v.min_agreement:g}" for k, v in TOLERANCES.items()) + ")")
    parser.add_argument("--force", action="store_true", help="replace an existing export at --out")
    args = parser.parse_args(argv)

    def body() -> int:
        target, parity = export(args.target, args.format, args.quantize, args.out, args.probe_size, args.data,
                                args.force, args.max_dprob, args.min_agreement)
        print(f"parity on {parity.probe_size} validation reviews ({parity.precision}, ONNX Runtime vs float32 "
              f"PyTorch): max |dp| = {parity.max_abs_dprob:.3g} (tolerance {parity.tolerance.max_abs_dprob:g}); "
              f"agreement {100 * parity.agreement:.2f} % (at least {100 * parity.tolerance.min_agreement:g} %)")
        print(f"ONNX export written to {target}", file=sys.stderr)
        return 0

    return run_cli(body, "peftsent.export")


if __name__ == "__main__":
    raise SystemExit(main())
