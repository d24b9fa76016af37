"""Training and evaluation throughput: the seed-style path against peftsent's own, side by side.

    python benchmarks/throughput.py --quick          # < 3 minutes on 2 idle CPU cores
    python benchmarks/throughput.py                  # more steps and reviews, 3 rounds
    python benchmarks/throughput.py --levers         # also each lever on its own (fast path, one change at a time)
    python benchmarks/throughput.py --quick --set method.lora_dropout=0   # a recipe override, fast path only
    python benchmarks/throughput.py --profile        # torch.profiler top ops of the fast training step

Both paths run in ONE process, interleaved (seed, fast, seed, fast, ...), on the same model
(the recipe's, by default the embedded all-MiniLM-L6-v2), the same reviews, the same LoRA
configuration (the recipe's: r=16 on every linear layer, classifier + pooler trained, 256 tokens) and the same
number of optimizer steps (batch 16):

- seed style (a minimal hand-written reference of the project peftsent grew from): plain
  ``Trainer`` defaults, every review padded to 256 tokens, float32, random batches,
  ``lora_dropout`` 0.1, evaluation with ``Trainer.predict`` in float32 on the unmerged
  adapter at the default batch of 8;
- peftsent: its real code. ``peftsent.data.load_splits`` / ``tokenize_splits`` (cached),
  ``peftsent.modeling.build_model`` from the recipe, ``peftsent.training_args.make_training_args``
  (bf16 autocast where native, length-grouped batches), the same ``Trainer`` step as
  ``peftsent.train``, and ``peftsent.inference.predict_checked`` (adapter merged in memory,
  weights stored in bf16 where native, length-sorted batches of the recipe's
  ``per_device_eval_batch_size``, 32 by default) for evaluation. Each round also evaluates the
  same model under bf16 autocast over float32 weights (peftsent's evaluation before bf16
  storage), before or after it in alternate rounds.

Training speed is steady state: the first optimizer step (warm-up, kernel selection) is not
timed. MFU = model FLOPs of the real (unpadded) tokens per second over the machine's measured
bf16 ``torch.matmul`` peak, the highest of the measurements made before and after every round
(see ``peftsent.speed.training_flops_per_token`` for the formula and its sources). Exits 1 if the fast evaluation's predictions disagree with float32 on more than
``--max-disagreement`` of the reviews (at least one review allowed).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import tempfile
import time

RECIPE = "recipes/quick/lora.yaml"
BATCH = 16  # training reviews per optimizer step, both paths


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _Peak:
    """Peak RSS (MiB) while the block runs, sampled every 50 ms."""

    def __enter__(self):
        import threading

        self.start, self.peak, self._stop = _rss_mib(), _rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _step_timer():
    """A TrainerCallback timing optimizer steps 2..n (step 1 is warm-up)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def seconds(self) -> float:
            return self.marks[-1] - self.marks[0]

    return StepTimer()


# ---------------------------------------------------------------- seed style (baseline only)


def seed_data(splits, tokenizer, max_length):
    """Every review padded to ``max_length`` (the seed's ``padding="max_length"``), no length column."""

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length, padding="max_length")

    return {s: ds.map(encode, batched=True, remove_columns=["text"]).rename_column("label", "labels")
            for s, ds in splits.items()}


def seed_model(location, recipe):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=2)
    method = recipe.method
    config = LoraConfig(task_type="SEQ_CLS", r=method["r"], lora_alpha=method["lora_alpha"], lora_dropout=0.1,
                        target_modules=list(method["target_modules"]), modules_to_save=list(method["modules_to_save"]))
    return get_peft_model(model, config)


def seed_train(location, recipe, data, steps, scratch):
    from transformers import Trainer, TrainingArguments

    model = seed_model(location, recipe)
    args = TrainingArguments(output_dir=scratch, per_device_train_batch_size=BATCH, max_steps=steps,
                             learning_rate=recipe.train["learning_rate"], use_cpu=True, report_to="none",
                             save_strategy="no", eval_strategy="no", logging_strategy="no",
                             disable_tqdm=True, seed=42)
    timer = _step_timer()
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], callbacks=[timer])
    with _Peak() as peak:
        trainer.train()
    return model, (steps - 1) * BATCH / timer.seconds(), peak


