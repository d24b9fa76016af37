"""``python -m peftsent.predict TARGET [TEXT ...]``: label reviews with any model, one JSON line each.

TARGET is a run directory (adapter or full), a merged directory, a model
directory or a hub id. Texts come from the arguments, from ``--file`` (txt: one
review per line; csv / jsonl: the ``--text-column``) or from standard input.
Long reviews are truncated to the model's max length, as in eval, or scored over overlapping
windows (``--long-reviews window``). A run's calibration temperature is applied.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

from peftsent.calibration import temperature_for
from peftsent.cli import add_inference_arguments, make_parser, positive_int, run_cli
from peftsent.errors import DataError
from peftsent.inference import window_logits, window_stride
from peftsent.loading import load_target
from peftsent.speed import (
    BatchPadding,
    agreement,
    device_of,
    inference_precision,
    merged_in_memory,
    target_dtype,
)
from peftsent.tokenization import check_scoring_request
from peftsent.training_args import EVAL_BATCH_SIZE

EPILOG = """examples:
  python -m peftsent.predict runs/quick/lora "A wonderful film." "Dull and far too long."
  python -m peftsent.predict runs/quick/lora/merged --file reviews.txt
  python -m peftsent.predict runs/quick/lora --file reviews.csv --text-column review
  cat reviews.txt | python -m peftsent.predict runs/quick/lora

output, one line per text:
  {"text": "A wonderful film.", "label": "positive", "score": 0.97, "probabilities": {"negative": 0.03, "positive": 0.97}}
"""


def read_texts(path: str, text_column: str = "text") -> list[str]:
    """Reviews from a file: ``.txt`` one per non-blank line; ``.csv`` / ``.jsonl`` / ``.json`` a text column.

    Raises DataError if the file is missing, the column is absent or a text is empty.
    """
    import pandas as pd

    file = Path(path)
    if file.suffix.lower() == ".parquet":
        raise DataError(f"{path}: predict reads .txt, .csv, .json and .jsonl files")
    if not file.is_file():
        raise DataError(f"file not found: {path}")
    if file.suffix.lower() in {".csv", ".jsonl", ".json"}:
        try:
            frame = pd.read_csv(file) if file.suffix.lower() == ".csv" else pd.read_json(file, lines=file.suffix.lower() == ".jsonl")
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"cannot read {path} as {file.suffix[1:]} (expected a table with a "
                            f"'{text_column}' column, json as a list of records): {err}") from None
        if text_column not in frame.columns:
            raise DataError(f"{path}: column '{text_column}' not found; columns are: {', '.join(map(str, frame.columns))}; "
                            f"pass --text-column")
        return check_texts(list(frame[text_column]), path)
    try:
        return [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; expected one review per line (or a .csv / .jsonl file)") from None


def check_texts(texts: list, where: str) -> list[str]:
    """Raise DataError naming the first empty or non-text entries (by index)."""
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(f"{where}: {len(bad)} entries are empty or not text (indices {bad[:10]})")
    return texts


#: texts sorted by length together (streamed input waits for at most this many before output)
SORT_WINDOW = 1024


def text_logits(loaded, texts: list[str], batch_size: int = EVAL_BATCH_SIZE, dtype: str = "float32"):
    """Logits (len(texts), num_labels) float32 in the model's class order, in the order of ``texts``.

    Inputs go through the target's token policy (``Loaded.encode``, as in training and eval); batches
    run sorted by token count, padded by :class:`peftsent.speed.BatchPadding` as in training, in ``dtype``
    (see :func:`peftsent.speed.inference_precision`),
    on the model's device.
    """
    import numpy as np
    import torch

    device, collate = device_of(loaded.model), BatchPadding(loaded.tokenizer, loaded.max_length)
    encoded = loaded.encode(texts)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    rows = [{k: encoded[k][i] for k in keys} for i in range(len(texts))]
    order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
    out = np.empty((len(texts), loaded.model.config.num_labels), dtype=np.float32)
    with torch.no_grad(), inference_precision(loaded.model, dtype):
        for start in range(0, len(texts), batch_size):
            picked = order[start:start + batch_size]
            batch = collate([rows[i] for i in picked]).to(device)
            out[picked] = loaded.model(**batch).logits.float().cpu().numpy()  # (batch, num_labels)
    return out


def policy_logits(loaded, texts: list[str], batch_size: int, dtype: str, policy=None):
    """Logits (len(texts), num_labels) float32 in the model's class order: :func:`text_logits` when ``policy``
    (a :meth:`peftsent.tokenization.TokenPolicy.for_scoring` result; default the target's own) truncates,
    :func:`peftsent.inference.window_logits` when it scores windows."""
    policy = policy or loaded.policy
    if policy.long_reviews == "window":
        return window_logits(loaded.model, loaded.tokenizer, texts, policy.max_length, policy.stride, batch_size,
                             dtype)[0]
    return text_logits(loaded, texts, batch_size, dtype)


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
                best = max(range(len(probs)), key=probs.__getitem__)
                yield {"text": text, "label": loaded.labels[best], "score": round(probs[best], 6),
                       "probabilities": {loaded.labels[i]: round(p, 6) for i, p in enumerate(probs)}}


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
    parser.add_argument("--file", help="txt (one review per line), csv or jsonl file")
    parser.add_argument("--text-column", default="text", help="text column of a csv/jsonl file (default: text)")
    parser.add_argument("--batch-size", type=positive_int, default=EVAL_BATCH_SIZE,
                        help=f"reviews per forward pass (default: {EVAL_BATCH_SIZE})")
    add_inference_arguments(parser)
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        import torch

        if args.texts and args.file:
            raise DataError("give texts as arguments or --file, not both")
        if args.texts:
            texts = check_texts(args.texts, "arguments")
        elif args.file:
            texts = read_texts(args.file, args.text_column)
        elif not sys.stdin.isatty():
            texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
        else:
            raise DataError("no texts: pass them as arguments, with --file, or on standard input")
        if not texts:
            raise DataError("no texts to label (the input was empty)")

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
        dtype = target_dtype(args.dtype, loaded.run)
        if torch.cuda.is_available():
            loaded.model.to("cuda")
        check = report_agreement(loaded, texts, args.batch_size, dtype, policy=policy)
        if check:
            print(check, file=sys.stderr)
        if policy.long_reviews == "window":  # on stderr: standard output stays one JSON line per text
            print(f"long reviews: a text longer than {policy.max_length} tokens is scored over overlapping windows "
                  f"(stride {stride}; --long-reviews truncate for one cut)", file=sys.stderr)
        for prediction in predict_texts(loaded, texts, args.batch_size, args.long_reviews, args.stride, dtype):
            print(json.dumps(prediction, ensure_ascii=False), flush=True)
        return 0

    return run_cli(body, "peftsent.predict")


if __name__ == "__main__":
    raise SystemExit(main())
