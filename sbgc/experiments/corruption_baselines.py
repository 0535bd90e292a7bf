"""The discriminative baselines on a corruption benchmark (chapter 03): every baseline on every test image
per corruption, and why a batch-normalised network collapses to one class under some corruptions.

* :func:`per_corruption_markdown` — each baseline's accuracy per setting with its exact (Clopper–Pearson)
  95 % interval, from :class:`~sbgc.experiments.corruption_robustness.GridResult` s on the same images.
* :func:`batchnorm_diagnosis` — for a baseline with BatchNorm (WRN-10-2): per setting its accuracy as it is
  evaluated (BatchNorm with the running statistics of the training images), its accuracy when every
  BatchNorm normalises with the statistics of the corrupted batch itself instead (nothing retrained: the
  test-time "batch statistics" evaluation), the share of its predictions that fall in its most frequent
  class (1.0 = one class for every image), the mean pixel value, and how far the corrupted images move the
  input of its first BatchNorm, in that layer's running standard deviations. If the collapse comes from the
  statistics the network normalises with (a covariate shift), batch statistics restore the accuracy; if the
  corruption destroyed the digit, they cannot.
* :func:`collapse_text` — the finding in words, computed from the diagnosis.
* :func:`cached_collapse_diagnosis` — chapter 03's diagnosis of its baseline through the results cache, as a
  :class:`CollapseDiagnosis` (its table, text and results record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.cache import CachedResult, ResultCache
from sbgc.experiments.corruption_robustness import (
    ChapterResults, EvaluationSet, GridResult, Setting, corrupted, setting_label,
)
from sbgc.report import markdown_table
from sbgc.stats import binomial_interval

COLLAPSE_ACCURACY = 0.2  # a setting counts as a collapse where accuracy is below this ...
COLLAPSE_SHARE = 0.5  # ... and at least this share of the predictions is one class


def accuracy_cell(correct: np.ndarray) -> str:
    """'98.7 [98.4, 98.9]': accuracy in % with its exact 95 % interval, of a bool array."""
    k, n = int(np.sum(correct)), int(np.size(correct))
    lo, hi = binomial_interval(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def per_corruption_markdown(results: Mapping[str, GridResult]) -> str:
    """A table: one row per setting, one column per baseline (accuracy % [95 % interval]), then the mean
    over the corrupted settings. Every result must be on the same images (checked by digest)."""
    first = next(iter(results.values()))
    for name, r in results.items():
        if (r.images_sha256, r.settings) != (first.images_sha256, first.settings):
            raise ValueError(f"{name} was evaluated on other images or settings than {first.name}")
    rows = [(setting_label(s).replace("_", " "), *(accuracy_cell(r.correct[i]) for r in results.values()))
            for i, s in enumerate(first.settings)]
    corrupted_rows = [i for i, s in enumerate(first.settings) if s[0] != "clean"]
    rows.append(("**mean over the corruptions**",
                 *(accuracy_cell(r.correct[corrupted_rows]) for r in results.values())))
    header = ("setting", *(f"{name}: accuracy % [95 % interval]" for name in results))
    return markdown_table(header, rows, align=["left"] + ["right"] * len(results))


def has_batchnorm(classifier: Any) -> bool:
    """Whether a loaded baseline normalises with BatchNorm statistics (WRN: yes; the plain CNN: no)."""
    return bool(jax.tree_util.tree_leaves(getattr(classifier, "variables", {}).get("batch_stats", {})))


def _batch_statistics_logits(classifier: Any, x_unit: jax.Array) -> jax.Array:
    """Logits with every BatchNorm normalising by the statistics of this batch (train-mode BatchNorm; the
    running statistics are not updated: the returned update is discarded)."""
    from sbgc.train.baseline import network

    logits, _ = network(classifier.config).apply(classifier.variables, x_unit, train=True, mutable=["batch_stats"])
    return logits


def _first_norm_shift(classifier: Any, x_unit: jax.Array) -> jax.Array:
    """How far a batch moves the input of the first BatchNorm: per channel |batch mean − running mean| /
    running std, averaged over channels (the stem convolution's output is that BatchNorm's input)."""
    from sbgc.train.baseline import network

    _, state = network(classifier.config).apply(classifier.variables, x_unit, train=False,
                                                capture_intermediates=lambda mdl, _: mdl.name == "Conv_0",
                                                mutable=["intermediates"])  # fmt: skip
    stem = state["intermediates"]["Conv_0"]["__call__"][0]  # [B, H, W, C]
    stats = classifier.variables["batch_stats"]["WideBlock_0"]["BatchNorm_0"]
    return jnp.mean(jnp.abs(jnp.mean(stem, axis=(0, 1, 2)) - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5))


def batchnorm_diagnosis(classifier: Any, evalset: EvaluationSet, grid: Sequence[Setting], seed: int, *,
                        batch: int = 500) -> dict[str, np.ndarray]:
    """Per setting of ``grid`` (the images of ``evalset``, corrupted as every classifier sees them), for a
    baseline with BatchNorm: arrays [S] of ``accuracy`` (running statistics, as evaluated everywhere else),
    ``accuracy_batch_statistics`` (each batch of ``batch`` corrupted images normalised by its own
    statistics), ``modal_share`` (share of predictions in the most frequent class), ``mean_pixel`` (of the
    [0, 1] bin centres) and ``first_norm_shift`` (see :func:`_first_norm_shift`, averaged over batches)."""
    from sbgc.train.baseline import bin_centres

    if not has_batchnorm(classifier):
        raise ValueError(f"{getattr(classifier, 'path', classifier)} has no BatchNorm statistics to diagnose")
    labels = np.asarray(evalset.labels)
    batch_logits = jax.jit(lambda x: _batch_statistics_logits(classifier, x))
    shift = jax.jit(lambda x: _first_norm_shift(classifier, x))
    out = {k: np.zeros(len(grid)) for k in ("accuracy", "accuracy_batch_statistics", "modal_share", "mean_pixel",
                                             "first_norm_shift")}  # fmt: skip
    for i, setting in enumerate(grid):
        images = corrupted(evalset, setting, seed)
        pred = classifier.predict(images)
        pred_batch, shifts = [], []
        for start in range(0, len(images), batch):
            x = bin_centres(images[start : start + batch])
            pred_batch.append(np.argmax(np.asarray(batch_logits(x)), axis=1))
            shifts.append(float(shift(x)))
        out["accuracy"][i] = np.mean(pred == labels)
        out["accuracy_batch_statistics"][i] = np.mean(np.concatenate(pred_batch) == labels)
        out["modal_share"][i] = np.bincount(pred, minlength=10).max() / len(pred)
        out["mean_pixel"][i] = float(np.mean((images.astype(np.float64) + 0.5) / 256))
        out["first_norm_shift"][i] = float(np.mean(shifts))
    return out


def collapsed(diagnosis: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool [S]: the settings where the network collapses (accuracy < :data:`COLLAPSE_ACCURACY` with at least
    :data:`COLLAPSE_SHARE` of its predictions in one class)."""
    return (np.asarray(diagnosis["accuracy"]) < COLLAPSE_ACCURACY) & (np.asarray(diagnosis["modal_share"]) >= COLLAPSE_SHARE)


