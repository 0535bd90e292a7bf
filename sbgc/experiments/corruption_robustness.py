"""Accuracy under common image corruptions (paper §3.2, Table 2, appendix Fig. 4).

The paper evaluates its score-based generative classifier (SBGC) on CIFAR-10-C (Hendrycks &
Dietterich 2019: 15 corruptions × 5 severities) and reports, beside discriminative models, the
accuracy on clean test images, the mean accuracy over all corruptions, and the mean over all
corruptions except the three noises (Table 2); Fig. 4 resolves log-likelihood and accuracy per
corruption and severity.

Conventions
-----------
* **Images.** :func:`select_images` takes the first n images of ONE fixed random permutation of a
  split (seeded), so the sample of a smaller run is a prefix of a larger one, and the SBGC's
  images are the first images of the baseline's. The paper used a random 10 % of the test set for
  the SBGC (1,000 images); here the same images appear under every corruption and severity.
* **Corruptions** are generated on the fly with :func:`sbgc.data.corruptions.corrupt`, whose randomness
  depends only on (seed, test-image index, corruption, severity): an image gets the same
  corrupted version whichever sample or batch it is generated in.
* **Settings.** A setting is ``("clean", 0)`` or ``(corruption, severity)``; :func:`settings`
  lists the clean setting first, then corruption-major.
* **The same images for every classifier.** :func:`evaluate_grid` corrupts each setting once and
  hands the SAME uint8 images to every classifier it is given; each result carries the sha256 of
  all images it saw (``images_sha256``), so equality is checkable after the fact.
* **Classifiers** are plain functions of uint8 images ``[N, 32, 32, 3]``: a discriminative one
  returns predicted labels ``[N]`` (e.g. ``LoadedClassifier.predict``); a generative one returns
  class log-likelihoods ``[N, K]`` or a :class:`sbgc.method.classify.ClassLikelihoods` (see
  :func:`sbgc_classifier`, which uses ONE key for every setting: image i gets the same
  dequantization noise and probes under every corruption, common random numbers across settings).
* **Table 2 groups** (:func:`table2_row`): ``clean``; ``all``, every evaluated corrupted setting
  pooled (with the same images in every setting, the pooled accuracy is the mean of the
  per-setting accuracies, the paper's "mean accuracy"); ``all_wo_noise``, the same without
  :data:`sbgc.data.corruptions.NOISE_CORRUPTIONS`.
* **Intervals.** Each accuracy has the exact (Clopper–Pearson) 95 % interval of the pooled cases
  (:func:`sbgc.stats.binomial_interval`). Pooled cases share images (one image appears in up to 75
  settings), so they are not independent and that interval is too narrow for the corrupted
  groups; :func:`image_bootstrap_interval` resamples whole images instead and is reported beside it.
* **Likelihood** (Fig. 4): log p(x) = log (1/K) Σ_y p(x | y), the uniform-prior mixture of the
  class densities (:func:`sbgc.method.classify.log_marginal`), in nats of [0, 1]-scaled images; the paper's
  sum is larger by log 10 nats at every point, which moves no curve's shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sbgc.data.corruptions import CORRUPTIONS, NOISE_CORRUPTIONS, SEVERITIES, corrupt
from sbgc.method.classify import log_marginal
from sbgc.method.likelihood import bits_per_dim
from sbgc.report import markdown_table
from sbgc.stats import binomial_interval

CLEAN = "clean"
Setting = tuple[str, int]  # ("clean", 0) or (corruption, severity)
GROUPS: tuple[str, ...] = ("clean", "all", "all_wo_noise")
GROUP_TITLES: Mapping[str, str] = {
    "clean": "clean",
    "all": "all corruptions",
    "all_wo_noise": "w/o noises",
}

# Table 2 of the paper (accuracy in %): model, training data augmentation, clean, all, w/o noises.
PAPER_TABLE2: tuple[tuple[str, str, float, float, float], ...] = (
    ("ResNeXt29 + AugMix (Hendrycks et al.)", "trained with data augmentation", 95.83, 89.09, 90.51),
    ("ResNet-50 + adv. augm. (Calian et al.)", "trained with data augmentation", 94.93, 92.17, 92.53),
    ("WideResNet-28-12 (Targ et al.)", "simple augmentation", 95.42, 74.42, 80.21),
    ("SBGC", "simple augmentation", 95.04, 76.24, 75.71),
)


# --- what to evaluate -------------------------------------------------------------------------------
def check_severities(severities: Sequence[int]) -> tuple[int, ...]:
    """Sorted distinct severities, each an int in 1..5 (a ValueError otherwise)."""
    values = list(severities) if not isinstance(severities, (str, bytes)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v not in SEVERITIES
                         for v in values):
        raise ValueError(f"severities must be a non-empty sequence of ints in 1..5, got {severities!r}")
    return tuple(sorted({int(v) for v in values}))


def check_corruptions(corruptions: Sequence[str]) -> tuple[str, ...]:
    """Names of :data:`CORRUPTIONS`, in the benchmark's order (a ValueError naming unknown ones)."""
    names = list(corruptions) if not isinstance(corruptions, (str, bytes)) else None
    unknown = [n for n in names or () if n not in CORRUPTIONS]
    if not names or unknown:
        raise ValueError(f"corruptions must be a non-empty sequence of {', '.join(CORRUPTIONS)}; got {corruptions!r}"
                         + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else ""))
    return tuple(n for n in CORRUPTIONS if n in set(names))


