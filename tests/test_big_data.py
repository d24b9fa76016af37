"""Corpora larger than memory: a local file is read in chunks into a memory-mapped Arrow file, splits move row
numbers, not reviews, and the splits are the same as before (issue 23)."""

from __future__ import annotations

import pytest

from tests.conftest import make_reviews

#: data fingerprints of the embedded splits as peftsent 0.x (the pandas path, b46d5f4) carved and subset them
EMBEDDED_FINGERPRINTS = {
    ("imdb-offline", None): "580b267657acd542d966f93138327229f1d831a5296302a4ef2679a2d6eca476",
    ("imdb-offline", 3000): "ee9e06c155b3374e7d9fa7b3a7cc7b81b8d20dddabe80b4842747004af0d52c5",
    ("rotten_tomatoes-offline", None): "cf032f9464c0417f1c9ced76bf3649fa33a1377938df199f5021587959aa5b0e",
}


@pytest.mark.parametrize("name,train", list(EMBEDDED_FINGERPRINTS))
def test_embedded_splits_and_subsets_are_the_reviews_they_always_were(name, train):
    from peftsent.data import data_fingerprint, load_splits
    from peftsent.recipe import DataSection

    splits = load_splits(DataSection(name=name, max_train_samples=train))
    assert data_fingerprint(splits) == EMBEDDED_FINGERPRINTS[(name, train)]


def _star_file(path, n: int = 120, kind: str = "csv"):
    """Star ratings 1-5 with a repeated text (same label), as a CSV / JSONL / parquet file."""
    import pandas as pd

    rows = make_reviews(n, seed=3)
    frame = pd.DataFrame({"review": [f"{t} number {i}" for i, (t, _) in enumerate(rows)],
                          "stars": [1 + i % 5 for i in range(n)]})
    frame.loc[::9, "review"] = frame["review"].iloc[0]
    frame.loc[::9, "stars"] = frame["stars"].iloc[0]
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


def _section(path, **keys):
    from peftsent.recipe import DataSection

    return DataSection(name=str(path), text_column="review", label_column="stars", validation_size=20,
                       test_size=20, **keys)


def _errors_at_chunk_sizes(path, tmp_path, monkeypatch) -> list[str]:
    """The DataError message of loading ``path`` read in chunks of 50,000 rows, then of 7 (each its own cache)."""
    import peftsent.textfiles
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    messages = []
    for rows in (50_000, 7):
        monkeypatch.setattr(peftsent.textfiles, "CHUNK_ROWS", rows)
        monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / f"cache{rows}"))
        with pytest.raises(DataError) as err:
            load_splits(_section(path))
        messages.append(str(err.value))
    return messages


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_a_file_read_in_small_chunks_gives_the_same_splits(kind, tmp_path, monkeypatch):
    """Chunk and batch sizes are memory knobs, never results: 7-row chunks, 5-row scans, same splits."""
    import peftsent.data
    import peftsent.textfiles
    from peftsent.data import data_fingerprint, load_splits

    path = _star_file(tmp_path / f"stars.{kind}", kind=kind)
    whole = load_splits(_section(path, max_train_samples=50))
    monkeypatch.setattr(peftsent.textfiles, "CHUNK_ROWS", 7)
    monkeypatch.setattr(peftsent.data, "SCAN_ROWS", 5)
    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))  # convert again, in chunks
    chunked = load_splits(_section(path, max_train_samples=50))
    assert data_fingerprint(chunked) == data_fingerprint(whole)
    assert {s: len(d) for s, d in chunked.items()} == {"train": 50, "validation": 20, "test": 20}
    assert peftsent.data.label_names(chunked) == ("1", "2", "3", "4", "5")


def test_a_local_file_is_never_read_whole_into_pandas(tmp_path, monkeypatch):
    import pandas as pd

    from peftsent.data import load_splits

    calls = []
    read_csv = pd.read_csv

    def recording(*args, **kwargs):
        calls.append(kwargs.get("chunksize"))
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", recording)
    load_splits(_section(_star_file(tmp_path / "stars.csv")))
    assert calls and all(size is not None for size in calls), calls


