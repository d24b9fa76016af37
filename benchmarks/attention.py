"""Forward + backward time of the embedded all-MiniLM-L6-v2 under bf16 autocast with each attention
implementation (``sdpa``: PyTorch's fused kernel, peftsent's default; ``eager``: matmul + softmax), dropout 0,
batch 16, frozen weights but for the query/value projections and the classifier (gradients flow through
every attention layer, as under LoRA). Interleaved: sdpa, eager, sdpa, eager.

    python benchmarks/attention.py                      # 192, 224 and 256 tokens
    python benchmarks/attention.py --lengths 128 256 --steps 6

Prints the median and the minimum seconds per step of each (implementation, length) after one warm-up step.
"""

from __future__ import annotations

import argparse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[192, 224, 256], help="tokens per review")
    parser.add_argument("--steps", type=int, default=4, help="steps per (implementation, length, round); 1 warm-up")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import time

    import torch
    from transformers import AutoModelForSequenceClassification

    from peftsent.registry import resolve_model

    location = resolve_model("minilm-l6").location
    times: dict[tuple[str, int], list[float]] = {}
    for impl in ("sdpa", "eager", "sdpa", "eager"):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            location, num_labels=2, attn_implementation=impl, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0).train()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(any(k in name for k in ("classifier", "query", "value")))
        for length in args.lengths:
            ids = torch.randint(1000, 20000, (args.batch_size, length))
            mask = torch.ones_like(ids)
            mask[: args.batch_size // 2, length - 40:] = 0  # half the rows padded
            labels = torch.randint(0, 2, (args.batch_size,))
            for step in range(args.steps):
                started = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                if step:
                    times.setdefault((impl, length), []).append(time.perf_counter() - started)
    print("| attention | tokens | median s/step | min s/step |\n|---|---:|---:|---:|")
    for (impl, length), values in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {impl} | {length} | {sorted(values)[len(values) // 2]:.3f} | {min(values):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
