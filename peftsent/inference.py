"""Batched inference through ``transformers.Trainer.predict``: one code path for train's final
evaluation, ``peftsent.eval`` and merge's parity check.

float32 unless asked otherwise (``dtype``): merge's parity check and the reference of every
agreement stay float32. :func:`predict_checked` is the fast path (adapter merged in memory,
bf16 where the device has native bf16, :func:`peftsent.speed.inference_precision`) with its agreement against
float32 measured.
Runs on CUDA when present (the Trainer places the model), else on the CPU."""

from __future__ import annotations

import contextlib
import tempfile

from peftsent.errors import PeftsentError
from peftsent.speed import (
    BatchPadding,
    agreement,
    batch_order,
    can_merge,
    inference_precision,
    merged_in_memory,
    resolve_dtype,
)
from peftsent.training_args import EVAL_BATCH_SIZE


@contextlib.contextmanager
def preserved_rng():
    """Leave the global python, numpy and torch (CPU and CUDA) random states as they were: inference builds a
    Trainer, which re-seeds them, and must not change what a later training run draws."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def eval_trainer(model, tokenizer, output_dir: str, batch_size: int, progress: bool, max_length: int):
    """A Trainer that only predicts: float32, no logging, CPU unless CUDA is present. Batches padded by
    :class:`peftsent.speed.BatchPadding` up to ``max_length`` tokens."""
    import torch
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
        label_names=["labels"],
    )
    return Trainer(model=model, args=args, data_collator=BatchPadding(tokenizer, max_length),
                   processing_class=tokenizer)


def predict_logits(model, tokenizer, dataset, batch_size: int = EVAL_BATCH_SIZE, progress: bool = True,
                   dtype: str = "float32", merge: bool = False, max_length: int | None = None):
    """Logits of a tokenized split, in the split's own order.

    ``dataset``: columns input_ids, attention_mask, labels, length. Rows run
    sorted by length (less padding) and are put back in order. ``dtype``:
    float32, bfloat16 (:func:`peftsent.speed.inference_precision`) or auto (see
    :func:`peftsent.speed.resolve_dtype`);
    ``merge``: fold a mergeable adapter into the base weights while predicting
    (:func:`peftsent.speed.merged_in_memory`). ``max_length``: the token policy's length, up to which
    :class:`peftsent.speed.BatchPadding` pads (None: the split's longest row). Returns
    (logits (n, 2) float32, labels (n,) int, samples per second).
    """
    import contextlib

    import numpy as np

    lengths = np.asarray(dataset["length"])  # tokens after truncation: padding never goes past the longest
    order = np.argsort(lengths, kind="stable")
    # labels stay out of the forward pass: no loss is needed (AdaLoRA's adds a regulariser that fails at inference)
    inputs = dataset.select(order).remove_columns([c for c in ("labels",) if c in dataset.column_names])
    with preserved_rng(), tempfile.TemporaryDirectory(prefix="peftsent-eval-") as scratch:  # nothing stays
        cap = max_length or int(lengths.max(initial=1))
        trainer = eval_trainer(model, tokenizer, scratch, batch_size, progress, cap)
        with merged_in_memory(model) if merge else contextlib.nullcontext(), inference_precision(model, dtype):
            output = trainer.predict(inputs, metric_key_prefix="predict")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    restored = np.empty_like(logits)
    restored[order] = logits
    labels = np.asarray(dataset["labels"]) if "labels" in dataset.column_names else None
    return restored.astype(np.float32), labels, output.metrics.get("predict_samples_per_second")




def window_stride(tokenizer, max_length: int, stride: int | None, key: str = "--stride") -> int:
    """The window overlap in tokens: ``stride`` (default ``max_length // 2``), checked.

    ``key`` names the setting in the message (``--stride`` on the command line, ``model.stride`` in a recipe).
    Raises PeftsentError unless 0 <= stride < max_length - special tokens (each window must advance).
    """
    room = max_length - tokenizer.num_special_tokens_to_add()
    stride = max_length // 2 if stride is None else stride
    if not 0 <= stride < room:
        suggested = max_length // 2 if max_length // 2 < room else room // 2  # the default where it fits
        named = f"{key}: {stride}" if key.startswith("model.") else f"{key} {stride}"
        example = f"{key}: {suggested}" if key.startswith("model.") else f"{key} {suggested}"
        raise PeftsentError(f"{named}: expected tokens of overlap between windows in [0, {room - 1}] "
                            f"(max length {max_length} less {max_length - room} special tokens); e.g. {example}")
    return stride


#: reviews tokenized into windows at a time by :func:`window_logits` (bounds the tokenizer's transient memory)
TOKENIZE_CHUNK = 256


def window_logits(model, tokenizer, texts, max_length: int, stride: int | None = None,
                  batch_size: int = EVAL_BATCH_SIZE, dtype: str = "float32", merge: bool = False,
                  progress: bool = False, adapter_names: list[str] | None = None):
    """Score every review over overlapping windows of ``max_length`` tokens and average their logits.

    Consecutive windows share ``stride`` tokens (the tokenizer's ``stride``, default ``max_length // 2``) and run
    from the review's start whatever the tokenizer's ``truncation_side``; a review that fits is one window, so it scores exactly as under truncation. ``dtype``: float32 or
    bfloat16 (see :func:`peftsent.speed.inference_precision`); ``merge``: fold a mergeable adapter
    into the base weights meanwhile (:func:`peftsent.speed.merged_in_memory`). Windows run sorted by length,
    with a progress bar over batches when ``progress``. ``adapter_names`` (one per review, None: the active adapter):
    the peft adapter each review's windows run through, in one mixed batch (peft's ``adapter_names``).
    ``texts``: (n,) str. Returns (logits (n, num_labels) float32, windows per review (n,) int, reviews per
    second). Needs a fast tokenizer (``overflow_to_sample_mapping``).
    """
    import contextlib
    import time

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    stride = window_stride(tokenizer, max_length, stride)
    texts = list(texts)
    side = tokenizer.truncation_side  # a tail model's saved tokenizer cuts from the left: windows start at the start
    tokenizer.truncation_side = "right"
    features, owners = [], []
    try:
        # a few hundred reviews at a time, each window kept as compact int32 arrays: the tokenizer's own
        # per-token objects for a whole split's windows took 280 MiB of RSS (2,500 IMDb reviews), never returned
        for first in range(0, len(texts), TOKENIZE_CHUNK):
            encoded = tokenizer(texts[first:first + TOKENIZE_CHUNK], truncation=True, max_length=max_length,
                                stride=stride, return_overflowing_tokens=True)
            owner = np.asarray(encoded.pop("overflow_to_sample_mapping")) + first  # review index of each window
            keys = list(encoded.keys())
            features += [{k: np.asarray(encoded[k][i], dtype=np.int32) for k in keys} for i in range(len(owner))]
            owners.append(owner)
            del encoded
    finally:
        tokenizer.truncation_side = side
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)  # (windows,)
    order = batch_order([len(f["input_ids"]) for f in features],  # less padding
                        None if adapter_names is None else [adapter_names[i] for i in owner])
    collate, device = BatchPadding(tokenizer, max_length), next(model.parameters()).device
    sums, started = np.zeros((len(texts), model.config.num_labels)), time.perf_counter()
    model.eval()
    with torch.no_grad(), merged_in_memory(model) if merge else contextlib.nullcontext(), \
            inference_precision(model, dtype):
        for start in tqdm(range(0, len(order), batch_size), desc=f"windows ({len(order)} for {len(texts)} reviews)",
                          unit="batch", disable=None if progress else True, leave=False):
            rows = order[start:start + batch_size]
            batch = collate([features[i] for i in rows]).to(device)
            if adapter_names is not None:
                batch["adapter_names"] = [adapter_names[i] for i in owner[rows]]
            logits = model(**batch).logits.float().cpu().numpy()  # (batch, num_labels)
            np.add.at(sums, owner[rows], logits)
    counts = np.bincount(owner, minlength=len(texts))
    speed = round(len(texts) / max(time.perf_counter() - started, 1e-9), 3)
    return (sums / counts[:, None]).astype(np.float32), counts, speed


#: reviews of the split whose float32 logits are the reference of a fast path's agreement
AGREEMENT_PROBE = 256


def predict_checked(model, tokenizer, dataset, batch_size: int = EVAL_BATCH_SIZE, dtype: str = "auto",
                    merge: bool = True, probe: int | None = AGREEMENT_PROBE, progress: bool = True, policy=None,
                    texts=None):
    """Fast-path logits and how they agree with float32: (logits, labels, samples/s, report).

    THE scoring of a split, for train's final evaluation and ``peftsent.eval``. ``dataset``: the split
    tokenized under ``policy`` (:class:`peftsent.tokenization.TokenPolicy`); when ``policy.long_reviews`` is
    ``window``, ``texts`` (the split's reviews, in order) are scored over windows
    (:func:`window_logits`, ``policy.stride``) instead of the truncated rows.
    Predicts with ``dtype`` (auto: bf16 where native) and the adapter merged in memory
    where it can merge (in float32 that changes logits by rounding only, ~1e-6: the merge
    parity tests). When the dtype is not float32, the first ``probe`` rows (all when None)
    are predicted again in float32 without merging and compared.
    ``report``: ``dtype``, ``merged``, ``agreement`` (see :func:`peftsent.speed.agreement`,
    None when the fast path is plain float32), ``long_reviews`` (``truncate`` or ``window (stride S)``).
    """
    import numpy as np

    dtype = resolve_dtype(dtype)
    merged = merge and can_merge(model)
    windows = policy is not None and policy.long_reviews == "window"
    if windows:
        texts = list(texts)
        stride = window_stride(tokenizer, policy.max_length, policy.stride)

        def score(rows, fast):
            return window_logits(model, tokenizer, texts[:rows], policy.max_length, stride, batch_size,
                                 dtype if fast else "float32", merged if fast else False, progress)[::2]

        logits, speed = score(len(texts), True)
        labels = np.asarray(dataset["labels"]) if "labels" in dataset.column_names else None
    else:
        cap = policy.max_length if policy is not None else None
        logits, labels, speed = predict_logits(model, tokenizer, dataset, batch_size, progress, dtype, merged, cap)
    report = {"dtype": dtype, "merged": merged, "agreement": None,
              "long_reviews": f"window (stride {stride})" if windows else "truncate"}
    if getattr(model, "runtime", None) == "onnxruntime":  # an ONNX export (peftsent.onnx_runtime)
        report["runtime"] = f"onnxruntime {model.precision}"
    if dtype != "float32":
        rows = len(dataset) if probe is None else min(probe, len(dataset))
        if rows:  # probe=0: the caller measures agreement itself
            if windows:
                reference = score(rows, False)[0]
            else:
                reference, _, _ = predict_logits(model, tokenizer, dataset.select(range(rows)), batch_size, progress,
                                                 max_length=cap)
            report["agreement"] = agreement(logits[:rows], reference)
    return logits, labels, speed, report
