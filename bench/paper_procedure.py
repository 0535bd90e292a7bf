"""Our generative classifier versus the paper's procedure, at the paper's settings, in one run.

The paper classifies with scipy's RK45 on the host (``solve_ivp``, rtol = atol = 1e-5, ε = 1e-5)
and averages log p(x | y) over n = 30 independent draws, each a solve of its own with fresh
dequantization noise and a fresh Rademacher probe (as yang-song/score_sde's evaluation loop
repeats its likelihood computation). Ours solves each (image, class) row once in diffrax, its n
probes sharing the trajectory (:func:`sbgc.method.classify.class_log_likelihoods`).

Measured side by side on the same images, model and machine (``--repeats`` alternating rounds,
so both see the same load; the minimum of each is reported, after one compiling call each):

* images/s of each procedure and their ratio (the goal: ours ≥ 3× on 2 CPU cores);
* mean NFE per (image, class) (scipy: ``nfev`` of the joint solve the row was in, per draw);
* mean bits/dim of the true class and the decisions: accuracy, agreement of the two, and the
  largest |Δ mean bits/dim| per image (the two are different Monte-Carlo estimates of the same
  number; with n = 30 they should agree to ~0.01 bits/dim).

The reference solves all B·K rows of one draw jointly (score_sde solves a batch as one state
vector, RMS error over all of it): the cheapest host-loop form of the paper's procedure, so the
ratio is, if anything, in the reference's favour.

    python bench/paper_procedure.py --images 3 --out bench/results/paper_procedure_mnist_cpu.json
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

from sbgc.checks import reference  # noqa: E402
from sbgc.data.datasets import describe, evaluation_split  # noqa: E402
from sbgc.method.classify import class_log_likelihoods  # noqa: E402
from sbgc.method.likelihood import SolverSettings, bits_per_dim as bpd  # noqa: E402
from sbgc.storage import write_json_atomic  # noqa: E402
from sbgc.train.pretrained import load_model  # noqa: E402


def ours(model, images, key, settings: SolverSettings, n_probes: int, chunk_size: int):
    """log p(x | y) [B, K], NFE [B, K] of our classifier: n probes sharing one solve per row."""
    res = class_log_likelihoods(model.score_fn, model.sde, images, key, n_classes=model.config.n_classes,
                                n_probes=n_probes, solver=settings, chunk_size=chunk_size, progress=False)  # fmt: skip
    return np.asarray(res.log_p, np.float64), np.asarray(res.nfe, np.float64), res.dim


def paper_procedure(model, images, key, settings: SolverSettings, n_draws: int):
    """The paper's estimate: the mean over n independent scipy RK45 solves (draw j: key folded with
    j, so fresh dequantization noise and probe). log p [B, K] (mean over draws), NFE [B, K] (sum)."""
    runs = [reference.class_log_likelihoods(model.score_fn, model.sde, images, jax.random.fold_in(key, j),
                                            n_classes=model.config.n_classes, solver=settings, progress=False)
            for j in range(n_draws)]  # fmt: skip
    log_p = np.mean([np.asarray(r.log_p, np.float64) for r in runs], axis=0)
    return log_p, np.sum([np.asarray(r.nfe, np.float64) for r in runs], axis=0), runs[0].dim


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/sbgc_mnist_cpu.msgpack")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--n", type=int, default=30, help="probes (ours) and independent draws (the paper's)")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--chunk-size", type=int, default=10, help="rows of ours solved together")
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds (each runs both), after one compiling round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.images < 1 or args.n < 1 or args.repeats < 1:
        ap.error(f"--images, --n and --repeats must be >= 1, got {args.images}, {args.n}, {args.repeats}")

    model = load_model(args.checkpoint)
    split = evaluation_split(args.data)
    idx = np.random.default_rng(args.seed).permutation(len(split))[: args.images]
    images, labels = split.images[idx], split.labels[idx].astype(int)
    settings = SolverSettings(solver="dopri5", rtol=args.rtol, atol=args.rtol, eps=args.eps)
    key = jax.random.key(args.seed)
    procedures = {
        "ours (diffrax dopri5, n probes share one solve per row)":
            lambda: ours(model, images, key, settings, args.n, args.chunk_size),
        "paper (scipy RK45 host loop, n independent solves)":
            lambda: paper_procedure(model, images, key, settings, args.n),
    }  # fmt: skip
    seconds = {name: [] for name in procedures}
    out = {}
    for round_ in range(args.repeats + 1):  # round 0 compiles; the rounds alternate the two procedures
        for name, run in procedures.items():
            t0 = time.perf_counter()
            out[name] = run()
            seconds[name].append(time.perf_counter() - t0)
            print(f"[bench] round {round_} {name}: {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)

    rows, report = [], {}
    for name, (log_p, nfe, dim) in out.items():
        steady = min(seconds[name][1:])
        b = bpd(log_p, dim)
        report[name] = {"first_s": seconds[name][0], "steady_s": steady, "images_per_s": len(idx) / steady,
                        "mean_nfe_per_row": float(nfe.mean()), "mean_bpd_true_class": float(b[np.arange(len(idx)), labels].mean()),
                        "accuracy": float(np.mean(log_p.argmax(1) == labels)), "log_p": log_p.tolist()}  # fmt: skip
        rows.append((name, report[name]))
    (name_o, o), (name_p, p) = rows
    lp_o, lp_p = np.asarray(o["log_p"]), np.asarray(p["log_p"])
    dim = out[name_o][2]
    record = {
        "checkpoint": args.checkpoint, "sha256": model.sha256, "data": describe(split), "image_indices": idx.tolist(),
        "n": args.n, "solver": repr(settings), "chunk_size": args.chunk_size, "repeats": args.repeats,
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}", "jax": jax.__version__,
        "machine": platform.machine(), "procedures": report,
        "speedup_ours_over_paper": p["steady_s"] / o["steady_s"],
        "decision_agreement": float(np.mean(lp_o.argmax(1) == lp_p.argmax(1))),
        "max_abs_delta_bpd_true_class": float(np.abs(bpd(lp_o, dim) - bpd(lp_p, dim))[np.arange(len(idx)), labels].max()),
        "max_abs_delta_bpd_any_class": float(np.abs(bpd(lp_o, dim) - bpd(lp_p, dim)).max()),
    }  # fmt: skip
    print(f"\n{record['device']}, jax {record['jax']}; {model.describe()}; {len(idx)} {args.data} test image(s); "
          f"n = {args.n}, rtol = atol = {args.rtol:g}, ε = {args.eps:g}\n")
    print("| procedure | steady s | images/s | mean NFE per (image, class) | mean bits/dim (true class) | accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, e in rows:
        print(f"| {name} | {e['steady_s']:.1f} | {e['images_per_s']:.4f} | {e['mean_nfe_per_row']:.0f} | "
              f"{e['mean_bpd_true_class']:.4f} | {e['accuracy']:.2f} |")
    print(f"\nours / paper images/s: **{record['speedup_ours_over_paper']:.2f}×**; decisions agree on "
          f"{record['decision_agreement']:.0%}; max |Δ bits/dim|: true class {record['max_abs_delta_bpd_true_class']:.4f}, "
          f"any class {record['max_abs_delta_bpd_any_class']:.4f}")
    if args.out:
        write_json_atomic(Path(args.out), record)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