def seed_eval(model, data, scratch):
    import numpy as np
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=scratch, use_cpu=True, report_to="none", disable_tqdm=True)  # batch 8, fp32
    with _Peak() as peak:
        started = time.perf_counter()
        output = Trainer(model=model, args=args).predict(data["validation"])
        seconds = time.perf_counter() - started
    return np.asarray(output.predictions), len(data["validation"]) / seconds, peak


# ---------------------------------------------------------------- peftsent's own path


def fast_recipe(recipe_path, steps, n_eval, overrides=()):
    from peftsent.recipe import load_recipe

    return load_recipe(recipe_path, [
        f"data.max_train_samples={steps * BATCH}", f"data.max_eval_samples={n_eval}",
        f"train.max_steps={steps}", f"train.per_device_train_batch_size={BATCH}",
        "train.eval_strategy='no'", "train.save_strategy='no'", "train.load_best_model_at_end=false",
        "train.report_to=none", "train.logging_strategy='no'", "train.disable_tqdm=true", *overrides,
    ])


def fast_train(recipe, splits, scratch, compile_model=False, frozen_in_autocast_dtype=True, pad_to_multiple_of=None):
    from transformers import Trainer

    from peftsent.data import tokenize_splits
    from peftsent.modeling import build_model
    from peftsent.speed import PAD_TO_MULTIPLE_OF, BatchPadding, frozen_weights_in
    from peftsent.tokenization import section_policy
    from peftsent.training_args import make_training_args

    import torch

    torch.manual_seed(42)
    model, tokenizer, report = build_model(recipe)
    started = time.perf_counter()
    policy = section_policy(model, recipe.model)
    tokenized = tokenize_splits(splits, tokenizer, policy)
    tokenize_seconds = time.perf_counter() - started
    timer = _step_timer()
    extra = {"torch_compile": True} if compile_model else {}
    args = make_training_args(recipe, output_dir=scratch, **extra)
    trainer = Trainer(model=model, args=args,
                      train_dataset=tokenized["train"], processing_class=tokenizer, callbacks=[timer],
                      data_collator=BatchPadding(tokenizer, policy.max_length, pad_to_multiple_of or PAD_TO_MULTIPLE_OF))
    stored = "bfloat16" if args.bf16 and frozen_in_autocast_dtype else "float32"
    with _Peak() as peak, frozen_weights_in(model, stored):  # as peftsent.train
        trainer.train()
    steps = recipe.train["max_steps"]
    return model, tokenizer, tokenized, report, (steps - 1) * BATCH / timer.seconds(), peak, tokenize_seconds


def _cut_policy(model, recipe):
    """The recipe's token policy, scoring one cut per review (the benchmark times the cut, not windows)."""
    from peftsent.tokenization import section_policy

    return section_policy(model, recipe.model).for_scoring("truncate")


def fast_eval(model, tokenizer, tokenized, recipe, dtype="auto", merge=True, autocast=False):
    """peftsent's evaluation (``predict_checked``); ``autocast``: instead, float32 weights under bf16 autocast
    (the default before bf16-stored weights, kept as a side-by-side arm)."""
    import contextlib

    import torch

    from peftsent.inference import predict_checked

    if autocast:
        dtype, context = "float32", torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        context = contextlib.nullcontext()
    with _Peak() as peak, context:
        started = time.perf_counter()
        logits, labels, _, report = predict_checked(model, tokenizer, tokenized["validation"],
                                                    recipe.train["per_device_eval_batch_size"], dtype, merge,
                                                    probe=0, progress=False, policy=_cut_policy(model, recipe))
        seconds = time.perf_counter() - started
    return logits, labels, len(labels) / seconds, peak, report


