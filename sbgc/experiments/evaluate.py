"""A score model as a classifier on a test set: accuracy and bits/dim with intervals and provenance.

    python -m sbgc.experiments.evaluate --model mnist --data mnist --method bound --images 1000 --times 32 --out F.json
    python -m sbgc.experiments.evaluate --model mnist --method bound --weighting uniform --times 32 --out F.json
    python -m sbgc.experiments.evaluate --model mnist --data mnist --method ode --images 1000 --probes 1 --rtol 1e-3 --out F.json
    python -m sbgc.experiments.evaluate --model mnist --method pruned --times 8 --keep 2 --second-times 64 --out F.json
    python -m sbgc.experiments.evaluate curve --workdir runs/RUN --steps 2000 4000 8000 --data mnist --images 500 --out F.json

Images: the first ``--images`` of a fixed random permutation of the test split (seed ``--seed``), so
a larger evaluation contains every smaller one. The class scores come from a scorer
(:mod:`sbgc.method.scorers`, any of them from Python: ``EvalSettings(scorer=...)``); from the command line:
``ode`` — the exact log p(x | y) of every class by the probability-flow ODE (``--probes`` Rademacher
probes, dopri5 at ``--rtol`` = atol, ε = 1e-5); ``bound`` — the variational bound (``--times`` stratified
times; ``--weighting uniform``: the uniform-in-t denoising score instead, not a bound); ``pruned`` — the
bound with ``--times`` for every class, then ``--second-times`` more for the ``--keep`` best. All use
common random numbers across the classes of an image. Reported: accuracy with its Clopper–Pearson 95 % interval; bits/dim of
p(x) = (1/K) Σ_y p(x | y) and of p(x | y_true) with Student-t 95 % intervals (for the bound: bounds
on bits/dim, upper in expectation); network passes per image; seconds; the model file's sha256, step
and training time; the data source.

Long evaluations resume: finished images are kept in ``<out>.partial.npz`` (with the settings they
were computed with) after every batch, and a rerun with the same settings continues from them.

Across hosts (a cluster's job array): ``--shard I/N`` computes only the batches b with b mod N = I
into ``<out>.shard-I-of-N.partial.npz``; ``python -m sbgc.experiments.evaluate merge --out F.json``
(with the same model and settings) joins the shards' files into ``<out>.partial.npz`` (checking they hold the same computation and agree
where they overlap), and the unsharded command then writes the summary without computing anything.
Batch b's random numbers come from ``fold_in(PRNGKey(seed), b)`` alone, so the numbers do not depend
on how the batches were spread over hosts (and within a host the rows are split over its devices).

    python -m sbgc.experiments.evaluate --model M --method ode --images 10000 --shard $I/$N --out F.json   # N jobs
    python -m sbgc.experiments.evaluate merge --model M --method ode --images 10000 --out F.json
    python -m sbgc.experiments.evaluate --model M --method ode --images 10000 --out F.json                 # summary
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sbgc.cache import CacheKey, plain
from sbgc.data.datasets import EVALUATION_SPLITS, evaluation_split, sample_indices
from sbgc.shard import parse_shard as shard_of, poll, wait_seconds
from sbgc.stats import binomial_interval, mean_estimate
from sbgc.storage import atomic_savez, write_json_atomic
from sbgc.method.bound import BoundSettings
from sbgc.method.likelihood import SolverSettings
from sbgc.method.scorers import Bound, ClassScorer, Ode, Pruned, scorer_from_plain
from sbgc.train.loop import device_name

METHODS = ("bound", "ode", "pruned")  # the command line's scorers (any ClassScorer from Python)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What an evaluation computes: the scorer and which images (the partial-results file is reused
    only when these agree; written out, they are the cache key)."""

    scorer: Any = Bound(BoundSettings(n_times=32))
    data: str = "mnist"
    n_images: int = 1000
    seed: int = 0
    batch: int = 25

    def __post_init__(self):
        if not isinstance(self.scorer, ClassScorer):
            raise TypeError(f"scorer must be a ClassScorer (sbgc.method.scorers), got {self.scorer!r}")
        if self.data not in EVALUATION_SPLITS:
            raise ValueError(f"data must be one of {EVALUATION_SPLITS}, got {self.data!r}")
        if self.n_images < 1 or self.batch < 1:
            raise ValueError(f"n_images and batch must be positive, got {self.n_images}, {self.batch}")

    @property
    def method(self) -> str:
        """``"ode"``, ``"bound"`` or ``"pruned"``: the scorer's kind (the cache entry's name)."""
        return {Ode: "ode", Bound: "bound", Pruned: "pruned"}.get(type(self.scorer), type(self.scorer).__name__.lower())

    def describe(self) -> str:
        return self.scorer.describe()

    @classmethod
    def from_plain(cls, d: dict) -> "EvalSettings":
        """The settings of a results file (:func:`sbgc.cache.plain` of them)."""
        return cls(**{**d, "scorer": scorer_from_plain(d["scorer"])})


