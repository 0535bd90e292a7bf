"""Maximum-likelihood training of the class-conditional score network.

    python -m sbgc.train --profile small --steps N --workdir DIR [--data cifar10|toy] [...]
    python -m sbgc.train export --workdir DIR --out checkpoints/NAME.msgpack

Adam (lr 2e-4, linear warm-up over 5,000 steps, gradient clipping at global norm 1), EMA of the
parameters (0.9999), likelihood weighting with importance-sampled t (``sbgc.losses``), uniform
dequantization and random horizontal flips, optional bfloat16 compute. The whole training set
lives on the device(s) and every batch is drawn there: the batch of step s is a pure function of
(seed, s), so a resumed run is bit-identical to an uninterrupted one (tested on CPU).

Data parallelism: the batch is sharded over a 1-D mesh of all devices (``jax.sharding``),
parameters are replicated and XLA inserts the gradient all-reduce. On several hosts launch one
process per host with ``--distributed`` (which calls ``jax.distributed.initialize()``; on SLURM or
TPU pods its arguments are found automatically, elsewhere set ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``); every process loads the same data and the mesh spans
all hosts' devices.

Checkpoints (``sbgc.checkpoint.CheckpointStore``) hold params, optimizer state, EMA, RNG key and
step; they are atomic, verified by sha256 on restore, and a run restarted with the same
``--workdir`` resumes from the newest intact one. A non-finite loss or gradient stops training
with a message; the last good checkpoint is never overwritten by a bad state.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sbgc import data as sdata
from sbgc.checkpoint import CheckpointStore, export_params
from sbgc.losses import WEIGHTINGS, dsm_loss
from sbgc.models import ModelConfig, count_params, get_config, init_params, make_noise_fn
from sbgc.pretrained import model_config_from_meta
from sbgc.sde import SDE

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (fields marked *run* may change on resume)."""

    profile: str = "small"
    batch_size: int = 128
    lr: float = 2e-4
    warmup_steps: int = 5000
    grad_clip: float = 1.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    ema_decay: float = 0.9999
    weighting: str = "likelihood_is"
    eps: float = 1e-5  # smallest time of the loss (the paper's likelihood ε)
    sde: str = "subvp"
    random_flip: bool = True
    seed: int = 0
    dtype: str = "float32"  # network compute dtype
    # run-only settings: may differ between a run and its resumption
    log_every: int = 100
    ckpt_every: int = 1000
    keep: int = 3
    steps_per_call: int = 1

    RUN_ONLY = ("log_every", "ckpt_every", "keep", "steps_per_call")

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        for name in ("log_every", "ckpt_every"):
            if getattr(self, name) % self.steps_per_call:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of steps_per_call={self.steps_per_call}")

    def identity(self) -> dict:
        """The fields a checkpoint must agree with to be resumed."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUN_ONLY}


TRAIN_PROFILES: dict[str, TrainConfig] = {
    # ci: a CPU budget of minutes to an hour, so a larger step size and a short EMA.
    "ci": TrainConfig(profile="ci", batch_size=32, lr=1e-3, warmup_steps=100, ema_decay=0.999, log_every=10,
                      ckpt_every=200),
    "small": TrainConfig(profile="small", batch_size=128, warmup_steps=5000, ema_decay=0.9999),
    "paper": TrainConfig(profile="paper", batch_size=128, warmup_steps=5000, ema_decay=0.9999),
}


def get_train_config(profile: str, **overrides: Any) -> TrainConfig:
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; expected one of {sorted(TRAIN_PROFILES)}")
    return dataclasses.replace(TRAIN_PROFILES[profile], **overrides)


# --- pure training step -------------------------------------------------------------------------------
def batch_indices(key: Array, step: Array, n: int, batch: int) -> Array:
    """Indices [batch] of step ``step``: epochs are fixed-seed permutations of the n examples
    (the last incomplete batch of an epoch is dropped)."""
    steps_per_epoch = n // batch
    perm = jax.random.permutation(jax.random.fold_in(key, step // steps_per_epoch), n)
    return jax.lax.dynamic_slice(perm, ((step % steps_per_epoch) * batch,), (batch,))


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    schedule = lambda step: cfg.lr * jnp.minimum((step + 1) / max(cfg.warmup_steps, 1), 1.0)
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adam(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps),
    )


def init_state(key: Array, model_cfg: ModelConfig, optimizer: optax.GradientTransformation) -> dict:
    """step, params, EMA params, optimizer state and the run's base PRNG key."""
    init_key, run_key = jax.random.split(key)
    params = init_params(model_cfg, init_key)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "ema": jax.tree_util.tree_map(jnp.copy, params),
        "opt_state": optimizer.init(params),
        "key": run_key,
    }


