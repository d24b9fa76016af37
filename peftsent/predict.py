"""``python -m peftsent.predict TARGET [TEXT ...]``: label reviews with any model, one JSON line each.

TARGET is a run directory (adapter or full), a merged directory, a model
directory or a hub id. Texts come from the arguments, from ``--file`` (txt: one
review per line; csv / jsonl: the ``--text-column``) or from standard input.
Exactly one output line per input, in order: an empty or blank input gets an ``error`` field, a review that is
mostly unknown tokens to the model's tokenizer (>= ``tokenization.UNKNOWN_SHARE``) a ``warning`` field;
``--keep-columns`` copies other columns (an ``id``) into each line. A leading byte-order mark is removed.
Long reviews are truncated to the model's max length, as in eval, or scored over overlapping
windows (``--long-reviews window``). A run's calibration temperature is applied.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from peftsent.calibration import temperature_for
from peftsent.cli import add_inference_arguments, make_parser, positive_int, run_cli
from peftsent.errors import DataError
from peftsent.inference import window_logits, window_stride
from peftsent.loading import load_target
from peftsent.rundir import resource_errors
from peftsent.speed import (
    BatchPadding,
    agreement,
    batch_order,
    device_of,
    inference_precision,
    merged_in_memory,
    target_dtype,
)
from peftsent.textfiles import read_text
from peftsent.tokenization import check_scoring_request, mostly_unknown, unknown_shares
from peftsent.training_args import EVAL_BATCH_SIZE

EPILOG = """examples:
  python -m peftsent.predict runs/quick/lora "A wonderful film." "Dull and far too long."
  python -m peftsent.predict runs/quick/lora/merged --file reviews.txt
  python -m peftsent.predict runs/quick/lora --file reviews.csv --text-column review
  cat reviews.txt | python -m peftsent.predict runs/quick/lora

  python -m peftsent.predict runs/quick/lora --file reviews.csv --keep-columns id