def settings(corruptions: Sequence[str], severities: Sequence[int], *, clean: bool = True) -> tuple[Setting, ...]:
    """The clean setting (first, if ``clean``) then every (corruption, severity), corruption-major."""
    corruptions, severities = check_corruptions(corruptions), check_severities(severities)
    grid = tuple((c, int(s)) for c in corruptions for s in severities)
    return (((CLEAN, 0),) if clean else ()) + grid


def setting_label(setting: Setting) -> str:
    name, severity = setting
    return "clean" if name == CLEAN else f"{name} {severity}"


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """Clean test images to corrupt: uint8 ``images [N, 32, 32, 3]``, int ``labels [N]``, and
    ``indices [N]``, each image's index in its split (the key of its corruption randomness)."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    source: str  # the data's source tag, e.g. "exact-head", "jpeg-copy", "official"
    n_available: int  # size of the split the images were drawn from

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.shape[1:] != (32, 32, 3):
            raise ValueError(f"images must be uint8 [N, 32, 32, 3], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError(f"labels and indices must have shape ({n},), got {self.labels.shape}, {self.indices.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int) -> "EvaluationSet":
        """The first n images (the sample a smaller run draws)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"head needs 1 <= n <= {len(self)}, got {n}")
        return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n], indices=self.indices[:n])


def image_order(n_available: int, seed: int) -> np.ndarray:
    """One fixed random permutation of ``range(n_available)``: samples are its prefixes."""
    return np.random.default_rng([int(seed), 0xC1FA]).permutation(int(n_available))


def select_images(split, n: int, seed: int) -> EvaluationSet:
    """The first ``n`` images of a split (a :class:`sbgc.data.cifar10.ImageSet`) in :func:`image_order`."""
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
    )


def corrupted(evalset: EvaluationSet, setting: Setting, seed: int, chunk: int = 1000) -> np.ndarray:
    """The images of ``evalset`` under ``setting`` (uint8 [N, 32, 32, 3]; clean: the images themselves),
    corrupted ``chunk`` images at a time to bound the float intermediates (the result does not
    depend on the chunking)."""
    name, severity = setting
    if name == CLEAN:
        return evalset.images
    out = np.empty_like(evalset.images)
    for start in range(0, len(evalset), chunk):
        part = slice(start, start + chunk)
        out[part] = corrupt(evalset.images[part], name, int(severity), seed=int(seed), indices=evalset.indices[part])
    return out


