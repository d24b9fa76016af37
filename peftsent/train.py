"""``python -m peftsent.train RECIPE [key=value ...]``: fine-tune one recipe into a run directory."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from peftsent import __version__, metrics, modeling
from peftsent.baseline import BASELINE_PREDICTIONS, compare_line, paired_predictions, tfidf_baseline
from peftsent.calibration import describe as describe_calibration
from peftsent.cli import make_parser, run_cli
from peftsent.data import (
    check_available,
    data_fingerprint,
    label_names,
    load_splits,
    tokenize_splits,
)
from peftsent.errors import DataError, ModelError, RecipeError
from peftsent.loading import attach_adapter
from peftsent.merge import write_adapter_card
from peftsent.methods import method_spec
from peftsent.methods.adalora import adalora_callback
from peftsent.methods.bottleneck import save_bottleneck
from peftsent.metrics import BINARY_ONLY_METRICS, confusion_table, format_table, per_class_table
from peftsent.modeling import check_method_on_meta, write_adapter_labels
from peftsent.predictions import final_evaluation
from peftsent.recipe import load_recipe
from peftsent.registry import portable_name, resolve_model
from peftsent.rundir import (
    ADAPTER_DIR,
    METRICS_FILE,
    MODEL_DIR,
    RECIPE_FILE,
    TRAINER_STATE_FILE,
    check_new_run,
    kill_point,
    lifecycle_callback,
    resource_errors,
    run_stage,
    stage_path,
    write_json,
)
from peftsent.speed import BatchPadding, frozen_weights_in
from peftsent.tokenization import section_policy
from peftsent.training_args import class_weights, make_training_args, warn_small_class, weighted_loss

EPILOG = """examples:
  python -m peftsent.train recipes/quick/lora.yaml
  python -m peftsent.train recipes/quick/lora.yaml method.r=16 train.learning_rate=5e-4
  python -m peftsent.train recipes/lora.yaml train.output_dir=runs/lora-r16 method.r=16

Overrides are section.key=value, the value parsed as YAML; the key must exist
(train.* takes any transformers.TrainingArguments field, method.* the fields of
the method's peft config). The run directory is train.output_dir (default
runs/<recipe name>); it is written atomically.

An interrupted run keeps its checkpoints in .<name>.partial/ beside the run
directory: continue it with the same command plus --resume, or discard it with
--overwrite. Several processes (CPU: gloo; GPUs: NCCL):
  torchrun --nproc_per_node 2 -m peftsent.train recipes/quick/lora.yaml
  accelerate launch --multi_gpu --num_processes 2 -m peftsent.train recipes/quick/lora.yaml
"""


def preflight(recipe, overwrite: bool = False) -> None:
    """Check, before any compute: the run directory is new, the model and data are reachable, the
    checkpoints can be resumed, and every target module name matches. Raises one RecipeError/RunDirError
    listing the problems."""
    check_new_run(recipe.run_dir, overwrite)
    problems = list(check_available(recipe.data))
    if recipe.train.get("save_only_model"):
        problems.append("train.save_only_model: true keeps no optimizer, scheduler or RNG state, so an interrupted "
                        "run could not be continued with --resume; remove the key")
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
    spec = method_spec(recipe.method_name)
    target = work / (ADAPTER_DIR if spec.config_class else MODEL_DIR)
    base = portable_name(recipe.model.name)  # a hub id where one exists, never a path inside this venv
    if spec.config_class and not spec.is_peft:
        save_bottleneck(trainer.model, target, base)
    else:
        trainer.model.save_pretrained(target, safe_serialization=True)
        if spec.config_class:  # rewritten after saving: peft would look the hub id up online while saving
            import json

            config = json.loads((target / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = base
            (target / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if spec.config_class:  # an adapter has no config.json: its class names go beside it
        write_adapter_labels(target, recipe.data.labels)
    tokenizer.save_pretrained(target)


def optimizer_steps(recipe, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps`` if set, else epochs x steps per epoch, where each of
    ``world_size`` processes takes ``per_device_train_batch_size`` reviews per batch and accumulates
    ``gradient_accumulation_steps`` batches per step (an estimate for AdaLoRA's config; the Trainer's own
    count replaces it when training starts)."""
    import math

    train = recipe.train
    if train.get("max_steps", -1) and train.get("max_steps", -1) > 0:
        return int(train["max_steps"])
    batches = math.ceil(math.ceil(n_train / train["per_device_train_batch_size"]) / world_size)
    per_epoch = max(1, math.ceil(batches / train.get("gradient_accumulation_steps", 1)))
    return max(1, math.ceil(per_epoch * float(train["num_train_epochs"])))