def train_step(state: dict, images: Array, labels: Array, *, cfg: TrainConfig, sde: SDE,
               noise_fn: Callable, optimizer: optax.GradientTransformation, batch_sharding) -> tuple[dict, dict]:
    """One optimisation step on the batch of ``state["step"]``.  images: uint8 [N, H, W, C] on device."""
    step = state["step"]
    data_key = jax.random.fold_in(state["key"], 0)
    k_flip, k_deq, k_loss, k_drop = jax.random.split(jax.random.fold_in(jax.random.fold_in(state["key"], 1), step), 4)
    idx = batch_indices(data_key, step, images.shape[0], cfg.batch_size)  # [B]
    x = images[idx]  # uint8 [B, H, W, C]
    if cfg.random_flip:
        x = sdata.random_flip(k_flip, x)
    x0 = jax.lax.with_sharding_constraint(sdata.to_model_space(sdata.dequantize(k_deq, x)), batch_sharding)
    y = jax.lax.with_sharding_constraint(labels[idx], batch_sharding)

    def loss_fn(params):
        def score_fn(x_t, t, y_):
            return -noise_fn(params, x_t, t, y_, train=True, dropout_key=k_drop) / sde.marginal_std(t)[:, None, None, None]

        return jnp.mean(dsm_loss(score_fn, sde, x0, y, k_loss, weighting=cfg.weighting, eps=cfg.eps, reduce="mean"))

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree_util.tree_map(lambda e, p: cfg.ema_decay * e + (1 - cfg.ema_decay) * p, state["ema"], params)
    grad_norm = optax.tree.norm(grads)
    new_state = dict(state, step=step + 1, params=params, ema=ema, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)}


def make_train_chunk(cfg: TrainConfig, model_cfg: ModelConfig, sde: SDE, optimizer, mesh) -> Callable:
    """A jitted function running ``cfg.steps_per_call`` steps (``lax.scan``); returns mean metrics
    and whether every step stayed finite."""
    step_fn = functools.partial(train_step, cfg=cfg, sde=sde, noise_fn=make_noise_fn(model_cfg),
                                optimizer=optimizer, batch_sharding=NamedSharding(mesh, P("data")))

    def chunk(state, images, labels):
        if cfg.steps_per_call == 1:  # no loop: XLA:CPU runs convolutions inside a loop body far slower
            return step_fn(state, images, labels)
        state, m = jax.lax.scan(lambda s, _: step_fn(s, images, labels), state, None, length=cfg.steps_per_call)
        return state, {"loss": m["loss"].mean(), "grad_norm": m["grad_norm"].mean(), "finite": m["finite"].all()}

    return jax.jit(chunk, donate_argnums=0)


# --- the run ----------------------------------------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """The loss or the gradient became non-finite."""


def load_training_data(name: str, data_dir: str | None, toy_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images [N, 32, 32, 3], int32 labels [N] and a source tag."""
    if name in ("cifar10", "toy"):
        split = sdata.load_cifar10("train", data_dir) if name == "cifar10" else sdata.toy_images(toy_size, seed=0)
        source = split.source if name == "cifar10" else f"toy-{toy_size}"
        return split.images, split.labels.astype(np.int32), source
    raise ValueError(f"--data must be 'cifar10' or 'toy', got {name!r}")


def _log_rows(path: Path, upto_step: int) -> list[dict]:
    """Rows of an existing training log with step ≤ upto_step (a resumed run rewrites the rest)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]


# loss and grad_norm are means over the steps since the previous row
LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "images_per_s", "elapsed_s")


