"""The prepared GPU check: one call on a GPU machine measures what the CPU cannot, then
spends the rest of its wall-clock budget training the CIFAR-10 GPU model.

    python bench/gpu_check.py --out results/gpu_check.json --train-dir runs/sbgc_small_gpu \\
        --export results/sbgc_small_gpu.msgpack [--budget-s 480] [--data-dir DIR]
    python bench/gpu_check.py --tiny --out /tmp/gpu_check.json      # any CPU, < 1 minute: what CI runs

Sections, in this order; each runs inside try/except (a failing one records its error text and
traceback, the next one runs), and the JSON (``--out``) is rewritten atomically after every
section and after every row of the throughput table, so a kill leaves everything finished so far:

1. ``environment``: jax/jaxlib/diffrax/python versions, backend, device kind and count, the device's
   ``memory_stats()`` (None on CPU), the git commit (read from ``.git``, no git process).
2. ``train_throughput``: images/s of one full training step (``bench/train_throughput.py``'s
   ``bench_one``, train step only) and the allocator's peak memory, profiles ``small`` and ``paper``
   at batch 128, bfloat16 then float32; ``--tiny`` also a baseline's train step (``bench_baseline``; the real
   run leaves WRN-28-10 to ``bench/train_throughput.py --baselines``, its compilation would cost the training
   minute). The peak (``peak_bytes_in_use``) is the process's running peak and is never reset, so a row's peak
   is "this row or an earlier one".
3. ``likelihood``: images/s of the classifier at the paper's settings (n = 30 Rademacher probes,
   dopri5, rtol = atol = 1e-5, ε = 1e-5, all 10 classes), ours (``class_log_likelihoods``, probes
   sharing one trajectory) against the scipy host-loop reference (``sbgc.checks.reference``, the
   score_sde procedure: one probe per scipy RK45 solve, so n probes cost n solves). The reference's
   time per image at n probes is n × its time per solve, measured over ``ref_solves`` solves after
   the first (which also compiles). ``ratio_reference_over_ours`` = reference s/image over ours.
   Ours' first probe and the reference's first solve use the same key, hence the same
   dequantization noise and probe (checked): their max |Δ log p| is the solvers' difference.
4. ``precision``: the same classification traced at the device's default matmul precision (TF32 on
   a GPU) instead of ``sbgc.method.numerics``' "highest": max |Δ log p| in nats and Δ bits/dim, on
   the same images with the same key (the "highest" result is section 3's). The switch is checked
   on the lowered score network (fraction of dots/convolutions at HIGHEST).
5. ``attack_gradient``: one forward + backward pass of PGD's objective (``pgd_surrogate``) through
   the solves of all 10 classes of one image (``sbgc_logits_fn``, n = 10 fixed probes as in the
   paper's Table 3, dopri5 rtol = atol = 1e-5, RecursiveCheckpointAdjoint): compile and run seconds.
6. ``train``: continues the model the ``workstation`` book profile loads
   (``sbgc.book.profiles.PROFILES["workstation"].sbgc``: ``checkpoints/sbgc_small_gpu.msgpack``,
   training profile ``small``, 200,000 steps) with ``sbgc.train.score.train`` (what
   ``python -m sbgc.train`` runs): it resumes from the newest checkpoint of ``--train-dir`` and
   never restarts a run that has one (a checkpoint of another configuration is an error, recorded).
   It trains until ``--budget-s`` minus 45 s for the export and 25 s for loading data and state,
   stops at a checkpoint (``time_limit``), then exports the EMA parameters
   (``sbgc.train.score.export_ema``, what ``python -m sbgc.train export`` runs) to ``--export``
   with its metadata JSON beside it, and records steps, images/s and the file's sha256.

Sections 2–5 evaluate the workstation model if its file exists, else an untrained ``small``
network whose near-zero output kernels are re-drawn (``bench/attack_gradient.py``'s ``load``: an
untrained U-Net's score is ≈ 0 and would make the ODE trivially easy). The images are the first
CIFAR-10 test images with exact pixels (``bench/likelihood.py``'s ``load_images``; random uint8
images, labelled so, when no CIFAR-10 copy is found).

On a machine without CIFAR-10, copy it there first: ``python -m sbgc.data export`` writes the
compressed offline copy ``data/offline-cifar10/`` (19.9 MiB, git-ignored), which the loaders find
by themselves; the first load decodes it (~8 s). The ``small`` run's full training state is 43 MB:
to continue on another machine, move it with ``python -m sbgc.train pack``/``unpack`` (split
across files).

Estimated seconds on one H200, with reasons. A section starts only if at least its estimate is
left of the budget (else it is recorded as skipped); the training gets what is left:

================  =====  ===============================================================================
section           est s  why
================  =====  ===============================================================================
(start-up)           15  python, jax and CUDA start; counted in the budget (it starts with the script)
environment           1
train_throughput    110  four XLA compilations of the train step, ~15 s for ``small`` (2.7M parameters)
                         and ~35 s for ``paper`` (67M) each, and of ``init_params``; the 11 timed steps
                         are seconds: a ``paper`` step is 128 images × 3 × 20.3 GFLOP (forward, XLA
                         cost analysis) = 7.8 TFLOP, ~30 ms at ~250 of the 790 bf16 TFLOP/s, ~80 ms
                         in TF32; ``small`` is 0.87 GFLOP per image forward, a few ms per step
likelihood           75  one compilation of the dopri5 solve (~30 s) and two runs: 10 rows × ~350
                         evaluations (an untrained re-drawn network at 1e-5; the CPU ``ci`` network
                         needed 137 at 1e-3) × (1 forward + 30 JVPs ≈ 61 forwards) × 0.87 GFLOP ≈ 190
                         TFLOP in full float32 (no tensor cores) at ~15-20 TFLOP/s ≈ 10-12 s each; the
                         reference: compilation (~10 s) and 3 scipy solves of ~400 host round trips
                         of ~3 ms (10 rows: launch-bound) ≈ 4 s
precision            40  one more compilation (~30 s) and one run in TF32 (faster); "highest" is
                         section 3's result
attack_gradient     100  compilation of the second-order backward pass through the checkpointed
                         while loop (~60-80 s; on 2 CPU cores the ``ci`` network's took 35-42 s) and
                         one run: forward 10 rows × ~350 evaluations × 21 forwards × 0.87 GFLOP ≈ 64
                         TFLOP, backward with recomputation ~4-6 × that ≈ 15-25 s
train          the rest  ~140 s at the estimates above (480 − 341): 45 s kept for the export, 25 s set
                         aside for decoding CIFAR-10 and restoring state, so ~70 s of training
                         including its ~20 s compilation; ``small`` at an estimated ~10,000 images/s
                         (128 × 3 × 0.87 GFLOP = 0.33 TFLOP per step in TF32, launch-bound) adds ~4,000
                         steps per call (a CPU ``ci`` U-Net trains at ~40 images/s)
================  =====  ===============================================================================

``--tiny`` (CI, a CPU, ~40 s on 2 cores): the ``ci`` profile's U-Net cut down to one resolution
level, attention only in its middle (:data:`TINY_NETWORK`, 9,403 parameters: the ``ci`` network costs
~20 CPU-seconds per XLA compilation and ``--tiny`` compiles seven programs) at batch 8 and float32
for the throughput; an untrained one, re-drawn, on 1 image and 2 classes with 1 probe at rtol =
atol = 0.5 (the attack: 1 probe, 1 Heun step written out without a loop), 2 reference solves;
3 training steps on toy data into ``--train-dir`` (default: a new temporary folder), exported
inside it. Run as a script, ``--tiny`` sets XLA's CPU optimisation level to 0 (compiles ~2x
faster, runs slower). ``--sections`` runs a subset; ``--fail-section NAME`` makes that section
raise at its start (to test that a failure is recorded, not fatal).
"""