def test_splits_of_a_file_live_on_disk_and_the_conversion_is_reused(tmp_path, monkeypatch):
    """The splits are memory-mapped Arrow files (cache_files), the file is converted and scanned once, and a
    changed file is converted again."""
    import peftsent.data
    from peftsent.data import load_splits

    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    path = _star_file(tmp_path / "stars.csv")
    first = load_splits(_section(path))
    assert all(split.cache_files for split in first.values())
    assert all(str(tmp_path / "cache") in split.cache_files[0]["filename"] for split in first.values())

    def no_reading(*args, **kwargs):
        raise AssertionError("the converted Arrow file was not reused")

    with monkeypatch.context() as patched:
        patched.setattr(peftsent.data, "table_chunks", no_reading)
        patched.setattr(peftsent.data._Table, "scan", no_reading)  # hashes and raw labels saved beside it
        again = load_splits(_section(path))
    assert again["train"]["text"] == first["train"]["text"]
    path.write_text(path.read_text().replace("number 1,", "number one,"))  # a changed file is read again
    changed = load_splits(_section(path))
    assert any("number one" in t for s in changed.values() for t in s["text"])


def test_a_bad_byte_deep_in_a_file_is_named_by_offset_and_line(tmp_path, monkeypatch):
    """The file is decoded block by block: the byte's offset and line are the file's, across block ends."""
    import peftsent.textfiles
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    monkeypatch.setattr(peftsent.textfiles, "DECODE_BLOCK", 16)
    body = "review,stars\n" + "".join(f"good film {i},5\nbad film {i},1\n" for i in range(30)) + "caf\u00e9 noir,3\n"
    data = body.encode("cp1252")
    path = tmp_path / "late.csv"
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        load_splits(_section(path))
    offset = data.index(b"\xe9")
    line = data.count(b"\n", 0, offset) + 1
    assert line == 62 and f"byte 0xe9 at offset {offset} (line {line})" in str(err.value)
    assert "set data.encoding=cp1252" in str(err.value)


def test_a_text_repeated_with_two_labels_names_at_most_ten_rows_of_it(tmp_path):
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    path = tmp_path / "clash.csv"
    path.write_text("review,stars\n" + "".join(f"same words,{1 + i % 2}\n" for i in range(40))
                    + "".join(f"other review {i},{1 + i % 2}\n" for i in range(40)))
    with pytest.raises(DataError) as err:
        load_splits(_section(path))
    message = str(err.value)
    assert "1 texts appear with two different labels: rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (and 30 more)" in message


def test_missing_texts_with_different_labels_are_reported_not_a_traceback(tmp_path):
    """Two empty text cells (NaN) are no text repeated with two labels: one DataError naming the empty texts,
    as before (the pandas path grouped texts without the missing ones)."""
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    path = tmp_path / "holes.csv"
    path.write_text("review,stars\n" + "".join(f"review number {i},{1 + i % 2}\n" for i in range(40))
                    .replace("review number 4,1", ",1").replace("review number 9,2", ",2"))
    with pytest.raises(DataError) as err:
        load_splits(_section(path))
    message = str(err.value)
    assert message.startswith(f"{path}: 2 reviews are empty or not text: row 4: ") and "row 9: " in message
    assert "two different labels" not in message


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_chunk_whose_texts_are_all_digits_reads_them_as_texts(kind, tmp_path, monkeypatch):
    """pandas infers a column's type per chunk: a chunk of texts such as "1984" must not become numbers (not
    text) when the same texts among words are texts."""
    import pandas as pd

    import peftsent.textfiles
    from peftsent.data import data_fingerprint, load_splits

    frame = pd.DataFrame({"review": [f"review number {i}" for i in range(60)], "stars": [1 + i % 2 for i in range(60)]})
    frame.loc[7:13, "review"] = [str(1900 + i) for i in range(7, 14)]
    path = tmp_path / f"years.{kind}"
    frame.to_csv(path, index=False) if kind == "csv" else frame.to_json(path, orient="records", lines=True)
    whole = load_splits(_section(path))
    monkeypatch.setattr(peftsent.textfiles, "CHUNK_ROWS", 7)  # rows 7-13: one chunk of digits only
    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    chunked = load_splits(_section(path))
    assert data_fingerprint(chunked) == data_fingerprint(whole)
    assert "1907" in [t for split in chunked.values() for t in split["text"]]


