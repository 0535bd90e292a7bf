"""The discriminative baselines: a Wide-ResNet, and on MNIST also the plain CNN of MNIST-C's evaluation,
trained on the same data as the score model.

    python -m sbgc.train.baseline --profile ci --steps N --workdir DIR [--data cifar10|toy] [...]
    python -m sbgc.train.baseline export --workdir DIR --out checkpoints/NAME.msgpack [--data-dir D]

The paper compares its generative classifier with a Wide-ResNet (Zagoruyko & Komodakis 2016)
"trained with dequantization noise as augmentation". Here WRN-d-k: a 3×3 stem convolution with 16
channels, three groups of (d − 4)/6 pre-activation residual blocks (BatchNorm → ReLU → 3×3 conv,
twice) of widths 16k, 32k, 64k at strides 1, 2, 2, then BatchNorm → ReLU → global average pool →
Dense(10). WRN-28-10 has 36.5M parameters.

Training (the usual WRN recipe): SGD with Nesterov momentum 0.9, weight decay 5e-4 on the
convolution and dense kernels, cosine learning-rate decay from 0.1 over the run's planned steps
with a linear warm-up; augmentation by random crops (4-pixel reflection padding), horizontal flips
and uniform dequantization x = (pixel + u)/256, u ~ U[0, 1) -- the same dequantization as the score
model's data. At test time the input is the bin centre (pixel + ½)/256, the mean of that noise.
Inputs are [0, 1] images; the network sees 2x − 1, as the score model does.

The plain CNN (:class:`CNNConfig`, profile ``mnist_cnn``) is the network MNIST-C's corruptions were first
measured with: two convolutions, max-pooling, a dense layer, no batch normalisation, its inputs normalised
as MNIST-C's code feeds them. It trains with the same loop, recipe and conventions, without crops.

The batch of step s is a pure function of (seed, s) and the loop, checkpoints (atomic, sha256
verified, resumed after a kill), log and divergence check are those of :mod:`sbgc.train.score`. The
shipped file holds the EMA of the parameters (BatchNorm statistics are running averages, kept
as they are) and is loaded, sha256-checked, by :func:`load_classifier`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sbgc.data.datasets import DATASETS, evaluation_split, training_set
from sbgc.data.transforms import dequantize, random_flip
from sbgc.method.networks import count_params
from sbgc.train.checkpoint import CheckpointStore, export_params, load_params
from sbgc.train.loop import batch_indices, copy_log_beside, device_name, log_rows, restore_checkpoint, resume, run_loop
from sbgc.train.pretrained import resolve_path

Array = jax.Array
REPO = Path(__file__).resolve().parents[2]


# --- the network ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WRNConfig:
    """WRN-depth-widen (depth = 6·blocks + 4)."""

    depth: int = 28
    widen: int = 10
    dropout: float = 0.0
    n_classes: int = 10
    bn_momentum: float = 0.9
    image_size: int = 32  # CIFAR-10: 32×32×3; MNIST: 28×28×1
    channels: int = 3

    def __post_init__(self):
        if (self.depth - 4) % 6 or self.depth < 10:
            raise ValueError(f"WRN depth must be 6·n + 4 with n ≥ 1 (10, 16, 22, 28, …), got {self.depth}")
        if self.widen < 1:
            raise ValueError(f"widen must be ≥ 1, got {self.widen}")

    @property
    def name(self) -> str:
        return f"WRN-{self.depth}-{self.widen}"


class WideBlock(nn.Module):
    """Pre-activation residual block: [B, H, W, C_in] → [B, H/stride, W/stride, features]."""

    features: int
    stride: int
    dropout: float
    bn_momentum: float

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum)
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=nn.initializers.he_normal())
        h = nn.relu(norm()(x))
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = conv(self.features, (1, 1), strides=self.stride)(h)
        h = conv(self.features, (3, 3), strides=self.stride)(h)
        h = nn.relu(norm()(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv(self.features, (3, 3))(h)
        return h + shortcut


class WideResNet(nn.Module):
    """Logits [B, n_classes] of [0, 1] images [B, H, W, C] (H = W = image_size, C = channels)."""

    config: WRNConfig

    @nn.compact
    def __call__(self, x_unit: Array, train: bool = False) -> Array:
        cfg = self.config
        n = (cfg.depth - 4) // 6
        h = nn.Conv(16, (3, 3), use_bias=False, kernel_init=nn.initializers.he_normal())(2.0 * x_unit - 1.0)
        for group, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
            for i in range(n):
                h = WideBlock(width * cfg.widen, stride if i == 0 else 1, cfg.dropout, cfg.bn_momentum)(h, train)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=cfg.bn_momentum)(h))
        return nn.Dense(cfg.n_classes)(jnp.mean(h, axis=(1, 2)))


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """The plain CNN of MNIST-C's evaluation (Mu & Gilmer 2019): the PyTorch MNIST example network, whose
    input normalisation MNIST-C's code applies (``transforms.ToTensor()``, then mean 0.1307, std 0.3081).
    Two 3×3 convolutions (valid padding) with ReLU, 2×2 max-pooling, dropout, a dense layer with ReLU,
    dropout, the logits; no batch normalisation. 1.20M parameters on 28×28×1."""

    family: str = "plain_cnn"  # tells a shipped file's metadata from a WRN's (which has no such field)
    conv_features: tuple[int, ...] = (32, 64)
    dense_features: int = 128
    dropout_conv: float = 0.25
    dropout_dense: float = 0.5
    n_classes: int = 10
    image_size: int = 28
    channels: int = 1
    input_mean: float = 0.1307  # MNIST-C's normalize(): (x − mean) / std on [0, 1] pixels
    input_std: float = 0.3081

    def __post_init__(self):
        if self.family != "plain_cnn":
            raise ValueError(f"CNNConfig.family must be 'plain_cnn', got {self.family!r}")
        if not self.conv_features or self.input_std <= 0:
            raise ValueError(f"a plain CNN needs convolutions and input_std > 0, got {self}")

    @property
    def name(self) -> str:
        return "CNN " + "-".join([f"conv{f}" for f in self.conv_features] + ["pool", f"dense{self.dense_features}"])


class PlainCNN(nn.Module):
    """Logits [B, n_classes] of [0, 1] images [B, H, W, C]: conv → ReLU (each of ``conv_features``), 2×2
    max-pool, dropout, dense → ReLU, dropout, dense."""

    config: CNNConfig

    @nn.compact
    def __call__(self, x_unit: Array, train: bool = False) -> Array:
        cfg = self.config
        h = (x_unit - cfg.input_mean) / cfg.input_std
        for features in cfg.conv_features:
            h = nn.relu(nn.Conv(features, (3, 3), padding="VALID")(h))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.Dropout(cfg.dropout_conv, deterministic=not train)(h)
        h = nn.relu(nn.Dense(cfg.dense_features)(h.reshape(h.shape[0], -1)))
        h = nn.Dropout(cfg.dropout_dense, deterministic=not train)(h)
        return nn.Dense(cfg.n_classes)(h)


NetworkConfig = WRNConfig | CNNConfig


def network(config: NetworkConfig) -> nn.Module:
    """The flax module of a baseline's config: ``module.apply(variables, x_unit, train)`` → logits."""
    return PlainCNN(config) if isinstance(config, CNNConfig) else WideResNet(config)


