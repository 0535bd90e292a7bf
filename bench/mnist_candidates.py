"""Which MNIST score model to train on 2 CPU cores: candidates trained for the same CPU time, judged by the
converged classifier's accuracy, bits/dim by the exact ODE, and what one classification costs.

    python bench/mnist_candidates.py [--candidates continue_cosine continue_constant mnist_m uniform_weighting scratch_s]
        [--minutes 60] [--round-minutes 10] [--decay-steps 7000] [--images 500] [--times 64]
        [--weighting uniform] [--bpd-images 100] [--workdir runs/mnist-candidates] [--states checkpoints/candidates]
        [--out bench/results/mnist_candidates_equal_time_cpu.json]

Candidates (:data:`CANDIDATES`): the shipped run (``mnist``, 15,000 steps at a constant lr 1e-3) continued from its
packed training state with a cosine decay of the lr, or at the constant lr (the control: what the same CPU time
buys without the decay); a larger network (``mnist_m``) from scratch; the shipped size trained with the uniform
ε-MSE weighting (``sigma2``) instead of the paper's likelihood weighting, from scratch; and the shipped size and
recipe from scratch (``scratch_s``), without which the from-scratch candidates could only be compared with a run
that starts 2.6 CPU-hours ahead. Training runs in rounds
of ``--round-minutes`` per candidate, in turn, until each has had ``--minutes`` (the machine's noise hits all
alike; ``sbgc.train.score.train`` with ``time_limit`` resumes each from its checkpoint, so a killed comparison
continues where it stopped: rerun the same command). After every round the candidate's newest checkpoint is packed
(``sbgc.train.score.pack_state``: parameters, EMA, Adam moments, PRNG key, log) into ``--states``, a folder in git: a
fresh checkout (another machine, another session) unpacks them first and continues the same budget; commit the folder
to carry the comparison over. A round's compilation counts as its training time (the
persistent compilation cache keeps it to seconds). ``bench/results/mnist_candidates_cpu.json`` holds an earlier,
different comparison (network sizes, 10 minutes each, judged by a 32-time likelihood-weighted bound).

Each candidate's EMA parameters are then judged on the same images, the first ``--images`` of chapter 06's nested
sample of the MNIST test split (``sample_indices``, seed 0), by the estimator chapter 06 found converged
(``--weighting``, ``--times``: :class:`sbgc.method.scorers.Bound`), with a 95 % Clopper–Pearson interval; bits/dim
of p(x) by the exact ODE (dopri5, rtol 1e-3, one probe: the mean over images needs no more, chapter 02) on the
first ``--bpd-images``; and the seconds per image of both on this machine (a larger network makes every chapter
slower). Rows are written after every candidate; the judging goes through a results cache in
``<workdir>/judge-cache`` in blocks of 100 images, so a killed judging resumes where it stopped. The first row is
the shipped model itself (``mnist``, 15,000 steps, no training in this comparison), judged the same way: the book's
results cache holds its blocks (chapter 02 computes exactly these tables), so it is read from there when present.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbgc.cache import CacheError, ResultCache  # noqa: E402
from sbgc.data.datasets import describe, evaluation_split  # noqa: E402
from sbgc.experiments import evaluate as E  # noqa: E402
from sbgc.method.bound import BoundSettings  # noqa: E402
from sbgc.method.classify import log_marginal  # noqa: E402
from sbgc.method.likelihood import SolverSettings, bits_per_dim  # noqa: E402
from sbgc.method.scorers import Bound, Ode  # noqa: E402
from sbgc.stats import binomial_interval  # noqa: E402
from sbgc.train import loop  # noqa: E402
from sbgc.train import score as T  # noqa: E402
from sbgc.train.checkpoint import CheckpointStore  # noqa: E402
from sbgc.train.pretrained import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED_STATE = REPO / "checkpoints" / "training" / "sbgc_mnist_s_state.msgpack"  # the shipped model's run, step 15,000


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A training run: a profile with overrides, from scratch or from the shipped run's packed state."""

    name: str
    profile: str
    overrides: tuple[tuple[str, object], ...] = ()
    from_shipped: bool = False
    decay: bool = False  # cosine decay of the lr over --decay-steps from the start of this comparison
    what: str = ""


