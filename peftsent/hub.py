"""Where a Hugging Face Hub model or dataset comes from: the network, the local cache, or nowhere.

``transformers`` retries an unreachable hub for about half a minute before it
falls back to the cache; peftsent asks once, with a short timeout, and then
uses the cached snapshot directly, so an offline machine gets its answer fast.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

#: seconds to wait for a TCP connection to the hub before calling it unreachable
CONNECT_TIMEOUT_S = 3.0


def _offline_by_env() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """True if the hub endpoint (``HF_ENDPOINT`` or huggingface.co) accepts a TCP connection.

    Honors ``HF_HUB_OFFLINE=1`` (returns False without touching the network).
    """
    if _offline_by_env():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def cached_snapshot(repo_id: str, filename: str, repo_type: str = "model") -> Path | None:
    """The local snapshot folder of ``repo_id`` if ``filename`` is in the HF cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
    except Exception:  # malformed repo id: treat as not cached
        return None
    if isinstance(found, str) and Path(found).exists():
        return Path(found).parent
    return None


def looks_like_repo_id(name: str) -> bool:
    """True if ``name`` could be a hub id (``name`` or ``owner/name``)."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(
        p and p not in {".", ".."} and all(c.isalnum() or c in "-_." for c in p) for p in parts
    )