def diagnosis_markdown(diagnosis: Mapping[str, np.ndarray], grid: Sequence[Setting], name: str,
                       other: GridResult | None = None) -> str:
    """The diagnosis as a table (one row per setting), with ``other`` (a baseline without BatchNorm, on the
    same images) beside it."""
    rows = []
    for i, s in enumerate(grid):
        rows.append((setting_label(s).replace("_", " ") + (" **(collapse)**" if collapsed(diagnosis)[i] else ""),
                     f"{100 * diagnosis['accuracy'][i]:.1f}", f"{100 * diagnosis['accuracy_batch_statistics'][i]:.1f}",
                     f"{100 * diagnosis['modal_share'][i]:.0f}", f"{diagnosis['mean_pixel'][i]:.3f}",
                     f"{diagnosis['first_norm_shift'][i]:.2f}",
                     *([f"{100 * other.accuracy()[i]:.1f}"] if other is not None else [])))  # fmt: skip
    header = ("setting", f"{name} accuracy %", f"{name}, BatchNorm with the batch's own statistics %",
              "predictions in its most frequent class %", "mean pixel", "first BatchNorm input shift (running SDs)",
              *([f"{other.name} accuracy % (no BatchNorm)"] if other is not None else []))
    return markdown_table(header, rows, align=["left"] + ["right"] * (len(header) - 1))