def reference_logits(model, tokenizer, tokenized, recipe):
    """float32, unmerged: the reference of the agreement check (not timed)."""
    from peftsent.inference import predict_logits

    logits, _, _ = predict_logits(model, tokenizer, tokenized["validation"],
                                  recipe.train["per_device_eval_batch_size"], progress=False,
                                  max_length=_cut_policy(model, recipe).max_length)
    return logits


# ---------------------------------------------------------------- reporting


def model_shape_flops(config, rows: int, seconds: float = 1.0) -> float:
    """FLOP/s of bf16 ``torch.matmul`` on the encoder's own linear-layer shapes: (rows, d) x (d, d) (the
    attention projections), (rows, d) x (d, d_ff) and (rows, d_ff) x (d_ff, d) (the feed-forward), each in
    the proportion a layer runs them (4 : 1 : 1), best of a ``seconds`` window. ``rows``: tokens per batch.
    What a step's matmuls could reach at best on this machine, next to the square-matrix peak."""
    import torch

    from peftsent.speed import encoder_sizes

    sizes = encoder_sizes(config)
    d, d_ff = sizes["d"], sizes["d_ff"]
    shapes = [(d, d)] * 4 + [(d, d_ff), (d_ff, d)]
    inputs = {k: torch.randn(rows, k, dtype=torch.bfloat16) for k in (d, d_ff)}
    weights = [torch.randn(k, n, dtype=torch.bfloat16) for k, n in shapes]
    flops = sum(2 * rows * k * n for k, n in shapes)
    for (k, _), w in zip(shapes, weights):  # warm-up
        torch.matmul(inputs[k], w)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for (k, _), w in zip(shapes, weights):
            torch.matmul(inputs[k], w)
        best = max(best, flops / (time.perf_counter() - started))
    return best


def _flops_per_review(config, lengths, full, adapter_params):
    from peftsent.speed import training_flops_per_token

    return statistics.fmean(training_flops_per_token(config, t, full, adapter_params) * t for t in lengths)


