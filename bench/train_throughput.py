"""Training throughput: images/s and peak device memory per model profile and compute dtype.

    python bench/train_throughput.py [--profiles small paper] [--dtypes float32 bfloat16]
        [--batch-size 128] [--steps 20] [--steps-per-call 1] [--out results/bench_train_throughput.json]
        [--trace DIR] [--baselines wrn28_10]

For each (profile, dtype) it times, on the same device and in the same process:
  forward     the network alone on one batch,
  fwd+bwd     value and gradient of the training loss,
  train step  the full step of ``sbgc.train.score`` (batch gather, flips, dequantization, loss,
              gradient, clipping, Adam, EMA),
so the table shows where a step's time goes. ``--baselines`` adds the discriminative baselines' full
train step (``sbgc.train.baseline``, float32); every row says its ``kind`` ("sbgc" or "baseline"). Each figure is the median of ``--steps`` timed calls
after one compile-and-warm-up call. Peak memory is read from the device's allocator
(``memory_stats()['peak_bytes_in_use']``; not available on CPU). Data are random uint8 images
resident on the device, as in training. ``--trace DIR`` writes a ``jax.profiler`` trace of the
timed train steps for TensorBoard/Perfetto.
"""

from __future__ import annotations

import argparse
import sys
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sbgc.method.networks import count_params, get_config, make_noise_fn
from sbgc.method.sde import SDE
from sbgc.train import score as T


def _median_seconds(fn, n: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0))


def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def bench_one(profile: str, dtype: str, batch: int, steps: int, steps_per_call: int, trace: str | None,
              step_only: bool = False, model_overrides: dict | None = None) -> dict:
    """One row of the table: timings of ``profile`` in compute ``dtype`` at batch ``batch``.

    ``step_only``: time the full train step alone (one compilation instead of three);
    ``forward_s`` and ``fwd_bwd_s`` are then None. ``model_overrides``: ModelConfig fields replacing
    the profile's. ``peak_bytes`` is the allocator's peak of the whole process so far (it is never
    reset), not of this row alone.
    """
    cfg = T.get_train_config(profile, batch_size=batch, dtype=dtype, steps_per_call=steps_per_call,
                             log_every=steps_per_call, ckpt_every=steps_per_call)
    model_cfg = get_config(profile, dtype=dtype, **(model_overrides or {}))
    sde = SDE(cfg.sde)
    optimizer = T.make_optimizer(cfg, T.reference_loss_scale(cfg, sde))
    shape = (model_cfg.image_size, model_cfg.image_size, model_cfg.channels)
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    repl = NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    n_images = max(4 * batch, 1024)
    images = jax.device_put(rng.integers(0, 256, (n_images, *shape), dtype=np.uint8), repl)
    labels = jax.device_put(rng.integers(0, 10, (n_images,), dtype=np.int32), repl)
    state = jax.device_put(T.init_state(jax.random.PRNGKey(0), model_cfg, optimizer), repl)

    if not step_only:
        noise_fn = make_noise_fn(model_cfg)
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, *shape))
        t = jnp.full((batch,), 0.5)
        y = jnp.zeros((batch,), jnp.int32)
        fwd = jax.jit(lambda p: noise_fn(p, x, t, y, train=True, dropout_key=jax.random.PRNGKey(2)))
        grad = jax.jit(jax.value_and_grad(lambda p: jnp.mean(noise_fn(p, x, t, y, train=True,
                                                                       dropout_key=jax.random.PRNGKey(2)) ** 2)))
    chunk = T.make_train_chunk(cfg, model_cfg, sde, optimizer, mesh)
    holder = {"state": state}

    def step():
        holder["state"], m = chunk(holder["state"], images, labels)
        return m["loss"]

    row = {"profile": profile, "dtype": dtype, "batch": batch, "n_params": count_params(state["params"]),
           "steps_per_call": steps_per_call}
    row["forward_s"] = None if step_only else _median_seconds(lambda: fwd(holder["state"]["params"]), steps)
    row["fwd_bwd_s"] = None if step_only else _median_seconds(lambda: grad(holder["state"]["params"]), steps)
    if trace:
        jax.profiler.start_trace(str(Path(trace) / f"{profile}-{dtype}"))
    row["step_s"] = _median_seconds(step, steps) / steps_per_call
    if trace:
        jax.profiler.stop_trace()
    row["images_per_s"] = batch / row["step_s"]
    row["peak_bytes"] = _peak_bytes()
    return row


