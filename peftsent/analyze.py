"""``python -m peftsent.analyze TARGET``: what a model gets wrong, and where.

Reads the per-review predictions an evaluation wrote (see :mod:`peftsent.predictions`); only when
none exist for the target, dataset and split is the model scored once, through ``peftsent.eval``.
Writes ``analysis.md`` and PNG plots (confusion matrix, reliability diagram, accuracy by length,
slices) and prints a summary. Every number comes from :mod:`peftsent.metrics`; the slice rules are
in :mod:`peftsent.slices`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftsent import eval as evaluation
from peftsent.calibration import (
    before_after,
    fit_temperature,
    read_temperature,
    scale,
    write_calibration,
)
from peftsent.cli import add_data_arguments, check_out_dir, make_parser, positive_int, run_cli
from peftsent.data import SPLITS
from peftsent.errors import ModelError, PeftsentError, RunDirError
from peftsent.metrics import (
    classification_metrics,
    confusion_table,
    format_table,
    mcnemar_p,
    per_class_table,
    reliability_bins,
    softmax,
)
from peftsent.predictions import (
    data_stem,
    logits_array,
    predictions_name,
    read_predictions,
)
from peftsent.recipe import DATA_OPTIONS, RECIPE_SUFFIXES, data_section
from peftsent.rundir import EVAL_DIR, Run, is_finished_run
from peftsent.slices import MIXED_MIN_SHARE, SLICES, slice_flags

EPILOG = """examples:
  python -m peftsent.analyze runs/quick/lora
  python -m peftsent.analyze runs/quick/lora --calibrate
  python -m peftsent.analyze runs/quick/lora --data rotten_tomatoes-offline
  python -m peftsent.analyze runs/quick/lora --against runs/quick/full
  python -m peftsent.analyze runs/quick/lora/eval/predictions-imdb-offline-test.jsonl --slice contrast