NETWORK_PROFILES: dict[str, NetworkConfig] = {
    # trains to a useful accuracy in well under an hour on 2 CPU cores
    "ci": WRNConfig(depth=10, widen=2),
    "wrn16_4": WRNConfig(depth=16, widen=4),
    "wrn28_10": WRNConfig(depth=28, widen=10),  # the baseline (the paper used WRN-28-12)
    # MNIST: the same WRN-10-2 on 28×28×1 (28 → 14 → 7), minutes on 2 CPU cores
    "mnist": WRNConfig(depth=10, widen=2, image_size=28, channels=1),
    # MNIST: the plain CNN MNIST-C was measured with (no batch normalisation)
    "mnist_cnn": CNNConfig(),
}


def init_variables(config: NetworkConfig, key: Array) -> dict:
    """{"params": …, "batch_stats": …} of a fresh network (no statistics for the plain CNN: {})."""
    x = jnp.zeros((1, config.image_size, config.image_size, config.channels))
    variables = jax.jit(network(config).init, static_argnames="train")(key, x, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


# --- training -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BaselineTrainConfig:
    """Everything that defines a baseline training run (``RUN_ONLY`` fields may change on resume)."""

    profile: str = "wrn28_10"
    total_steps: int = 78_200  # the cosine schedule's length (200 epochs of batch 128)
    batch_size: int = 128
    lr: float = 0.1
    warmup_steps: int = 500
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ema_decay: float = 0.999
    crop_padding: int = 4
    random_flip: bool = True
    dequantize: bool = True
    data: str = "cifar10"  # "cifar10", "mnist" or "toy"
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 1000
    keep: int = 3

    RUN_ONLY = ("log_every", "ckpt_every", "keep")

    def identity(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUN_ONLY}

    def learning_rate(self, step) -> Any:
        """Linear warm-up to ``lr``, then cosine decay to 0 at ``total_steps`` (jnp or float)."""
        warm = (step + 1) / max(self.warmup_steps, 1)
        frac = jnp.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        return self.lr * jnp.minimum(warm, 0.5 * (1 + jnp.cos(jnp.pi * frac)))


BASELINE_TRAIN_PROFILES: dict[str, BaselineTrainConfig] = {
    # ~40 min on 2 CPU cores: 6,000 steps of 64 (7.7 epochs), a short EMA to match
    "ci": BaselineTrainConfig(profile="ci", total_steps=6_000, batch_size=64, lr=0.05, warmup_steps=100,
                              ema_decay=0.995, log_every=25, ckpt_every=250),
    "wrn16_4": BaselineTrainConfig(profile="wrn16_4", total_steps=39_100),
    "wrn28_10": BaselineTrainConfig(profile="wrn28_10"),
    # MNIST, ~2 epochs of batch 64; crops of ±2 px (MNIST digits are centred in a 20×20 box), no flips
    "mnist": BaselineTrainConfig(profile="mnist", total_steps=2_000, batch_size=64, lr=0.05, warmup_steps=100,
                                 ema_decay=0.995, crop_padding=2, random_flip=False, data="mnist",
                                 log_every=25, ckpt_every=250),
    # the plain CNN, 5 epochs of batch 64 on clean MNIST as MNIST-C trained its models (no crops, no flips;
    # the dequantization noise of every model here, ±1/512 around each pixel's bin centre)
    "mnist_cnn": BaselineTrainConfig(profile="mnist_cnn", total_steps=4_700, batch_size=64, lr=0.05, warmup_steps=100,
                                     ema_decay=0.998, crop_padding=0, random_flip=False, data="mnist",
                                     log_every=50, ckpt_every=500),
}


def get_baseline_train_config(profile: str, **overrides: Any) -> BaselineTrainConfig:
    if profile not in BASELINE_TRAIN_PROFILES:
        raise ValueError(f"unknown baseline profile {profile!r}; expected one of {sorted(BASELINE_TRAIN_PROFILES)}")
    return dataclasses.replace(BASELINE_TRAIN_PROFILES[profile], **overrides)


def random_crop(key: Array, x: Array, padding: int) -> Array:
    """Random translations by up to ``padding`` pixels with reflection padding.  x: [B, H, W, C]."""
    if padding == 0:
        return x
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)

    def crop_one(img: Array, off: Array) -> Array:  # [H+2p, W+2p, C], [2] → [H, W, C]
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop_one)(padded, offsets)


