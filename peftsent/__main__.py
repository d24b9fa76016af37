"""``peftsent VERB [ARGS ...]``: one entry point with every command as a subcommand.

``peftsent train RECIPE`` runs exactly ``python -m peftsent.train RECIPE`` (same
arguments, same exit codes; the module form keeps working). A verb's module is
imported only when it is called, so ``peftsent --help`` is instant.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from peftsent import __version__, cli

#: verb -> (module whose ``main(argv) -> int`` runs it, one-line summary)
VERBS = {
    "train": ("peftsent.train", "fine-tune a YAML recipe into a run directory"),
    "merge": ("peftsent.merge", "merge a run's adapter into a standalone, verified model"),
    "eval": ("peftsent.eval", "metrics of a run, adapter, model directory or hub id on a dataset split"),
    "predict": ("peftsent.predict", "label reviews as negative or positive"),
    "compare": ("peftsent.compare", "recipes side by side on equal budgets, with an optional TF-IDF baseline row"),
    "methods": ("peftsent.methods.__main__", "which fine-tuning method works with which architecture"),
    "analyze": ("peftsent.analyze", "error analysis of a run's predictions"),
    "tune": ("peftsent.tune", "search a recipe's tune: section with Optuna"),
    "baseline": ("peftsent.baseline", "TF-IDF + logistic regression on a recipe's training reviews (seconds)"),
    "export": ("peftsent.export", "a run, adapter or merged model as a parity-checked ONNX directory (float32, int8)"),
    "serve": ("peftsent.serve", "serve models over HTTP: micro-batched, many LoRA adapters on one base"),
}

USAGE = "usage: peftsent {" + ",".join(VERBS) + "} [ARGS ...]"


def _help() -> str:
    width = max(map(len, VERBS))
    lines = [USAGE, "", "Parameter-efficient fine-tuning of encoders for sentiment classification.", "", "commands:"]
    lines += [f"  {verb:<{width}}  {summary}" for verb, (_, summary) in VERBS.items()]
    lines += ["", "Run 'peftsent VERB --help' for a command's arguments; 'peftsent VERB ...' is the same as",
              "'python -m peftsent.VERB ...'.", "", "examples:", "  peftsent train recipes/quick/lora.yaml",
              "  peftsent compare runs/quick/full runs/quick/lora --baseline tfidf",
              "  peftsent tune recipes/quick/lora.yaml --trials 20"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to the verb's ``main``; returns its exit status.

    No verb: the help on stderr, status 2. An unknown verb: one message with the closest verb, status 2.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(_help())
        return 0
    if argv[:1] == ["--version"]:
        print(f"peftsent {__version__}")
        return 0
    if not argv:
        print(_help(), file=sys.stderr)
        return cli.USER_ERROR
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, VERBS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        print(f"{USAGE}\npeftsent: error: unknown command '{verb}'; {hint}commands: {', '.join(VERBS)}",
              file=sys.stderr)
        return cli.USER_ERROR
    module_name = VERBS[verb][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"peftsent: error: '{verb}' is not part of this installation ({module_name} is missing); "
              f"upgrade peftsent", file=sys.stderr)
        return cli.USER_ERROR
    cli.prog_override = f"peftsent {verb}"
    try:
        return module.main(rest)
    finally:
        cli.prog_override = None


if __name__ == "__main__":
    raise SystemExit(main())