TARGET is a run directory, anything peftsent.eval takes, or a predictions-*.jsonl file.
Output (default <run>/analysis/<data>-<split>[-vs-OTHER]/): analysis.md, confusion.png,
reliability.png, length.png, slices.png.
"""

#: token-count bucket upper edges (tokens before truncation, special tokens included)
TOKEN_BUCKETS = (128, 256, 512, 1024)
EXCERPT_CHARS = 300


@dataclass
class Scored:
    """One target's predictions on one split, with the temperature that applies to them."""

    name: str
    """how the target is shown (its path)"""
    frame: object
    """pandas.DataFrame of a predictions file (peftsent.predictions.COLUMNS)"""
    source: Path
    """the predictions file read"""
    temperature: float | None

    @property
    def gold(self) -> np.ndarray:
        return self.frame["gold"].to_numpy(dtype=int)

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names of the logits' columns: the keys of ``probabilities`` (negative/positive for files
        written before it was kept)."""
        if "probabilities" in self.frame.columns:
            first = self.frame["probabilities"].iloc[0]
            if isinstance(first, dict):
                return tuple(first)
        return ("negative", "positive")

    def logits(self, calibrated: bool = True) -> np.ndarray:
        """(n, num_labels): raw logits, divided by the temperature when ``calibrated`` and one applies."""
        return scale(logits_array(self.frame), self.temperature if calibrated else None)

    def probs(self) -> np.ndarray:
        return softmax(self.logits())

    @property
    def correct(self) -> np.ndarray:
        return self.probs().argmax(-1) == self.gold


# ---------------------------------------------------------------- finding predictions


@dataclass
class _Target:
    path: Path
    run: object  # peftsent.rundir.Run or None
    prefix: str  # "" for a run itself, "<dir name>-" for merged/ or adapter/ inside a run
    own_temperature: bool  # eval applies the run's calibration.json to this target


def _target(target: str) -> _Target:
    path = Path(target).expanduser()
    if is_finished_run(path):
        return _Target(path, Run(path), "", True)
    parent = path.resolve().parent
    if path.is_dir() and is_finished_run(parent):
        return _Target(path, Run(parent), f"{path.resolve().name}-", (path / "adapter_config.json").is_file())
    return _Target(path, None, "", False)


def _data_name(where: _Target, data: str | None) -> str:
    if data is not None:
        return data_section(data).name if Path(data).suffix.lower() in RECIPE_SUFFIXES else data
    if where.run is None:
        raise PeftsentError(f"{where.path} carries no recipe: name the dataset with --data (e.g. --data imdb-offline)")
    return where.run.recipe().data.name


def _candidates(where: _Target, stem: str, out: Path | None) -> list[Path]:
    name = predictions_name(f"{where.prefix}{stem}")
    found = []
    if where.run is not None:
        found.append(where.run.path / EVAL_DIR / name)
        if where.prefix == "":
            found.append(where.run.path / name)  # written at the end of training
    if out is not None:
        found.append(out / name)
    return found


def load_scored(target: str, split: str, data: str | None, out: Path | None = None, quiet: bool = False,
                data_options: dict | None = None) -> Scored:
    """The predictions of ``target`` on ``data``'s ``split``: read from the newest predictions file, or
    made once with :func:`peftsent.eval.evaluate` when there is none (``data``: a dataset name, local file or
    recipe path; ``data_options``: eval's ``encoding``, ``label_map``, ``labels``, ``text_column``,
    ``label_column``). Raises PeftsentError."""
    path = Path(target)
    if path.is_file() and path.name.endswith(".jsonl"):
        frame = read_predictions(path)
        temperature = next((float(t) for t in frame["temperature"] if t == t and t is not None), None)
        return Scored(str(path), frame, path, temperature)
    where = _target(target)
    name = _data_name(where, data)
    stem = f"{data_stem(name)}-{split}"
    candidates = _candidates(where, stem, out)
    existing = [p for p in candidates if p.is_file()]
    if existing:
        source = max(existing, key=lambda p: p.stat().st_mtime)
    else:
        source = _score_once(target, where, data, split, out, candidates, quiet, data_options or {})
    frame = read_predictions(source)
    temperature = read_temperature(where.run.path) if where.own_temperature else None
    return Scored(str(target), frame, source, temperature)


def _score_once(target, where: _Target, data, split, out, candidates, quiet, data_options: dict) -> Path:
    if not quiet:
        print(f"peftsent.analyze: no predictions of {target} on {data or _data_name(where, data)} ({split}); "
              f"scoring it once with peftsent.eval", file=sys.stderr)
    try:
        result = evaluation.evaluate(target, data, split, out=None if where.run is not None else str(out),
                                     **data_options)
    except (ModelError, RunDirError) as err:
        looked = ", ".join(str(p) for p in candidates) or "(none)"
        raise PeftsentError(f"no predictions of {target} on {data} ({split}) (looked for {looked}), and the target "
                            f"cannot be scored to make them: {err}") from None
    return Path(result["predictions"])


def _check_same_reviews(a: Scored, b: Scored) -> None:
    if len(a.frame) != len(b.frame) or list(a.frame["text"]) != list(b.frame["text"]):
        raise PeftsentError(f"--against: {a.source} ({len(a.frame)} reviews) and {b.source} ({len(b.frame)} reviews) "
                            f"do not hold the same reviews in the same order; compare predictions of one dataset "
                            f"split with the same subset")


# ---------------------------------------------------------------- numbers


def _accuracy(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if len(correct) else None


def length_groups(frame) -> list[tuple[str, np.ndarray]]:
    """(label, mask) per token-count bucket (TOKEN_BUCKETS) and for truncated / not truncated reviews."""
    tokens = frame["n_tokens"].to_numpy()
    groups, lower = [], 0
    for upper in (*TOKEN_BUCKETS, None):
        mask = (tokens > lower) & (tokens <= upper) if upper else tokens > lower
        groups.append((f"{lower + 1}-{upper} tokens" if upper else f"> {lower} tokens", mask))
        lower = upper
    truncated = frame["truncated"].to_numpy(dtype=bool)
    groups += [("truncated", truncated), ("not truncated", ~truncated)]
    return [(label, mask) for label, mask in groups if mask.any()]


def slice_table(flags: dict[str, np.ndarray], correct: np.ndarray) -> list[dict]:
    """Per slice: size, share of all errors, accuracy in the slice and on the rest of the reviews."""
    errors = max(int((~correct).sum()), 1)
    rows = []
    for name, mask in flags.items():
        rows.append({"slice": name, "size": int(mask.sum()), "share_of_reviews": float(mask.mean()),
                     "share_of_errors": float((~correct[mask]).sum() / errors) if (~correct).any() else 0.0,
                     "accuracy": _accuracy(correct[mask]), "rest_accuracy": _accuracy(correct[~mask])})
    return rows


def extremes(scored: Scored, top: int) -> dict[str, list[dict]]:
    """The ``top`` most confidently wrong and the ``top`` least confident right reviews."""
    probs = scored.probs()
    confidence, correct = probs.max(-1), scored.correct
    wrong = np.flatnonzero(~correct)[np.argsort(-confidence[~correct], kind="stable")][:top]
    right = np.flatnonzero(correct)[np.argsort(confidence[correct], kind="stable")][:top]

    def rows(indices):
        frame = scored.frame
        names = scored.labels
        return [{"index": int(frame["index"].iloc[i]), "gold": int(frame["gold"].iloc[i]),
                 **({"p_positive": float(probs[i, 1])} if len(names) == 2 else
                    {"predicted": int(probs[i].argmax()), "p_predicted": float(probs[i].max())}),
                 "n_tokens": int(frame["n_tokens"].iloc[i]),
                 "excerpt": _excerpt(frame["text"].iloc[i])} for i in indices]

    return {"confidently_wrong": rows(wrong), "least_confident_right": rows(right)}


def _excerpt(text: str) -> str:
    text = " ".join(text.replace("<br />", " ").split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " ..."


def summarize(scored: Scored, flags: dict[str, np.ndarray], ece_bins: int, top: int) -> dict:
    """Every number of one target's analysis (metrics as served; uncalibrated ones beside)."""
    gold, correct = scored.gold, scored.correct
    raw_logits = scored.logits(calibrated=False)
    summary = {
        "labels": list(scored.labels),
        "metrics": classification_metrics(gold, scored.logits(), ece_bins, scored.labels),
        "temperature": scored.temperature,
        "reliability": reliability_bins(scored.probs(), gold, ece_bins),
        "lengths": [{"group": label, "size": int(mask.sum()), "accuracy": _accuracy(correct[mask])}
                    for label, mask in length_groups(scored.frame)],
        "slices": slice_table(flags, correct),
        **extremes(scored, top),
    }
    if scored.temperature is not None:
        summary["uncalibrated"] = classification_metrics(gold, raw_logits, ece_bins)
        summary["reliability_uncalibrated"] = reliability_bins(softmax(raw_logits), gold, ece_bins)
    return summary