# --- evaluation -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GridResult:
    """One classifier over a grid of settings, on the same images in every setting.

    predictions [S, N]; labels [N]; log_p [S, N, K] class log-likelihoods (generative classifiers
    only, else None); nfe [S, N, K] score evaluations (generative only); seconds [S] wall time of
    the classifier per setting; images_sha256 the digest of all images evaluated, in order.
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
        if self.log_p is None:
            raise ValueError(f"{self.name} is not a generative classifier: it has no likelihoods")
        s, n, k = self.log_p.shape
        return log_marginal(self.log_p.reshape(s * n, k)).reshape(s, n)

    def marginal_bpd(self) -> np.ndarray:
        """Bits/dim of log p(x) for [0, 1]-scaled 32×32×3 images: [S, N]."""
        return bits_per_dim(self.log_marginal(), 32 * 32 * 3)

    def index(self, setting: Setting) -> int:
        return self.settings.index(setting)

    def select(self, keep: Sequence[Setting]) -> "GridResult":
        """The result restricted to the settings ``keep`` (in that order)."""
        rows = [self.index(s) for s in keep]
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return dataclasses.replace(self, settings=tuple(keep), predictions=self.predictions[rows],
                                   log_p=pick(self.log_p), nfe=pick(self.nfe), seconds=self.seconds[rows])


Classifier = Callable[[np.ndarray], Any]


def sbgc_classifier(score_fn, sde, key, **likelihood_kwargs) -> Classifier:
    """The generative classifier as a function of uint8 images: their ClassLikelihoods.

    Every call uses the same ``key``, so image i of a batch gets the same dequantization noise and
    Hutchinson probes in every setting (common random numbers across corruptions and severities).
    ``likelihood_kwargs``: solver (a SolverSettings), n_probes, chunk_size, ... of
    :func:`sbgc.method.classify.class_log_likelihoods`.
    """
    from sbgc.method.classify import class_log_likelihoods

    kwargs = dict(progress=False) | likelihood_kwargs

    def classify(images_u8: np.ndarray):
        return class_log_likelihoods(score_fn, sde, images_u8, key, **kwargs)

    return classify


def _unpack(name: str, out: Any, n: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(predictions [N], log_p [N, K] or None, nfe [N, K] or None) of a classifier's output."""
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
    return np.argmax(log_p, axis=1).astype(np.int64), log_p, None if nfe is None else np.asarray(nfe)


def evaluate_grid(
    classifiers: Mapping[str, Classifier],
    evalset: EvaluationSet,
    grid: Sequence[Setting],
    *,
    seed: int,
    progress: bool = False,
) -> dict[str, GridResult]:
    """Every classifier on the SAME images of every setting (each setting corrupted once).

    Returns {name: GridResult}; all results carry the same ``images_sha256``.
    """
    if not classifiers:
        raise ValueError("evaluate_grid needs at least one classifier")
    grid = tuple((str(c), int(s)) for c, s in grid)
    if len(set(grid)) != len(grid):
        raise ValueError(f"settings must be distinct, got {grid}")
    n = len(evalset)
    digest = hashlib.sha256()
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
        digest.update(f"{setting_label(setting)}\0".encode() + np.ascontiguousarray(x).tobytes())
        for name, fn in classifiers.items():
            start = time.perf_counter()
            out = fn(x)
            seconds[name][i] = time.perf_counter() - start
            preds[name][i], lp, nfe = _unpack(name, out, n)
            log_ps[name].append(lp)
            nfes[name].append(nfe)
    results = {}
    for name in classifiers:
        has_lp = all(a is not None for a in log_ps[name])
        has_nfe = all(a is not None for a in nfes[name])
        results[name] = GridResult(
            name=name, settings=grid, labels=np.asarray(evalset.labels, np.int64), predictions=preds[name],
            log_p=np.stack(log_ps[name]) if has_lp else None, nfe=np.stack(nfes[name]) if has_nfe else None,
            seconds=seconds[name], images_sha256=digest.hexdigest(), image_indices=np.asarray(evalset.indices),
        )  # fmt: skip
    return results


