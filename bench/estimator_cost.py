"""What a classified image costs: the paper's procedure against ours, at equal accuracy, side by side in one run.

Three procedures classify the same test images with the same model on the same machine, in alternating rounds
(so all see the same load; the minimum over the timed rounds is reported). A first, untimed round compiles: the
paper's procedure there solves one draw instead of n (its host loop compiles the same vector field once either
way, and a full untimed round would double the bench's longest part):

* **paper**: scipy's RK45 on the host (``solve_ivp``, rtol = atol = 1e-5, ε = 1e-5), log p(x | y) the mean over n
  independent solves, each with fresh dequantization noise and one Rademacher probe (the paper's Table 1: n = 30;
  :func:`sbgc.checks.reference.class_log_likelihoods`, all rows of one draw solved jointly, the cheapest host-loop
  form, so the ratio is if anything in the paper's favour);
* **ODE**: ours, the probability-flow ODE in diffrax with m probes sharing one solve per (image, class)
  (:class:`sbgc.method.scorers.Ode`), at the probe count and tolerance chapter 06 found converged;
* **cheapest**: the cheapest estimator chapter 06 found within its tolerance of the reference accuracy
  (e.g. the uniform-weighted denoising score with K times, :class:`sbgc.method.scorers.Bound`; with
  ``--first-times K1 --keep k``, pruned: K1 times score every class, the k best get K further times,
  :class:`sbgc.method.scorers.Pruned`).

"Equal accuracy" is chapter 06's measurement on its sample (each setting's accuracy against the reference's);
this bench measures only the cost of each setting per image, and the decisions' agreement on its own images.
Network passes: scipy counts vector-field evaluations (``nfev``), each one forward pass and one
vector-Jacobian product (2 passes) per draw; ours count their own (:class:`sbgc.method.scorers.ClassScores`).

    python bench/estimator_cost.py --images 5 --ode-probes 30 --first-times 16 --keep 2 --times 32 \\
        --weighting uniform --out bench/results/estimator_cost_mnist_cpu.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_procedure import paper_procedure  # noqa: E402
from sbgc.data.datasets import describe, evaluation_split, sample_indices  # noqa: E402
from sbgc.method.bound import BoundSettings  # noqa: E402
from sbgc.method.likelihood import SolverSettings  # noqa: E402
from sbgc.method.scorers import Bound, Ode, Pruned  # noqa: E402
from sbgc.storage import write_json_atomic  # noqa: E402
from sbgc.train.pretrained import load_model  # noqa: E402


def paper(model, images, key, n_draws: int, rtol: float, eps: float):
    """(log p [B, C] mean over n independent scipy solves, network passes per image): bench/paper_procedure.py's."""
    settings = SolverSettings(solver="dopri5", rtol=rtol, atol=rtol, eps=eps)
    log_p, nfe, _ = paper_procedure(model, images, key, settings, n_draws)  # nfe [B, C] summed over the draws
    return log_p, 2.0 * nfe.sum(axis=1)  # a forward pass and a vector-Jacobian product per evaluation