def bin_centres(images_u8: np.ndarray | Array) -> Array:
    """Bin centres (pixel + ½)/256 in [0, 1]: the mean of the training dequantization noise."""
    return (jnp.asarray(images_u8, jnp.float32) + 0.5) / 256.0


def _decay_mask(params: Any) -> Any:
    """Weight decay on convolution and dense kernels only (not on biases or BatchNorm scales)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", "") == "kernel", params)


def make_optimizer(cfg: BaselineTrainConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask),
        optax.sgd(cfg.learning_rate, momentum=cfg.momentum, nesterov=True),
    )


def init_state(key: Array, model_cfg: NetworkConfig, optimizer: optax.GradientTransformation) -> dict:
    init_key, run_key = jax.random.split(key)
    variables = init_variables(model_cfg, init_key)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": variables["params"],
        "batch_stats": variables["batch_stats"],
        "ema": jax.tree_util.tree_map(jnp.copy, variables["params"]),
        "opt_state": optimizer.init(variables["params"]),
        "key": run_key,
    }


def train_step(state: dict, images: Array, labels: Array, *, cfg: BaselineTrainConfig, model_cfg: NetworkConfig,
               optimizer: optax.GradientTransformation, batch_sharding) -> tuple[dict, dict]:
    """One SGD step on the batch of ``state["step"]``.  images: uint8 [N, 32, 32, 3] on device."""
    step = state["step"]
    k_crop, k_flip, k_deq, k_drop = jax.random.split(jax.random.fold_in(jax.random.fold_in(state["key"], 1), step), 4)
    idx = batch_indices(jax.random.fold_in(state["key"], 0), step, images.shape[0], cfg.batch_size)
    x = random_crop(k_crop, images[idx], cfg.crop_padding)  # uint8 [B, H, W, C]
    if cfg.random_flip:
        x = random_flip(k_flip, x)
    x = dequantize(k_deq, x) if cfg.dequantize else bin_centres(x)
    x = jax.lax.with_sharding_constraint(x, batch_sharding)
    y = jax.lax.with_sharding_constraint(labels[idx], batch_sharding)
    net = network(model_cfg)

    def loss_fn(params):
        logits, updates = net.apply({"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                                    mutable=["batch_stats"], rngs={"dropout": k_drop})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (updates.get("batch_stats", {}), jnp.mean(jnp.argmax(logits, -1) == y))

    (loss, (batch_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree_util.tree_map(lambda e, p: cfg.ema_decay * e + (1 - cfg.ema_decay) * p, state["ema"], params)
    grad_norm = optax.tree.norm(grads)
    new_state = dict(state, step=step + 1, params=params, batch_stats=batch_stats, ema=ema, opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "train_accuracy": acc,
               "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)}
    return new_state, metrics


def train(cfg: BaselineTrainConfig, steps: int, workdir: str | Path, *, data: str | None = None,
          data_dir: str | None = None, toy_size: int = 2048, progress: bool = True) -> dict:
    """Train (or resume) the baseline to ``steps`` total steps in ``workdir``; returns the metadata.
    ``data`` overrides ``cfg.data``."""
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    if steps > cfg.total_steps:
        raise ValueError(f"--steps {steps} exceeds the planned total_steps {cfg.total_steps} of the cosine "
                         "schedule; raise --total-steps for a new run")
    workdir = Path(workdir)
    model_cfg = NETWORK_PROFILES[cfg.profile]
    images_np, labels_np, source = training_set(cfg.data, data_dir, toy_size)
    if images_np.shape[1:] != (model_cfg.image_size, model_cfg.image_size, model_cfg.channels):
        raise ValueError(f"data {cfg.data} has images {images_np.shape[1:]}, profile {cfg.profile!r} expects "
                         f"{(model_cfg.image_size, model_cfg.image_size, model_cfg.channels)}")
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    if cfg.batch_size % jax.device_count():
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {jax.device_count()} devices")
    replicated = NamedSharding(mesh, P())
    images, labels = jax.device_put((images_np, labels_np), replicated)
    optimizer = make_optimizer(cfg)
    identity = {"train": cfg.identity(), "model": dataclasses.asdict(model_cfg), "data_source": source}
    store = CheckpointStore(workdir / "checkpoints", keep=cfg.keep)
    state, elapsed0 = resume(store, init_state(jax.random.PRNGKey(cfg.seed), model_cfg, optimizer), identity)
    state = jax.device_put(state, replicated)
    log_path = workdir / "train_log.csv"
    rows = log_rows(log_path, int(state["step"]))
    step_fn = functools.partial(train_step, cfg=cfg, model_cfg=model_cfg, optimizer=optimizer,
                                batch_sharding=NamedSharding(mesh, P("data")))
    n_params = count_params(state["params"])

    def metadata(step: int, seconds: float) -> dict:
        return {"kind": "discriminative baseline", "architecture": model_cfg.name, "profile": cfg.profile,
                "config": identity, "data_source": source, "n_params": n_params, "train_seconds": seconds,
                "device": device_name(), "jax_version": jax.__version__, "step": step}

    _, step, elapsed = run_loop(
        jax.jit(step_fn, donate_argnums=0), state, (images, labels), store=store, steps=steps,
        log_path=log_path, rows=rows, batch_size=cfg.batch_size, steps_per_call=1, log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every, lr_at=lambda s: float(cfg.learning_rate(s)), metadata=metadata,
        elapsed0=elapsed0, progress=progress, desc="train baseline",
    )  # fmt: skip
    return metadata(step, elapsed)


# --- evaluation, export and loading --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoadedClassifier:
    """A trained baseline: ``logits(x_unit [B, H, W, C] in [0, 1]) -> [B, 10]`` (jit-able, differentiable)."""

    variables: Any  # {"params", "batch_stats"}
    config: NetworkConfig
    meta: dict
    path: Path

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def logits(self) -> Callable[[Array], Array]:
        return functools.partial(_logits, self.config, self.variables)

    def predict(self, images_u8: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """argmax logits of uint8 images [N, H, W, C] at their bin centres: int [N]."""
        return np.argmax(self.logits_batched(images_u8, batch_size), axis=1)

    def logits_batched(self, images_u8: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Logits [N, 10] of uint8 images at their bin centres, in batches."""
        images_u8 = np.asarray(images_u8)
        shape = (self.config.image_size, self.config.image_size, self.config.channels)
        if images_u8.dtype != np.uint8 or images_u8.ndim != 4 or images_u8.shape[1:] != shape:
            raise ValueError(f"expected uint8 images [N, {shape[0]}, {shape[1]}, {shape[2]}], got "
                             f"{images_u8.dtype} {images_u8.shape}")
        out = [np.asarray(self.logits(bin_centres(images_u8[i : i + batch_size])))
               for i in range(0, len(images_u8), batch_size)]  # fmt: skip
        return np.concatenate(out) if out else np.zeros((0, self.config.n_classes), np.float32)

    def describe(self) -> str:
        m = self.meta
        acc = m.get("test_accuracy")
        acc_text = f", test accuracy {100 * acc:.2f}% on {m.get('test_source')}" if acc is not None else ""
        return (f"{self.path.name} ({m.get('architecture')}, sha256 {self.sha256[:12]}…, {m.get('step')} steps on "
                f"{m.get('data_source')}, trained on {m.get('device')}{acc_text})")