def head_to_head(a: Scored, b: Scored, flags: dict[str, np.ndarray]) -> dict:
    """Where A is right and B wrong and the reverse, overall and per slice, with McNemar's exact test."""
    a_ok, b_ok = a.correct, b.correct
    a_wins, b_wins = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
    p = mcnemar_p(a_ok, b_ok)
    per_slice = {name: {"a_wins": int((a_ok & ~b_ok & m).sum()), "b_wins": int((~a_ok & b_ok & m).sum())}
                 for name, m in flags.items()}
    confident_b_wrong = np.flatnonzero(a_ok & ~b_ok)
    order = confident_b_wrong[np.argsort(-b.probs().max(-1)[confident_b_wrong], kind="stable")]
    return {"a_wins": a_wins, "b_wins": b_wins, "both_wrong": int((~a_ok & ~b_ok).sum()),
            "both_right": int((a_ok & b_ok).sum()), "mcnemar_p": float(p), "per_slice": per_slice,
            "a_wins_examples": [int(i) for i in order]}


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(results: dict[str, dict], path: Path) -> None:
    """Counts and row rates (true class) of each target's confusion matrix."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(results), 2, figsize=(8, 3.6 * len(results)), squeeze=False)
    for row, (name, summary) in enumerate(results.items()):
        names = summary.get("labels") or ["negative", "positive"]
        k = len(names)
        counts = np.asarray(summary["metrics"]["confusion_matrix"], dtype=float)  # (k, k): rows true
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        for col, (values, title, fmt) in enumerate(((counts, "counts", "{:.0f}"), (rates, "rate per true class", "{:.1%}"))):
            ax = axes[row, col]
            ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center",
                            color="white" if rates[i, j] > 0.6 else "black", fontsize=9 if k <= 3 else 7)
            ax.set_xticks(list(range(k)), names)
            ax.set_yticks(list(range(k)), names)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{_short(name)}: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(results: dict[str, dict], path: Path) -> None:
    """Accuracy against mean confidence per confidence bin; uncalibrated beside calibrated when a temperature applies."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for name, summary in results.items():
        curves = [("", summary["reliability"], summary["metrics"]["ece"])]
        if "reliability_uncalibrated" in summary:
            curves = [(" uncalibrated", summary["reliability_uncalibrated"], summary["uncalibrated"]["ece"]),
                      (f" T={summary['temperature']:.2f}", summary["reliability"], summary["metrics"]["ece"])]
        for suffix, bins, ece in curves:
            used = [b for b in bins if b["count"]]
            ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o-",
                    label=f"{_short(name)}{suffix} (ECE {ece:.3f})")
    ax.set_xlabel("confidence (max class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_title("reliability diagram")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(groups: list[str], series: dict[str, list], sizes: list[int], title: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) * len(series)), 4))
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        heights = [v if v is not None else 0 for v in values]
        ax.bar(x + k * width - 0.4 + width / 2, heights, width, label=label)
    ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(groups, sizes)], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lengths(results: dict[str, dict], path: Path) -> None:
    first = next(iter(results.values()))
    groups = [g["group"] for g in first["lengths"]]
    series = {_short(name): [g["accuracy"] for g in s["lengths"]] for name, s in results.items()}
    _bars(groups, series, [g["size"] for g in first["lengths"]], "accuracy by review length", path)