CANDIDATES = {c.name: c for c in (
    Candidate("continue_cosine", "mnist_s", from_shipped=True, decay=True,
              what="the shipped run (15,000 steps) continued, lr 1e-3 decayed by a cosine to 1e-5"),
    Candidate("continue_constant", "mnist_s", from_shipped=True,
              what="the shipped run (15,000 steps) continued at its constant lr 1e-3 (the control)"),
    Candidate("mnist_m", "mnist_m", what="the larger network (mnist_m) from scratch, likelihood weighting"),
    Candidate("uniform_weighting", "mnist_s", (("weighting", "sigma2"),),
              what="the shipped size from scratch with the uniform ε-MSE weighting (sigma2), not the paper's"),
    Candidate("scratch_s", "mnist_s",
              what="the shipped size and recipe from scratch (the control of the two from-scratch candidates)"),
)}  # fmt: skip


def config(c: Candidate, start_step: int, decay_steps: int) -> T.TrainConfig:
    extra = dict(c.overrides)
    if c.decay:
        extra.update(lr_decay_start=start_step, lr_decay_steps=decay_steps, lr_final=1e-5)
    return T.get_train_config(c.profile, **extra)


def train_round(c: Candidate, workdir: Path, seconds: float, decay_steps: int) -> dict:
    """Train ``c`` for ``seconds`` more (its first call unpacks the shipped state if it starts from it)."""
    start = 0
    if c.from_shipped:
        if not CheckpointStore(workdir / "checkpoints").steps():  # (the store's folder may exist, empty)
            T.unpack_state(SHIPPED_STATE, workdir)
        start = 15_000
    return T.train(config(c, start, decay_steps), 10**7, workdir, time_limit=seconds, progress=False)


def trained_here(c: Candidate, workdir: Path) -> float:
    """Seconds of training this comparison has given ``c`` so far, from its newest checkpoint (so a rerun after an
    interruption continues the budget, not restarts it): its train_seconds less the shipped state's, if it started
    from it."""
    store = CheckpointStore(workdir / "checkpoints")
    if not store.steps():
        return 0.0
    start = json.loads(SHIPPED_STATE.with_suffix(".msgpack.json").read_text())["train_seconds"] if c.from_shipped else 0.0
    return float(store.metadata(store.steps()[-1])["train_seconds"]) - start


def state_file(states: Path, c: Candidate) -> Path:
    return states / f"{c.name}_state.msgpack"


def unpack_newer(c: Candidate, workdir: Path, states: Path) -> int | None:
    """Unpack ``c``'s packed state into ``workdir`` when it is ahead of the workdir's newest checkpoint (a fresh
    checkout, or a run packed elsewhere); returns the unpacked step, or None when there is nothing newer."""
    packed = state_file(states, c)
    if not packed.is_file():
        return None
    steps = CheckpointStore(workdir / "checkpoints").steps()
    if steps and steps[-1] >= json.loads(packed.with_suffix(".msgpack.json").read_text())["step"]:
        return None
    return T.unpack_state(packed, workdir)


def exported(workdir: Path) -> tuple[Path, dict]:
    """The EMA parameters of the run's newest checkpoint as ``<workdir>/ema.msgpack`` (exported once per step, so
    a rerun judges the same file, whose sha256 keys the judging blocks) and their metadata."""
    path, step = workdir / "ema.msgpack", CheckpointStore(workdir / "checkpoints").steps()[-1]
    if path.is_file() and load_model(path).meta.get("step") == step:
        return path, load_model(path).meta
    return path, T.export_ema(workdir, path)