from __future__ import annotations

import os
import sys
import time

_STARTED = time.monotonic()  # the budget counts from here, before the heavy imports
if __name__ == "__main__" and "--tiny" in sys.argv[1:]:
    # --tiny compiles about seven small U-Net programs and runs each for a second or two: XLA's CPU
    # backend at optimisation level 0 compiles them 2-4x faster. Set before jax starts its backend.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbgc.book.profiles import PROFILES as BOOK_PROFILES  # noqa: E402
from sbgc.method import networks as _networks  # noqa: E402
from sbgc.method import numerics  # noqa: E402
from sbgc.method.classify import class_log_likelihoods  # noqa: E402
from sbgc.method.likelihood import (  # noqa: E402
    SolverSettings, bits_per_dim, device_memory_bytes, prepare_batch, to_unit_interval,
)
from sbgc.storage import write_json_atomic  # noqa: E402

SECTIONS = ("environment", "train_throughput", "likelihood", "precision", "attack_gradient", "train")
GPU_MODEL = BOOK_PROFILES["workstation"].sbgc  # the CIFAR-10 GPU model the workstation profile loads
EXPORT_RESERVE_S = 45.0  # the training stops this long before the budget ends, for the export
# --tiny's network: the ci profile cut to the "tiny" model profile's shape (one resolution level with no
# residual blocks but the middle's and the one up block, 9,403 parameters). The ci network costs ~20
# CPU-seconds per XLA compilation on 2 cores and --tiny compiles seven programs; this one about a third of that.
TINY_NETWORK = {f: getattr(_networks.PROFILES["tiny"], f) for f in ("nf", "ch_mult", "num_res_blocks", "attn_resolutions",
                                                                     "dropout")}


