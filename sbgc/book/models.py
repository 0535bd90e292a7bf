"""The models a book profile needs: which are there, which must be trained, for how long, and
training them (``python -m sbgc.book models --profile P``; ``make book`` runs it first).

Each model of a profile is a :class:`sbgc.book.profiles.ModelSpec`: a name that resolves to the
exported file the chapters load, and the resumable commands that produce it. :func:`plan` says for
each whether its file is there and, if not, the commands and an estimate of the training time from
the throughput measured by ``bench/train_throughput.py`` on this kind of device (or that none was
measured). :func:`produce` runs the commands of the missing ones, in order; a killed run continues
where its last checkpoint left it, because the training CLIs resume from their ``--workdir``.

A **dry run** (``--dry-run DIR``) goes through the same plan for the same names, in the same order,
but trains each model for a couple of steps on tiny batches and writes every file under ``DIR``
(runs, exported models), so the GPU path's training, export and loading are exercised on a CPU
without touching the real checkpoints; :func:`dry_run_overrides` then shrinks every chapter's
knobs to those of a CPU profile of the same dataset (samples capped: :data:`DRY_RUN_CAPS`, :data:`DRY_RUN_FIRST`)
while keeping the profile and its models.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from sbgc.book import profiles
from sbgc.book.profiles import REPO, ModelSpec

THROUGHPUT_GLOB = "train_throughput_*.json"  # bench/train_throughput.py's records under bench/results
DRY_RUN_TRAINING = ("--steps", "2", "--batch-size", "2", "--log-every", "1", "--ckpt-every", "1")
DRY_RUN_KNOBS_LIKE = {"cifar10": "ci_cifar10", "mnist": "ci"}  # a CPU profile of each dataset
# ... whose baseline samples were sized for a tiny CPU baseline, not a GPU profile's (WRN-28-10: ~0.1 s per
# CIFAR-10 image on 2 CPU cores)
# CI runs the dry run on 2 CPU cores, where every chapter's compute goes through the workstation's 2.7M-parameter
# U-Net (~1 s per forward pass of 10 classes, ~40 s per attack gradient): one image, pair or probe count of each
# kind is enough to run each code path (the samples' statistics are the ci profile's business).
DRY_RUN_CAPS = {"n_baseline_images": 20, "n_images": 1, "n_exact_images": 1, "n_bpd_images": 1, "n_t": 3,
                "ode.n_probes": 2, "reference.n_probes": 2, "n_reference_images": 1, "n_compare_images": 1,
                "n_noise_images": 1, "n_noise_reference_images": 1, "n_tight_images": 1, "n_subsamples": 5}
DRY_RUN_FIRST = {"corruptions": 2, "ode_probes": 1, "bound_times": 1}  # list knobs cut to their first entries
# ... except knobs that choose a code path, raised towards the profile's own value (at most to the cap): with the CPU
# profile's single probe the dry run never ran the attack's gradient with several probes, which crashed on XLA:CPU
DRY_RUN_FROM_PROFILE = {"ode.n_probes": 2}
# ... and knobs kept as the profile has them: the GPU profiles size their chunks from the device's memory (None),
# a code path the CPU profiles' fixed chunks never take (on a CPU it falls back to a fixed size)
DRY_RUN_KEEP = ("ode.chunk_size",)


@dataclasses.dataclass(frozen=True)
class ModelStep:
    """One model of a profile: where the chapters load it, whether it is there, and how to make it."""

    role: str  # "score model", "baseline" or "plain CNN"
    spec: ModelSpec
    path: Path  # the exported file the chapters load
    present: bool
    commands: tuple[tuple[str, ...], ...]  # argv of each command (train, then export), run from the repo
    estimate_s: float | None  # training time from measured throughput; None: not measured here
    estimate_note: str

    def describe(self) -> str:
        if self.present:
            return f"{self.role} {self.spec.name}: present ({_rel(self.path)})"
        if self.estimate_s is None and self.estimate_note.startswith("dry run"):
            what = f"{self.estimate_note} of profile {self.spec.train_profile} (it trains {self.spec.steps:,})"
        else:
            eta = f"~{self.estimate_s / 3600:.1f} h" if self.estimate_s is not None else "time unknown"
            what = f"{self.spec.steps:,} steps of profile {self.spec.train_profile} ({eta}: {self.estimate_note})"
        return f"{self.role} {self.spec.name}: to train, {what}, then export to {_rel(self.path)}"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def measured_throughput(results: Path = REPO / "bench" / "results") -> dict[tuple[str, str, str], float]:
    """Training images/s measured by ``bench/train_throughput.py``: {(kind, train profile, device): images/s},
    kind "sbgc" or "baseline" (rows without one are score models), the float32 rows, the best of several
    records of the same triple."""
    table: dict[tuple[str, str, str], float] = {}
    for path in sorted(results.glob(THROUGHPUT_GLOB)):
        record = json.loads(path.read_text())
        device = str(record.get("device", "?")).split(" (")[0]  # "1x cpu (cpu)" -> "1x cpu"
        for row in record.get("rows", []):
            if row.get("dtype", "float32") == "float32" and row.get("images_per_s"):
                k = (row.get("kind", "sbgc"), row["profile"], device)
                table[k] = max(table.get(k, 0.0), float(row["images_per_s"]))
    return table


def batch_size(spec: ModelSpec) -> int:
    """The training batch of the spec's training profile."""
    from sbgc.train import baseline, score

    config = (score.get_train_config if spec.kind == "sbgc" else baseline.get_baseline_train_config)(spec.train_profile)
    return int(config.batch_size)


