"""Benchmark of the SBGC's input gradient, as one PGD step needs it (paper §3.3).

For ONE image and all K = 10 classes (one probability-flow solve per class, n fixed Rademacher
probes shared by the classes), measures on one machine:

* the forward pass (10 class log-likelihoods): compile time, run time, network evaluations (NFE)
  per class solve;
* the forward + backward pass of Foolbox's PGD loss (softmax cross-entropy over the class
  log-likelihoods, ``jax.grad`` through the solves): compile time and run time, i.e. the cost of
  one PGD step;
* peak device memory where the backend reports it (``device.memory_stats()``; CPU: n/a);
* the exact gradient of a fixed random linear functional of the 10 logits (the whole Jacobian that
  the PGD loss's gradient is made of) against central finite differences along random unit
  directions (relative errors);
* ``--adjoint-study``: RecursiveCheckpointAdjoint vs BacksolveAdjoint against the same finite
  differences, on the shipped network and on an untrained one (gradient norms, relative
  difference of the two gradients, relative errors along the directions).

Defaults are the paper's settings (n = 10 probes, dopri5, rtol = atol = 1e-5, ε = 1e-5), under which
one forward and backward pass took ~90 min on a V100. On a CPU choose a cheap setting::

    python bench/attack_gradient.py --checkpoint ci --n-probes 1 --solver heun --n-steps 8 \\
        --out bench/results/attack_gradient_ci_cpu.json

``--checkpoint`` is a shipped model name (``ci``), a parameter file, or ``none`` for an untrained
network of ``--profile`` with its near-zero output kernels re-drawn (an untrained U-Net's score is
≈ 0 otherwise, which makes the ODE trivially easy).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbgc.experiments import adversarial as attacks
from sbgc.method import networks as models  # noqa: E402
from sbgc.method.classify import log_marginal  # noqa: E402
from sbgc.method.likelihood import SolverSettings, bits_per_dim, solve_rows, to_model_space, to_unit_interval  # noqa: E402
from sbgc.method.sde import SDE  # noqa: E402


def _bench_likelihood():
    """bench/likelihood.py as a module (its image loader and ``wake_up``)."""
    spec = importlib.util.spec_from_file_location("bench_likelihood", ROOT / "bench" / "likelihood.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Model:
    """score_fn, sde and a provenance line (the fields :func:`sbgc.experiments.adversarial.sbgc_logits_fn` reads)."""

    def __init__(self, score_fn, sde, origin: str, n_params: int, profile: str):
        self.score_fn, self.sde, self.origin, self.n_params, self.profile = score_fn, sde, origin, n_params, profile


def load(checkpoint: str, profile: str, seed: int, overrides: dict | None = None) -> Model:
    """The shipped/filed network (``checkpoint``) or an untrained ``profile`` network (``none``),
    its ModelConfig fields replaced by ``overrides`` (untrained networks only)."""
    if checkpoint != "none":
        if overrides:
            raise ValueError(f"overrides {overrides} apply to an untrained network (checkpoint 'none'), not to {checkpoint!r}")
        from sbgc.train.pretrained import load_model

        m = load_model(checkpoint)
        return Model(m.score_fn, m.sde, f"{m.describe()}", models.count_params(m.params), m.meta.get("profile", "?"))
    sde = SDE("subvp")
    config = models.get_config(profile, **(overrides or {}))
    # A raw PRNGKey draws exactly what jax.random.key(seed) draws, and shares the compiled
    # init_params of training (sbgc.train.score.init_state), which is called with raw keys.
    params = _bench_likelihood().wake_up(models.init_params(config, jax.random.PRNGKey(seed)), jax.random.key(seed + 1))
    score_fn = functools.partial(models.make_score_fn(config, sde), params)
    changed = f" with {overrides}" if overrides else ""
    origin = f"untrained {profile} network{changed}, near-zero output kernels re-drawn at scale 0.3 (seed {seed})"
    return Model(score_fn, sde, origin, models.count_params(params), profile)


def _cache_files(path: str | None) -> int | None:
    """Number of entries in the persistent compilation cache (0: every compile is cold)."""
    return None if not path else (len(list(Path(path).iterdir())) if Path(path).is_dir() else 0)


def peak_memory() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def timed(fn, repeats: int):
    """(last result, [wall seconds of each call])."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return out, times