def _callbacks(recipe) -> list:
    """Early stopping (transformers.EarlyStoppingCallback), AdaLoRA's budget, the life-cycle points."""
    from transformers import EarlyStoppingCallback

    callbacks = [lifecycle_callback()]
    if recipe.train.get("early_stopping_patience"):
        callbacks.append(EarlyStoppingCallback(recipe.train["early_stopping_patience"],
                                               recipe.train.get("early_stopping_threshold") or 0.0))
    if recipe.method_name == "adalora":
        callbacks.append(adalora_callback())
    return callbacks


def _reload_checkpoint(recipe, checkpoint: str):
    """The model of a saved checkpoint, loaded as eval loads a run (fresh float32 base + adapter in inference
    mode) for peft methods: peft's in-place reload puts p-tuning's saved (already encoded) prompt through the
    prompt encoder again and mis-sizes AdaLoRA's reallocated ranks. None for full fine-tuning and bottleneck
    adapters, where the Trainer's own reload (a plain state dict) is right."""
    if not method_spec(recipe.method_name).is_peft:
        return None

    return attach_adapter(resolve_model(recipe.model.name).location, Path(checkpoint), labels=recipe.data.labels)


#: beside transformers' ``rng_state*.pth`` in every checkpoint: torch's global RNG state (CPU, and each CUDA
#: device's) at the moment the checkpoint's epoch began, one file per process rank
EPOCH_RNG_FILE = "epoch_rng_state_{rank}.pth"


def _epoch_rng_state() -> dict:
    """torch's global RNG state now: ``{"cpu": ByteTensor, "cuda": [ByteTensor per device]}`` (``cuda`` only where
    CUDA is available)."""
    import torch

    state = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def _restore_epoch_rng(checkpoint: str, rank: int) -> bool:
    """Set torch's global RNG (CPU and CUDA) to the state ``checkpoint``'s epoch began with (:data:`EPOCH_RNG_FILE`
    of process ``rank``). False, nothing changed, where the checkpoint has no such file (written before peftsent
    saved it): the resumed epoch's order then comes from this process's RNG, as transformers alone does."""
    import torch

    path = Path(checkpoint) / EPOCH_RNG_FILE.format(rank=rank)
    if not path.is_file():
        return False
    state = torch.load(path, weights_only=True)
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        for device, device_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.random.set_rng_state(device_state, device)
    return True


