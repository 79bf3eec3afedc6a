"""Invalidate numba's on-disk cache when any engine source file changes.

numba keys a cached kernel on the source file of the jitted function only; the fused tick calls
functions from several modules (electrical, thermal, aging, ...) and folds constants from
``layout``, so an edit there would otherwise leave a stale kernel in the cache. Before the kernels
are imported, this compares a hash of every engine source file with the one recorded next to the
cache and clears the engine's cache entries when they differ.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_STAMP = "bess_engine_sources.sha256"


def _cache_dir() -> Path:
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        # numba mirrors the source path below NUMBA_CACHE_DIR
        return Path(env) / _HERE.relative_to(_HERE.anchor)
    return _HERE / "__pycache__"


def source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(_HERE.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_fresh_cache() -> None:
    cache = _cache_dir()
    digest = source_hash()
    stamp = cache / _STAMP
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for entry in cache.iterdir():
            if entry.suffix in (".nbi", ".nbc"):
                entry.unlink(missing_ok=True)
        stamp.write_text(digest)
    except OSError:
        # A read-only install: numba then uses its own user-wide cache or compiles in memory.
        pass


def kernels_cached() -> bool:
    """True when the tick kernels are in the on-disk cache (a run starts without compiling)."""
    cache = _cache_dir()
    try:
        return any(cache.glob("kernel.run_steps_*.nbi"))
    except OSError:
        return False