@functools.cache
def bench_module(name: str):
    """``bench/<name>.py`` as a module (bench/ holds scripts, not a package), loaded once."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- what each section does, at which size ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of every section: :func:`full_plan` (one H200) or :func:`tiny_plan` (a CPU, CI)."""

    # 2. training throughput: bench_one(profile, dtype, batch, timed_steps) for every pair
    throughput_profiles: tuple[str, ...]
    dtypes: tuple[str, ...]
    baseline_profiles: tuple[str, ...]  # ... and the baselines' train step (float32), bench_baseline
    batch: int
    timed_steps: int
    # 3.-5. the evaluated network and images
    model: str  # a shipped name, a parameter file, or "none" (an untrained `model_profile` network)
    model_profile: str
    # ModelConfig fields replacing the profiles' (throughput, the untrained network, training)
    model_overrides: tuple[tuple[str, Any], ...]
    n_images: int
    n_classes: int
    n_probes: int  # 3. and 4.
    ode: SolverSettings  # 3. and 4.
    ref_solves: int  # 3.: scipy reference solves (one probe each; the first also compiles)
    attack_probes: int  # 5.
    attack_ode: SolverSettings
    # 6. training the GPU model
    train_profile: str
    train_steps: int  # the run's total steps
    steps_per_call: int | None  # at most this many new steps per call (None: until the time limit)
    train_overrides: tuple[tuple[str, Any], ...]  # TrainConfig fields (run-only ones may change on resume)
    toy_size: int  # images of --data toy
    setup_reserve_s: float  # set aside from the time limit for loading data and restoring state
    min_train_s: float  # train only if at least this much time limit is left
    estimates_s: tuple[tuple[str, float], ...]  # a section starts only if this much budget is left

    def estimate(self, section: str) -> float:
        """Seconds of budget ``section`` needs to start (0 when not estimated)."""
        return dict(self.estimates_s).get(section, 0.0)


def full_plan(model: str) -> Plan:
    """The real run on one H200 (module docstring: the estimates)."""
    return Plan(
        # no baseline row: WRN-28-10's step (~40 s, mostly compilation) would come out of the training minute;
        # `python bench/train_throughput.py --profiles --baselines wrn28_10` measures it where time allows
        throughput_profiles=("small", "paper"), dtypes=("bfloat16", "float32"), baseline_profiles=(),
        batch=128, timed_steps=10,
        model=model, model_profile=GPU_MODEL.train_profile, model_overrides=(), n_images=1, n_classes=10,
        n_probes=30, ode=SolverSettings(solver="dopri5", rtol=1e-5, atol=1e-5, eps=1e-5), ref_solves=3,
        attack_probes=10, attack_ode=SolverSettings(solver="dopri5", rtol=1e-5, atol=1e-5, eps=1e-5),
        train_profile=GPU_MODEL.train_profile, train_steps=GPU_MODEL.steps, steps_per_call=None,
        train_overrides=(), toy_size=2048, setup_reserve_s=25.0, min_train_s=30.0,
        estimates_s=(("train_throughput", 110.0), ("likelihood", 75.0), ("precision", 40.0),
                     ("attack_gradient", 100.0)),
    )  # fmt: skip


