"""``python -m peftsent.eval TARGET``: metrics of any model on a dataset split.

TARGET is a run directory, an adapter directory, a model directory (a merged
export, say) or a hub id. Results are printed as a table and, for run
directories (and ``merged/`` inside one), written to ``<run>/eval/``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from peftsent.calibration import temperature_for
from peftsent.cli import (
    add_data_arguments,
    add_inference_arguments,
    check_out_dir,
    make_parser,
    positive_int,
    run_cli,
)
from peftsent.data import SPLITS, label_names, load_splits, tokenize_splits
from peftsent.errors import PeftsentError
from peftsent.inference import predict_checked, window_stride
from peftsent.loading import load_target, target_run
from peftsent.metrics import confusion_table, format_table, per_class_table
from peftsent.predictions import (
    data_stem,
    predictions_name,
    score_logits,
    write_predictions,
)
from peftsent.recipe import data_section
from peftsent.rundir import EVAL_DIR, resource_errors, write_json
from peftsent.speed import target_dtype
from peftsent.tokenization import UNKNOWN_SHARE, check_scoring_request, mostly_unknown, unknown_shares
from peftsent.training_args import EVAL_BATCH_SIZE

EPILOG = """examples:
  python -m peftsent.eval runs/quick/lora
  python -m peftsent.eval runs/quick/lora --data rotten_tomatoes-offline
  python -m peftsent.eval runs/quick/lora/merged --split validation
  python -m peftsent.eval runs/quick/lora --long-reviews window --stride 64
  python -m peftsent.eval my-model-dir --data reviews.csv --text-column review
  python -m peftsent.eval runs/quick/lora --data export.csv --encoding cp1252 --label-map '{pos: positive, neg: negative}'
  python -m peftsent.eval runs/tweets --data recipes/tweet_eval.yaml
"""


def _data_section(run, data: str | None, max_samples: int | None, **options):
    """The data to score: ``data`` (a dataset name, local file or recipe path) or the run's own data section,
    with the command line's data options on top (:func:`peftsent.recipe.data_section`)."""
    if data is None and run is None:
        raise PeftsentError("this target carries no recipe: name a dataset with --data (e.g. --data imdb-offline)")
    section = data_section(data, run.recipe().data if data is None else None, **options)
    if max_samples is not None:
        section = dataclasses.replace(section, max_eval_samples=max_samples, max_test_samples=max_samples,
                                      max_train_samples=max_samples)
    return section


def _output_dir(target: str, loaded) -> tuple[Path | None, str]:
    """Where results go and the file-name prefix: a run's eval/, or the eval/ of the run holding merged/."""
    if loaded.run is None:
        return None, ""
    prefix = "" if loaded.kind == "run" else f"{Path(target).resolve().name}-"
    return loaded.run.path / EVAL_DIR, prefix