def estimate_seconds(spec: ModelSpec, device: str, throughput: dict[tuple[str, str, str], float]) -> tuple[float | None, str]:
    """(seconds, how they were estimated) to train ``spec`` on ``device`` ("1x cpu", "1x NVIDIA H200", …)."""
    rate = throughput.get((spec.kind, spec.train_profile, device))
    if rate is None:
        have = sorted({d for k, p, d in throughput if (k, p) == (spec.kind, spec.train_profile)})
        flag = "--profiles" if spec.kind == "sbgc" else "--profiles --baselines"
        return None, (f"no throughput of {spec.kind} profile {spec.train_profile} measured on {device}"
                      + (f" (measured on: {', '.join(have)})" if have else "")
                      + f"; measure it with `python bench/train_throughput.py {flag} {spec.train_profile}`")
    images = spec.steps * batch_size(spec)
    return images / rate, f"{images:,} images at {rate:.1f} images/s measured on {device}"


def current_device() -> str:
    import jax

    return f"{jax.device_count()}x {jax.devices()[0].device_kind}"


def _commands(spec: ModelSpec, path: Path, workdir: Path, dry_run: bool) -> tuple[tuple[str, ...], ...]:
    steps = DRY_RUN_TRAINING if dry_run else ("--steps", str(spec.steps))
    no_eval = ("--no-eval",) if dry_run and spec.kind == "baseline" else ()  # a 2-step net's test accuracy says nothing
    return spec.argv(workdir, path, python=sys.executable, train_args=(*steps, "--no-progress"), export_args=no_eval)


def plan(profile: str, *, dry_run: Path | None = None, device: str | None = None,
         throughput: dict[tuple[str, str], float] | None = None) -> list[ModelStep]:
    """The profile's models in the order the book needs them (score model, baseline, then the plain CNN if any).

    ``dry_run``: every file under that folder instead (the same relative paths), trained with
    :data:`DRY_RUN_TRAINING`; nothing outside it is read as present or written.
    """
    prof = profiles.get_profile(profile)
    dry_run = None if dry_run is None else Path(dry_run).resolve()  # the commands run from the repository
    device = device or current_device()
    throughput = measured_throughput() if throughput is None else throughput
    steps = []
    roles = ("score model", "baseline", "plain CNN")
    for role, spec in zip(roles, prof.models()):
        path = spec.path()
        if dry_run is not None:
            path = Path(dry_run) / (path.relative_to(REPO) if path.is_relative_to(REPO) else path.name)
        workdir = (Path(dry_run) if dry_run is not None else REPO) / spec.workdir()
        estimate, note = ((None, "dry run: 2 steps") if dry_run is not None
                          else estimate_seconds(spec, device, throughput))  # fmt: skip
        steps.append(ModelStep(role, spec, path, path.is_file(), _commands(spec, path, workdir, dry_run is not None), estimate, note))
    return steps