def test_a_jsonl_key_absent_from_a_whole_chunk_is_a_missing_value_not_a_missing_column(tmp_path, monkeypatch):
    """JSON lines name their keys line by line: a chunk of lines without ``stars`` holds rows without a label
    (the same error whatever the chunk size); a key no line has is a missing column, an empty file included."""
    import json

    from peftsent.data import load_splits
    from peftsent.errors import DataError

    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps({"review": f"review number {i}", **({"stars": 1 + i % 2} if i >= 10 else {})})
                            + "\n" for i in range(60)))
    messages = _errors_at_chunk_sizes(path, tmp_path, monkeypatch)
    assert messages[0] == messages[1] and "10 rows have no label: rows 0, 1, 2" in messages[1]
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="column 'review', 'stars' not found; columns are: ;"):
        load_splits(_section(tmp_path / "empty.jsonl"))


def test_a_file_rewritten_with_the_same_size_and_modification_time_is_read_again(tmp_path, monkeypatch):
    """``cp -p``, ``rsync -t`` and ``touch -r`` keep size and mtime: the conversion must still follow the
    content (the status change time cannot be set back)."""
    import os

    from peftsent.data import load_splits

    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "same.csv"
    path.write_text("review,stars\n" + "".join(f"aaa review {i},{1 + i % 2}\n" for i in range(60)))
    before = os.stat(path)
    assert all(t.startswith("aaa") for t in load_splits(_section(path))["train"]["text"])
    replacement = tmp_path / "new.csv"
    replacement.write_text(path.read_text().replace("aaa", "bbb"))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, path)  # a file replaced while cached
    assert all(t.startswith("bbb") for t in load_splits(_section(path))["train"]["text"])
    path.write_text(path.read_text().replace("bbb", "ccc"))  # edited in place
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert all(t.startswith("ccc") for t in load_splits(_section(path))["train"]["text"])


def test_a_cache_directory_that_cannot_be_made_is_one_error_naming_peftsent_cache(tmp_path, monkeypatch):
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    path = _star_file(tmp_path / "stars.csv")
    monkeypatch.setenv("PEFTSENT_CACHE", str(path / "cache"))  # under a file: no directory can be made there
    with pytest.raises(DataError, match="PEFTSENT_CACHE to a writable directory, or PEFTSENT_CACHE=off"):
        load_splits(_section(path))
    monkeypatch.setenv("PEFTSENT_CACHE", "off")  # a temporary directory instead
    assert len(load_splits(_section(path))["test"]) == 20


def test_a_load_while_another_process_writes_the_same_scan_reads_a_whole_one(tmp_path, monkeypatch):
    """Ranks of a distributed run load the same file at once: each scans it and saves the scan; one that
    finds a saved scan while another rewrites it must never read half a file."""
    import pathlib

    import peftsent.data
    from peftsent.data import _file_table, load_splits

    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    path = _star_file(tmp_path / "stars.csv")
    first = load_splits(_section(path))
    table = _file_table(str(path), _section(path))  # a second process, about to save the scan it made
    write_text, during = pathlib.Path.write_text, []

    def interrupted(self, data, *args, **kwargs):  # what write_text does, with a third process loading midway
        with self.open("w") as handle:
            handle.write(data[:5])
            handle.flush()
            during.append(load_splits(_section(path)))
            handle.write(data[5:])
        return len(data)

    monkeypatch.setattr(pathlib.Path, "write_text", interrupted)
    table._write_scan()
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    assert during and peftsent.data.data_fingerprint(during[0]) == peftsent.data.data_fingerprint(first)