def bench_baseline(profile: str, batch: int, steps: int) -> dict:
    """One row for a discriminative baseline (``sbgc.train.baseline``): its full train step (crop,
    flip, dequantization, forward, backward, SGD, EMA) at batch ``batch`` in float32, timed as
    :func:`bench_one`'s ``step_only`` rows."""
    import functools

    from sbgc.train import baseline as B

    cfg = B.get_baseline_train_config(profile, batch_size=batch)
    model_cfg = B.NETWORK_PROFILES[cfg.profile]
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    repl = NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    shape = (model_cfg.image_size, model_cfg.image_size, model_cfg.channels)
    n_images = max(4 * batch, 1024)
    images = jax.device_put(rng.integers(0, 256, (n_images, *shape), dtype=np.uint8), repl)
    labels = jax.device_put(rng.integers(0, 10, (n_images,), dtype=np.int32), repl)
    optimizer = B.make_optimizer(cfg)
    state = jax.device_put(B.init_state(jax.random.PRNGKey(0), model_cfg, optimizer), repl)
    step_fn = jax.jit(functools.partial(B.train_step, cfg=cfg, model_cfg=model_cfg, optimizer=optimizer,
                                        batch_sharding=NamedSharding(mesh, P("data"))), donate_argnums=0)  # fmt: skip
    holder = {"state": state}

    def step():
        holder["state"], m = step_fn(holder["state"], images, labels)
        return m["loss"]

    row = {"kind": "baseline", "profile": profile, "dtype": "float32", "batch": batch,
           "n_params": count_params(state["params"]), "steps_per_call": 1, "forward_s": None, "fwd_bwd_s": None}
    row["step_s"] = _median_seconds(step, steps)
    row["images_per_s"] = batch / row["step_s"]
    row["peak_bytes"] = _peak_bytes()
    return row


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1e3 * seconds:.1f}"


def _print_row(r: dict) -> None:
    print(f"{r['kind']:8s} {r['profile']:8s} {r['dtype']:9s} batch {r['batch']:4d}  fwd {_ms(r['forward_s']):>9s} ms  "
          f"fwd+bwd {_ms(r['fwd_bwd_s']):>9s} ms  step {_ms(r['step_s']):>9s} ms  {r['images_per_s']:9.1f} img/s  "
          f"peak {_gib(r['peak_bytes'])} GiB", flush=True)  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", nargs="*", default=["small", "paper"], help="score-model profiles (none: --profiles alone)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed calls per measurement")
    p.add_argument("--steps-per-call", type=int, default=1, help="train steps fused into one call (lax.scan)")
    p.add_argument("--out", default="results/bench_train_throughput.json")
    p.add_argument("--trace", default=None, help="folder for a jax.profiler trace of the timed steps")
    p.add_argument("--baselines", nargs="*", default=[],
                   help="baseline training profiles (sbgc.train.baseline, e.g. wrn28_10) timed after the score models")
    a = p.parse_args(argv)

    device = f"{jax.device_count()}x {jax.devices()[0].device_kind} ({jax.default_backend()})"
    rows = []
    for profile in a.profiles:
        for dtype in a.dtypes:
            rows.append(dict(kind="sbgc", **bench_one(profile, dtype, a.batch_size, a.steps, a.steps_per_call, a.trace)))
            _print_row(rows[-1])
    for profile in a.baselines:
        rows.append(bench_baseline(profile, a.batch_size, a.steps))
        _print_row(rows[-1])
    print(f"\ndevice: {device}, jax {jax.__version__}")
    print("| model | profile | dtype | params | batch | forward ms | fwd+bwd ms | train step ms | images/s | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['profile']} | {r['dtype']} | {r['n_params'] / 1e6:.2f}M | {r['batch']} | "
              f"{_ms(r['forward_s'])} | {_ms(r['fwd_bwd_s'])} | {_ms(r['step_s'])} | {r['images_per_s']:.1f} | "
              f"{_gib(r['peak_bytes'])} |")  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "jax_version": jax.__version__, "rows": rows,
                               "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
