"""Tiny offline fixtures: random 2-layer encoders saved as model directories, and small review files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = (
    "the a movie film plot actor acting story was is and but not very really "
    "good great excellent wonderful loved best bad awful terrible boring hated worst"
).split()
POSITIVE = ["good", "great", "excellent", "wonderful", "loved", "best"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "hated", "worst"]
ARCHS = ("distilbert", "bert", "roberta")


def _vocab() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,!"]


def _tiny_config(arch: str, vocab_size: int):
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if arch == "distilbert":
        return DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                max_position_embeddings=64, pad_token_id=0)
    common = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, pad_token_id=0)
    if arch == "bert":
        return BertConfig(max_position_embeddings=64, **common)
    return RobertaConfig(max_position_embeddings=66, bos_token_id=2, eos_token_id=3, **common)


def make_tiny_model_dir(arch: str, directory: Path, seed: int = 0) -> Path:
    """Save a random tiny encoder (no classification head, like a hub checkpoint) and a WordPiece tokenizer."""
    import torch
    from transformers import AutoModel, BertTokenizerFast

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(_vocab())}, do_lower_case=True)
    model = AutoModel.from_config(_tiny_config(arch, len(_vocab())))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` synthetic reviews, half positive, with a sentiment word that decides the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        cue = rng.choice(POSITIVE if label else NEGATIVE)
        filler = rng.sample(WORDS[:16], 6)
        rows.append((" ".join(filler[:3] + [cue] + filler[3:]), label))
    return rows


#: cue words of each class of :func:`make_class_reviews` (2, 3 or 5 classes, negative to positive)
CLASS_CUES = {
    2: (NEGATIVE, POSITIVE),
    3: (NEGATIVE, ["not", "really", "very"], POSITIVE),
    5: (["worst", "hated"], ["bad", "boring"], ["not", "really"], ["good", "great"], ["best", "loved"]),
}
#: the class names of :func:`make_class_reviews` files: what peftsent infers from them
CLASS_NAMES = {2: ("negative", "positive"), 3: ("negative", "neutral", "positive"), 5: ("1", "2", "3", "4", "5")}


def make_class_reviews(n: int, n_classes: int, seed: int = 0) -> list[tuple[str, object]]:
    """``n`` synthetic reviews over 2, 3 or 5 classes (as many of each), labelled as people write them:
    negative/positive, negative/neutral/positive, or star ratings 1..5 (integers)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % n_classes
        filler = rng.sample(WORDS[:10], 6)
        name = CLASS_NAMES[n_classes][label]
        rows.append((" ".join(filler[:3] + [rng.choice(CLASS_CUES[n_classes][label])] + filler[3:]),
                     int(name) if name.isdigit() else name))
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One saved tiny model directory per architecture."""
    root = tmp_path_factory.mktemp("models")
    return {arch: make_tiny_model_dir(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    """A CSV of 64 synthetic reviews (text,label)."""
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", make_reviews(64))


def tiny_recipe(model_dir: Path, data_file: Path, run_dir: Path, method: dict | None = None, **train) -> dict:
    """A raw recipe mapping for a tiny model: one optimizer step unless ``train`` says otherwise."""
    return {
        "model": {"name": str(model_dir), "max_length": 32},
        "data": {"name": str(data_file), "validation_size": 16, "test_size": 16},
        "method": method or {"name": "lora"},
        "train": {
            "output_dir": str(run_dir), "max_steps": 1, "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16, "report_to": "none", "logging_steps": 1,
            "bf16": False, "warmup_steps": 0, **train,
        },
    }


TEXTS = ["a great movie, loved it", "awful and boring plot", "the acting was not very good but the story was the best"]


def logits_of(model, tokenizer, texts=TEXTS):
    """Float32 logits (len(texts), 2) of ``model`` in eval mode."""
    import torch

    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


def train_keeping_model(recipe, monkeypatch):
    """Train ``recipe``; returns (run directory, the trained in-memory model, tokenizer)."""
    import peftsent.train as train_module

    kept = {}
    real = train_module._save_weights

    def spy(trainer, tokenizer, recipe, work):
        kept["model"], kept["tokenizer"] = trainer.model, tokenizer
        return real(trainer, tokenizer, recipe, work)

    monkeypatch.setattr(train_module, "_save_weights", spy)
    return train_module.train(recipe), kept["model"], kept["tokenizer"]


@pytest.fixture(autouse=True, scope="session")
def _private_token_cache(tmp_path_factory):
    """Tokenized-split cache (peftsent.cache) in a per-session temporary directory, not ~/.cache."""
    import os

    previous = os.environ.get("PEFTSENT_CACHE")
    os.environ["PEFTSENT_CACHE"] = str(tmp_path_factory.mktemp("peftsent-cache"))
    yield
    if previous is None:
        os.environ.pop("PEFTSENT_CACHE", None)
    else:
        os.environ["PEFTSENT_CACHE"] = previous


def run_history(run: Path) -> dict:
    """What an exact resume must reproduce: every evaluation and training-loss entry of trainer_state.json's
    log history (wall-clock fields and the per-invocation summary left out), the best checkpoint, calibration
    and the validation/test metrics of metrics.json."""
    state = json.loads((run / "trainer_state.json").read_text())
    clock = ("_runtime", "_per_second")
    history = [{k: v for k, v in entry.items() if not k.endswith(clock)}
               for entry in state["log_history"] if "train_runtime" not in entry]
    metrics = json.loads((run / "metrics.json").read_text())
    return {"history": history, "best_checkpoint": metrics["best_checkpoint"],
            "best_global_step": state["best_global_step"], "global_step": state["global_step"],
            "calibration": json.loads((run / "calibration.json").read_text()),
            "validation": metrics["validation"], "test": metrics["test"]}


def assert_same_history(got: dict, expected: dict, rel: float = 1e-6) -> None:
    """``run_history`` of a resumed run equals the uninterrupted one's: float32, ``rel`` relative."""
    assert [sorted(e) for e in got["history"]] == [sorted(e) for e in expected["history"]]
    for mine, theirs in zip(got["history"], expected["history"]):
        assert mine == pytest.approx(theirs, rel=rel, abs=1e-9), f"step {theirs.get('step')}"
    for key in ("best_checkpoint", "best_global_step", "global_step"):
        assert got[key] == expected[key], key
    for key in ("calibration", "validation", "test"):
        mine, theirs = _flat(got[key]), _flat(expected[key])
        assert sorted(mine) == sorted(theirs), key
        for name, value in theirs.items():
            if isinstance(value, float):
                assert mine[name] == pytest.approx(value, rel=rel, abs=1e-9), f"{key}.{name}"
            else:
                assert mine[name] == value, f"{key}.{name}"


def _flat(value, prefix="") -> dict:
    """Numbers of a nested metrics mapping as {"a.b": x} (strings and lists compared as they are)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}