def cli_scorer(method: str, *, times: int = 32, probes: int = 1, rtol: float = 1e-3, eps: float = 1e-5,
               weighting: str = "likelihood", keep: int = 2, second_times: int = 64) -> ClassScorer:
    """The scorer the command line names (module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ode":
        return Ode(SolverSettings(rtol=rtol, atol=rtol, eps=eps), n_probes=probes)
    first = Bound(BoundSettings(n_times=times, eps=eps, weighting=weighting))
    if method == "bound":
        return first
    return Pruned(first, Bound(dataclasses.replace(first.settings, n_times=second_times)), keep)


def image_selection(n_total: int, n_images: int, seed: int) -> np.ndarray:
    """Positions of the evaluated images: :func:`sbgc.data.datasets.sample_indices` (nested in n)."""
    return sample_indices(n_total, n_images, seed)


def _class_scores(model, images: np.ndarray, key, s: EvalSettings) -> tuple[np.ndarray, np.ndarray]:
    """Class scores [B, K] (−inf for classes a pruned scorer dropped) and network passes [B] of uint8
    images [B, *shape]."""
    res = s.scorer.scores(model.score_fn, model.sde, images, key, n_classes=model.config.n_classes)
    log_p = np.where(res.candidates, res.log_p, -np.inf)
    return np.asarray(log_p, np.float64), np.asarray(res.nfe, np.float64)


BOOK_BATCH = 10  # images per batch (and per key) of the book's evaluations: the shipped MNIST evaluation's


def _partial_ident(model, settings: EvalSettings) -> str:
    """What a partial-results file must hold to be reused: the settings and the model's sha256."""
    return json.dumps({"settings": plain(settings), "sha256": model.sha256}, sort_keys=True)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 0 ≤ I < N; None → (0, 1) (everything). :func:`sbgc.shard.parse_shard`."""
    shard = shard_of(text)
    return shard.index, shard.count


def shard_partial(out: str | Path, shard: tuple[int, int]) -> Path:
    """The partial-results file of ``out`` for one shard (the unsharded one for (0, 1))."""
    i, n = shard
    return Path(f"{out}.partial.npz") if n == 1 else Path(f"{out}.shard-{i}-of-{n}.partial.npz")


def score_table(model, split, settings: EvalSettings, *, partial: str | Path | None = None,
                progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict[str, np.ndarray]:
    """Class log-likelihoods (or bounds) of ``split``'s images chosen by ``settings``.

    Returns ``{"indices": int [N] (positions in the split), "log_p": [N, K], "nfe": [N] (network
    passes per image, summed over classes), "seconds": scalar}``. Batches of ``settings.batch`` images,
    batch b with key ``fold_in(PRNGKey(seed), b)``; with ``partial``, finished batches are kept in that
    ``.npz`` and reused by a rerun with the same settings and model (sha256). ``shard`` (I, N): only
    the batches b with b mod N = I are computed (the others stay NaN unless ``partial`` has them).
    """
    shard_i, shard_n = shard
    shape = (model.config.image_size, model.config.image_size, model.config.channels)
    if split.images.shape[1:] != shape:
        raise ValueError(f"{settings.data} images are {split.images.shape[1:]}, the model expects {shape}")
    idx = image_selection(len(split), settings.n_images, settings.seed)
    ident = _partial_ident(model, settings)
    log_p = np.full((len(idx), model.config.n_classes), np.nan)
    nfe = np.zeros(len(idx))
    seconds = 0.0
    partial = Path(partial) if partial is not None else None
    if partial is not None and partial.exists():
        with np.load(partial, allow_pickle=False) as z:
            if str(z["ident"]) == ident:
                log_p, nfe, seconds = z["log_p"].copy(), z["nfe"].copy(), float(z["seconds"])
    key = jax.random.PRNGKey(settings.seed)
    starts = list(range(0, len(idx), settings.batch))
    from tqdm import tqdm

    for b, start in enumerate(tqdm(starts, desc=f"{settings.method} eval", disable=not progress)):
        sl = slice(start, start + settings.batch)
        if not np.isnan(log_p[sl]).any() or b % shard_n != shard_i:
            continue
        t0 = time.perf_counter()
        log_p[sl], nfe[sl] = _class_scores(model, split.images[idx[sl]], jax.random.fold_in(key, b), settings)
        seconds += time.perf_counter() - t0
        if partial is not None:
            atomic_savez(partial, ident=np.array(ident), log_p=log_p, nfe=nfe, seconds=np.array(seconds))
    return {"indices": idx, "log_p": log_p, "nfe": nfe, "seconds": np.array(seconds)}


def merge_shards(model, settings: EvalSettings, out: str | Path, shards: int) -> Path:
    """Join the ``shards`` partial files of ``out`` (:func:`shard_partial`) into ``<out>.partial.npz``
    (with what it already holds): each must hold this computation (settings, model sha256); where two
    hold the same image they must agree. Raises ValueError naming the file otherwise; a shard's file
    may be missing or unfinished (its images stay to compute). Returns the merged file's path."""
    ident = _partial_ident(model, settings)
    n = settings.n_images
    log_p = np.full((n, model.config.n_classes), np.nan)
    nfe, seconds = np.zeros(n), 0.0
    sources = [shard_partial(out, (0, 1))] + [shard_partial(out, (i, shards)) for i in range(shards)]
    for path in sources:
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as z:
            if str(z["ident"]) != ident:
                raise ValueError(f"{path} holds another computation (settings or model) than the one merged")
            other, other_nfe = z["log_p"], z["nfe"]
            seconds += float(z["seconds"])
        have, new = ~np.isnan(log_p).any(axis=1), ~np.isnan(other).any(axis=1)
        both = have & new
        if both.any() and not np.allclose(log_p[both], other[both], rtol=0, atol=1e-6):
            raise ValueError(f"{path} disagrees with the other shards on {int(both.sum())} image(s) they share")
        log_p[new & ~have], nfe[new & ~have] = other[new & ~have], other_nfe[new & ~have]
    merged = shard_partial(out, (0, 1))
    atomic_savez(merged, ident=np.array(ident), log_p=log_p, nfe=nfe, seconds=np.array(seconds))
    return merged