def _make_trainer(recipe, args, model, tokenizer, tokenized, policy, callbacks=(), weights=None):
    """The run's Trainer; ``weights`` (per class id, :func:`peftsent.training_args.class_weights`) make its loss
    the class-weighted cross-entropy through the Trainer's own ``compute_loss_func`` hook. Sequence
    classification returns a per-device mean loss and ignores ``num_items_in_batch``; without
    ``accepts_loss_kwargs = False`` the Trainer takes the loss for a token sum: it multiplies it by the number of
    processes (eval_loss 1.386 instead of 0.693 under two, gradients doubled) and skips the division by
    ``gradient_accumulation_steps``. Batches are padded by
    :class:`peftsent.speed.BatchPadding` under ``policy``'s length."""
    from transformers import Trainer

    (model.get_base_model() if hasattr(model, "get_base_model") else model).accepts_loss_kwargs = False

    class RunTrainer(Trainer):
        # Exact mid-epoch resume. The length-grouped sampler (train_sampling_strategy: group_by_length) has no
        # generator: each epoch's order is a randperm on torch's global RNG when the epoch's iteration begins
        # (after the DataLoader iterator's base-seed draw). Resumed in the middle of an epoch, transformers skips
        # the trained batches by iterating that epoch again and restores the checkpoint's RNG state only after the
        # skip, so the order would come from the resumed process's RNG. Every checkpoint therefore also keeps the
        # global RNG state its epoch began with; a mid-epoch resume restores it before the skipped iteration,
        # which then draws the same base seed and the same order as the uninterrupted run, and transformers
        # restores the checkpoint's own state after the skip as before. An uninterrupted run draws exactly what
        # it drew before (nothing here consumes random numbers).
        _epoch_rng = None

        def _run_epoch(self, *args, **kwargs):
            # resumed from the final checkpoint in the middle of an epoch, transformers would train one step more
            if self.state.global_step >= self.state.max_steps:
                self.control.should_training_stop = True
                return None
            checkpoint = kwargs["resume_from_checkpoint"]
            if (checkpoint is not None and kwargs["epoch"] == kwargs["epochs_trained"]
                    and kwargs["steps_trained_in_current_epoch"] > 0 and not self.args.ignore_data_skip):
                _restore_epoch_rng(checkpoint, self.args.process_index)  # the skip path of Trainer._run_epoch
            self._epoch_rng = _epoch_rng_state()  # before the epoch's dataloader iteration draws anything
            return super()._run_epoch(*args, **kwargs)

        def _save_rng_state(self, output_dir: str) -> None:
            super()._save_rng_state(output_dir)
            if self._epoch_rng is not None:
                import torch

                os.makedirs(output_dir, exist_ok=True)
                rank_file = EPOCH_RNG_FILE.format(rank=self.args.process_index)
                torch.save(self._epoch_rng, os.path.join(output_dir, rank_file))

        def _load_best_model(self):
            if self.state.best_global_step == self.state.global_step:
                return  # the last step is the best: the model in memory is that checkpoint, no reload
            reloaded = _reload_checkpoint(recipe, self.state.best_model_checkpoint)
            if reloaded is None:
                return super()._load_best_model()
            self.model = reloaded.to(self.args.device)

    return RunTrainer(
        model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
        data_collator=BatchPadding(tokenizer, policy.max_length), processing_class=tokenizer,
        compute_metrics=metrics.trainer_metrics(recipe.eval.ece_bins, recipe.data.labels), callbacks=[*_callbacks(recipe), *callbacks],
        compute_loss_func=weighted_loss(weights) if weights is not None else None,
    )


def check_best_reload(trainer, validation: dict) -> None:
    """The model in memory after ``load_best_model_at_end`` must score the validation split as the best
    checkpoint did when training evaluated it (``trainer_state`` log history): log-loss within 1e-4 in float32,
    2e-2 under bf16/fp16 autocast (training evaluated in lower precision). Raises RuntimeError otherwise."""
    state, args = trainer.state, trainer.args
    if not args.load_best_model_at_end or state.best_global_step is None:
        return
    logged = next((e for e in state.log_history
                   if e.get("step") == state.best_global_step and "eval_log_loss" in e), None)
    if logged is None:
        return
    tolerance = 2e-2 if (args.bf16 or args.fp16) else 1e-4
    if abs(logged["eval_log_loss"] - validation["log_loss"]) > tolerance:
        raise RuntimeError(
            f"the best checkpoint (step {state.best_global_step}) had validation log-loss "
            f"{logged['eval_log_loss']:.6f} when it was evaluated, but the model reloaded from it gives "
            f"{validation['log_loss']:.6f} (tolerance {tolerance}): its saved weights do not reproduce it")


def _validation_clock():
    """A TrainerCallback summing the ``eval_runtime`` (seconds) of the validation passes made while training."""
    from transformers import TrainerCallback

    class ValidationClock(TrainerCallback):
        seconds = 0.0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.seconds += (metrics or {}).get("eval_runtime", 0.0)

    return ValidationClock()


