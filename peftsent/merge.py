"""``python -m peftsent.merge RUN_DIR``: fold a trained adapter into its base -> a standalone model.

The merge happens on a freshly loaded float32 base (never a quantized one),
is verified on real validation reviews (max |delta logit| and prediction
agreement between the adapter model and the merged model), and is written
atomically: above tolerance nothing is written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from peftsent.calibration import fold_temperature, read_temperature
from peftsent.cli import make_parser, run_cli
from peftsent.data import load_splits, tokenize_splits
from peftsent.errors import MergeError
from peftsent.inference import predict_logits
from peftsent.loading import load_target
from peftsent.methods import method_spec
from peftsent.metrics import confusion_table, format_table, per_class_table
from peftsent.modeling import merge_adapter
from peftsent.registry import portable_name
from peftsent.rundir import MERGED_DIR, open_run, resource_errors, staging, write_json
from peftsent.tokenization import TokenPolicy
from peftsent.training_args import EVAL_BATCH_SIZE

#: max |delta logit| accepted per export dtype. float32 is exact up to summation order;
#: bf16 keeps 8 mantissa bits (relative error ~4e-3 per op), fp16 10 bits (~5e-4).
TOLERANCES = {"float32": 1e-4, "bfloat16": 0.15, "float16": 0.02}
PARITY_FILE = "merge.json"

EPILOG = """examples:
  python -m peftsent.merge runs/quick/lora
  python -m peftsent.merge runs/quick/lora --dtype bfloat16 --out exports/lora-bf16
  python -m peftsent.merge runs/quick/lora --force      # rewrite an existing merged/

Load the result anywhere with plain transformers:
  AutoModelForSequenceClassification.from_pretrained("runs/quick/lora/merged")
"""


@dataclass(frozen=True)
class Parity:
    """Adapter model vs merged model on the probe reviews."""

    probe_size: int
    """reviews from the run's validation split"""
    max_abs_logit_diff: float
    """max over reviews and classes of |logit_adapter - logit_merged|"""
    agreement: float
    """fraction of reviews whose predicted class is the same"""
    dtype: str
    tolerance: float

    @property
    def passed(self) -> bool:
        exact = self.dtype != "float32" or self.agreement == 1.0
        return self.max_abs_logit_diff <= self.tolerance and exact


def _check_mergeable(run, recipe) -> None:
    if not run.is_adapter:
        raise MergeError(
            f"{run.path} is a full fine-tuning run: there is nothing to merge. Its model/ is already a "
            f"standalone model: AutoModelForSequenceClassification.from_pretrained('{run.weights}')"
        )
    if not method_spec(recipe.method_name).mergeable:
        raise MergeError(
            f"method '{recipe.method_name}' cannot be merged into the base weights; serve with the adapter instead: "
            f"python -m peftsent.predict {run.path} (or peft.PeftModel.from_pretrained(base, '{run.weights}'))"
        )


def _probe_set(recipe, loaded, probe_size: int):
    section = dataclasses.replace(recipe.data, max_eval_samples=probe_size)
    splits = load_splits(section, splits=["validation"], both_classes=False)  # logits only, no metric
    return tokenize_splits(splits, loaded.tokenizer, loaded.policy)["validation"]


def _parity(adapter_logits, merged_logits, dtype: str) -> Parity:
    import numpy as np

    diff = float(np.abs(adapter_logits.astype(np.float64) - merged_logits.astype(np.float64)).max())
    agree = float((adapter_logits.argmax(-1) == merged_logits.argmax(-1)).mean())
    return Parity(len(adapter_logits), diff, agree, dtype, TOLERANCES[dtype])