def tiny_plan(model: str) -> Plan:
    """``--tiny``: every section shrunk to run on a CPU in seconds (what CI runs)."""
    return Plan(
        throughput_profiles=("ci",), dtypes=("float32",), baseline_profiles=("ci",), batch=8, timed_steps=2,
        model=model, model_profile="ci", model_overrides=tuple(TINY_NETWORK.items()), n_images=1, n_classes=2,
        n_probes=1, ode=SolverSettings(solver="dopri5", rtol=0.5, atol=0.5, eps=1e-5), ref_solves=2,
        attack_probes=2, attack_ode=SolverSettings(solver="heun", n_steps=1, unroll=True),
        train_profile="ci", train_steps=1_000, steps_per_call=3,
        # batch and data as bench_one's (1,024 images): the same train step, a persistent-cache hit
        train_overrides=(("batch_size", 8), ("log_every", 1), ("ckpt_every", 3), ("keep", 2), ("data", "toy")),
        toy_size=1024, setup_reserve_s=0.0, min_train_s=0.0, estimates_s=(),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Budget:
    """The wall-clock budget of the whole call, counted from the script's start."""

    seconds: float
    started: float  # time.monotonic() at the start

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


class ForcedFailure(RuntimeError):
    """Raised at the start of the section named by ``--fail-section``."""


# --- small helpers ---------------------------------------------------------------------------------
def git_commit(root: Path = ROOT) -> str | None:
    """The checked-out commit read from ``.git``'s files (no git process); None without a ``.git``."""
    try:
        git = root / ".git"
        if git.is_file():  # a worktree: ".git" holds "gitdir: PATH"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        common = git / (git / "commondir").read_text().strip() if (git / "commondir").is_file() else git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head  # detached HEAD
        ref = head[len("ref: "):]
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        return None
    return None


def peak_bytes() -> int | None:
    """The allocator's peak of this process (``memory_stats()['peak_bytes_in_use']``); None on CPU."""
    return bench_module("train_throughput")._peak_bytes()


def _finite(x: float, what: str) -> float:
    if not np.isfinite(x):
        raise FloatingPointError(f"{what} is not finite: {x}")
    return float(x)


@contextlib.contextmanager
def device_default_precision():
    """Trace evaluation code at the device's default matmul precision (TF32 for float32 dots and
    convolutions on Ampere/Hopper GPUs) instead of ``numerics.EVAL_PRECISION`` ("highest").

    Every ``@highest_precision`` function reads ``numerics.EVAL_PRECISION`` when it is traced; the
    outer ``jax.default_matmul_precision("default")`` makes jit caches key these traces apart from
    the "highest" ones (the precision is part of jax's trace context), so nothing is reused.
    """
    saved = numerics.EVAL_PRECISION
    numerics.EVAL_PRECISION = "default"
    try:
        with jax.default_matmul_precision("default"):
            yield
    finally:
        numerics.EVAL_PRECISION = saved


def highest_fraction(fn: Callable, *args) -> float:
    """Share of the dots and convolutions of ``jax.jit(fn).lower(*args)`` that ask for HIGHEST."""
    text = jax.jit(fn).lower(*args).as_text()
    ops = [line for line in text.splitlines() if "stablehlo.convolution" in line or "stablehlo.dot_general" in line]
    if not ops:
        raise ValueError("the lowered function has no dot or convolution")
    return sum("HIGHEST" in line for line in ops) / len(ops)


def evaluation_inputs(plan: Plan, args, ctx: dict) -> dict:
    """The inputs of sections 3-5, loaded once into ``ctx``: ``model`` (``score_fn``, ``sde``,
    provenance), ``images`` uint8 [B, 32, 32, 3], ``labels`` int [B], ``image_source`` and the key
    of the dequantization noise and probes."""
    if "model" not in ctx:
        ag, bl = bench_module("attack_gradient"), bench_module("likelihood")
        overrides = dict(plan.model_overrides) if plan.model == "none" else None
        ctx["model"] = ag.load(plan.model, plan.model_profile, args.seed, overrides)
        ctx["images"], ctx["labels"], ctx["image_source"] = bl.load_images(plan.n_images, 32, args.seed)
        ctx["key"] = jax.random.key(args.seed + 2)
    return ctx


def _model_entry(ctx: dict) -> dict:
    m = ctx["model"]
    return {"params": m.origin, "n_params": m.n_params, "profile": m.profile, "image_source": ctx["image_source"]}


def _classify(plan: Plan, ctx: dict, n_probes: int):
    """Our solver on the section inputs: a ClassLikelihoods, log_p [B, K], log_p_probes [B, K, n]."""
    m = ctx["model"]
    return class_log_likelihoods(m.score_fn, m.sde, ctx["images"], ctx["key"], n_classes=plan.n_classes,
                                 solver=plan.ode, n_probes=n_probes, progress=False)


# --- the sections: each fills `entry` in place (kept, with the error, when it raises) -------------
def section_environment(plan: Plan, args, ctx: dict, entry: dict) -> None:
    dev = jax.devices()[0]
    stats = dev.memory_stats()
    versions = {}
    for package in ("jaxlib", "diffrax", "equinox", "flax", "optax", "numpy", "scipy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    entry.update({
        "jax": jax.__version__, "versions": versions, "python": platform.python_version(),
        "backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
        "platform": dev.platform, "memory_stats": None if not stats else {k: int(v) for k, v in stats.items()},
        "memory_gib": None if not stats or "bytes_limit" not in stats else stats["bytes_limit"] / 2**30,
        "host": platform.node(), "cpu_count": os.cpu_count(), "git_commit": git_commit(),
        "jax_compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
        "startup_s": time.monotonic() - _STARTED,
    })  # fmt: skip


def section_train_throughput(plan: Plan, args, ctx: dict, entry: dict) -> None:
    tt = bench_module("train_throughput")
    entry.update({"batch": plan.batch, "timed_steps": plan.timed_steps, "rows": [],
                  "peak_bytes_note": "the process's running peak (never reset): this row's or an earlier row's"})
    failed = []
    for profile in plan.throughput_profiles:
        for dtype in plan.dtypes:
            try:
                row = tt.bench_one(profile, dtype, plan.batch, plan.timed_steps, 1, None, step_only=True,
                                   model_overrides=dict(plan.model_overrides))
                _finite(row["images_per_s"], f"{profile} {dtype} images/s")
            except Exception as e:  # one configuration failing (e.g. out of memory) must not lose the others
                row = {"profile": profile, "dtype": dtype, "error": f"{type(e).__name__}: {e}"}
                failed.append(f"{profile} {dtype}")
            entry["rows"].append(row)
            ctx["save"]()
    for profile in plan.baseline_profiles:
        try:
            row = tt.bench_baseline(profile, plan.batch, plan.timed_steps)
            _finite(row["images_per_s"], f"baseline {profile} images/s")
        except Exception as e:
            row = {"kind": "baseline", "profile": profile, "dtype": "float32", "error": f"{type(e).__name__}: {e}"}
            failed.append(f"baseline {profile}")
        entry["rows"].append(row)
        ctx["save"]()
    if failed:
        raise RuntimeError(f"training step failed for {', '.join(failed)} (see the rows)")


