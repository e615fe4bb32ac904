"""The on-disk cache of generated data sets: one ``.npz`` file per data set, named by a hash of
every generation parameter, written atomically and checked when read."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

__all__ = ["cache_directory", "cache_file", "generating", "load_arrays", "save_arrays"]


def cache_directory(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir``, else ``$EQUIRELAX_CACHE``, else ``$XDG_CACHE_HOME/equirelax``, else
    ``~/.cache/equirelax``."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir: expected a path or None, received {cache_dir!r}")
        return Path(cache_dir).expanduser()
    if os.environ.get("EQUIRELAX_CACHE"):
        return Path(os.environ["EQUIRELAX_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "equirelax"
    return Path.home() / ".cache" / "equirelax"


def cache_file(directory: Path, stem: str, params: dict[str, Any]) -> Path:
    """``directory / f"{stem}-{hash of params}.npz"``."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"{stem}-{digest}.npz"


def load_arrays(
    path: Path, params: dict[str, Any], shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray] | None:
    """The cached arrays named in ``shapes``, or ``None``: when ``path`` does not exist, or
    (with a warning) when it cannot be read, was made with other ``params``, holds other shapes
    or non-finite values."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in shapes}
            stored_params = json.loads(str(stored["params"]))
        problems = [k for k in shapes if arrays[k].shape != shapes[k]]
        if stored_params != params or problems:
            raise ValueError(f"unexpected parameters or shapes ({problems})")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError("non-finite values")
    except Exception as error:  # a truncated or foreign file: regenerate it
        warnings.warn(
            f"cache_dir: ignoring the unreadable cache file {path} ({error!r}); regenerating it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return arrays


@contextmanager
def generating(path: Path, progress: bool = False) -> Iterator[None]:
    """Hold a lock beside ``path`` (``path.lock``) while its data set is looked up and, if
    missing, generated and saved: processes that need the same data at once generate it once,
    the others wait (saying so with ``progress``) and then read it."""
    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if progress:
                print(f"waiting for another process to generate {path.name}", file=sys.stderr)
            lock.acquire()
    except OSError as error:
        raise _unusable(path.parent, error) from error
    try:
        yield
    finally:
        lock.release()


def _unusable(directory: Path, error: OSError) -> OSError:
    return OSError(
        f"cache_dir: {directory} cannot hold the data cache ({error.strerror or error}); "
        "pass cache_dir= or set EQUIRELAX_CACHE to a writable directory"
    )


def save_arrays(path: Path, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
    """Write ``arrays`` and ``params`` to ``path`` through a temporary file in the same
    directory and ``os.replace`` (readers never see a partial file). A directory that cannot
    hold the cache is named, with how to choose another (``cache_dir=`` or
    ``$EQUIRELAX_CACHE``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _unusable(path.parent, error) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, params=np.array(json.dumps(params, sort_keys=True)), **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