@functools.partial(jax.jit, static_argnums=0)
def _logits(config: NetworkConfig, variables: Any, x_unit: Array) -> Array:
    return network(config).apply(variables, x_unit, train=False)


def _config_from_meta(meta: dict) -> NetworkConfig:
    model = meta["config"]["model"]
    if model.get("family") == "plain_cnn":
        return CNNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    return WRNConfig(**model)


def _abstract_state(meta: dict) -> Any:
    model_cfg, cfg = _config_from_meta(meta), BaselineTrainConfig(**meta["config"]["train"])
    return jax.eval_shape(lambda: init_state(jax.random.PRNGKey(0), model_cfg, make_optimizer(cfg)))


def export_ema(workdir: str | Path, out: str | Path, step: int | None = None, *, data_dir: str | None = None,
               evaluate: bool = True) -> dict:
    """Write the EMA parameters (+ BatchNorm statistics) of a baseline checkpoint as a shipped file,
    with its test accuracy (on the test split found on this machine) in the metadata."""
    state, meta = restore_checkpoint(workdir, _abstract_state, step)
    model_cfg, cfg = _config_from_meta(meta), BaselineTrainConfig(**meta["config"]["train"])
    variables = {"params": state["ema"], "batch_stats": state["batch_stats"]}
    keep = {k: meta[k] for k in ("kind", "architecture", "profile", "config", "data_source", "n_params",
                                 "train_seconds", "device", "step")}
    keep.update(weights="ema", ema_decay=cfg.ema_decay)
    if evaluate:
        if cfg.data not in DATASETS:
            raise ValueError(f"no test split to evaluate a baseline trained on {cfg.data!r}; export with --no-eval")
        test = evaluation_split(cfg.data, data_dir)
        clf = LoadedClassifier(variables, model_cfg, {"sha256": ""}, Path(out))
        keep.update(test_accuracy=float(np.mean(clf.predict(test.images) == test.labels)),
                    test_source=test.source, test_images=len(test))
    exported = export_params(variables, out, keep)
    copy_log_beside(workdir, out, meta["step"])
    return exported


