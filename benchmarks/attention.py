"""Forward + backward time of the embedded all-MiniLM-L6-v2 under bf16 autocast with each attention
implementation (``sdpa``: PyTorch's fused kernel, peftsent's default; ``eager``: matmul + softmax), dropout 0,
batch 16, frozen weights but for the query/value projections and the classifier (gradients flow through
every attention layer, as under LoRA). Interleaved: sdpa, eager, sdpa, eager.

    python benchmarks/attention.py                      # 192, 224 and 256 tokens
    python benchmarks/attention.py --lengths 128 256 --steps 6
    python benchmarks/attention.py --op                 # the attention op alone, forward and backward apart

Prints the median and the minimum seconds per step of each (implementation, length) after one warm-up step.
``--op`` times ``scaled_dot_product_attention`` alone on bf16 (batch, 12 heads, tokens, 32) tensors with a
padding mask, PyTorch's fused CPU kernel (``FLASH_ATTENTION``) against the ``MATH`` backend (matmul +
softmax), forward and backward apart (median ms of 5 interleaved rounds after a warm-up). The backward of
attention costs about 2.5x its forward in FLOPs (recomputation included); the ratio printed shows how far
each kernel is from that.
"""

from __future__ import annotations

import argparse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[192, 224, 256], help="tokens per review")
    parser.add_argument("--steps", type=int, default=4, help="steps per (implementation, length, round); 1 warm-up")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--op", action="store_true", help="time the attention op alone (see above)")
    args = parser.parse_args()
    if args.op:
        return attention_op(args.lengths, args.batch_size)

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


def attention_op(lengths, batch_size: int, heads: int = 12, head_dim: int = 32, rounds: int = 6) -> int:
    """Forward and backward ms of SDPA's fused CPU kernel and of its math backend (all-MiniLM-L6-v2's heads)."""
    import statistics
    import time

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    print("| tokens | kernel | forward ms | backward ms | backward / forward |\n|---:|---|---:|---:|---:|")
    for length in lengths:
        q, k, v = (torch.randn(batch_size, heads, length, head_dim, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        mask = torch.zeros(batch_size, 1, 1, length, dtype=torch.bfloat16)
        mask[: batch_size // 2, ..., length - length // 8:] = torch.finfo(torch.bfloat16).min  # half the rows padded
        grad = torch.randn_like(q)
        times: dict[str, list[tuple[float, float]]] = {}
        for round_ in range(rounds):
            for name, backend in (("fused (flash, CPU)", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
                with sdpa_kernel(backend):
                    started = time.perf_counter()
                    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                    forward = time.perf_counter()
                    out.backward(grad)
                    backward = time.perf_counter()
                q.grad = k.grad = v.grad = None
                if round_:  # the first round is warm-up
                    times.setdefault(name, []).append((forward - started, backward - forward))
        for name, values in times.items():
            f, b = (statistics.median(v[i] for v in values) * 1e3 for i in (0, 1))
            print(f"| {length} | {name} | {f:.1f} | {b:.1f} | {b / f:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