def model_card(recipe, metrics: dict, name: str, parity: Parity | None = None, temperature: float | None = None) -> str:
    """The hub model card (README.md) of a run's adapter directory (``parity`` None) or merged model.

    ``metrics``: the run's metrics.json; ``name``: the run directory's name. The YAML header follows the
    hub's model-card metadata (base_model, library_name, pipeline_tag, datasets, metrics); ``temperature``: the
    run's calibration temperature folded into a merged model's classifier (None: none). The text
    ``PATH`` stands for where the directory will live.
    """
    merged = parity is not None
    base = portable_name(recipe.model.name)
    policy = TokenPolicy(metrics.get("max_length", recipe.model.max_length), recipe.model.truncation)  # as used
    shown = {k: metrics[k] for k in ("validation", "test") if k in metrics}
    caveat = (
        "\n*imdb-offline*'s test split is held out of IMDb's train split (reviews of one movie can fall on both "
        "sides); it is not the official IMDb test set.\n" if recipe.data.name == "imdb-offline" else ""
    )
    truncation = (f"truncation `{policy.truncation}`" + (
        " (a plain tokenizer cannot express it: `pipeline(..., truncation=True)` keeps the first tokens; "
        "`python -m peftsent.predict` applies head+tail)" if policy.truncation == "head+tail" else ""))
    names = [str(n) for n in (recipe.data.labels or ("negative", "positive"))]
    labels = ", ".join(f"`{n}`" for n in names)
    header = "\n".join([
        "---",
        f"base_model: {base}",
        f"library_name: {'transformers' if merged else 'peft'}",
        "pipeline_tag: text-classification",
        f"datasets: [{recipe.data.name}]",
        f"metrics: [accuracy, {'f1' if len(names) == 2 else 'macro_f1'}, roc_auc]",
        f"tags: [sentiment-analysis, peftsent, {recipe.method_name}]",
        "---",
    ])
    if merged:
        what = (f"A standalone sentiment classifier (labels: {labels}) made by peftsent: the "
                f"{recipe.method_name} adapter of run `{name}` folded into its base model. No adapter files, no peft needed.")
        check = f"""
## Merge check
On {parity.probe_size} reviews of the run's validation split, adapter model vs this model:
max |delta logit| = {parity.max_abs_logit_diff:.3g} (tolerance {parity.tolerance:g} for {parity.dtype}),
prediction agreement = {100 * parity.agreement:.2f} %.
{_calibration_line(temperature)}"""
        load = f"""```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

model = AutoModelForSequenceClassification.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
classify = pipeline("text-classification", model=model, tokenizer=tokenizer, truncation=True, max_length={policy.max_length})
classify("A wonderful, moving film.")
```"""
    else:
        what = (f"A {recipe.method_name} adapter (labels: {labels}) for `{base}`, trained by peftsent "
                f"in run `{name}`; the trained classification head is saved with it.")
        check = ""
        load = f"""```python
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

base = AutoModelForSequenceClassification.from_pretrained(
    "{base}", num_labels={len(names)}, id2label={{{", ".join(f'{i}: "{n}"' for i, n in enumerate(names))}}}, label2id={{{", ".join(f'"{n}": {i}' for i, n in enumerate(names))}}})
model = PeftModel.from_pretrained(base, "PATH").eval()
tokenizer = AutoTokenizer.from_pretrained("PATH")
```
or with peftsent (resolves `{base}` offline where it is embedded): `python -m peftsent.predict PATH "A wonderful film."`"""
    weights = f"\n- weights: {parity.dtype}" if merged else ""
    return f"""{header}
# {name}: {base} + {recipe.method_name}{', merged' if merged else ''}

{what}

- base model: `{base}` ({recipe.model_type})
- method: `{recipe.method_name}` ({metrics['parameters']['trainable']:,} trainable parameters of {metrics['parameters']['total']:,})
- data: `{recipe.data.name}` ({metrics['sizes']['train']:,} training reviews), max length {policy.max_length} tokens, {truncation}{weights}

## Metrics of the run
{_scoring_line(metrics)}

{format_table(shown)}
{_per_class(shown.get("test"))}{caveat}{check}
## Load it
{load}
"""


def _per_class(test: dict | None) -> str:
    """The test split's per-class table and confusion matrix on a card (more than two classes), else ''."""
    if not test or "per_class" not in test:
        return ""
    return (f"\nTest split, per class:\n\n{per_class_table(test)}\n\nTest confusion matrix (reviews):\n\n"
            f"{confusion_table(test['confusion_matrix'], test['per_class'])}\n")