CODE_VERSION = 1  # of score_table's results: bump when a change alters what it returns


def cache_key(model, split, settings: EvalSettings):
    """The :class:`sbgc.cache.CacheKey` of :func:`score_table` (model, images, settings)."""
    idx = image_selection(len(split), settings.n_images, settings.seed)
    return CacheKey(f"scores_{settings.method}", CODE_VERSION, settings, model.sha256,
                    f"{settings.data}: {split.source} {split.split} split", idx)


def cached_score_table(cache, model, split, settings: EvalSettings, *, progress: bool = False):
    """:func:`score_table` through ``cache`` (a :class:`sbgc.cache.ResultCache`): a CachedResult.

    Under a sharded cache (``--shard I/N``, :mod:`sbgc.shard`) the N processes split the table: each
    computes its batches (b mod N = I, :func:`score_table`'s ``shard``) into its own partial file in
    ``<cache>/partial/`` (resumable), then the entry's owner waits for every shard's batches
    (:func:`wait_for_shards`), joins them (:func:`merge_shards`) and writes the entry, which the
    others wait for and load. The table equals the unsharded one: batch b's key is fold_in(seed, b)."""
    key = cache_key(model, split, settings)
    shard = getattr(cache, "shard", None)
    data, meta = cache.paths(key)
    if shard is None or shard.alone or cache.read_only or meta.exists():
        return cache.get(key, lambda: score_table(model, split, settings, progress=progress))
    out = cache.directory / "partial" / data.stem
    out.parent.mkdir(parents=True, exist_ok=True)
    mine = (shard.index, shard.count)
    score_table(model, split, settings, partial=shard_partial(out, mine), progress=progress, shard=mine)

    def joined() -> dict[str, np.ndarray]:
        wait_for_shards(model, settings, out, shard.count)
        return score_table(model, split, settings, partial=merge_shards(model, settings, out, shard.count),
                           progress=False)  # every batch is in the merged file: nothing is computed

    return cache.get(key, joined)


