"""Batched inference through ``transformers.Trainer.predict``: one code path for train's final
evaluation, ``peftsent.eval`` and merge's parity check, always in float32 (no autocast)."""

from __future__ import annotations

import contextlib
import tempfile


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


def predict_logits(model, tokenizer, dataset, batch_size: int = 64, progress: bool = True):
    """Logits of a tokenized split, in the split's own order.

    ``dataset``: columns input_ids, attention_mask, labels, length. Rows run
    sorted by length (less padding) and are put back in order. Returns
    (logits (n, 2) float32, labels (n,) int, samples per second).
    """
    import numpy as np

    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    # labels stay out of the forward pass: no loss is needed (AdaLoRA's adds a regulariser that fails at inference)
    inputs = dataset.select(order).remove_columns([c for c in ("labels",) if c in dataset.column_names])
    with preserved_rng(), tempfile.TemporaryDirectory(prefix="peftsent-eval-") as scratch:  # nothing stays
        trainer = eval_trainer(model, tokenizer, scratch, batch_size, progress)
        output = trainer.predict(inputs, metric_key_prefix="predict")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    restored = np.empty_like(logits)
    restored[order] = logits
    labels = np.asarray(dataset["labels"]) if "labels" in dataset.column_names else None
    return restored.astype(np.float32), labels, output.metrics.get("predict_samples_per_second")
