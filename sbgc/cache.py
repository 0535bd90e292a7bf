"""A results cache for the book's expensive computations, verified on load and shipped in the repository.

An entry is one computation's arrays (class log-likelihood tables, bound tables, attack results):
``<directory>/<name>-<key>.npz`` (numpy, no pickle) with ``<name>-<key>.json`` beside it. The key is
the sha256 of everything that determines the arrays, written out in the JSON so a reader sees it:

* ``name`` and ``code_version`` — the computation, and a version its author bumps by hand whenever
  the computing code changes what it returns;
* ``settings`` — the knobs (JSON: dataclasses, tuples and numbers; a dataclass field with
  ``metadata={"cache_key": False}``, such as a scorer's chunk size, does not change the numbers and
  stays out);
* ``checkpoint_sha256`` — the model's file;
* ``data_source`` and the sha256 of the evaluated ``image_indices``.

The JSON also records the sha256 of the ``.npz`` file and when, where (device, commit) and in how many
seconds the entry was computed (and, for an entry imported from an earlier run of the same code, from
where: ``origin``). :meth:`ResultCache.get` never replaces a damaged entry silently: one
whose bytes do not match the recorded sha256, or whose JSON describes other inputs, is an error
naming the file (a broken shipped cache must fail CI). A missing entry is computed and written
atomically, unless the cache is ``read_only`` (CI rendering a shipped run), where it is an error
listing the key's inputs. ``recompute=True`` recomputes and overwrites.

Several processes can fill one cache directory together (``SBGC_SHARD=I/N``, :mod:`sbgc.shard`):
each missing entry is computed by its owning shard only, and :meth:`ResultCache.get` in the others
waits for it to appear (:meth:`ResultCache.wait_for`).

The book's chapters open their cache with :func:`chapter_cache` (``<repo>/results-cache``, or
``$SBGC_RESULTS_CACHE``) in one of :data:`MODES`, which ``python -m sbgc.book run --cache MODE`` passes
to every notebook.

Why not ``joblib.Memory``: it keys entries by the hash of the function's source text, so any edit (a
docstring, a renamed local) discards every shipped result, while a change in a function the cached one
calls is missed; it stores outputs as pickles (not safe to load from a repository, and tied to class
paths that the package layout changes); it does not verify stored bytes on load; and it has no
"never compute" mode. The inputs here are explicit and few, so the key is written out instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sbgc.shard import WAIT_ENV, Shard, current_shard, own_blocks_first, owner_of_entry, poll, wait_seconds
from sbgc.storage import atomic_savez, device_info, file_digest, git_state, repo_root, write_json_atomic

FORMAT = "sbgc-result-cache/1"
CACHE_ENV = "SBGC_RESULTS_CACHE"  # where chapter_cache keeps its entries (default <repo>/results-cache); not
# SBGC_CACHE_DIR, the decode cache of the datasets (sbgc.data.files), which --out must not move
MODES = ("use", "read-only", "recompute")  # load or compute-and-store; load only; compute and overwrite


class CacheError(RuntimeError):
    """A cache entry is damaged, or missing from a read-only cache."""


def plain(value: Any) -> Any:
    """JSON-ready form of settings: dataclasses as dicts, tuples as lists, numpy scalars as numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # fields that do not change the numbers
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)  # (chunk sizes) stay out
                if f.metadata.get("cache_key", True)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cache key: {type(value).__name__} {value!r} is not a setting (numbers, strings, tuples, dataclasses)")


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """Everything that determines a cached computation's arrays."""

    name: str
    code_version: int
    settings: Any
    checkpoint_sha256: str
    data_source: str
    image_indices: np.ndarray  # int [N], the evaluated images' positions in their split

    def inputs(self) -> dict[str, Any]:
        indices = np.ascontiguousarray(np.asarray(self.image_indices, np.int64))
        return {"name": self.name, "code_version": int(self.code_version), "settings": plain(self.settings),
                "checkpoint_sha256": self.checkpoint_sha256, "data_source": self.data_source,
                "n_images": int(indices.size), "image_indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest()}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs(), sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedResult:
    """Arrays of an entry and how they came to be: ``computed_now`` or loaded, with the record
    (when, where, in how many seconds they were computed)."""

    arrays: dict[str, np.ndarray]
    computed_now: bool
    record: dict[str, Any]
    path: Path

    def provenance_line(self) -> str:
        """e.g. 'loaded from results-cache/x-1a2b….npz (computed 2026-11-30T15:00:00+00:00 on 1x cpu in 812 s, commit …)'."""
        r = self.record
        how = "computed now" if self.computed_now else f"loaded from {self.path.parent.name}/{self.path.name}"
        origin = f"; imported from {r['origin']}" if r.get("origin") else ""
        commit = r["commit"][:8] + (" + changes" if r["commit"].endswith("+ changes") else "")
        return (f"{how} (computed {r['computed_at']} on {r['device']} in {r['seconds']:.0f} s, "
                f"commit {commit}{origin})")


class ResultCache:
    """Entries under ``directory``; ``read_only``: a missing entry is an error, never computed;
    ``recompute``: every :meth:`get` computes and overwrites (the default of its ``recompute``)."""

    def __init__(self, directory: str | os.PathLike, *, read_only: bool = False, recompute: bool = False,
                 shard: Shard | None = None):
        if read_only and recompute:
            raise ValueError("a cache cannot be both read-only and recomputing")
        self.directory = Path(directory)
        self.read_only = read_only
        self.recompute = recompute
        self.shard = current_shard() if shard is None else shard
        if recompute and not self.shard.alone:
            raise ValueError(f"shard {self.shard}: recomputing into a shared cache cannot tell the other shards' "
                             "new entries from the old ones; run the shards into a fresh cache directory instead")

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        stem = f"{key.name}-{key.digest()[:16]}"
        return self.directory / f"{stem}.npz", self.directory / f"{stem}.json"

    def load(self, key: CacheKey) -> CachedResult | None:
        """The verified entry for ``key``, or None if there is none. Raises CacheError if it is damaged."""
        data, meta = self.paths(key)
        if not meta.exists() and not data.exists():
            return None
        if not (meta.is_file() and data.is_file()):
            raise CacheError(f"cache entry {data.stem}: one of {data.name} and {meta.name} is missing")
        record = json.loads(meta.read_text())
        if record.get("format") != FORMAT or record.get("key") != key.digest() or record.get("inputs") != key.inputs():
            raise CacheError(f"{meta}: does not describe this computation (format or key differs); delete it "
                             "or recompute")
        got = file_digest(data)
        if got != record.get("npz_sha256"):
            raise CacheError(f"{data}: sha256 {got} does not match {record.get('npz_sha256')} in {meta.name}; the "
                             "entry is damaged — recompute it (--recompute) rather than trust it")
        with np.load(data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return CachedResult(arrays, False, record, data)

    def get(self, key: CacheKey, compute: Callable[[], Mapping[str, np.ndarray]], *, recompute: bool | None = None,
            device: str | None = None, commit: str | None = None) -> CachedResult:
        """The entry for ``key``: loaded (verified) if present and not ``recompute``, else computed by
        ``compute() -> {name: array}`` and written (``.npz`` first, then its ``.json``, each atomically).
        ``device`` and ``commit`` default to this machine's and the repository's HEAD."""
        owner = self.shard.index if self.shard.alone or self.read_only else owner_of_entry(self.shard, key.digest())
        if owner != self.shard.index:  # another shard's entry (possibly being written right now): wait for it
            return self.wait_for(key, owner)
        if not (self.recompute if recompute is None else recompute):
            found = self.load(key)
            if found is not None:
                return found
        if self.read_only:
            raise CacheError(f"no cached result for {key.name} (key {key.digest()[:16]}) in {self.directory} and "
                             f"the cache is read-only; its inputs: {json.dumps(key.inputs(), sort_keys=True)}")
        if commit is None:  # the code that computes is the one checked out now, not at the end of a long run
            commit = _commit_now()
        start = time.perf_counter()
        arrays = dict(compute())
        seconds = time.perf_counter() - start
        return self.put(key, arrays, seconds=seconds, device=device, commit=commit)

    def wait_for(self, key: CacheKey, owner: int, *, poll_s: float = 5.0, timeout_s: float | None = None) -> CachedResult:
        """The entry for ``key`` once shard ``owner`` has written it into this (shared) directory
        (:mod:`sbgc.shard`): polled at intervals doubling from 0.1 s to ``poll_s`` until ``timeout_s``
        (default ``$SBGC_SHARD_WAIT``), then a CacheError naming the entry, its owner and the directory."""
        timeout_s = wait_seconds() if timeout_s is None else timeout_s
        _, meta = self.paths(key)
        # the .json is written after the .npz: its presence means the entry is whole
        found = poll(lambda: self.load(key) if meta.exists() else None, timeout_s, poll_s=poll_s,
                     on_wait=lambda: print(f"[sbgc.cache] shard {self.shard}: waiting for {meta.stem}, shard "
                                           f"{owner}/{self.shard.count}'s entry", flush=True))
        if found is None:
            raise CacheError(f"shard {self.shard}: {key.name} (key {key.digest()[:16]}) is computed by shard "
                             f"{owner}/{self.shard.count}, and it did not appear in {self.directory} within "
                             f"{timeout_s:.0f} s (${WAIT_ENV}); are all {self.shard.count} shards running the "
                             "same chapters with this cache directory?")
        return found

    def put(self, key: CacheKey, arrays: Mapping[str, np.ndarray], *, seconds: float, device: str | None = None,
            commit: str | None = None, computed_at: str | None = None, origin: str | None = None) -> CachedResult:
        """Write ``arrays`` as the entry for ``key`` (computed in ``seconds``). ``computed_at``
        (default now), ``device``, ``commit`` and ``origin`` describe an entry imported from an
        earlier run of the same computation (e.g. a shipped evaluation's partial results)."""
        if self.read_only:
            raise CacheError(f"cannot write {key.name} into the read-only cache {self.directory}")
        arrays = {k: np.asarray(v) for k, v in dict(arrays).items()}
        if any(a.dtype == object for a in arrays.values()):
            raise TypeError(f"cache {key.name}: object arrays cannot be stored without pickle")
        if device is None:
            info = device_info()
            device = f"{info['device_count']}x {info['device_kind']}"
        commit = _commit_now() if commit is None else commit
        self.directory.mkdir(parents=True, exist_ok=True)
        data, meta = self.paths(key)
        atomic_savez(data, **arrays)
        record = {"format": FORMAT, "key": key.digest(), "inputs": key.inputs(), "npz_sha256": file_digest(data),
                  "arrays": {k: [str(a.dtype), list(a.shape)] for k, a in arrays.items()},
                  "computed_at": computed_at or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "seconds": float(seconds), "device": device, "commit": commit}
        if origin:
            record["origin"] = origin
        write_json_atomic(meta, record)
        return CachedResult(arrays, True, record, data)


    def rekey(self, name: str, migrate: Callable[[Any], Any], *, reason: str) -> list[tuple[str, str]]:
        """Re-key the entries called ``name`` whose settings ``migrate(settings) -> settings`` changes: a
        one-off migration when a knob that does not change these arrays enters the key (e.g. a new
        setting whose default is what the entry was computed with). Each entry is verified first (its
        bytes against its record), its ``.npz`` renamed unchanged and its record rewritten with the new
        inputs and a ``rekeyed`` note (old key, reason). Returns [(old stem, new stem)]."""
        if self.read_only:
            raise CacheError(f"cannot re-key entries of the read-only cache {self.directory}")
        moved = []
        for meta in sorted(self.directory.glob(f"{name}-*.json")):
            record = json.loads(meta.read_text())
            inputs = record["inputs"]
            if inputs["name"] != name:  # another name sharing the prefix
                continue
            new_settings = plain(migrate(inputs["settings"]))
            if new_settings == inputs["settings"]:
                continue
            data = meta.with_suffix(".npz")
            if file_digest(data) != record.get("npz_sha256"):
                raise CacheError(f"{data}: sha256 does not match its record; not re-keying a damaged entry")
            new_inputs = {**inputs, "settings": new_settings}
            digest = hashlib.sha256(json.dumps(new_inputs, sort_keys=True).encode()).hexdigest()
            stem = f"{name}-{digest[:16]}"
            new_data, new_meta = self.directory / f"{stem}.npz", self.directory / f"{stem}.json"
            if new_meta.exists() or new_data.exists():
                raise CacheError(f"re-keying {meta.stem}: {stem} exists already")
            rekeyed = record.get("rekeyed", []) + [{"from_key": record["key"], "reason": reason}]
            os.replace(data, new_data)
            write_json_atomic(new_meta, {**record, "key": digest, "inputs": new_inputs, "rekeyed": rekeyed})
            meta.unlink()
            moved.append((meta.stem, stem))
        return moved


def _commit_now() -> str:
    """HEAD, marked "+ changes" when tracked files differ from it (the code that runs is then not HEAD's)."""
    commit, dirty = git_state()
    return commit + (" + changes" if dirty else "")


def default_cache_dir() -> Path:
    """``$SBGC_RESULTS_CACHE`` if set, else ``<repo>/results-cache`` (shipped in git)."""
    return Path(os.environ.get(CACHE_ENV) or repo_root() / "results-cache")


def chapter_cache(mode: str = "use", directory: str | os.PathLike | None = None) -> ResultCache:
    """The cache a chapter computes through: ``mode`` one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"cache mode must be one of {', '.join(MODES)}, got {mode!r}")
    return ResultCache(directory or default_cache_dir(), read_only=mode == "read-only", recompute=mode == "recompute")


def cached_tuple(cache: ResultCache, key: CacheKey, compute: Callable[[], Any], cls: type) -> tuple[Any, CachedResult]:
    """A NamedTuple result ``cls`` of arrays and scalars through ``cache``: ``(result, entry)``.

    ``compute() -> cls(...)``; its fields are stored as arrays (scalars 0-d) and a loaded entry is
    rebuilt as ``cls`` with 0-d fields back as Python scalars, so a loaded result reads like a fresh one.
    """
    entry = cache.get(key, lambda: {name: np.asarray(value) for name, value in compute()._asdict().items()})
    missing = set(cls._fields) - set(entry.arrays)
    if missing:
        raise CacheError(f"{entry.path}: lacks field(s) {sorted(missing)} of {cls.__name__}; bump the code version")
    fields = {name: entry.arrays[name] for name in cls._fields}
    return cls(**{k: (v.item() if v.ndim == 0 else v) for k, v in fields.items()}), entry


def block_key(key: CacheKey, block_size: int, b: int) -> CacheKey:
    """The key of block ``b`` of :func:`cached_blocks`'s computation ``key`` in blocks of ``block_size`` images:
    ``key`` with the block's images and ``block_size`` in its settings (e.g. for a migration of stored entries)."""
    block = np.asarray(key.image_indices, np.int64)[b * block_size : (b + 1) * block_size]
    if block.size == 0:
        raise ValueError(f"{key.name}: block {b} of {block_size} images is past the sample's {len(key.image_indices)}")
    settings = {"computation": plain(key.settings), "block_size": int(block_size)}
    return CacheKey(key.name, key.code_version, settings, key.checkpoint_sha256, key.data_source, block)


def cached_blocks(cache: ResultCache, key: CacheKey, block_size: int,
                  compute: Callable[[int, np.ndarray], Mapping[str, np.ndarray]],
                  *, on_block: Callable[[int, CachedResult], None] | None = None
                  ) -> tuple[dict[str, np.ndarray], list[CachedResult]]:
    """One computation over ``key.image_indices`` in blocks of ``block_size`` images, each block its own entry.

    Block b holds the images ``key.image_indices[b·block_size : (b+1)·block_size]`` and is keyed as ``key``
    with those indices (and ``block_size`` in its settings); ``compute(b, block_indices) -> {name: array
    [n_b, ...]}``. A long computation interrupted anywhere resumes at its first missing block, and a larger
    sample whose indices extend a smaller one (a nested prefix, :func:`sbgc.data.datasets.sample_indices`)
    reuses every block of the smaller. Returns the arrays concatenated over the blocks (axis 0) and the
    blocks' entries (their records carry each block's time); ``on_block(b, entry)`` is called after each.
    Under a sharded cache (:mod:`sbgc.shard`) this process obtains its own blocks (b mod N = I) first, then waits
    for the others' (:func:`sbgc.shard.own_blocks_first`).
    """
    if not (isinstance(block_size, (int, np.integer)) and block_size >= 1):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    indices = np.asarray(key.image_indices, np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"{key.name}: the image indices must be a non-empty 1-D array, got shape {indices.shape}")

    def obtain(b: int) -> CachedResult:
        block = indices[b * block_size : (b + 1) * block_size]
        entry = cache.get(block_key(key, block_size, b), lambda: compute(b, block))
        for name, a in entry.arrays.items():
            if a.ndim == 0 or a.shape[0] != block.size:
                raise CacheError(f"{entry.path}: array {name!r} has shape {a.shape}, not [{block.size}, ...] (one row "
                                 "per image of the block)")
        if on_block is not None:
            on_block(b, entry)
        return entry

    entries = own_blocks_first(-(-indices.size // block_size), obtain, cache.shard)
    names = set(entries[0].arrays)
    if any(set(e.arrays) != names for e in entries):
        raise CacheError(f"{key.name}: the blocks hold different arrays; bump the code version and recompute")
    return {n: np.concatenate([e.arrays[n] for e in entries]) for n in sorted(names)}, entries
