"""Batched inference through ``transformers.Trainer.predict``: one code path for train's final
evaluation, ``peftsent.eval`` and merge's parity check.

float32 unless asked otherwise (``dtype``): merge's parity check and the reference of every
agreement stay float32. :func:`predict_checked` is the fast path (adapter merged in memory,
bf16 autocast where the device has native bf16) with its agreement against float32 measured.
Runs on CUDA when present (the Trainer places the model), else on the CPU."""

from __future__ import annotations

import tempfile


def eval_trainer(model, tokenizer, output_dir: str, batch_size: int = 64, progress: bool = True):
    """A Trainer that only predicts: float32, no logging, CPU unless CUDA is present."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
        label_names=["labels"],
    )
    return Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)


def predict_logits(model, tokenizer, dataset, batch_size: int = 64, progress: bool = True,
                   dtype: str = "float32", merge: bool = False):
    """Logits of a tokenized split, in the split's own order.

    ``dataset``: columns input_ids, attention_mask, labels, length. Rows run
    sorted by length (less padding) and are put back in order. ``dtype``:
    float32, bfloat16 (autocast) or auto (see :func:`peftsent.speed.resolve_dtype`);
    ``merge``: fold a mergeable adapter into the base weights while predicting
    (:func:`peftsent.speed.merged_in_memory`). Returns
    (logits (n, 2) float32, labels (n,) int, samples per second).
    """
    import contextlib

    import numpy as np
    import torch

    from peftsent.speed import inference_context, merged_in_memory

    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="peftsent-eval-") as scratch:  # Trainer wants a directory; nothing stays
        trainer = eval_trainer(model, tokenizer, scratch, batch_size, progress)
        with merged_in_memory(model) if merge else contextlib.nullcontext(), inference_context(dtype, device):
            output = trainer.predict(dataset.select(order), metric_key_prefix="predict")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    restored = np.empty_like(logits)
    restored[order] = logits
    labels = np.empty_like(output.label_ids)
    labels[order] = output.label_ids
    return restored.astype(np.float32), labels, output.metrics.get("predict_samples_per_second")


#: reviews of the split whose float32 logits are the reference of a fast path's agreement
AGREEMENT_PROBE = 256


def predict_checked(model, tokenizer, dataset, batch_size: int = 64, dtype: str = "auto", merge: bool = True,
                    probe: int | None = AGREEMENT_PROBE, progress: bool = True):
    """Fast-path logits and how they agree with float32: (logits, labels, samples/s, report).

    Predicts with ``dtype`` (auto: bf16 where native) and the adapter merged in memory
    where it can merge (in float32 that changes logits by rounding only, ~1e-6: the merge
    parity tests). When the dtype is not float32, the first ``probe`` rows (all when None)
    are predicted again in float32 without merging and compared.
    ``report``: ``dtype``, ``merged``, ``agreement`` (see :func:`peftsent.speed.agreement`,
    None when the fast path is plain float32).
    """
    from peftsent.speed import agreement, can_merge, resolve_dtype

    dtype = resolve_dtype(dtype)
    merged = merge and can_merge(model)
    logits, labels, speed = predict_logits(model, tokenizer, dataset, batch_size, progress, dtype, merged)
    report = {"dtype": dtype, "merged": merged, "agreement": None}
    if dtype != "float32":
        rows = len(dataset) if probe is None else min(probe, len(dataset))
        if rows:  # probe=0: the caller measures agreement itself
            reference, _, _ = predict_logits(model, tokenizer, dataset.select(range(rows)), batch_size, progress)
            report["agreement"] = agreement(logits[:rows], reference)
    return logits, labels, speed, report
