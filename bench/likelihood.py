"""Benchmark of the probability-flow likelihood and the generative classifier.

Measures, on one machine and in one run:

* full classification (every class × n probes) of N images with the diffrax solver, shared
  trajectory: images/s, mean network evaluations (NFE) per (image, class), mean bits/dim;
* the same with n independent solves per row (the paper's scheme): time ratio to shared;
* the score_sde-style scipy RK45 reference (one probe, as score_sde): time ratio to diffrax with
  the same single probe;
* the input gradient PGD takes on one image: the attack's own function and objective
  (``sbgc.experiments.adversarial``: the cross-entropy direction over the class log-likelihoods,
  ``jax.grad`` through the diffrax solves, RecursiveCheckpointAdjoint);
* peak device memory where the backend reports it (CPU: null).

Each classification is run twice: ``first_s`` includes compilation, ``steady_s`` does not. The
gradient is compiled ahead of time (``compile_s``) and run once (``run_s``).

    python bench/likelihood.py --profile ci --images 1 --n-probes 1 --rtol 1e-3 \\
        --out results/bench_likelihood.json

Without ``--checkpoint`` the untrained network is used, with its near-zero-initialised output
kernels re-drawn (``--raw-init`` keeps them): an untrained U-Net's score is ≈ 0, which would make
the ODE trivially easy and the timings meaningless.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbgc.checks import reference  # noqa: E402
from sbgc.method import networks as models
from sbgc.method.classify import class_log_likelihoods  # noqa: E402
from sbgc.method.likelihood import SolverSettings, to_unit_interval  # noqa: E402
from sbgc.method.sde import SDE  # noqa: E402


def wake_up(params, key, scale: float = 0.3):
    """Re-draw near-zero kernels (max |w| < 1e-3) as fan-avg normals × ``scale``."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    out = []
    for a, k in zip(leaves, jax.random.split(key, len(leaves))):
        if a.ndim >= 2 and float(jnp.abs(a).max()) < 1e-3:
            fan_avg = 0.5 * int(np.prod(a.shape[:-2])) * (a.shape[-2] + a.shape[-1])
            a = scale * jax.random.normal(k, a.shape, a.dtype) / np.sqrt(fan_avg)
        out.append(a)
    return jax.tree_util.tree_unflatten(tree, out)


def load_images(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first n exact-pixel CIFAR-10 test images, else random uint8 images (labelled so)."""
    try:
        from sbgc.data.cifar10 import load_exact_test_head

        head = load_exact_test_head()
        if head.images.shape[1] == image_size and len(head.images) >= n:
            return np.asarray(head.images[:n]), np.asarray(head.labels[:n]), f"cifar10 {head.source}"
    except (FileNotFoundError, ImportError, ValueError) as err:
        print(f"[bench] CIFAR-10 not available ({err}); using random images", file=sys.stderr)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, n).astype(np.int32), "random uint8"


def timed(fn, repeats: int = 2):
    """Run ``fn`` ``repeats`` times: (last result, first wall time, last wall time)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return out, times[0], times[-1]


def summarize(res, first: float, steady: float, labels: np.ndarray, probes: int) -> dict:
    """The report entry of one timed classification of B images (``res``: a
    :class:`~sbgc.method.classify.ClassLikelihoods` [B, K]; ``labels`` int [B]; ``first`` and
    ``steady`` wall seconds of the first and the last run): seconds, images/s of the steady run,
    probes, mean NFE per (image, class), mean bits/dim, accuracy."""
    return {
        "first_s": first, "steady_s": steady, "images_per_s": len(labels) / steady,
        "probes": probes, "mean_nfe": float(np.mean(res.nfe)), "mean_bpd": float(np.mean(res.bpd)),
        "accuracy": float(np.mean(res.predict() == labels)),
    }  # fmt: skip


def peak_memory() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=sorted(models.PROFILES), default="ci")
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--n-probes", type=int, default=30)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=None, help="default: rtol")
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--solver", default="dopri5")
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--checkpoint", default=None, help="parameter file for sbgc.train.checkpoint.load_params")
    p.add_argument("--raw-init", action="store_true", help="keep the untrained near-zero output kernels")
    p.add_argument("--skip-grad", action="store_true")
    p.add_argument("--grad-classes", type=int, default=None,
                   help="classes in the gradient benchmark (default: all; on CPU each costs minutes)")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-independent", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench_likelihood.json")
    args = p.parse_args(argv)
    args.atol = args.rtol if args.atol is None else args.atol
    if args.images < 1 or args.n_probes < 1:
        p.error(f"--images and --n-probes must be >= 1, got {args.images}, {args.n_probes}")
    return args