def write_adapter_card(adapter_dir: Path, recipe, metrics: dict) -> None:
    """Replace peft's empty README template in a run's adapter directory with :func:`model_card`."""
    text = model_card(recipe, metrics, recipe.run_dir.name)
    (Path(adapter_dir) / "README.md").write_text(text.replace("PATH", str(recipe.run_dir / "adapter")))


def _scoring_line(metrics: dict) -> str:
    """How the run's final evaluation scored the metrics shown on a card, from its metrics.json ``inference``."""
    inference = metrics.get("inference") or {}
    dtype = inference.get("dtype", "float32")
    merged = " with the adapter merged in memory" if inference.get("merged") else ""
    stored = " (the model stored in bfloat16 while it predicts)" if dtype == "bfloat16" else ""
    long = inference.get("long_reviews") or metrics.get("long_reviews") or "truncate"
    reviews = (f"reviews longer than {metrics.get('max_length')} tokens averaged over overlapping windows ({long})"
               if str(long).startswith("window") else f"each review truncated to {metrics.get('max_length')} tokens")
    agreement = inference.get("agreement") or {}
    agree = (f"; on {agreement['n']} validation reviews its predictions agree with float32's for "
             f"{100 * agreement['prediction_agreement']:.2f} % (max |dp| {agreement['max_abs_dprob']:.1e})"
             if "prediction_agreement" in agreement else "")
    calibrated = "; probabilities after temperature scaling" if metrics.get("calibration") else ""
    return (f"Scored by the run's final evaluation (peftsent {metrics.get('peftsent_version', '?')}) in {dtype}{stored}"
            f"{merged}, {reviews}{calibrated}{agree}.")


def _calibration_line(temperature: float | None) -> str:
    if temperature is None:
        return ""
    return (f"\nCalibrated: the run's temperature T = {temperature:.4f} (fitted on validation, Guo et al. 2017) is folded "
            f"into the final classifier layer (weight and bias divided by T; `peftsent_temperature` in config.json),\n"
            f"so softmax of this model's logits gives the calibrated probabilities.\n")


def _is_merged_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and not (path / "adapter_config.json").exists()


def _same_merge(target: Path, run) -> bool:
    """True if ``target`` is the merged model this run's merge.json records."""
    import json

    record = run.path / PARITY_FILE
    if not (_is_merged_dir(target) and record.is_file()):
        return False
    output = Path(json.loads(record.read_text()).get("output", ""))
    return (output if output.is_absolute() else run.path / output).resolve() == target.resolve()


def _check_target(target: Path, run) -> None:
    """Refuse an output that would overwrite the run itself, its weights, or anything but a merged model."""
    resolved, run_dir = target.resolve(), run.path.resolve()
    if resolved == run_dir or resolved in run_dir.parents or (
            run_dir in resolved.parents and resolved != run_dir / MERGED_DIR):
        raise MergeError(f"--out {target} would overwrite the run {run.path} or its files; "
                         f"use the default {run.path / MERGED_DIR} or a directory outside the run")
    if target.exists() and not _is_merged_dir(target):
        raise MergeError(f"{target} exists and is not a merged model; --force only replaces merged models, "
                         f"so nothing was touched: choose another --out")


