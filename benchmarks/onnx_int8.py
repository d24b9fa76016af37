"""ONNX Runtime export with dynamic int8 quantization against peftsent's PyTorch inference: accuracy and speed.

    python benchmarks/onnx_int8.py runs/quick/lora                 # a run (adapter merged for the export)
    python benchmarks/onnx_int8.py runs/quick/lora/merged --split validation --max-samples 500

Needs ``pip install onnx onnxruntime`` (not dependencies of peftsent). On the same reviews of one split
(the run's data, tokenized by the run's own token policy, length-sorted batches of 32 by default, as ``peftsent eval``),
in one process and interleaved round by round:

- PyTorch, peftsent's default inference (``peftsent.inference.predict_checked``: adapter merged in memory,
  weights stored in bf16 where the CPU has native bf16) and float32;
- ONNX Runtime float32: the merged model exported by ``torch.onnx.export`` (opset 17, dynamic batch and
  sequence axes);
- ONNX Runtime int8: the same graph after ``onnxruntime.quantization.quantize_dynamic`` (int8 weights of
  every MatMul, activations quantized per batch at run time).

Prints accuracy, agreement with PyTorch float32 and reviews/s per path, and the rule of the performance
issue: an int8 export is worth shipping only if it is at least 1.5x faster than peftsent's default inference
at no more than 0.5 points of accuracy lost. Exit status 0 either way (this measures; it does not gate).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _batches(tokenized, batch_size: int):
    """Index batches in length order (longest first), as peftsent.inference does."""
    order = np.argsort(-np.asarray(tokenized["length"]), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _padded(tokenizer, tokenized, index, max_length: int):
    """One batch padded as peftsent pads it (:class:`peftsent.speed.BatchPadding`), as numpy int64."""
    from peftsent.speed import BatchPadding

    rows = tokenized.select(index.tolist())
    features = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows]
    return {k: v.numpy() for k, v in BatchPadding(tokenizer, max_length)(features).items()}


def export(model, tokenizer, directory: Path) -> Path:
    """The merged float32 model as ONNX (inputs input_ids, attention_mask: (batch, sequence) int64;
    output logits: (batch, num_labels) float32)."""
    import torch

    path = directory / "model.onnx"
    example = tokenizer(["a short review", "another one"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model.eval(), (example["input_ids"], example["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def ort_logits(session, tokenizer, tokenized, batches, max_length: int) -> tuple[np.ndarray, float]:
    """Logits (n, num_labels) float32 in split order, and reviews per second."""
    out = np.zeros((len(tokenized), 2), dtype=np.float32)
    started = time.perf_counter()
    for index in batches:
        batch = _padded(tokenizer, tokenized, index, max_length)
        out[index] = session.run(["logits"], {"input_ids": batch["input_ids"].astype(np.int64),
                                              "attention_mask": batch["attention_mask"].astype(np.int64)})[0]
    return out, len(tokenized) / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="run directory, adapter directory or merged model directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="reviews per batch (default 32, peftsent.speed.EVAL_BATCH_SIZE)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-channel", action="store_true", help="int8 scales per output channel, not per tensor")
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        print("onnx_int8.py: needs `pip install onnx onnxruntime`", file=sys.stderr)
        return 2
    import torch

    from peftsent.data import load_splits, tokenize_splits
    from peftsent.eval import _data_section
    from peftsent.inference import predict_checked
    from peftsent.loading import load_target, target_run
    from peftsent.speed import resolve_dtype

    section = _data_section(target_run(args.target), None, args.max_samples)
    splits = load_splits(section, splits=[args.split])
    loaded = load_target(args.target)
    tokenized = tokenize_splits(splits, loaded.tokenizer, loaded.policy)[args.split]
    labels = np.asarray(tokenized["labels"])
    merged = copy.deepcopy(loaded.model)
    if hasattr(merged, "merge_and_unload"):
        merged = merged.merge_and_unload()

    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        fp32_path = export(merged, loaded.tokenizer, Path(scratch))
        int8_path = Path(scratch) / "model-int8.onnx"
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=args.per_channel)
        export_seconds = time.perf_counter() - started
        sizes = {"onnx float32": fp32_path.stat().st_size, "onnx int8": int8_path.stat().st_size}
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("onnx float32", fp32_path), ("onnx int8", int8_path))}
        batches = _batches(tokenized, args.batch_size)
        default = f"pytorch {resolve_dtype('auto')} merged (peftsent default)"
        speeds = {name: [] for name in (default, "pytorch float32 merged", *sessions)}
        logits = {}
        for _ in range(args.rounds):
            for name, dtype in ((default, "auto"), ("pytorch float32 merged", "float32")):
                out, _, speed, _ = predict_checked(loaded.model, loaded.tokenizer, tokenized, args.batch_size,
                                                    resolve_dtype(dtype), probe=0, progress=False,
                                                    policy=loaded.policy.for_scoring("truncate"))
                logits[name] = np.asarray(out, dtype=np.float32)
                speeds[name].append(speed)
            for name, session in sessions.items():
                logits[name], speed = ort_logits(session, loaded.tokenizer, tokenized, batches, loaded.max_length)
                speeds[name].append(speed)

    reference = logits["pytorch float32 merged"].argmax(1)
    base_speed = statistics.median(speeds[default])
    base_accuracy = float((loaded.canonical(logits[default]).argmax(1) == labels).mean())
    print(f"\n{args.target}, {section.name} {args.split} ({len(labels)} reviews, max_length {loaded.max_length}, "
          f"{loaded.policy.truncation}); {threads} threads; median of {args.rounds} rounds; export + quantize "
          f"{export_seconds:.1f} s\n")
    print("| path | accuracy | agreement with PyTorch float32 | reviews/s | speed vs peftsent default | file MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in speeds:
        accuracy = float((loaded.canonical(logits[name]).argmax(1) == labels).mean())
        agree = float((logits[name].argmax(1) == reference).mean())
        size = f"{sizes[name] / 2**20:.1f}" if name in sizes else ""
        print(f"| {name} | {accuracy:.4f} | {agree:.4f} | {statistics.median(speeds[name]):.1f} | "
              f"{statistics.median(speeds[name]) / base_speed:.2f}x | {size} |")
    int8_accuracy = float((loaded.canonical(logits["onnx int8"]).argmax(1) == labels).mean())
    ratio = statistics.median(speeds["onnx int8"]) / base_speed
    worth = ratio >= 1.5 and (base_accuracy - int8_accuracy) <= 0.005
    print(f"\nint8 ONNX: {ratio:.2f}x the default's speed, {100 * (int8_accuracy - base_accuracy):+.2f} points: "
          f"{'worth shipping' if worth else 'not worth shipping'} by the rule (>= 1.5x at <= 0.5 points lost)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
