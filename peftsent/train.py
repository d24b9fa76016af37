"""``python -m peftsent.train RECIPE [key=value ...]``: fine-tune one recipe into a run directory."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from peftsent.cli import make_parser, run_cli
from peftsent.errors import ModelError, RecipeError

EPILOG = """examples:
  python -m peftsent.train recipes/quick/lora.yaml
  python -m peftsent.train recipes/quick/lora.yaml method.r=16 train.learning_rate=5e-4
  python -m peftsent.train recipes/lora.yaml train.output_dir=runs/lora-r16 method.r=16

Overrides are section.key=value, the value parsed as YAML; the key must exist
(train.* takes any transformers.TrainingArguments field, method.* the fields of
the method's peft config). The run directory is train.output_dir (default
runs/<recipe name>); it is written atomically.
"""


def preflight(recipe, overwrite: bool = False) -> None:
    """Check, before any compute: the run directory is new, the model and data are reachable,
    and every target module name matches. Raises one RecipeError/RunDirError listing the problems."""
    from peftsent.data import check_available
    from peftsent.modeling import check_method_on_meta
    from peftsent.registry import resolve_model
    from peftsent.rundir import check_new_run

    check_new_run(recipe.run_dir, overwrite)
    problems = list(check_available(recipe.data))
    problems += [f"eval.also: {p}" for name in recipe.eval.also for p in check_available(type(recipe.data)(name=name))]
    try:
        source = resolve_model(recipe.model.name)
    except ModelError as err:
        problems.append(f"model.name: {err}")
        source = None
    if problems:
        raise RecipeError(problems, recipe.source, hint=_offline_recipe_hint(recipe, problems))
    check_method_on_meta(recipe, source)


def _offline_recipe_hint(recipe, problems: list[str]) -> str | None:
    """Point at the offline twin ``recipes/quick/<name>.yaml`` when the hub was the problem."""
    quick = Path(recipe.source).parent / "quick" / Path(recipe.source).name
    if quick.is_file() and any("hub cannot be reached" in p for p in problems):
        return f"offline alternative: python -m peftsent.train {quick} (embedded model, imdb-offline reviews)"
    return None


class PeakMemory:
    """Peak resident memory of this process while a run is under way (MiB), sampled every ``interval_s``.

    Sampled rather than read from ru_maxrss, which never goes down: a second run in the same process
    (compare) would otherwise report the first one's peak. CUDA: ``torch.cuda.max_memory_allocated``.
    """

    def __init__(self, interval_s: float = 0.2):
        import threading

        import psutil
        import torch

        self._process, self._interval = psutil.Process(), interval_s
        self._stop, self.peak = threading.Event(), self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        import torch

        self.peak = max(self.peak, self._process.memory_info().rss)
        cuda_mib = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        return {"peak_rss_mib": round(self.peak / 2**20, 1),
                "peak_cuda_mib": None if cuda_mib is None else round(cuda_mib, 1)}


@contextlib.contextmanager
def _tensorboard_dir(path: Path):
    """Point transformers' TensorBoardCallback at ``path`` (it reads TENSORBOARD_LOGGING_DIR)."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


def _save_weights(trainer, tokenizer, recipe, work: Path) -> None:
    from peftsent.methods import method_spec
    from peftsent.registry import resolve_model
    from peftsent.rundir import ADAPTER_DIR, MODEL_DIR

    spec = method_spec(recipe.method_name)
    target = work / (ADAPTER_DIR if spec.config_class else MODEL_DIR)
    if spec.config_class and not spec.is_peft:
        from peftsent.methods.bottleneck import save_bottleneck

        save_bottleneck(trainer.model, target, resolve_model(recipe.model.name).location)
    else:
        trainer.model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def optimizer_steps(recipe, n_train: int) -> int:
    """Optimizer steps of the run: ``max_steps`` if set, else epochs x ceil(reviews / effective batch)."""
    import math

    train = recipe.train
    if train.get("max_steps", -1) and train.get("max_steps", -1) > 0:
        return int(train["max_steps"])
    batch = train["per_device_train_batch_size"] * train.get("gradient_accumulation_steps", 1)
    return max(1, math.ceil(math.ceil(n_train / batch) * float(train["num_train_epochs"])))


def _callbacks(recipe) -> list:
    """AdaLoRA reallocates its rank budget after every optimizer step, while gradients still exist."""
    if recipe.method_name != "adalora":
        return []
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            model.base_model.update_and_allocate(state.global_step)

    return [AdaLoraBudget()]


def _drop_checkpoints(work: Path) -> None:
    import shutil

    for checkpoint in work.glob("checkpoint-*"):
        state = checkpoint / "trainer_state.json"
        if state.is_file() and not (work / "trainer_state.json").exists():
            state.replace(work / "trainer_state.json")
        shutil.rmtree(checkpoint)


