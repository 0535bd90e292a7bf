"""Run profiles and the registry of the book's notebooks.

Every notebook of the book is a jupytext percent file ``notebooks/<name>.py`` whose papermill
``parameters`` cell sets ``profile = "ci"`` and one knob per entry of :data:`NOTEBOOKS` (default
``None``). The next cell resolves them::

    P = resolve_params("01_method", profile, n_train_per_class=n_train_per_class, ...)

A profile gives every knob a default; a knob passed as non-``None`` overrides it. Profiles:

``ci``           minutes on 2 CPU cores: coarse grids, few samples, loose ODE tolerances. Numbers
                 check that the pipeline works, not what the method achieves.
``workstation``  an hour or so on one GPU (or a long CPU run): finer grids, more samples.
``paper``        the paper's settings wherever they are affordable at all.

Adding a notebook: write ``notebooks/<name>.py``, add ``<name>`` with its knobs to
:data:`NOTEBOOKS` (reading order is the order of the dict) and ``notebooks/<name>`` to
``book/_toc.yml``. ``tests/test_book.py`` checks that the registry and the table of contents agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

PROFILES: tuple[str, ...] = ("ci", "workstation", "paper")

PROFILE_DESCRIPTIONS: Mapping[str, str] = {
    "ci": "minutes on 2 CPU cores; checks the pipeline, not the method's numbers",
    "workstation": "about an hour on one GPU; finer grids, more samples",
    "paper": "the paper's settings wherever affordable",
}

# Knob -> (ci, workstation, paper) default, in the order of PROFILES.
Knobs = Mapping[str, tuple[Any, Any, Any]]

NOTEBOOKS: dict[str, Knobs] = {
    "01_method": {
        "seed": (0, 0, 0),
        # the 2-D class-conditional Gaussian mixture of the worked example
        "n_train_per_class": (2_000, 10_000, 50_000),
        "n_test_per_class": (300, 2_000, 10_000),
        # the toy score network and its maximum-likelihood training
        "hidden": (64, 128, 256),
        "n_layers": (3, 3, 4),
        "train_steps": (4_000, 20_000, 60_000),
        "batch_size": (128, 256, 512),
        "learning_rate": (2e-3, 1e-3, 1e-3),
        # probability-flow ODE likelihood
        "eps": (1e-5, 1e-5, 1e-5),
        "rtol": (1e-3, 1e-5, 1e-5),
        "atol": (1e-3, 1e-5, 1e-5),
        # density heatmaps and decision regions: grid_size x grid_size points
        "grid_size": (40, 100, 200),
        # importance-sampling histogram
        "n_t_draws": (20_000, 200_000, 1_000_000),
    },
    "02_table1": {
        "seed": (0, 0, 0),
        # score model and discriminative baseline: shipped names or paths to exported .msgpack files
        "checkpoint": ("ci", "small_gpu", "paper_gpu"),
        "baseline": ("ci", "wrn28_10_gpu", "wrn28_10_gpu"),
        # SBGC: random images of the test split found on the machine, and of the 846 exact images
        "n_images": (5, 500, 10_000),
        "n_exact_images": (5, 846, 846),
        # the baseline: a random sample of the test split (it needs one forward pass per image)
        "n_baseline_images": (2_000, 10_000, 10_000),
        # probability-flow ODE (paper: 30 probes, rtol = atol = 1e-5, eps = 1e-5)
        "n_probes": (1, 10, 30),
        "rtol": (1e-2, 1e-4, 1e-5),
        "atol": (1e-2, 1e-4, 1e-5),
        "eps": (1e-5, 1e-5, 1e-5),
        "chunk_size": (10, 250, 250),
    },
    "03_cifar10c": {
        "seed": (0, 0, 0),
        # score model and discriminative baseline: shipped names or paths to exported .msgpack files
        "checkpoint": ("ci", "small_gpu", "paper_gpu"),
        "baseline": ("ci", "wrn28_10_gpu", "wrn28_10_gpu"),
        # clean images: "exact_head" (846 exact test images) or "test" (the test split found on the machine)
        "data": ("exact_head", "test", "test"),
        # random images (one fixed permutation; paper: a 10 % subset, 1,000 images) for the SBGC, and
        # for the baseline (its first n_images are the SBGC's)
        "n_images": (1, 40, 1_000),
        "n_baseline_images": (200, 10_000, 10_000),
        # CIFAR-10-C settings: comma-separated severities in 1..5, "all" or comma-separated corruptions
        "severities": ("3", "1,2,3,4,5", "1,2,3,4,5"),
        "corruptions": ("all", "all", "all"),
        # probability-flow ODE (paper, for CIFAR-10-C: 10 probes, rtol = atol = 1e-5, eps = 1e-5)
        "n_probes": (1, 10, 10),
        "rtol": (1e-2, 1e-4, 1e-5),
        "atol": (1e-2, 1e-4, 1e-5),
        "eps": (1e-5, 1e-5, 1e-5),
        "chunk_size": (10, 250, 250),
    },
    "04_adversarial": {
        "seed": (0, 0, 0),
        # score model and discriminative baseline: shipped names or paths to exported .msgpack files
        "checkpoint": ("ci", "small_gpu", "paper_gpu"),
        "baseline": ("ci", "wrn28_10_gpu", "wrn28_10_gpu"),
        # "exact_head" (846 exact test images) or "test" (the test split found on the machine)
        "data": ("exact_head", "exact_head", "test"),
        # images attacked (paper: N = 216); the baseline is attacked on these and more
        "n_images": (1, 16, 216),
        "n_baseline_images": (100, 1_000, 1_000),
        # the SBGC's logits: probes (paper: 10), solver, fixed steps (0: adaptive with rtol/atol)
        "n_probes": (1, 10, 10),
        "solver": ("heun", "dopri5", "dopri5"),
        "n_steps": (4, 0, 0),
        "rtol": (1e-2, 1e-4, 1e-5),
        "atol": (1e-2, 1e-4, 1e-5),
        "eps": (1e-5, 1e-5, 1e-5),
        # PGD (the paper does not state steps or step size): steps, step size / epsilon
        "pgd_steps": (1, 10, 10),
        "rel_stepsize": (1.0, 0.25, 0.25),
        # finite-difference check of the gradient: random directions and step h
        "n_fd_directions": (2, 4, 4),
        "fd_h": (5e-2, 5e-2, 5e-2),
        "n_show": (1, 3, 4),
    },
    "05_interpolation": {
        "seed": (0, 0, 0),
        # score model: a shipped name (sbgc.train.pretrained.SHIPPED) or a path to an exported .msgpack
        "checkpoint": ("ci", "small_gpu", "paper_gpu"),
        # random pairs of exact test images, values of t in [0, 1] (paper: 500 pairs, 24 values)
        "n_pairs": (2, 100, 500),
        "n_t": (5, 24, 24),
        # probability-flow ODE likelihood (paper: 30 probes, rtol = atol = 1e-5, eps = 1e-5)
        "n_probes": (1, 10, 30),
        "rtol": (1e-2, 1e-4, 1e-5),
        "atol": (1e-2, 1e-4, 1e-5),
        "eps": (1e-5, 1e-5, 1e-5),
        "chunk_size": (10, 250, 250),
        # interpolation strips shown as images
        "n_strips": (2, 4, 4),
    },
    "06_convergence": {
        "seed": (0, 0, 0),
        # score model: a shipped name (sbgc.train.pretrained.SHIPPED) or a path to an exported .msgpack
        "checkpoint": ("ci", "small_gpu", "paper_gpu"),
        # "exact_head" (846 exact test images) or "test" (the whole test split found on the machine)
        "data": ("exact_head", "exact_head", "test"),
        "n_images": (2, 200, 1000),
        # repetitions of the trace estimator, all computed once (paper: up to 30)
        "n_probes": (4, 30, 30),
        "n_subsamples": (20, 100, 200),
        # images (the first of the sample) for the CRN and shared-trajectory comparisons
        "n_compare_images": (1, 50, 100),
        # probability-flow ODE (paper: rtol = atol = 1e-5, eps = 1e-5)
        "rtol": (1e-2, 1e-4, 1e-5),
        "atol": (1e-2, 1e-4, 1e-5),
        "eps": (1e-5, 1e-5, 1e-5),
        "chunk_size": (10, 250, 250),
    },
    "07_compute": {
        "seed": (0, 0, 0),
        # score model: a shipped name (sbgc.train.pretrained.SHIPPED) or a path to an exported .msgpack
        "checkpoint": ("ci", "small_gpu", "paper_gpu"),
        # random exact CIFAR-10 test images (at most 846), the same for every classifier setting
        "n_images": (2, 200, 500),
        # exact ODE: probes n and tolerances (rtol = atol), comma-separated (paper: 30 probes, 1e-5)
        "ode_probes": ("1,3", "1,3,10,30", "1,3,10,30"),
        "ode_rtols": ("1e-2", "1e-3,1e-5", "1e-3,1e-5"),
        "ode_chunk": (10, 50, 100),
        # variational bound: times K per image and class; pruning settings K1/keep/K2
        "bound_times": ("10,30,100", "10,30,100,300,1000", "10,30,100,300,1000"),
        "pruning": ("10/2/50", "10/2/100,20/2/300,20/3/1000", "10/2/100,20/2/300,20/3/1000"),
        "sampling": ("stratified", "stratified", "stratified"),
        "bound_chunk": (256, 4096, 4096),
        "eps": (1e-5, 1e-5, 1e-5),
    },
}


def _check_registry(notebooks: Mapping[str, Knobs]) -> None:
    """Every knob has one default per profile, and no knob shadows a reserved name."""
    for name, knobs in notebooks.items():
        for knob, defaults in knobs.items():
            if knob == "profile":
                raise ValueError(f"notebook {name}: 'profile' is reserved, not a knob")
            if not isinstance(defaults, tuple) or len(defaults) != len(PROFILES):
                raise ValueError(
                    f"notebook {name}, knob {knob}: expected a tuple of {len(PROFILES)} defaults "
                    f"{PROFILES}, got {defaults!r}"
                )


_check_registry(NOTEBOOKS)


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise a ValueError listing them."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile


def knobs(notebook: str) -> Knobs:
    """The knobs of a registered notebook."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; registered: {', '.join(NOTEBOOKS)}")
    return NOTEBOOKS[notebook]