def load_parameters(args, config) -> tuple[dict, str]:
    """(parameters, where they come from): ``--checkpoint``, else the initialisation (woken up
    unless ``--raw-init``)."""
    if args.checkpoint:
        from sbgc.train.checkpoint import load_params

        params, meta = load_params(args.checkpoint)
        return params, f"checkpoint {args.checkpoint} (sha256 {meta.get('sha256', '?')[:12]})"
    params = models.init_params(config, jax.random.key(args.seed))
    if args.raw_init:
        return params, "untrained"
    return wake_up(params, jax.random.key(args.seed + 1)), "untrained, near-zero output kernels re-drawn at scale 0.3"


def bench_classification(report: dict, rows: list, score_fn, sde, images, labels, key, settings: SolverSettings,
                         n_classes: int, args) -> None:
    """The timed classifications (shared trajectory; independent solves; the scipy reference with
    one probe) into ``report`` and ``rows``, with their ratios."""

    def record(name, res, first, steady, probes):
        entry = summarize(res, first, steady, labels, probes)
        report[name] = entry
        rows.append((name, entry))
        print(f"[bench] {name}: first {first:.1f} s, steady {steady:.1f} s", file=sys.stderr, flush=True)
        return entry

    ode = dict(solver=settings, progress=False, chunk_size=args.chunk_size)
    run = lambda **kw: class_log_likelihoods(score_fn, sde, images, key, n_classes=n_classes, **kw)  # noqa: E731
    res, first, steady = timed(lambda: run(n_probes=args.n_probes, **ode))
    shared = record("shared", res, first, steady, args.n_probes)
    if not args.skip_independent:
        independent = dict(ode, solver=dataclasses.replace(settings, shared_trajectory=False))
        res, first, steady = timed(lambda: run(n_probes=args.n_probes, **independent))
        record("independent", res, first, steady, args.n_probes)
        report["ratio_independent_over_shared"] = report["independent"]["steady_s"] / shared["steady_s"]
    if not args.skip_reference:
        # Paired comparison with ONE probe: the reference draws the same noise and probe.
        if args.n_probes == 1:
            one = shared
        else:
            res, first, steady = timed(lambda: run(n_probes=1, **ode))
            one = record("shared_1probe", res, first, steady, 1)
        ref_run = lambda: reference.class_log_likelihoods(score_fn, sde, images, key, n_classes=n_classes,  # noqa: E731
                                                          solver=settings, progress=False)  # fmt: skip
        ref, first, steady = timed(ref_run)
        record("scipy_reference", ref, first, steady, 1)
        report["ratio_reference_over_diffrax"] = steady / one["steady_s"]


