"""Where every number in the book comes from.

Each notebook collects one :class:`Provenance` record (profile, resolved knobs, data source,
checkpoint sha256, sample sizes, git commit, device, JAX version, time), shows
:func:`provenance_line` under each number, table and figure, and writes its numbers with the record
to ``results/<notebook>.json`` through :func:`write_results`.

:func:`setup_jax` points JAX's persistent compilation cache at ``<repo>/.jax_cache`` (or at
``$JAX_COMPILATION_CACHE_DIR``), so that the notebooks of one run, and later runs, share compiled
programs. jax 0.10 also reads ``JAX_COMPILATION_CACHE_DIR`` by itself when it is imported; the book
runner sets it for its kernels. Notebooks still call :func:`setup_jax` first, which makes the cache
work when a notebook is opened by hand too.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sbgc.book.profiles import Params
from sbgc.storage import device_info, git_state, repo_root

JAX_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
RESULTS_ENV = "SBGC_RESULTS_DIR"  # redirects results/*.json (used by tests)


def results_dir() -> Path:
    """``$SBGC_RESULTS_DIR`` if set, else ``<repo>/results``."""
    return Path(os.environ.get(RESULTS_ENV) or repo_root() / "results")


def default_jax_cache_dir() -> Path:
    return repo_root() / ".jax_cache"


def setup_jax(cache_dir: str | os.PathLike | None = None) -> Path:
    """Enable JAX's persistent compilation cache; returns the folder used.

    Precedence: ``cache_dir``, then ``$JAX_COMPILATION_CACHE_DIR``, then ``<repo>/.jax_cache``.
    """
    import jax

    path = Path(cache_dir or os.environ.get(JAX_CACHE_ENV) or default_jax_cache_dir())
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder (its files' relative paths and bytes, in sorted order)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {path}: no such file or folder")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Everything needed to say which run produced a number."""

    notebook: str
    profile: str
    params: Mapping[str, Any]  # the resolved knobs
    overridden: tuple[str, ...]  # knobs set explicitly rather than by the profile
    data_source: str  # e.g. "CIFAR-10 (JPEG copy), test split"
    sample_sizes: Mapping[str, int]  # e.g. {"train": 6000, "test": 900}
    checkpoint: str | None
    checkpoint_sha256: str | None
    commit: str
    dirty: bool | None
    device: Mapping[str, Any]  # see device_info()
    timestamp: str  # UTC, ISO 8601

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["params"] = dict(self.params)
        record["overridden"] = list(self.overridden)
        return record

    def line(self, note: str | None = None, cached: Any = None) -> str:
        """See :func:`provenance_line`."""
        return provenance_line(self, note=note, cached=cached)


