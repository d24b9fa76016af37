"""Accuracy against training minutes: the measured frontier of finished runs, the TF-IDF baseline as lines.

    python benchmarks/frontier.py runs/quick/lora runs/quick/full runs/quick/best --out runs/frontier

Reads each run's ``metrics.json`` (test accuracy, ``timing.train_seconds``, method, training reviews, and the
``baseline`` section that ``eval.baseline: tfidf`` writes) and, for runs trained without a test split (tune
trials), the test report of ``peftsent eval RUN`` (``RUN/eval/*-test.json``) when there is one. Writes
``frontier.png`` (x: training minutes, y: test accuracy; one point per run, one dashed line per baseline
training-set size) and ``frontier.md`` (the same numbers as a table), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _test_accuracy(run: Path, metrics: dict) -> float | None:
    if "test" in metrics:
        return metrics["test"]["accuracy"]
    reports = sorted((run / "eval").glob("*test.json")) if (run / "eval").is_dir() else []
    own = metrics.get("long_reviews", "truncate")  # the report scored as the run scores (eval's default)
    for report in reports:
        found = json.loads(report.read_text())
        if found.get("long_reviews", "truncate").split(" ")[0] == own:
            return found["accuracy"]
    return None


def collect(runs: list[str]) -> tuple[list[dict], dict]:
    """(rows, baselines): one row per run with a test accuracy; baselines {training reviews: test accuracy}."""
    rows, baselines = [], {}
    for name in runs:
        run = Path(name)
        metrics = json.loads((run / "metrics.json").read_text())
        accuracy = _test_accuracy(run, metrics)
        if accuracy is None:
            print(f"frontier.py: {run}: no test accuracy (metrics.json or eval/*test.json); skipped", file=sys.stderr)
            continue
        import yaml

        recipe = yaml.safe_load((run / "recipe.yaml").read_text()) if (run / "recipe.yaml").is_file() else {}
        rows.append({
            "run": str(run), "method": metrics["method"], "train_reviews": metrics["sizes"]["train"],
            "epochs": (recipe.get("train") or {}).get("num_train_epochs"),
            "truncation": (metrics.get("truncation") or "head") + (" + windows" if metrics.get("long_reviews") == "window" else ""),
            "minutes": metrics["timing"]["train_seconds"] / 60,
            "test_accuracy": accuracy,
        })
        baseline = metrics.get("baseline")
        if baseline and "test" in baseline:
            baselines[baseline["train_reviews"]] = baseline["test"]["accuracy"]
    return rows, baselines


def table(rows: list[dict], baselines: dict) -> str:
    lines = ["| run | method | training reviews | epochs | truncation (+ window scoring) | training minutes | test accuracy |",
             "|---|---|---:|---:|---|---:|---:|"]
    for row in sorted(rows, key=lambda r: r["minutes"]):
        lines.append(f"| {row['run']} | {row['method']} | {row['train_reviews']:,} | {row['epochs']} | "
                     f"{row['truncation']} | {row['minutes']:.1f} | {row['test_accuracy']:.4f} |")
    for reviews, accuracy in sorted(baselines.items()):
        lines.append(f"| TF-IDF + logistic regression | baseline | {reviews:,} | | | < 1 | {accuracy:.4f} |")
    return "\n".join(lines)


def plot(rows: list[dict], baselines: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        ax.scatter([r["minutes"] for r in mine], [r["test_accuracy"] for r in mine], label=method, zorder=3)
        for r in mine:
            ax.annotate(f"{r['train_reviews']:,} x{r['epochs']}, {r['truncation']}", (r["minutes"], r["test_accuracy"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    for reviews, accuracy in sorted(baselines.items()):
        ax.axhline(accuracy, linestyle="--", linewidth=1, color="gray")
        ax.text(0.01, accuracy, f" TF-IDF + LR, {reviews:,} reviews: {accuracy:.4f}", fontsize=8, color="gray",
                va="bottom", transform=ax.get_yaxis_transform())
    ax.set_xlim(0, max(r["minutes"] for r in rows) * 1.45)  # room for the rightmost point's label
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("test accuracy (imdb-offline)")
    ax.set_title("Accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", default="runs/frontier", help="directory for frontier.png and frontier.md")
    args = parser.parse_args(argv)
    rows, baselines = collect(args.runs)
    if not rows:
        print("frontier.py: no run with a test accuracy", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(rows, baselines)
    (out / "frontier.md").write_text(text + "\n")
    plot(rows, baselines, out / "frontier.png")
    print(text)
    print(f"\nwrote {out / 'frontier.png'} and {out / 'frontier.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