# name -> parameter file (relative to the repository), a JSON with its sha256 beside it
SHIPPED: dict[str, str] = {
    # WRN-10-2 trained on 2 CPU cores: a weak baseline that proves the plumbing
    "ci": "checkpoints/wrn_ci_cpu.msgpack",
    # WRN-10-2 on MNIST, 2,000 steps on 2 CPU cores: 99.16 % on the 10,000 test images
    "mnist": "checkpoints/wrn_mnist_cpu.msgpack",
    # the plain CNN MNIST-C was measured with, on MNIST (checkpoints/README.md)
    "mnist_cnn": "checkpoints/cnn_mnist_cpu.msgpack",
}


def load_classifier(name_or_path: str | Path = "ci", expected_sha256: str | None = None) -> LoadedClassifier:
    """Load and verify a shipped baseline (a name in :data:`SHIPPED` or a path)."""
    path = resolve_path(name_or_path, SHIPPED)
    if not path.exists():
        raise FileNotFoundError(
            f"baseline {path} not found; shipped: {SHIPPED}. Produce one with `python -m sbgc.train.baseline "
            f"--profile PROFILE --steps N --workdir DIR` and `python -m sbgc.train.baseline export --workdir DIR --out {path}`")
    variables, meta = load_params(path, expected_sha256)
    if meta.get("kind") != "discriminative baseline":
        raise ValueError(f"{path} is not a discriminative baseline (kind {meta.get('kind')!r}); score models "
                         "load with sbgc.train.pretrained.load_model")
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    return LoadedClassifier(variables=variables, config=_config_from_meta(meta), meta=meta, path=path)