def collect_provenance(
    params: Params,
    *,
    data_source: str,
    sample_sizes: Mapping[str, int] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Provenance:
    """The provenance of a notebook run with resolved knobs ``params``.

    ``checkpoint`` (a file or an orbax folder) is hashed with :func:`sha256_of`.
    """
    if not isinstance(params, Params):
        raise ValueError(f"expected the Params of chapter_params(...), got {type(params).__name__}")
    if not data_source:
        raise ValueError("data_source must name the data, e.g. 'CIFAR-10 (JPEG copy), test split'")
    sizes = {str(k): int(v) for k, v in (sample_sizes or {}).items()}
    commit, dirty = git_state()
    return Provenance(
        notebook=params.notebook,
        profile=params.profile,
        params=dict(params.values),
        overridden=tuple(params.overridden),
        data_source=data_source,
        sample_sizes=sizes,
        checkpoint=None if checkpoint is None else str(checkpoint),
        checkpoint_sha256=None if checkpoint is None else sha256_of(checkpoint),
        commit=commit,
        dirty=dirty,
        device=device_info(),
        timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def entries_provenance(entries: list, *, list_up_to: int = 3) -> str:
    """Provenance of several entries of one computation (e.g. the blocks of a per-image loop): each
    entry's :meth:`sbgc.cache.CachedResult.provenance_line` for up to ``list_up_to`` of them, else one summary
    (how many loaded and computed now, their folder and keys, when, where and in how many seconds in
    all they were computed, at which commits, how many were imported)."""
    if len(entries) <= list_up_to:
        return " · ".join(e.provenance_line() for e in entries)
    records = [e.record for e in entries]
    loaded = [e for e in entries if not e.computed_now]
    folders = sorted({e.path.parent.name for e in loaded})
    keys = ", ".join(e.path.stem.rsplit("-", 1)[-1][:8] for e in entries)
    commits = list(dict.fromkeys(r["commit"][:8] + (" + changes" if r["commit"].endswith("+ changes") else "")
                                 for r in records))
    shown = ", ".join(commits[:6]) + (f" and {len(commits) - 6} more" if len(commits) > 6 else "")
    devices = ", ".join(sorted({r["device"] for r in records}))
    imported = sum(1 for r in records if r.get("origin"))
    times = sorted(r["computed_at"] for r in records)
    return (f"{len(entries)} entries, {len(loaded)} loaded from {'/'.join(folders) or '-'} and "
            f"{len(entries) - len(loaded)} computed now (keys {keys}; computed {times[0]} … {times[-1]} on {devices} "
            f"in {sum(r['seconds'] for r in records):,.0f} s in all, at commit(s) {shown}"
            + (f"; {imported} imported from an earlier run, see its JSON" if imported else "") + ")")


def provenance_line(prov: Provenance, note: str | None = None, cached: Any = None) -> str:
    """One short markdown line naming the run behind a number, table or figure. ``cached``: the
    :class:`sbgc.cache.CachedResult` (or a sequence of them) the numbers come from, which says
    whether each was computed now or loaded, and when, where and in how long it was computed."""
    commit = prov.commit if prov.commit == "unknown" else prov.commit[:8]
    if prov.dirty:
        commit += " + uncommitted changes"
    parts = [f"profile `{prov.profile}`"]
    if prov.overridden:
        parts.append("overridden: " + ", ".join(f"{k}={prov.params[k]}" for k in prov.overridden))
    parts.append(f"data: {prov.data_source}")
    if prov.sample_sizes:
        parts.append("n: " + ", ".join(f"{k} {v:,}" for k, v in prov.sample_sizes.items()))
    if prov.checkpoint_sha256:
        parts.append(f"checkpoint {Path(prov.checkpoint).name} sha256 `{prov.checkpoint_sha256[:12]}`")
    device = prov.device
    parts.append(f"{device['device_kind']} ({device['platform']}), jax {device['jax_version']}")
    parts.append(f"commit `{commit}`")
    parts.append(prov.timestamp.replace("T", " ").replace("+00:00", " UTC"))
    entries = [] if cached is None else [cached] if hasattr(cached, "provenance_line") else list(cached)
    by_name: dict[str, list] = {}
    for entry in entries:  # several entries of one computation (a loop's blocks) are summarised together
        by_name.setdefault(entry.record["inputs"]["name"], []).append(entry)
    parts.extend(f"{name}: {entries_provenance(group)}" for name, group in by_name.items())
    head = f"**{note}.** " if note else ""
    return f"{head}*Provenance:* " + " · ".join(parts)


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; non-finite floats are an error (use None for 'not available')."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "shape") and getattr(value, "shape") != ():
        return _jsonable(np.asarray(value).tolist(), where)
    if hasattr(value, "item"):  # numpy / jax scalar
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"result {where} is {value}; store None for a number that is not available")
        return value
    raise ValueError(f"result {where} has type {type(value).__name__}, which is not a JSON number/text")


def write_results(
    numbers: Mapping[str, Any], prov: Provenance, *, directory: str | os.PathLike | None = None
) -> Path:
    """Write ``{"notebook", "numbers", "provenance"}`` to ``<results>/<notebook>.json``; returns the path."""
    if not isinstance(prov, Provenance):
        raise ValueError(f"expected a Provenance from collect_provenance, got {type(prov).__name__}")
    record = {
        "notebook": prov.notebook,
        "numbers": _jsonable(numbers, "numbers"),
        "provenance": _jsonable(prov.as_dict(), "provenance"),
    }
    folder = Path(directory) if directory is not None else results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prov.notebook}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_results(notebook: str, *, directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The record that :func:`write_results` wrote for ``notebook``."""
    path = Path(directory if directory is not None else results_dir()) / f"{notebook}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results for {notebook}: {path} does not exist (run the notebook)")
    return json.loads(path.read_text())