def test_a_label_column_of_distinct_values_is_scanned_in_linear_time(tmp_path, monkeypatch):
    """Text and label columns swapped (or free text as labels): one raw label per row must still be one pass,
    then the label error (it was quadratic in the distinct labels: hours for a million rows)."""
    import time

    from peftsent.data import _file_table, load_splits
    from peftsent.errors import DataError

    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    seconds = {}
    for kind, label in (("two", lambda i: 1 + i % 2), ("distinct", lambda i: f"free text number {i}")):
        path = tmp_path / f"{kind}.csv"
        path.write_text("review,stars\n" + "".join(f"review number {i},{label(i)}\n" for i in range(20_000)))
        table = _file_table(str(path), _section(path))
        start = time.perf_counter()
        table.scan()
        seconds[kind] = time.perf_counter() - start
    assert seconds["distinct"] < 5 * seconds["two"] + 0.5, seconds
    with pytest.raises(DataError, match="the class names cannot be inferred"):
        load_splits(_section(path))


def test_labels_found_with_the_same_count_are_listed_in_file_order_as_before(tmp_path):
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    path = tmp_path / "names.csv"
    path.write_text("review,stars\n" + "".join(f"review {i},{label}\n" for i, label in
                                               enumerate(["zeta", "alpha", "zeta", "alpha", "mid", "mid", "beta"])))
    with pytest.raises(DataError) as err:
        load_splits(_section(path))
    assert str(err.value).endswith("[labels found: zeta: 2 rows (row 0, 2); alpha: 2 rows (row 1, 3); "
                                   "mid: 2 rows (row 4, 5); beta: 1 rows (row 6)]")


def test_a_scan_that_cannot_be_saved_leaves_no_partial_file_in_the_cache(tmp_path, monkeypatch):
    import numpy as np

    from peftsent.data import _file_table

    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    path = _star_file(tmp_path / "stars.csv")
    savez = np.savez

    def disk_full(file, **arrays):
        savez(file, **arrays)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError):
        _file_table(str(path), _section(path))
    assert not [p.name for p in (tmp_path / "cache" / "files").iterdir() if "partial" in p.name]


def test_a_broken_jsonl_line_is_named_by_its_line_whatever_the_chunk_size(tmp_path, monkeypatch):
    """pandas reports a JSON error at a position in the chunk it parses (a different number for every chunk
    size, and none a person can find in the file): the message names the file's line."""
    import json


    lines = [json.dumps({"review": f"review number {i}", "stars": 1 + i % 2}) for i in range(60)]
    lines[40] = '{"review": "unclosed, "stars": 1}'
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    messages = _errors_at_chunk_sizes(path, tmp_path, monkeypatch)
    assert messages[0] == messages[1] and f"cannot read {path} as jsonl: line 41 is not JSON" in messages[0]


def test_two_hosts_with_the_same_pid_converting_one_file_on_a_shared_cache(tmp_path, monkeypatch):
    """Containers on several nodes often run their workers under the same process id: a temporary name made
    of the pid alone is one file for both, written twice at once and renamed into place half-overwritten."""
    import os

    import peftsent.data
    import peftsent.textfiles
    from peftsent.data import _file_table, data_fingerprint, load_splits

    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "cache"))
    path = _star_file(tmp_path / "stars.csv")
    alone = data_fingerprint(load_splits(_section(path)))
    monkeypatch.setenv("PEFTSENT_CACHE", str(tmp_path / "shared"))
    monkeypatch.setattr(peftsent.textfiles, "CHUNK_ROWS", 30)
    monkeypatch.setattr(os, "getpid", lambda: 7)  # the same pid on both nodes
    chunks, other = peftsent.data.table_chunks, []

    def with_the_other_node(*args, **kwargs):
        for i, chunk in enumerate(chunks(*args, **kwargs)):
            yield chunk
            if i == 0 and not other:  # the other node converts the same file meanwhile
                other.append("converting")
                _file_table(str(path), _section(path))

    monkeypatch.setattr(peftsent.data, "table_chunks", with_the_other_node)
    _file_table(str(path), _section(path))
    monkeypatch.setattr(peftsent.data, "table_chunks", chunks)
    assert data_fingerprint(load_splits(_section(path))) == alone
