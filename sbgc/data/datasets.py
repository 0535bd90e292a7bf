"""The datasets by name: one :class:`Dataset` record each in :data:`DATASETS`, read by every command line,
profile and chapter that needs a fact about a dataset.

Training sets: ``"mnist"`` (official MNIST train), ``"cifar10"`` (CIFAR-10 train) and ``"toy"``
(synthetic CIFAR-shaped images for tests). Evaluation splits: ``"mnist"`` (MNIST test),
``"cifar10"`` (CIFAR-10 test: the JPEG copy or the official archive) and ``"exact_head"`` (the 846
CIFAR-10 test images with exact pixels); :func:`describe` names them in provenance lines.

A new dataset is one :class:`Dataset` entry here (its loaders, splits, class names and how its sources are
named); what the book shows beside it (published numbers, a corruption benchmark) is keyed by its name in the
chapter's module, and a profile names it as its ``dataset``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from sbgc.data import cifar10
from sbgc.data.files import ImageSet
from sbgc.data.mnist import load_mnist

Loader = Callable[[str | None], ImageSet]  # data_dir (None: the default places) -> the split


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What the package knows of one labelled image dataset.

    name: the key (``"mnist"``); title: how pages write it (``"MNIST"``); image_shape: (H, W, C) of its uint8
    images; class_names: its labels' names; train: the training split's loader; splits: evaluation split name ->
    loader (the first one is the dataset's own test split); sources: an ImageSet ``source`` tag of this dataset ->
    how provenance lines describe the pixels.
    """

    name: str
    title: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    train: Loader
    splits: Mapping[str, Loader]
    sources: Mapping[str, str]

    def describe(self, split: ImageSet) -> str:
        """e.g. 'MNIST test split (official files, exact pixels, 10,000 images)'."""
        if split.source == "exact-head":
            return f"{self.title} exact test head (the first {len(split):,} test images, exact pixels)"
        return f"{self.title} {split.split} split ({self.sources.get(split.source, split.source)}, {len(split):,} images)"


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        "mnist", "MNIST", (28, 28, 1), tuple(str(d) for d in range(10)), lambda d: load_mnist("train", d),
        {"mnist": lambda d: load_mnist("test", d)}, {"mnist-official": "official files, exact pixels"}),
    "cifar10": Dataset(
        "cifar10", "CIFAR-10", (32, 32, 3), cifar10.CLASS_NAMES, lambda d: cifar10.load_cifar10("train", d),
        {"cifar10": lambda d: cifar10.load_cifar10("test", d), "exact_head": cifar10.load_exact_test_head},
        {"jpeg-copy": "JPEG-recompressed copy", "official": "official archive, exact pixels",
         "exact-head": "exact pixels"}),
}  # fmt: skip
SPLIT_DATASET = {split: d.name for d in DATASETS.values() for split in d.splits}  # evaluation split -> dataset
EVALUATION_SPLITS = tuple(SPLIT_DATASET)
MNIST_CLASS_NAMES: tuple[str, ...] = DATASETS["mnist"].class_names


def get_dataset(name: str) -> Dataset:
    """The :class:`Dataset` called ``name``; a ValueError lists the known ones otherwise."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name]


def dataset_of(data: str) -> str:
    """The dataset ("mnist", "cifar10") of an evaluation split or a dataset name (the toy stand-in
    counts as CIFAR-10); a ValueError names the known splits otherwise."""
    dataset = {**SPLIT_DATASET, **{name: name for name in DATASETS}, "toy": "cifar10"}.get(data)
    if dataset is None:
        raise ValueError(f"data must be one of {EVALUATION_SPLITS}, got {data!r}")
    return dataset


def class_names(data: str) -> tuple[str, ...]:
    """The class names of an evaluation split's (or a dataset's) labels: digits or CIFAR-10's classes."""
    return DATASETS[dataset_of(data)].class_names


def training_set(name: str, data_dir: str | None, toy_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images [N, H, W, C] (CIFAR-10 and toy: 32×32×3, MNIST: 28×28×1), int32 labels [N], source tag."""
    if name == "toy":
        split = cifar10.toy_images(toy_size, seed=0)
        return split.images, split.labels.astype(np.int32), f"toy-{toy_size}"
    if name not in DATASETS:
        raise ValueError(f"--data must be one of {(*DATASETS, 'toy')}, got {name!r}")
    split = DATASETS[name].train(data_dir)
    return split.images, split.labels.astype(np.int32), split.source


def evaluation_split(data: str, data_dir: str | None = None) -> ImageSet:
    """The split evaluated for ``data``: MNIST test, CIFAR-10 test (JPEG copy or official) or the
    846 exact CIFAR-10 test images."""
    if data not in SPLIT_DATASET:
        raise ValueError(f"data must be one of {EVALUATION_SPLITS}, got {data!r}")
    return DATASETS[SPLIT_DATASET[data]].splits[data](data_dir)


def dataset_of_source(source: str) -> Dataset | None:
    """The dataset whose images carry the ImageSet ``source`` tag (or a tag that starts with one), else None."""
    return next((d for d in DATASETS.values() for tag in d.sources if source.startswith(tag)), None)


def describe(split: ImageSet) -> str:
    """Which images these are, for provenance lines: dataset, split, source, pixel fidelity, size."""
    dataset = dataset_of_source(split.source)
    if dataset is None:  # a stand-in (toy): CIFAR-shaped
        return f"CIFAR-10 {split.split} split ({split.source}, {len(split):,} images)"
    return dataset.describe(split)


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """Positions of a random sample of ``n`` of ``n_total`` images: the first ``n`` of
    ``default_rng(seed).permutation(n_total)``, so a larger sample contains every smaller one (the
    rule of Table 1, the attacks and ``python -m sbgc.experiments.evaluate``)."""
    if not (isinstance(n, (int, np.integer)) and 1 <= n):
        raise ValueError(f"a sample needs a positive int n, got {n!r}")
    if n > n_total:
        raise ValueError(f"asked for {n} images, the split has {n_total}")
    return np.random.default_rng(seed).permutation(int(n_total))[: int(n)]