def produce(steps: Sequence[ModelStep], run: Callable[..., Any] = subprocess.run) -> list[Path]:
    """Run the commands of every missing model, in order (each raises on failure, naming the command);
    returns the paths of the models made."""
    made = []
    for step in steps:
        if step.present:
            continue
        for argv in step.commands:
            print(f"[sbgc.book.models] {step.spec.name}: {shlex.join(argv)}", flush=True)
            result = run(list(argv), cwd=REPO)
            if getattr(result, "returncode", 0) != 0:
                raise RuntimeError(f"{step.role} {step.spec.name}: `{shlex.join(argv)}` failed "
                                   f"(exit {result.returncode}); rerun `python -m sbgc.book models` to resume")
        if not step.path.is_file():
            raise RuntimeError(f"{step.role} {step.spec.name}: its commands ran but {step.path} was not written")
        made.append(step.path)
    return made


def dry_run_overrides(profile: str, steps: Sequence[ModelStep], notebook: str) -> dict[str, Any]:
    """The overrides of a dry run of ``notebook`` at ``profile``: every knob as in the CPU profile of the
    same dataset (:data:`DRY_RUN_KNOBS_LIKE`) with samples capped, the knobs of :data:`DRY_RUN_FROM_PROFILE`
    raised towards ``profile``'s own (at most to the cap) and those of :data:`DRY_RUN_KEEP` as ``profile`` has
    them, the models those of ``steps`` (the dry-run files)."""
    prof = profiles.get_profile(profile)
    like = profiles.get_profile(DRY_RUN_KNOBS_LIKE[prof.dataset])
    overrides: dict[str, Any] = {k: "none" if v is None else v for k, v in profiles.flat_fields(like.chapters[notebook]).items()}
    overrides.update({k: min(overrides[k], cap) for k, cap in DRY_RUN_CAPS.items() if k in overrides})
    overrides.update({k: tuple(overrides[k][:n]) for k, n in DRY_RUN_FIRST.items() if isinstance(overrides.get(k), tuple)})
    own = profiles.flat_fields(prof.chapters[notebook])
    overrides.update({k: max(overrides[k], min(own[k], cap)) for k, cap in DRY_RUN_FROM_PROFILE.items() if k in own})
    overrides.update({k: "none" if own[k] is None else own[k] for k in DRY_RUN_KEEP if k in own})
    models = dict(zip(("checkpoint", "baseline", "plain_cnn"), (str(s.path) for s in steps)))
    overrides.update({k: models.get(k, "none") for k in profiles.MODELS_USED[notebook]})
    return overrides


# Chapters run side by side (--jobs) start in reading order, except these first: 04_adversarial compiles the
# attack's second-order gradients through the U-Net (measured: ~40 % of the dry run's chapter time).
DRY_RUN_STARTS_FIRST = ("04_adversarial",)


def dry_run_chapters(profile: str) -> list[str]:
    """The chapters a dry run of ``profile`` executes, in the order they start (:data:`DRY_RUN_STARTS_FIRST`
    first): every chapter that loads one of the profile's models.

    A chapter that loads none (``01_method``: a 2-D toy model trained on the spot) runs, in a dry run, with
    exactly the knobs of the CPU profile of the same dataset (:data:`DRY_RUN_KNOBS_LIKE`), so its dry run
    would repeat that profile's own run (``make test`` runs the ``ci`` one) and is left out."""
    prof = profiles.get_profile(profile)
    like = profiles.get_profile(DRY_RUN_KNOBS_LIKE[prof.dataset])
    names = [name for name in profiles.NOTEBOOKS
             if profiles.MODELS_USED[name] or like.chapters[name] != profiles.get_profile("ci").chapters[name]]
    return sorted(names, key=lambda name: name not in DRY_RUN_STARTS_FIRST)


def require_accelerator(steps: Sequence[ModelStep], profile: str) -> None:
    """Refuse to train a GPU profile's missing models on a CPU, saying exactly what to install."""
    import jax

    missing = [s for s in steps if not s.present]
    if not missing or jax.default_backend() != "cpu":
        return
    eta = [s.describe() for s in missing]
    raise RuntimeError(
        f"profile {profile} needs {len(missing)} model(s) trained, and jax sees only a CPU:\n  " + "\n  ".join(eta)
        + f"\nOn an NVIDIA GPU machine install the CUDA build of the pinned jax, `{sys.executable} -m pip install "
        f"\"jax[cuda13]=={jax.__version__}\"` (CUDA 13 driver), check `python -c 'import jax; print(jax.devices())'`, "
        f"and rerun `make book PROFILE={profile}`. To train on this CPU anyway: "
        f"`python -m sbgc.book models --profile {profile} --allow-cpu`.")
