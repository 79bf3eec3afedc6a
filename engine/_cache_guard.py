"""Invalidate numba's on-disk cache when any engine source file changes.

numba keys a cached kernel on the source file of the jitted function only; the fused tick calls
functions from several modules (electrical, thermal, aging, ...) and folds constants from
``layout``, so an edit there would otherwise leave a stale kernel in the cache. Before the kernels
are imported, this compares a hash of the engine's kernel sources (the modules the kernels are
compiled from, :data:`KERNEL_SOURCES`) with the one recorded next to the cache and clears the
engine's cache entries when they differ. Plain-Python modules (farm, config, presets, checkpoint)
are left out, so editing them does not cost a recompile.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_STAMP = "bess_engine_sources.sha256"
#: engine modules that hold numba-compiled code or constants folded into it
KERNEL_SOURCES = ("aging.py", "ambient.py", "chemistry.py", "electrical.py", "kernel.py",
                  "layout.py", "profiles.py", "sensors.py", "thermal.py")


#: other packages whose compiled functions call engine kernels (their caches go stale too)
_DEPENDENT_DIRS = (_HERE.parent / "interfaces", _HERE.parent / "interfaces" / "modbus")


def _cache_dir(src: Path = _HERE) -> Path:
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        # numba mirrors the source path below NUMBA_CACHE_DIR
        return Path(env) / src.relative_to(src.anchor)
    return src / "__pycache__"


def source_hash() -> str:
    h = hashlib.sha256()
    for name in KERNEL_SOURCES:
        path = _HERE / name
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
        for d in (cache, *(_cache_dir(x) for x in _DEPENDENT_DIRS if x.is_dir())):
            if d.is_dir():
                for entry in d.iterdir():
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