def train(cfg: TrainConfig, steps: int, workdir: str | Path, *, data: str = "cifar10", data_dir: str | None = None,
          toy_size: int = 2048, model_overrides: dict | None = None, progress: bool = True) -> dict:
    """Train (or resume) to ``steps`` total steps in ``workdir``; returns the final metadata."""
    workdir = Path(workdir)
    model_cfg = get_config(cfg.profile, dtype=cfg.dtype, **(model_overrides or {}))
    sde = SDE(cfg.sde)
    images_np, labels_np, source = load_training_data(data, data_dir, toy_size)
    if len(images_np) < cfg.batch_size:
        raise ValueError(f"{len(images_np)} training images, fewer than one batch of {cfg.batch_size}")
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    if cfg.batch_size % jax.device_count():
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {jax.device_count()} devices")
    replicated = NamedSharding(mesh, P())
    images, labels = jax.device_put((images_np, labels_np), replicated)
    optimizer = make_optimizer(cfg)
    identity = {"train": cfg.identity(), "model": dataclasses.asdict(model_cfg), "data_source": source}

    store = CheckpointStore(workdir / "checkpoints", keep=cfg.keep)
    state = init_state(jax.random.PRNGKey(cfg.seed), model_cfg, optimizer)
    state, elapsed0 = resume(store, state, identity)
    state = jax.device_put(state, replicated)
    log_path = workdir / "train_log.csv"
    rows = _log_rows(log_path, int(state["step"]))
    chunk = make_train_chunk(cfg, model_cfg, sde, optimizer, mesh)
    n_params = count_params(state["params"])

    def metadata(step: int, seconds: float) -> dict:
        return {"profile": cfg.profile, "config": identity, "data_source": source, "n_params": n_params,
                "train_seconds": seconds, "device": _device_name(),
                "jax_version": jax.__version__, "step": step}

    state, step, elapsed = run_loop(
        chunk, state, (images, labels), store=store, steps=steps, log_path=log_path, rows=rows,
        batch_size=cfg.batch_size, steps_per_call=cfg.steps_per_call, log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every, lr_at=lambda s: cfg.lr * min(s / max(cfg.warmup_steps, 1), 1.0),
        metadata=metadata, elapsed0=elapsed0, progress=progress,
    )  # fmt: skip
    return metadata(step, elapsed)


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
             progress: bool = True, desc: str = "train") -> tuple[Any, int, float]:
    """The checkpointed training loop shared by the score model and the discriminative baseline.

    ``chunk(state, *data) -> (state, metrics)`` runs ``steps_per_call`` steps; metrics hold device
    scalars ``loss``, ``grad_norm``, ``finite`` (bool) and optionally more (logged as extra columns).
    Every ``log_every`` steps a row (means since the previous row) goes to ``log_path`` (CSV, written
    atomically BEFORE the checkpoint, so a resumed run never lacks the rows up to its step); every
    ``ckpt_every`` steps and at the end the state is saved to ``store`` with ``metadata(step,
    seconds)``. A non-finite loss or gradient raises :class:`TrainingDiverged` naming the last good
    checkpoint. Returns (state, step, training seconds including ``elapsed0``).
    """
    step = int(state["step"])
    bar = _progress(progress, steps, step, desc)
    t_last, elapsed = time.perf_counter(), elapsed0
    seen_since_log, interval = 0, []
    while step < steps:
        state, m = chunk(state, *data)
        interval.append(m)  # device scalars: no host sync until the next log point
        step += steps_per_call
        seen_since_log += steps_per_call * batch_size
        bar.update(steps_per_call)
        at_log, at_ckpt = step % log_every == 0 or step >= steps, step % ckpt_every == 0 or step >= steps
        if not (at_log or at_ckpt):
            continue
        m = {k: (np.all if k == "finite" else np.mean)([x[k] for x in jax.device_get(interval)]) for k in interval[0]}
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
        _write_log(log_path, rows)
        if at_ckpt:
            store.save(step, state, metadata(step, elapsed))
        t_last, seen_since_log = time.perf_counter(), 0
    bar.close()
    _write_log(log_path, rows)
    return state, step, elapsed


def _device_name() -> str:
    """e.g. '8x NVIDIA H100 80GB HBM3' or '1x cpu (2 cores)'."""
    d = jax.devices()[0]
    cores = f" ({os.cpu_count()} cores)" if d.platform == "cpu" else ""
    return f"{jax.device_count()}x {d.device_kind}{cores}"


def _progress(enabled: bool, total: int, initial: int, desc: str = "train"):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True)


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        extra = [k for k in (rows[0] if rows else {}) if k not in LOG_FIELDS]
        w = csv.DictWriter(f, fieldnames=list(LOG_FIELDS) + extra)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def export_ema(workdir: str | Path, out: str | Path, step: int | None = None) -> dict:
    """Write the EMA parameters of a training checkpoint as a shipped, sha256-checked file."""
    store = CheckpointStore(Path(workdir) / "checkpoints")
    steps = store.steps()
    if not steps:
        raise FileNotFoundError(f"no committed checkpoint in {store.dir}")
    step = steps[-1] if step is None else step
    meta = store.metadata(step)
    model_cfg = model_config_from_meta(meta)
    train_cfg = TrainConfig(**meta["config"]["train"])
    abstract = jax.eval_shape(lambda: init_state(jax.random.PRNGKey(0), model_cfg, make_optimizer(train_cfg)))
    state, meta = store.restore(step, abstract)
    keep = {k: meta[k] for k in ("profile", "config", "data_source", "n_params", "train_seconds", "device", "step")}
    return export_params(state["ema"], out, dict(keep, weights="ema", ema_decay=train_cfg.ema_decay))


# --- command line ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sbgc.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="small", choices=sorted(TRAIN_PROFILES))
    p.add_argument("--steps", type=int, required=True, help="total number of steps (a resumed run continues to it)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", default="cifar10", choices=["cifar10", "toy"])
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz (else SBGC_DATA_DIR, else the offline copy)")
    p.add_argument("--toy-size", type=int, default=2048)
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    p.add_argument("--no-progress", action="store_true")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "profile":
            p.add_argument("--" + f.name.replace("_", "-"), type=_arg_type(f.type), default=None)
    return p


def _arg_type(annotation: str):
    return {"int": int, "float": float, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes")}[annotation]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        p = argparse.ArgumentParser(prog="python -m sbgc.train export")
        p.add_argument("--workdir", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--step", type=int, default=None)
        a = p.parse_args(argv[1:])
        print(json.dumps({k: v for k, v in export_ema(a.workdir, a.out, a.step).items() if k != "config"}, indent=2))
        return 0
    a = _parser().parse_args(argv)
    if a.distributed:
        jax.distributed.initialize()
    overrides = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name != "profile" and getattr(a, f.name) is not None}
    cfg = get_train_config(a.profile, **overrides)
    meta = train(cfg, a.steps, a.workdir, data=a.data, data_dir=a.data_dir, toy_size=a.toy_size,
                 progress=not a.no_progress)
    print(json.dumps({k: v for k, v in meta.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