def _profile(recipe, splits, scratch):
    """Top ops (self CPU time) of 3 fast-path training steps."""
    from torch.profiler import ProfilerActivity, profile

    from peftsent.data import tokenize_splits
    from peftsent.modeling import build_model
    from peftsent.speed import BatchPadding, frozen_weights_in
    from peftsent.tokenization import section_policy
    from peftsent.training_args import make_training_args
    from transformers import Trainer

    model, tokenizer, _ = build_model(recipe)
    policy = section_policy(model, recipe.model)
    tokenized = tokenize_splits(splits, tokenizer, policy)
    args = make_training_args(recipe, output_dir=scratch, max_steps=3)
    trainer = Trainer(model=model, args=args,
                      train_dataset=tokenized["train"], data_collator=BatchPadding(tokenizer, policy.max_length),
                      processing_class=tokenizer)
    with profile(activities=[ProfilerActivity.CPU]) as prof, frozen_weights_in(model, "bfloat16" if args.bf16 else "float32"):
        trainer.train()
    print("\ntorch.profiler, fast path, 3 training steps, top ops by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=RECIPE, help=f"LoRA recipe of the fast path (default: {RECIPE})")
    parser.add_argument("--quick", action="store_true", help="5 steps, 96 reviews, 2 rounds (< 3 min on 2 idle cores)")
    parser.add_argument("--steps", type=int, help="optimizer steps per training (default 20; quick 5)")
    parser.add_argument("--eval-reviews", type=int, help="validation reviews evaluated (default 512; quick 96)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 2)")
    parser.add_argument("--max-disagreement", type=float, default=0.01,
                        help="largest share of reviews whose fast prediction may differ from float32 (default 0.01)")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value",
                        help="recipe overrides for the fast path only, e.g. --set method.lora_dropout=0")
    parser.add_argument("--levers", action="store_true", help="also time the fast path with one lever changed at a time")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of the fast training step")
    args = parser.parse_args()
    steps = args.steps or (5 if args.quick else 20)
    n_eval = args.eval_reviews or (96 if args.quick else 512)
    rounds = args.rounds or (2 if args.quick else 3)
    if steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")

    import numpy as np
    import torch

    from peftsent.data import load_splits
    from peftsent.registry import resolve_model
    from peftsent.speed import agreement, encoder_sizes, matmul_peak_flops, mfu

    began = time.perf_counter()
    rss_start = _rss_mib()
    recipe = fast_recipe(args.recipe, steps, n_eval, args.set)
    location = resolve_model(recipe.model.name).location
    with _Peak() as load_peak:
        splits = load_splits(recipe.data, splits=["train", "validation"])
    print(f"peftsent throughput benchmark: {recipe.model.name}, {recipe.method_name} r={recipe.method['r']}, "
          f"{recipe.model.max_length} tokens, {steps} optimizer steps x batch {BATCH}, {n_eval} validation reviews, "
          f"{rounds} interleaved rounds; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)

    bf16_peaks = [matmul_peak_flops("bfloat16")]
    peak_fp32 = matmul_peak_flops("float32")
    print(f"matmul peak (torch.matmul 2048x2048, best of 1 s): bf16 {bf16_peaks[0] / 1e9:.0f} GFLOP/s, "
          f"fp32 {peak_fp32 / 1e9:.0f} GFLOP/s", flush=True)

    from peftsent.modeling import load_tokenizer

    seed_tokenized = seed_data(splits, load_tokenizer(location), recipe.model.max_length)
    results = {k: [] for k in ("seed_train", "fast_train", "seed_eval", "fast_eval", "autocast_eval")}
    peaks = {k: 0.0 for k in results}
    with tempfile.TemporaryDirectory(prefix="peftsent-bench-") as scratch:
        for round_ in range(rounds):
            seed, seed_speed, peak = seed_train(location, recipe, seed_tokenized, steps, scratch)
            results["seed_train"].append(seed_speed)
            peaks["seed_train"] = max(peaks["seed_train"], peak.peak)
            fast, tokenizer, tokenized, report, fast_speed, peak, tok_s = fast_train(recipe, splits, scratch)
            results["fast_train"].append(fast_speed)
            peaks["fast_train"] = max(peaks["fast_train"], peak.peak)
            seed_logits, seed_eval_speed, peak = seed_eval(seed, seed_tokenized, scratch)
            results["seed_eval"].append(seed_eval_speed)
            peaks["seed_eval"] = max(peaks["seed_eval"], peak.peak)
            for arm in ("fast", "autocast")[::1 if round_ % 2 == 0 else -1]:  # alternate which runs first
                if arm == "fast":
                    fast_logits, labels, fast_eval_speed, peak, fast_report = fast_eval(fast, tokenizer, tokenized,
                                                                                        recipe)
                    results["fast_eval"].append(fast_eval_speed)
                    peaks["fast_eval"] = max(peaks["fast_eval"], peak.peak)
                else:
                    autocast_logits, _, autocast_speed, peak, _ = fast_eval(fast, tokenizer, tokenized, recipe,
                                                                            autocast=True)
                    results["autocast_eval"].append(autocast_speed)
                    peaks["autocast_eval"] = max(peaks["autocast_eval"], peak.peak)
            bf16_peaks.append(matmul_peak_flops("bfloat16"))  # the load changes: measured again every round
            print(f"round {round_ + 1}: train seed {seed_speed:.2f} / fast {fast_speed:.2f} samples/s; "
                  f"eval seed {seed_eval_speed:.1f} / fast {fast_eval_speed:.1f} / autocast {autocast_speed:.1f} "
                  f"samples/s "
                  f"(tokenizing {tok_s:.2f} s)", flush=True)
            del seed
        reference = reference_logits(fast, tokenizer, tokenized, recipe)
        if args.profile:
            _profile(recipe, splits, scratch)
        lever_rows = _levers(recipe, splits, scratch, args.recipe, steps, n_eval) if args.levers else []

    med = {k: statistics.median(v) for k, v in results.items()}
    # the machine's peak is the best it showed: on a shared host the same matmul ran at 600-2,100 GFLOP/s in
    # one run (a neighbour on the same physical cores), and a median would flatter MFU in the slow spells
    peak_bf16 = max(bf16_peaks)
    lengths = np.asarray(tokenized["train"]["length"])
    config = fast.get_base_model().config if hasattr(fast, "get_base_model") else fast.config
    per_review = _flops_per_review(config, lengths, full=False, adapter_params=report.adapter)
    fast_mfu = mfu(med["fast_train"], per_review, peak_bf16)
    seed_mfu = mfu(med["seed_train"], per_review, peak_bf16)
    check = agreement(fast_logits, reference)
    accuracy = lambda logits: float((np.asarray(logits).argmax(-1) == labels).mean())  # noqa: E731
    allowed = max(1, math.floor(args.max_disagreement * check["n"]))
    flips = round((1 - check["prediction_agreement"]) * check["n"])

    print("\n| path | train samples/s | eval samples/s | peak RSS train MiB | peak RSS eval MiB | train MFU (bf16 peak) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| seed style: pad to 256, fp32, random batches, dropout 0.1, fp32 unmerged eval (batch 8) | "
          f"{med['seed_train']:.2f} | {med['seed_eval']:.1f} | {peaks['seed_train']:.0f} | {peaks['seed_eval']:.0f} | "
          f"{100 * seed_mfu:.1f} % |")
    print(f"| peftsent: {args.recipe} {' '.join(args.set)} (lora_dropout {recipe.method['lora_dropout']}), eval {fast_report['dtype']} "
          f"{'merged' if fast_report['merged'] else 'unmerged'} | {med['fast_train']:.2f} | {med['fast_eval']:.1f} | "
          f"{peaks['fast_train']:.0f} | {peaks['fast_eval']:.0f} | {100 * fast_mfu:.1f} % |")
    print(f"| ratio | {med['fast_train'] / med['seed_train']:.2f}x | {med['fast_eval'] / med['seed_eval']:.2f}x | | | |")
    per_round = [f / s for f, s in zip(results["fast_eval"], results["seed_eval"])]
    print(f"\neval ratio per round: {', '.join(f'{r:.2f}x' for r in per_round)}; bf16 autocast over float32 weights "
          f"(the evaluation before bf16 storage; run before or after it in alternate rounds), same rounds: "
          f"{med['autocast_eval']:.1f} samples/s "
          f"({med['autocast_eval'] / med['seed_eval']:.2f}x the seed style; bf16 storage "
          f"{med['fast_eval'] / med['autocast_eval']:.2f}x autocast), agreement with float32 "
          f"{agreement(autocast_logits, reference)['prediction_agreement']:.4f}")
    print(f"median of {rounds} rounds; real tokens per training review {lengths.mean():.0f} (mean; seed pads to "
          f"{recipe.model.max_length}); model FLOPs per training review {per_review / 1e9:.2f} GFLOP "
          f"(4N + 12LTd + 6 x adapter, peftsent.speed.training_flops_per_token)")
    print(f"bf16 matmul peak per round (GFLOP/s): {', '.join(f'{p / 1e9:.0f}' for p in bf16_peaks)} (the highest used)")
    print(f"MFU of the fast path: {100 * fast_mfu:.1f} % of the highest bf16 matmul peak "
          f"({100 * mfu(med['fast_train'], per_review, statistics.median(bf16_peaks)):.1f} % of the median peak), "
          f"{100 * mfu(med['fast_train'], per_review, peak_fp32):.1f} % of the fp32 peak")
    rows, sizes = int(BATCH * lengths.mean()), encoder_sizes(config)
    shape_peak = model_shape_flops(config, rows)
    print(f"bf16 matmul on the encoder's own linear shapes ({rows} tokens per batch x "
          f"{sizes['d']}/{sizes['d_ff']}): {shape_peak / 1e9:.0f} GFLOP/s, "
          f"{100 * shape_peak / peak_bf16:.0f} % of the highest square-matrix peak; the fast path's model FLOP/s "
          f"are {100 * mfu(med['fast_train'], per_review, shape_peak):.1f} % of it")
    print(f"memory: RSS {rss_start:.0f} MiB after imports, peak {load_peak.peak:.0f} MiB while reading the data "
          f"(load_splits), {_rss_mib():.0f} MiB at the end")
    print(f"validation accuracy after {steps} steps (n={len(labels)}): seed {accuracy(seed_logits):.3f}, "
          f"fast {accuracy(fast_logits):.3f}, fast model in float32 {accuracy(reference):.3f}")
    print(f"agreement of the fast evaluation with float32 unmerged: {check['prediction_agreement']:.4f} "
          f"({flips} of {check['n']} predictions differ; allowed {allowed}), max |dlogit| {check['max_abs_dlogit']:.3g}, "
          f"max |dp| {check['max_abs_dprob']:.3g}")
    for row in lever_rows:
        print(row)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"load average {os.getloadavg()[0]:.1f} at the end; benchmark wall time {time.perf_counter() - began:.0f} s, "
          f"CPU time {cpu.ru_utime + cpu.ru_stime:.0f} s (on {torch.get_num_threads()} idle cores the wall time "
          f"would be about {(cpu.ru_utime + cpu.ru_stime) / torch.get_num_threads():.0f} s)")
    if flips > allowed:
        print(f"FAIL: the fast evaluation disagrees with float32 on {flips} of {check['n']} reviews "
              f"(more than {args.max_disagreement:.0%})", file=sys.stderr)
        return 1
    return 0