def section_likelihood(plan: Plan, args, ctx: dict, entry: dict) -> None:
    from sbgc.checks import reference

    bl = bench_module("likelihood")
    evaluation_inputs(plan, args, ctx)
    m, images, labels, key = ctx["model"], ctx["images"], ctx["labels"], ctx["key"]
    b, n = len(images), plan.n_probes
    entry["model"] = _model_entry(ctx)
    entry["settings"] = {"images": b, "n_classes": plan.n_classes, "n_probes": n, "solver": plan.ode.solver,
                         "rtol": plan.ode.rtol, "atol": plan.ode.atol, "eps": plan.ode.eps,
                         "ref_solves": plan.ref_solves,
                         "chunk_size": "None: sized from device memory", "device_memory_bytes": device_memory_bytes()}
    res, first, steady = bl.timed(lambda: _classify(plan, ctx, n))
    ctx["highest"] = res
    entry["ours"] = dict(bl.summarize(res, first, steady, labels, n), s_per_image=steady / b)
    ctx["save"]()

    # the reference: one probe per solve; solve 0 has our key (same noise, same first probe)
    refs, seconds = [], []
    for j in range(plan.ref_solves):
        key_j = key if j == 0 else jax.random.fold_in(key, j)
        ref, t, _ = bl.timed(lambda k=key_j: reference.class_log_likelihoods(
            m.score_fn, m.sde, images, k, n_classes=plan.n_classes, solver=plan.ode, progress=False), repeats=1)
        refs.append(ref)
        seconds.append(t)
    per_solve = statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]
    ref_log_p = np.mean([r.log_p for r in refs], axis=0)  # [B, K], an estimate with ref_solves probes
    entry["reference"] = {
        "solves": plan.ref_solves, "solve_s": seconds, "s_per_solve": per_solve,
        "s_per_solve_from": "mean of solves 2.." if len(seconds) > 1 else "the first solve (compilation included)",
        "s_per_image": per_solve * n / b, "images_per_s": b / (per_solve * n),
        "mean_nfe": float(np.mean([r.nfe for r in refs])),
        "mean_bpd": float(np.mean(bits_per_dim(ref_log_p, refs[0].dim))), "mean_bpd_probes": plan.ref_solves,
    }  # fmt: skip
    entry["ratio_reference_over_ours"] = entry["reference"]["s_per_image"] / entry["ours"]["s_per_image"]
    ctx["save"]()

    # paired comparison: our first probe against reference solve 0 (identical draws, checked)
    one = prepare_batch(images, key, n_probes=1, probe="rademacher", dequantize=True, data_scaling="centered")
    many = one if n == 1 else prepare_batch(images, key, n_probes=n, probe="rademacher", dequantize=True,
                                            data_scaling="centered")
    ids = np.arange(b)
    same = bool(jnp.array_equal(one.x_model, many.x_model) and jnp.array_equal(one.probes(ids)[:, 0], many.probes(ids)[:, 0]))
    ours_first = res.log_p_probes[..., 0] if same else _classify(plan, ctx, 1).log_p  # [B, K]
    delta = np.abs(ours_first - refs[0].log_p)
    entry["paired"] = {
        "draws": "our probe 0 of n" if same else "a separate n = 1 run (probe 0 of n differs from the n = 1 probe)",
        "max_abs_delta_log_p_nats": _finite(float(delta.max()), "max |Δ log p|"),
        "max_abs_delta_bpd": float(np.max(np.abs(bits_per_dim(ours_first, res.dim) - refs[0].bpd))),
        "ours_mean_bpd": float(np.mean(bits_per_dim(ours_first, res.dim))),
        "reference_mean_bpd": float(np.mean(refs[0].bpd)),
    }  # fmt: skip
    entry["peak_bytes"] = peak_bytes()
    for what, v in (("our s/image", entry["ours"]["s_per_image"]), ("reference s/image", entry["reference"]["s_per_image"])):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{what} is {v}: expected a positive time")