def evaluate(target: str, data: str | None = None, split: str = "test", batch_size: int | None = None,
             max_samples: int | None = None, text_column: str | None = None, label_column: str | None = None,
             ece_bins: int = 15, out: str | None = None, label_order: str | None = None,
             allow_random_weights: bool = False, long_reviews: str = "auto", stride: int | None = None,
             dtype: str = "auto", encoding: str | None = None, label_map: str | dict | None = None,
             labels: str | list | None = None) -> dict:
    """Evaluate ``target`` on one split; returns the metrics (see :func:`peftsent.metrics.classification_metrics`)
    plus ``samples_per_second`` (inference), ``inference`` (dtype, merged, agreement with float32 on the
    first 256 reviews: :func:`peftsent.inference.predict_checked`) and where the report was written.

    ``batch_size``: reviews (or windows) per forward pass; None: a run's ``train.per_device_eval_batch_size``
    (the batches its own final evaluation used, so that metrics.json is reproduced bit for bit), else
    :data:`peftsent.speed.EVAL_BATCH_SIZE` (32).

    ``dtype``: ``auto`` (a run's own precision, else bfloat16 where the device has native bf16: weights stored in
    bf16 while predicting, :func:`peftsent.speed.inference_precision`; adapter merged in
    memory where it can merge), ``bfloat16`` or ``float32`` (the exact reference; adapters still merged).

    ``data``: a dataset name, a local file or a recipe path (its data section); None: the run's own data.
    ``text_column``, ``label_column``, ``encoding``, ``label_map`` (a YAML mapping as text, or a dict),
    ``labels`` (comma-separated names, or a list): the recipe's ``data`` keys of the same names, over ``data``'s
    (:func:`peftsent.recipe.data_section`); None keeps them.

    ``label_order`` / ``allow_random_weights``: see :func:`peftsent.loading.load_target`. The data is
    loaded and checked before the model. A run's temperature (calibration.json) is applied: metrics are as
    served, the uncalibrated ECE and log-loss stay under ``uncalibrated``. ``long_reviews``: ``auto`` scores
    as the target's own policy says (a run's ``model.long_reviews``, as metrics.json), ``window`` averages the
    logits of overlapping windows (``stride`` tokens shared), ``truncate`` scores the truncated review (see
    :meth:`peftsent.tokenization.TokenPolicy.for_scoring`); a report in another mode than the target's own is
    named ``...-window`` / ``...-truncate``. Per-review predictions
    are written beside the report (``predictions-<report>.jsonl``). ``mostly_unknown_tokens``: how many reviews
    are at least :data:`peftsent.tokenization.UNKNOWN_SHARE` the tokenizer's unknown token (their labels say
    little: a model for another language or script). Raises PeftsentError subclasses for a bad
    target, dataset or split.
    """
    if split not in SPLITS:
        raise PeftsentError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    try:
        check_scoring_request(long_reviews, stride)
    except ValueError as err:
        raise PeftsentError(str(err)) from None
    check_out_dir(out)
    section = _data_section(target_run(target), data, max_samples, text_column=text_column,
                            label_column=label_column, encoding=encoding, label_map=label_map, labels=labels)
    splits = load_splits(section, splits=[split])  # checked (both classes, ...) before any model loads
    loaded = load_target(target, label_order=label_order, allow_random_weights=allow_random_weights)
    if [n.lower() for n in label_names(splits)] != [n.lower() for n in loaded.labels]:
        # the model's classes are the label set: read the data's labels as them (DataError if they are not)
        splits = load_splits(dataclasses.replace(section, labels=list(loaded.labels)), splits=[split])
    try:
        policy = loaded.policy.for_scoring(long_reviews, stride)
    except ValueError as err:
        raise PeftsentError(str(err)) from None
    if policy.long_reviews == "window":  # a bad stride fails before any scoring
        window_stride(loaded.tokenizer, policy.max_length, policy.stride)
    tokenized = tokenize_splits(splits, loaded.tokenizer, loaded.policy)
    if batch_size is None:
        batch_size = loaded.run.recipe().train["per_device_eval_batch_size"] if loaded.run is not None \
            else EVAL_BATCH_SIZE
    logits, labels, speed, inference = predict_checked(loaded.model, loaded.tokenizer, tokenized[split], batch_size,
                                                       target_dtype(dtype, loaded.run, loaded.model), policy=policy,
                                                       texts=splits[split]["text"])
    logits = loaded.canonical(logits)  # columns in the model's canonical class order (loaded.labels)
    temperature = temperature_for(loaded)
    result = {
        "target": str(target), "data": section.name, "split": split, "max_length": loaded.max_length,
        "truncation": loaded.policy.truncation,
        **score_logits(logits, labels, ece_bins, temperature, loaded.labels), "temperature": temperature,
        "long_reviews": inference["long_reviews"],
        "samples_per_second": speed, "inference": inference,
        "mostly_unknown_tokens": sum(map(mostly_unknown, unknown_shares(loaded.tokenizer, splits[split]["text"]))),
    }
    directory, prefix = (Path(out), "") if out else _output_dir(target, loaded)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        subset = f"-n{max_samples}" if max_samples is not None else ""  # a subset never overwrites the full report
        if policy != loaded.policy:  # not the target's own scoring: -truncate, -window or -window-stride<S>
            subset += f"-{policy.long_reviews}" + (f"-stride{policy.stride}" if policy.stride is not None else "")
        stem = f"{prefix}{data_stem(section.name)}-{split}{subset}"
        files = (directory / predictions_name(stem), directory / f"{stem}.json", directory / f"{stem}.md")
        # a full disk: none of the three files stays (a half report would look finished)
        with resource_errors(directory, f"writing the evaluation of {target}", cleanup=files):
            result["predictions"] = str(write_predictions(files[0], splits[split]["text"], tokenized[split], logits,
                                                          temperature, loaded.labels))
            write_json(files[1], result)
            files[2].write_text(
                f"# {target} on {section.name} ({split})\n\n{format_table({split: result})}\n"
                + (f"\n{per_class_table(result)}\n\nConfusion matrix (reviews):\n\n"
                   f"{confusion_table(result['confusion_matrix'], result['per_class'])}\n" if "per_class" in result else "")
                + (f"\nTemperature {temperature:.4f} applied (calibration.json); uncalibrated ECE "
                   f"{result['uncalibrated']['ece']:.4f}, log-loss {result['uncalibrated']['log_loss']:.4f}.\n"
                   if temperature is not None else "")
            )
        result["written_to"] = str(files[1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.eval", "Evaluate a run, adapter, model directory or hub id on a dataset split.", EPILOG)
    parser.add_argument("target", help="run directory, adapter directory, model directory or hub id")
    parser.add_argument("--data", help="dataset name, local file or recipe (its data section; default: the run's "
                        "recipe data)")
    parser.add_argument("--split", default="test", help="train, validation or test (default: test)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="reviews per forward pass (default: a run's per_device_eval_batch_size, else 32)")
    parser.add_argument("--max-samples", type=positive_int, help="seeded stratified subset of the split")
    add_data_arguments(parser)
    parser.add_argument("--out", help="directory for the JSON and Markdown reports (default: the run's eval/)")
    add_inference_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with resource_errors(args.out or args.target, f"evaluating {args.target}"):  # memory while scoring
            result = evaluate(args.target, args.data, args.split, args.batch_size, args.max_samples,
                              args.text_column, args.label_column, out=args.out, label_order=args.label_order,
                              allow_random_weights=args.allow_random_weights, long_reviews=args.long_reviews,
                              stride=args.stride, dtype=args.dtype, encoding=args.encoding,
                              label_map=args.label_map, labels=args.labels)
        print(f"{args.target} on {result['data']} ({args.split}), {result['count']} reviews:\n")
        print(format_table({args.split: result}))
        if "per_class" in result:  # more than two classes
            print(f"\n{per_class_table(result)}\n\nconfusion matrix (reviews):\n"
                  f"{confusion_table(result['confusion_matrix'], result['per_class'])}")
        else:
            tn, fp = result["confusion_matrix"][0]
            fn, tp = result["confusion_matrix"][1]
            print(f"\nconfusion matrix (rows true, columns predicted; negative, positive): [[{tn}, {fp}], [{fn}, {tp}]]")
        if result["temperature"] is not None:
            raw = result["uncalibrated"]
            print(f"temperature {result['temperature']:.3f} applied (calibration.json); uncalibrated: "
                  f"ece {raw['ece']:.4f}, log_loss {raw['log_loss']:.4f}")
        info, check = result["inference"], result["inference"]["agreement"]
        print(f"inference: {result['samples_per_second']} reviews/s, {info.get('runtime', info['dtype'])}"
              f"{', adapter merged in memory' if info['merged'] else ''}; long reviews: {result['long_reviews']}")
        if check:
            print(f"agreement with float32 on {check['n']} reviews: {check['prediction_agreement']:.4f} of predictions, "
                  f"max |dp| {check['max_abs_dprob']:.2g} (--dtype float32 for exact float32)")
        if result["mostly_unknown_tokens"]:
            print(f"mostly unknown tokens: {result['mostly_unknown_tokens']} of {result['count']} reviews are "
                  f">= {UNKNOWN_SHARE:.0%} tokens unknown to the model's tokenizer (their labels say little)")
        else:
            print(f"mostly unknown tokens: none of the {result['count']} reviews")
        if "written_to" in result:
            print(f"written: {result['written_to']} (and .md)", file=sys.stderr)
        return 0

    return run_cli(body, "peftsent.eval")


if __name__ == "__main__":
    raise SystemExit(main())