def nfe_per_class(model: Model, x_unit, probes, config: attacks.SBGCLogitsConfig) -> list[int]:
    """Network evaluations of each class's forward solve (solver steps × stages, rejected included)."""
    k = config.n_classes
    rows_x = jnp.repeat(to_model_space(x_unit, config.data_scaling), k, axis=0)
    rows_p = jnp.repeat(probes, k, axis=0)
    settings = config.solver
    solve = jax.jit(lambda xx, yy, pp: solve_rows(model.score_fn, model.sde, xx, yy, pp, settings).num_steps)
    steps = solve(rows_x, jnp.arange(k, dtype=jnp.int32), rows_p)
    return [int(v) for v in np.asarray(settings.evaluations(steps)).sum(axis=1)]


def gradient_bench(model: Model, x_unit, label: int, config, args) -> dict:
    """Forward, forward+backward, NFE, memory and the finite-difference check of one setting."""
    probes = attacks.draw_attack_probes(jax.random.key(args.seed + 3), 1, config.n_probes, tuple(x_unit.shape[1:]))
    fn = attacks.sbgc_logits_fn(model, probes, config)
    y = jnp.asarray([label], jnp.int32)
    out: dict = {"config": config.describe()}

    t = time.perf_counter()
    fwd = jax.jit(fn.logits_and_ok).lower(x_unit).compile()
    out["forward_compile_s"] = time.perf_counter() - t
    (logits, ok), times = timed(lambda: fwd(x_unit), args.repeats)
    attacks.raise_if_failed(ok, "forward pass", config.describe())
    out["forward_run_s"] = times
    logits = np.asarray(logits, np.float64)[0]
    out["logits"] = logits.tolist()
    out["label"] = label
    out["p_label"] = float(np.exp(logits[label] - np.logaddexp.reduce(logits)))
    out["predicted"] = int(np.argmax(logits))
    dim = int(np.prod(x_unit.shape[1:]))
    out["bpd_of_log_marginal"] = float(bits_per_dim(log_marginal(logits[None]), dim)[0])
    print(f"[bench] forward: compile {out['forward_compile_s']:.1f} s, run {times[-1]:.2f} s", file=sys.stderr, flush=True)
    out["nfe_per_class"] = nfe_per_class(model, x_unit, probes, config)

    grad_fn = fn.value_and_grad(attacks.cross_entropy)
    t = time.perf_counter()
    compiled = grad_fn.lower(x_unit, y).compile()
    out["grad_compile_s"] = time.perf_counter() - t
    (loss, grad, ok), times = timed(lambda: compiled(x_unit, y), args.repeats)
    attacks.raise_if_failed(ok, "forward + backward pass", config.describe())
    out["grad_run_s"] = times
    out["loss"] = float(loss)
    out["grad_norm"] = float(jnp.linalg.norm(grad))
    out["peak_device_memory_bytes"] = peak_memory()
    print(f"[bench] forward+backward: compile {out['grad_compile_s']:.1f} s, run {times[-1]:.2f} s", file=sys.stderr, flush=True)

    if args.fd_directions > 0:
        t = time.perf_counter()
        # A fixed random linear functional of the 10 logits: its derivative J^T w is O(|J|), while
        # the cross-entropy's J^T (p − e_y) shrinks with 1 − p(label) and drowns in the float32
        # rounding of logits of O(10^4) nats (measured: 3-40 % FD errors at p(label) = 0.83).
        chk = attacks.finite_difference_check(
            fn, x_unit, jax.random.key(args.seed + 4), n_directions=args.fd_directions, h=args.fd_h
        )
        out["finite_difference"] = {
            "objective": "projected_logits: sum_k w_k log p(x|k), w ~ N(0, I/10) fixed (tests the whole Jacobian)",
            "h": chk.h, "exact": chk.exact.tolist(), "finite_difference": chk.finite_difference.tolist(),
            "relative_error": chk.relative_error.tolist(), "max_relative_error": chk.max_relative_error,
            "seconds": time.perf_counter() - t,
        }  # fmt: skip
        print(f"[bench] finite differences: max relative error {chk.max_relative_error:.2e}", file=sys.stderr, flush=True)
    return out