def section_precision(plan: Plan, args, ctx: dict, entry: dict) -> None:
    evaluation_inputs(plan, args, ctx)
    entry["model"] = _model_entry(ctx)
    entry["settings"] = {"images": len(ctx["images"]), "n_classes": plan.n_classes, "n_probes": plan.n_probes,
                         "rtol": plan.ode.rtol, "atol": plan.ode.atol, "solver": plan.ode.solver}
    m = ctx["model"]
    x = jnp.zeros((1, *ctx["images"].shape[1:]), jnp.float32)  # one image [1, H, W, C] in model space
    t, y = jnp.full((1,), 0.5), jnp.zeros((1,), jnp.int32)
    net = lambda xx, tt, yy: m.score_fn(xx, tt, yy)
    entry["highest_ops_share"] = {"highest": highest_fraction(net, x, t, y)}
    with device_default_precision():
        entry["highest_ops_share"]["default"] = highest_fraction(net, x, t, y)
    if entry["highest_ops_share"]["default"] > 0 or entry["highest_ops_share"]["highest"] < 1:
        raise RuntimeError(f"the precision switch did not take: {entry['highest_ops_share']}")

    if "highest" in ctx:
        high, entry["highest_from"] = ctx["highest"], "the likelihood section (same images, key and settings)"
    else:
        high, entry["highest_from"] = _classify(plan, ctx, plan.n_probes), "computed here"
    t0 = time.perf_counter()
    with device_default_precision():
        low = _classify(plan, ctx, plan.n_probes)
    entry["default_first_s"] = time.perf_counter() - t0  # compilation included
    delta = np.abs(low.log_p - high.log_p)
    entry.update({
        "max_abs_delta_log_p_nats": _finite(float(delta.max()), "max |Δ log p|"),
        "mean_abs_delta_log_p_nats": float(delta.mean()),
        "max_abs_delta_bpd": float(np.max(np.abs(low.bpd - high.bpd))),
        "mean_bpd_highest": float(np.mean(high.bpd)), "mean_bpd_default": float(np.mean(low.bpd)),
        "mean_nfe_highest": float(np.mean(high.nfe)), "mean_nfe_default": float(np.mean(low.nfe)),
        "same_prediction": bool(np.array_equal(high.predict(), low.predict())),
        "device_default": "TF32 for float32 dots and convolutions" if jax.default_backend() in ("gpu", "cuda") else
                          f"{jax.default_backend()}: the default is full float32, Δ is expected to be 0",
    })  # fmt: skip


def section_attack_gradient(plan: Plan, args, ctx: dict, entry: dict) -> None:
    from sbgc.experiments import adversarial as attacks

    evaluation_inputs(plan, args, ctx)
    entry["model"] = _model_entry(ctx)
    images, labels = ctx["images"], ctx["labels"]
    x_unit = to_unit_interval(images[:1], jax.random.key(args.seed + 2), True)  # dequantized once, as PGD's input
    config = attacks.SBGCLogitsConfig(n_probes=plan.attack_probes, solver=plan.attack_ode, n_classes=plan.n_classes)
    probes = attacks.draw_attack_probes(jax.random.key(args.seed + 3), 1, config.n_probes, tuple(x_unit.shape[1:]))
    fn = attacks.sbgc_logits_fn(ctx["model"], probes, config)
    label = int(labels[0]) if int(labels[0]) < plan.n_classes else 0
    target = (jnp.asarray([label], jnp.int32), jnp.asarray(False))  # the cross-entropy direction
    entry["settings"] = {"config": config.describe(), "n_classes": plan.n_classes, "label": label,
                         "objective": "pgd_surrogate (cross-entropy direction)"}
    grad_fn = fn.value_and_grad(attacks.pgd_surrogate)
    t0 = time.perf_counter()
    compiled = grad_fn.lower(x_unit, target).compile()
    entry["compile_s"] = time.perf_counter() - t0
    ctx["save"]()
    t0 = time.perf_counter()
    value, grad, ok = jax.block_until_ready(compiled(x_unit, target))
    entry["run_s"] = time.perf_counter() - t0
    attacks.raise_if_failed(ok, "forward + backward pass", config.describe())
    entry["grad_norm"] = _finite(float(jnp.linalg.norm(grad)), "gradient norm")
    entry["objective_value"] = float(value)
    entry["peak_bytes"] = peak_bytes()