def coerce(knob: str, value: Any, default: Any) -> Any:
    """Convert ``value`` (e.g. the string of a ``-p key=value`` option) to the type of ``default``."""
    expected = type(default)
    try:
        if expected is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, bool):
                return value
            raise TypeError
        if expected is int:
            as_float = float(value)
            if isinstance(value, bool) or as_float != int(as_float):
                raise TypeError
            return int(as_float)
        if expected is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return expected(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"knob {knob} expects {expected.__name__} (like its default {default!r}), got {value!r}"
        ) from None


@dataclasses.dataclass(frozen=True)
class Params(Mapping[str, Any]):
    """Resolved knobs of one notebook run; read them as ``P.n_train_per_class`` or ``P["seed"]``."""

    notebook: str
    profile: str
    values: Mapping[str, Any]
    overridden: tuple[str, ...] = ()  # knobs set explicitly rather than by the profile

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("notebook", "profile", "values", "overridden"):
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(
                f"notebook {self.notebook} has no knob {name!r}; knobs: {', '.join(self.values)}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def to_markdown(self) -> str:
        """A markdown table of the knobs, marking those set explicitly rather than by the profile."""
        rows = [f"| knob | value (profile `{self.profile}`) |", "| --- | --- |"]
        for knob, value in self.values.items():
            mark = " (set explicitly)" if knob in self.overridden else ""
            rows.append(f"| `{knob}` | {value!r}{mark} |")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record: notebook, profile, the resolved knobs and which were overridden."""
        return {
            "notebook": self.notebook,
            "profile": self.profile,
            "values": dict(self.values),
            "overridden": list(self.overridden),
        }


def resolve_params(notebook: str, profile: str, **overrides: Any) -> Params:
    """The knobs of ``notebook`` under ``profile``, with the non-``None`` ``overrides`` applied.

    Raises ValueError for an unknown notebook, profile or knob, or a value of the wrong type.
    """
    check_profile(profile)
    table = knobs(notebook)
    unknown = sorted(set(overrides) - set(table))
    if unknown:
        raise ValueError(
            f"notebook {notebook} has no knob(s) {', '.join(unknown)}; knobs: {', '.join(table)}"
        )
    column = PROFILES.index(profile)
    values = {knob: defaults[column] for knob, defaults in table.items()}
    overridden = []
    for knob, value in overrides.items():
        if value is not None:
            values[knob] = coerce(knob, value, values[knob])
            overridden.append(knob)
    return Params(notebook, profile, values, tuple(overridden))