def reverse_reconstruction(model: Model, x_unit, config: attacks.SBGCLogitsConfig) -> dict:
    """‖x̂ − x‖ / ‖x‖ (model space, class 0): x(ε) → x(T) forward, then back to x̂(ε) in reverse time.

    BacksolveAdjoint re-creates the forward trajectory this way while it integrates the adjoint; if
    x̂ ≠ x, its adjoint is integrated along the wrong path.
    """
    import diffrax as dfx

    from sbgc.method.likelihood import SOLVERS

    sde, x = model.sde, to_model_space(x_unit, config.data_scaling)

    def drift(t, z, args):
        t1 = jnp.reshape(t, (1,)).astype(jnp.float32)
        return sde.probability_flow_drift(z, t1, model.score_fn(z, t1, jnp.zeros((1,), jnp.int32)))

    s = config.solver
    if s.n_steps:
        ctrl, dt0 = dfx.ConstantStepSize(), (sde.T - s.eps) / s.n_steps
    else:
        ctrl, dt0 = dfx.PIDController(rtol=s.rtol, atol=s.atol), 0.01
    solve = lambda z, t0, t1, dt: dfx.diffeqsolve(
        dfx.ODETerm(drift), SOLVERS[s.solver](), t0, t1, dt, z, stepsize_controller=ctrl, max_steps=s.max_steps
    ).ys[-1]  # fmt: skip
    x_hat = solve(solve(x, s.eps, sde.T, dt0), sde.T, s.eps, -dt0)
    return {"relative_error": float(jnp.linalg.norm(x_hat - x) / jnp.linalg.norm(x)), "x_norm": float(jnp.linalg.norm(x))}


def adjoint_study(model: Model, x_unit, config: attacks.SBGCLogitsConfig, args) -> dict:
    """Recursive-checkpoint vs backsolve adjoint against the same central finite differences."""
    import dataclasses

    probes = attacks.draw_attack_probes(jax.random.key(args.seed + 3), 1, config.n_probes, tuple(x_unit.shape[1:]))
    key = jax.random.key(args.seed + 5)
    k_dir, k_w = jax.random.split(key)
    fns = {a: attacks.sbgc_logits_fn(model, probes, dataclasses.replace(config, solver=dataclasses.replace(config.solver, adjoint=a))) for a in ("recursive", "backsolve")}
    clean = fns["recursive"].checked(x_unit)
    weights = jax.random.normal(k_w, clean.shape, jnp.float32) / np.sqrt(clean.size)
    dirs = jax.random.normal(k_dir, (args.fd_directions, *x_unit.shape), jnp.float32)
    dirs = dirs / jnp.sqrt(jnp.sum(dirs**2, axis=tuple(range(1, dirs.ndim)), keepdims=True))
    shift = clean.max(axis=1, keepdims=True)
    score = lambda xx: float(np.sum(np.asarray(weights, np.float64) * (fns["recursive"].checked(xx) - shift)))
    fd = np.array([(score(x_unit + args.fd_h * d) - score(x_unit - args.fd_h * d)) / (2 * args.fd_h) for d in dirs])
    out: dict = {"config": config.describe(), "objective": "projected_logits (fixed random weights)",
                 "h": args.fd_h, "finite_difference": fd.tolist()}  # fmt: skip
    grads = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        _, g = attacks.input_gradient(fn, x_unit, weights, attacks.projected_logits)
        exact = np.array([float(jnp.vdot(jnp.asarray(g), d)) for d in dirs])
        rel = np.abs(exact - fd) / np.maximum(np.abs(exact), np.abs(fd))
        grads[name] = g
        out[name] = {"grad_norm": float(np.linalg.norm(g)), "exact": exact.tolist(), "relative_error": rel.tolist(),
                     "max_relative_error": float(rel.max()), "seconds_incl_compile": time.perf_counter() - t}  # fmt: skip
        print(f"[bench] {name}: |grad| {out[name]['grad_norm']:.4g}, max rel. error {rel.max():.2e}", file=sys.stderr, flush=True)
    diff = np.linalg.norm(grads["backsolve"] - grads["recursive"]) / np.linalg.norm(grads["recursive"])
    out["relative_difference_backsolve_vs_recursive"] = float(diff)
    out["reverse_time_reconstruction"] = reverse_reconstruction(model, x_unit, config)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="ci", help="shipped name, parameter file, or 'none' (untrained --profile)")
    p.add_argument("--profile", choices=sorted(models.PROFILES), default="ci", help="network of --checkpoint none")
    p.add_argument("--n-probes", type=int, default=10)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=None, help="default: rtol")
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--solver", default="dopri5")
    p.add_argument("--n-steps", type=int, default=None, help="fixed equal steps instead of the adaptive controller")
    p.add_argument("--max-steps", type=int, default=4096)
    p.add_argument("--checkpoints", type=int, default=None, help="RecursiveCheckpointAdjoint checkpoints (default: diffrax's)")
    p.add_argument("--adjoint", choices=["recursive", "backsolve"], default="recursive")
    p.add_argument("--repeats", type=int, default=1, help="timed runs after compilation")
    p.add_argument("--fd-directions", type=int, default=3)
    p.add_argument("--fd-h", type=float, default=1e-2)
    p.add_argument("--adjoint-study", action="store_true",
                   help="compare the adjoints instead of the timing run (on --checkpoint and on an untrained network)")
    p.add_argument("--study-classes", type=int, default=2, help="classes in the adjoint study (cost)")
    p.add_argument("--study-networks", default="trained,untrained",
                   help="comma-separated: 'trained' (--checkpoint) and/or 'untrained' (a re-drawn ci network)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/attack_gradient_<checkpoint>_<platform>.json)")
    args = p.parse_args(argv)
    if args.n_probes < 1 or args.repeats < 1 or args.fd_directions < 0 or not args.fd_h > 0:
        p.error("--n-probes and --repeats must be >= 1, --fd-directions >= 0 and --fd-h > 0")
    if not set(args.study_networks.split(",")) <= {"trained", "untrained"}:
        p.error(f"--study-networks takes 'trained' and/or 'untrained', got {args.study_networks!r}")
    if args.adjoint_study and args.fd_directions < 1:
        p.error("--adjoint-study needs --fd-directions >= 1")
    args.atol = args.rtol if args.atol is None else args.atol
    return args