def wait_for_shards(model, settings: EvalSettings, out: str | Path, shards: int, *, poll_s: float = 5.0,
                    timeout_s: float | None = None) -> None:
    """Wait until each of the ``shards`` partial files of ``out`` (:func:`shard_partial`) holds all
    of its shard's batches (b mod N = I) of this computation, polling (:func:`sbgc.shard.poll`) up to
    ``timeout_s`` (default ``$SBGC_SHARD_WAIT``). Raises ValueError for a file of another
    computation, TimeoutError naming the unfinished shards."""
    ident = _partial_ident(model, settings)
    starts = list(range(0, settings.n_images, settings.batch))
    timeout_s = wait_seconds() if timeout_s is None else timeout_s

    def unfinished() -> list[int]:
        left = []
        for i in range(shards):
            path = shard_partial(out, (i, shards))
            if not path.exists():
                left.append(i)
                continue
            with np.load(path, allow_pickle=False) as z:
                if str(z["ident"]) != ident:
                    raise ValueError(f"{path} holds another computation (settings or model) than this table")
                log_p = z["log_p"]
            if any(np.isnan(log_p[s : s + settings.batch]).any() for b, s in enumerate(starts) if b % shards == i):
                left.append(i)
        return left

    if poll(lambda: True if not unfinished() else None, timeout_s, poll_s=poll_s) is None:
        raise TimeoutError(f"shard(s) {', '.join(f'{i}/{shards}' for i in unfinished())} did not finish their "
                           f"batches of {out} within {timeout_s:.0f} s ($SBGC_SHARD_WAIT)")


def import_evaluation(cache, model, summary_path: str | Path, *, data_dir: str | None = None, check_batches: int = 1,
                      atol: float = 1e-3):
    """Make the finished evaluation ``summary_path`` (written by :func:`evaluate` with ``out``, its
    per-image results in ``<summary_path>.partial.npz``) the cache entry of the same computation.

    The first ``check_batches`` batches are recomputed now and must agree with the stored class
    log-likelihoods within ``atol`` nats (the same code on the same machine reproduces them up to
    floating-point reassociation); the entry records the original run's time, device and seconds and
    names the file it was imported from. Raises ValueError if the files describe another model or
    the recomputed numbers differ.
    """
    summary_path = Path(summary_path)
    summary = json.loads(summary_path.read_text())
    settings = EvalSettings.from_plain(summary["settings"])
    if summary["model"]["sha256"] != model.sha256:
        raise ValueError(f"{summary_path} evaluated model sha256 {summary['model']['sha256'][:12]}, not "
                         f"{model.path.name} ({model.sha256[:12]})")
    split = evaluation_split(settings.data, data_dir)
    partial = Path(str(summary_path) + ".partial.npz")
    with np.load(partial, allow_pickle=False) as z:
        if str(z["ident"]) != _partial_ident(model, settings):
            raise ValueError(f"{partial} holds another computation than {summary_path} describes")
        log_p, nfe = z["log_p"].copy(), z["nfe"].copy()
    if np.isnan(log_p).any():
        raise ValueError(f"{partial} is unfinished ({int(np.isnan(log_p).any(axis=1).sum())} images missing)")
    n_check = min(len(log_p), check_batches * settings.batch)
    # the first n_check images of the evaluation, with the same batch keys (the selection is nested)
    again = score_table(model, split, dataclasses.replace(settings, n_images=n_check), progress=False)["log_p"]
    worst = float(np.max(np.abs(again - log_p[:n_check])))
    if worst > atol:
        raise ValueError(f"recomputing the first {n_check} images differs from {partial} by up to {worst:.3g} nats "
                         f"(> {atol:g}): not the same computation")
    import subprocess

    shipped_in = subprocess.run(["git", "log", "-1", "--format=%H", "--", summary_path.name],
                                cwd=summary_path.parent, capture_output=True, text=True).stdout.strip() or "unknown"
    key = cache_key(model, split, settings)
    arrays = {"indices": key.image_indices, "log_p": log_p, "nfe": nfe, "seconds": np.array(summary["seconds"])}
    entry = cache.put(key, arrays, seconds=summary["seconds"],
                      device=summary["device"], commit=shipped_in, computed_at=summary["date"],
                      origin=f"{summary_path.name} (first {n_check} images recomputed: max |Δ log p| = {worst:.2g} nats)")
    return entry, worst


