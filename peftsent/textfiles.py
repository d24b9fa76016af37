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


def decode_error(path, data: bytes, err: UnicodeDecodeError, encoding: str, key: str) -> DataError:
    """The DataError of a file that is not ``encoding`` text: where it fails, and the likely encoding."""
    start = max(err.start - GUESS_WINDOW // 2, 0)
    guess = guess_encoding(data[start:start + GUESS_WINDOW])
    line = data.count(b"\n", 0, err.start) + 1
    byte = data[err.start:err.start + 1].hex()
    fix = (f"it looks like {guess} text: set {key}={guess}" if guess and guess != codecs.lookup(encoding).name
           else f"name its encoding with {key} (e.g. cp1252 or latin-1 for a spreadsheet export), or save it as UTF-8")
    return DataError(f"{path} is not {encoding} text: byte 0x{byte} at offset {err.start} (line {line}) does not "
                     f"decode ({err.reason}); {fix}")


def read_table(path: str | Path, encoding: str = DEFAULT_ENCODING, key: str = "data.encoding", hint: str = ""):
    """A CSV / JSON (list of records) / JSONL / parquet file as a ``pandas.DataFrame``, text decoded by
    :func:`read_text`. Raises DataError for a file that does not decode (see there) or does not parse (the
    parser's message, then ``hint``)."""
    import io

    import pandas as pd

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        text = read_text(path, encoding, key)
        if suffix == ".csv":
            return pd.read_csv(io.StringIO(text))
        return pd.read_json(io.StringIO(text), lines=suffix == ".jsonl")
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path} as {suffix[1:]}: {err}{hint}") from None