def run_adjoint_study(report: dict, model, x_unit, config, args, out: Path) -> None:
    """Recursive vs backsolve adjoint against finite differences, per network, into ``report``."""
    import dataclasses

    study_cfg = dataclasses.replace(config, n_classes=args.study_classes)
    report["settings"]["n_classes"] = args.study_classes
    report["adjoint_study"] = {}
    for net in args.study_networks.split(","):
        m = model if net == "trained" else load("none", "ci", args.seed)
        report["adjoint_study"][net] = dict(adjoint_study(m, x_unit, study_cfg, args), params=m.origin)
        write(report, out)  # after each network: the untrained one can take long
    print(f"\n{report['device']} ({report['platform']}), jax {report['jax']}, diffrax {report['diffrax']}")
    print(f"adjoint study: 1 image, {args.study_classes} classes, {config.describe()}")
    print(f"{'network':10s} {'adjoint':10s} {'|grad|':>12s} {'max rel. err vs FD':>20s}")
    for net, r in report["adjoint_study"].items():
        for a in ("recursive", "backsolve"):
            print(f"{net:10s} {a:10s} {r[a]['grad_norm']:12.5g} {r[a]['max_relative_error']:20.2e}")
        print(f"{net:10s} ‖g_back − g_rec‖/‖g_rec‖ = {r['relative_difference_backsolve_vs_recursive']:.2e}; "
              f"x(ε) → x(T) → x̂(ε): ‖x̂ − x‖/‖x‖ = {r['reverse_time_reconstruction']['relative_error']:.2e}")


def timing_notes(on_cpu: bool) -> list[str]:
    """What the timing run's numbers mean (written into its JSON)."""
    notes = [
        "One PGD step = one forward + backward pass over all 10 classes of one image (grad_run_s).",
        "Paper: one forward and backward pass took ~90 min on an NVIDIA Tesla V100 (n=10, rtol=atol=1e-5).",
        "Goal: <= 60 s on one H100 at the paper's settings"
        + (" -- not measurable on this CPU machine." if on_cpu else "."),
        "Peak device memory: " + ("n/a (the CPU backend does not report it)." if on_cpu
                                  else "device.memory_stats()['peak_bytes_in_use'] of the whole process."),
        "Fixed uniform steps are a coarser classifier, not only a cheaper one: on the shipped ci network "
        "bpd_of_log_marginal and the predicted class move with the number of steps (compare the "
        "attack_gradient_ci_cpu*.json files with adaptive solves in likelihood_ci_trained_cpu.json).",
        "NFE counts the forward solve of each class (stages x steps, rejected steps included); the backward "
        "pass evaluates the vector-Jacobian product of every step's vector field (second derivatives of the "
        "network) and recomputes forward steps from RecursiveCheckpointAdjoint's checkpoints.",
    ]  # fmt: skip
    if on_cpu:
        notes.append(
            "On XLA:CPU (jax 0.10.2) the backward pass of the U-Net inside a loop (lax.fori_loop or diffrax's "
            "checkpointed while loop) ran ~10x slower than the same steps unrolled (measured: 2 steps of a "
            "first-order backward 3.0 s vs 0.30 s): inside loop bodies half of the transposed convolutions keep "
            "an 'oi' kernel layout. Expect GPU/CPU ratios larger than raw FLOP rates suggest."
        )
    return notes