def _levers(recipe, splits, scratch, recipe_path, steps, n_eval) -> list[str]:
    """Fast path with one lever changed at a time (training: dropout, sampler, precision, padding; eval: merge,
    dtype)."""
    rows = ["\nlevers (fast path, one change at a time; samples/s, one run each):"]
    variants = {
        "as shipped": [],
        "encoder dropout 0.1 (model.dropout: null)": ["model.dropout=null"],
        "lora_dropout 0.1": ["method.lora_dropout=0.1"],
        "lora_dropout 0": ["method.lora_dropout=0"],
        "random batches (no length grouping)": ["train.train_sampling_strategy=random"],
        "float32 training": ["train.bf16=false"],
    }
    fast = tokenizer = tokenized = None
    for name, overrides in variants.items():
        variant = fast_recipe(recipe_path, steps, n_eval, overrides)
        fast, tokenizer, tokenized, _, speed, peak, tok_s = fast_train(variant, splits, scratch)
        rows.append(f"  train, {name}: {speed:.2f} samples/s, peak RSS {peak.peak:.0f} MiB, tokenizing {tok_s:.2f} s")
    variant = fast_recipe(recipe_path, steps, n_eval, [])
    speed, peak = fast_train(variant, splits, scratch, frozen_in_autocast_dtype=False)[4:6]
    rows.append(f"  train, frozen weights kept float32 (autocast casts them every step): {speed:.2f} samples/s, "
                f"peak RSS {peak.peak:.0f} MiB")
    speed, peak = fast_train(variant, splits, scratch, pad_to_multiple_of=1)[4:6]
    rows.append(f"  train, batches padded to their longest row (no multiple of 32): {speed:.2f} samples/s, "
                f"peak RSS {peak.peak:.0f} MiB")
    for name, dtype, merge in (("float32 unmerged", "float32", False), ("float32 merged", "float32", True),
                               ("bf16 weights unmerged", "bfloat16", False), ("bf16 weights merged", "bfloat16", True)):
        _, _, speed, peak, _ = fast_eval(fast, tokenizer, tokenized, recipe, dtype, merge)
        rows.append(f"  eval, {name}: {speed:.1f} samples/s, peak RSS {peak.peak:.0f} MiB")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
