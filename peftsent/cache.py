"""Tokenized splits cached on disk across runs, keyed by data, tokenizer and token policy.

``compare`` and ``tune`` run many recipes over the same reviews with the same
tokenizer; each used to tokenize every review again (about 10 s for the 25,000
offline IMDb reviews on 2 CPU cores). :func:`cached_map` wraps whatever function
tokenizes (``datasets.Dataset.map`` with ``cache_file_name``): the first run writes
an Arrow file, later runs memory-map it instead of tokenizing, and the mapped
rows live on disk, not in the process's memory.

The key (:func:`cache_key`) is a BLAKE2b hash of

- the data: every value of every column of the split (so a different subset,
  seed or file gives another key),
- the tokenizer: its class, ``name_or_path`` and full serialized state
  (vocabulary, normalizer, truncation side) for fast tokenizers, else its vocabulary,
- the token policy: the caller's description (e.g. ``max_length``), the source
  text of the tokenizing function and the peftsent version.

Where: ``$PEFTSENT_CACHE/tokenized`` (default ``~/.cache/peftsent/tokenized``); local data files converted
to Arrow (:func:`files_root`) beside it in ``files``.
``PEFTSENT_CACHE=off`` turns caching off (every call tokenizes in memory).
Files are written to a temporary name and renamed by ``datasets``, so two
processes filling the same entry cannot leave a half-written file behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

from peftsent import __version__
from peftsent.errors import DataError

#: environment variable naming the cache root ("off" disables the cache)
CACHE_ENV = "PEFTSENT_CACHE"


def cache_root() -> Path | None:
    """Directory of tokenized splits, or None when caching is off."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in {"off", "0", "false", "none"}:
        return None
    base = Path(value).expanduser() if value else Path.home() / ".cache" / "peftsent"
    return base / "tokenized"


_SCRATCH: list = []  # the process's temporary directory when caching is off (removed at exit)


def files_root() -> Path:
    """Directory of the Arrow files local data files are converted into (``$PEFTSENT_CACHE/files``, default
    ``~/.cache/peftsent/files``); with ``PEFTSENT_CACHE=off``, a temporary directory removed when the process
    exits. Created if missing. Raises DataError if it cannot be made or written to, naming the fix."""
    import tempfile

    root = cache_root()
    if root is None:
        if not _SCRATCH:
            _SCRATCH.append(tempfile.TemporaryDirectory(prefix="peftsent-files-"))
        return Path(_SCRATCH[0].name)
    path = root.parent / "files"
    try:
        path.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(path, os.W_OK) else "not writable"
    except OSError as err:
        problem = err.strerror or str(err)
    if problem:
        raise DataError(f"cannot write converted data files into {path} ({CACHE_ENV}="
                        f"{os.environ.get(CACHE_ENV) or 'unset, so ~/.cache/peftsent'}): {problem}; set {CACHE_ENV} "
                        f"to a writable directory, or {CACHE_ENV}=off to convert into a temporary directory per run")
    return path


def data_fingerprint(dataset) -> str:
    """Hash of every value of every column of ``dataset`` (a ``datasets.Dataset``), in row order."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(dataset.column_names):
        digest.update(name.encode())
        for batch in dataset.with_format("arrow").iter(batch_size=4096):
            column = batch[name]
            digest.update(json.dumps(column.to_pylist(), ensure_ascii=False).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of a tokenizer's class, name and full state (vocabulary, normalizer, truncation side)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|"
                  f"{getattr(tokenizer, 'truncation_side', '')}|{getattr(tokenizer, 'padding_side', '')}".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # its truncation/padding state is whatever the last call left: not part of the identity
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        digest.update(json.dumps(state, sort_keys=True).encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


def _function_source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return getattr(function, "__qualname__", repr(function))


def cache_key(dataset, tokenizer, policy: dict, function) -> str:
    """Key of one tokenized split: hash of (data, tokenizer, token policy, tokenizing code, peftsent version)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (data_fingerprint(dataset), tokenizer_fingerprint(tokenizer),
                 json.dumps(policy, sort_keys=True, default=str), _function_source(function), __version__):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def cached_map(dataset, function, tokenizer, policy: dict, desc: str = "tokenizing", **map_kwargs):
    """``dataset.map(function, batched=True, **map_kwargs)``, read back from disk when done before.

    ``policy``: everything besides data and tokenizer that changes the output
    (``{"max_length": 256}``). Returns a ``datasets.Dataset`` (memory-mapped
    from the cache file when caching is on). Raises what ``function`` raises.
    """
    root = cache_root()
    if root is None:
        return dataset.map(function, batched=True, desc=desc, **map_kwargs)
    key = cache_key(dataset, tokenizer, policy, function)
    root.mkdir(parents=True, exist_ok=True)
    return dataset.map(function, batched=True, desc=desc, cache_file_name=str(root / f"{key}.arrow"),
                       load_from_cache_file=True, new_fingerprint=key, **map_kwargs)