def scorer_run(scorer, model, images, key):
    res = scorer.scores(model.score_fn, model.sde, images, key, n_classes=model.config.n_classes)
    return np.asarray(res.log_p, np.float64), np.asarray(res.passes, np.float64)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paper-draws", type=int, default=30, help="independent solves per class (the paper: 30)")
    ap.add_argument("--paper-rtol", type=float, default=1e-5)
    ap.add_argument("--ode-probes", type=int, required=True, help="ours: the converged probe count (chapter 06)")
    ap.add_argument("--ode-rtol", type=float, default=1e-3)
    ap.add_argument("--times", type=int, required=True, help="the cheapest estimator: K times (chapter 06)")
    ap.add_argument("--first-times", type=int, default=None, help="pruned: K1 times score every class first")
    ap.add_argument("--keep", type=int, default=2, help="pruned: the classes kept for the --times K further times")
    ap.add_argument("--weighting", default="uniform", choices=("uniform", "likelihood"))
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds after one compiling round")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if min(a.images, a.paper_draws, a.ode_probes, a.repeats, a.keep) < 1 or a.times < 2:
        ap.error("--images, --paper-draws, --ode-probes, --repeats, --keep must be >= 1 and --times >= 2")
    if a.first_times is not None and a.first_times < 2:
        ap.error(f"--first-times must be >= 2, got {a.first_times}")

    model, split = load_model(a.model), evaluation_split(a.data)
    idx = sample_indices(len(split), a.images, a.seed)  # the first images of chapter 06's nested sample
    images, labels = split.images[idx], split.labels[idx].astype(int)
    key = jax.random.PRNGKey(a.seed)
    ode = Ode(SolverSettings(rtol=a.ode_rtol, atol=a.ode_rtol), n_probes=a.ode_probes)
    cheap = Bound(BoundSettings(n_times=a.times, weighting=a.weighting))
    if a.first_times is not None:
        cheap = Pruned(Bound(BoundSettings(n_times=a.first_times, weighting=a.weighting)), cheap, keep=a.keep)
    procedures = {
        "paper": (f"scipy RK45 host loop, {a.paper_draws} independent solves per class, rtol = atol = {a.paper_rtol:g}",
                  lambda draws=a.paper_draws: paper(model, images, key, draws, a.paper_rtol, 1e-5)),
        "ode": (ode.describe(), lambda: scorer_run(ode, model, images, key)),
        "cheapest": (cheap.describe(), lambda: scorer_run(cheap, model, images, key)),
    }  # fmt: skip
    seconds = {name: [] for name in procedures}
    out = {}
    for round_ in range(a.repeats + 1):  # round 0 compiles (the paper's with one draw); each runs all three in turn
        for name, (_, run) in procedures.items():
            t0 = time.perf_counter()
            out[name] = run(draws=1) if (round_ == 0 and name == "paper") else run()
            seconds[name].append(time.perf_counter() - t0)
            print(f"[bench] round {round_} {name}: {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)

    rows = {}
    for name, (what, _) in procedures.items():
        log_p, passes = out[name]
        steady = min(seconds[name][1:])
        rows[name] = {"what": what, "seconds_per_image": steady / len(idx), "compiling_round_s": seconds[name][0],
                      "passes_per_image": float(passes.mean()), "correct": int(np.sum(log_p.argmax(1) == labels)),
                      "decisions": log_p.argmax(1).tolist()}  # fmt: skip
    p = rows["paper"]
    for name in ("ode", "cheapest"):
        r = rows[name]
        r["wall_time_ratio_paper_over_this"] = p["seconds_per_image"] / r["seconds_per_image"]
        r["passes_ratio_paper_over_this"] = p["passes_per_image"] / r["passes_per_image"]
        r["agreement_with_paper"] = float(np.mean(np.array(r["decisions"]) == np.array(p["decisions"])))
    record = {"model": model.describe(), "sha256": model.sha256, "data": describe(split), "image_indices": idx.tolist(),
              "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}", "jax": jax.__version__,
              "machine": platform.machine(), "repeats": a.repeats, "procedures": rows,
              "goal": ">= 100x fewer network passes and >= 100x less wall time than the paper's procedure"}  # fmt: skip
    print(f"\n{record['device']}, jax {record['jax']}; {model.describe()}; {len(idx)} {a.data} test image(s)\n")
    print("| procedure | seconds per image | network passes per image | correct | paper / this: time | paper / this: passes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        ratio = lambda k: f"{r[k]:.1f}×" if k in r else "1"
        print(f"| {name}: {r['what']} | {r['seconds_per_image']:.2f} | {r['passes_per_image']:,.0f} | "
              f"{r['correct']}/{len(idx)} | {ratio('wall_time_ratio_paper_over_this')} | {ratio('passes_ratio_paper_over_this')} |")
    if a.out:
        write_json_atomic(Path(a.out), record)
        print(f"wrote {a.out}")
    return record


if __name__ == "__main__":
    main()
