"""Checkpoints that are atomic, verified and never silently wrong.

Two kinds:

* **Training checkpoints** (``CheckpointStore``): the full training state at a step, written by
  orbax into ``<dir>/step_<N>/`` (orbax writes a temporary folder and renames it when complete),
  then committed by ``<dir>/step_<N>.json`` — metadata with the sha256 of every file of the step,
  written atomically (temporary file + ``os.replace``). A step without its JSON is incomplete and is
  ignored. orbax does not detect damaged files (it can restore wrong values silently), so every file
  is hashed again on restore; a damaged step is reported by name and the previous good one is used.
* **Shipped parameters** (``export_params`` / ``load_params``): one msgpack file of a parameter
  pytree (e.g. the EMA weights) plus ``<file>.json`` holding its sha256 and provenance; loading
  verifies the sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from sbgc.storage import file_digest, write_json_atomic


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or does not match what it is restored into."""


def _tree_file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``, keyed by its path relative to ``root``."""
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _combined_sha256(files: dict[str, str]) -> str:
    """One digest for a folder: sha256 over the sorted (name, file digest) pairs."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


def config_mismatch(expected: dict, found: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two (nested) config dicts."""
    out = []
    for k in sorted(set(expected) | set(found)):
        a, b = expected.get(k, "<absent>"), found.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_mismatch(a, b, f"{prefix}{k}.")
        elif json.loads(json.dumps(a, default=str)) != json.loads(json.dumps(b, default=str)):
            out.append(f"{prefix}{k}: checkpoint has {b!r}, expected {a!r}")
    return out


class CheckpointStore:
    """Training checkpoints under one folder: save, list, verify, restore, keep the last ``keep``."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        import orbax.checkpoint as ocp  # imported lazily: orbax is slow to import

        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._ckptr = ocp.StandardCheckpointer()

    def _step_dir(self, step: int) -> Path:
        return self.dir / f"step_{step:09d}"

    def _meta_path(self, step: int) -> Path:
        return self.dir / f"step_{step:09d}.json"

    def steps(self) -> list[int]:
        """Committed steps (those whose metadata JSON exists), ascending."""
        return sorted(int(p.stem.split("_")[1]) for p in self.dir.glob("step_*.json"))

    def save(self, step: int, state: Any, metadata: dict) -> Path:
        """Write ``state`` at ``step``, then commit it with its metadata (incl. sha256); prune old steps."""
        target = self._step_dir(step)
        if target.exists():  # an uncommitted leftover of a killed run: replace it
            shutil.rmtree(target)
        self._ckptr.save(target, state)
        self._ckptr.wait_until_finished()
        files = _tree_file_hashes(target)
        meta = dict(metadata, step=step, sha256=_combined_sha256(files), files=files)
        write_json_atomic(self._meta_path(step), meta)
        self._prune()
        return target

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep]:
            self._meta_path(step).unlink(missing_ok=True)
            shutil.rmtree(self._step_dir(step), ignore_errors=True)

    def metadata(self, step: int) -> dict:
        with open(self._meta_path(step)) as f:
            return json.load(f)

    def verify(self, step: int) -> None:
        """Raise :class:`CheckpointError` naming the damaged/missing file if step's files changed."""
        meta, root = self.metadata(step), self._step_dir(step)
        found = _tree_file_hashes(root) if root.exists() else {}
        for name, digest in meta["files"].items():
            if name not in found:
                raise CheckpointError(f"checkpoint {root}: file {name} is missing")
            if found[name] != digest:
                raise CheckpointError(
                    f"checkpoint {root}: file {root / name} is damaged (sha256 {found[name][:12]}…, "
                    f"recorded {digest[:12]}…)"
                )

    def restore(self, step: int, abstract_state: Any, expected_config: dict | None = None) -> tuple[Any, dict]:
        """Verify and restore one step into the structure of ``abstract_state``."""
        meta = self.metadata(step)
        if expected_config is not None:
            diff = config_mismatch(expected_config, meta.get("config", {}))
            if diff:
                raise CheckpointError(f"checkpoint {self._meta_path(step)} does not match this run: " + "; ".join(diff))
        self.verify(step)
        try:
            state = self._ckptr.restore(self._step_dir(step), abstract_state)
        except Exception as e:  # orbax/tensorstore raise bare exceptions on shape mismatch/truncation
            raise CheckpointError(f"checkpoint {self._step_dir(step)} could not be restored: {e}") from e
        return state, meta

    def restore_latest(self, abstract_state: Any, expected_config: dict | None = None) -> tuple[Any, dict] | None:
        """Restore the newest good step; damaged steps are skipped with a warning naming the file.

        A config mismatch is never skipped: it raises. Returns ``None`` when no step exists.
        """
        errors = []
        for step in reversed(self.steps()):
            try:
                return self.restore(step, abstract_state, expected_config)
            except CheckpointError as e:
                if "does not match this run" in str(e):
                    raise
                warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
                errors.append(str(e))
        if errors:
            raise CheckpointError("no intact checkpoint in " + str(self.dir) + ": " + " | ".join(errors))
        return None


# --- shipped parameter files ------------------------------------------------------------------------
def export_params(params: Any, path: str | os.PathLike, metadata: dict) -> dict:
    """Write ``params`` (a pytree of arrays) to ``path`` (msgpack) and ``path.json`` with sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, params)))
    os.replace(tmp, path)
    meta = dict(metadata, file=path.name, sha256=file_digest(path), bytes=path.stat().st_size)
    write_json_atomic(str(path) + ".json", meta)
    return meta


def load_params(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[Any, dict]:
    """Load a shipped parameter file after checking its sha256 against its JSON (and ``expected_sha256``)."""
    path = Path(path)
    meta_path = Path(str(path) + ".json")
    for p in (path, meta_path):
        if not p.exists():
            raise FileNotFoundError(f"parameter file {p} not found")
    meta = json.loads(meta_path.read_text())
    digest = file_digest(path)
    for want, where in ((meta.get("sha256"), meta_path), (expected_sha256, "the caller")):
        if want is not None and digest != want:
            raise CheckpointError(f"{path}: sha256 {digest} does not match {want} recorded in {where}")
    params = serialization.msgpack_restore(path.read_bytes())
    return params, meta
