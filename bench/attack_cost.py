"""What one PGD step on the SBGC costs, and which solver settings classify like the exact ODE.

Measures in one run, on one image at a time (the per-image attack of ``sbgc.experiments.pgd``):

* seconds of the forward pass over all K classes, of the input gradient through all K classes
  (the cross-entropy's direction) and through the true and runner-up classes only (the margin's
  pair), per solver setting; ratios side by side;
* for fixed-step settings, diffrax's while loop versus the same steps unrolled (``unroll=True``);
* the clean decisions of every setting on ``--images`` test images against the reference setting
  (dopri5, rtol = atol = 1e-3, one probe: Table 1's classifier): accuracy, agreement, |Δ log p|;
* the same for the variational-bound classifier of the same model (K times per image and class,
  fixed per image; :func:`sbgc.experiments.pgd.bound_attack_model`), whose |Δ log p| to the ODE is
  the bound's gap, not a solver error.

    python bench/attack_cost.py --checkpoint checkpoints/sbgc_mnist_cpu.msgpack --images 40 \\
        --out bench/results/attack_cost_mnist_cpu.json

Writes JSON and prints a markdown table. Timings are the minimum of ``--repeats`` calls after one
compiling call.
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

from sbgc.data.datasets import evaluation_split  # noqa: E402
from sbgc.storage import write_json_atomic  # noqa: E402
from sbgc.experiments import pgd  # noqa: E402
from sbgc.experiments.adversarial import SBGCLogitsConfig, draw_attack_probes, image_shape  # noqa: E402
from sbgc.method.bound import BoundSettings  # noqa: E402
from sbgc.method.likelihood import SolverSettings, to_unit_interval  # noqa: E402
from sbgc.report import markdown_table  # noqa: E402
from sbgc.train.pretrained import load_model  # noqa: E402

SETTINGS = {
    "dopri5 rtol=atol=1e-3 (reference)": SolverSettings(rtol=1e-3, atol=1e-3),
    "dopri5 rtol=atol=1e-2": SolverSettings(rtol=1e-2, atol=1e-2),
    "heun 8 equal steps": SolverSettings(solver="heun", n_steps=8),
    "heun 8 equal steps, unrolled": SolverSettings(solver="heun", n_steps=8, unroll=True),
    "heun 32 log-t steps": SolverSettings(solver="heun", n_steps=32, step_grid="log"),
    "bound K=100 stratified": BoundSettings(n_times=100),
    "bound K=30 stratified": BoundSettings(n_times=30),
}


def best_of(fn, repeats: int) -> float:
    fn()  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/sbgc_mnist_cpu.msgpack")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--images", type=int, default=40, help="test images for the decision comparison")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="names of SETTINGS to run (default: all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    model = load_model(args.checkpoint)
    split = evaluation_split(args.data)
    idx = np.random.default_rng(5).permutation(len(split))[: args.images]
    x = np.asarray(to_unit_interval(split.images[idx], jax.random.key(1), True))
    y = split.labels[idx].astype(int)
    probes = draw_attack_probes(jax.random.key(0), len(idx), 1, image_shape(model))
    names = args.only or list(SETTINGS)
    record = {"checkpoint": str(args.checkpoint), "sha256": model.sha256, "data": args.data, "n_images": len(idx),
              "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}", "jax": jax.__version__,
              "machine": platform.machine(), "settings": {}}
    ref_logits = None
    rows = []
    for name in names:
        solver = SETTINGS[name]
        if isinstance(solver, BoundSettings):  # one image per call: B·10·(K + 1) network passes in one batch
            am, batch = pgd.bound_attack_model(model, jax.random.key(2), len(idx), solver), 1
        else:
            am, batch = pgd.sbgc_attack_model(model, probes, SBGCLogitsConfig(n_probes=1, solver=solver)), 10
        forward = jax.jit(am.logits_and_ok)
        t0 = time.perf_counter()
        logits = np.concatenate([np.asarray(forward(x[i : i + batch], am.aux[i : i + batch])[0])
                                 for i in range(0, len(idx), batch)])  # fmt: skip
        classify_s = time.perf_counter() - t0
        if ref_logits is None:
            ref_logits = logits
        clean = am.logits(x[0], 0)
        t_fwd = best_of(lambda: am.logits(x[1], 1), args.repeats)
        t_pair = best_of(lambda: am.gradient(x[1], 1, int(y[1]), clean, "margin"), args.repeats)
        t_all = best_of(lambda: am.gradient(x[1], 1, int(y[1]), clean, "cross_entropy"), args.repeats)
        diff = np.abs(logits - ref_logits)
        entry = {"solver": repr(solver), "forward_all_classes_s": t_fwd, "gradient_all_classes_s": t_all,
                 "gradient_margin_pair_s": t_pair, "pair_over_all": t_pair / t_all,
                 "margin_step_s": t_fwd + t_pair, "cross_entropy_step_s": t_fwd + t_all,
                 "accuracy": float(np.mean(logits.argmax(1) == y)),
                 "agreement_with_reference": float(np.mean(logits.argmax(1) == ref_logits.argmax(1))),
                 "median_abs_dlogp_vs_reference": float(np.median(diff)), "max_abs_dlogp_vs_reference": float(diff.max()),
                 "classify_seconds_incl_compile": classify_s}  # fmt: skip
        record["settings"][name] = entry
        rows.append((name, f"{100 * entry['accuracy']:.1f}", f"{100 * entry['agreement_with_reference']:.1f}",
                     f"{entry['median_abs_dlogp_vs_reference']:.1f}", f"{t_fwd:.2f}", f"{t_all:.2f}", f"{t_pair:.2f}",
                     f"{entry['pair_over_all']:.2f}", f"{t_fwd + t_pair:.2f}"))  # fmt: skip
        print(rows[-1], flush=True)
        if args.out:
            write_json_atomic(Path(args.out), record)
    table = markdown_table(("classifier (ODE: 1 probe)", "clean acc. %", "agrees with ref. %", "median |Δ log p| nats",
                            "forward, 10 classes [s]", "gradient, 10 classes [s]", "gradient, margin pair [s]",
                            "pair / all", "margin step [s]"), rows)  # fmt: skip
    record["table"] = table
    print(table)
    if args.out:
        write_json_atomic(Path(args.out), record)
    return record


if __name__ == "__main__":
    main()