def evaluate(model, settings: EvalSettings, *, out: str | Path | None = None, data_dir: str | None = None,
             progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict:
    """Classify ``settings.n_images`` test images with ``model`` (a :class:`sbgc.train.pretrained.LoadedModel`).

    With ``out``, finished batches are kept in ``<out>.partial.npz`` and reused by a rerun with the
    same settings and model (sha256); the summary is written to ``out`` (JSON) at the end. With a
    ``shard`` (I, N ≠ 1) only that shard's batches are computed, into its own partial file (needs
    ``out``), and a progress record is returned instead of the summary (:func:`merge_shards`).
    """
    from sbgc.method.classify import log_marginal
    from sbgc.method.likelihood import bits_per_dim

    split = evaluation_split(settings.data, data_dir)
    if shard[1] != 1:
        if out is None:
            raise ValueError("a sharded evaluation needs out (its shard's results go next to it)")
        table = score_table(model, split, settings, partial=shard_partial(out, shard), progress=progress, shard=shard)
        done = int((~np.isnan(table["log_p"]).any(axis=1)).sum())
        return {"shard": list(shard), "images_done": done, "partial": str(shard_partial(out, shard))}
    table = score_table(model, split, settings, partial=shard_partial(out, (0, 1)) if out is not None else None,
                        progress=progress)
    idx, log_p, nfe, seconds = table["indices"], table["log_p"], table["nfe"], float(table["seconds"])
    shape = split.images.shape[1:]
    labels = split.labels[idx]
    dim = int(np.prod(shape))
    pred = np.argmax(log_p, axis=1)
    correct = int(np.sum(pred == labels))
    lo, hi = binomial_interval(correct, len(idx))
    density = settings.scorer.gives_density  # else no bits/dim

    def interval(values) -> dict | None:  # the mean's JSON record (None where a single image gives no interval)
        if not density:
            return None
        m = mean_estimate(values).as_dict()
        return {"mean": m["value"], "lo": m["lo"], "hi": m["hi"], "sem": m["se"]}

    marginal_bpd = bits_per_dim(log_marginal(log_p), dim) if density else None
    true_bpd = bits_per_dim(log_p[np.arange(len(idx)), labels], dim) if density else None

    summary = {
        "what": f"classifier accuracy ({settings.method}) and bits/dim",
        "method": settings.describe(), "settings": plain(settings),
        "model": {"file": model.path.name, "sha256": model.sha256, "step": model.meta.get("step"),
                  "train_seconds": model.meta.get("train_seconds"), "profile": model.meta.get("profile"),
                  "n_params": model.meta.get("n_params"), "trained_on": model.meta.get("data_source")},
        "data": {"name": settings.data, "source": split.source, "split": split.split,
                 "n_images": len(idx), "selection": f"first {len(idx)} of permutation(seed={settings.seed})",
                 "indices_head": [int(i) for i in idx[:10]]},
        "accuracy": correct / len(idx), "correct": correct, "accuracy_interval95": [lo, hi],
        "bpd_marginal": interval(marginal_bpd), "bpd_true_class": interval(true_bpd),
        "nfe_per_image": float(np.mean(nfe)), "seconds": seconds, "seconds_per_image": seconds / len(idx),
        "device": device_name(), "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "per_class_accuracy": [float(np.mean(pred[labels == c] == c)) if np.any(labels == c) else None
                               for c in range(model.config.n_classes)],
    }
    if out is not None:
        write_json_atomic(out, summary)
    return summary


