"""Which MNIST score network to train on 2 CPU cores: the same CPU budget for each candidate size,
then the bound classifier's accuracy on the same random test images.

    python bench/mnist_candidates.py [--profiles mnist_s mnist_m mnist_l] [--minutes 10]
        [--images 300] [--times 32] [--workdir runs/mnist-candidates]
        [--out bench/results/mnist_candidates_cpu.json]

For each profile it trains (``sbgc.train.score.train`` with ``time_limit``; a second call resumes, so a
killed comparison continues), exports the EMA parameters, and classifies ``--images`` test images
drawn at random (seed 0, the same for every candidate) by the variational bound
(``sbgc.method.bound.class_log_bounds``, K = ``--times`` stratified times, common random numbers across
classes). It reports accuracy with a 95 % Clopper–Pearson interval, the bound's bits/dim of the
true class, parameters, steps, images/s and accuracy per CPU-hour of training. The workdirs stay:
the chosen candidate's run continues from its own checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from sbgc.data.mnist import load_mnist
from sbgc.method.bound import BoundSettings, class_log_bounds
from sbgc.stats import binomial_interval
from sbgc.train import loop
from sbgc.train import score as T
from sbgc.train.pretrained import load_model


def _read_log(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def evaluate(model_path: Path, n_images: int, n_times: int, seed: int = 0) -> dict:
    """Bound-classifier accuracy of a parameter file on ``n_images`` random MNIST test images."""
    test = load_mnist("test")
    idx = np.sort(np.random.default_rng(seed).choice(len(test), n_images, replace=False))
    model = load_model(model_path)
    t0 = time.perf_counter()
    res = class_log_bounds(model.score_fn, model.sde, test.images[idx], jax.random.PRNGKey(seed),
                           settings=BoundSettings(n_times=n_times, data_std=0.62), chunk_size=512, progress=False)
    seconds = time.perf_counter() - t0
    pred = res.predict()
    correct = int(np.sum(pred == test.labels[idx]))
    lo, hi = binomial_interval(correct, n_images)
    true_bpd = res.bpd[np.arange(n_images), test.labels[idx]]
    return {"correct": correct, "n_images": n_images, "accuracy": correct / n_images, "interval95": [lo, hi],
            "true_class_bound_bpd_mean": float(np.mean(true_bpd)), "n_times": n_times,
            "eval_seconds": seconds, "test_indices_seed": seed, "sha256": model.sha256}


def write(a, rows: list[dict]) -> None:
    out = {"what": "MNIST candidate score networks: same CPU budget, bound-classifier accuracy",
           "device": loop.device_name(), "jax_version": jax.__version__, "minutes_each": a.minutes,
           "data": "MNIST official files (exact pixels); train split for training, random test images",
           "command": "python bench/mnist_candidates.py " + " ".join(sys.argv[1:]), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", nargs="+", default=["mnist_s", "mnist_m", "mnist_l"])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--times", type=int, default=32)
    p.add_argument("--workdir", default="runs/mnist-candidates")
    p.add_argument("--out", default="bench/results/mnist_candidates_cpu.json")
    a = p.parse_args(argv)
    rows = []
    for profile in a.profiles:
        cfg = T.get_train_config(profile)
        workdir = Path(a.workdir) / profile
        meta = T.train(cfg, 10**7, workdir, time_limit=a.minutes * 60, progress=False)
        model_path = workdir / "ema.msgpack"
        T.export_ema(workdir, model_path)
        log = _read_log(workdir / "train_log.csv")
        ips = [float(r["images_per_s"]) for r in log[1:]] or [float(log[0]["images_per_s"])]  # row 1: compile
        clipped = [float(r["clipped"]) for r in log if r.get("clipped")]
        ev = evaluate(model_path, a.images, a.times)
        hours = meta["train_seconds"] / 3600
        row = {"profile": profile, "n_params": meta["n_params"], "steps": meta["step"],
               "train_seconds": meta["train_seconds"], "images_per_s_median": float(np.median(ips)) if ips else None,
               "clipped_share": float(np.mean(clipped)) if clipped else None,
               "accuracy_per_cpu_hour": ev["accuracy"] / hours, **ev}
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(a, rows)  # after every candidate: a stopped comparison keeps what it measured
    print("| profile | params | steps | img/s | CPU min | acc (95% CI) | bound bpd (true y) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['n_params']:,} | {r['steps']} | {r['images_per_s_median']:.0f} | "
              f"{r['train_seconds'] / 60:.1f} | {100 * r['accuracy']:.1f} % ({100 * r['interval95'][0]:.1f}–"
              f"{100 * r['interval95'][1]:.1f}) | {r['true_class_bound_bpd_mean']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
