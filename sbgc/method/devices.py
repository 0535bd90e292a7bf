"""Rows over devices and device memory: the plumbing every estimator shares, apart from its maths.

An estimator evaluates independent *rows* (an (image, class) solve of the probability-flow ODE; an
(image, class, time) network pass of the bound). This module

* cuts the rows into jitted chunks of one shape (:func:`padded_chunks`), sized from the device's
  memory where it reports one (:func:`chunk_for_memory`, :func:`device_memory_bytes`,
  :func:`compiled_bytes`);
* splits a chunk's rows over the local devices (:func:`row_sharding`, :func:`shard_rows`,
  :func:`sharded_chunk`), or, inside traced code such as an attack's differentiable scores,
  :func:`split_rows_in_trace`;
* turns XLA's out-of-memory errors into a :class:`DeviceMemoryError` that names the knob to lower
  (:func:`names_the_memory_knobs`, :func:`names_the_chunk_knob`).

Rows draw their random numbers before the split, so no result depends on the chunk size or the
number of devices (tested in ``tests/test_likelihood.py``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

Array = jax.Array


def padded_chunks(n_rows: int, chunk: int, *, desc: str, progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows, padded)`` per chunk of ``chunk`` rows, with a tqdm bar over chunks: ``rows`` [≤ chunk]
    the real row indices, ``padded`` [chunk] the same with its last row repeated, so every chunk has
    one shape and compiles once. Results of the padding rows are to be dropped."""
    for start in tqdm(range(0, n_rows, chunk), desc=desc, disable=not progress):
        rows = np.arange(start, min(start + chunk, n_rows))
        yield rows, np.concatenate([rows, np.full(chunk - rows.size, rows[-1])])


def row_sharding(devices: Sequence[Any] | None = None):
    """A ``NamedSharding`` that splits the leading (row) axis over ``devices`` (default: every local
    device), or None for a single device. Rows are independent solves with their own random numbers
    (drawn before the split), so the results do not depend on the number of devices."""
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("rows",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))


class DeviceMemoryError(MemoryError):
    """A computation did not fit in device memory; the message names the knob to lower."""


@contextlib.contextmanager
def names_the_memory_knobs(what: str, advice: str):
    """Turn a device out-of-memory error (XLA's RESOURCE_EXHAUSTED) raised inside the block into a
    :class:`DeviceMemoryError`: "out of device memory ``what``: ``advice``" and XLA's first line."""
    try:
        yield
    except Exception as err:  # XlaRuntimeError has no stable import path across jax versions
        text = str(err)
        if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
            raise
        raise DeviceMemoryError(f"out of device memory {what}: {advice}. XLA said: "
                                f"{(text.splitlines() or [''])[0][:300]}") from err


def names_the_chunk_knob(knob: str, value: int, per_row: str):
    """:func:`names_the_memory_knobs` for a chunk of ``value`` rows (``per_row`` each): lower ``knob``."""
    return names_the_memory_knobs(
        f"evaluating a chunk of {value} rows ({per_row} each, split over {jax.local_device_count()} device(s))",
        f"lower {knob} (e.g. to {max(1, value // 4)}); the results do not depend on it")


def shard_rows(sharding, *arrays):
    """``arrays`` (leading axis = rows, divisible by the device count) placed row-split by
    ``sharding`` (None: unchanged)."""
    if sharding is None:
        return arrays
    return tuple(None if a is None else jax.device_put(a, sharding) for a in arrays)


def sharded_chunk(chunk: int, sharding) -> int:
    """``chunk`` rounded up to a multiple of the number of devices ``sharding`` splits over."""
    n = 1 if sharding is None else sharding.mesh.size
    return -(-int(chunk) // n) * n


AUTO_CHUNK_MAX = 1024  # rows: the most a chunk sized from device memory holds (see chunk_for_memory)
MEMORY_HEADROOM = 0.75  # the share of a device's memory a chunk's program may plan to use


def device_memory_bytes(devices: Sequence[Any] | None = None) -> int | None:
    """The smallest memory limit (bytes) among ``devices`` (default: the local ones), from
    ``memory_stats()["bytes_limit"]``; None where the backend reports none (XLA:CPU)."""
    limits = []
    for d in jax.local_devices() if devices is None else devices:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if not stats or "bytes_limit" not in stats:
            return None
        limits.append(int(stats["bytes_limit"]))
    return min(limits) if limits else None


def compiled_bytes(compiled: Any) -> int:
    """Device memory a compiled program plans for (per device): arguments, outputs, temporaries and
    code, less what outputs alias, from XLA's memory analysis (``jax.stages.Compiled`` or equinox's
    wrapper of one)."""
    m = getattr(compiled, "compiled", compiled).memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               + m.generated_code_size_in_bytes - m.alias_size_in_bytes)  # fmt: skip


