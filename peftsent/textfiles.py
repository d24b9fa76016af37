"""Local files as people have them: any text encoding, with or without a byte-order mark.

Every path that reads a user's CSV / JSON / JSONL / text file (the recipe's ``data.name`` and its
``validation_file`` / ``test_file``, ``eval`` / ``analyze --data``, ``predict --file``) decodes it here, once:

- ``encoding`` is any Python codec name (``utf-8``, ``cp1252``, ``latin-1``, ``utf-16``, ...); default UTF-8;
- a UTF-8 byte-order mark (``EF BB BF``, written by Excel's "CSV UTF-8" and Notepad) is dropped, whatever the
  encoding's spelling (``utf-8``, ``utf8``, ``UTF-8``); UTF-16/32 codecs drop theirs themselves;
- a file that does not decode raises :class:`peftsent.errors.DataError` naming the file, the byte and its
  position, the setting to change (``data.encoding`` or ``--encoding``) and the encoding the file most likely
  is, guessed by ``charset-normalizer``.

Parquet files are binary and carry their own encoding; they are read as they are.

Large files are never decoded whole: :func:`check_decodes` streams the bytes through an incremental decoder
(1 MiB at a time) and :func:`table_chunks` hands the parsed rows over in frames of ``CHUNK_ROWS`` rows
(pandas' own chunked readers), so a 3-million-review file costs one chunk of memory at a time.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from peftsent.errors import DataError

DEFAULT_ENCODING = "utf-8"
#: the encodings a guess prefers when charset-normalizer finds several that fit (spreadsheet exports on
#: Western-European Windows and Mac systems, then ISO-8859-1)
PREFERRED_GUESSES = ("cp1252", "latin_1", "utf_16")
#: bytes around the failing position given to charset-normalizer (a guess, not a proof: seconds at most)
GUESS_WINDOW = 200_000
#: rows per frame that :func:`table_chunks` yields
CHUNK_ROWS = 50_000
#: bytes read at a time by :func:`check_decodes`
DECODE_BLOCK = 1 << 20


def check_encoding(encoding: str, key: str = "data.encoding") -> list[str]:
    """Problems of an encoding name (recipe and CLI checks): empty when Python has a codec of that name."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        return [f"{key}: unknown encoding {encoding!r}; expected a Python codec name such as utf-8, cp1252, "
                f"latin-1 or utf-16"]
    return []


def _codec(encoding: str, key: str) -> str:
    problems = check_encoding(encoding, key)
    if problems:
        raise DataError(problems[0])
    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name == "utf-8" else name  # utf-8-sig: UTF-8 that drops a leading byte-order mark


def guess_encoding(data: bytes) -> str | None:
    """The encoding ``data`` most likely is (a Python codec name), by charset-normalizer; None if it finds none.

    Among the encodings that decode the bytes equally well, :data:`PREFERRED_GUESSES` win (a short French
    review decodes as cp1250 and cp1252 alike; the spreadsheet export is far more often cp1252)."""
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        return None
    fits = [codecs.lookup(name).name for name in best.could_be_from_charset]
    for preferred in PREFERRED_GUESSES:
        if codecs.lookup(preferred).name in fits:
            return codecs.lookup(preferred).name
    return codecs.lookup(best.encoding).name


def read_text(path: str | Path, encoding: str = DEFAULT_ENCODING, key: str = "data.encoding") -> str:
    """The text of ``path`` decoded with ``encoding`` (a UTF-8 byte-order mark dropped).

    Raises DataError if the file cannot be read, or if it does not decode: the message names the byte, its
    line, ``key`` (the setting to change) and the guessed encoding (:func:`guess_encoding`).
    """
    codec = _codec(encoding, key)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return data.decode(codec)
    except UnicodeDecodeError as err:
        raise decode_error(path, data, err, encoding, key) from None


