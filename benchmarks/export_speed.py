"""What to deploy on this CPU: PyTorch float32, PyTorch bf16, ONNX float32 and ONNX int8, side by side.

    python benchmarks/export_speed.py runs/quick/lora --max-samples 300
    python benchmarks/export_speed.py runs/quick/full --split validation --rounds 3

Needs the export extra (``pip install 'peftsent[export]'``). The run is exported twice by ``peftsent export``
(float32 and ``--quantize int8``, each parity-checked on ``--probe-size`` validation reviews) into a scratch
directory; then, on the same reviews of one split of the run's data (``--max-samples`` of them, seeded and
stratified as ``peftsent eval --max-samples``), each path is scored by peftsent's one scoring path
(:func:`peftsent.inference.predict_checked`: the run's token policy, length-sorted batches, the adapter merged
in memory for PyTorch), interleaved round by round:

- ``pytorch float32``: the run as ``peftsent eval --dtype float32`` scores it;
- ``pytorch bf16``: weights stored in bfloat16 while predicting (``--dtype bfloat16``), only where the CPU has
  native bf16 (AVX512_BF16 or AMX; ``peftsent.training_args.bf16_available``);
- ``onnx float32`` / ``onnx int8``: the export directories, as ``peftsent eval EXPORT`` scores them.

Prints the CPU's ISA flags (AVX2, AVX-512, AVX512_VNNI, AVX512_BF16, AMX), threads, then accuracy, agreement with
PyTorch float32, reviews/s (median of ``--rounds``) and the ratio to PyTorch float32 of each path, and the
fastest path within 0.5 points of float32's accuracy. Exit status 0 (this measures; it does not gate).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

#: /proc/cpuinfo flags that decide which path is fast: int8 dot products (VNNI, AMX-INT8), bf16 (AVX512_BF16, AMX)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_isa() -> tuple[str, dict[str, bool]]:
    """(CPU model name, {flag: present}) from /proc/cpuinfo (Linux); ("unknown", all False) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", dict.fromkeys(ISA_FLAGS, False)
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return name, {flag: flag in flags for flag in ISA_FLAGS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished run directory (adapter or full fine-tuning)")
    parser.add_argument("--split", default="test", help="split of the run's data (default: test)")
    parser.add_argument("--max-samples", type=int, default=300, help="reviews scored per path (default: 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="reviews per batch (default: 32, as eval)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is shown (default: 2)")
    parser.add_argument("--probe-size", type=int, default=64, help="export parity probe (default: 64)")
    args = parser.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("export_speed.py: needs pip install 'peftsent[export]' (onnx, onnxruntime)", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    import peftsent
    from peftsent.data import load_splits, tokenize_splits
    from peftsent.eval import _data_section
    from peftsent.export import export
    from peftsent.inference import predict_checked
    from peftsent.loading import load_target, target_run
    from peftsent.training_args import bf16_available

    name, isa = cpu_isa()
    print(f"CPU: {name}; {torch.get_num_threads()} threads (torch and ONNX Runtime); "
          + " ".join(f"{flag}={'yes' if present else 'no'}" for flag, present in isa.items()))
    section = _data_section(target_run(args.run_dir), None, args.max_samples)
    splits = load_splits(section, splits=[args.split])
    texts = splits[args.split]["text"]
    with tempfile.TemporaryDirectory(prefix="export-speed-") as scratch:
        exports = {}
        for precision in ("float32", "int8"):
            out, parity = export(args.run_dir, quantize=None if precision == "float32" else precision,
                                 out=Path(scratch) / precision, probe_size=args.probe_size)
            exports[f"onnx {precision}"] = (out, parity)
            print(f"exported onnx {precision}: parity on {parity.probe_size} validation reviews max |dp| "
                  f"{parity.max_abs_dprob:.2g}, agreement {parity.agreement:.4f}; "
                  f"{(out / 'model.onnx').stat().st_size / 2**20:.1f} MiB")
        pytorch = load_target(args.run_dir)
        paths = {"pytorch float32": (pytorch, "float32")}
        if bf16_available():
            paths["pytorch bf16"] = (pytorch, "bfloat16")
        for label, (out, _) in exports.items():
            paths[label] = (load_target(str(out)), "float32")
        tokenized = {label: tokenize_splits(splits, loaded.tokenizer, loaded.policy)[args.split]
                     for label, (loaded, _) in paths.items()}
        logits, speeds = {}, {label: [] for label in paths}
        for _ in range(args.rounds):
            for label, (loaded, dtype) in paths.items():
                out, labels, speed, _ = predict_checked(
                    loaded.model, loaded.tokenizer, tokenized[label], args.batch_size, dtype, probe=0,
                    progress=False, policy=loaded.policy, texts=texts)
                logits[label] = loaded.canonical(np.asarray(out, dtype=np.float32))
                speeds[label].append(speed)
        sizes = {label: (out / "model.onnx").stat().st_size / 2**20 for label, (out, _) in exports.items()}

    gold = np.asarray(tokenized["pytorch float32"]["labels"])
    reference = logits["pytorch float32"].argmax(1)
    base = statistics.median(speeds["pytorch float32"])
    accuracy = {label: float((logits[label].argmax(1) == gold).mean()) for label in paths}
    policy = pytorch.policy
    print(f"\n{args.run_dir}: {section.name} {args.split}, {len(gold)} reviews, max_length {policy.max_length} "
          f"({policy.truncation}, long reviews {policy.long_reviews}); batch {args.batch_size}; median of "
          f"{args.rounds} rounds; peftsent {peftsent.__version__}\n")
    print("| path | accuracy | agreement with PyTorch float32 | reviews/s | vs PyTorch float32 | model file MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in paths:
        agree = float((logits[label].argmax(1) == reference).mean())
        speed = statistics.median(speeds[label])
        size = f"{sizes[label]:.1f}" if label in sizes else ""
        print(f"| {label} | {accuracy[label]:.4f} | {agree:.4f} | {speed:.1f} | {speed / base:.2f}x | {size} |")
    fit = [label for label in paths if accuracy["pytorch float32"] - accuracy[label] <= 0.005]
    best = max(fit, key=lambda label: statistics.median(speeds[label]))
    print(f"\nfastest within 0.5 points of float32's accuracy on this CPU: {best} "
          f"({statistics.median(speeds[best]) / base:.2f}x PyTorch float32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
