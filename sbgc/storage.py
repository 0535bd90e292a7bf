"""Files the project writes, and where and on what they were written: atomic writes (a temporary file
renamed into place, so an interrupted write never leaves half a file), file digests, the repository's
root, its git state and the device. The bottom layer: the data decode cache, checkpoints, the results
cache and the provenance of every number all write and describe themselves through these.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike
REPO_ROOT = Path(__file__).resolve().parents[1]


def file_digest(path: PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_savez(path: Path, **arrays) -> None:
    """Write an uncompressed ``.npz`` to a temporary file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def repo_root() -> Path:
    """The repository's top folder (the parent of the ``sbgc`` package)."""
    return REPO_ROOT


def git_state(root: Path | None = None) -> tuple[str, bool | None]:
    """(HEAD commit or ``"unknown"``, whether tracked files outside results/ differ from it).

    ``dirty`` is None when git itself is unavailable (e.g. a copy of the tree without ``.git``).
    """
    root = root or repo_root()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    return commit, (None if status is None else bool(status))


def device_info() -> dict[str, Any]:
    """The first JAX device's platform and kind, the device count and the host's CPU count."""
    import jax

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "host_cpus": os.cpu_count(),
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
    }
