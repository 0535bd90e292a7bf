"""Accuracy under common image corruptions (paper §3.2, Table 2, appendix Fig. 4).

The paper evaluates its score-based generative classifier (SBGC) on CIFAR-10-C (Hendrycks &
Dietterich 2019: 15 corruptions × 5 severities) and reports, beside discriminative models, the
accuracy on clean test images, the mean accuracy over all corruptions, and the mean over all
corruptions except the three noises (Table 2); Fig. 4 resolves log-likelihood and accuracy per
corruption and severity.

Benchmarks
----------
A :class:`CorruptionFamily` describes one benchmark: :data:`CIFAR10_C` (15 corruptions × 5
severities, :mod:`sbgc.data.corruptions`) and :data:`MNIST_C` (Mu & Gilmer 2019: 15 corruptions at
the one severity of the published benchmark, :mod:`sbgc.data.mnist_c`); :func:`corruption_family`
looks one up by dataset. Every function here defaults to CIFAR-10-C; an :class:`EvaluationSet` and
a :class:`GridResult` carry their family, so the functions of a result follow it.

Conventions
-----------
* **Images.** :func:`select_images` takes the first n images of ONE fixed random permutation of a
  split (seeded), so the sample of a smaller run is a prefix of a larger one, and the SBGC's
  images are the first images of the baseline's. The paper used a random 10 % of the test set for
  the SBGC (1,000 images); here the same images appear under every corruption and severity.
* **Corruptions** are generated on the fly with the family's ``corrupt``
  (:func:`sbgc.data.corruptions.corrupt`, :func:`sbgc.data.mnist_c.corrupt_mnist`), whose randomness
  depends only on (seed, test-image index, corruption, severity): an image gets the same
  corrupted version whichever sample or batch it is generated in.
* **Settings.** A setting is ``("clean", 0)`` or ``(corruption, severity)``; :func:`settings`
  lists the clean setting first, then corruption-major.
* **The same images for every classifier.** :func:`evaluate_grid` corrupts each setting once and
  hands the SAME uint8 images to every classifier it is given; each result carries the sha256 of
  each image in every setting (``image_sha256`` [N]) and of them all (``images_sha256``), so equality is
  checkable after the fact, and a sample computed in blocks carries the digest of the whole.
* **Classifiers** are plain functions of uint8 images ``[N, *family.image_shape]``: a discriminative one
  returns predicted labels ``[N]`` (e.g. ``LoadedClassifier.predict``); a generative one returns
  class scores ``[N, K]`` or a :class:`sbgc.method.scorers.ClassScores` (see :func:`scorer_classifier`:
  any scorer of :mod:`sbgc.method.scorers` with ONE key for every setting, so image i gets the same
  dequantization noise and probes under every corruption, common random numbers across settings).
* **Table 2 groups** (:func:`table2_row`): ``clean``; ``all``, every evaluated corrupted setting
  pooled (with the same images in every setting, the pooled accuracy is the mean of the
  per-setting accuracies, the paper's "mean accuracy"); ``all_wo_noise``, the same without the
  family's noise corruptions (CIFAR-10-C: Gaussian, shot, impulse noise; MNIST-C: shot and impulse
  noise, :data:`sbgc.data.mnist_c.MNIST_C_NOISE`). ``noise`` (not a Table 2 column) is the noises alone.
* **Intervals.** Each accuracy has the exact (Clopper–Pearson) 95 % interval of the pooled cases
  (:func:`sbgc.stats.binomial_interval`). Pooled cases share images (one image appears in up to 75
  settings), so they are not independent and that interval is too narrow for the corrupted
  groups; :func:`image_bootstrap_interval` resamples whole images instead and is reported beside it.
* **Likelihood** (Fig. 4): log p(x) = log (1/K) Σ_y p(x | y), the uniform-prior mixture of the
  class densities (:func:`sbgc.method.classify.log_marginal`), in nats of [0, 1]-scaled images; the paper's
  sum is larger by log 10 nats at every point, which moves no curve's shape. :func:`auroc` says how
  well log p(x) separates clean from corrupted images (higher log p = "clean").
* **Results cache.** :meth:`GridResult.to_arrays` / :meth:`GridResult.from_arrays` turn a result into
  plain numpy arrays (no object arrays) and back, for :mod:`sbgc.cache`.

Chapter 03
----------
The page calls one function per section: :func:`load_models` and :func:`chapter_sample` (the networks,
the images and the settings), :func:`evaluate_chapter` (the SBGC's grid in cached blocks of images,
:func:`sbgc_grid` through :func:`sbgc.cache.cached_blocks`, each baseline on the same images, checked by digest, and on its larger sample), whose
:class:`ChapterResults` carries Table 2, the paired comparison with its verdict and the results record;
:func:`likelihood_change_markdown` and :func:`detection_text` read Fig. 4 and the likelihood AUROC.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sbgc.cache import CacheError, CacheKey, CachedResult, ResultCache, cached_blocks
from sbgc.data.corruptions import CORRUPTIONS, NOISE_CORRUPTIONS, SEVERITIES, corrupt
from sbgc.data.datasets import DATASETS, dataset_of
from sbgc.data.datasets import describe as describe_split
from sbgc.data.mnist_c import MNIST_C_CORRUPTIONS, MNIST_C_NOISE, corrupt_mnist
from sbgc.method.classify import log_marginal
from sbgc.method.likelihood import bits_per_dim
from sbgc.report import cpu_trained_note, markdown_table
from sbgc.stats import Estimate, binomial_interval, proportion_estimate

CLEAN = "clean"
Setting = tuple[str, int]  # ("clean", 0) or (corruption, severity)
GROUPS: tuple[str, ...] = ("clean", "all", "all_wo_noise")
GROUP_TITLES: Mapping[str, str] = {
    "clean": "clean",
    "all": "all corruptions",
    "all_wo_noise": "w/o noises",
    "noise": "noises only",
}
CODE_VERSION = 3  # of the cached SBGC grid blocks (bump when evaluate_grid or GridResult.image_rows change what they return)


# --- the benchmarks -----------------------------------------------------------------------------------
CorruptFn = Callable[[np.ndarray, str, int, int, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class CorruptionFamily:
    """A corruption benchmark: its corruptions (in the benchmark's order), which of them are noises
    (the "w/o noises" group leaves them out), its severities, the uint8 image shape it corrupts, and
    ``corrupt(images, name, severity, seed, indices) -> images`` (same shape, uint8)."""

    name: str  # "CIFAR-10-C", "MNIST-C"
    dataset: str  # the clean dataset: "cifar10", "mnist"
    corruptions: tuple[str, ...]
    noise_corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    image_shape: tuple[int, int, int]
    corrupt: CorruptFn
    generator: str  # how the corrupted images are made, for the page

    @property
    def dim(self) -> int:
        """Pixel values per image (the D of bits/dim)."""
        return int(np.prod(self.image_shape))

    @property
    def n_settings(self) -> int:
        """Corrupted settings of the full benchmark."""
        return len(self.corruptions) * len(self.severities)

    @property
    def grayscale(self) -> bool:
        return self.image_shape[-1] == 1

    def severity_text(self) -> str:
        s = self.severities
        return str(s[0]) if len(s) == 1 else f"{s[0]}..{s[-1]}" if s == tuple(range(s[0], s[-1] + 1)) else str(s)


def _corrupt_cifar10(images: np.ndarray, name: str, severity: int, seed: int, indices: np.ndarray) -> np.ndarray:
    return corrupt(images, name, int(severity), seed=int(seed), indices=indices)


def _corrupt_mnist(images: np.ndarray, name: str, severity: int, seed: int, indices: np.ndarray) -> np.ndarray:
    if int(severity) != 1:
        raise ValueError(f"MNIST-C has one severity (1), got {severity!r}")
    return corrupt_mnist(images, name, seed=int(seed), indices=indices)


CIFAR10_C = CorruptionFamily(
    "CIFAR-10-C", "cifar10", CORRUPTIONS, NOISE_CORRUPTIONS, SEVERITIES, (32, 32, 3), _corrupt_cifar10,
    "regenerated on the fly with the CIFAR parameters of the reference generator (Hendrycks & Dietterich): "
    "a fresh draw, not the published files")
MNIST_C = CorruptionFamily(
    "MNIST-C", "mnist", MNIST_C_CORRUPTIONS, MNIST_C_NOISE, (1,), (28, 28, 1), _corrupt_mnist,
    "regenerated on the fly with the parameters of the reference generator (google-research/mnist-c, Mu & "
    "Gilmer 2019), one severity per corruption (each function's default, the one the published benchmark "
    "used): a fresh draw, not the published arrays")
FAMILIES: Mapping[str, CorruptionFamily] = {"cifar10": CIFAR10_C, "mnist": MNIST_C}
if not set(FAMILIES) <= set(DATASETS):
    raise ImportError(f"corruption benchmarks of datasets sbgc.data.datasets does not know: {set(FAMILIES) - set(DATASETS)}")


def corruption_family(dataset: str) -> CorruptionFamily:
    """The benchmark of a dataset ("cifar10", "mnist"; also an evaluation split such as "exact_head")
    or of a family name ("CIFAR-10-C", "MNIST-C")."""
    by_name = {f.name: f for f in FAMILIES.values()}
    if dataset in by_name:
        return by_name[dataset]
    try:
        return FAMILIES[dataset_of(dataset)]
    except ValueError:
        raise ValueError(f"no corruption benchmark for {dataset!r}; datasets: {', '.join(FAMILIES)}") from None


# Table 2 of the paper (accuracy in %): model, training data augmentation, clean, all, w/o noises.
PAPER_TABLE2: tuple[tuple[str, str, float, float, float], ...] = (
    ("ResNeXt29 + AugMix (Hendrycks et al.)", "trained with data augmentation", 95.83, 89.09, 90.51),
    ("ResNet-50 + adv. augm. (Calian et al.)", "trained with data augmentation", 94.93, 92.17, 92.53),
    ("WideResNet-28-12 (Targ et al.)", "simple augmentation", 95.42, 74.42, 80.21),
    ("SBGC", "simple augmentation", 95.04, 76.24, 75.71),
)


# --- what to evaluate -------------------------------------------------------------------------------
def check_severities(severities: Sequence[int], family: CorruptionFamily = CIFAR10_C) -> tuple[int, ...]:
    """Sorted distinct severities of the family (CIFAR-10-C: ints in 1..5; MNIST-C: 1); a ValueError otherwise."""
    values = list(severities) if not isinstance(severities, (str, bytes)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v not in family.severities
                         for v in values):
        raise ValueError(f"severities must be a non-empty sequence of ints in {family.severity_text()} "
                         f"({family.name}), got {severities!r}")
    return tuple(sorted({int(v) for v in values}))


def check_corruptions(corruptions: Sequence[str], family: CorruptionFamily = CIFAR10_C) -> tuple[str, ...]:
    """Names of the family's corruptions, in the benchmark's order (a ValueError naming unknown ones)."""
    names = list(corruptions) if not isinstance(corruptions, (str, bytes)) else None
    unknown = [n for n in names or () if n not in family.corruptions]
    if not names or unknown:
        raise ValueError(f"corruptions must be a non-empty sequence of {', '.join(family.corruptions)} "
                         f"({family.name}); got {corruptions!r}"
                         + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else ""))
    return tuple(n for n in family.corruptions if n in set(names))


def settings(corruptions: Sequence[str], severities: Sequence[int], *, clean: bool = True,
             family: CorruptionFamily = CIFAR10_C) -> tuple[Setting, ...]:
    """The clean setting (first, if ``clean``) then every (corruption, severity), corruption-major."""
    corruptions, severities = check_corruptions(corruptions, family), check_severities(severities, family)
    grid = tuple((c, int(s)) for c in corruptions for s in severities)
    return (((CLEAN, 0),) if clean else ()) + grid


def setting_label(setting: Setting) -> str:
    name, severity = setting
    return "clean" if name == CLEAN else f"{name} {severity}"


def parse_setting_label(label: str) -> Setting:
    """The inverse of :func:`setting_label`: ``"clean"`` -> ("clean", 0), ``"fog 3"`` -> ("fog", 3)."""
    if label == CLEAN:
        return (CLEAN, 0)
    name, _, severity = str(label).rpartition(" ")
    if not name or not severity.isdigit():
        raise ValueError(f"not a setting label: {label!r}")
    return (name, int(severity))


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """Clean test images to corrupt: uint8 ``images [N, *family.image_shape]`` (CIFAR-10-C: 32×32×3,
    MNIST-C: 28×28×1), int ``labels [N]``, and ``indices [N]``, each image's index in its split (the
    key of its corruption randomness); ``family`` the benchmark that corrupts them."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    source: str  # the data's source tag, e.g. "exact-head", "jpeg-copy", "official", "mnist-official"
    n_available: int  # size of the split the images were drawn from
    family: CorruptionFamily = CIFAR10_C

    def __post_init__(self):
        n = len(self.images)
        shape = self.family.image_shape
        if self.images.dtype != np.uint8 or self.images.shape[1:] != shape:
            raise ValueError(f"images must be uint8 [N, {', '.join(map(str, shape))}] for {self.family.name}, "
                             f"got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError(f"labels and indices must have shape ({n},), got {self.labels.shape}, {self.indices.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int) -> "EvaluationSet":
        """The first n images (the sample a smaller run draws)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"head needs 1 <= n <= {len(self)}, got {n}")
        return self.part(slice(0, n))

    def part(self, rows: slice) -> "EvaluationSet":
        """The images ``rows`` (a slice of positions) of the set, e.g. one block of :func:`sbgc_grid`."""
        return dataclasses.replace(self, images=self.images[rows], labels=self.labels[rows], indices=self.indices[rows])


def image_order(n_available: int, seed: int) -> np.ndarray:
    """One fixed random permutation of ``range(n_available)``: samples are its prefixes."""
    return np.random.default_rng([int(seed), 0xC1FA]).permutation(int(n_available))


def select_images(split, n: int, seed: int, *, family: CorruptionFamily = CIFAR10_C) -> EvaluationSet:
    """The first ``n`` images of a split (a :class:`sbgc.data.files.ImageSet`) in :func:`image_order`,
    to be corrupted by ``family``."""
    total = len(split)
    if not (isinstance(n, (int, np.integer)) and 1 <= n <= total):
        raise ValueError(f"cannot draw {n!r} images from {total} ({split.source}, split {split.split}); "
                         f"need 1 <= n <= {total}")
    pick = image_order(total, seed)[: int(n)]
    return EvaluationSet(
        images=np.ascontiguousarray(split.images[pick]),
        labels=np.asarray(split.labels[pick]).astype(np.int64),
        indices=np.asarray(split.indices[pick]).astype(np.int64),
        source=split.source,
        n_available=total,
        family=family,
    )


def corrupted(evalset: EvaluationSet, setting: Setting, seed: int, chunk: int = 1000) -> np.ndarray:
    """The images of ``evalset`` under ``setting`` (uint8, their shape; clean: the images themselves),
    corrupted by the set's family ``chunk`` images at a time to bound the float intermediates (the
    result does not depend on the chunking)."""
    name, severity = setting
    if name == CLEAN:
        return evalset.images
    family = evalset.family
    if name not in family.corruptions or int(severity) not in family.severities:
        raise ValueError(f"{setting_label(setting)} is not a setting of {family.name}")
    out = np.empty_like(evalset.images)
    for start in range(0, len(evalset), chunk):
        part = slice(start, start + chunk)
        out[part] = family.corrupt(evalset.images[part], name, int(severity), int(seed), evalset.indices[part])
    return out


# --- evaluation -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GridResult:
    """One classifier over a grid of settings, on the same images in every setting.

    predictions [S, N]; labels [N]; log_p [S, N, K] class scores (generative classifiers only, else
    None); nfe [S, N] score evaluations per image, summed over its classes (generative only); seconds [S]
    wall time of the classifier per setting; images_sha256 the digest of all images evaluated, in order
    (:func:`joint_digest` of ``image_sha256`` [N], each image's digest over the settings, where known);
    family the name of the benchmark (:class:`CorruptionFamily`) the settings belong to.
    """

    name: str
    settings: tuple[Setting, ...]
    labels: np.ndarray
    predictions: np.ndarray
    log_p: np.ndarray | None
    nfe: np.ndarray | None
    seconds: np.ndarray
    images_sha256: str
    image_indices: np.ndarray
    family: str = CIFAR10_C.name
    image_sha256: np.ndarray | None = None  # [N] str (entries stored before it existed lack it)
    log_p_is_density: bool = True  # log_p is log p(x | y) (or a bound on it); False: a class score (uniform weighting)

    @property
    def corruption_family(self) -> CorruptionFamily:
        return corruption_family(self.family)

    @property
    def n_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def correct(self) -> np.ndarray:
        """bool [S, N]."""
        return self.predictions == self.labels[None, :]

    def accuracy(self) -> np.ndarray:
        """Accuracy per setting: [S]."""
        return self.correct.mean(axis=1)

    def log_marginal(self) -> np.ndarray:
        """log p(x) (uniform class prior), nats: [S, N]."""
        if self.log_p is None or not self.log_p_is_density:
            raise ValueError(f"{self.name} has no likelihoods (not a generative classifier, or its scores are no density)")
        s, n, k = self.log_p.shape
        return log_marginal(self.log_p.reshape(s * n, k)).reshape(s, n)

    def marginal_bpd(self) -> np.ndarray:
        """Bits/dim of log p(x) for [0, 1]-scaled images of the family's shape: [S, N]."""
        return bits_per_dim(self.log_marginal(), self.corruption_family.dim)

    def index(self, setting: Setting) -> int:
        return self.settings.index(setting)

    def select(self, keep: Sequence[Setting]) -> "GridResult":
        """The result restricted to the settings ``keep`` (in that order)."""
        rows = [self.index(s) for s in keep]
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return dataclasses.replace(self, settings=tuple(keep), predictions=self.predictions[rows],
                                   log_p=pick(self.log_p), nfe=pick(self.nfe), seconds=self.seconds[rows])


    def to_arrays(self) -> dict[str, np.ndarray]:
        """The result as plain numpy arrays for :mod:`sbgc.cache` (strings as unicode arrays, no
        object arrays; log_p and nfe only where present); :meth:`from_arrays` rebuilds it."""
        out = {"name": np.asarray(self.name, dtype=np.str_), "family": np.asarray(self.family, dtype=np.str_),
               "settings": np.asarray([setting_label(s) for s in self.settings], dtype=np.str_),
               "labels": np.asarray(self.labels), "predictions": np.asarray(self.predictions),
               "seconds": np.asarray(self.seconds, np.float64),
               "images_sha256": np.asarray(self.images_sha256, dtype=np.str_),
               "image_indices": np.asarray(self.image_indices)}  # fmt: skip
        for field in ("log_p", "nfe", "image_sha256"):
            value = getattr(self, field)
            if value is not None:
                out[field] = np.asarray(value)
        if not self.log_p_is_density:
            out["log_p_is_density"] = np.asarray(False)
        return out

    def image_rows(self) -> dict[str, np.ndarray]:
        """The per-image arrays of the result, image axis first, for :func:`sbgc.cache.cached_blocks`:
        labels [N], predictions [N, S], log_p [N, S, K], nfe [N, S], seconds [N, S] (each setting's time
        shared equally by the images), image_sha256 [N]; :meth:`from_image_rows` joins blocks of them."""
        if self.log_p is None or self.nfe is None or self.image_sha256 is None:
            raise ValueError(f"{self.name}: image rows are kept for generative grids with image digests only")
        n = self.n_images
        return {"labels": np.asarray(self.labels), "predictions": self.predictions.T,
                "log_p": self.log_p.transpose(1, 0, 2), "nfe": self.nfe.T,
                "seconds": np.tile(np.asarray(self.seconds, np.float64) / n, (n, 1)),
                "image_sha256": np.asarray(self.image_sha256, dtype=np.str_)}  # fmt: skip

    @classmethod
    def from_image_rows(cls, arrays: Mapping[str, np.ndarray], *, name: str, settings: Sequence[Setting], family: str,
                        image_indices: np.ndarray, log_p_is_density: bool = True) -> "GridResult":
        """The result whose :meth:`image_rows` (of one or more consecutive blocks, joined) are ``arrays``."""
        digests = np.asarray(arrays["image_sha256"], dtype=np.str_)
        return cls(name=name, settings=tuple(settings), labels=np.asarray(arrays["labels"]),
                   predictions=np.asarray(arrays["predictions"]).T, log_p=np.asarray(arrays["log_p"]).transpose(1, 0, 2),
                   nfe=np.asarray(arrays["nfe"]).T, seconds=np.asarray(arrays["seconds"]).sum(axis=0),
                   images_sha256=joint_digest(digests), image_indices=np.asarray(image_indices), family=family,
                   image_sha256=digests, log_p_is_density=log_p_is_density)  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "GridResult":
        """The result :meth:`to_arrays` wrote (e.g. a cache entry's ``arrays``)."""
        missing = {"name", "family", "settings", "labels", "predictions", "seconds", "images_sha256",
                   "image_indices"} - set(arrays)
        if missing:
            raise ValueError(f"not a stored GridResult: lacks {sorted(missing)}")
        labels = np.asarray(arrays["settings"])
        return cls(name=str(arrays["name"]), settings=tuple(parse_setting_label(str(x)) for x in labels.reshape(-1)),
                   labels=np.asarray(arrays["labels"]), predictions=np.asarray(arrays["predictions"]),
                   log_p=np.asarray(arrays["log_p"]) if "log_p" in arrays else None,
                   nfe=np.asarray(arrays["nfe"]) if "nfe" in arrays else None,
                   seconds=np.asarray(arrays["seconds"]), images_sha256=str(arrays["images_sha256"]),
                   image_indices=np.asarray(arrays["image_indices"]), family=str(arrays["family"]),
                   image_sha256=np.asarray(arrays["image_sha256"]) if "image_sha256" in arrays else None,
                   log_p_is_density=bool(arrays.get("log_p_is_density", True)))  # fmt: skip


def _head(result: GridResult, n: int) -> GridResult:
    """The result on its first ``n`` images (every setting)."""
    pick = lambda a: None if a is None else a[:, :n]  # noqa: E731
    digests = None if result.image_sha256 is None else result.image_sha256[:n]
    return dataclasses.replace(result, labels=result.labels[:n], predictions=result.predictions[:, :n],
                               log_p=pick(result.log_p), nfe=pick(result.nfe), image_indices=result.image_indices[:n],
                               image_sha256=digests, images_sha256=result.images_sha256 if digests is None
                               else joint_digest(digests), seconds=result.seconds * n / result.n_images)  # fmt: skip


def joint_digest(image_sha256: Sequence[str]) -> str:
    """The digest of a sample from its images' digests, in order: the same whether the sample was
    evaluated at once or in blocks."""
    return hashlib.sha256("\n".join(str(d) for d in image_sha256).encode()).hexdigest()


Classifier = Callable[[np.ndarray], Any]


def scorer_classifier(score_fn, sde, scorer: Any, key, *, n_classes: int = 10, first_image: int = 0) -> Classifier:
    """The generative classifier of ``scorer`` (any :class:`sbgc.method.scorers.ClassScorer`) as a function of
    uint8 images: their :class:`~sbgc.method.scorers.ClassScores`.

    Every call uses the same ``key``, so image i of a batch gets the same dequantization noise and random
    numbers (probes, times) in every setting (common random numbers across corruptions and severities);
    ``first_image`` is the batch's position in its sample (a block of :func:`sbgc_grid`), so that the image
    gets the numbers it has in the whole sample.
    """

    def classify(images_u8: np.ndarray):
        return scorer.scores(score_fn, sde, images_u8, key, n_classes=n_classes, first_image=first_image)

    return classify


def _unpack(name: str, out: Any, n: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(predictions [N], log_p [N, K] or None, nfe [N] or None: summed over the classes) of a classifier's
    output (a scorer's :class:`~sbgc.method.scorers.ClassScores` decides by its own ``predict``)."""
    log_p = getattr(out, "log_p", None)
    nfe = getattr(out, "nfe", None)
    if log_p is None:
        arr = np.asarray(out)
        if arr.ndim == 2:
            log_p = arr
        elif arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
            if arr.shape != (n,):
                raise ValueError(f"classifier {name} returned {arr.shape[0]} labels for {n} images")
            return arr.astype(np.int64), None, None
        else:
            raise ValueError(f"classifier {name} must return int labels [N] or class log-likelihoods [N, K], "
                             f"got {arr.dtype} {arr.shape}")
    log_p = np.asarray(log_p, np.float64)
    if log_p.ndim != 2 or log_p.shape[0] != n:
        raise ValueError(f"classifier {name} returned log-likelihoods of shape {log_p.shape} for {n} images")
    if not np.all(np.isfinite(log_p)):
        raise ValueError(f"classifier {name} returned non-finite log-likelihoods")
    pred = out.predict() if callable(getattr(out, "predict", None)) else np.argmax(log_p, axis=1)
    if nfe is not None:
        nfe = np.asarray(nfe, np.float64)
        nfe = nfe.reshape(n, -1).sum(axis=1)  # [N] or [N, K] per class
    return np.asarray(pred).astype(np.int64), log_p, nfe


def evaluate_grid(
    classifiers: Mapping[str, Classifier],
    evalset: EvaluationSet,
    grid: Sequence[Setting],
    *,
    seed: int,
    progress: bool = False,
) -> dict[str, GridResult]:
    """Every classifier on the SAME images of every setting (each setting corrupted once).

    The settings must belong to the family of ``evalset`` (which corrupts them). Returns
    {name: GridResult}; all results carry the same ``images_sha256``.
    """
    if not classifiers:
        raise ValueError("evaluate_grid needs at least one classifier")
    grid = tuple((str(c), int(s)) for c, s in grid)
    if len(set(grid)) != len(grid):
        raise ValueError(f"settings must be distinct, got {grid}")
    family = evalset.family
    foreign = [setting_label(s) for s in grid
               if s[0] != CLEAN and (s[0] not in family.corruptions or s[1] not in family.severities)]
    if foreign:
        raise ValueError(f"settings {', '.join(foreign)} are not settings of {family.name}")
    n = len(evalset)
    digests = [hashlib.sha256() for _ in range(n)]
    preds = {k: np.empty((len(grid), n), np.int64) for k in classifiers}
    log_ps: dict[str, list] = {k: [] for k in classifiers}
    nfes: dict[str, list] = {k: [] for k in classifiers}
    seconds = {k: np.zeros(len(grid)) for k in classifiers}
    iterator = grid
    if progress:
        from tqdm import tqdm

        iterator = tqdm(grid, desc="settings")
    for i, setting in enumerate(iterator):
        x = corrupted(evalset, setting, seed)
        label = f"{setting_label(setting)}\0".encode()
        for d, image in zip(digests, x):
            d.update(label + np.ascontiguousarray(image).tobytes())
        for name, fn in classifiers.items():
            start = time.perf_counter()
            out = fn(x)
            seconds[name][i] = time.perf_counter() - start
            preds[name][i], lp, nfe = _unpack(name, out, n)
            log_ps[name].append(lp)
            nfes[name].append(nfe)
    image_sha256 = np.asarray([d.hexdigest() for d in digests], dtype=np.str_)
    results = {}
    for name in classifiers:
        has_lp = all(a is not None for a in log_ps[name])
        has_nfe = all(a is not None for a in nfes[name])
        results[name] = GridResult(
            name=name, settings=grid, labels=np.asarray(evalset.labels, np.int64), predictions=preds[name],
            log_p=np.stack(log_ps[name]) if has_lp else None, nfe=np.stack(nfes[name]) if has_nfe else None,
            seconds=seconds[name], images_sha256=joint_digest(image_sha256), image_indices=np.asarray(evalset.indices),
            family=family.name, image_sha256=image_sha256,
        )  # fmt: skip
    return results


# --- the SBGC's grid, computed in cached blocks of images -----------------------------------------------
GRID_BLOCK = 12  # images per cached block of the SBGC's grid


def sbgc_grid(cache: ResultCache, sample: "ChapterSample", model: Any, scorer: Any, key, *,
              name: str = "SBGC") -> tuple[GridResult, list[CachedResult]]:
    """The SBGC's grid over ``sample.sbgc`` [S, N] through ``cache`` in blocks of :data:`GRID_BLOCK` images
    (:func:`sbgc.cache.cached_blocks`: an interrupted run resumes at its first missing block, a larger sample
    reuses the blocks of a smaller, ``--shard`` splits the blocks between processes), and the blocks' entries.

    ``model``: the score model (``score_fn``, ``sde``, ``sha256``, ``config.n_classes``); ``scorer``: how its
    classes are scored (:func:`scorer_classifier` with ``key``, the block's position as ``first_image``, so the
    numbers do not depend on the block size).
    """
    n_classes = getattr(model.config, "n_classes", 10)

    def compute(b: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows = slice(b * GRID_BLOCK, b * GRID_BLOCK + len(idx))
        classify = scorer_classifier(getattr(model, "score_fn", None), getattr(model, "sde", None), scorer, key,
                                     n_classes=n_classes, first_image=rows.start)  # fmt: skip
        return evaluate_grid({"SBGC": classify}, sample.sbgc.part(rows), sample.grid, seed=sample.seed)["SBGC"].image_rows()

    arrays, entries = cached_blocks(cache, sample.sbgc_key(model.sha256, scorer), GRID_BLOCK, compute)
    grid = GridResult.from_image_rows(arrays, name=name, settings=sample.grid, family=sample.family.name,
                                      image_indices=sample.sbgc.indices,
                                      log_p_is_density=bool(getattr(scorer, "gives_density", True)))  # fmt: skip
    if not np.array_equal(grid.labels, sample.sbgc.labels):
        raise CacheError("the cached SBGC grid holds other labels than the sample's images")
    return grid, entries


def images_for_half_width(half_width: float, n_images: int, target: float) -> int:
    """Images a sample needs for a 95 % interval of half-width ``target`` when ``n_images`` gave
    ``half_width`` (both as fractions): n·(half_width/target)², the 1/√n scaling of an interval over
    independently drawn images (a planning estimate, not a guarantee)."""
    if not (half_width >= 0 and target > 0 and n_images >= 1):
        raise ValueError(f"need half_width >= 0, target > 0 and n_images >= 1, got {half_width}, {target}, {n_images}")
    return int(math.ceil(n_images * (half_width / target) ** 2))


# --- Table 2 ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Pooled accuracy of a group of settings [settings × images], with two intervals.

    pooled: k of n pooled cases with its exact (Clopper–Pearson) interval.
    bootstrap: the same accuracy with a percentile interval that resamples whole images (n = images),
        None below 2 images.
    """

    pooled: Estimate
    bootstrap: Estimate | None
    n_images: int
    n_settings: int

    @property
    def fraction(self) -> float:
        return self.pooled.value

    @property
    def correct(self) -> int:
        return int(self.pooled.successes)

    @property
    def total(self) -> int:
        return self.pooled.n

    def cell(self, bootstrap: bool = False) -> str:
        """``"76.2 [75.1, 77.3]"`` in %; with ``bootstrap`` the image-bootstrap interval."""
        est = self.bootstrap if bootstrap else self.pooled
        if est is None:
            return f"{100 * self.fraction:.1f} (n/a)"
        return f"{100 * self.fraction:.1f} [{100 * est.lo:.1f}, {100 * est.hi:.1f}]"

    def as_dict(self) -> dict[str, Any]:
        boot = self.bootstrap
        return {"correct": self.correct, "total": self.total, "n_images": self.n_images, "n_settings": self.n_settings,
                "lo": self.pooled.lo, "hi": self.pooled.hi, "boot_lo": None if boot is None else boot.lo,
                "boot_hi": None if boot is None else boot.hi, "level": self.pooled.level, "accuracy": self.fraction}


def image_bootstrap_interval(
    correct: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of the pooled accuracy of ``correct`` (bool [S, N]: settings × images)
    when whole images (columns) are resampled with replacement; None for fewer than 2 images."""
    correct = np.asarray(correct, bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be [settings, images], got shape {correct.shape}")
    n = correct.shape[1]
    if n < 2 or correct.shape[0] == 0:
        return None
    per_image = correct.sum(axis=0).astype(np.float64)  # [N]
    rng = np.random.default_rng([int(seed), 0xB007])
    draws = rng.integers(0, n, size=(int(n_boot), n))
    acc = per_image[draws].sum(axis=1) / (correct.shape[0] * n)
    alpha = 1.0 - level
    return float(np.quantile(acc, alpha / 2)), float(np.quantile(acc, 1 - alpha / 2))


def group_settings(grid: Sequence[Setting], group: str, family: CorruptionFamily = CIFAR10_C) -> tuple[Setting, ...]:
    """The settings of ``grid`` that belong to a Table 2 group (see :data:`GROUPS`), or to ``"noise"``
    (the family's noise corruptions alone); "w/o noises" leaves out the family's noise corruptions."""
    noise = set(family.noise_corruptions)
    if group == "clean":
        return tuple(s for s in grid if s[0] == CLEAN)
    if group == "all":
        return tuple(s for s in grid if s[0] != CLEAN)
    if group == "all_wo_noise":
        return tuple(s for s in grid if s[0] != CLEAN and s[0] not in noise)
    if group == "noise":
        return tuple(s for s in grid if s[0] in noise)
    raise ValueError(f"group must be one of {GROUPS + ('noise',)}, got {group!r}")


def accuracy_of(correct: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Accuracy:
    """Pooled :class:`Accuracy` of bool ``correct`` [settings, images]."""
    correct = np.asarray(correct, bool)
    pooled = proportion_estimate(int(correct.sum()), int(correct.size), level)
    boot = image_bootstrap_interval(correct, n_boot=n_boot, seed=seed, level=level)
    bootstrap = None if boot is None else Estimate(pooled.value, *boot, int(correct.shape[1]), level, "image-bootstrap")
    return Accuracy(pooled, bootstrap, int(correct.shape[1]), int(correct.shape[0]))


def table2_row(result: GridResult, *, n_boot: int = 2000, seed: int = 0,
               family: CorruptionFamily | None = None) -> dict[str, Accuracy | None]:
    """{group: Accuracy, or None where the result has no setting of the group}; ``family`` defaults
    to the result's."""
    family = family or result.corruption_family
    row: dict[str, Accuracy | None] = {}
    for group in GROUPS:
        members = group_settings(result.settings, group, family)
        row[group] = None if not members else accuracy_of(result.select(members).correct, n_boot=n_boot, seed=seed)
    return row


def paired_difference(a: GridResult, b: GridResult, group: str = "all", *, n_boot: int = 2000,
                      seed: int = 0, family: CorruptionFamily | None = None) -> dict[str, Any] | None:
    """Accuracy of ``a`` minus that of ``b`` over a group (one of :data:`GROUPS` or "noise"), on the
    SAME cases (checked by the digest), with the discordant counts and an image-bootstrap percentile
    interval (None below 2 images). ``family`` defaults to ``a``'s."""
    if a.images_sha256 != b.images_sha256 or a.settings != b.settings:
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same images and settings")
    members = group_settings(a.settings, group, family or a.corruption_family)
    if not members:
        return None
    ca, cb = a.select(members).correct, b.select(members).correct
    diff = (ca.astype(np.float64) - cb).sum(axis=0)  # per image
    out = {"group": group, "difference": float(diff.sum() / ca.size), "only_a": int((ca & ~cb).sum()),
           "only_b": int((~ca & cb).sum()), "cases": int(ca.size), "lo": None, "hi": None}
    if ca.shape[1] >= 2:
        rng = np.random.default_rng([int(seed), 0xD1FF])
        draws = rng.integers(0, ca.shape[1], size=(int(n_boot), ca.shape[1]))
        boot = diff[draws].sum(axis=1) / ca.size
        out["lo"], out["hi"] = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    return out


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One row of Table 2: ours (with counts and intervals) or the paper's (numbers only)."""

    model: str
    source: str  # "ours" or "paper"
    images: str  # what the numbers are over
    cells: Mapping[str, Accuracy | float | None]


def paper_rows(family: CorruptionFamily = CIFAR10_C) -> list[TableRow]:
    """The paper's Table 2 (CIFAR-10-C), marked as the paper's; beside another benchmark's rows their
    images column says that these are CIFAR-10-C numbers, not that benchmark's."""
    images = "CIFAR-10 test / CIFAR-10-C" + ("" if family.name == CIFAR10_C.name else
                                            f" (the paper's CIFAR-10-C numbers, not {family.name})")
    return [TableRow(f"{model}, {augment}", "paper", images, dict(zip(GROUPS, (clean, allc, wo))))
            for model, augment, clean, allc, wo in PAPER_TABLE2]  # fmt: skip


def table2_markdown(rows: Sequence[TableRow], *, bootstrap: bool = False) -> str:
    """Table 2 as markdown: accuracy in %, ours with their 95 % intervals, the paper's as printed."""
    head = ["model", "numbers", "images", *(GROUP_TITLES[g] for g in GROUPS)]
    lines = []
    for row in rows:
        cells = []
        for g in GROUPS:
            v = row.cells.get(g)
            if v is None:
                cells.append("–")
            elif isinstance(v, Accuracy):
                cells.append(v.cell(bootstrap))
            else:
                cells.append(f"{v:.2f}")
        source = "**paper**" if row.source == "paper" else row.source
        lines.append([row.model, source, row.images, *cells])
    return markdown_table(head, lines, align=["left"] * 3 + ["right"] * len(GROUPS))


# --- per setting (Fig. 4) --------------------------------------------------------------------------
def per_setting(result: GridResult) -> dict[str, Any]:
    """Per setting: accuracy with its exact interval, and (generative) mean log p(x) ± SEM and bits/dim."""
    correct = result.correct
    k, n = correct.sum(axis=1), correct.shape[1]
    intervals = [binomial_interval(int(c), n) for c in k]
    out: dict[str, Any] = {
        "settings": [setting_label(s) for s in result.settings],
        "accuracy": correct.mean(axis=1), "correct": k, "n_images": n,
        "accuracy_lo": [lo for lo, _ in intervals], "accuracy_hi": [hi for _, hi in intervals],
    }  # fmt: skip
    if result.log_p is not None and result.log_p_is_density:
        lm, bpd = result.log_marginal(), result.marginal_bpd()
        out["mean_log_p_nats"] = lm.mean(axis=1)
        out["sem_log_p_nats"] = lm.std(axis=1, ddof=1) / math.sqrt(n) if n >= 2 else None
        out["mean_bpd"] = bpd.mean(axis=1)
    if result.log_p is not None and result.nfe is not None:
        out["mean_nfe_per_class"] = result.nfe.mean(axis=1) / result.log_p.shape[2]
    return out


def _panel_points(result: GridResult, name: str) -> tuple[list[int], list[int]]:
    """(x positions, row indices) of the clean setting (x = 0) and ``name``'s severities (x = s)."""
    xs, rows = [], []
    for i, (c, s) in enumerate(result.settings):
        if c == CLEAN or c == name:
            xs.append(0 if c == CLEAN else s)
            rows.append(i)
    return xs, rows


def _fig4_numbers(sbgc: GridResult, accuracy: GridResult | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """(mean log p [S], its SEM [S] or None, of ``sbgc``; accuracy [S] and its exact 95 % interval [S, 2], of
    ``accuracy`` (default ``sbgc``; the same settings))."""
    lm_all = sbgc.log_marginal()
    lm = lm_all.mean(axis=1)
    sem = lm_all.std(axis=1, ddof=1) / math.sqrt(sbgc.n_images) if sbgc.n_images >= 2 else None
    acc = sbgc if accuracy is None else accuracy
    if acc.settings != sbgc.settings:
        raise ValueError("the likelihood and the accuracy of Fig. 4 must come from grids of the same settings")
    ci = np.array([binomial_interval(int(c), acc.n_images) for c in acc.correct.sum(axis=1)])  # [S, 2]
    return lm, sem, acc.accuracy(), ci


def plot_fig4(sbgc: GridResult, baselines: Mapping[str, GridResult] | None = None, *, n_cols: int = 5,
              family: CorruptionFamily | None = None, accuracy: GridResult | None = None):
    """The paper's Fig. 4: per corruption, mean log p(x) (orange, left axis) and SBGC accuracy (black,
    right axis, exact 95 % intervals) over the severities, "Cl." = clean; baselines dashed (right
    axis). Corruptions that were not evaluated get an empty panel saying so. ``family`` (default: the
    result's) gives the panels; a benchmark with one severity (MNIST-C) gets two stacked panels over
    clean and every corruption instead (:func:`plot_fig4_single_severity`). ``accuracy``: the grid whose
    accuracy is drawn (default ``sbgc``; e.g. the converged classifier, when ``sbgc`` is the exact ODE's)."""
    import matplotlib.pyplot as plt

    if sbgc.log_p is None or not sbgc.log_p_is_density:
        raise ValueError(f"{sbgc.name} has no likelihoods to plot")
    family = family or sbgc.corruption_family
    if len(family.severities) == 1:
        return plot_fig4_single_severity(sbgc, baselines, family=family, accuracy=accuracy)
    baselines = dict(baselines or {})
    corruptions = family.corruptions
    n_rows = math.ceil(len(corruptions) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 2.5 * n_rows), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    lm, sem, acc, ci = _fig4_numbers(sbgc, accuracy)
    evaluated = {c for c, _ in sbgc.settings}
    ticks = [0, *family.severities]
    handles = {}
    for ax, name in zip(axes.flat, corruptions):
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xticks(ticks, ["Cl.", *map(str, family.severities)])
        ax.set_xlim(-0.4, max(ticks) + 0.4)
        ax.tick_params(labelsize=7)
        if name not in evaluated:
            ax.text(0.5, 0.5, "not evaluated\nat this profile", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="0.5")  # fmt: skip
            ax.set_yticks([])
            continue
        xs, rows = _panel_points(sbgc, name)
        yerr = None if sem is None else sem[rows]
        h = ax.errorbar(xs, lm[rows], yerr=yerr, color="C1", marker="o", ms=3, lw=1.5, capsize=2)
        handles.setdefault("mean log p(x) [nats] (left)", h)
        ax.tick_params(axis="y", colors="C1")
        right = ax.twinx()
        right.set_ylim(-0.03, 1.03)
        right.tick_params(labelsize=7)
        err = np.abs(ci[rows].T - acc[rows])
        h = right.errorbar(xs, acc[rows], yerr=err, color="k", marker="s", ms=3, lw=1.5, capsize=2)
        handles.setdefault(f"{sbgc.name} accuracy (right)", h)
        for j, (label, base) in enumerate(baselines.items()):
            bx, brows = _panel_points(base, name)
            (h,) = right.plot(bx, base.accuracy()[brows], color=f"C{j + 2}", ls="--", marker=".", lw=1)
            handles.setdefault(f"{label} accuracy (right)", h)
    for ax in axes.flat[len(corruptions):]:
        ax.set_visible(False)
    fig.supxlabel("severity (Cl. = clean)", fontsize=9)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(4, len(handles)), fontsize=8, frameon=False)  # fmt: skip
    return fig


def plot_fig4_single_severity(sbgc: GridResult, baselines: Mapping[str, GridResult] | None = None, *,
                              family: CorruptionFamily | None = None, accuracy: GridResult | None = None):
    """Fig. 4 for a benchmark with one severity: x = clean, then every corruption of the family (at
    x = 1, 2, ...); top: mean log p(x) ± SEM (orange, the clean level dotted across); bottom: the
    SBGC's accuracy with exact 95 % intervals (black) and the baselines' (markers). Corruptions not
    evaluated have no point and a grey tick label."""
    import matplotlib.pyplot as plt

    if sbgc.log_p is None or not sbgc.log_p_is_density:
        raise ValueError(f"{sbgc.name} has no likelihoods to plot")
    family = family or sbgc.corruption_family
    baselines = dict(baselines or {})
    names = (CLEAN, *family.corruptions)
    lm, sem, acc, ci = _fig4_numbers(sbgc, accuracy)
    where = {c: i for i, (c, _) in enumerate(sbgc.settings)}  # one severity: one row per corruption
    xs = [x for x, c in enumerate(names) if c in where]
    rows = [where[names[x]] for x in xs]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.55 * len(names) + 1.5), 5.2), sharex=True,
                                      constrained_layout=True)  # fmt: skip
    top.errorbar(xs, lm[rows], yerr=None if sem is None else sem[rows], color="C1", marker="o", ms=4, lw=0,
                 elinewidth=1.5, capsize=2, label="mean log p(x) [nats]")  # fmt: skip
    if CLEAN in where:
        top.axhline(lm[where[CLEAN]], color="C1", ls=":", lw=1)
    top.set_ylabel("mean log p(x) [nats]", fontsize=8)
    top.tick_params(labelsize=7)
    top.set_title(f"{family.name}, severity {family.severities[0]}: likelihood (top) and accuracy (bottom)", fontsize=9)
    err = np.abs(ci[rows].T - acc[rows])
    bottom.errorbar(xs, acc[rows], yerr=err, color="k", marker="s", ms=4, lw=0, elinewidth=1.5, capsize=2,
                    label=f"{sbgc.name} (exact 95 % interval)")  # fmt: skip
    for j, (label, base) in enumerate(baselines.items()):
        bwhere = {c: i for i, (c, _) in enumerate(base.settings)}
        bx = [x for x, c in enumerate(names) if c in bwhere]
        offset = 0.12 * (j + 1)
        bottom.plot(np.asarray(bx, float) + offset, base.accuracy()[[bwhere[names[x]] for x in bx]], color=f"C{j + 2}",
                    ls="none", marker="D", ms=4, label=label)  # fmt: skip
    bottom.set_ylim(-0.03, 1.03)
    bottom.set_ylabel("accuracy", fontsize=8)
    bottom.tick_params(labelsize=7)
    bottom.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=60, ha="right")
    for x, tick in enumerate(bottom.get_xticklabels()):
        if names[x] not in where:
            tick.set_color("0.6")
    bottom.set_xlim(-0.5, len(names) - 0.5)
    bottom.legend(fontsize=7, loc="lower left", frameon=False)
    return fig


def corruption_grid_of(image_u8: np.ndarray, *, seed: int = 0, index: int = 0,
                       family: CorruptionFamily = CIFAR10_C) -> np.ndarray:
    """One image (uint8, the family's image shape) under every corruption and severity of ``family``:
    uint8 [corruptions, severities, *image_shape], rows in the family's order. For CIFAR-10-C the
    same as :func:`sbgc.data.corruptions.corruption_grid`."""
    x = np.asarray(image_u8)
    if x.dtype != np.uint8 or x.shape != family.image_shape:
        raise ValueError(f"{family.name} grid takes one uint8 image of shape {family.image_shape}, got {x.dtype} {x.shape}")
    idx = np.array([int(index)], np.int64)
    return np.stack([np.stack([family.corrupt(x[None], name, s, int(seed), idx)[0] for s in family.severities])
                     for name in family.corruptions])  # fmt: skip


def mnist_c_grid(image_u8: np.ndarray, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """One MNIST image [28, 28, 1] under the 15 MNIST-C corruptions: uint8 [15, 1, 28, 28, 1]."""
    return corruption_grid_of(image_u8, seed=seed, index=index, family=MNIST_C)


def plot_corruption_grid(image_u8: np.ndarray, grid_u8: np.ndarray, title: str | None = None, *,
                         family: CorruptionFamily = CIFAR10_C):
    """One image clean and under every corruption (columns) and severity (rows):
    ``grid_u8`` as returned by :func:`corruption_grid_of` (CIFAR-10-C: uint8 [15, 5, 32, 32, 3], as
    :func:`sbgc.data.corruptions.corruption_grid`). A family with one severity (MNIST-C) gets one row:
    the clean image, then each corruption. Grayscale images are drawn with the gray colour map."""
    import matplotlib.pyplot as plt

    grid_u8 = np.asarray(grid_u8)
    expected = (len(family.corruptions), len(family.severities), *family.image_shape)
    if grid_u8.shape != expected:
        raise ValueError(f"expected a {family.name} corruption grid {list(expected)}, got {grid_u8.shape}")
    image_u8 = np.asarray(image_u8)

    def show(ax, img):
        if family.grayscale:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    n_c, n_s = grid_u8.shape[:2]
    if n_s == 1:
        fig, axes = plt.subplots(1, n_c + 1, figsize=(0.9 * (n_c + 1), 1.45), squeeze=False)
        show(axes[0, 0], image_u8)
        axes[0, 0].set_title("clean", fontsize=7)
        for c, name in enumerate(family.corruptions):
            show(axes[0, c + 1], grid_u8[c, 0])
            axes[0, c + 1].set_title(name.replace("_", "\n"), fontsize=7)
        fig.subplots_adjust(wspace=0.05, left=0.01, right=0.99, bottom=0.02, top=0.62 if title else 0.75)
    else:
        fig, axes = plt.subplots(n_s + 1, n_c, figsize=(1.0 * n_c, 1.1 * (n_s + 1)), squeeze=False)
        for c, name in enumerate(family.corruptions):
            for r in range(n_s + 1):
                show(axes[r, c], image_u8 if r == 0 else grid_u8[c, r - 1])
            axes[0, c].set_title(name.replace("_", "\n"), fontsize=7)
        for r in range(n_s + 1):
            axes[r, 0].set_ylabel("clean" if r == 0 else f"severity {family.severities[r - 1]}", fontsize=7)
        fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.04, right=0.99, bottom=0.01, top=0.9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


# --- does log p(x) detect the corruptions? ------------------------------------------------------------
def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for ``positive`` than for
    ``negative`` cases: P(score(pos) > score(neg)) + ½ P(tie), over all pairs, computed from the
    (tie-averaged) ranks of the pooled scores (the Mann–Whitney U statistic / (n_pos n_neg))."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, np.float64).ravel(), np.asarray(negative, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"auroc needs at least one case of each kind, got {pos.size} and {neg.size}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise ValueError("auroc needs finite scores")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def likelihood_auroc(result: GridResult) -> list[dict[str, Any]]:
    """Per corruption evaluated (and ``"all"``, every corrupted setting pooled): how well log p(x)
    tells the clean images (higher log p = "clean") from their corrupted versions (all the
    corruption's evaluated severities): the AUROC, the case counts, the mean change of log p
    (nats) and the fraction of (image, severity) pairs whose corrupted version is less likely."""
    if result.log_p is None:
        raise ValueError(f"{result.name} is not a generative classifier: it has no likelihoods")
    lm = result.log_marginal()
    if (CLEAN, 0) not in result.settings:
        raise ValueError("the likelihood AUROC needs the clean setting")
    clean = lm[result.index((CLEAN, 0))]
    names = list(dict.fromkeys(c for c, _ in result.settings if c != CLEAN))
    out = []
    for name in [*names, "all"]:
        rows = [i for i, (c, _) in enumerate(result.settings) if c != CLEAN and (name == "all" or c == name)]
        if not rows:
            continue
        corrupted_lp = lm[rows]  # [R, N]
        out.append({"corruption": name, "auroc": auroc(clean, corrupted_lp), "n_clean": int(clean.size),
                    "n_corrupted": int(corrupted_lp.size),
                    "mean_change_nats": float((corrupted_lp - clean[None]).mean()),
                    "fraction_less_likely": float((corrupted_lp < clean[None]).mean())})  # fmt: skip
    return out


# --- the verdict ------------------------------------------------------------------------------------
def _direction(d: Mapping[str, Any] | None) -> str | None:
    """"higher"/"lower" when the 95 % interval excludes 0, "unresolved" when it contains 0,
    "no interval" below two images, None when the group was not evaluated."""
    if d is None:
        return None
    if d.get("lo") is None:
        return "no interval"
    if d["lo"] > 0:
        return "higher"
    if d["hi"] < 0:
        return "lower"
    return "unresolved"


def likelihood_change_text(strongest: Mapping[str, tuple[float, float]]) -> str:
    """Fig. 4 in words: whether blurring raises log p(x), as the paper found on CIFAR-10-C, and which
    corruptions raise it. ``strongest``: corruption -> (Δ mean log p(x) vs clean [nats], accuracy) at
    its strongest evaluated severity, in the benchmark's order."""
    shown = lambda names: ", ".join(f"{n.replace('_', ' ')} ({strongest[n][0]:+.0f} nats, accuracy "
                                    f"{100 * strongest[n][1]:.0f} %)" for n in names)
    blurs = [n for n in strongest if "blur" in n]
    rises = [n for n in strongest if strongest[n][0] > 0]
    if not blurs:
        text = "No blur corruption was evaluated."
    elif all(strongest[n][0] > 0 for n in blurs):
        text = f"Blurring raises the likelihood, as the paper found on CIFAR-10-C: {shown(blurs)}."
    elif all(strongest[n][0] < 0 for n in blurs):
        text = f"Blurring lowers the likelihood here, unlike the paper's CIFAR-10-C finding: {shown(blurs)}."
    else:
        text = f"Blurring moves the likelihood both ways: {shown(blurs)}."
    return text + (f" The corruptions that raise the mean likelihood: {shown(rises)}." if rises
                   else " No corruption raises the mean likelihood.")


def _difference_text(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "not evaluated"
    interval = "no interval (one image)" if d.get("lo") is None else f"[{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
    return f"{100 * d['difference']:+.1f} points {interval}"


def robustness_verdict(paired: Mapping[str, Mapping[str, Any] | None], *, a: str = "SBGC",
                       b: str = "CNN") -> dict[str, Any]:
    """Is the ``a`` more robust than the ``b`` overall, only on the noise corruptions, or not at all? From the
    paired differences ``a − b`` (:func:`paired_difference`) of the groups "all", "all_wo_noise" and
    "noise" (and "clean", for context) with their 95 % image-bootstrap intervals: a difference counts
    only where its interval excludes 0. Returns {"verdict": a key, "text": a sentence, "directions"}.

    Keys: "overall" (higher on all corruptions and without the noises), "noise_only" (higher on the
    noises, not without them), "overall_pooled_only" (higher pooled, neither subgroup resolved),
    "non_noise_only", "less_robust" (lower on all corruptions pooled or without the noises and higher
    nowhere), "not_shown" (every interval contains 0), "undetermined" (no intervals: one image).
    """
    dirs = {g: _direction(paired.get(g)) for g in ("clean", "all", "all_wo_noise", "noise")}
    names = (a, b)
    a, b = f"the {a}", f"the {b}"
    al, wo, noise = dirs["all"], dirs["all_wo_noise"], dirs["noise"]
    if al is None:
        raise ValueError("the verdict needs the paired difference over all corruptions")
    if al == "no interval":
        key, text = "undetermined", (f"with fewer than two images there is no interval, so this run cannot say "
                                     f"whether {a} is more robust than {b}")
    elif al == "higher" and wo == "higher":
        key, text = "overall", (f"{a} is more robust than {b} overall: more accurate on all corruptions pooled "
                                f"and also once the noise corruptions are left out")
    elif noise == "higher" and wo != "higher":
        key = "noise_only"
        rest = {"lower": "less accurate on the others", "unresolved": "not resolved on the others",
                None: "the others were not evaluated"}.get(wo, "not resolved on the others")
        text = f"{a} is more robust than {b} only on the noise corruptions (more accurate there; {rest})"
    elif al == "higher":
        key, text = "overall_pooled_only", (f"{a} is more accurate than {b} on all corruptions pooled, but neither "
                                            f"on the noises alone nor without them is the difference resolved")
    elif wo == "higher":
        key, text = "non_noise_only", (f"{a} is more robust than {b} on the non-noise corruptions, not on the "
                                       f"noises")
    elif "lower" in (al, wo):
        key, text = "less_robust", (f"{a} is not more robust than {b}: it is less accurate on "
                                    + ("all corruptions pooled" if al == "lower" else "the corruptions other than noise"))
    else:
        key, text = "not_shown", (f"{a} is not shown to be more robust than {b}: every interval of the "
                                  f"corrupted groups contains 0")
    details = "; ".join(f"{GROUP_TITLES[g]} {_difference_text(paired.get(g))}"
                        for g in ("clean", "all", "all_wo_noise", "noise") if g in paired)
    text = (text[0].upper() + text[1:] + f". Paired differences, {names[0]} − {names[1]} (accuracy, 95 % interval "
            f"resampling images): {details}.")
    if dirs["clean"] in ("higher", "lower"):
        text += (f" On clean images {a} is already {'more' if dirs['clean'] == 'higher' else 'less'} accurate, "
                 "which the corrupted groups inherit.")
    return {"verdict": key, "text": text, "directions": dirs}


# --- results, cache and text ----------------------------------------------------------------------------
def cache_settings(knobs: Any, family: CorruptionFamily, scorer: Any) -> dict[str, Any]:
    """The settings of the SBGC's cached grid (JSON-able, nothing volatile; each block is keyed as these with
    its images, :func:`sbgc.cache.cached_blocks`): the chapter's knobs except those that do not change a
    block's numbers (the sample sizes) and the scorer groups (ODE, classifier), which ``scorer`` replaces (its own key
    leaves out what does not change the numbers, such as ``chunk_size``); the benchmark, how the sample is
    drawn (:func:`image_order`: with the block's images it fixes the block's positions, hence its random
    numbers) and the key (``jax.random.fold_in(key(seed), 1)``, one key for every setting)."""
    dropped = {"n_images", "n_baseline_images", "ode", "classifier", "n_ode_images"}
    kept = {f.name: getattr(knobs, f.name) for f in dataclasses.fields(knobs) if f.name not in dropped}
    return {"knobs": kept, "scorer": scorer, "scorer_class": type(scorer).__name__, "family": family.name,
            "sample": "image_order(seed)", "key": "fold_in(key(seed), 1)"}


MNIST_C_PUBLISHED_NOTE = (
    "**Published** plain-CNN numbers on MNIST-C are not quoted: the MNIST-C paper (Mu & Gilmer 2019, "
    "arXiv:1906.02337) reports its CNN's test error per corruption, and Rusak et al. (2020, arXiv:2001.06057) "
    "a vanilla CNN's, but neither table could be read from this machine (the stored copies of both papers end "
    "after the introduction; google-research/mnist-c and bethgelab/game-of-noise hold no MNIST-C results), and "
    "no figure is quoted from memory. The plain CNN above is this project's own training of that kind of network.")


def family_description(family: CorruptionFamily) -> str:
    """A sentence saying which benchmark the page evaluates and how its images are made."""
    return (f"**{family.name}**: {len(family.corruptions)} corruptions × {len(family.severities)} "
            f"severit{'y' if len(family.severities) == 1 else 'ies'} of the {family.dataset.upper().replace('CIFAR10', 'CIFAR-10')} "
            f"test images, {family.generator}. Noise corruptions (left out of *w/o noises*): "
            f"{', '.join(n.replace('_', ' ') for n in family.noise_corruptions)}.")


def results_record(result: GridResult, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A JSON-ready record of one classifier's grid: Table 2 groups, per-setting numbers, cost."""
    row = table2_row(result, n_boot=n_boot, seed=seed)
    return {
        "classifier": result.name,
        "family": result.family,
        "n_images": result.n_images,
        "n_settings": len(result.settings),
        "images_sha256": result.images_sha256,
        "table2": {g: None if a is None else a.as_dict() for g, a in row.items()},
        "per_setting": per_setting(result),
        "likelihood_auroc": likelihood_auroc(result) if result.log_p is not None and result.log_p_is_density
        and (CLEAN, 0) in result.settings and len(result.settings) > 1 else None,
        "seconds": float(result.seconds.sum()),
    }


# --- chapter 03: one call per section -------------------------------------------------------------------
N_BOOT = 2000  # bootstrap draws of the chapter's image-resampling intervals


@dataclasses.dataclass(frozen=True)
class ChapterModels:
    """The networks chapter 03 compares: ``sbgc`` the score model (a
    :class:`sbgc.train.pretrained.LoadedModel`), ``baseline`` the discriminative baseline (WRN) and
    ``plain_cnn`` the second one, without BatchNorm, or None (:class:`sbgc.train.baseline.LoadedClassifier`
    s); ``names`` the names the profile loads them by (checkpoint, baseline, plain_cnn)."""

    sbgc: Any
    baseline: Any
    plain_cnn: Any | None
    names: tuple[str, str, str]

    @property
    def metas(self) -> list[Mapping[str, Any]]:
        """The networks' metadata, score model first."""
        return [m.meta for m in (self.sbgc, self.baseline, self.plain_cnn) if m is not None]

    def note(self) -> str:
        """The note of the page's provenance lines: CPU-trained networks, and the baselines' files and digests."""
        tiny, clf, cnn = cpu_trained_note(*self.metas), self.baseline, self.plain_cnn
        return (f"{tiny}; " if tiny else "") + f"baseline {clf.path.name} sha256 `{clf.sha256[:12]}`" + (
            f", plain CNN {cnn.path.name} sha256 `{cnn.sha256[:12]}`" if cnn else "")

    def markdown(self) -> str:
        """One paragraph per network: what it is and its parameter count."""
        return "".join(f"{title}: {m.describe()}, {m.meta.get('n_params', 0):,} parameters.\n\n"
                       for title, m in (("Score model", self.sbgc), ("Baseline", self.baseline),
                                        ("Plain CNN", self.plain_cnn)) if m is not None)  # fmt: skip


def load_models(checkpoint: str, baseline: str, plain_cnn: str = "none") -> ChapterModels:
    """The chapter's networks by the names of its profile (``plain_cnn="none"``: no plain CNN)."""
    from sbgc.train.baseline import load_classifier
    from sbgc.train.pretrained import load_model

    cnn = None if plain_cnn == "none" else load_classifier(plain_cnn)
    return ChapterModels(load_model(checkpoint), load_classifier(baseline), cnn, (checkpoint, baseline, plain_cnn))


@dataclasses.dataclass(frozen=True)
class ChapterSample:
    """What chapter 03 evaluates: the baseline's images ``baseline`` [N_b] (the first ``n_baseline_images``
    of :func:`image_order`), the SBGC's ``sbgc`` [N] (the first ``n_images`` of the same), the settings
    ``grid`` [S] (clean first), with the chapter's ``knobs`` (a :class:`sbgc.book.profiles.CorruptionKnobs`),
    its benchmark and ``split_text``, the description of the split the images come from."""

    knobs: Any
    family: CorruptionFamily
    split_text: str
    baseline: EvaluationSet
    sbgc: EvaluationSet
    grid: tuple[Setting, ...]

    @property
    def seed(self) -> int:
        return self.knobs.seed

    @property
    def cache_source(self) -> str:
        """The ``data_source`` of every cache key of the chapter, e.g. ``"mnist: mnist-official"``."""
        return f"{self.knobs.data}: {self.baseline.source}"

    @property
    def data_source(self) -> str:
        """The data of the page's provenance lines."""
        k = self.knobs
        return (f"{self.split_text}; {k.n_images:,} drawn at random for the SBGC, the first of {k.n_baseline_images:,} "
                f"for the baseline; {self.family.name} regenerated on the fly (seed {k.seed})")

    def sample_sizes(self) -> dict[str, int]:
        """The sample sizes of the provenance: images, settings, cases and probes."""
        n, n_b, s = len(self.sbgc), len(self.baseline), len(self.grid)
        return {"SBGC images": n, "settings": s, "SBGC cases": n * s, "baseline images": n_b, "baseline cases": n_b * s,
                "probes": self.knobs.ode.n_probes}  # fmt: skip

    def settings_markdown(self) -> str:
        """Which settings of the benchmark the profile evaluates."""
        k, family = self.knobs, self.family
        return (f"Settings: clean + {len(self.grid) - 1} of the {family.n_settings} (corruption, severity) pairs of "
                f"{family.name} (severities {k.severities}, corruptions {', '.join(k.corruptions)}).\n\n")

    def sbgc_key(self, checkpoint_sha256: str, scorer: Any) -> CacheKey:
        """The cache key of the SBGC's grid on its sample by ``scorer`` (:func:`sbgc_grid` keys each block as
        this with the block's images)."""
        return CacheKey("corruptions_sbgc", CODE_VERSION, cache_settings(self.knobs, self.family, scorer),
                        checkpoint_sha256, self.cache_source, self.sbgc.indices)  # fmt: skip

    def baseline_key(self, name: str, classifier_sha256: str) -> CacheKey:
        """The cache key (version 1) of a computation ``name`` on a baseline's whole sample, e.g.
        ``"corruptions_baseline"`` or ``"corruptions_batchnorm_diagnosis"``."""
        k = self.knobs
        knobs = {"corruptions": k.corruptions, "severities": k.severities, "seed": k.seed, "family": self.family.name}
        return CacheKey(name, 1, knobs, classifier_sha256, self.cache_source, self.baseline.indices)

    def plot_first_image(self, class_names: Sequence[str]):
        """:func:`plot_corruption_grid` of the SBGC's first image, titled with its index and class."""
        first, index, family = self.sbgc.images[0], int(self.sbgc.indices[0]), self.family
        title = f"test image {self.sbgc.indices[0]} ({class_names[self.sbgc.labels[0]]}), {family.name}"
        return plot_corruption_grid(first, corruption_grid_of(first, seed=self.seed, index=index, family=family),
                                    title=title, family=family)  # fmt: skip


def chapter_sample(split, knobs: Any, family: CorruptionFamily) -> ChapterSample:
    """The chapter's images and settings from a split (:class:`sbgc.data.files.ImageSet`) and its knobs
    (``n_images`` ≤ ``n_baseline_images``, ``seed``, ``corruptions``, ``severities``, ``data``, ``ode``)."""
    if knobs.n_baseline_images < knobs.n_images:
        raise ValueError(f"n_baseline_images ({knobs.n_baseline_images}) must be at least n_images ({knobs.n_images}): "
                         "the baseline's sample contains the SBGC's")  # fmt: skip
    baseline = select_images(split, knobs.n_baseline_images, knobs.seed, family=family)
    return ChapterSample(knobs, family, describe_split(split), baseline, baseline.head(knobs.n_images),
                         settings(knobs.corruptions, knobs.severities, family=family))


def corruption_grid_note(family: CorruptionFamily) -> str:
    """What a reader should know about the figure of one image under every corruption (CIFAR-10-C's
    non-monotone elastic transform; nothing for MNIST-C)."""
    return ("Note `elastic_transform`: its severity 1 is a pure random affine warp that often moves the image "
            "more than severity 5 (the reference generator's CIFAR parameters are not monotone in severity).\n\n"
            if family is CIFAR10_C else "")  # fmt: skip


def published_note(family: CorruptionFamily) -> str:
    """The note on published numbers under a table of ``family`` (MNIST-C: why none is quoted)."""
    return "" if family is CIFAR10_C else MNIST_C_PUBLISHED_NOTE + "\n\n"


@dataclasses.dataclass(frozen=True)
class ChapterResults:
    """Chapter 03's grids (:class:`GridResult`, settings × images): ``sbgc`` [S, N]; the baseline and the
    plain CNN (None without one) on the SBGC's images (``*_same`` [S, N], the same digest) and on their
    whole sample (``*_all`` [S, N_b]); the cache entries of the SBGC's blocks (``entries``) and of the
    baselines' samples (``baseline_entries``); the SBGC's ``scorer``; with a classifier that gives no density
    (the knobs' ``classifier``), the exact ODE's grid on the first ``n_ode_images`` (``ode`` [S, N_ode], its
    entries ``ode_entries``): the likelihoods and the agreement of decisions. Its tables and texts use
    ``n_boot`` bootstrap draws seeded with the chapter's seed."""

    sample: ChapterSample
    models: ChapterModels
    sbgc: GridResult
    base_same: GridResult
    base_all: GridResult
    cnn_same: GridResult | None
    cnn_all: GridResult | None
    entries: list[CachedResult]
    baseline_entries: list[CachedResult]
    scorer: Any = None  # how the SBGC scored the classes (a scorer of sbgc.method.scorers)
    ode: GridResult | None = None
    ode_entries: list[CachedResult] = dataclasses.field(default_factory=list)
    ode_scorer: Any = None
    n_boot: int = N_BOOT

    @property
    def scorer_text(self) -> str:
        return self.scorer.describe() if callable(getattr(self.scorer, "describe", None)) else str(self.scorer)

    @property
    def likelihood(self) -> GridResult:
        """The grid whose log p(x) Fig. 4, the likelihood change and the AUROC read: the exact ODE's subset when
        the classifier's scores are no density, else the SBGC's own."""
        return self.ode if self.ode is not None else self.sbgc

    def plot_fig4(self):
        """:func:`plot_fig4`: the likelihood of :attr:`likelihood`, the accuracy of the SBGC's classifier (on its
        first ``likelihood.n_images`` images when the likelihood is the ODE's subset), the baselines'."""
        n = self.likelihood.n_images
        accuracy = self.sbgc if n == self.sbgc.n_images else _head(self.sbgc, n)
        return plot_fig4(self.likelihood, self.fig4_baselines(), accuracy=accuracy)

    def agreement(self) -> dict[str, Any] | None:
        """The classifier's decisions against the exact ODE's on the ODE's images, every setting: cases, agreeing
        cases, and each one's accuracy on them (None without an ODE subset)."""
        if self.ode is None:
            return None
        head = _head(self.sbgc, self.ode.n_images)
        if head.images_sha256 != self.ode.images_sha256:
            raise AssertionError("the exact ODE's subset saw other images than the classifier's first ones")
        agree = head.predictions == self.ode.predictions
        return {"cases": int(agree.size), "agree": int(agree.sum()), "n_images": self.ode.n_images,
                "classifier_accuracy": float(head.correct.mean()), "ode_accuracy": float(self.ode.correct.mean()),
                "agree_per_setting": agree.mean(axis=1), "ode": self.ode_scorer_text}  # fmt: skip

    @property
    def ode_scorer_text(self) -> str:
        return self.ode_scorer.describe() if self.ode_scorer is not None else ""

    def agreement_markdown(self) -> str:
        """A sentence on :meth:`agreement` (empty without an ODE subset)."""
        a = self.agreement()
        if a is None:
            return ""
        lo, hi = binomial_interval(a["agree"], a["cases"])
        return (f"**Against the exact ODE** ({a['ode']}) on the first {a['n_images']} image(s) × "
                f"{len(self.sample.grid)} settings: the two agree on {a['agree']} of {a['cases']} decisions "
                f"({100 * a['agree'] / a['cases']:.1f} %, exact 95 % interval [{100 * lo:.1f}, {100 * hi:.1f}]); accuracy "
                f"on these cases {100 * a['classifier_accuracy']:.1f} % (classifier) and {100 * a['ode_accuracy']:.1f} % "
                "(ODE). The likelihoods below (Fig. 4, the change per corruption, the AUROC) are the ODE's.\n\n")

    @property
    def against(self) -> dict[str, GridResult]:
        """Every baseline on the SBGC's images, by architecture name (the baseline first)."""
        cnn = self.models.plain_cnn
        return {self.models.baseline.config.name: self.base_same} | ({cnn.config.name: self.cnn_same} if cnn else {})

    @property
    def on_all_images(self) -> dict[str, GridResult]:
        """Every baseline on its whole sample, by architecture name (the baseline first)."""
        cnn = self.models.plain_cnn
        return {self.models.baseline.config.name: self.base_all} | ({cnn.config.name: self.cnn_all} if cnn else {})

    def cost_markdown(self) -> str:
        """What was evaluated, in how long, and the digest of the images every classifier saw."""
        sbgc, n, s, cnn = self.sbgc, len(self.sample.sbgc), len(self.sample.grid), self.cnn_all
        return (f"SBGC: {n} image(s) × {s} settings × {sbgc.log_p.shape[2]} classes, computed in "
                f"{sbgc.seconds.sum():.0f} s ({sbgc.nfe.mean() / sbgc.log_p.shape[2]:.0f} score evaluations per "
                f"class on average; {self.scorer_text})."
                + (f" The exact ODE on the first {self.ode.n_images} image(s): {self.ode.seconds.sum():.0f} s "
                   f"({self.ode_scorer_text})." if self.ode is not None else "")
                + f" Baseline{'s' if cnn else ''}: the same {n * s} cases, then "
                f"{len(self.sample.baseline):,} images × {s} settings ({self.base_all.seconds.sum():.1f} s"
                + (f"; the plain CNN {cnn.seconds.sum():.1f} s" if cnn else "") + "). All saw the images "
                f"with sha256 `{sbgc.images_sha256[:16]}…`.\n\n")

    @functools.cached_property
    def rows_ours(self) -> dict[str, dict[str, Accuracy | None]]:
        """:func:`table2_row` of every grid, by row name ("SBGC", "baseline, same images", ...)."""
        row = lambda r: table2_row(r, n_boot=self.n_boot, seed=self.sample.seed)  # noqa: E731
        return {"SBGC": row(self.sbgc), "baseline, same images": row(self.base_same),
                "baseline, all its images": row(self.base_all)} | (
            {"plain CNN, same images": row(self.cnn_same), "plain CNN, all its images": row(self.cnn_all)}
            if self.cnn_same is not None else {})  # fmt: skip

    def table2(self) -> list[TableRow]:
        """Table 2: the paper's rows (:func:`paper_rows`), then ours with the networks' names and samples."""
        m, rows, n, s = self.models, self.rows_ours, len(self.sample.sbgc), len(self.sample.grid)
        checkpoint, baseline, plain_cnn = m.names
        same, whole = f"the same {n:,} × {s}", f"{len(self.sample.baseline):,} × {s} settings"
        base = f"{m.baseline.config.name}, this project (`{baseline}`)"
        table = paper_rows(self.sample.family) + [
            TableRow(f"SBGC, this project (`{checkpoint}`: {m.sbgc.meta.get('n_params', 0) / 1e6:.2f}M parameters)",
                     "ours", f"{n:,} × {s} settings", rows["SBGC"]),
            TableRow(base, "ours", same, rows["baseline, same images"]),
            TableRow(base, "ours", whole, rows["baseline, all its images"])]  # fmt: skip
        if m.plain_cnn is not None:
            cnn = f"{m.plain_cnn.config.name}, this project (`{plain_cnn}`)"
            table += [TableRow(cnn, "ours", same, rows["plain CNN, same images"]),
                      TableRow(cnn, "ours", whole, rows["plain CNN, all its images"])]
        return table

    def table2_markdown(self, *, bootstrap: bool = False) -> str:
        """Table 2 with exact intervals over the pooled cases and the published-numbers note; with
        ``bootstrap`` our rows only, with intervals that resample whole images."""
        if bootstrap:
            return table2_markdown(self.table2()[len(PAPER_TABLE2):], bootstrap=True)
        return table2_markdown(self.table2()) + "\n\n" + published_note(self.sample.family)

    @functools.cached_property
    def paired(self) -> dict[str, dict[str, dict[str, Any] | None]]:
        """{baseline: {group: :func:`paired_difference` SBGC − baseline}} over the groups and the noises."""
        return {name: {g: paired_difference(self.sbgc, same, g, n_boot=self.n_boot, seed=self.sample.seed)
                       for g in (*GROUPS, "noise")} for name, same in self.against.items()}  # fmt: skip

    @functools.cached_property
    def verdicts(self) -> dict[str, dict[str, Any]]:
        """{baseline: :func:`robustness_verdict`} of the SBGC against each baseline."""
        return {name: robustness_verdict(d, a="SBGC", b=f"CNN baseline ({name})") for name, d in self.paired.items()}

    def comparison_markdown(self) -> str:
        """The paired differences as a table, the verdict against each baseline, and how precise the
        SBGC's all-corruptions accuracy is (:func:`precision_markdown`)."""
        seconds = sum(e.record["seconds"] for e in self.entries)
        return (paired_markdown(self.paired) + f"\n\n**Verdict ({self.sample.family.name}, this run).** "
                + " ".join(f"Against the {name}: {v['text']}" for name, v in self.verdicts.items())
                + " (The paper, CIFAR-10-C: more robust only on the noise corruptions.)\n\n"
                + precision_markdown(self.rows_ours["SBGC"]["all"], len(self.sample.sbgc), seconds,
                                     len(self.sample.grid)))  # fmt: skip

    def fig4_baselines(self) -> dict[str, GridResult]:
        """The baselines' curves of :func:`plot_fig4`, labelled with their samples."""
        n, n_b, clf, cnn = len(self.sample.sbgc), len(self.sample.baseline), self.models.baseline, self.models.plain_cnn
        return ({f"{clf.config.name}, the SBGC's {n:,} image(s)": self.base_same,
                 f"{clf.config.name}, {n_b:,} images": self.base_all}
                | ({f"{cnn.config.name}, {n_b:,} images": self.cnn_all} if cnn else {}))  # fmt: skip

    def numbers(self, diagnosis: Any = None) -> dict[str, Any]:
        """The chapter's results record (for :func:`sbgc.book.provenance.write_results`); ``diagnosis`` a
        :class:`sbgc.experiments.corruption_baselines.CollapseDiagnosis` or None."""
        sample, m, family, seed = self.sample, self.models, self.sample.family, self.sample.seed
        clf, cnn, clf_name = m.baseline, m.plain_cnn, m.baseline.config.name
        record = lambda r: None if r is None else results_record(r, n_boot=self.n_boot, seed=seed)  # noqa: E731
        describe = lambda c: {"describe": c.describe(), "path": str(c.path), "sha256": c.sha256,  # noqa: E731
                              "architecture": c.config.name, "n_params": c.meta.get("n_params")}
        return {
            "table2_ours": {name: {g: None if a is None else a.as_dict() for g, a in row.items()}
                            for name, row in self.rows_ours.items()},
            "family": family.name,
            "table2_paper": [dict(model=mo, augmentation=a, clean=c, all=al, all_wo_noise=w, benchmark="CIFAR-10-C")
                             for mo, a, c, al, w in PAPER_TABLE2],
            "paired_difference_sbgc_minus_baseline": self.paired[clf_name],
            "robustness_verdict": self.verdicts[clf_name],
            "paired_difference_sbgc_minus_each_baseline": self.paired,
            "robustness_verdict_each_baseline": self.verdicts,
            "baseline_cache": [e.record for e in self.baseline_entries + ([diagnosis.entry] if diagnosis else [])],
            "batchnorm_diagnosis": None if diagnosis is None else diagnosis.record(),
            "likelihood_auroc": likelihood_auroc(self.likelihood),
            "sbgc_cache": [e.record for e in self.entries],
            "sbgc": record(self.sbgc),
            "sbgc_scorer": self.scorer_text,
            "ode_subset": record(self.ode),
            "ode_cache": [e.record for e in self.ode_entries],
            "agreement_with_ode": self.agreement(),
            "baseline_same_images": record(self.base_same),
            "baseline_all_images": record(self.base_all),
            "plain_cnn_same_images": record(self.cnn_same),
            "plain_cnn_all_images": record(self.cnn_all),
            "plain_cnn": None if cnn is None else describe(cnn),
            "same_images_sha256": self.sbgc.images_sha256,
            "settings": [setting_label(s) for s in sample.grid],
            "noise_corruptions": list(family.noise_corruptions),
            "sbgc_image_indices": sample.sbgc.indices, "baseline_image_indices": sample.baseline.indices,
            "data_source_tag": sample.baseline.source,
            "score_model": {"describe": m.sbgc.describe(), "path": str(m.sbgc.path), "sha256": m.sbgc.sha256},
            "baseline": describe(clf),
        }  # fmt: skip


def evaluate_chapter(cache: ResultCache, sample: ChapterSample, models: ChapterModels, *,
                     scorer: Any = None, ode_scorer: Any = None) -> ChapterResults:
    """Chapter 03's evaluation: the SBGC's grid over ``sample.sbgc`` in cached blocks (:func:`sbgc_grid`);
    each baseline on the same images, refused unless its digest equals the SBGC's; then each baseline on
    its whole sample (cached, :meth:`ChapterSample.baseline_key`).

    scorer: how the SBGC scores the classes (default: the knobs' ``classifier`` if set, else their ODE), with
    ONE key, ``fold_in(key(seed), 1)``, for every setting and block, as the cache keys say. When that scorer gives
    no density (the uniform-weighted score), the exact ODE (``knobs.ode``) on the first ``n_ode_images`` gives the
    likelihoods and the decisions the classifier is checked against (``ode_scorer``, default ``knobs.ode.scorer()``).
    """
    import jax

    grid, seed, knobs, key = sample.grid, sample.seed, sample.knobs, jax.random.fold_in(jax.random.key(sample.seed), 1)
    scorer = scorer or (knobs.classifier or knobs.ode).scorer()
    sbgc, entries = sbgc_grid(cache, sample, models.sbgc, scorer, key)
    ode, ode_entries = None, []
    if not sbgc.log_p_is_density:
        n_ode = knobs.n_ode_images or len(sample.sbgc)
        ode, ode_entries = sbgc_grid(cache, dataclasses.replace(sample, sbgc=sample.sbgc.head(n_ode)), models.sbgc,
                                     ode_scorer or knobs.ode.scorer(), key, name="SBGC, exact ODE")  # fmt: skip
    baseline_entries: list[CachedResult] = []

    def on_the_sbgcs_images(c: Any, name: str) -> GridResult:
        same = evaluate_grid({name: c.predict}, sample.sbgc, grid, seed=seed)[name]
        if same.images_sha256 != sbgc.images_sha256:
            raise AssertionError(f"the {name} saw other images ({same.images_sha256[:16]}) than the cached SBGC "
                                 f"grid ({sbgc.images_sha256[:16]}): the corruption code changed; recompute the cache "
                                 "entries")
        return same

    def on_its_sample(c: Any, name: str) -> GridResult:
        entry = cache.get(sample.baseline_key("corruptions_baseline", c.sha256),
                          lambda: evaluate_grid({name: c.predict}, sample.baseline, grid, seed=seed)[name].to_arrays())
        baseline_entries.append(entry)
        return GridResult.from_arrays(entry.arrays)

    clf, cnn = models.baseline, models.plain_cnn
    base_same, base_all = on_the_sbgcs_images(clf, "baseline"), on_its_sample(clf, "baseline")
    cnn_same, cnn_all = ((on_the_sbgcs_images(cnn, cnn.config.name), on_its_sample(cnn, cnn.config.name)) if cnn
                         else (None, None))  # fmt: skip
    return ChapterResults(sample, models, sbgc, base_same, base_all, cnn_same, cnn_all, entries, baseline_entries,
                          scorer, ode, ode_entries, ode_scorer or knobs.ode.scorer())


def paired_markdown(paired: Mapping[str, Mapping[str, Mapping[str, Any] | None]]) -> str:
    """The paired differences {baseline: {group: :func:`paired_difference`}} as one table, in points."""
    lines = []
    for name, diffs in paired.items():
        for g, d in diffs.items():
            if d is not None:
                interval = "n/a" if d["lo"] is None else f"[{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
                lines.append((name, GROUP_TITLES[g], f"{100 * d['difference']:+.1f}", interval, d["only_a"],
                              d["only_b"], d["cases"]))  # fmt: skip
    return markdown_table(("baseline", "group", "SBGC − baseline (points)", "95 % interval (images resampled)",
                           "only SBGC right", "only baseline right", "cases"), lines,
                          align=["left"] * 2 + ["right"] * 5)  # fmt: skip


def precision_markdown(accuracy: Accuracy | None, n_images: int, seconds: float, n_settings: int, *,
                       target: float = 0.02) -> str:
    """How far the sample is from a 95 % interval of ± ``target`` (a fraction) for the all-corruptions
    accuracy ``accuracy`` (its image-bootstrap interval; "" without one), and what more images would
    cost at ``seconds`` of computing for the ``n_images`` images over ``n_settings`` settings."""
    if accuracy is None or accuracy.bootstrap is None:
        return ""
    half = (accuracy.bootstrap.hi - accuracy.bootstrap.lo) / 2
    need = images_for_half_width(half, n_images, target)
    per_image = seconds / n_images
    if half <= target:
        target_text = f"within the ±{100 * target:g}-point target (at this spread, {need:,} images would just reach it)"
    else:
        target_text = (f"±{100 * target:g} points would take about {need:,} images at this spread "
                       f"(n·(half-width/{100 * target:g})²), ≈ {need * per_image / 3600:.1f} hours")
    return (f"**Precision.** The SBGC's all-corruptions accuracy has a 95 % interval (images resampled) of "
            f"±{100 * half:.2f} points on {n_images} images: {target_text}. The cached blocks took "
            f"{per_image:.0f} s per image (all {n_settings} settings; each block's wall time, summed: blocks "
            f"computed side by side under `--shard` overlap in time).\n\n")


def likelihood_change_markdown(result: GridResult) -> str:
    """Fig. 4 in a table and in words: per corruption of a generative classifier's grid (with the clean
    setting), the change of the mean log p(x) (nats, bits/dim) from clean to its strongest evaluated
    severity and the accuracy there, the clean level, and :func:`likelihood_change_text`."""
    ps, clean = per_setting(result), result.index((CLEAN, 0))
    clean_lp = ps["mean_log_p_nats"][clean]
    change, strongest = [], {}  # strongest: corruption -> (Δ mean log p(x) [nats], accuracy) at its strongest severity
    for name in dict.fromkeys(c for c, _ in result.settings if c != CLEAN):
        i = [j for j, (c, _) in enumerate(result.settings) if c == name][-1]
        delta, acc = ps["mean_log_p_nats"][i] - clean_lp, ps["accuracy"][i]
        strongest[name] = (delta, acc)
        d_bpd = ps["mean_bpd"][i] - ps["mean_bpd"][clean]
        change.append((name, result.settings[i][1], f"{delta:+.0f}", f"{d_bpd:+.3f}", f"{100 * acc:.0f}"))
    return (markdown_table(("corruption", "severity", "Δ mean log p(x) vs clean [nats]", "Δ bits/dim",
                            "SBGC accuracy [%]"), change, align=["left"] + ["right"] * 4)
            + f"\n\nClean: mean log p(x) = {clean_lp:.0f} nats ({ps['mean_bpd'][clean]:.3f} bits/dim), accuracy "
            f"{100 * ps['accuracy'][clean]:.0f} %, over {result.n_images} image(s).\n\n"
            f"**Fig. 4 on {result.family} (this run).** {likelihood_change_text(strongest)}\n\n")  # fmt: skip


def auroc_markdown(aurocs: Sequence[Mapping[str, Any]]) -> str:
    """:func:`likelihood_auroc` as a table."""
    return markdown_table(
        ("corruption", "AUROC", "clean / corrupted cases", "mean Δ log p(x) [nats]", "corrupted less likely"),
        [(r["corruption"].replace("_", " "), f"{r['auroc']:.2f}", f"{r['n_clean']} / {r['n_corrupted']}",
          f"{r['mean_change_nats']:+.0f}", f"{100 * r['fraction_less_likely']:.0f} %") for r in aurocs],
        align=["left"] + ["right"] * 4)  # fmt: skip


def detection_text(aurocs: Sequence[Mapping[str, Any]], family: str, n_images: int) -> str:
    """What :func:`likelihood_auroc` says, in words: the pooled AUROC, the corruptions log p(x) detects
    well (AUROC ≥ 0.9) and those that make images more likely than clean ones (AUROC < 0.5)."""
    per_corruption = [r for r in aurocs if r["corruption"] != "all"]
    detected = [r["corruption"].replace("_", " ") for r in per_corruption if r["auroc"] >= 0.9]
    inverted = [r["corruption"].replace("_", " ") for r in per_corruption if r["auroc"] < 0.5]
    pooled = next(r for r in aurocs if r["corruption"] == "all")
    return (f"**Detection ({family}, this run).** Pooled over every corrupted setting, log p(x) separates clean from "
            f"corrupted images with AUROC {pooled['auroc']:.2f}. It detects {len(detected)} of {len(per_corruption)} "
            f"corruptions well (AUROC ≥ 0.9" + (f": {', '.join(detected)}" if detected else "") + "); "
            + (f"{len(inverted)} make{'s' if len(inverted) == 1 else ''} the images *more* likely than clean ones "
               f"(AUROC < 0.5: {', '.join(inverted)})."
               if inverted else "none makes the images more likely than clean ones (no AUROC below 0.5).")
            + (" With fewer than ten images these are counts over a handful of pairs." if n_images < 10 else ""))
