"""The datasets by name, as the training and evaluation command lines ask for them.

Training sets: ``"mnist"`` (official MNIST train), ``"cifar10"`` (CIFAR-10 train) and ``"toy"``
(synthetic CIFAR-shaped images for tests). Evaluation splits: ``"mnist"`` (MNIST test),
``"cifar10"`` (CIFAR-10 test: the JPEG copy or the official archive) and ``"exact_head"`` (the 846
CIFAR-10 test images with exact pixels); :func:`describe` names them in provenance lines.
"""

from __future__ import annotations

import numpy as np

from sbgc.data import cifar10
from sbgc.data.files import ImageSet
from sbgc.data.mnist import load_mnist

EVALUATION_SPLITS = ("mnist", "cifar10", "exact_head")
SPLIT_DATASET = {"mnist": "mnist", "cifar10": "cifar10", "exact_head": "cifar10"}  # evaluation split -> dataset
MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


def dataset_of(data: str) -> str:
    """The dataset ("mnist", "cifar10") of an evaluation split or a dataset name (the toy stand-in
    counts as CIFAR-10); a ValueError names the known splits otherwise."""
    dataset = {**SPLIT_DATASET, "toy": "cifar10"}.get(data)
    if dataset is None:
        raise ValueError(f"data must be one of {EVALUATION_SPLITS}, got {data!r}")
    return dataset


def class_names(data: str) -> tuple[str, ...]:
    """The 10 class names of an evaluation split's (or a dataset's) labels: digits or CIFAR-10's classes."""
    return MNIST_CLASS_NAMES if dataset_of(data) == "mnist" else cifar10.CLASS_NAMES


def training_set(name: str, data_dir: str | None, toy_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images [N, H, W, C] (CIFAR-10 and toy: 32×32×3, MNIST: 28×28×1), int32 labels [N], source tag."""
    if name == "mnist":
        split = load_mnist("train", data_dir)
        return split.images, split.labels, split.source
    if name in ("cifar10", "toy"):
        split = cifar10.load_cifar10("train", data_dir) if name == "cifar10" else cifar10.toy_images(toy_size, seed=0)
        source = split.source if name == "cifar10" else f"toy-{toy_size}"
        return split.images, split.labels.astype(np.int32), source
    raise ValueError(f"--data must be 'cifar10', 'mnist' or 'toy', got {name!r}")


def evaluation_split(data: str, data_dir: str | None = None) -> ImageSet:
    """The split evaluated for ``data``: MNIST test, CIFAR-10 test (JPEG copy or official) or the
    846 exact CIFAR-10 test images."""
    if data == "mnist":
        return load_mnist("test", data_dir)
    if data == "cifar10":
        return cifar10.load_cifar10("test", data_dir)
    if data == "exact_head":
        return cifar10.load_exact_test_head(data_dir)
    raise ValueError(f"data must be one of {EVALUATION_SPLITS}, got {data!r}")


def describe(split: ImageSet) -> str:
    """Which images these are, for provenance lines: dataset, split, source, pixel fidelity, size."""
    if split.source == "mnist-official":
        return f"MNIST {split.split} split (official files, exact pixels, {len(split):,} images)"
    if split.source == "exact-head":
        return f"CIFAR-10 exact test head (the first {len(split):,} test images, exact pixels)"
    fidelity = {"jpeg-copy": "JPEG-recompressed copy", "official": "official archive, exact pixels"}.get(split.source, split.source)
    return f"CIFAR-10 {split.split} split ({fidelity}, {len(split):,} images)"


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """Positions of a random sample of ``n`` of ``n_total`` images: the first ``n`` of
    ``default_rng(seed).permutation(n_total)``, so a larger sample contains every smaller one (the
    rule of Table 1, the attacks and ``python -m sbgc.experiments.evaluate``)."""
    if not (isinstance(n, (int, np.integer)) and 1 <= n):
        raise ValueError(f"a sample needs a positive int n, got {n!r}")
    if n > n_total:
        raise ValueError(f"asked for {n} images, the split has {n_total}")
    return np.random.default_rng(seed).permutation(int(n_total))[: int(n)]


def sample_blocks(n: int, block: int) -> list[slice]:
    """Positions 0 … n−1 of a sample cut into consecutive blocks of ``block`` images (the last one
    shorter): the units in which expensive per-image results are computed and cached, so that a
    larger sample drawn as a longer prefix of the same permutation reuses every block computed."""
    if not (isinstance(n, (int, np.integer)) and n >= 1 and isinstance(block, (int, np.integer)) and block >= 1):
        raise ValueError(f"sample blocks need positive ints n and block, got {n!r}, {block!r}")
    return [slice(start, min(start + block, int(n))) for start in range(0, int(n), int(block))]