def plot_slices(results: dict[str, dict], path: Path) -> None:
    first = next(iter(results.values()))
    groups = [row["slice"] for row in first["slices"]]
    series = {}
    for name, summary in results.items():
        series[f"{_short(name)}: in slice"] = [row["accuracy"] for row in summary["slices"]]
        series[f"{_short(name)}: rest"] = [row["rest_accuracy"] for row in summary["slices"]]
    _bars(groups, series, [row["size"] for row in first["slices"]], "accuracy in each slice vs the rest", path)


def _short(name: str) -> str:
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


# ---------------------------------------------------------------- report


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown(results: dict[str, dict], data: str, split: str, calibration: dict | None, versus: dict | None) -> str:
    names = list(results)
    first = results[names[0]]
    lines = [f"# Error analysis: {' vs '.join(f'`{n}`' for n in names)}", "",
             f"Data: `{data}`, split `{split}`, {first['metrics']['count']} reviews. Metrics are as served "
             f"(a run's temperature applied); accuracy does not depend on the temperature.", ""]
    if data == "imdb-offline":
        lines += ["`imdb-offline`'s test split is held out of IMDb's train split, not the official IMDb test set.", ""]
    lines += ["## Metrics", "", format_table({_short(n): s["metrics"] for n, s in results.items()}), ""]
    lines += ["## Confusion matrix", "", "![confusion matrix](confusion.png)", ""]
    for name, summary in results.items():
        if "per_class" in summary["metrics"]:  # more than two classes: the N x N table and the per-class one
            lines += [f"`{_short(name)}` (rows true class, columns predicted; reviews):", "",
                      confusion_table(summary["metrics"]["confusion_matrix"], summary["labels"]), "",
                      per_class_table(summary["metrics"]), ""]
            continue
        (tn, fp), (fn, tp) = summary["metrics"]["confusion_matrix"]
        lines.append(f"- `{_short(name)}`: true negative predicted negative {tn}, predicted positive {fp} "
                     f"({_pct(fp / max(tn + fp, 1))}); true positive predicted negative {fn} "
                     f"({_pct(fn / max(fn + tp, 1))}), predicted positive {tp}")
    lines += ["", "## Calibration", "", "![reliability diagram](reliability.png)", ""]
    for name, summary in results.items():
        m = summary["metrics"]
        if summary["temperature"] is None:
            lines.append(f"- `{_short(name)}`: no temperature; ECE {m['ece']:.4f}, log-loss {m['log_loss']:.4f}")
        else:
            u = summary["uncalibrated"]
            lines.append(f"- `{_short(name)}`: temperature T = {summary['temperature']:.4f} (fitted on validation). "
                         f"On this split: ECE {u['ece']:.4f} -> {m['ece']:.4f}, log-loss {u['log_loss']:.4f} -> "
                         f"{m['log_loss']:.4f} (uncalibrated -> calibrated)")
    if calibration:
        v = calibration["validation"]
        lines.append(f"- fitted now (`--calibrate`) on {calibration['fitted_on']}: validation ECE "
                     f"{v['before']['ece']:.4f} -> {v['after']['ece']:.4f}, log-loss {v['before']['log_loss']:.4f} -> "
                     f"{v['after']['log_loss']:.4f}; written to calibration.json")
    lines += ["", "## Accuracy by review length", "",
              "Tokens of the whole review (special tokens included), before truncation.", "",
              "![accuracy by length](length.png)", "",
              "| group | reviews | " + " | ".join(f"accuracy `{_short(n)}`" for n in names) + " |",
              "|---|---:|" + "---:|" * len(names)]
    for i, group in enumerate(first["lengths"]):
        cells = " | ".join(_pct(results[n]["lengths"][i]["accuracy"]) for n in names)
        lines.append(f"| {group['group']} | {group['size']} | {cells} |")
    lines += ["", "## Slices", "", "![slices](slices.png)", "",
              "Rules (peftsent/slices.py, each tested on hand-written reviews it must and must not catch):",
              f"**mixed**: VADER pos and neg shares both >= {MIXED_MIN_SHARE}; **contrast**: but/however/although/... "
              f"between clauses of opposite VADER polarity; **negation**: a VADER negation word within 3 words before "
              f"a sentiment word; **sarcasm**: scare-quoted positive words, stock ironic phrases, sarcasm tags. "
              f"The sarcasm slice is a heuristic: its precision is unmeasured and sarcasm without such cues is missed.",
              "", "| slice | reviews | share of reviews | " +
              " | ".join(f"share of errors `{_short(n)}` | accuracy in slice | accuracy on the rest" for n in names) + " |",
              "|---|---:|---:|" + "---:|---:|---:|" * len(names)]
    for i, row in enumerate(first["slices"]):
        cells = " | ".join(f"{_pct(results[n]['slices'][i]['share_of_errors'])} | {_pct(results[n]['slices'][i]['accuracy'])} | "
                           f"{_pct(results[n]['slices'][i]['rest_accuracy'])}" for n in names)
        empty = " (empty: the rule caught no review)" if row["size"] == 0 else ""
        lines.append(f"| {row['slice']}{empty} | {row['size']} | {_pct(row['share_of_reviews'])} | {cells} |")
    if versus:
        a, b = (_short(n) for n in names)
        lines += ["", "## Head to head", "",
                  f"`{a}` right where `{b}` is wrong: {versus['a_wins']} reviews; the reverse: {versus['b_wins']}; "
                  f"both wrong: {versus['both_wrong']}; both right: {versus['both_right']}. McNemar exact test "
                  f"(two-sided) p = {versus['mcnemar_p']:.3g}.", "",
                  f"| slice | `{a}` wins | `{b}` wins |", "|---|---:|---:|"]
        lines += [f"| {s} | {c['a_wins']} | {c['b_wins']} |" for s, c in versus["per_slice"].items()]
    for name, summary in results.items():
        for key, title in (("confidently_wrong", "Most confidently wrong"), ("least_confident_right", "Least confident right")):
            labels = summary.get("labels") or ["negative", "positive"]
            if len(labels) == 2:
                lines += ["", f"## {title}: `{_short(name)}`", "", "| index | gold | p(positive) | tokens | excerpt |",
                          "|---:|---|---:|---:|---|"]
                lines += [f"| {r['index']} | {labels[r['gold']]} | {r['p_positive']:.3f} | {r['n_tokens']} | "
                          f"{r['excerpt'].replace('|', '/')} |" for r in summary[key]]
                continue
            lines += ["", f"## {title}: `{_short(name)}`", "", "| index | gold | predicted | p(predicted) | tokens "
                      "| excerpt |", "|---:|---|---|---:|---:|---|"]
            lines += [f"| {r['index']} | {labels[r['gold']]} | {labels[r['predicted']]} | {r['p_predicted']:.3f} | "
                      f"{r['n_tokens']} | {r['excerpt'].replace('|', '/')} |" for r in summary[key]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the verb


def _default_out(target: str, data: str | None, split: str, against: str | None) -> Path:
    path = Path(target)
    vs = f"-vs-{Path(against).resolve().name}" if against else ""
    if path.is_file():
        return path.parent / f"analysis-{path.stem.removeprefix('predictions-')}{vs}"
    where = _target(target)
    stem = f"{where.prefix}{data_stem(_data_name(where, data))}-{split}{vs}"
    if where.run is not None:
        return where.run.path / "analysis" / stem
    return Path("analysis") / f"{path.name}-{stem}"


def _calibrate(target: str, split_scored: Scored, ece_bins: int, out: Path) -> dict:
    """Fit the run's temperature on its validation predictions; write calibration.json; report before/after."""
    where = _target(target)
    if where.run is None or where.prefix:
        raise PeftsentError(f"--calibrate fits the temperature of a run directory, and {target} is not one "
                            f"(a merged model carries its run's temperature in its weights); give the run directory")
    validation = load_scored(target, "validation", None, out)
    logits, gold = logits_array(validation.frame), validation.gold
    temperature = fit_temperature(logits, gold)
    fitted_on = f"{where.run.recipe().data.name} validation ({len(gold)} reviews), by peftsent.analyze"
    report = {"validation": before_after(logits, gold, temperature, ece_bins),
              "analyzed": before_after(logits_array(split_scored.frame), split_scored.gold, temperature, ece_bins)}
    write_calibration(where.run.path, temperature, fitted_on, report)
    split_scored.temperature = temperature
    if (where.run.path / "merged").is_dir():
        print(f"peftsent.analyze: {where.run.path / 'merged'} holds the previous temperature; "
              f"re-merge with: python -m peftsent.merge {where.run.path} --force", file=sys.stderr)
    return {"temperature": temperature, "fitted_on": fitted_on, **report}


def analyze(target: str, split: str = "test", data: str | None = None, against: str | None = None,
            calibrate: bool = False, out: str | None = None, slices: list[str] | None = None, top: int = 5,
            ece_bins: int = 15, data_options: dict | None = None) -> dict:
    """Analyse ``target``'s predictions on ``split`` (and ``against``'s, side by side).

    ``data``: a dataset name, local file or recipe path (its data section); ``data_options``: the data keys of
    eval (``encoding``, ``label_map``, ``labels``, ``text_column``, ``label_column``) used when a target's
    predictions must be made (:func:`peftsent.eval.evaluate`).

    Returns {"summary": {target: numbers}, "head_to_head": ..., "calibration": ..., "out": Path}.
    Raises PeftsentError for an unknown split or slice, a target without predictions that cannot
    be scored, an explicitly requested slice that is empty, or two targets on different reviews;
    nothing is written then.
    """
    if split not in SPLITS:
        raise PeftsentError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    unknown = [s for s in slices or [] if s not in SLICES]
    if unknown:
        raise PeftsentError(f"unknown slice {', '.join(map(repr, unknown))}; expected any of {', '.join(SLICES)}")
    check_out_dir(out)
    out_dir = Path(out) if out else _default_out(target, data, split, against)
    scored = [load_scored(target, split, data, out_dir, data_options=data_options)]
    if against:
        scored.append(load_scored(against, split, data, out_dir, data_options=data_options))
        _check_same_reviews(*scored)
    calibration = _calibrate(target, scored[0], ece_bins, out_dir) if calibrate else None
    flags = slice_flags(scored[0].frame["text"], slices or SLICES)
    empty = [name for name, mask in flags.items() if not mask.any()]
    if slices and empty:
        raise PeftsentError(f"slice {', '.join(empty)} is empty: its rule caught none of the "
                            f"{len(scored[0].frame)} reviews of {scored[0].source}; nothing was written")
    results = {s.name: summarize(s, flags, ece_bins, top) for s in scored}
    versus = head_to_head(*scored, flags) if against else None
    where = _target(target)
    data_name = _data_name(where, data) if data else (where.run.recipe().data.name if where.run
                                                      else scored[0].source.stem)
    out_dir.mkdir(parents=True, exist_ok=True)  # everything is computed: only writing is left
    plot_confusion(results, out_dir / "confusion.png")
    plot_reliability(results, out_dir / "reliability.png")
    plot_lengths(results, out_dir / "length.png")
    plot_slices(results, out_dir / "slices.png")
    (out_dir / "analysis.md").write_text(markdown(results, data_name, split, calibration, versus))
    return {"summary": results, "head_to_head": versus, "calibration": calibration, "out": out_dir,
            "sources": [str(s.source) for s in scored]}


def print_summary(result: dict) -> None:
    for name, s in result["summary"].items():
        m = s["metrics"]
        print(f"{name}: {m['count']} reviews, accuracy {_pct(m['accuracy'])}, macro-F1 {m['macro_f1']:.4f}, "
              f"ECE {m['ece']:.4f}, log-loss {m['log_loss']:.4f}")
        if s["temperature"] is not None:
            u = s["uncalibrated"]
            print(f"  temperature {s['temperature']:.3f}: ECE {u['ece']:.4f} -> {m['ece']:.4f}, "
                  f"log-loss {u['log_loss']:.4f} -> {m['log_loss']:.4f}")
        trunc = {g["group"]: g for g in s["lengths"]}
        if "truncated" in trunc:
            print(f"  truncated reviews: {trunc['truncated']['size']}, accuracy {_pct(trunc['truncated']['accuracy'])} "
                  f"(not truncated {_pct(trunc.get('not truncated', {}).get('accuracy'))})")
        for row in s["slices"]:
            print(f"  slice {row['slice']:<9} {row['size']:>5} reviews, {_pct(row['share_of_errors'])} of errors, "
                  f"accuracy {_pct(row['accuracy'])} vs {_pct(row['rest_accuracy'])} on the rest")
    if result["head_to_head"]:
        v = result["head_to_head"]
        print(f"head to head: first right / second wrong {v['a_wins']}, the reverse {v['b_wins']} "
              f"(McNemar p = {v['mcnemar_p']:.3g})")
    print(f"written: {result['out'] / 'analysis.md'} and 4 PNG plots", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.analyze", "Error analysis of a model's predictions: confusion, calibration, "
                         "length, slices, worst mistakes.", EPILOG)
    parser.add_argument("target", help="run directory, merged/model/adapter directory, hub id, or predictions-*.jsonl")
    parser.add_argument("--split", default="test", help="train, validation or test (default: test)")
    parser.add_argument("--data", help="dataset name, local file or recipe (its data section; default: the run's "
                        "recipe data)")
    add_data_arguments(parser)
    parser.add_argument("--against", metavar="OTHER", help="a second target on the same reviews, shown side by side")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit the run's temperature on its validation predictions and write calibration.json")
    parser.add_argument("--slice", dest="slices", action="append", metavar="NAME",
                        help="only this slice (repeatable; mixed, contrast, negation, sarcasm); an empty one is an error")
    parser.add_argument("--top", type=positive_int, default=5, help="reviews listed per extreme (default: 5)")
    parser.add_argument("--out", help="output directory (default: <run>/analysis/<data>-<split>)")
    args = parser.parse_args(argv)

    def body() -> int:
        options = {key: getattr(args, key) for key in DATA_OPTIONS}
        print_summary(analyze(args.target, args.split, args.data, args.against, args.calibrate, args.out,
                              args.slices, args.top, data_options=options))
        return 0

    return run_cli(body, "peftsent.analyze")


if __name__ == "__main__":
    raise SystemExit(main())