def _training_timing(wall_seconds: float, validation_seconds: float, output, world_size: int) -> dict:
    """``metrics.json`` ``timing`` of ``trainer.train``: ``train_seconds`` = wall seconds of this invocation less
    its validation passes (optimizer steps, data loading, checkpoint saves and the best checkpoint's reload),
    ``validation_seconds`` those passes, ``train_wall_seconds`` both; ``train_samples_per_second`` as the
    Trainer reports it (wall-based). Seconds, rounded to 0.1 so that the first two add up to the third."""
    wall, validation = round(wall_seconds, 1), round(validation_seconds, 1)
    return {"train_seconds": round(wall - validation, 1), "validation_seconds": validation, "train_wall_seconds": wall,
            "train_samples_per_second": output.metrics.get("train_samples_per_second"), "world_size": world_size}


def _final_evaluation(trainer, recipe, tokenizer, splits, tokenized, policy, timing: dict):
    """Validation (also the best-reload check: one pass), test and ``eval.also`` metrics of the selected model,
    float32, over whole splits on every process, with the temperature fitted on validation (see
    :func:`peftsent.predictions.final_evaluation`). Returns (results, ``write(work)`` for the files)."""
    kill_point("final-evaluation")
    # accelerate wrapped forward in bf16 autocast for training; report float32 numbers, as eval does
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    results, speeds, write_files = final_evaluation(model, tokenizer, recipe, splits, tokenized, policy)
    timing.update(speeds)
    validation = results.get("validation_truncated", results["validation"])  # the Trainer validated truncated reviews
    check_best_reload(trainer, {**validation, **validation.get("uncalibrated", {})})  # the Trainer logged raw logits
    state = trainer.state
    results["best_checkpoint"] = state.best_model_checkpoint and Path(state.best_model_checkpoint).name
    results["global_step"], results["max_steps"] = state.global_step, state.max_steps
    if recipe.train.get("early_stopping_patience"):
        stopped = state.global_step if state.global_step < state.max_steps else None
        results["early_stopping"] = {"patience": recipe.train["early_stopping_patience"],
                                     "threshold": recipe.train.get("early_stopping_threshold") or 0.0,
                                     "stopped_at_step": stopped}
    return results, write_files


def _write_results(work: Path, trainer, tokenizer, recipe, summary: dict, write_files=None) -> None:
    """Weights, recipe, the whole run's trainer_state.json, predictions and calibration (``write_files``), then
    metrics.json (last: the results are complete)."""
    _save_weights(trainer, tokenizer, recipe, work)
    recipe.dump(work / RECIPE_FILE)
    trainer.state.save_to_json(str(work / TRAINER_STATE_FILE))
    if write_files is not None:
        write_files(work)
    if (work / ADAPTER_DIR).is_dir():
        write_adapter_card(work / ADAPTER_DIR, recipe, summary)
    write_json(work / METRICS_FILE, summary)


def _run_summary(recipe, report, splits, timing: dict, results: dict, memory: dict, policy=None) -> dict:
    """metrics.json. ``max_length``/``truncation``/``long_reviews``: the token policy every path used (capped at the model's
    usable positions less virtual tokens); ``requested_max_length``: the recipe's ``model.max_length``."""
    return {
        "peftsent_version": __version__,
        "recipe": recipe.source,
        "method": recipe.method_name,
        "base_model": recipe.model.name,
        "model_type": recipe.model_type,
        "data": recipe.data.name,
        "max_length": policy.max_length if policy else recipe.model.max_length,
        "requested_max_length": recipe.model.max_length,
        "truncation": policy.truncation if policy else recipe.model.truncation,
        "long_reviews": policy.long_reviews if policy else recipe.model.long_reviews,
        "sizes": {split: len(ds) for split, ds in splits.items()},
        "parameters": report.to_dict(),
        **results,
        "timing": timing,
        "memory": memory,
    }


def _baseline(recipe, splits) -> dict | None:
    """The TF-IDF + LR baseline on the run's own splits when ``eval.baseline: tfidf`` (before training: seconds)."""
    if recipe.eval.baseline == "none":
        return None

    return tfidf_baseline(splits, recipe.eval.ece_bins, ("validation", "test") if recipe.eval.test else ("validation",))


