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

Long evaluations resume: the class scores are kept in blocks of 100 images in a results cache
(``--cache-dir``, default the book's ``results-cache/``: the same computation is the same entry, so an evaluation
run here fills the chapter's table), and a rerun with the same settings loads the blocks it has and computes the
rest; a larger ``--images`` reuses every block of a smaller one.

Across processes or hosts sharing the cache directory: ``--shard I/N`` in each of N processes; each computes its
own blocks first, then waits for the others' and writes the same summary. Batch b's random numbers come from
``fold_in(PRNGKey(seed), b)`` alone, so the numbers do not depend on the blocks, the shards or the devices.

    python -m sbgc.experiments.evaluate --model M --method ode --images 10000 --shard $I/$N --out F.json   # N jobs
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
from typing import Any, NamedTuple

import jax
import numpy as np

from sbgc.cache import CacheKey, ResultCache, cached_blocks, default_cache_dir, plain
from sbgc.data.datasets import EVALUATION_SPLITS, evaluation_split, sample_indices
from sbgc.shard import Shard, parse_shard
from sbgc.stats import binomial_interval, mean_estimate
from sbgc.storage import write_json_atomic
from sbgc.method.bound import BoundSettings
from sbgc.method.likelihood import SolverSettings
from sbgc.method.scorers import Bound, ClassScorer, Ode, Pruned, scorer_from_plain
from sbgc.train.loop import device_name

METHODS = ("bound", "ode", "pruned")  # the command line's scorers (any ClassScorer from Python)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What an evaluation computes: the scorer and which images (written out, less ``n_images``, they are the
    cache key of its blocks: :func:`table_key`)."""

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
SCORE_BLOCK = 100  # images per cached block of a score table (a whole number of batches)
CODE_VERSION = 2  # of a score table's blocks: bump when a change alters what they hold (2: in blocks, nested in n)


class ScoreTable(NamedTuple):
    """Class scores of an evaluation's images (:func:`cached_score_table`)."""

    indices: np.ndarray  # int [N]: positions in the split (:func:`image_selection`)
    log_p: np.ndarray  # [N, K] nats (−inf for classes a pruned scorer dropped)
    nfe: np.ndarray  # [N] network passes per image, summed over the classes
    seconds: float  # computing time of the blocks (as first computed, wherever that was)
    entries: list  # the blocks' cache entries, for provenance lines


def table_key(model, split, settings: EvalSettings) -> CacheKey:
    """The key of :func:`cached_score_table`'s computation; each block is keyed as this with its images
    (:func:`sbgc.cache.cached_blocks`). The number of images is not part of it: a larger evaluation of the same
    settings reuses every block of a smaller one (the selection is nested)."""
    idx = image_selection(len(split), settings.n_images, settings.seed)
    computation = {k: v for k, v in plain(settings).items() if k != "n_images"}
    return CacheKey(f"scores_{settings.method}", CODE_VERSION, computation, model.sha256,
                    f"{settings.data}: {split.source} {split.split} split", idx)