output, exactly one line per input (argument, text line, csv row, jsonl record), in input order:
  {"text": "A wonderful film.", "label": "positive", "score": 0.97, "probabilities": {"negative": 0.03, "positive": 0.97}}
  {"text": "", "error": "empty text: nothing to label"}           (an empty or blank input)
  {"text": "...", "label": ..., "warning": "62% of this review's tokens are unknown to the model's tokenizer: ..."}
                                    (a review whose tokens are >= 50% the tokenizer's unknown token)
"""


#: fields every output line may carry; a --keep-columns name may not be one of them
OUTPUT_FIELDS = ("text", "label", "score", "probabilities", "error", "warning")
#: a byte-order mark some editors put before a file's first line (or a pipe's first byte)
BOM = "\ufeff"


@dataclass
class Inputs:
    """What predict labels: one entry per input (argument, text line, CSV row, JSONL record), in order."""

    texts: list
    """the review of each input, or None where the input has none (its line carries ``error``)"""
    errors: list
    """None, or why an input has no review (empty, blank, not text, not JSON)"""
    kept: list = field(default_factory=list)
    """per input, the ``--keep-columns`` values (empty dicts when none are kept)"""

    @property
    def reviews(self) -> list[str]:
        """The texts that are labelled, in order."""
        return [t for t, e in zip(self.texts, self.errors) if e is None]


def _entry(value) -> tuple[str | None, str | None]:
    """(text, None) for a review, (shown text, error) for an empty, blank or non-text input."""
    if isinstance(value, str):
        return (value, None) if value.strip() else (value, "empty text: nothing to label")
    if value is None or (isinstance(value, float) and math.isnan(value)):  # a JSON null, a NaN
        return None, "empty text: nothing to label"
    return None, f"not text: found {type(value).__name__} {value!r}"


def inputs_of(values: list, kept: list | None = None) -> Inputs:
    """An :class:`Inputs` of raw values (str, or whatever a table cell held) and their kept columns."""
    entries = [_entry(v) for v in values]
    return Inputs([t for t, _ in entries], [e for _, e in entries], kept or [{} for _ in values])


#: characters JSON leaves raw in strings but many readers (str.splitlines, JavaScript) take for line breaks
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(record: dict) -> str:
    """``record`` as one line of JSON: non-ASCII text kept readable (``ensure_ascii=False``), but U+0085, U+2028
    and U+2029 escaped, so every reader splits the output into exactly one line per input."""
    text = json.dumps(record, ensure_ascii=False)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def _lines(text: str) -> list[str]:
    """Lines of a text file or stream, a leading byte-order mark removed. A final newline ends the last line
    (it does not start an empty one); every other line, blank or not, is an input. Only ``\n`` ends a line
    (files and stdin are read with universal newlines, so ``\r\n`` arrives as ``\n``): ``str.splitlines`` would
    also split at U+2028, form feeds and other separators that occur inside reviews."""
    lines = text.removeprefix(BOM).split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _records(file: Path, text: str) -> tuple[list, list[str]]:
    """Rows of a .jsonl / .json file as dicts (a line that is not a JSON object: its error message) and the
    column names seen."""
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"cannot read {file} as json (expected a list of records): {err}") from None
        if not isinstance(data, list):
            raise DataError(f"cannot read {file} as json: expected a list of records, found {type(data).__name__}")
        rows = data
    else:
        rows = []
        for number, line in enumerate(_lines(text), 1):
            try:
                rows.append(json.loads(line) if line.strip() else f"line {number} is blank")
            except ValueError as err:
                rows.append(f"line {number} is not JSON: {err}")
    rows = [r if isinstance(r, (dict, str)) else f"not a record: {type(r).__name__}" for r in rows]
    columns = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r))
    return rows, columns


def read_inputs(path: str, text_column: str = "text", keep_columns: list[str] | None = None,
                encoding: str = "utf-8") -> Inputs:
    """Inputs of a file: ``.txt`` one per line (blank lines included: their output line carries ``error``);
    ``.csv`` one per row, ``.jsonl`` one per line, ``.json`` one per record of a list, the review in
    ``text_column``; ``keep_columns`` of those tables are carried into the output. ``encoding``: the file's
    text encoding (:mod:`peftsent.textfiles`); a leading byte-order mark is removed.

    Raises DataError if the file is missing or unreadable, does not decode (naming ``--encoding`` and the likely
    encoding), a column is absent, or columns are kept from a .txt.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        raise DataError(f"{path}: predict reads .txt, .csv, .json and .jsonl files")
    if not file.is_file():
        raise DataError(f"file not found: {path}")
    text = read_text(file, encoding, key="--encoding")
    keep = keep_columns or []
    if suffix not in {".csv", ".jsonl", ".json"}:
        if keep:
            raise DataError(f"--keep-columns {','.join(keep)}: {path} is plain text (one review per line) and has "
                            "no columns; give a .csv or .jsonl file")
        return inputs_of(_lines(text))
    if suffix == ".csv":
        import io

        import pandas as pd

        try:  # every cell as written: an id 007 stays "007", an empty cell stays ""
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"cannot read {path} as csv (expected a table with a '{text_column}' column): "
                            f"{err}") from None
        columns = [str(c) for c in frame.columns]
        rows = frame.to_dict("records")
    else:
        rows, columns = _records(file, text)
    missing = [c for c in [text_column, *keep] if c not in columns]
    if missing:
        raise DataError(f"{path}: column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
                        f"not found; columns are: {', '.join(columns)}; pass --text-column / --keep-columns")
    values, kept, errors = [], [], []
    for row in rows:
        record = isinstance(row, dict)  # else a JSONL line that is not a record: its message
        values.append(row.get(text_column) if record else None)
        kept.append({c: row.get(c) for c in keep} if record else {})
        errors.append(row if not record else None if text_column in row else f"no '{text_column}' field in this record")
    inputs = inputs_of(values, kept)
    inputs.errors = [own or e for own, e in zip(errors, inputs.errors)]
    return inputs


def keep_columns_of(text: str | None, text_column: str) -> list[str]:
    """``--keep-columns id,source`` as a list; raises DataError for a name predict writes itself."""
    names = [c.strip() for c in (text or "").split(",") if c.strip()]
    clash = [c for c in names if c in OUTPUT_FIELDS or c == text_column]
    if clash:
        raise DataError(f"--keep-columns {','.join(names)}: {', '.join(repr(c) for c in clash)} "
                        f"{'is' if len(clash) == 1 else 'are'} already a field of each output line "
                        f"({', '.join(OUTPUT_FIELDS)}) or the text column; keep other columns (e.g. an id)")
    return names


#: texts sorted by length together (streamed input waits for at most this many before output)
SORT_WINDOW = 1024