def section_train(plan: Plan, args, ctx: dict, entry: dict) -> None:
    from sbgc.train import score as T
    from sbgc.train.checkpoint import CheckpointStore
    from sbgc.train.loop import log_rows

    train_dir = Path(args.train_dir)
    store = CheckpointStore(train_dir / "checkpoints")
    cfg = T.get_train_config(plan.train_profile, **dict(plan.train_overrides))
    export = Path(args.export) if args.export else (
        train_dir / f"sbgc_{plan.train_profile}_tiny.msgpack" if args.tiny else GPU_MODEL.path())
    committed = store.steps()
    start = committed[-1] if committed else 0
    target = plan.train_steps if plan.steps_per_call is None else min(plan.train_steps, start + plan.steps_per_call)
    time_limit = ctx["budget"].left() - EXPORT_RESERVE_S * (not args.tiny) - plan.setup_reserve_s
    entry.update({
        "model": f"tiny {plan.train_profile} network {dict(plan.model_overrides)}" if args.tiny else GPU_MODEL.name,
        "train_profile": plan.train_profile, "batch_size": cfg.batch_size, "data": cfg.data,
        "train_dir": str(train_dir), "resumed": bool(committed), "start_step": start, "target_step": target,
        "time_limit_s": time_limit,
    })  # fmt: skip
    if not plan.model_overrides:  # the same run from a shell (the CLI has no network overrides)
        entry["commands"] = [
            f"python -m sbgc.train --profile {plan.train_profile} --steps {target} --workdir {train_dir} "
            f"--time-limit {max(time_limit, 0):.0f}" + ("" if args.data_dir is None else f" --data-dir {args.data_dir}")
            + "".join(f" --{k.replace('_', '-')} {v}" for k, v in plan.train_overrides),
            f"python -m sbgc.train export --workdir {train_dir} --out {export}"]  # fmt: skip
    failure = None
    if start >= target:
        entry["skipped_training"] = f"the run is already at step {start} of {target}"
    elif time_limit < plan.min_train_s:
        entry["skipped_training"] = f"only {time_limit:.0f} s of time limit left (< {plan.min_train_s:.0f} s)"
    else:
        t0 = time.perf_counter()
        try:
            meta = T.train(cfg, target, train_dir, data_dir=args.data_dir, toy_size=plan.toy_size, progress=False,
                           time_limit=time_limit, model_overrides=dict(plan.model_overrides))
        except Exception as e:  # export the newest good checkpoint all the same, then report this
            failure = e
            entry["training_error"] = f"{type(e).__name__}: {e}"
        else:
            wall = time.perf_counter() - t0
            end = int(meta["step"])
            rows = [r for r in log_rows(train_dir / "train_log.csv", end) if int(r["step"]) > start]
            rates = [float(r["images_per_s"]) for r in rows]
            steady = rates[1:] or rates  # a call's first log row includes the compilation
            entry.update({
                "end_step": end, "steps_done": end - start, "train_call_s": wall,
                "images_per_s": statistics.median(steady) if steady else None,
                "images_per_s_incl_setup": (end - start) * cfg.batch_size / wall,
                "train_seconds_total": meta["train_seconds"], "data_source": meta["data_source"],
                "device": meta["device"], "n_params": meta["n_params"],
            })  # fmt: skip
        ctx["save"]()
    if store.steps():
        t0 = time.perf_counter()
        meta = T.export_ema(train_dir, export)
        entry["export"] = {"path": str(export), "metadata": f"{export}.json", "sha256": meta["sha256"],
                           "bytes": meta["bytes"], "step": meta["step"], "seconds": time.perf_counter() - t0}
    if failure is not None:
        raise failure
    if "export" not in entry:
        raise FileNotFoundError(f"no checkpoint in {store.dir}: nothing to export")


SECTION_FUNCTIONS: dict[str, Callable] = {
    "environment": section_environment, "train_throughput": section_train_throughput,
    "likelihood": section_likelihood, "precision": section_precision,
    "attack_gradient": section_attack_gradient, "train": section_train,
}


# --- the printed table -------------------------------------------------------------------------------
def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def summary(name: str, e: dict) -> str:
    """One line of the printed table for a finished section."""
    if e.get("status") != "ok":
        return e.get("error") or e.get("reason") or ""
    if name == "environment":
        return f"{e['device_count']}x {e['device_kind']} ({e['backend']}), jax {e['jax']}, commit {(e['git_commit'] or '?')[:10]}"
    if name == "train_throughput":
        return "; ".join(f"{r['profile']} {r['dtype']} {r['images_per_s']:.0f} img/s, peak {_gib(r['peak_bytes'])}"
                         for r in e["rows"])
    if name == "likelihood":
        o, r = e["ours"], e["reference"]
        return (f"ours {o['images_per_s']:.3g} img/s, reference {r['images_per_s']:.3g} img/s "
                f"(×{e['ratio_reference_over_ours']:.2f}); bpd {o['mean_bpd']:.3f} / {r['mean_bpd']:.3f}; "
                f"paired max|Δlog p| {e['paired']['max_abs_delta_log_p_nats']:.3g} nats")
    if name == "precision":
        return (f"default vs highest: max|Δlog p| {e['max_abs_delta_log_p_nats']:.3g} nats, "
                f"max|Δbpd| {e['max_abs_delta_bpd']:.3g}")
    if name == "attack_gradient":
        return f"compile {e['compile_s']:.1f} s, run {e['run_s']:.2f} s, |grad| {e['grad_norm']:.4g}"
    if name == "train":
        rate = "n/a" if e.get("images_per_s") is None else f"{e['images_per_s']:.0f}"
        done = (f"steps {e['start_step']} → {e['end_step']}, {rate} img/s" if "end_step" in e
                else e.get("skipped_training", ""))
        return f"{done}; export sha256 {e['export']['sha256'][:12]}… (step {e['export']['step']})"
    return ""