def decode_error(path, data: bytes, err: UnicodeDecodeError, encoding: str, key: str,
                 offset: int = 0, lines_before: int = 0) -> DataError:
    """The DataError of a file that is not ``encoding`` text: where it fails, and the likely encoding.

    ``data``: the file's bytes, or a block of them that starts at byte ``offset`` of the file after
    ``lines_before`` newlines (``err`` positions are relative to ``data``)."""
    start = max(err.start - GUESS_WINDOW // 2, 0)
    guess = guess_encoding(data[start:start + GUESS_WINDOW])
    line = lines_before + data.count(b"\n", 0, err.start) + 1
    byte = data[err.start:err.start + 1].hex()
    fix = (f"it looks like {guess} text: set {key}={guess}" if guess and guess != codecs.lookup(encoding).name
           else f"name its encoding with {key} (e.g. cp1252 or latin-1 for a spreadsheet export), or save it as UTF-8")
    return DataError(f"{path} is not {encoding} text: byte 0x{byte} at offset {offset + err.start} (line {line}) "
                     f"does not decode ({err.reason}); {fix}")


def check_decodes(path: str | Path, encoding: str = DEFAULT_ENCODING, key: str = "data.encoding") -> None:
    """Decode ``path`` with ``encoding`` block by block (:data:`DECODE_BLOCK` bytes; memory stays flat for any
    file size). Raises DataError if it cannot be read, or as :func:`read_text` where it does not decode."""
    codec = _codec(encoding, key)
    decoder = codecs.getincrementaldecoder(codec)()
    offset = lines = 0  # bytes and newlines before the current block
    try:
        with open(path, "rb") as handle:
            while True:
                block = handle.read(DECODE_BLOCK)
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as err:
                    held = len(err.object) - len(block)  # bytes the decoder held back from the last block
                    where = offset - held + err.start  # the bad byte's offset in the file
                    lines_before = lines - bytes(err.object[:held]).count(b"\n") + \
                        bytes(err.object[:err.start]).count(b"\n")  # newlines in the file before the bad byte
                    start = max(where - GUESS_WINDOW // 2, 0)  # the bytes around it, for the guess
                    handle.seek(start)
                    window = handle.read(GUESS_WINDOW)
                    moved = UnicodeDecodeError(err.encoding, window, where - start, where - start + err.end - err.start,
                                               err.reason)
                    line_start = lines_before - window.count(b"\n", 0, where - start)
                    raise decode_error(path, window, moved, encoding, key, start, line_start) from None
                if not block:
                    return
                offset += len(block)
                lines += block.count(b"\n")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def table_chunks(path: str | Path, columns: list[str], encoding: str = DEFAULT_ENCODING,
                 key: str = "data.encoding", hint: str = "", text: str | None = None):
    """The rows of a CSV / JSON / JSONL / parquet file as ``pandas.DataFrame`` chunks of at most
    :data:`CHUNK_ROWS` rows and the file's columns, parsed by pandas' readers (a JSON list of
    records, which cannot be streamed, comes as one chunk). Call :func:`check_decodes` first: a decoding error
    met here carries no position. ``columns``: the columns parquet reads (the others are never loaded).
    ``text``: the column of texts, kept as the strings the file holds (pandas decides a column's type chunk by
    chunk: a chunk of texts such as "1984" would otherwise become numbers).
    Raises DataError where the file does not parse (the parser's message, then ``hint``)."""
    import io

    import pandas as pd

    suffix = Path(path).suffix.lower()
    codec = _codec(encoding, key)
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            if len(present) < len(columns):  # the caller names what is missing from the column list
                yield pd.DataFrame(columns=parquet.schema_arrow.names)
                return
            for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=present):
                yield batch.to_pandas()
            return
        as_written = {text: object} if text else None
        if suffix == ".csv":
            yield from pd.read_csv(path, encoding=codec, chunksize=CHUNK_ROWS, dtype=as_written)
        elif suffix == ".jsonl":
            yield from pd.read_json(path, encoding=codec, lines=True, chunksize=CHUNK_ROWS, dtype=as_written)
        else:
            yield pd.read_json(io.StringIO(read_text(path, encoding, key)), dtype=as_written)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        found = _bad_json_line(path, codec) if suffix == ".jsonl" and isinstance(err, ValueError) else None
        raise DataError(f"cannot read {path} as {suffix[1:]}: {found or err}{hint}") from None


def _bad_json_line(path, codec: str) -> str | None:
    """The first line of a JSON Lines file that is not JSON, described by its line number in the file (pandas
    names a position in the chunk it was parsing); None if every line parses."""
    import json

    with open(path, encoding=codec, newline="\n") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as err:
                    return f"line {number} is not JSON ({err.msg}, column {err.colno}): {line.strip()[:80]!r}"
    return None