def _with_baseline_predictions(write_files, predicted: dict):
    def write(work: Path) -> None:
        write_files(work)
        write_json(work / BASELINE_PREDICTIONS, predicted)

    return write


def _check_also_labels(recipe) -> None:
    """Each ``eval.also`` dataset's labels must be the run's classes (read as them), checked before training
    rather than at the end of it: raises RecipeError naming the dataset and the problem."""
    import dataclasses

    if not recipe.eval.also or [n.lower() for n in recipe.data.labels] == ["negative", "positive"]:
        return  # the named datasets are binary: nothing to check for a binary run
    problems = []
    for name in recipe.eval.also:
        section = dataclasses.replace(type(recipe.data)(name=name), labels=recipe.data.labels,
                                      max_test_samples=recipe.data.max_test_samples, sample_seed=recipe.data.sample_seed)
        try:
            load_splits(section, splits=["test"])
        except DataError as err:
            problems.append(f"eval.also: {name} cannot be scored with this run's classes "
                            f"({', '.join(recipe.data.labels)}): {err}")
    if problems:
        raise RecipeError(problems, recipe.source)


def with_labels(recipe, labels):
    """``recipe`` with ``data.labels`` set to the run's class names (decided by :func:`peftsent.data.load_splits`),
    so the resolved recipe.yaml, the model head and every later command read the same label set. Raises
    RecipeError if the selection metric is a binary one (precision, recall, f1 of the positive class) and
    there are more than two classes."""
    import dataclasses

    metric = str(recipe.train.get("metric_for_best_model")).removeprefix("eval_")
    if len(labels) > 2 and metric in BINARY_ONLY_METRICS:
        raise RecipeError(f"train.metric_for_best_model: {metric} is the positive class's {metric} of two classes; "
                          f"this data has {len(labels)} ({', '.join(labels)}): use macro_f1 (or accuracy)",
                          recipe.source)
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, labels=list(labels)))


def train(recipe, overwrite: bool = False, resume: bool = False, callbacks: list = ()) -> Path:
    """Fine-tune ``recipe`` and write its run directory; returns the directory.

    Model selection uses the validation split (best checkpoint by
    ``train.metric_for_best_model``); the test split is evaluated once, at the end.
    ``resume``: continue the staged run from its newest complete checkpoint (see
    :mod:`peftsent.rundir`). Every process of a torchrun/accelerate launch calls this;
    only the main one writes. ``callbacks``: extra ``transformers.TrainerCallback``s
    (peftsent.tune's pruning). With ``eval.baseline: tfidf`` the TF-IDF baseline on the
    same splits goes into metrics.json under ``baseline``. Raises RecipeError/RunDirError/DataError/ModelError
    before training starts for user mistakes.
    """
    from accelerate import PartialState
    from transformers import set_seed

    preflight(recipe, overwrite)
    splits = load_splits(recipe.data)
    recipe = with_labels(recipe, label_names(splits))
    _check_also_labels(recipe)
    names = list(recipe.data.labels)  # the run's class names, in id order (decided by load_splits)
    weights = class_weights(recipe.train["class_weights"], splits["train"]["label"], names)
    args = make_training_args(recipe, output_dir=str(stage_path(recipe.run_dir)))
    with run_stage(recipe, args.distributed_state or PartialState(), overwrite, resume,
                   data_fingerprint(splits)) as stage:
        if stage.results_written:
            return stage.finish()
        baseline = _baseline(recipe, splits) if stage.is_main_process else None
        set_seed(args.seed)  # train.seed governs every random initialisation: head, adapter, bottleneck
        model, tokenizer, report = modeling.build_model(recipe, optimizer_steps(recipe, len(splits["train"]), args.world_size))
        policy = section_policy(model, recipe.model)  # model.stride: checked at preflight (check_method_on_meta)
        tokenized = tokenize_splits(splits, tokenizer, policy)
        if stage.is_main_process:
            _announce(recipe, report, splits, stage)
            warn_small_class(splits["train"]["label"], names, recipe.train["class_weights"])
        with _tensorboard_dir(stage.path / "logs"), PeakMemory() as memory:
            clock = _validation_clock()
            trainer = _make_trainer(recipe, args, model, tokenizer, tokenized, policy, [*callbacks, clock], weights)
            started = time.perf_counter()
            with frozen_weights_in(model, "bfloat16" if args.bf16 else "float32"):
                output = trainer.train(resume_from_checkpoint=stage.resume_from_checkpoint)
            timing = _training_timing(time.perf_counter() - started, clock.seconds, output, args.world_size)
            results, write_files = _final_evaluation(trainer, recipe, tokenizer, splits, tokenized, policy, timing)
            if baseline is not None:
                results["baseline"] = baseline
                write_files = _with_baseline_predictions(write_files, baseline.pop("predicted"))
            results["resumed_from"] = stage.resume_from_checkpoint and Path(stage.resume_from_checkpoint).name
            results["class_weights"] = {"setting": recipe.train["class_weights"],
                                        "weights": dict(zip(names, weights)) if weights is not None else None}
            summary = _run_summary(recipe, report, splits, timing, results, memory.report(), policy)
            return stage.finish(lambda work: _write_results(work, trainer, policy.configure(tokenizer), recipe, summary,
                                                             write_files))


