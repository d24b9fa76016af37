"""Inference speed on CPU: adapter model (base + peft adapter) vs the merged standalone model.

    python benchmarks/merge_speed.py runs/quick/lora [--reviews 256] [--batch-size 32] [--repeats 3]

Both models run in float32 under torch.no_grad on the same tokenized validation
reviews (sorted by length, dynamic padding); each is timed over all batches,
best of --repeats, after one warm-up pass. Prints reviews/s of each and the ratio.
The merged model is RUN/merged if it exists, else merged in memory.
"""

from __future__ import annotations

import argparse
import time


def _batches(tokenizer, texts, batch_size, max_length):
    ordered = sorted(texts, key=len)
    return [tokenizer(ordered[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt") for i in range(0, len(ordered), batch_size)]


def _time(model, batches, repeats: int) -> tuple[float, list]:
    import torch

    model.eval()
    with torch.no_grad():
        for batch in batches[:2]:
            model(**batch)  # warm-up
        best, preds = float("inf"), []
        for _ in range(repeats):
            start = time.perf_counter()
            preds = [model(**batch).logits.argmax(-1) for batch in batches]
            best = min(best, time.perf_counter() - start)
    return best, torch.cat(preds).tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--reviews", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import dataclasses
    from pathlib import Path

    import torch

    from peftsent.data import load_splits
    from peftsent.loading import load_target
    from peftsent.modeling import merge_adapter

    adapter = load_target(args.run_dir)
    recipe = adapter.run.recipe()
    texts = load_splits(dataclasses.replace(recipe.data, max_eval_samples=args.reviews), ["validation"])["validation"]["text"]
    batches = _batches(adapter.tokenizer, texts, args.batch_size, adapter.max_length)
    merged_dir = Path(args.run_dir) / "merged"
    merged = load_target(str(merged_dir)).model if merged_dir.is_dir() else merge_adapter(load_target(args.run_dir).model)
    adapter_s, adapter_preds = _time(adapter.model, batches, args.repeats)
    merged_s, merged_preds = _time(merged, batches, args.repeats)
    agree = sum(a == b for a, b in zip(adapter_preds, merged_preds)) / len(adapter_preds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(texts)} reviews, "
          f"batch {args.batch_size}, max length {adapter.max_length}, best of {args.repeats}")
    print(f"adapter model: {len(texts) / adapter_s:8.1f} reviews/s ({adapter_s:.2f} s)")
    print(f"merged model:  {len(texts) / merged_s:8.1f} reviews/s ({merged_s:.2f} s)")
    print(f"speed-up merged / adapter: {adapter_s / merged_s:.2f}x; prediction agreement {100 * agree:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
