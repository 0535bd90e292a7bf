"""The training loop shared by the score model (:mod:`sbgc.train.score`) and the discriminative
baseline (:mod:`sbgc.train.baseline`): the batch of a step, the training data by name, the
checkpointed loop with its CSV log, resuming, and the device description written into metadata.

A loop step is a jitted ``chunk(state, *data) -> (state, metrics)``; the batch of step s is a pure
function of (seed, s) (:func:`batch_indices`), so a resumed run is bit-identical to an uninterrupted
one. Log rows are written atomically before the checkpoint of the same step.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.train.checkpoint import CheckpointStore

Array = jax.Array


def batch_indices(key: Array, step: Array, n: int, batch: int) -> Array:
    """Indices [batch] of step ``step``: epochs are fixed-seed permutations of the n examples
    (the last incomplete batch of an epoch is dropped)."""
    steps_per_epoch = n // batch
    perm = jax.random.permutation(jax.random.fold_in(key, step // steps_per_epoch), n)
    return jax.lax.dynamic_slice(perm, ((step % steps_per_epoch) * batch,), (batch,))


def interval_reduction(name: str) -> Callable[[Array], Array]:
    """How a per-step metric is summarised over a logging interval: ``finite`` → all, names ending
    in ``_max`` → max, everything else → mean."""
    return jnp.all if name == "finite" else jnp.max if name.endswith("_max") else jnp.mean


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became non-finite."""


def log_rows(path: Path, upto_step: int) -> list[dict]:
    """Rows of an existing training log with step ≤ upto_step (a resumed run rewrites the rest)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]


# loss and grad_norm are means over the steps since the previous row
LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "images_per_s", "elapsed_s")


def resume(store: CheckpointStore, fresh_state: Any, identity: dict) -> tuple[Any, float]:
    """The newest intact checkpoint of ``store`` (verified, config checked against ``identity``) or
    ``fresh_state``; with the training seconds already spent."""
    restored = store.restore_latest(fresh_state, expected_config=identity) if store.steps() else None
    if restored is None:
        return fresh_state, 0.0
    state, meta = restored
    return state, float(meta.get("train_seconds", 0.0))


def run_loop(chunk: Callable, state: Any, data: tuple, *, store: CheckpointStore, steps: int, log_path: Path,
             rows: list[dict], batch_size: int, steps_per_call: int, log_every: int, ckpt_every: int,
             lr_at: Callable[[int], float], metadata: Callable[[int, float], dict], elapsed0: float = 0.0,
             progress: bool = True, desc: str = "train", time_limit: float | None = None) -> tuple[Any, int, float]:
    """The checkpointed training loop shared by the score model and the discriminative baseline.

    ``chunk(state, *data) -> (state, metrics)`` runs ``steps_per_call`` steps; metrics hold device
    scalars ``loss``, ``grad_norm``, ``finite`` (bool) and optionally more (logged as extra columns:
    means over the interval, maxima for names ending in ``_max``).
    Every ``log_every`` steps a row (means since the previous row) goes to ``log_path`` (CSV, written
    atomically BEFORE the checkpoint, so a resumed run never lacks the rows up to its step); every
    ``ckpt_every`` steps and at the end the state is saved to ``store`` with ``metadata(step,
    seconds)``. A non-finite loss or gradient raises :class:`TrainingDiverged` naming the last good
    checkpoint. With ``time_limit`` (seconds) the loop stops at the first step past it, logs and
    checkpoints there. Returns (state, step, training seconds including ``elapsed0``).
    """
    step = int(state["step"])
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    bar = _progress(progress, steps, step, desc)
    t_last, elapsed = time.perf_counter(), elapsed0
    seen_since_log, interval = 0, []
    while step < steps:
        state, m = chunk(state, *data)
        interval.append(m)  # device scalars: no host sync until the next log point
        step += steps_per_call
        seen_since_log += steps_per_call * batch_size
        bar.update(steps_per_call)
        stop = step >= steps or (deadline is not None and time.perf_counter() > deadline)
        at_log, at_ckpt = step % log_every == 0 or stop, step % ckpt_every == 0 or stop
        if not (at_log or at_ckpt):
            continue
        m = {k: np.asarray(interval_reduction(k)(np.stack([x[k] for x in jax.device_get(interval)])))
             for k in interval[0]}
        interval = []
        now = time.perf_counter()
        elapsed += now - t_last
        if not m["finite"]:
            last = store.steps()[-1] if store.steps() else None
            raise TrainingDiverged(
                f"non-finite loss or gradient between steps {step - steps_per_call} and {step} "
                f"(last loss {m['loss']}, grad norm {m['grad_norm']}); last good checkpoint: "
                + (f"step {last} in {store.dir}" if last is not None else "none"))
        ips = seen_since_log / max(now - t_last, 1e-9)
        extra = {k: f"{float(v):.6g}" for k, v in m.items() if k not in ("loss", "grad_norm", "finite")}
        rows.append({"step": step, "loss": f"{m['loss']:.6f}", "grad_norm": f"{m['grad_norm']:.4f}",
                     "lr": f"{lr_at(step):.3e}", "images_per_s": f"{ips:.1f}", "elapsed_s": f"{elapsed:.1f}", **extra})
        bar.set_postfix(loss=f"{m['loss']:.4f}", img_s=f"{ips:.0f}")
        write_log(log_path, rows)
        if at_ckpt:
            store.save(step, state, metadata(step, elapsed))
        t_last, seen_since_log = time.perf_counter(), 0
        if stop:
            break
    bar.close()
    write_log(log_path, rows)
    return state, step, elapsed


def restore_checkpoint(workdir: str | Path, abstract_state: Callable[[dict], Any], step: int | None = None
                       ) -> tuple[Any, dict]:
    """State and metadata of checkpoint ``step`` (default: the newest intact one) of the run in
    ``workdir``, verified by sha256; ``abstract_state(metadata)`` gives the state's shapes and dtypes."""
    store = CheckpointStore(Path(workdir) / "checkpoints")
    steps = store.steps()
    if not steps:
        raise FileNotFoundError(f"no committed checkpoint in {store.dir}")
    step = steps[-1] if step is None else step
    return store.restore(step, abstract_state(store.metadata(step)))


def device_name() -> str:
    """e.g. '8x NVIDIA H100 80GB HBM3' or '1x cpu (2 cores)'."""
    d = jax.devices()[0]
    cores = f" ({os.cpu_count()} cores)" if d.platform == "cpu" else ""
    return f"{jax.device_count()}x {d.device_kind}{cores}"


def _progress(enabled: bool, total: int, initial: int, desc: str = "train"):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True)


def log_beside(out: str | Path) -> Path:
    """Where a file written from a run keeps the run's training log: ``NAME.msgpack`` → ``NAME_train_log.csv``."""
    out = Path(out)
    return out.with_name(out.stem + "_train_log.csv")


def copy_log_beside(workdir: str | Path, out: str | Path, upto_step: int) -> Path | None:
    """The run's training log up to ``upto_step`` written beside ``out`` (:func:`log_beside`), as the
    book reads it with an exported model (loss curves, training time); None if the run has no log."""
    rows = log_rows(Path(workdir) / "train_log.csv", int(upto_step))
    if not rows:
        return None
    write_log(log_beside(out), rows)
    return log_beside(out)


def write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        extra = [k for k in (rows[0] if rows else {}) if k not in LOG_FIELDS]
        w = csv.DictWriter(f, fieldnames=list(LOG_FIELDS) + extra)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