def _announce(recipe, report, splits, stage) -> None:
    resumed = f"; resuming from {Path(stage.resume_from_checkpoint).name}" if stage.resume_from_checkpoint else ""
    print(f"peftsent: {recipe.method_name} on {recipe.model.name}: {report.trainable:,} trainable of "
          f"{report.total:,} parameters (adapter {report.adapter:,}, head {report.head:,}); "
          f"train/validation/test = {len(splits['train'])}/{len(splits['validation'])}/{len(splits['test'])} "
          f"reviews{resumed}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.train", "Fine-tune an encoder for sentiment from a YAML recipe.", EPILOG)
    parser.add_argument("recipe", help="recipe YAML file (see recipes/ and recipes/quick/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key, e.g. method.r=16")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run directory, or discard an interrupted run's staged checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its newest complete checkpoint "
                             "(same recipe and overrides)")
    parser.add_argument("--dry-run", action="store_true", help="validate the recipe, print it resolved, train nothing")
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        recipe = load_recipe(args.recipe, args.overrides)
        if args.dry_run:
            import yaml

            preflight(recipe, args.overwrite)
            print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
            return 0
        # the stage translates a full disk itself (keeping what --resume needs); this catches the rest
        with resource_errors(stage_path(recipe.run_dir), f"training {recipe.run_dir}"):
            run_dir = train(recipe, overwrite=args.overwrite, resume=args.resume)
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return 0  # the main process reports
        import json

        summary = json.loads((run_dir / "metrics.json").read_text())
        shown = {k: summary[k] for k in ("validation", "test") if k in summary}
        shown.update({f"{name} (test)": result for name, result in summary.get("also", {}).items()})  # eval.also
        print(f"\nrun directory: {run_dir}\n")
        print(format_table(shown))
        if "per_class" in summary.get("test", {}):  # more than two classes
            print(f"\ntest, per class:\n{per_class_table(summary['test'])}\n\ntest confusion matrix (reviews):\n"
                  f"{confusion_table(summary['test']['confusion_matrix'], summary['test']['per_class'])}")
        if "calibration" in summary:
            print(describe_calibration(summary["calibration"]))
        timing = summary["timing"]
        print(f"\ntrain time {timing['train_seconds']} s (+ {timing['validation_seconds']} s of validation while "
              f"training); peak RSS {summary['memory']['peak_rss_mib']} MiB")
        if "baseline" in summary:
            split = "test" if "test" in summary and "test" in summary["baseline"] else "validation"
            resolved = load_recipe(run_dir / RECIPE_FILE, for_training=False)
            print(compare_line(summary, resolved.train["metric_for_best_model"],
                               paired_predictions(run_dir, resolved.data.name, split)))
        return 0

    return run_cli(body, "peftsent.train")


if __name__ == "__main__":
    raise SystemExit(main())