def chunk_for_memory(requested: int | None, n_rows: int, compile_at: Callable[[int], Any], *, multiple: int = 1,
                     limit: int | None = None, fallback: int = 128,
                     remedy: str = "lower n_probes (one row is one solve with every probe)") -> tuple[int, Any]:  # fmt: skip
    """Rows per jitted call, and the program compiled for it (None where nothing was compiled).

    ``requested``: a number of rows (a ceiling: lowered where it would not fit), or None: as many as
    fit, at most :data:`AUTO_CHUNK_MAX` (a vmapped adaptive solve steps every row of a chunk until the
    slowest is done, so a larger chunk is not free even where it fits). Never more than ``n_rows``,
    rounded up to a multiple of ``multiple`` (the devices the rows are split over). ``limit``: device memory
    in bytes (:func:`device_memory_bytes`); None (XLA:CPU reports none): ``requested``, or
    ``fallback`` for None, unmeasured. Otherwise ``compile_at(rows)`` compiles the chunk's program and
    XLA's memory analysis (:func:`compiled_bytes`) must stay within :data:`MEMORY_HEADROOM` of
    ``limit``; memory is taken as affine in the rows to find the largest chunk that fits, which is
    then compiled and checked. Raises DeviceMemoryError, ending in ``remedy`` (what the caller's user
    can lower), if not even ``multiple`` rows fit.
    """
    round_up = lambda c: -(-max(1, int(c)) // multiple) * multiple  # noqa: E731
    cap = int(fallback if requested is None and limit is None else AUTO_CHUNK_MAX if requested is None else requested)
    chunk = round_up(min(cap, n_rows))
    if limit is None:
        return chunk, None
    budget = MEMORY_HEADROOM * limit
    compiled = compile_at(chunk)
    need = compiled_bytes(compiled)
    if need <= budget:
        return chunk, compiled
    smallest, small = multiple, compile_at(multiple)
    need_small = compiled_bytes(small)
    if need_small > budget:
        raise DeviceMemoryError(
            f"even a chunk of {multiple} row(s) plans {need_small / 2**30:.2f} GiB per device, over "
            f"{MEMORY_HEADROOM:.0%} of the device's {limit / 2**30:.1f} GiB: {remedy}")
    per_row = max((need - need_small) / (chunk - smallest), 1.0)
    fit = smallest + int((budget - need_small) / per_row)
    fit = max(smallest, fit - fit % multiple)
    while fit > smallest:
        compiled = compile_at(fit)
        if compiled_bytes(compiled) <= budget:
            return fit, compiled
        fit = max(smallest, int(0.8 * fit) - int(0.8 * fit) % multiple)
    return smallest, small


def split_rows_in_trace(*arrays: Array | None, sharding: Any = "local") -> tuple[Array | None, ...]:
    """Inside traced code: ``arrays`` (leading axis = rows, all of one length n; None passes through)
    padded to a multiple of the devices ``sharding`` splits over (the last row repeated) and
    constrained to lie row-split across them. The caller drops the padding rows' results with
    ``[:n]``. ``sharding``: a :func:`row_sharding` (default ``"local"``: every local device; None or
    one device: the arrays unchanged).

    What lets a pure, differentiable function (an attack's logits and their gradient) use every local
    device as the chunked tables do (:func:`shard_rows`); rows are independent solves, so the results
    do not depend on the split.
    """
    sharding = row_sharding() if isinstance(sharding, str) and sharding == "local" else sharding
    if sharding is None:
        return arrays
    n = next(a.shape[0] for a in arrays if a is not None)
    pad = sharded_chunk(n, sharding) - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
        return jax.lax.with_sharding_constraint(a, sharding)

    return tuple(None if a is None else split(a) for a in arrays)
