"""Our GroupNorm (per-channel moments, then group means) against flax.linen.GroupNorm (grouped reshape)
inside the shipped MNIST score model, side by side in one process, alternating rounds:

* one forward-mode JVP of the score network on a batch of 20 (what every ODE step evaluates);
* classification of 2 MNIST test images over 10 classes (dopri5, rtol = atol = 1e-3, 1 probe).

The two networks have the same parameters; the table gives medians and the ratio flax / ours, and
the largest difference of the class log-likelihoods. Why the rewrite exists: ``sbgc.method.networks.GroupNorm``.

    python bench/group_norm.py [--rounds 3] [--out bench/results/group_norm_mnist_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sbgc.data.mnist import load_mnist
from sbgc.method import networks as N
from sbgc.method.classify import class_log_likelihoods
from sbgc.method.likelihood import SolverSettings
from sbgc.train.pretrained import load_model

MODEL = "checkpoints/sbgc_mnist_cpu.msgpack"


def flax_group_norm(channels: int, dtype) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(channels, min(channels // 4, 32)), epsilon=1e-6, dtype=dtype)


def variant(use_flax: bool):
    """(jvp on a batch of 20, classify 2 images) of the shipped model, traced and compiled with the
    chosen GroupNorm (the module factory is read when the network is traced)."""
    model = load_model(MODEL)
    x_img = load_mnist("test").images[:2]
    xm = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (20, 28, 28, 1)), jnp.float32)
    t, y = jnp.full((20,), 0.5), jnp.arange(20, dtype=jnp.int32) % 10
    jvp = jax.jit(lambda x: jax.jvp(lambda z: model.score_fn(z, t, y), (x,), (jnp.ones_like(x),)))
    classify = lambda: class_log_likelihoods(model.score_fn, model.sde, x_img, jax.random.key(0), n_classes=10,  # noqa: E731
                                             n_probes=1, solver=SolverSettings(rtol=1e-3, atol=1e-3), progress=False)
    original = N._group_norm
    if use_flax:
        N._group_norm = flax_group_norm
    try:  # trace and compile now, under the chosen factory
        jax.block_until_ready(jvp(xm))
        log_p = classify().log_p
    finally:
        N._group_norm = original
    return (lambda: jax.block_until_ready(jvp(xm))), classify, log_p


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench/results/group_norm_mnist_cpu.json")
    a = p.parse_args(argv)
    runs = {"ours": variant(False), "flax": variant(True)}
    times = {name: {"jvp_s": [], "classify_s": []} for name in runs}
    for _ in range(a.rounds):  # alternating, so drifts of a shared machine hit both alike
        for name, (jvp, classify, _) in runs.items():
            times[name]["jvp_s"].append(statistics.median(seconds(jvp) for _ in range(5)))
            times[name]["classify_s"].append(seconds(classify))
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    report = {
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind} ({jax.default_backend()})",
        "host": platform.node(), "jax": jax.__version__, "model": MODEL, "rounds": a.rounds, "times": times,
        "median": med, "ratio_flax_over_ours": {k: med["flax"][k] / med["ours"][k] for k in med["ours"]},
        "max_abs_delta_log_p_nats": float(np.abs(runs["ours"][2] - runs["flax"][2]).max()),
        "mean_abs_log_p_nats": float(np.abs(runs["ours"][2]).mean()),
    }  # fmt: skip
    print(f"{report['device']}, jax {report['jax']}, {MODEL}, {a.rounds} alternating rounds")
    print("| GroupNorm | JVP, batch 20 [ms] | classify 2 images × 10 classes [s] |")
    print("|---|---|---|")
    for n in runs:
        print(f"| {n} | {1e3 * med[n]['jvp_s']:.1f} | {med[n]['classify_s']:.2f} |")
    r = report["ratio_flax_over_ours"]
    print(f"flax / ours: JVP {r['jvp_s']:.2f}x, classify {r['classify_s']:.2f}x; "
          f"max |Δ log p| {report['max_abs_delta_log_p_nats']:.3f} nats of |log p| ≈ {report['mean_abs_log_p_nats']:.0f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