def run_timing(report: dict, model, x_unit, label: int, config, args, source: str) -> None:
    """Forward and forward + backward over all classes of one image (and the FD check), into ``report``."""
    r = gradient_bench(model, x_unit, label, config, args)
    report["gradient"] = r
    on_cpu = report["platform"] == "cpu"
    report["notes"] = timing_notes(on_cpu)
    print(f"\n{report['device']} ({report['platform']}), jax {report['jax']}, diffrax {report['diffrax']}")
    print(f"network: {model.origin}; image 0 of {source}, label {label}; {config.describe()}")
    print(f"{'pass':22s} {'compile s':>10s} {'run s':>9s} {'NFE/class':>10s}")
    print(f"{'forward (10 classes)':22s} {r['forward_compile_s']:10.1f} {r['forward_run_s'][-1]:9.2f} "
          f"{np.mean(r['nfe_per_class']):10.1f}")  # fmt: skip
    print(f"{'forward + backward':22s} {r['grad_compile_s']:10.1f} {r['grad_run_s'][-1]:9.2f} {'':>10s}")
    print(f"prediction {r['predicted']} (label {label}, p(label) = {r['p_label']:.3f}), "
          f"bits/dim of log p(x) {r['bpd_of_log_marginal']:.3f}, |grad| {r['grad_norm']:.4g}")
    mem = r["peak_device_memory_bytes"]
    print(f"peak device memory: {'n/a' if mem is None else f'{mem / 2**30:.2f} GiB'}")
    if "finite_difference" in r:
        fd = r["finite_difference"]
        print(f"finite differences (h={fd['h']:g}, {len(fd['exact'])} directions): relative errors "
              + ", ".join(f"{e:.1e}" for e in fd["relative_error"]))  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = attacks.SBGCLogitsConfig(
        n_probes=args.n_probes,
        solver=SolverSettings(solver=args.solver, rtol=args.rtol, atol=args.atol, eps=args.eps, max_steps=args.max_steps,
                              n_steps=args.n_steps, adjoint=args.adjoint, checkpoints=args.checkpoints),
    )  # fmt: skip
    dev = jax.devices()[0]
    name = "adjoint" if args.adjoint_study else Path(args.checkpoint).stem
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"attack_gradient_{name}_{dev.platform}.json"
    report: dict = {
        "device": str(dev.device_kind), "platform": dev.platform, "host": platform.node(),
        "jax": jax.__version__, "diffrax": diffrax.__version__,
        # compile_s includes tracing; with a warm persistent cache XLA's compilation is skipped.
        "jax_compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
        "compilation_cache_files_at_start": _cache_files(os.environ.get("JAX_COMPILATION_CACHE_DIR")),
    }  # fmt: skip
    bl = _bench_likelihood()
    images, labels, source = bl.load_images(1, 32, args.seed)
    x_unit = to_unit_interval(images[:1], jax.random.key(args.seed + 2), True)  # dequantized once
    label = int(labels[0])
    model = load(args.checkpoint, args.profile, args.seed)
    report["settings"] = {
        "checkpoint": args.checkpoint, "params": model.origin, "n_params": model.n_params,
        "image_source": source, "image_index": 0, "n_classes": config.n_classes, "n_probes": args.n_probes,
        "rtol": args.rtol, "atol": args.atol, "eps": args.eps, "solver": args.solver, "n_steps": args.n_steps,
        "max_steps": args.max_steps, "adjoint": args.adjoint, "checkpoints": args.checkpoints,
        "error_norm": config.solver.error_norm, "dequantize": "once, before the attack", "data_scaling": "centered",
    }  # fmt: skip

    if args.adjoint_study:
        run_adjoint_study(report, model, x_unit, config, args, out)
    else:
        run_timing(report, model, x_unit, label, config, args, source)
    write(report, out)
    print(f"wrote {out}")
    return report


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