def judge(model_path: Path, split, n_images: int, bound: Bound, bpd_images: int, seed: int, cache: ResultCache) -> dict:
    """Accuracy of the converged estimator on the first ``n_images`` of the sample, bits/dim of p(x) by the exact ODE
    on the first ``bpd_images``, both through ``cache`` in blocks (an interrupted judging resumes)."""
    model = load_model(model_path)
    res = E.cached_score_table(cache, model, split, E.EvalSettings(bound, "mnist", n_images, seed, E.BOOK_BATCH))
    correct = int(np.sum(res.log_p.argmax(axis=1) == split.labels[res.indices]))
    ode = Ode(SolverSettings(rtol=1e-3, atol=1e-3), n_probes=1)
    lik = E.cached_score_table(cache, model, split, E.EvalSettings(ode, "mnist", bpd_images, seed, E.BOOK_BATCH))
    bpd = bits_per_dim(log_marginal(lik.log_p), int(np.prod(split.images.shape[1:])))
    return {"sha256": model.sha256, "n_params": model.meta.get("n_params"), "correct": correct, "n_images": n_images,
            "accuracy": correct / n_images, "interval95": list(binomial_interval(correct, n_images)),
            "estimator": bound.describe(), "estimator_seconds_per_image": res.seconds / n_images,
            "estimator_passes_per_image": float(res.nfe.mean()),
            "bpd_marginal_mean": float(np.mean(bpd)), "bpd_marginal_se": float(np.std(bpd, ddof=1) / np.sqrt(bpd_images)),
            "bpd_images": bpd_images, "ode": ode.describe(), "ode_seconds_per_image": lik.seconds / bpd_images}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--minutes", type=float, default=60.0, help="training CPU time per candidate")
    p.add_argument("--round-minutes", type=float, default=10.0, help="training per candidate per round")
    p.add_argument("--decay-steps", type=int, default=7_000, help="cosine length (~ the steps --minutes buys)")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--times", type=int, default=64, help="K of the converged estimator (chapter 06: uniform, K = 64)")
    p.add_argument("--weighting", default="uniform", choices=("uniform", "likelihood"))
    p.add_argument("--bpd-images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/mnist-candidates")
    p.add_argument("--states", default="checkpoints/candidates",
                   help="packed training states, one per candidate, written after every round (commit them)")
    p.add_argument("--out", default="bench/results/mnist_candidates_equal_time_cpu.json")
    a = p.parse_args(argv)
    cands = [CANDIDATES[n] for n in a.candidates]
    workdirs = {c.name: Path(a.workdir) / c.name for c in cands}
    states = Path(a.states)
    for c in cands:
        if (step := unpack_newer(c, workdirs[c.name], states)) is not None:
            print(f"[candidates] {c.name}: unpacked step {step} from {state_file(states, c)}", flush=True)
    trained = {c.name: trained_here(c, workdirs[c.name]) for c in cands}
    while any(trained[c.name] < a.minutes * 60 - 5 for c in cands):
        for c in cands:
            left = a.minutes * 60 - trained[c.name]
            if left < 5:
                continue
            meta = train_round(c, workdirs[c.name], min(a.round_minutes * 60, left), a.decay_steps)
            trained[c.name] = trained_here(c, workdirs[c.name])
            states.mkdir(parents=True, exist_ok=True)
            T.pack_state(workdirs[c.name], state_file(states, c))
            print(f"[candidates] {c.name}: step {meta['step']}, {trained[c.name] / 60:.1f} of {a.minutes} min",
                  flush=True)
    split = evaluation_split("mnist")
    bound = Bound(BoundSettings(n_times=a.times, weighting=a.weighting))
    cache = ResultCache(Path(a.workdir) / "judge-cache")  # blocks of 100 images: a killed judging resumes
    shipped = load_model("mnist")
    try:  # chapter 02's blocks of the same tables, in the book's cache
        judged = judge(shipped.path, split, a.images, bound, a.bpd_images, a.seed,
                       ResultCache(REPO / "results-cache", read_only=True))
    except CacheError:
        judged = judge(shipped.path, split, a.images, bound, a.bpd_images, a.seed, cache)
    rows = [{"candidate": "shipped", "what": "the shipped model (mnist): the reference point, not trained here",
             "profile": "mnist_s", "steps": shipped.meta["step"], "train_seconds_total": shipped.meta["train_seconds"],
             "train_seconds_this_comparison": 0.0, **judged}]  # fmt: skip
    for c in cands:
        model_path, meta = exported(workdirs[c.name])
        t0 = time.perf_counter()
        row = {"candidate": c.name, "what": c.what, "profile": c.profile, "steps": meta["step"],
               "train_seconds_total": meta["train_seconds"], "train_seconds_this_comparison": trained[c.name],
               **judge(model_path, split, a.images, bound, a.bpd_images, a.seed, cache)}  # fmt: skip
        row["judge_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
        out = {"what": "MNIST candidate score models: equal CPU time, converged accuracy, exact-ODE bits/dim, cost",
               "device": loop.device_name(), "jax_version": jax.__version__, "minutes_each": a.minutes,
               "data": f"{describe(split)}: the first {a.images} of sample_indices(seed={a.seed}); bits/dim on the first "
                       f"{a.bpd_images}", "command": "python bench/mnist_candidates.py " + " ".join(sys.argv[1:]),
               "rows": rows}  # fmt: skip
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")  # after every candidate
    print("| candidate | params | steps | accuracy (95 % CI) | bits/dim p(x) (± SE) | estimator s/image | ODE s/image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["interval95"]
        print(f"| {r['candidate']} | {r['n_params']:,} | {r['steps']:,} | {100 * r['accuracy']:.1f} % [{100 * lo:.1f}, "
              f"{100 * hi:.1f}] | {r['bpd_marginal_mean']:.3f} ± {r['bpd_marginal_se']:.3f} | "
              f"{r['estimator_seconds_per_image']:.2f} | {r['ode_seconds_per_image']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