def merge(run_dir: str | Path, out: str | Path | None = None, dtype: str = "float32",
          probe_size: int = 256, force: bool = False, batch_size: int = EVAL_BATCH_SIZE) -> tuple[Path, Parity | None]:
    """Merge the adapter of ``run_dir`` into a fresh float32 base; verify; write a standalone model.

    Returns (output directory, Parity), or (directory, None) when a merge is
    already there and ``force`` is False (nothing is done). Raises MergeError if
    the run has nothing to merge, the method cannot be merged, or the parity
    check fails (nothing is written then); RunDirError if ``run_dir`` is not a finished run.
    """
    import torch

    if dtype not in TOLERANCES:
        raise MergeError(f"--dtype {dtype}: expected one of {', '.join(TOLERANCES)}")
    if probe_size < 1:
        raise MergeError(f"--probe-size {probe_size}: expected at least 1 review")
    run = open_run(run_dir)
    recipe = run.recipe()
    _check_mergeable(run, recipe)
    target = Path(out) if out else run.path / MERGED_DIR
    _check_target(target, run)
    if target.exists() and not force:
        if _same_merge(target, run):
            return target, None
        raise MergeError(f"{target} exists and is not this run's merged model; choose another --out "
                         f"(or --force to replace a merged model)")

    loaded = load_target(str(run.path))  # fresh float32 base + adapter
    probes = _probe_set(recipe, loaded, probe_size)
    adapter_logits = loaded.canonical(predict_logits(loaded.model, loaded.tokenizer, probes, batch_size)[0])
    merged = merge_adapter(loaded.model)
    temperature = read_temperature(run.path)
    if temperature is not None:  # fold 1/T in float32: pipeline probabilities == peftsent.predict's on the run
        fold_temperature(merged, temperature)
        adapter_logits = adapter_logits / temperature
    merged = merged.to(getattr(torch, dtype))
    merged_logits = loaded.canonical(predict_logits(merged, loaded.tokenizer, probes, batch_size)[0])
    parity = _parity(adapter_logits, merged_logits, dtype)
    if not parity.passed:
        raise MergeError(
            f"parity check failed: max |delta logit| {parity.max_abs_logit_diff:.3g} > tolerance {parity.tolerance:g} "
            f"or agreement {100 * parity.agreement:.2f} % < 100 % ({dtype}); nothing was written"
        )
    weights = sum(t.numel() * t.element_size() for t in merged.state_dict().values())  # what save_pretrained writes
    existed = target.exists()
    with resource_errors(target, f"writing the merged model of {run.path}", weights):
        with staging(target, overwrite=force) as work:  # removed on any failure: no half-written merged/
            merged.save_pretrained(work, safe_serialization=True)
            loaded.policy.configure(loaded.tokenizer).save_pretrained(work)  # model_max_length, truncation_side
            card = model_card(recipe, run.metrics(), run.path.name, parity, temperature)
            (work / "README.md").write_text(card.replace("PATH", str(target)))
        output = os.path.relpath(target.resolve(), run.path.resolve())  # relative: the run and its merge can move
        try:
            write_json(run.path / PARITY_FILE, {"output": output, **dataclasses.asdict(parity),
                                                "passed": parity.passed})
        except BaseException:
            if not existed:  # a merged/ without its parity record is not a finished merge
                shutil.rmtree(target, ignore_errors=True)
            raise
    return target, parity


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.merge", "Merge a run's adapter into a standalone, verified model.", EPILOG)
    parser.add_argument("run_dir", help="a finished run directory of an adapter method")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/merged)")
    parser.add_argument("--dtype", default="float32", choices=list(TOLERANCES), help="weights of the export (default: float32)")
    parser.add_argument("--probe-size", type=int, default=256, help="validation reviews of the parity check (default: 256)")
    parser.add_argument("--force", action="store_true", help="rewrite an existing merged directory")
    args = parser.parse_args(argv)

    def body() -> int:
        with resource_errors(args.out or args.run_dir, f"merging {args.run_dir}"):  # memory while merging
            target, parity = merge(args.run_dir, args.out, args.dtype, args.probe_size, args.force)
        if parity is None:
            print(f"{target} already holds a merged model; nothing to do (pass --force to rewrite it)")
            return 0
        print(f"parity on {parity.probe_size} validation reviews: max |delta logit| = {parity.max_abs_logit_diff:.3g} "
              f"(tolerance {parity.tolerance:g}, {parity.dtype}); agreement {100 * parity.agreement:.2f} %")
        print(f"merged model written to {target}", file=sys.stderr)
        return 0

    return run_cli(body, "peftsent.merge")


if __name__ == "__main__":
    raise SystemExit(main())