def text_logits(loaded, texts: list[str], batch_size: int = EVAL_BATCH_SIZE, dtype: str = "float32",
                adapter_names: list[str] | None = None):
    """Logits (len(texts), num_labels) float32 in the model's class order, in the order of ``texts``.

    Inputs go through the target's token policy (``Loaded.encode``, as in training and eval); batches
    run sorted by token count, padded by :class:`peftsent.speed.BatchPadding` as in training, in ``dtype``
    (see :func:`peftsent.speed.inference_precision`),
    on the model's device. ``adapter_names`` (one per text): the peft adapter each text runs through, in one
    mixed batch (peft's ``adapter_names``; see :func:`peftsent.loading.add_adapter`); None: the active adapter.
    """
    import numpy as np
    import torch

    device, collate = device_of(loaded.model), BatchPadding(loaded.tokenizer, loaded.max_length)
    encoded = loaded.encode(texts)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    rows = [{k: encoded[k][i] for k in keys} for i in range(len(texts))]
    order = batch_order([len(r["input_ids"]) for r in rows], adapter_names)
    out = np.empty((len(texts), loaded.model.config.num_labels), dtype=np.float32)
    with torch.no_grad(), inference_precision(loaded.model, dtype):
        for start in range(0, len(texts), batch_size):
            picked = order[start:start + batch_size]
            batch = collate([rows[i] for i in picked]).to(device)
            if adapter_names is not None:
                batch["adapter_names"] = [adapter_names[i] for i in picked]
            out[picked] = loaded.model(**batch).logits.float().cpu().numpy()  # (batch, num_labels)
    return out


def policy_logits(loaded, texts: list[str], batch_size: int, dtype: str, policy=None,
                  adapter_names: list[str] | None = None):
    """Logits (len(texts), num_labels) float32 in the model's class order: :func:`text_logits` when ``policy``
    (a :meth:`peftsent.tokenization.TokenPolicy.for_scoring` result; default the target's own) truncates,
    :func:`peftsent.inference.window_logits` when it scores windows. ``adapter_names``: see :func:`text_logits`."""
    policy = policy or loaded.policy
    if policy.long_reviews == "window":
        return window_logits(loaded.model, loaded.tokenizer, texts, policy.max_length, policy.stride, batch_size,
                             dtype, adapter_names=adapter_names)[0]
    return text_logits(loaded, texts, batch_size, dtype, adapter_names)


def predict_texts(loaded, texts: list[str], batch_size: int = EVAL_BATCH_SIZE, long_reviews: str = "auto",
                  stride: int | None = None, dtype: str = "float32") -> Iterator[dict]:
    """Yield one prediction per text, in input order: label name, its probability and every class's probability
    by name (``{"label", "score", "probabilities": {name: p}}``; the probabilities sum to 1).

    Classes are named by the model's id2label, in canonical order (``Loaded.canonical``, ``Loaded.labels``). A run's
    temperature (calibration.json) divides the logits. ``long_reviews`` / ``stride``: as the target scores
    long reviews (``auto``), or ``truncate`` / ``window`` (:meth:`peftsent.tokenization.TokenPolicy.for_scoring`,
    :func:`peftsent.inference.window_logits`). Texts are batched by length within windows of
    :data:`SORT_WINDOW`; a mergeable adapter runs merged in memory. Raises ValueError for a bad mode or stride.
    """
    import torch

    policy = loaded.policy.for_scoring(long_reviews, stride)
    temperature = temperature_for(loaded) or 1.0
    loaded.model.eval()
    with merged_in_memory(loaded.model):
        for window in range(0, len(texts), SORT_WINDOW):
            chunk = texts[window:window + SORT_WINDOW]
            logits = torch.as_tensor(loaded.canonical(policy_logits(loaded, chunk, batch_size, dtype, policy)))
            logits = logits / temperature
            for text, probs in zip(chunk, torch.softmax(logits, dim=-1).tolist()):
                yield {"text": text, **labelled(loaded.labels, probs)}


def labelled(labels: list[str], probs: list[float]) -> dict:
    """``{"label", "score", "probabilities": {name: p}}`` of one text's class probabilities (in ``labels``' order),
    rounded to 6 digits: THE output of ``predict`` and ``serve``."""
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": labels[best], "score": round(probs[best], 6),
            "probabilities": {labels[i]: round(p, 6) for i, p in enumerate(probs)}}


def unknown_warning(share: float) -> str | None:
    """The ``warning`` of an output line whose review has ``share`` unknown tokens (None below the threshold,
    :data:`peftsent.tokenization.UNKNOWN_SHARE`)."""
    if not mostly_unknown(share):
        return None
    return (f"{share:.0%} of this review's tokens are unknown to the model's tokenizer: its label says little "
            f"about the text (a model for another language or script?)")


def output_lines(loaded, inputs: Inputs, batch_size: int = EVAL_BATCH_SIZE, long_reviews: str = "auto",
                 stride: int | None = None, dtype: str = "float32") -> Iterator[dict]:
    """Exactly one output line per input of ``inputs``, in order (streamed as :func:`predict_texts` yields).

    A review gets :func:`predict_texts`' fields, plus ``warning`` when it is mostly unknown tokens
    (:func:`unknown_warning`); an input without a review gets ``text`` (as given, or null) and ``error``. The
    kept columns come first on every line."""
    reviews = inputs.reviews
    shares = (share for start in range(0, len(reviews), SORT_WINDOW)
              for share in unknown_shares(loaded.tokenizer, reviews[start:start + SORT_WINDOW]))
    predictions = predict_texts(loaded, reviews, batch_size, long_reviews, stride, dtype)
    for text, error, kept in zip(inputs.texts, inputs.errors, inputs.kept):
        if error is not None:
            yield {**kept, "text": text, "error": error}
            continue
        line = {**kept, **next(predictions)}
        warning = unknown_warning(next(shares))
        if warning:
            line["warning"] = warning
        yield line