# --- Table 2 ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Pooled accuracy of a group of settings, with its exact binomial interval over the pooled
    cases and (for two or more images) a percentile interval that resamples whole images."""

    correct: int
    total: int
    n_images: int
    n_settings: int
    lo: float
    hi: float
    boot_lo: float | None
    boot_hi: float | None
    level: float = 0.95

    @property
    def fraction(self) -> float:
        return self.correct / self.total

    def cell(self, bootstrap: bool = False) -> str:
        """``"76.2 [75.1, 77.3]"`` in %; with ``bootstrap`` the image-bootstrap interval."""
        lo, hi = (self.boot_lo, self.boot_hi) if bootstrap else (self.lo, self.hi)
        if lo is None:
            return f"{100 * self.fraction:.1f} (n/a)"
        return f"{100 * self.fraction:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"accuracy": self.fraction}


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


def group_settings(grid: Sequence[Setting], group: str) -> tuple[Setting, ...]:
    """The settings of ``grid`` that belong to a Table 2 group (see :data:`GROUPS`)."""
    if group == "clean":
        return tuple(s for s in grid if s[0] == CLEAN)
    if group == "all":
        return tuple(s for s in grid if s[0] != CLEAN)
    if group == "all_wo_noise":
        return tuple(s for s in grid if s[0] != CLEAN and s[0] not in NOISE_CORRUPTIONS)
    raise ValueError(f"group must be one of {GROUPS}, got {group!r}")


def accuracy_of(correct: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Accuracy:
    """Pooled :class:`Accuracy` of bool ``correct`` [settings, images]."""
    correct = np.asarray(correct, bool)
    k, total = int(correct.sum()), int(correct.size)
    lo, hi = binomial_interval(k, total, level)
    boot = image_bootstrap_interval(correct, n_boot=n_boot, seed=seed, level=level)
    return Accuracy(k, total, int(correct.shape[1]), int(correct.shape[0]), lo, hi,
                    None if boot is None else boot[0], None if boot is None else boot[1], level)  # fmt: skip


def table2_row(result: GridResult, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Accuracy | None]:
    """{group: Accuracy, or None where the result has no setting of the group}."""
    row: dict[str, Accuracy | None] = {}
    for group in GROUPS:
        members = group_settings(result.settings, group)
        row[group] = None if not members else accuracy_of(result.select(members).correct, n_boot=n_boot, seed=seed)
    return row


def paired_difference(a: GridResult, b: GridResult, group: str = "all", *, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any] | None:
    """Accuracy of ``a`` minus that of ``b`` over a group, on the SAME cases (checked by the digest),
    with the discordant counts and an image-bootstrap percentile interval (None below 2 images)."""
    if a.images_sha256 != b.images_sha256 or a.settings != b.settings:
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same images and settings")
    members = group_settings(a.settings, group)
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


def paper_rows() -> list[TableRow]:
    """The paper's Table 2, marked as the paper's."""
    return [TableRow(f"{model}, {augment}", "paper", "CIFAR-10 test / CIFAR-10-C",
                     dict(zip(GROUPS, (clean, allc, wo))))
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
    if result.log_p is not None:
        lm, bpd = result.log_marginal(), result.marginal_bpd()
        out["mean_log_p_nats"] = lm.mean(axis=1)
        out["sem_log_p_nats"] = lm.std(axis=1, ddof=1) / math.sqrt(n) if n >= 2 else None
        out["mean_bpd"] = bpd.mean(axis=1)
        if result.nfe is not None:
            out["mean_nfe_per_class"] = result.nfe.reshape(len(result.settings), -1).mean(axis=1)
    return out


def _panel_points(result: GridResult, name: str) -> tuple[list[int], list[int]]:
    """(x positions, row indices) of the clean setting (x = 0) and ``name``'s severities (x = s)."""
    xs, rows = [], []
    for i, (c, s) in enumerate(result.settings):
        if c == CLEAN or c == name:
            xs.append(0 if c == CLEAN else s)
            rows.append(i)
    return xs, rows


