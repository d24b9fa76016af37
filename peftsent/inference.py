"""Batched inference through ``transformers.Trainer.predict``: one code path for train's final
evaluation, ``peftsent.eval`` and merge's parity check, always in float32 (no autocast)."""

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


def predict_logits(model, tokenizer, dataset, batch_size: int = 64, progress: bool = True):
    """Logits of a tokenized split, in the split's own order.

    ``dataset``: columns input_ids, attention_mask, labels, length. Rows run
    sorted by length (less padding) and are put back in order. Returns
    (logits (n, 2) float32, labels (n,) int, samples per second).
    """
    import numpy as np

    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    with tempfile.TemporaryDirectory(prefix="peftsent-eval-") as scratch:  # Trainer wants a directory; nothing stays
        trainer = eval_trainer(model, tokenizer, scratch, batch_size, progress)
        output = trainer.predict(dataset.select(order), metric_key_prefix="predict")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    restored = np.empty_like(logits)
    restored[order] = logits
    labels = np.empty_like(output.label_ids)
    labels[order] = output.label_ids
    return restored.astype(np.float32), labels, output.metrics.get("predict_samples_per_second")