def report_agreement(loaded, texts: list[str], batch_size: int, dtype: str, probe: int = 64,
                     policy=None) -> str | None:
    """One line: how the first ``probe`` texts' predictions in ``dtype`` agree with float32 (None for float32),
    scored under ``policy`` (default the target's own)."""
    if dtype == "float32":
        return None
    sample = texts[:probe]
    reference = policy_logits(loaded, sample, batch_size, "float32", policy)
    with merged_in_memory(loaded.model):
        fast = policy_logits(loaded, sample, batch_size, dtype, policy)
    check = agreement(fast, reference)
    return (f"{dtype} vs float32 on the first {check['n']} texts: {check['prediction_agreement']:.4f} of labels agree, "
            f"max |dp| {check['max_abs_dprob']:.2g} (--dtype float32 for exact float32)")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.predict", "Label reviews with the model's classes (e.g. negative or positive).", EPILOG)
    parser.add_argument("target", help="run directory, merged/model directory, adapter directory or hub id")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="reviews to label")
    parser.add_argument("--file", help="txt (one review per line), csv (one per row) or jsonl (one per line) file")
    parser.add_argument("--text-column", default="text", help="text column of a csv/jsonl file (default: text)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --file, e.g. cp1252 or latin-1 (default: utf-8; a byte-order mark "
                             "is accepted)")
    parser.add_argument("--keep-columns", metavar="COLUMNS",
                        help="comma-separated columns of a csv/jsonl --file copied into each output line, "
                             "e.g. id,source")
    parser.add_argument("--batch-size", type=positive_int, default=EVAL_BATCH_SIZE,
                        help=f"reviews per forward pass (default: {EVAL_BATCH_SIZE})")
    add_inference_arguments(parser)
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        import torch

        if args.texts and args.file:
            raise DataError("give texts as arguments or --file, not both")
        keep = keep_columns_of(args.keep_columns, args.text_column)
        if keep and not args.file:
            raise DataError(f"--keep-columns {args.keep_columns}: columns come from a .csv or .jsonl --file")
        if args.texts:
            inputs = inputs_of(args.texts)
        elif args.file:
            inputs = read_inputs(args.file, args.text_column, keep, args.encoding)
        elif not sys.stdin.isatty():
            inputs = inputs_of(_lines(sys.stdin.read()))
        else:
            raise DataError("no texts: pass them as arguments, with --file, or on standard input")
        if not inputs.texts:
            raise DataError("no texts to label (the input was empty)")
        texts = inputs.reviews

        try:
            check_scoring_request(args.long_reviews, args.stride)  # before any model loads
        except ValueError as err:
            raise DataError(str(err)) from None
        loaded = load_target(args.target, label_order=args.label_order, allow_random_weights=args.allow_random_weights)
        try:
            policy = loaded.policy.for_scoring(args.long_reviews, args.stride)
        except ValueError as err:
            raise DataError(str(err)) from None
        if policy.long_reviews == "window":  # a bad stride fails before any output

            stride = window_stride(loaded.tokenizer, policy.max_length, policy.stride)
        dtype = target_dtype(args.dtype, loaded.run, loaded.model)
        if torch.cuda.is_available():
            loaded.model.to("cuda")
        check = report_agreement(loaded, texts, args.batch_size, dtype, policy=policy) if texts else None
        if check:
            print(check, file=sys.stderr)
        if policy.long_reviews == "window":  # on stderr: standard output stays one JSON line per text
            print(f"long reviews: a text longer than {policy.max_length} tokens is scored over overlapping windows "
                  f"(stride {stride}; --long-reviews truncate for one cut)", file=sys.stderr)
        with resource_errors(args.target, f"labelling {len(texts)} reviews with {args.target}"):  # memory
            for line in output_lines(loaded, inputs, args.batch_size, args.long_reviews, args.stride, dtype):
                print(json_line(line), flush=True)
        unlabelled = len(inputs.texts) - len(texts)
        if unlabelled:  # on stderr: standard output keeps one line per input
            print(f"{unlabelled} of {len(inputs.texts)} inputs had no text to label: their lines carry an "
                  f"'error' field", file=sys.stderr)
        return 0

    return run_cli(body, "peftsent.predict")


if __name__ == "__main__":
    raise SystemExit(main())