def _run_summary(recipe, report, splits, timing: dict, results: dict, memory: dict) -> dict:
    from peftsent import __version__

    return {
        "peftsent_version": __version__,
        "recipe": recipe.source,
        "method": recipe.method_name,
        "base_model": recipe.model.name,
        "model_type": recipe.model_type,
        "data": recipe.data.name,
        "max_length": recipe.model.max_length,
        "sizes": {split: len(ds) for split, ds in splits.items()},
        "parameters": report.to_dict(),
        **results,
        "timing": timing,
        "memory": memory,
    }


def train(recipe, overwrite: bool = False) -> Path:
    """Fine-tune ``recipe`` and write its run directory; returns the directory.

    Model selection uses the validation split (best checkpoint by
    ``train.metric_for_best_model``); the test split is evaluated once, at the end.
    Raises RecipeError/RunDirError/DataError/ModelError before training starts
    for user mistakes.
    """
    from transformers import DataCollatorWithPadding, Trainer

    from peftsent.data import load_splits, tokenize_splits
    from peftsent.metrics import trainer_metrics
    from peftsent.modeling import build_model, max_input_tokens
    from peftsent.predictions import final_evaluation
    from peftsent.rundir import METRICS_FILE, RECIPE_FILE, staging, write_json
    from peftsent.training_args import make_training_args

    preflight(recipe, overwrite)
    splits = load_splits(recipe.data)
    model, tokenizer, report = build_model(recipe, total_steps=optimizer_steps(recipe, len(splits["train"])))
    max_length = max_input_tokens(model.config, recipe.model.max_length, recipe.method)
    tokenized = tokenize_splits(splits, tokenizer, max_length)
    print(f"peftsent: {recipe.method_name} on {recipe.model.name}: {report.trainable:,} trainable of "
          f"{report.total:,} parameters (adapter {report.adapter:,}, head {report.head:,}); "
          f"train/validation/test = {len(splits['train'])}/{len(splits['validation'])}/{len(splits['test'])} reviews",
          file=sys.stderr)
    with staging(recipe.run_dir, overwrite) as work, _tensorboard_dir(work / "logs"), PeakMemory() as memory:
        trainer = Trainer(
            model=model,
            args=make_training_args(recipe, output_dir=str(work)),
            train_dataset=tokenized["train"],
            eval_dataset=tokenized["validation"],
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=trainer_metrics(recipe.eval.ece_bins),
            callbacks=_callbacks(recipe),
        )
        started = time.perf_counter()
        output = trainer.train()
        timing = {"train_seconds": round(time.perf_counter() - started, 1),
                  "train_samples_per_second": output.metrics.get("train_samples_per_second")}
        # accelerate wrapped forward in bf16 autocast for training; report float32 numbers, as eval does
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        # scores, predictions files, temperature (calibration.json) and eval.also datasets
        results, speeds = final_evaluation(model, tokenizer, recipe, splits, tokenized, max_length, work)
        timing.update(speeds)
        results["best_checkpoint"] = trainer.state.best_model_checkpoint and Path(trainer.state.best_model_checkpoint).name
        _save_weights(trainer, tokenizer, recipe, work)
        _drop_checkpoints(work)
        recipe.dump(work / RECIPE_FILE)
        write_json(work / METRICS_FILE, _run_summary(recipe, report, splits, timing, results, memory.report()))
    return recipe.run_dir


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.train", "Fine-tune an encoder for sentiment from a YAML recipe.", EPILOG)
    parser.add_argument("recipe", help="recipe YAML file (see recipes/ and recipes/quick/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key, e.g. method.r=16")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--dry-run", action="store_true", help="validate the recipe, print it resolved, train nothing")
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        from peftsent.calibration import describe as describe_calibration
        from peftsent.metrics import format_table
        from peftsent.recipe import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)
        if args.dry_run:
            import yaml

            preflight(recipe, args.overwrite)
            print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
            return 0
        run_dir = train(recipe, overwrite=args.overwrite)
        import json

        summary = json.loads((run_dir / "metrics.json").read_text())
        shown = {k: summary[k] for k in ("validation", "test") if k in summary}
        print(f"\nrun directory: {run_dir}\n")
        print(format_table(shown))
        if "calibration" in summary:
            print(describe_calibration(summary["calibration"]))
        print(f"\ntrain time {summary['timing']['train_seconds']} s; peak RSS {summary['memory']['peak_rss_mib']} MiB")
        return 0

    return run_cli(body, "peftsent.train")


if __name__ == "__main__":
    raise SystemExit(main())