# --- command line ----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sbgc.train.baseline", description=__doc__.split("\n\n")[1])
    p.add_argument("--profile", default="wrn28_10", choices=sorted(BASELINE_TRAIN_PROFILES))
    p.add_argument("--steps", type=int, required=True, help="total steps (a resumed run continues to it)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--toy-size", type=int, default=2048)
    p.add_argument("--no-progress", action="store_true")
    types = {"int": int, "float": float, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes")}
    for f in dataclasses.fields(BaselineTrainConfig):
        if f.name != "profile":
            p.add_argument("--" + f.name.replace("_", "-"), type=types[f.type], default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        p = argparse.ArgumentParser(prog="python -m sbgc.train.baseline export")
        p.add_argument("--workdir", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--step", type=int, default=None)
        p.add_argument("--data-dir", default=None)
        p.add_argument("--no-eval", action="store_true", help="skip the test-set accuracy")
        a = p.parse_args(argv[1:])
        meta = export_ema(a.workdir, a.out, a.step, data_dir=a.data_dir, evaluate=not a.no_eval)
        print(json.dumps({k: v for k, v in meta.items() if k != "config"}, indent=2))
        return 0
    a = _parser().parse_args(argv)
    overrides = {f.name: getattr(a, f.name) for f in dataclasses.fields(BaselineTrainConfig)
                 if f.name != "profile" and getattr(a, f.name) is not None}
    cfg = get_baseline_train_config(a.profile, **overrides)
    meta = train(cfg, a.steps, a.workdir, data_dir=a.data_dir, toy_size=a.toy_size, progress=not a.no_progress)
    print(json.dumps({k: v for k, v in meta.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