def bench_input_gradient(score_fn, sde, image, label: int, key, settings: SolverSettings, n_classes: int,
                         n_probes: int) -> dict:
    """Compile and run once the input gradient PGD takes on one image [1, *shape]: the attack's own
    function (:func:`sbgc.experiments.adversarial.sbgc_logits_fn`, highest matmul precision) and
    objective (:func:`~sbgc.experiments.adversarial.pgd_surrogate`, cross-entropy direction) over
    the first ``n_classes`` classes."""
    from types import SimpleNamespace

    from sbgc.experiments import adversarial as attacks

    x_unit = to_unit_interval(image, key, True)  # dequantized once, as PGD's input
    config = attacks.SBGCLogitsConfig(n_probes=n_probes, solver=settings, n_classes=n_classes)
    probes = attacks.draw_attack_probes(jax.random.fold_in(key, 1), 1, n_probes, tuple(x_unit.shape[1:]))
    fn = attacks.sbgc_logits_fn(SimpleNamespace(score_fn=score_fn, sde=sde), probes, config)
    target = (jnp.asarray([label if label < n_classes else 0], jnp.int32), jnp.asarray(False))
    t = time.perf_counter()
    compiled = fn.value_and_grad(attacks.pgd_surrogate).lower(x_unit, target).compile()  # ahead of time, then once
    compile_s = time.perf_counter() - t
    (_, g, ok), _, run_s = timed(lambda: compiled(x_unit, target), repeats=1)
    print(f"[bench] input gradient: compile {compile_s:.1f} s, run {run_s:.1f} s", file=sys.stderr, flush=True)
    return {"compile_s": compile_s, "run_s": run_s, "solves_ok": bool(np.all(ok)), "grad_norm": float(jnp.linalg.norm(g)),
            "classes": n_classes, "probes": n_probes, "function": config.describe()}  # fmt: skip


def print_table(report: dict, rows: list, args) -> None:
    s = report["settings"]
    print(f"\n{report['device']} ({report['platform']}), jax {report['jax']}, diffrax {report['diffrax']}")
    print(f"{args.profile} U-Net ({s['params']}), {args.images} image(s) from {s['image_source']}, "
          f"{s['n_classes']} classes, rtol={args.rtol} atol={args.atol}, {args.solver}")  # fmt: skip
    print(f"{'run':18s} {'probes':>6s} {'first s':>9s} {'steady s':>9s} {'img/s':>9s} {'mean NFE':>9s} {'bpd':>8s}")
    for name, e in rows:
        print(f"{name:18s} {e['probes']:6d} {e['first_s']:9.2f} {e['steady_s']:9.2f} "
              f"{e['images_per_s']:9.4f} {e['mean_nfe']:9.1f} {e['mean_bpd']:8.3f}")  # fmt: skip
    for k in ("ratio_independent_over_shared", "ratio_reference_over_diffrax"):
        if k in report:
            print(f"{k}: {report[k]:.2f}")
    if "input_gradient" in report:
        gr = report["input_gradient"]
        print(f"input gradient of the cross-entropy over {gr['classes']} class log-likelihoods "
              f"({gr['probes']} probe(s), 1 image): compile {gr['compile_s']:.1f} s, run {gr['run_s']:.1f} s")  # fmt: skip
    print(f"peak device memory: {report['peak_device_memory_bytes']}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    sde = SDE("subvp")
    config = models.get_config(args.profile)
    params, params_origin = load_parameters(args, config)
    score_fn = functools.partial(models.make_score_fn(config, sde), params)
    images, labels, source = load_images(args.images, config.image_size, args.seed)
    key = jax.random.key(args.seed + 2)
    settings = SolverSettings(solver=args.solver, rtol=args.rtol, atol=args.atol, eps=args.eps)
    n_classes = config.n_classes
    report: dict = {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.devices()[0].platform,
        "host": platform.node(),
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "settings": {
            "profile": args.profile, "params": params_origin, "n_params": models.count_params(params),
            "images": args.images, "image_source": source, "n_classes": n_classes,
            "n_probes": args.n_probes, "rtol": args.rtol, "atol": args.atol, "eps": args.eps,
            "solver": args.solver, "chunk_size": args.chunk_size, "error_norm": "split",
            "dequantize": True, "data_scaling": "centered",
        },
    }  # fmt: skip
    rows: list = []
    bench_classification(report, rows, score_fn, sde, images, labels, key, settings, n_classes, args)
    if not args.skip_grad:
        k_grad = n_classes if args.grad_classes is None else min(max(args.grad_classes, 1), n_classes)
        report["input_gradient"] = bench_input_gradient(score_fn, sde, images[:1], int(labels[0]), key, settings,
                                                        k_grad, args.n_probes)  # fmt: skip
    report["peak_device_memory_bytes"] = peak_memory()
    print_table(report, rows, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
