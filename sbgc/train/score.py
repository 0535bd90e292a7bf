"""Maximum-likelihood training of the class-conditional score network.

    python -m sbgc.train --profile small --steps N --workdir DIR [--data cifar10|mnist|toy] [--time-limit S] [...]
    python -m sbgc.train export --workdir DIR --out checkpoints/NAME.msgpack
    python -m sbgc.train pack --workdir DIR --state FILE.msgpack     (carry a run to another session)
    python -m sbgc.train unpack --state FILE.msgpack --workdir DIR

Adam (lr 2e-4, linear warm-up over 5,000 steps, gradient clipping at global norm 1 in score_flow's
loss units), EMA of the parameters (0.9999, decay warmed up as min(d, (1 + s)/(10 + s))), likelihood
weighting with importance-sampled t (``sbgc.method.losses``), uniform dequantization and random horizontal
flips (not for MNIST), optional bfloat16 compute (evaluation is always float32: ``sbgc.method.numerics``).

Against the reference (yang-song/score_flow, sub-VP CIFAR-10 configs): it trains from
``smallest_time = 1e-2``; we train from ε = 1e-5, the paper's likelihood ε, because the ODE integrates
the score from ε and 40 % of the importance weight lies below 1e-2. Its loss is the mean of
‖σ s + z‖² over dimensions; ours is Z/2 = 18.84 times that (the bound's diffusion term per
dimension), so the clip threshold is applied to our gradient divided by Z/2 (``reference_loss_scale``)
and the share of clipped steps is logged (column ``clipped``; ``grad_norm_max`` is the interval's
largest norm in our units). Its EMA has no bias correction: after s steps a plain EMA still holds
d^s of the random initialisation (37 % after 1,000 steps at d = 0.999); ours warms the decay up.

The whole training set lives on the device(s) and every batch is drawn there: the batch of step s is a pure function of
(seed, s), so a resumed run is bit-identical to an uninterrupted one (tested on CPU).

Data parallelism: the batch is sharded over a 1-D mesh of all devices (``jax.sharding``),
parameters are replicated and XLA inserts the gradient all-reduce. On several hosts launch one
process per host with ``--distributed`` (which calls ``jax.distributed.initialize()``; on SLURM or
TPU pods its arguments are found automatically, elsewhere set ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``); every process loads the same data and the mesh spans
all hosts' devices.

Checkpoints (``sbgc.train.checkpoint.CheckpointStore``) hold params, optimizer state, EMA, RNG key and
step; they are atomic, verified by sha256 on restore, and a run restarted with the same
``--workdir`` resumes from the newest intact one. A non-finite loss or gradient stops training
with a message; the last good checkpoint is never overwritten by a bad state.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sbgc.data.datasets import training_set
from sbgc.data.transforms import dequantize, random_flip, to_model_space
from sbgc.train.checkpoint import CheckpointStore, export_params, load_params
from sbgc.train.loop import (batch_indices, copy_log_beside, device_name, interval_reduction, log_beside, log_rows,
                             restore_checkpoint, resume, run_loop, write_log)
from sbgc.method.losses import WEIGHTINGS, dsm_loss
from sbgc.method.networks import ModelConfig, count_params, get_config, init_params, make_noise_fn
from sbgc.method.sde import SDE
from sbgc.train.pretrained import model_config_from_meta

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
    # EMA decay warm-up min(decay, (1 + s)/(10 + s)) (TensorFlow's num_updates rule): without it a
    # run of s steps keeps a share decay^s of the random initialisation in its EMA.
    ema_warmup: bool = True
    weighting: str = "likelihood_is"
    eps: float = 1e-5  # smallest time of the loss (the paper's likelihood ε)
    sde: str = "subvp"
    random_flip: bool = True
    data: str = "cifar10"  # "cifar10", "mnist" or "toy"
    seed: int = 0
    dtype: str = "float32"  # network compute dtype
    # run-only settings: may differ between a run and its resumption
    log_every: int = 100
    ckpt_every: int = 1000
    keep: int = 3
    steps_per_call: int = 1
    # learning-rate decay, run-only so that a resumed run may start or change it (the train log records the lr
    # of every logged step): from step lr_decay_start on, a cosine from lr down to lr_final over lr_decay_steps
    # steps, then lr_final. lr_decay_steps = 0: none (lr after the warm-up, constant).
    lr_decay_start: int = 0
    lr_decay_steps: int = 0
    lr_final: float = 0.0

    RUN_ONLY = ("log_every", "ckpt_every", "keep", "steps_per_call", "lr_decay_start", "lr_decay_steps", "lr_final")
    DATA = ("cifar10", "mnist", "toy")

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.data not in self.DATA:
            raise ValueError(f"data must be one of {self.DATA}, got {self.data!r}")
        if self.lr_decay_start < 0 or self.lr_decay_steps < 0 or not 0 <= self.lr_final <= self.lr:
            raise ValueError(f"lr decay: need lr_decay_start >= 0, lr_decay_steps >= 0 and 0 <= lr_final <= lr = {self.lr}, "
                             f"got {self.lr_decay_start}, {self.lr_decay_steps}, {self.lr_final}")
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
    # tiny: the plumbing of the loop, checkpoints, resume and export in seconds (tests; toy data, 32x32x3)
    "tiny": TrainConfig(profile="tiny", batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.999, data="toy",
                        log_every=1, ckpt_every=1, keep=2),
    "small": TrainConfig(profile="small", batch_size=128, warmup_steps=5000, ema_decay=0.9999),
    "paper": TrainConfig(profile="paper", batch_size=128, warmup_steps=5000, ema_decay=0.9999),
}
# MNIST on 2 CPU cores: the probe run's step size (Adam 1e-3, batch 64), a 100-step warm-up, an EMA
# whose half-life (~700 steps) is a few minutes of CPU, no flips (digits are not mirror-symmetric).
# Clipping at 3 (score_flow's units, see reference_loss_scale): at 1 a probe run clipped 70-95 % of
# its first 500 steps (gradient norms 1.2-1.4 in those units); 3 catches only outlier batches.
for _name in ("mnist_s", "mnist_m", "mnist_l"):
    TRAIN_PROFILES[_name] = TrainConfig(profile=_name, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                                        grad_clip=3.0, random_flip=False, data="mnist", log_every=50,
                                        ckpt_every=500)


def get_train_config(profile: str, **overrides: Any) -> TrainConfig:
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; expected one of {sorted(TRAIN_PROFILES)}")
    return dataclasses.replace(TRAIN_PROFILES[profile], **overrides)


# --- pure training step -------------------------------------------------------------------------------
def reference_loss_scale(cfg: TrainConfig, sde: SDE) -> float:
    """Our per-dimension loss divided by score_flow's (the mean over dimensions of ‖σ s + z‖²).

    ``dsm_loss(..., reduce="mean")`` keeps the factor ½·Z of the importance-sampled estimator (Z =
    ∫ g²/σ² dt = 37.7 on [1e-5, 1] for sub-VP) so that it is the likelihood bound's diffusion term
    per dimension; score_flow drops it. Gradient clipping is applied to the gradient divided by this
    scale, so ``grad_clip = 1`` clips what score_flow's threshold 1 clips.
    """
    if cfg.weighting == "likelihood_is":
        return 0.5 * float(sde.importance_weight_normalizer(cfg.eps))
    return 0.5 * (sde.T - cfg.eps)


def learning_rate(cfg: TrainConfig, step) -> Array:
    """The step size of (0-based) step ``step``: a linear warm-up to ``lr`` over ``warmup_steps``, then
    constant, and from ``lr_decay_start`` on (if ``lr_decay_steps``) a cosine down to ``lr_final`` over
    ``lr_decay_steps`` steps, then ``lr_final``. Traceable (the optimizer's schedule)."""
    step = jnp.asarray(step, jnp.float32)
    lr = cfg.lr * jnp.minimum((step + 1) / max(cfg.warmup_steps, 1), 1.0)
    if cfg.lr_decay_steps:
        frac = jnp.clip((step - cfg.lr_decay_start) / cfg.lr_decay_steps, 0.0, 1.0)
        cosine = cfg.lr_final + (cfg.lr - cfg.lr_final) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        lr = jnp.where(step >= cfg.lr_decay_start, jnp.minimum(lr, cosine), lr)
    return lr


def make_optimizer(cfg: TrainConfig, loss_scale: float = 1.0) -> optax.GradientTransformation:
    """Clip in score_flow's loss units (global norm of the gradient divided by ``loss_scale`` at most
    ``grad_clip``), then Adam with :func:`learning_rate` (Adam does not see the gradient's scale)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip * loss_scale),
        optax.adam(lambda step: learning_rate(cfg, step), b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps),
    )


def ema_decay_at(cfg: TrainConfig, step: Array) -> Array:
    """The EMA decay used after step ``step`` (0-based): warmed up as (1 + s)/(10 + s) if asked."""
    if not cfg.ema_warmup:
        return jnp.asarray(cfg.ema_decay, jnp.float32)
    s = step.astype(jnp.float32)
    return jnp.minimum(cfg.ema_decay, (1.0 + s) / (10.0 + s))


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
               noise_fn: Callable, optimizer: optax.GradientTransformation, batch_sharding,
               loss_scale: float = 1.0) -> tuple[dict, dict]:
    """One optimisation step on the batch of ``state["step"]``.  images: uint8 [N, H, W, C] on device."""
    step = state["step"]
    data_key = jax.random.fold_in(state["key"], 0)
    k_flip, k_deq, k_loss, k_drop = jax.random.split(jax.random.fold_in(jax.random.fold_in(state["key"], 1), step), 4)
    idx = batch_indices(data_key, step, images.shape[0], cfg.batch_size)  # [B]
    x = images[idx]  # uint8 [B, H, W, C]
    if cfg.random_flip:
        x = random_flip(k_flip, x)
    x0 = jax.lax.with_sharding_constraint(to_model_space(dequantize(k_deq, x)), batch_sharding)
    y = jax.lax.with_sharding_constraint(labels[idx], batch_sharding)

    def loss_fn(params):
        def score_fn(x_t, t, y_):
            return sde.score_from_noise(noise_fn(params, x_t, t, y_, train=True, dropout_key=k_drop), t)

        return jnp.mean(dsm_loss(score_fn, sde, x0, y, k_loss, weighting=cfg.weighting, eps=cfg.eps, reduce="mean"))

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    decay = ema_decay_at(cfg, step)
    ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, state["ema"], params)
    grad_norm = optax.tree.norm(grads)
    clipped = (grad_norm / loss_scale > cfg.grad_clip).astype(jnp.float32)  # the clip's own test
    new_state = dict(state, step=step + 1, params=params, ema=ema, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "grad_norm_max": grad_norm, "clipped": clipped,
                       "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)}


def make_train_chunk(cfg: TrainConfig, model_cfg: ModelConfig, sde: SDE, optimizer, mesh) -> Callable:
    """A jitted function running ``cfg.steps_per_call`` steps (``lax.scan``); returns mean metrics
    and whether every step stayed finite."""
    step_fn = functools.partial(train_step, cfg=cfg, sde=sde, noise_fn=make_noise_fn(model_cfg),
                                optimizer=optimizer, batch_sharding=NamedSharding(mesh, P("data")),
                                loss_scale=reference_loss_scale(cfg, sde))

    def chunk(state, images, labels):
        if cfg.steps_per_call == 1:  # no loop: XLA:CPU runs convolutions inside a loop body far slower
            return step_fn(state, images, labels)
        state, m = jax.lax.scan(lambda s, _: step_fn(s, images, labels), state, None, length=cfg.steps_per_call)
        return state, {k: interval_reduction(k)(v) for k, v in m.items()}

    return jax.jit(chunk, donate_argnums=0)


# --- the run ----------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, steps: int, workdir: str | Path, *, data: str | None = None, data_dir: str | None = None,
          toy_size: int = 2048, model_overrides: dict | None = None, progress: bool = True,
          time_limit: float | None = None) -> dict:
    """Train (or resume) to ``steps`` total steps in ``workdir``; returns the final metadata.

    ``data`` overrides ``cfg.data``. ``time_limit`` (seconds of this call's training loop) stops
    early at a checkpoint, so a later call with the same arguments continues exactly.
    """
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    workdir = Path(workdir)
    model_cfg = get_config(cfg.profile, dtype=cfg.dtype, **(model_overrides or {}))
    sde = SDE(cfg.sde)
    images_np, labels_np, source = training_set(cfg.data, data_dir, toy_size)
    if images_np.shape[1:] != (model_cfg.image_size, model_cfg.image_size, model_cfg.channels):
        raise ValueError(f"--data {cfg.data} has images {images_np.shape[1:]} but profile {cfg.profile!r} "
                         f"expects {(model_cfg.image_size, model_cfg.image_size, model_cfg.channels)}")
    if len(images_np) < cfg.batch_size:
        raise ValueError(f"{len(images_np)} training images, fewer than one batch of {cfg.batch_size}")
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    if cfg.batch_size % jax.device_count():
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {jax.device_count()} devices")
    replicated = NamedSharding(mesh, P())
    images, labels = jax.device_put((images_np, labels_np), replicated)
    optimizer = make_optimizer(cfg, reference_loss_scale(cfg, sde))
    identity = {"train": cfg.identity(), "model": dataclasses.asdict(model_cfg), "data_source": source}

    store = CheckpointStore(workdir / "checkpoints", keep=cfg.keep)
    state = init_state(jax.random.PRNGKey(cfg.seed), model_cfg, optimizer)
    state, elapsed0 = resume(store, state, identity)
    state = jax.device_put(state, replicated)
    log_path = workdir / "train_log.csv"
    rows = log_rows(log_path, int(state["step"]))
    chunk = make_train_chunk(cfg, model_cfg, sde, optimizer, mesh)
    n_params = count_params(state["params"])

    def metadata(step: int, seconds: float) -> dict:
        return {"profile": cfg.profile, "config": identity, "data_source": source, "n_params": n_params,
                "train_seconds": seconds, "device": device_name(),
                "jax_version": jax.__version__, "step": step,
                "lr_decay": {k: getattr(cfg, k) for k in ("lr_decay_start", "lr_decay_steps", "lr_final")}}

    state, step, elapsed = run_loop(
        chunk, state, (images, labels), store=store, steps=steps, log_path=log_path, rows=rows,
        batch_size=cfg.batch_size, steps_per_call=cfg.steps_per_call, log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every, lr_at=lambda s: float(learning_rate(cfg, s)),
        metadata=metadata, elapsed0=elapsed0, progress=progress, time_limit=time_limit,
    )  # fmt: skip
    return metadata(step, elapsed)


def export_ema(workdir: str | Path, out: str | Path, step: int | None = None) -> dict:
    """Write the EMA parameters of a training checkpoint as a shipped, sha256-checked file."""
    state, meta = restore_checkpoint(workdir, _abstract_state, step)
    keep = {k: meta[k] for k in ("profile", "config", "data_source", "n_params", "train_seconds", "device", "step")}
    if "lr_decay" in meta:  # the decay of the run's last segment (the log has the lr of every logged step)
        keep["lr_decay"] = meta["lr_decay"]
    ema_decay = TrainConfig(**meta["config"]["train"]).ema_decay
    exported = export_params(state["ema"], out, dict(keep, weights="ema", ema_decay=ema_decay))
    copy_log_beside(workdir, out, meta["step"])
    return exported


# --- carrying a run across machines and sessions --------------------------------------------------------
def _abstract_state(meta: dict) -> Any:
    model_cfg = model_config_from_meta(meta)
    train_cfg = TrainConfig(**meta["config"]["train"])
    return jax.eval_shape(lambda: init_state(jax.random.PRNGKey(0), model_cfg, make_optimizer(train_cfg)))


def pack_state(workdir: str | Path, out: str | Path) -> dict:
    """The newest intact training checkpoint of ``workdir`` as ONE sha256-checked msgpack file.

    It holds everything a resumed run needs (step, parameters, EMA, Adam moments, PRNG key) in
    float32, 16 bytes per parameter; ``<out>.json`` holds the checkpoint's metadata and the sha256,
    ``<out stem>_train_log.csv`` the training log up to that step. :func:`unpack_state` turns it
    back into a checkpoint from which ``python -m sbgc.train`` continues exactly.
    """
    from flax import serialization

    workdir, out = Path(workdir), Path(out)
    state, meta = restore_checkpoint(workdir, _abstract_state)
    keep = {k: v for k, v in meta.items() if k not in ("sha256", "files")}
    packed = export_params(serialization.to_state_dict(jax.device_get(state)), out,
                           dict(keep, kind="training state", packed_from=str(workdir)))
    copy_log_beside(workdir, out, int(state["step"]))
    return packed


def unpack_state(state_file: str | Path, workdir: str | Path) -> int:
    """Write a packed training state (sha256-verified) as a checkpoint of ``workdir``; returns its step.

    Refuses (``FileExistsError``) when ``workdir`` already holds a checkpoint at or beyond that step:
    unpacking never replaces newer training. The packed log becomes ``train_log.csv`` unless one
    reaching that step exists.
    """
    from flax import serialization

    state_file, workdir = Path(state_file), Path(workdir)
    raw, meta = load_params(state_file)
    if meta.get("kind") != "training state":
        raise ValueError(f"{state_file} is not a packed training state (kind {meta.get('kind')!r})")
    state = serialization.from_state_dict(_abstract_state(meta), raw)
    step = int(state["step"])
    store = CheckpointStore(workdir / "checkpoints")
    if store.steps() and store.steps()[-1] >= step:
        raise FileExistsError(f"{store.dir} already holds step {store.steps()[-1]} ≥ {step} of {state_file}; "
                              "nothing written (resume from it, or use another --workdir)")
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "file", "bytes", "kind", "packed_from")}
    store.save(step, jax.tree_util.tree_map(jnp.asarray, state), meta)
    log = log_beside(state_file)
    if log.exists() and len(log_rows(workdir / "train_log.csv", step)) < len(log_rows(log, step)):
        write_log(workdir / "train_log.csv", log_rows(log, step))
    return step


# --- command line ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sbgc.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="small", choices=sorted(TRAIN_PROFILES))
    p.add_argument("--steps", type=int, required=True, help="total number of steps (a resumed run continues to it)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz or the four MNIST files "
                   "(else SBGC_DATA_DIR, else data/, else the offline copy)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop (with a checkpoint) after this many seconds; rerun the same command to continue")
    p.add_argument("--toy-size", type=int, default=2048)
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    p.add_argument("--no-progress", action="store_true")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "profile":
            p.add_argument("--" + f.name.replace("_", "-"), type=_arg_type(f.type), default=None,
                           help=FIELD_HELP.get(f.name))
    return p


FIELD_HELP = {
    "grad_clip": "clip the global gradient norm at this value in score_flow's loss units (our gradient / (Z/2))",
    "eps": "smallest time of the loss (default 1e-5, the paper's likelihood eps; score_flow's sub-VP configs: 1e-2)",
    "ema_decay": "EMA decay of the parameters",
    "ema_warmup": "warm the EMA decay up as min(decay, (1+s)/(10+s)) (score_flow: no warm-up, no bias correction)",
    "data": "cifar10, mnist or toy",
    "dtype": "network compute dtype for training (evaluation is always float32)",
    "lr_decay_start": "step at which the cosine decay of the learning rate starts (run-only: a resumed run may set it)",
    "lr_decay_steps": "length of the cosine decay in steps (0: no decay, the default)",
    "lr_final": "the learning rate at the end of the decay",
}


def _arg_type(annotation: str):
    return {"int": int, "float": float, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes")}[annotation]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["pack"], ["unpack"]):
        p = argparse.ArgumentParser(prog=f"python -m sbgc.train {argv[0]}",
                                    description=(pack_state if argv[0] == "pack" else unpack_state).__doc__.split("\n\n")[0])
        p.add_argument("--workdir", required=True)
        p.add_argument("--state", required=True, help="the packed state file (.msgpack)")
        a = p.parse_args(argv[1:])
        if argv[0] == "pack":
            meta = pack_state(a.workdir, a.state)
            print(json.dumps({k: meta[k] for k in ("file", "sha256", "bytes", "step", "train_seconds")}))
        else:
            print(json.dumps({"workdir": a.workdir, "step": unpack_state(a.state, a.workdir)}))
        return 0
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
    meta = train(cfg, a.steps, a.workdir, data_dir=a.data_dir, toy_size=a.toy_size,
                 progress=not a.no_progress, time_limit=a.time_limit)
    print(json.dumps({k: v for k, v in meta.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