def cached_score_table(cache, model, split, settings: EvalSettings, *, block: int = SCORE_BLOCK,
                       progress: bool = False) -> ScoreTable:
    """Class scores of ``split``'s images chosen by ``settings``, through ``cache``, in blocks of ``block``
    images (:func:`sbgc.cache.cached_blocks`): an interrupted evaluation resumes at its first missing block, a
    larger one reuses the blocks of a smaller, and under a sharded cache (``--shard I/N``, :mod:`sbgc.shard`)
    each process computes its own blocks first and loads the others'. Batches of ``settings.batch`` images,
    batch b (counted over the whole sample) with key ``fold_in(PRNGKey(seed), b)``: the numbers do not depend on
    the block size, the shards or the devices."""
    from tqdm import tqdm

    shape = (model.config.image_size, model.config.image_size, model.config.channels)
    if split.images.shape[1:] != shape:
        raise ValueError(f"{settings.data} images are {split.images.shape[1:]}, the model expects {shape}")
    if block % settings.batch:
        raise ValueError(f"a block ({block} images) must hold whole batches of {settings.batch}")
    key = table_key(model, split, settings)
    root, per_block = jax.random.PRNGKey(settings.seed), block // settings.batch
    bar = tqdm(total=len(key.image_indices), desc=f"{settings.method} eval", disable=not progress)

    def compute(b: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        log_p, nfe, start = np.empty((len(idx), model.config.n_classes)), np.empty(len(idx)), time.perf_counter()
        for j, first in enumerate(range(0, len(idx), settings.batch)):
            rows = slice(first, first + settings.batch)
            log_p[rows], nfe[rows] = _class_scores(model, split.images[idx[rows]],
                                                   jax.random.fold_in(root, b * per_block + j), settings)
        return {"log_p": log_p, "nfe": nfe, "seconds": np.full(len(idx), (time.perf_counter() - start) / len(idx))}

    arrays, entries = cached_blocks(cache, key, block, compute,
                                    on_block=lambda b, e: bar.update(len(e.arrays["nfe"])))  # fmt: skip
    bar.close()
    return ScoreTable(key.image_indices, arrays["log_p"], arrays["nfe"], float(arrays["seconds"].sum()), entries)


def evaluate(model, settings: EvalSettings, *, out: str | Path | None = None, cache: Any = None,
             data_dir: str | None = None, progress: bool = True) -> dict:
    """Classify ``settings.n_images`` test images with ``model`` (a :class:`sbgc.train.pretrained.LoadedModel`):
    the summary (accuracy, bits/dim, cost, provenance), written to ``out`` (JSON) if given.

    The class scores go through ``cache`` (a :class:`sbgc.cache.ResultCache`; None: a temporary one, discarded)
    block by block (:func:`cached_score_table`): a rerun resumes, and processes sharing a sharded cache split them.
    """
    from sbgc.method.classify import log_marginal
    from sbgc.method.likelihood import bits_per_dim

    split = evaluation_split(settings.data, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        own = ResultCache(tmp, shard=Shard())  # alone: under $SBGC_SHARD a private cache must not wait for others
        table = cached_score_table(cache if cache is not None else own, model, split, settings, progress=progress)
    idx, log_p, nfe, seconds = table.indices, table.log_p, table.nfe, table.seconds
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    is_curve = argv[:1] == ["curve"]
    p = argparse.ArgumentParser(prog="python -m sbgc.experiments.evaluate" + (" curve" if is_curve else ""),
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if is_curve:
        p.add_argument("--workdir", required=True)
        p.add_argument("--steps", type=int, nargs="+", required=True)
    else:
        p.add_argument("--model", required=True, help="a shipped name (sbgc.train.pretrained.SHIPPED) or a .msgpack path")
        p.add_argument("--cache-dir", default=None, help="where the blocks are kept (default: the book's results cache)")
        p.add_argument("--shard", default=None, metavar="I/N", help="one of N processes sharing --cache-dir")
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
    p.add_argument("--batch", type=int, default=BOOK_BATCH, help="images per key (a block holds whole batches)")
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv[1:] if is_curve else argv)
    scorer = cli_scorer(a.method, times=a.times, probes=a.probes, rtol=a.rtol, weighting=a.weighting, keep=a.keep,
                        second_times=a.second_times)  # fmt: skip
    s = EvalSettings(scorer=scorer, data=a.data, n_images=a.images, seed=a.seed, batch=a.batch)
    if is_curve:
        res = curve(a.workdir, a.steps, s, out=a.out, data_dir=a.data_dir, progress=not a.no_progress)
        print(json.dumps(res["rows"], indent=1))
        return 0
    from sbgc.train.pretrained import load_model

    cache = ResultCache(a.cache_dir or default_cache_dir(), shard=parse_shard(a.shard) if a.shard else None)
    res = evaluate(load_model(a.model), s, out=a.out, cache=cache, data_dir=a.data_dir, progress=not a.no_progress)
    print(json.dumps({k: res[k] for k in ("method", "accuracy", "accuracy_interval95", "bpd_marginal",
                                          "bpd_true_class", "nfe_per_image", "seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