def collapse_text(diagnosis: Mapping[str, np.ndarray], grid: Sequence[Setting], name: str,
                  other: GridResult | None = None) -> str:
    """What the diagnosis shows, in words, computed: which settings collapse, what the batch's own BatchNorm
    statistics give on each of them and over all corruptions, how far their inputs move the first BatchNorm
    compared with clean images, and (``other``) what a network without BatchNorm scores on them."""
    acc, batch = np.asarray(diagnosis["accuracy"]), np.asarray(diagnosis["accuracy_batch_statistics"])
    hit = np.flatnonzero(collapsed(diagnosis))
    label = lambda i: setting_label(grid[i]).replace("_", " ")  # noqa: E731
    clean = [i for i, s in enumerate(grid) if s[0] == "clean"]
    corrupted_rows = [i for i, s in enumerate(grid) if s[0] != "clean"]
    if not len(hit):
        return (f"{name} collapses on no setting of this run (none below {100 * COLLAPSE_ACCURACY:.0f} % accuracy with "
                f"≥ {100 * COLLAPSE_SHARE:.0f} % of its predictions in one class).")
    target = 0.9 * acc[clean[0]] if clean else 0.9
    restored = [i for i in hit if batch[i] >= target]
    partly = [i for i in hit if batch[i] < target]
    text = (f"{name} collapses on {len(hit)} setting{'s' if len(hit) > 1 else ''}: "
            + ", ".join(f"{label(i)} ({100 * acc[i]:.0f} %, {100 * diagnosis['modal_share'][i]:.0f} % of its predictions "
                        "one class)" for i in hit)
            + f". Normalising every BatchNorm with the corrupted batch's own statistics instead of the training set's, "
            "nothing retrained: " + ", ".join(f"{label(i)} {100 * acc[i]:.0f} → {100 * batch[i]:.0f} %" for i in hit)
            + (f"; over all {len(corrupted_rows)} corrupted settings its mean goes from {100 * acc[corrupted_rows].mean():.1f} "
               f"to {100 * batch[corrupted_rows].mean():.1f} %" if corrupted_rows else "") + ". ")
    shift = np.asarray(diagnosis["first_norm_shift"])
    if restored:
        moved = ", ".join(f"{shift[i]:.2f}" for i in restored)
        text += (f"On {', '.join(label(i) for i in restored)} the collapse **is the BatchNorm statistics**: the "
                 f"corruption shifts the images' intensity statistics (the input of the first BatchNorm moves by {moved} "
                 "of its running standard deviations" + (f"; clean images {shift[clean[0]]:.2f}" if clean else "")
                 + "), the network normalises them with the training set's mean and variance, and the digit is still "
                 "there. ")
    if partly:
        text += (f"On {', '.join(label(i) for i in partly)} batch statistics recover part of it only (below 90 % of the "
                 "clean accuracy): the statistics explain part of the collapse, not all of it. ")
    if other is not None:
        other_acc = other.accuracy()
        readable = [i for i in hit if other_acc[i] >= target]
        failing = [i for i in hit if other_acc[i] < target]
        listed = lambda rows: ", ".join(f"{label(i)} {100 * other_acc[i]:.0f} %" for i in rows)  # noqa: E731
        if readable:
            text += (f"The {other.name}, which has no BatchNorm, reads {listed(readable)} on the same images: the digit "
                     f"is still there, and what fails is {name}'s normalisation or what it learned, not the image. ")
        if failing:
            text += (f"The {other.name} fails on {listed(failing)} too: a network without BatchNorm is not immune to "
                     "these corruptions (it normalises its inputs with the fixed mean and standard deviation of the "
                     "training images, and saw clean digits only). ")
    return text.strip()


@dataclasses.dataclass(frozen=True)
class CollapseDiagnosis:
    """Chapter 03's :func:`batchnorm_diagnosis` of its baseline ``name`` on its whole sample (``n_images``
    images of the benchmark ``family``): ``arrays`` (each [S]) over the settings ``grid`` [S], ``other`` the
    plain CNN's grid on the same images (or None), and ``entry`` the results-cache entry it came from."""

    arrays: dict[str, np.ndarray]
    grid: tuple[Setting, ...]
    name: str
    other: GridResult | None
    entry: CachedResult
    family: str
    n_images: int

    def text(self) -> str:
        """:func:`collapse_text` of the diagnosis."""
        return collapse_text(self.arrays, self.grid, self.name, self.other)

    def markdown(self) -> str:
        """The table (:func:`diagnosis_markdown`) and, below it, why the baseline collapses."""
        return (diagnosis_markdown(self.arrays, self.grid, self.name, self.other) + "\n\n"
                f"**Why {self.name} collapses ({self.family}, {self.n_images:,} images, this run).** " + self.text()
                + "\n\n")

    def record(self) -> dict[str, Any]:
        """The diagnosis for the results file: settings, every array as a list, the collapses and the text."""
        return {"settings": [setting_label(s) for s in self.grid], **{k: v.tolist() for k, v in self.arrays.items()},
                "collapsed": collapsed(self.arrays).tolist(), "text": self.text()}


def cached_collapse_diagnosis(cache: ResultCache, results: ChapterResults) -> CollapseDiagnosis | None:
    """:func:`batchnorm_diagnosis` of the chapter's baseline on its whole sample, loaded from ``cache`` or
    computed once (key :meth:`~sbgc.experiments.corruption_robustness.ChapterSample.baseline_key`
    ``"corruptions_batchnorm_diagnosis"``), with the plain CNN beside it; None for a baseline without
    BatchNorm statistics."""
    clf, sample = results.models.baseline, results.sample
    if not has_batchnorm(clf):
        return None
    entry = cache.get(sample.baseline_key("corruptions_batchnorm_diagnosis", clf.sha256),
                      lambda: batchnorm_diagnosis(clf, sample.baseline, sample.grid, sample.seed))
    return CollapseDiagnosis({k: np.asarray(v) for k, v in entry.arrays.items()}, sample.grid, clf.config.name,
                             results.cnn_all, entry, sample.family.name, len(sample.baseline))