def print_table(report: dict) -> None:
    print(f"\n{'section':17s} {'status':12s} {'seconds':>8s}  result")
    for name, e in report["sections"].items():
        seconds = f"{e['seconds']:8.1f}" if "seconds" in e else f"{'':8s}"
        try:
            text = summary(name, e)
        except (KeyError, TypeError, ValueError) as err:  # the JSON holds everything; the table is a digest
            text = f"(no summary: {err!r})"
        print(f"{name:17s} {e['status']:12s} {seconds}  {text}")
    print(f"budget {report['budget_s']:.0f} s, used {report['elapsed_s']:.1f} s; wrote {report['out']}")


# --- the command line ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/gpu_check.json", help="the JSON report (rewritten after every section)")
    p.add_argument("--tiny", action="store_true", help="shrink every section to seconds on a CPU (CI)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of the call (default 480; --tiny 300)")
    p.add_argument("--train-dir", default=None,
                   help=f"the training run to continue (default runs/{Path(GPU_MODEL.name).stem}; --tiny: a new temporary folder)")
    p.add_argument("--export", default=None, help=f"the exported EMA parameters (default {GPU_MODEL.name}; "
                   "--tiny: inside the train dir); its metadata JSON is written beside it")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 data dir for training (as python -m sbgc.train --data-dir)")
    p.add_argument("--model", default="auto", help="network of sections 3-5: a shipped name, a parameter file or "
                   "'none' (untrained); auto: the workstation model if its file exists, else an untrained small network "
                   "(--tiny: an untrained TINY_NETWORK)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--fail-section", default=None, choices=SECTIONS,
                   help="make this section raise at its start (tests that a failure is recorded, not fatal)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        raise SystemExit(f"--sections: unknown or empty {unknown or chosen}; choose from {', '.join(SECTIONS)}")
    if args.fail_section is not None and args.fail_section not in chosen:
        raise SystemExit(f"--fail-section {args.fail_section} is not among --sections {','.join(chosen)}")
    if args.model == "auto":
        args.model = "none" if args.tiny or not GPU_MODEL.path().is_file() else GPU_MODEL.name
    if args.train_dir is None:
        args.train_dir = tempfile.mkdtemp(prefix="gpu_check_train_") if args.tiny else str(ROOT / "runs" / Path(GPU_MODEL.name).stem)
    plan = (tiny_plan if args.tiny else full_plan)(args.model)
    # From the script's start when run as one (the imports count), else from this call's start.
    budget = Budget(args.budget_s if args.budget_s is not None else (300.0 if args.tiny else 480.0),
                    started=_STARTED if argv is None else time.monotonic())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "script": "bench/gpu_check.py", "argv": sys.argv[1:] if argv is None else list(argv),
        "mode": "tiny" if args.tiny else "full", "budget_s": budget.seconds, "out": str(out),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "plan": json_ready(dataclasses.asdict(plan)), "section_order": list(SECTIONS), "sections": {},
        "finished": False,
    }  # fmt: skip

    def save() -> None:
        report["elapsed_s"] = time.monotonic() - budget.started
        write_json_atomic(out, report)

    ctx: dict = {"budget": budget, "save": save}
    for name in SECTIONS:
        entry: dict = {"status": "running"}
        report["sections"][name] = entry
        if name not in chosen:
            entry.update(status="not selected")
            continue
        left = budget.left()
        if left < plan.estimate(name):
            entry.update(status="skipped", reason=f"{left:.0f} s of the budget left, the section needs ~{plan.estimate(name):.0f} s")
            save()
            continue
        print(f"[gpu_check] {name} ({left:.0f} s of the budget left)", file=sys.stderr, flush=True)
        t0, cpu0 = time.perf_counter(), time.process_time()
        try:
            if name == args.fail_section:
                raise ForcedFailure(f"section {name} forced to fail (--fail-section {name})")
            SECTION_FUNCTIONS[name](plan, args, ctx, entry)
            entry["status"] = "ok"
        except Exception as e:  # a failing section is recorded and the next one runs
            entry.update(status="error", error=f"{type(e).__name__}: {e}",
                         traceback=traceback.format_exc()[-4000:])
        entry["seconds"] = time.perf_counter() - t0
        entry["cpu_s"] = time.process_time() - cpu0  # CPU time of this process (all threads)
        print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']:.1f} s", file=sys.stderr, flush=True)
        save()
    report["finished"] = True
    save()
    print_table(report)
    return report


def json_ready(obj: Any) -> Any:
    """Dataclass fields as JSON values (tuples as lists, SolverSettings as dicts)."""
    if dataclasses.is_dataclass(obj):
        return json_ready(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