def plot_fig4(sbgc: GridResult, baselines: Mapping[str, GridResult] | None = None, *, n_cols: int = 5):
    """The paper's Fig. 4: per corruption, mean log p(x) (orange, left axis) and SBGC accuracy (black,
    right axis, exact 95 % intervals) over the severities, "Cl." = clean; baselines dashed (right
    axis). Corruptions that were not evaluated get an empty panel saying so."""
    import matplotlib.pyplot as plt

    if sbgc.log_p is None:
        raise ValueError(f"{sbgc.name} has no likelihoods to plot")
    baselines = dict(baselines or {})
    n_rows = math.ceil(len(CORRUPTIONS) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 2.5 * n_rows), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    lm = sbgc.log_marginal().mean(axis=1)
    sem = sbgc.log_marginal().std(axis=1, ddof=1) / math.sqrt(sbgc.n_images) if sbgc.n_images >= 2 else None
    acc = sbgc.accuracy()
    n = sbgc.n_images
    k = sbgc.correct.sum(axis=1)
    ci = np.array([binomial_interval(int(c), n) for c in k])  # [S, 2]
    evaluated = {c for c, _ in sbgc.settings}
    handles = {}
    for ax, name in zip(axes.flat, CORRUPTIONS):
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xticks(range(6), ["Cl.", "1", "2", "3", "4", "5"])
        ax.set_xlim(-0.4, 5.4)
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
    for ax in axes.flat[len(CORRUPTIONS):]:
        ax.set_visible(False)
    fig.supxlabel("severity (Cl. = clean)", fontsize=9)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(4, len(handles)), fontsize=8, frameon=False)  # fmt: skip
    return fig


def plot_corruption_grid(image_u8: np.ndarray, grid_u8: np.ndarray, title: str | None = None):
    """One image clean and under every corruption (columns) and severity 1..5 (rows):
    ``grid_u8`` as returned by :func:`sbgc.data.corruptions.corruption_grid`, uint8 [15, 5, 32, 32, 3]."""
    import matplotlib.pyplot as plt

    grid_u8 = np.asarray(grid_u8)
    if grid_u8.shape != (len(CORRUPTIONS), len(SEVERITIES), 32, 32, 3):
        raise ValueError(f"expected a corruption grid [15, 5, 32, 32, 3], got {grid_u8.shape}")
    n_c, n_s = grid_u8.shape[:2]
    fig, axes = plt.subplots(n_s + 1, n_c, figsize=(1.0 * n_c, 1.1 * (n_s + 1)), squeeze=False)
    for c, name in enumerate(CORRUPTIONS):
        for r in range(n_s + 1):
            ax = axes[r, c]
            ax.imshow(image_u8 if r == 0 else grid_u8[c, r - 1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(name.replace("_", "\n"), fontsize=7)
    for r in range(n_s + 1):
        axes[r, 0].set_ylabel("clean" if r == 0 else f"severity {r}", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.04, right=0.99, bottom=0.01, top=0.9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def results_record(result: GridResult, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A JSON-ready record of one classifier's grid: Table 2 groups, per-setting numbers, cost."""
    row = table2_row(result, n_boot=n_boot, seed=seed)
    return {
        "classifier": result.name,
        "n_images": result.n_images,
        "n_settings": len(result.settings),
        "images_sha256": result.images_sha256,
        "table2": {g: None if a is None else a.as_dict() for g, a in row.items()},
        "per_setting": per_setting(result),
        "seconds": float(result.seconds.sum()),
    }