def curve(workdir: str | Path, steps: list[int], settings: EvalSettings, *, out: str | Path | None = None,
          data_dir: str | None = None, progress: bool = True) -> dict:
    """Accuracy versus training steps: the EMA parameters of the checkpoints at ``steps`` of a run
    (``python -m sbgc.train --keep`` large enough to hold them), each evaluated with ``settings``."""
    from sbgc.train.pretrained import load_model
    from sbgc.train.score import export_ema

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for step in steps:
            path = Path(tmp) / f"ema_{step}.msgpack"
            export_ema(workdir, path, step)
            res = evaluate(load_model(path), settings, data_dir=data_dir, progress=progress)
            rows.append({"step": step, "train_seconds": res["model"]["train_seconds"], "accuracy": res["accuracy"],
                         "accuracy_interval95": res["accuracy_interval95"], "bpd_marginal": res["bpd_marginal"],
                         "sha256": res["model"]["sha256"], "seconds": res["seconds"]})
            if progress:
                print(json.dumps(rows[-1]), flush=True)
    summary = {"what": "accuracy versus training steps", "workdir": str(workdir), "method": settings.describe(),
               "settings": plain(settings), "rows": rows, "device": device_name()}
    if out is not None:
        write_json_atomic(out, summary)
    return summary


def _shard_count(out: str | Path) -> int:
    """N of the ``<out>.shard-I-of-N.partial.npz`` files next to ``out`` (one N expected)."""
    found = {int(f.name.split("-of-")[1].split(".")[0]) for f in Path(out).parent.glob(f"{Path(out).name}.shard-*-of-*.partial.npz")}
    if len(found) != 1:
        raise ValueError(f"expected the shard files of one N next to {out}, found N in {sorted(found) or 'none'}")
    return found.pop()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    is_curve, is_merge = argv[:1] == ["curve"], argv[:1] == ["merge"]
    sub = " curve" if is_curve else " merge" if is_merge else ""
    p = argparse.ArgumentParser(prog="python -m sbgc.experiments.evaluate" + sub,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if is_merge:
        p.add_argument("--shards", type=int, default=None, help="N of the shards (default: found next to --out)")
    if is_curve:
        p.add_argument("--workdir", required=True)
        p.add_argument("--steps", type=int, nargs="+", required=True)
    else:
        p.add_argument("--model", required=True, help="a shipped name (sbgc.train.pretrained.SHIPPED) or a .msgpack path")
    p.add_argument("--data", default="mnist", choices=EVALUATION_SPLITS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--method", default="bound", choices=METHODS)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--times", type=int, default=32, help="bound, pruned: K times per image and class")
    p.add_argument("--weighting", default="likelihood", choices=("likelihood", "uniform"),
                   help="bound, pruned: the bound (likelihood) or the uniform-in-t denoising score")
    p.add_argument("--keep", type=int, default=2, help="pruned: classes refined per image")
    p.add_argument("--second-times", type=int, default=64, help="pruned: further times for the kept classes")
    p.add_argument("--probes", type=int, default=1, help="ode: Rademacher probes")
    p.add_argument("--rtol", type=float, default=1e-3, help="ode: rtol = atol of dopri5")
    p.add_argument("--batch", type=int, default=25, help="images per saved batch")
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true")
    if not (is_curve or is_merge):
        p.add_argument("--shard", default=None, metavar="I/N", help="compute only batches b with b mod N = I")
    a = p.parse_args(argv[1:] if is_curve or is_merge else argv)
    scorer = cli_scorer(a.method, times=a.times, probes=a.probes, rtol=a.rtol, weighting=a.weighting, keep=a.keep,
                        second_times=a.second_times)  # fmt: skip
    s = EvalSettings(scorer=scorer, data=a.data, n_images=a.images, seed=a.seed, batch=a.batch)
    if is_curve:
        res = curve(a.workdir, a.steps, s, out=a.out, data_dir=a.data_dir, progress=not a.no_progress)
        print(json.dumps(res["rows"], indent=1))
        return 0
    from sbgc.train.pretrained import load_model

    if is_merge:
        if a.out is None:
            p.error("merge needs --out (the evaluation's summary path)")
        shards = a.shards or _shard_count(a.out)
        print(merge_shards(load_model(a.model), s, a.out, shards))
        return 0
    shard = parse_shard(a.shard)
    res = evaluate(load_model(a.model), s, out=a.out, data_dir=a.data_dir, progress=not a.no_progress, shard=shard)
    if shard[1] != 1:
        print(json.dumps(res))
        return 0
    print(json.dumps({k: res[k] for k in ("method", "accuracy", "accuracy_interval95", "bpd_marginal",
                                          "bpd_true_class", "nfe_per_image", "seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
