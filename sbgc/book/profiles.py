"""Book profiles: one typed object per way of running the book, each chapter's knobs written once.

A :class:`Profile` names its dataset, the two models its chapters load (:class:`ModelSpec`: a
shipped file, or the commands that produce it) and, per chapter, a frozen dataclass of knobs with
the shared groups (:class:`Ode`, the probability-flow ODE settings) as nested dataclasses. Every
notebook of the book is a jupytext percent file ``notebooks/<name>.py`` whose papermill
``parameters`` cell holds two names::

    profile = "ci"
    overrides = {}  # e.g. {"n_images": 20, "ode.rtol": 1e-3}

and whose next cell resolves them: ``P = chapter_params("02_table1", profile, overrides)``. ``P``
reads like the chapter's dataclass (``P.n_images``, ``P.ode.rtol``, ``P.ode.solver_settings()``)
and knows its profile (``P.profile``, ``P.spec``: dataset and models). Overrides name a field (``"n_images"``) or a
nested field (``"ode.rtol"``); strings (from the command line) are converted to the field's type,
lists as ``"1,3,10"``.

Profiles (:data:`PROFILES`):

``ci``           MNIST, minutes on 2 CPU cores (what ``make test`` runs from scratch): the shipped MNIST
                 models, few images, loose ODE tolerances. A real classifier, but samples too small
                 to read much into.
``mnist``        MNIST, the reference run the book ships: the same models, samples that make the
                 intervals informative; hours on 2 CPU cores, computed once into ``results-cache/``
                 (``sbgc.cache``) and rendered from there by ``make book``.
``ci_cifar10``   CIFAR-10, minutes on 2 CPU cores with the tiny CPU-trained CIFAR-10 models: keeps
                 the CIFAR-10 code path running; its numbers are near chance.
``workstation``  CIFAR-10, an hour or so on one GPU: finer grids, more samples, models trained there.
``paper``        CIFAR-10, the paper's settings wherever they are affordable at all.

Adding a notebook: write ``notebooks/<name>.py``, its knobs dataclass here and an entry in every
profile's ``chapters`` (reading order is :data:`NOTEBOOKS`), and ``notebooks/<name>`` in
``book/_toc.yml``. ``tests/test_book.py`` checks that the registry and the table of contents agree.
"""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sbgc.data.corruptions import CORRUPTIONS
from sbgc.data.datasets import DATASETS as _DATASETS
from sbgc.data.datasets import SPLIT_DATASET
from sbgc.data.mnist_c import MNIST_C_CORRUPTIONS
from sbgc.method import scorers
from sbgc.method.likelihood import SolverSettings
from sbgc.report import markdown_table

REPO = Path(__file__).resolve().parents[2]


# --- shared knob groups -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Ode:
    """How a chapter solves the probability-flow ODE (paper: 30 Rademacher probes, dopri5,
    rtol = atol = 1e-5, ε = 1e-5). ``n_steps``: fixed equal steps instead of the adaptive
    controller (rtol/atol then unused). ``chunk_size``: rows (image, class) per jitted call, lowered
    on a GPU where it would not fit; None: as many as fit in the GPU's memory
    (:func:`sbgc.method.devices.chunk_for_memory`; 128 on a CPU)."""

    n_probes: int = 30
    rtol: float = 1e-5
    atol: float = 1e-5
    eps: float = 1e-5
    solver: str = "dopri5"
    n_steps: int | None = None
    chunk_size: int | None = 250

    def __post_init__(self):
        if not (isinstance(self.n_probes, int) and self.n_probes >= 1):
            raise ValueError(f"ode.n_probes must be a positive int, got {self.n_probes!r}")
        if not (self.chunk_size is None or isinstance(self.chunk_size, int) and self.chunk_size >= 1):
            raise ValueError(f"ode.chunk_size must be a positive int or None (sized from GPU memory), got "
                             f"{self.chunk_size!r}")
        self.solver_settings()  # validates the solver fields

    def solver_settings(self) -> SolverSettings:
        """The :class:`~sbgc.method.likelihood.SolverSettings` of every solve."""
        return SolverSettings(solver=self.solver, rtol=self.rtol, atol=self.atol, eps=self.eps, n_steps=self.n_steps)

    def scorer(self) -> scorers.Ode:
        """The :class:`sbgc.method.scorers.Ode` scorer of these knobs, every one passed on (chunk_size too)."""
        return scorers.Ode(self.solver_settings(), n_probes=self.n_probes, chunk_size=self.chunk_size)

    def likelihood_kwargs(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`sbgc.method.classify.class_log_likelihoods` and friends
        (solver, n_probes, chunk_size), plus ``extra`` (e.g. ``progress=False``)."""
        return {"solver": self.solver_settings(), "n_probes": self.n_probes, "chunk_size": self.chunk_size, **extra}

    def describe(self) -> str:
        """e.g. 'dopri5, rtol = atol = 1e-05, ε = 1e-05, 30 Rademacher probes'."""
        tol = (f"{self.n_steps} fixed steps" if self.n_steps else
               f"rtol = atol = {self.rtol:g}" if self.rtol == self.atol else f"rtol = {self.rtol:g}, atol = {self.atol:g}")
        return f"{self.solver}, {tol}, ε = {self.eps:g}, {self.n_probes} Rademacher probe{'s' if self.n_probes > 1 else ''}"


# --- the models a profile loads -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BoundScore:
    """How a chapter classifies with the denoising estimator (:class:`sbgc.method.bound.BoundSettings`): K =
    ``n_times`` stratified times shared by the classes of an image, with the ``weighting`` ``"likelihood"`` (the
    variational bound) or ``"uniform"`` (the uniform-in-t score, not a bound). ``first_times``: pruned instead
    (:class:`sbgc.method.scorers.Pruned`): ``first_times`` for every class, then the ``keep`` best get
    ``n_times`` more (their draws combined). ``chunk_size``: network passes per call (not in any cache key)."""

    n_times: int = 64
    weighting: str = "uniform"
    first_times: int | None = None
    keep: int = 2
    eps: float = 1e-5
    chunk_size: int = 512

    def __post_init__(self):
        self.scorer()  # validates every field

    def scorer(self) -> Any:
        """The :class:`sbgc.method.scorers.Bound` (or :class:`~sbgc.method.scorers.Pruned`) of these knobs."""
        from sbgc.method.bound import BoundSettings

        def bound(k: int) -> scorers.Bound:
            return scorers.Bound(BoundSettings(n_times=k, weighting=self.weighting, eps=self.eps), chunk_size=self.chunk_size)

        if self.first_times is None:
            return bound(self.n_times)
        return scorers.Pruned(bound(self.first_times), bound(self.n_times), keep=self.keep)

    def describe(self) -> str:
        return self.scorer().describe()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model the chapters load: ``name`` is a shipped name (:data:`sbgc.train.pretrained.SHIPPED`,
    :data:`sbgc.train.baseline.SHIPPED`) or a path under the repository; ``train_profile`` and
    ``steps`` say how :meth:`commands` produce it (``sbgc.train`` or ``sbgc.train.baseline``)."""

    name: str
    kind: str  # "sbgc" (score model) or "baseline" (a discriminative network: Wide-ResNet or plain CNN)
    dataset: str  # "cifar10" or "mnist"
    train_profile: str
    steps: int

    def __post_init__(self):
        if self.kind not in ("sbgc", "baseline"):
            raise ValueError(f"ModelSpec.kind must be 'sbgc' or 'baseline', got {self.kind!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"ModelSpec.dataset must be one of {DATASETS}, got {self.dataset!r}")

    def path(self) -> Path:
        """The file the loaders read for :attr:`name`."""
        from sbgc.train import baseline, pretrained

        return pretrained.resolve_path(self.name, pretrained.SHIPPED if self.kind == "sbgc" else baseline.SHIPPED)

    def workdir(self) -> Path:
        """The training run's folder, relative to the repository: ``runs/<stem of the model's file>``."""
        return Path("runs") / self.path().stem

    def argv(self, workdir: str | Path, out: str | Path, *, python: str = "python",
             train_args: tuple[str, ...] | None = None, export_args: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
        """argv of the command that trains the model (resumable; ``train_args`` default: ``--steps``
        :attr:`steps`) in ``workdir`` and of the one that exports it to ``out``."""
        module = "sbgc.train" if self.kind == "sbgc" else "sbgc.train.baseline"
        train_args = ("--steps", str(self.steps)) if train_args is None else tuple(train_args)
        return ((python, "-m", module, "--profile", self.train_profile, *train_args, "--workdir", str(workdir)),
                (python, "-m", module, "export", "--workdir", str(workdir), "--out", str(out), *export_args))

    def commands(self, workdir: str | None = None) -> list[str]:
        """Shell commands that train the model from scratch (resumable) and export it to :meth:`path`."""
        path = self.path()
        out = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        return [shlex.join(a) for a in self.argv(workdir or self.workdir(), out)]


DATASETS = tuple(_DATASETS)  # the names of sbgc.data.datasets.DATASETS

CI_SBGC = ModelSpec("ci", "sbgc", "cifar10", "ci", 3_600)
CI_BASELINE = ModelSpec("ci", "baseline", "cifar10", "ci", 6_000)
# Trained on a GPU workstation (nothing here has produced them yet: see `commands()`).
SMALL_GPU = ModelSpec("checkpoints/sbgc_small_gpu.msgpack", "sbgc", "cifar10", "small", 200_000)
PAPER_GPU = ModelSpec("checkpoints/sbgc_paper_gpu.msgpack", "sbgc", "cifar10", "paper", 950_000)  # paper: 950k steps
# Trained on 2 CPU cores and shipped (sbgc.train.pretrained.SHIPPED, sbgc.train.baseline.SHIPPED).
MNIST_SBGC = ModelSpec("mnist", "sbgc", "mnist", "mnist_s", 15_000)
MNIST_BASELINE = ModelSpec("mnist", "baseline", "mnist", "mnist", 2_000)
MNIST_CNN = ModelSpec("mnist_cnn", "baseline", "mnist", "mnist_cnn", 4_700)  # the plain CNN of MNIST-C's evaluation
WRN28_10_GPU = ModelSpec("checkpoints/wrn28_10_gpu.msgpack", "baseline", "cifar10", "wrn28_10", 78_200)


# --- one knobs dataclass per chapter --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MethodKnobs:
    """01_method: the worked 2-D example (class-conditional Gaussian mixture, a toy score network)."""

    seed: int
    n_train_per_class: int
    n_test_per_class: int
    hidden: int  # the toy score network and its maximum-likelihood training
    n_layers: int
    train_steps: int
    batch_size: int
    learning_rate: float
    rtol: float  # probability-flow ODE with the exact trace on 2-D data
    atol: float
    eps: float
    grid_size: int  # density heatmaps and decision regions: grid_size × grid_size points
    n_t_draws: int  # importance-sampling histogram


@dataclasses.dataclass(frozen=True)
class Table1Knobs:
    """02_table1: SBGC accuracy and bits/dim, the baseline's accuracy."""

    seed: int
    data: str  # the test split (an evaluation split of sbgc.data.datasets: "mnist", "cifar10")
    n_images: int  # the classifier's images: the first n_images of the nested sample (sample_indices)
    classifier: BoundScore | None  # the converged estimator that classifies (chapter 06); None: the ODE below
    n_bpd_images: int  # the ODE's images (bits/dim; its accuracy beside): the first of the same sample
    exact_data: str | None  # where bits/dim is measured when `data` is not exact ("exact_head"); None: `data` is exact
    n_exact_images: int  # images of exact_data (0 when exact_data is None)
    n_baseline_images: int  # the baseline needs one forward pass per image
    ode: Ode  # the exact likelihood: dopri5 with rtol = atol (sbgc.experiments.evaluate)
    reference: Ode | None  # chapter 06's reference (same data, seed, block: its cached table); None: not shown
    reference_block: int  # images per cached block of the reference table (chapter 06's ode_block)
    n_reference_images: int  # the first images of the sample with the reference

    def check(self) -> None:
        """The samples nest: the reference's and the ODE's images are the first of the classifier's."""
        if self.classifier is None and self.n_bpd_images != self.n_images:
            raise ValueError(f"without a classifier the ODE classifies: n_bpd_images ({self.n_bpd_images}) must equal "
                             f"n_images ({self.n_images})")
        if self.reference is not None and not 1 <= self.n_reference_images <= min(self.n_images, self.n_bpd_images):
            raise ValueError(f"need 1 <= n_reference_images <= n_images and n_bpd_images, got {self.n_reference_images}")


@dataclasses.dataclass(frozen=True)
class CorruptionKnobs:
    """03_corruptions: Table 2 and Fig. 4 (paper, CIFAR-10-C: 10 probes, rtol = atol = 1e-5, 1,000 images);
    on MNIST the 15 corruptions of MNIST-C (one severity each)."""

    seed: int
    data: str  # clean images: an evaluation split of sbgc.data.datasets ("exact_head", "cifar10", "mnist")
    n_images: int  # the SBGC's random images; the baseline's first n_images are the same
    n_baseline_images: int
    severities: tuple[int, ...]
    corruptions: tuple[str, ...]
    ode: Ode  # the exact ODE: the SBGC's classifier unless ``classifier`` is set, and its likelihoods
    classifier: BoundScore | None = None  # the SBGC's classifier instead of the ODE (e.g. chapter 06's converged one)
    n_ode_images: int | None = None  # with a classifier that gives no density: the ODE on the first n (None: all)

    def __post_init__(self):
        _check_n_ode_images(self)


def _check_n_ode_images(knobs: Any) -> None:
    """A chapter's ``n_ode_images`` (the exact ODE on the first n of its ``n_images``) is None or in 1 … n_images."""
    n = knobs.n_ode_images
    if n is not None and not (isinstance(n, int) and 1 <= n <= knobs.n_images):
        raise ValueError(f"n_ode_images must be None or an int in 1 … n_images ({knobs.n_images}), got {n!r}")


@dataclasses.dataclass(frozen=True)
class AdversarialKnobs:
    """04_adversarial: Table 3 (paper: N = 216 images, 10 probes)."""

    seed: int
    data: str  # an evaluation split of sbgc.data.datasets ("exact_head", "cifar10", "mnist")
    n_images: int  # images attacked; the baseline is attacked on these and more
    n_baseline_images: int
    eps_linf: float  # the budgets, on the [0, 1] pixel scale (CIFAR-10: 8/255 and 0.5; MNIST: 0.3 and 1.5)
    eps_l2: float
    ode: Ode  # the SBGC's logits (fixed steps make the attacked function cheap on a CPU)
    pgd_steps: int  # per (loss, restart); the paper does not state PGD's steps or step size
    rel_stepsize: float  # step size / epsilon
    restarts: int  # random starts per loss (the SBGC's per-image attack, sbgc.experiments.pgd)
    line_search: int  # bisection steps for the shortest adversarial on the segment x → x_adv (0: none)
    judge_rtol: float | None  # re-classify the SBGC's adversarials with dopri5 at this rtol = atol (None: skip)
    bound_times: int | None  # K of the variational-bound classifier attacked the same way (None: not attacked)
    n_fd_directions: int  # finite-difference check of the gradient: random directions and step h
    fd_h: float
    n_show: int
    bound_weighting: str = "likelihood"  # the attacked bound's time weighting ("uniform": chapter 06's converged score)
    n_ode_images: int | None = None  # the exact-ODE SBGC attacked on the first n of the images (None: all n_images)

    def __post_init__(self):
        if self.bound_weighting not in ("likelihood", "uniform"):
            raise ValueError(f"bound_weighting must be 'likelihood' or 'uniform', got {self.bound_weighting!r}")
        _check_n_ode_images(self)


@dataclasses.dataclass(frozen=True)
class InterpolationKnobs:
    """05_interpolation: Fig. 2 (paper: 500 pairs, 24 values of t, 30 probes)."""

    seed: int
    data: str  # pairs of images with exact pixels ("exact_head", "mnist")
    n_pairs: int
    n_t: int
    ode: Ode
    n_strips: int  # interpolation strips shown as images


@dataclasses.dataclass(frozen=True)
class ConvergenceKnobs:
    """06_convergence: every estimator of the class score against its budget on one nested sample (the
    largest budget of each computed once, the smaller ones read off it: sbgc.experiments.converged)."""

    seed: int
    data: str  # an evaluation split of sbgc.data.datasets ("exact_head", "cifar10", "mnist")
    n_images: int  # the nested sample (sample_indices) of the bound tables
    n_subsamples: int  # random subsets of times or probes per budget
    bound_times: tuple[int, ...]  # budgets K of the bound, each dividing the largest (the one computed)
    weightings: tuple[str, ...]  # the bound's time weightings ("uniform", "likelihood")
    pruning: tuple[tuple[int, int], ...]  # (K1, keep) of a pruning over each weighting, K1 dividing the largest K
    bound_block: int  # images per cached block of a bound table
    n_reference_images: int  # the first N of the sample: the reference (the ODE with ode.n_probes probes)
    ode: Ode
    ode_block: int  # images per cached block of the ODE table
    n_compare_images: int  # images (the first of the sample) for the CRN and shared-trajectory comparisons
    tolerance: float  # converged: mean accuracy within this of the reference accuracy
    noise: str | None  # the same budgets off the data: the first images under this corruption (None: not measured)
    n_noise_images: int  # the first images of the sample, under the noise
    n_noise_reference_images: int  # the first of those with the reference (the ODE with all probes)
    tight_rtol: float | None  # the reference again at this tolerance (rtol = atol), the paper's 1e-5 (None: not run)
    n_tight_images: int  # the first reference images solved at tight_rtol

    def __post_init__(self):
        ks = self.bound_times
        if not ks or any(max(ks) % k for k in ks) or list(ks) != sorted(set(ks)):
            raise ValueError(f"bound_times must be increasing, each dividing the largest, got {ks}")
        bad = set(self.weightings) - {"uniform", "likelihood"}
        if not self.weightings or bad:
            raise ValueError(f"weightings must be some of 'uniform', 'likelihood', got {self.weightings}")

    def check(self) -> None:
        """The knobs that constrain each other (checked once every override is set): the samples nest
        (comparison ⊆ reference ⊆ sample), and pruning's first stage is a whole number of the largest
        budget's strata."""
        k_max = max(self.bound_times)
        if any(not (1 <= k1 <= k_max and k_max % k1 == 0 and 1 <= keep) for k1, keep in self.pruning):
            raise ValueError(f"pruning (K1, keep): K1 must divide the largest of bound_times ({k_max}) and keep >= 1, "
                             f"got {self.pruning}")
        if self.noise is not None and not 1 <= self.n_noise_reference_images <= self.n_noise_images <= self.n_images:
            raise ValueError("need 1 <= n_noise_reference_images <= n_noise_images <= n_images, got "
                             f"{self.n_noise_reference_images}, {self.n_noise_images}, {self.n_images}")
        if self.tight_rtol is not None and not 1 <= self.n_tight_images <= self.n_reference_images:
            raise ValueError(f"need 1 <= n_tight_images <= n_reference_images, got {self.n_tight_images}, "
                             f"{self.n_reference_images}")
        if not 1 <= self.n_compare_images <= self.n_reference_images <= self.n_images:
            raise ValueError("need 1 <= n_compare_images <= n_reference_images <= n_images (each the first images of "
                             f"the next), got {self.n_compare_images}, {self.n_reference_images}, {self.n_images}")


@dataclasses.dataclass(frozen=True)
class ComputeKnobs:
    """07_compute: what a classification costs, against the converged reference (the first images of the
    nested sample of chapter 06, the same for every setting)."""

    seed: int
    data: str  # an evaluation split with exact pixels ("exact_head", "mnist")
    n_images: int  # the first N of the nested sample (sample_indices)
    reference: Ode  # the converged estimator: chapter 06's reference (same data, seed, block: its cached table)
    reference_block: int  # images per cached block of the reference table (chapter 06's ode_block)
    ode_probes: tuple[int, ...]  # exact ODE: probes n × tolerances (rtol = atol)
    ode_rtols: tuple[float, ...]
    ode_chunk: int
    bound_times: tuple[int, ...]  # variational bound: times K per image and class
    weightings: tuple[str, ...]  # the bound's time weightings ("likelihood": the bound; "uniform": not a bound)
    pruning: tuple[tuple[int, int, int], ...]  # bound + pruning: (K1, keep, K2), for each weighting
    sampling: str
    bound_chunk: int
    eps: float
    tolerance: float  # a setting matches the reference when its accuracy is at least the reference's less this, on
    # the same images (chapter 06's tolerance)


# --- the profiles ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Profile:
    """One way of running the book: its dataset, its models and every chapter's knobs."""

    name: str
    description: str
    dataset: str
    sbgc: ModelSpec
    baseline: ModelSpec
    chapters: Mapping[str, Any]  # notebook name -> its knobs dataclass
    plain_cnn: ModelSpec | None = None  # a second baseline without batch normalisation (MNIST: MNIST-C's CNN)

    def models(self) -> tuple[ModelSpec, ...]:
        """Every model the profile's chapters load: the score model, the baseline, the plain CNN if any."""
        return (self.sbgc, self.baseline) + ((self.plain_cnn,) if self.plain_cnn is not None else ())

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"profile {self.name}: dataset must be one of {DATASETS}, got {self.dataset!r}")
        for spec in self.models():
            if spec.dataset != self.dataset:
                raise ValueError(f"profile {self.name}: model {spec.name} is a {spec.dataset} model, "
                                 f"the profile's dataset is {self.dataset}")
        if list(self.chapters) != list(NOTEBOOKS):
            raise ValueError(f"profile {self.name}: chapters {list(self.chapters)} must be {list(NOTEBOOKS)}")
        for name, knobs in self.chapters.items():
            if not isinstance(knobs, NOTEBOOKS[name]):
                raise ValueError(f"profile {self.name}, {name}: expected {NOTEBOOKS[name].__name__}, got {knobs!r}")
            for knob in ("data", "exact_data"):
                data = getattr(knobs, knob, None)
                if data is not None and SPLIT_DATASET.get(data) != self.dataset:
                    raise ValueError(f"profile {self.name}, {name}: {knob} {data!r} is not an evaluation split of "
                                     f"{self.dataset} (one of {[s for s, d in SPLIT_DATASET.items() if d == self.dataset]})")
            corruptions = getattr(knobs, "corruptions", ())
            known = MNIST_C_CORRUPTIONS if self.dataset == "mnist" else CORRUPTIONS
            if set(corruptions) - set(known):
                raise ValueError(f"profile {self.name}, {name}: corruptions {sorted(set(corruptions) - set(known))} "
                                 f"are not {self.dataset}'s (one of {', '.join(known)})")


# Which of the profile's models each chapter loads (overridable as the knobs "checkpoint", "baseline", "plain_cnn";
# "plain_cnn" is "none" in a profile without one).
MODELS_USED: dict[str, tuple[str, ...]] = {
    "01_method": (), "02_table1": ("checkpoint", "baseline"), "03_corruptions": ("checkpoint", "baseline", "plain_cnn"),
    "04_adversarial": ("checkpoint", "baseline", "plain_cnn"), "05_interpolation": ("checkpoint",),
    "06_convergence": ("checkpoint",), "07_compute": ("checkpoint",),
}

# Reading order of the book = the order of this dict; the knobs class of each chapter.
NOTEBOOKS: dict[str, type] = {
    "01_method": MethodKnobs,
    "02_table1": Table1Knobs,
    "03_corruptions": CorruptionKnobs,
    "04_adversarial": AdversarialKnobs,
    "05_interpolation": InterpolationKnobs,
    "06_convergence": ConvergenceKnobs,
    "07_compute": ComputeKnobs,
}

_CI_ODE = Ode(n_probes=1, rtol=1e-2, atol=1e-2, chunk_size=10)
_WS_ODE = Ode(n_probes=10, rtol=1e-4, atol=1e-4, chunk_size=None)  # chunks sized from the GPU's memory
_PAPER_ODE = Ode(n_probes=30, rtol=1e-5, atol=1e-5, chunk_size=None)
# chapter 06's reference estimator per profile; chapters 02 and 07 name the same one (and its block) to read its table
_CI_REFERENCE = Ode(n_probes=4, rtol=1e-2, atol=1e-2, chunk_size=10)
_MNIST_REFERENCE = Ode(n_probes=30, rtol=1e-3, atol=1e-3)
_WS_REFERENCE = Ode(n_probes=30, rtol=1e-4, atol=1e-4)
# chapters 06 and 07 judge a setting converged (06) or matching (07) by the same rule: accuracy at least the
# reference's less this, on the same images
_TOLERANCE = 0.005
_ALL_SEVERITIES = (1, 2, 3, 4, 5)
_CI_METHOD = MethodKnobs(seed=0, n_train_per_class=2_000, n_test_per_class=300, hidden=64, n_layers=3,
                         train_steps=4_000, batch_size=128, learning_rate=2e-3,
                         rtol=1e-3, atol=1e-3, eps=1e-5, grid_size=40, n_t_draws=20_000)
_CI_ATTACK_ODE = Ode(n_probes=1, rtol=1e-2, atol=1e-2, solver="heun", n_steps=4)
_MNIST_ODE = Ode(n_probes=1, rtol=1e-3, atol=1e-3, chunk_size=250)  # the shipped MNIST evaluation's setting

PROFILES: dict[str, Profile] = {
    "ci": Profile(
        "ci", "minutes on 2 CPU cores with the shipped MNIST models; checks the pipeline on few images", "mnist",
        MNIST_SBGC, MNIST_BASELINE, {
            "01_method": _CI_METHOD,
            "02_table1": Table1Knobs(seed=0, data="mnist", n_images=10, classifier=BoundScore(n_times=16), n_bpd_images=10,
                                     exact_data=None, n_exact_images=0, n_baseline_images=10_000, ode=_MNIST_ODE,
                                     reference=_CI_REFERENCE, reference_block=2,
                                     n_reference_images=2),
            "03_corruptions": CorruptionKnobs(seed=0, data="mnist", n_images=2, n_baseline_images=200, severities=(1,),
                                              corruptions=MNIST_C_CORRUPTIONS, ode=_CI_ODE,
                                              classifier=BoundScore(n_times=8), n_ode_images=1),
            "04_adversarial": AdversarialKnobs(seed=0, data="mnist", n_images=2, n_baseline_images=100, eps_linf=0.3,
                                               eps_l2=1.5, ode=_CI_ATTACK_ODE, pgd_steps=1, rel_stepsize=1.0,
                                               restarts=1, line_search=2, judge_rtol=1e-2, bound_times=10, n_fd_directions=2, fd_h=2e-3, n_show=1,
                                               bound_weighting="uniform", n_ode_images=1),
            "05_interpolation": InterpolationKnobs(seed=0, data="mnist", n_pairs=2, n_t=5, ode=_CI_ODE, n_strips=2),
            "06_convergence": ConvergenceKnobs(seed=0, data="mnist", n_images=4, n_subsamples=20, bound_times=(2, 4, 8, 16),
                                               weightings=("uniform", "likelihood"), pruning=((2, 2),), bound_block=4,
                                               n_reference_images=2, ode=_CI_REFERENCE,
                                               ode_block=2, n_compare_images=1, tolerance=_TOLERANCE, noise="shot_noise", n_noise_images=2,
                                               n_noise_reference_images=1,
                                               tight_rtol=1e-3, n_tight_images=1),
            "07_compute": ComputeKnobs(seed=0, data="mnist", n_images=2, reference=_CI_REFERENCE,
                                       reference_block=2, ode_probes=(1, 3), ode_rtols=(1e-2,), ode_chunk=10,
                                       bound_times=(10, 30, 100), weightings=("likelihood", "uniform"), pruning=((10, 2, 50),),
                                       sampling="stratified", bound_chunk=256, eps=1e-5, tolerance=_TOLERANCE),
        }, plain_cnn=MNIST_CNN),
    "mnist": Profile(
        "mnist", "the reference run: the shipped MNIST models on 2 CPU cores, samples that make the intervals "
        "informative (hours; computed once, shipped in results-cache/)", "mnist", MNIST_SBGC, MNIST_BASELINE, {
            "01_method": _CI_METHOD,
            "02_table1": Table1Knobs(seed=0, data="mnist", n_images=1_000, classifier=BoundScore(n_times=64), n_bpd_images=1_000,
                                     exact_data=None, n_exact_images=0, n_baseline_images=10_000, ode=_MNIST_ODE,
                                     reference=_MNIST_REFERENCE, reference_block=4,
                                     n_reference_images=100),
            "03_corruptions": CorruptionKnobs(seed=0, data="mnist", n_images=432, n_baseline_images=10_000,
                                              severities=(1,), corruptions=MNIST_C_CORRUPTIONS, ode=_MNIST_ODE),
            "04_adversarial": AdversarialKnobs(seed=0, data="mnist", n_images=100, n_baseline_images=1_000, eps_linf=0.3,
                                               eps_l2=1.5, ode=Ode(n_probes=1, rtol=1e-3, atol=1e-3), pgd_steps=20,
                                               rel_stepsize=0.25, restarts=2, line_search=6, judge_rtol=None, bound_times=100,
                                               n_fd_directions=4,
                                               fd_h=2e-3, n_show=3),
            "05_interpolation": InterpolationKnobs(seed=0, data="mnist", n_pairs=100, n_t=5, ode=_MNIST_ODE, n_strips=4),
            "06_convergence": ConvergenceKnobs(seed=0, data="mnist", n_images=300, n_subsamples=100,
                                               bound_times=(8, 16, 32, 64, 128, 256), weightings=("uniform", "likelihood"),
                                               pruning=((8, 2), (8, 3), (16, 2)), bound_block=25, n_reference_images=100,
                                               ode=_MNIST_REFERENCE, ode_block=4,
                                               n_compare_images=4, tolerance=_TOLERANCE, noise="shot_noise", n_noise_images=50,
                                               n_noise_reference_images=8,
                                               tight_rtol=1e-5, n_tight_images=4),
            "07_compute": ComputeKnobs(seed=0, data="mnist", n_images=100, reference=_MNIST_REFERENCE,
                                       reference_block=4, ode_probes=(1, 3), ode_rtols=(1e-2, 1e-3), ode_chunk=50,
                                       bound_times=(10, 30, 100), weightings=("likelihood", "uniform"),
                                       pruning=((10, 2, 50), (10, 3, 100)),
                                       sampling="stratified", bound_chunk=2048, eps=1e-5, tolerance=_TOLERANCE),
        }, plain_cnn=MNIST_CNN),
    "ci_cifar10": Profile(
        "ci_cifar10", "minutes on 2 CPU cores with the tiny CPU-trained CIFAR-10 models: the CIFAR-10 code path, "
        "not the method's numbers", "cifar10", CI_SBGC, CI_BASELINE, {
            "01_method": _CI_METHOD,
            "02_table1": Table1Knobs(seed=0, data="cifar10", n_images=5, classifier=None, n_bpd_images=5, exact_data="exact_head",
                                     n_exact_images=5, n_baseline_images=2_000, ode=Ode(n_probes=1, rtol=1e-2, atol=1e-2),
                                     reference=None, reference_block=1, n_reference_images=0),
            "03_corruptions": CorruptionKnobs(seed=0, data="exact_head", n_images=1, n_baseline_images=200,
                                              severities=(3,), corruptions=CORRUPTIONS, ode=_CI_ODE),
            "04_adversarial": AdversarialKnobs(seed=0, data="exact_head", n_images=1, n_baseline_images=100,
                                               eps_linf=8 / 255, eps_l2=0.5, ode=_CI_ATTACK_ODE, pgd_steps=1,
                                               rel_stepsize=1.0, restarts=1, line_search=2, judge_rtol=1e-1, bound_times=10, n_fd_directions=2, fd_h=5e-2, n_show=1),
            "05_interpolation": InterpolationKnobs(seed=0, data="exact_head", n_pairs=2, n_t=5, ode=_CI_ODE, n_strips=2),
            "06_convergence": ConvergenceKnobs(seed=0, data="exact_head", n_images=2, n_subsamples=20,
                                               bound_times=(2, 4, 8, 16), weightings=("uniform", "likelihood"),
                                               pruning=((2, 2),), bound_block=2, n_reference_images=2,
                                               ode=_CI_REFERENCE, ode_block=2,
                                               n_compare_images=1, tolerance=_TOLERANCE, noise="gaussian_noise", n_noise_images=2,
                                               n_noise_reference_images=1,
                                               tight_rtol=None, n_tight_images=0),
            "07_compute": ComputeKnobs(seed=0, data="exact_head", n_images=2, reference=_CI_REFERENCE,
                                       reference_block=2, ode_probes=(1, 3), ode_rtols=(1e-2,), ode_chunk=10,
                                       bound_times=(10, 30, 100), weightings=("likelihood", "uniform"), pruning=((10, 2, 50),),
                                       sampling="stratified", bound_chunk=256, eps=1e-5, tolerance=_TOLERANCE),
        }),
    "workstation": Profile(
        "workstation", "about an hour on one GPU; finer grids, more samples", "cifar10", SMALL_GPU, WRN28_10_GPU, {
            "01_method": MethodKnobs(seed=0, n_train_per_class=10_000, n_test_per_class=2_000, hidden=128, n_layers=3,
                                     train_steps=20_000, batch_size=256, learning_rate=1e-3,
                                     rtol=1e-5, atol=1e-5, eps=1e-5, grid_size=100, n_t_draws=200_000),
            "02_table1": Table1Knobs(seed=0, data="cifar10", n_images=500, classifier=None, n_bpd_images=500,
                                     exact_data="exact_head", n_exact_images=846, n_baseline_images=10_000, ode=_WS_ODE,
                                     reference=None, reference_block=1, n_reference_images=0),
            "03_corruptions": CorruptionKnobs(seed=0, data="cifar10", n_images=40, n_baseline_images=10_000,
                                              severities=_ALL_SEVERITIES, corruptions=CORRUPTIONS, ode=_WS_ODE),
            "04_adversarial": AdversarialKnobs(seed=0, data="exact_head", n_images=16, n_baseline_images=1_000,
                                               eps_linf=8 / 255, eps_l2=0.5, ode=Ode(n_probes=10, rtol=1e-4, atol=1e-4),
                                               pgd_steps=10, rel_stepsize=0.25, restarts=1, line_search=6, judge_rtol=1e-5, bound_times=100, n_fd_directions=4,
                                               fd_h=5e-2, n_show=3),
            "05_interpolation": InterpolationKnobs(seed=0, data="exact_head", n_pairs=100, n_t=24, ode=_WS_ODE, n_strips=4),
            "06_convergence": ConvergenceKnobs(seed=0, data="exact_head", n_images=400, n_subsamples=100,
                                               bound_times=(8, 16, 32, 64, 128, 256), weightings=("uniform", "likelihood"),
                                               pruning=((8, 2), (8, 3)), bound_block=100, n_reference_images=200,
                                               ode=_WS_REFERENCE, ode_block=20,
                                               n_compare_images=50, tolerance=_TOLERANCE, noise="gaussian_noise", n_noise_images=200,
                                               n_noise_reference_images=50,
                                               tight_rtol=1e-5, n_tight_images=10),
            "07_compute": ComputeKnobs(seed=0, data="exact_head", n_images=200, reference=_WS_REFERENCE,
                                       reference_block=20, ode_probes=(1, 3, 10), ode_rtols=(1e-3, 1e-5), ode_chunk=50,
                                       bound_times=(10, 30, 100, 300, 1000), weightings=("likelihood", "uniform"),
                                       pruning=((10, 2, 100), (20, 2, 300), (20, 3, 1000)), sampling="stratified",
                                       bound_chunk=4096, eps=1e-5, tolerance=_TOLERANCE),
        }),
    "paper": Profile(
        "paper", "the paper's settings wherever affordable", "cifar10", PAPER_GPU, WRN28_10_GPU, {
            "01_method": MethodKnobs(seed=0, n_train_per_class=50_000, n_test_per_class=10_000, hidden=256, n_layers=4,
                                     train_steps=60_000, batch_size=512, learning_rate=1e-3,
                                     rtol=1e-5, atol=1e-5, eps=1e-5, grid_size=200, n_t_draws=1_000_000),
            "02_table1": Table1Knobs(seed=0, data="cifar10", n_images=10_000, classifier=None, n_bpd_images=10_000,
                                     exact_data="exact_head", n_exact_images=846, n_baseline_images=10_000, ode=_PAPER_ODE,
                                     reference=None, reference_block=1, n_reference_images=0),
            "03_corruptions": CorruptionKnobs(seed=0, data="cifar10", n_images=1_000, n_baseline_images=10_000,
                                              severities=_ALL_SEVERITIES, corruptions=CORRUPTIONS,
                                              ode=Ode(n_probes=10, rtol=1e-5, atol=1e-5)),
            "04_adversarial": AdversarialKnobs(seed=0, data="cifar10", n_images=216, n_baseline_images=1_000,
                                               eps_linf=8 / 255, eps_l2=0.5, ode=Ode(n_probes=10, rtol=1e-5, atol=1e-5),
                                               pgd_steps=10, rel_stepsize=0.25, restarts=1, line_search=6, judge_rtol=1e-5, bound_times=100, n_fd_directions=4,
                                               fd_h=5e-2, n_show=4),
            "05_interpolation": InterpolationKnobs(seed=0, data="exact_head", n_pairs=500, n_t=24, ode=_PAPER_ODE,
                                                   n_strips=4),
            "06_convergence": ConvergenceKnobs(seed=0, data="cifar10", n_images=1_000, n_subsamples=200,
                                               bound_times=(8, 16, 32, 64, 128, 256, 512), weightings=("uniform", "likelihood"),
                                               pruning=((8, 2), (8, 3)), bound_block=100, n_reference_images=500,
                                               ode=_PAPER_ODE, ode_block=50, n_compare_images=100, tolerance=_TOLERANCE,
                                               noise="gaussian_noise", n_noise_images=500, n_noise_reference_images=100,
                                               tight_rtol=None, n_tight_images=0),
            "07_compute": ComputeKnobs(seed=0, data="exact_head", n_images=500, reference=_PAPER_ODE, reference_block=50,
                                       ode_probes=(1, 3, 10), ode_rtols=(1e-3, 1e-5), ode_chunk=100,
                                       bound_times=(10, 30, 100, 300, 1000), weightings=("likelihood", "uniform"),
                                       pruning=((10, 2, 100), (20, 2, 300), (20, 3, 1000)), sampling="stratified",
                                       bound_chunk=4096, eps=1e-5, tolerance=_TOLERANCE),
        }),
}


def get_profile(profile: str) -> Profile:
    """The profile named ``profile``; a ValueError lists the profiles otherwise."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise a ValueError listing them."""
    get_profile(profile)
    return profile


# --- flattening, overrides and their types ----------------------------------------------------------
def flat_fields(knobs: Any, prefix: str = "") -> dict[str, Any]:
    """``{"n_images": 5, "ode.rtol": 0.01, ...}``: the leaves of a knobs dataclass, nested ones dotted."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(knobs):
        value = getattr(knobs, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _field_type(cls: type, path: str) -> Any:
    head, _, rest = path.partition(".")
    hints = typing.get_type_hints(cls)
    if head not in hints:
        raise KeyError(path)
    hint = hints[head]
    if rest and _optional_group(hint) is not None:  # an optional group: its dataclass
        hint = _optional_group(hint)
    return _field_type(hint, rest) if rest else hint


def coerce(knob: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (e.g. the text of ``-p knob=value``) to the field type ``annotation``:
    int, float, str, bool, ``X | None`` (``"none"``), ``tuple[X, ...]`` (``"1,3,10"``) and tuples of
    int triples (``"10/2/50,20/2/300"``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    fail = ValueError(f"knob {knob} expects {getattr(annotation, '__name__', annotation)}, got {value!r}")
    if args and type(None) in args and origin is not tuple:  # X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(knob, value, inner)
    if origin is tuple:
        items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
        inner = args[0]
        if typing.get_origin(inner) is tuple:  # a tuple of fixed-length int tuples, "a/b/c" each
            rows = [tuple(p.split("/")) if isinstance(p, str) else tuple(p) for p in items]
            if any(len(r) != len(typing.get_args(inner)) for r in rows):
                raise fail
            return tuple(tuple(coerce(knob, v, int) for v in r) for r in rows)
        if not items:
            raise fail
        return tuple(coerce(knob, v, inner) for v in items)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise TypeError
        if annotation is int:
            as_float = float(value)
            if isinstance(value, bool) or as_float != int(as_float):
                raise TypeError
            return int(as_float)
        if annotation is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if annotation is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError, OverflowError):
        raise fail from None
    raise fail


def _optional_group(hint: Any) -> type | None:
    """The dataclass of an optional group's annotation (``Ode | None`` → ``Ode``); None for any other."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        groups = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return groups[0] if len(groups) == 1 and type(None) in typing.get_args(hint) else None
    return None


def knob_paths(cls: type, prefix: str = "") -> tuple[str, ...]:
    """Every knob name of the knobs dataclass ``cls``: its fields, a group's fields dotted; an optional group
    (``reference: Ode | None``) is a knob itself (set to ``none``: off) besides its dotted fields."""
    out: list[str] = []
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):  # a group that is always on: its fields only
            out.extend(knob_paths(hint, f"{prefix}{name}."))
            continue
        out.append(prefix + name)
        if (group := _optional_group(hint)) is not None:
            out.extend(knob_paths(group, f"{prefix}{name}."))
    return tuple(out)


def knob_value(knobs: Any, path: str) -> Any:
    """The value of the dotted knob ``path`` in ``knobs``; None where a group on the way is off (None)."""
    for part in path.split("."):
        if knobs is None:
            return None
        knobs = getattr(knobs, part)
    return knobs


def _replace(knobs: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if rest:
        inner = getattr(knobs, head)
        if inner is None:  # a field of a group that is off: the group from its defaults, then the field
            group = _optional_group(typing.get_type_hints(type(knobs))[head])
            try:
                inner = group()
            except TypeError:
                raise ValueError(f"knob {head} is none here and {group.__name__} has no defaults to start from; "
                                 f"set it in the profile to set {path}") from None
        return dataclasses.replace(knobs, **{head: _replace(inner, rest, value)})
    return dataclasses.replace(knobs, **{head: value})


def apply_overrides(notebook: str, knobs: Any, overrides: Mapping[str, Any]) -> Any:
    """``knobs`` with each ``overrides`` entry (``"field"`` or ``"group.field"`` → value) set, typed."""
    cls = NOTEBOOKS[notebook]
    for path, value in overrides.items():
        try:
            annotation = _field_type(cls, path)
        except (KeyError, TypeError):
            raise ValueError(f"notebook {notebook} has no knob {path!r}; knobs: {', '.join(flat_fields(knobs))}") from None
        if dataclasses.is_dataclass(annotation):
            raise ValueError(f"knob {path!r} is a group; set its fields, e.g. {path}.{dataclasses.fields(annotation)[0].name}")
        knobs = _replace(knobs, path, coerce(path, value, annotation))
    return knobs


# --- what a notebook reads ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Params:
    """The resolved knobs of one notebook run: read them as ``P.n_images`` or ``P.ode.rtol``.

    ``P.profile`` is the profile's name, ``P.spec`` its :class:`Profile` (dataset and models),
    ``P.knobs`` the chapter's dataclass, ``P.overridden`` the knobs set explicitly.
    """

    notebook: str
    profile: str
    knobs: Any
    checkpoint: str = ""  # the score model the chapter loads (a shipped name or a path)
    baseline: str = ""  # the discriminative baseline it loads
    plain_cnn: str = ""  # the second baseline, the plain CNN ("none": the profile has none)
    overridden: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("notebook", "profile", "knobs", "checkpoint", "baseline", "plain_cnn",
                                            "overridden"):
            raise AttributeError(name)
        try:
            return getattr(self.knobs, name)
        except AttributeError:
            raise AttributeError(f"notebook {self.notebook} has no knob {name!r}; knobs: "
                                 f"{', '.join(f.name for f in dataclasses.fields(self.knobs))}") from None

    @property
    def spec(self) -> Profile:
        """The profile: its dataset and models."""
        return PROFILES[self.profile]

    @property
    def values(self) -> dict[str, Any]:
        """Every knob, nested ones dotted (``ode.rtol``), then the models the chapter loads."""
        return {**flat_fields(self.knobs), **{m: getattr(self, m) for m in MODELS_USED[self.notebook]}}

    def to_markdown(self) -> str:
        """A markdown table of the knobs, marking those set explicitly rather than by the profile."""
        rows = [(f"`{knob}`", f"{value!r}" + (" (set explicitly)" if knob in self.overridden else ""))
                for knob, value in self.values.items()]
        return markdown_table(("knob", f"value (profile `{self.profile}`)"), rows)

    def notice(self, *metas: Mapping[str, Any]) -> str:
        """What a reader must know before any number of this page: the dataset, the models (their
        metadata ``metas``) measured against the paper's, and whether the profile's samples are small."""
        from sbgc.report import cpu_trained_note

        spec, cpu = self.spec, cpu_trained_note(*metas)
        lines = []
        if spec.dataset == "mnist":
            lines.append(f"**This page measures MNIST, not the paper's CIFAR-10.** Models: {cpu or 'the profile’s'}. "
                         "Its numbers are this model's on the official MNIST test images; the paper's CIFAR-10 "
                         "numbers appear beside them marked **paper**, and published MNIST numbers, where this page "
                         "quotes any, marked **published**. "
                         "The CIFAR-10 run needs a GPU (profiles `workstation` and `paper`).")
        elif cpu:
            lines.append(f"**Tiny CPU-trained CIFAR-10 networks** ({cpu}): they prove that the pipeline runs end to "
                         "end; their numbers are near chance and say nothing about the paper's claims.")
        if self.profile.startswith("ci"):
            lines.append(f"Profile `{self.profile}` ({spec.description}): samples this small give wide intervals. "
                         "The book's reference numbers are the `mnist` profile's.")
        return "\n>\n".join("> " + line for line in lines)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record: notebook, profile, the resolved knobs and which were overridden."""
        return {"notebook": self.notebook, "profile": self.profile, "values": self.values,
                "overridden": list(self.overridden)}


def _check_notebook(notebook: str) -> None:
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; registered: {', '.join(NOTEBOOKS)}")


def chapter_params(notebook: str, profile: str, overrides: Mapping[str, Any] | None = None) -> Params:
    """The knobs of ``notebook`` under ``profile`` with ``overrides`` applied (``None`` values skipped).

    Raises ValueError for an unknown notebook, profile or knob, or a value of the wrong type.
    """
    prof = get_profile(profile)
    _check_notebook(notebook)
    given = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    overridden = tuple(given)
    models = {"checkpoint": prof.sbgc.name, "baseline": prof.baseline.name,
              "plain_cnn": prof.plain_cnn.name if prof.plain_cnn is not None else "none"}
    for m in MODELS_USED[notebook]:
        if m in given:
            models[m] = coerce(m, given.pop(m), str)
    knobs = apply_overrides(notebook, prof.chapters[notebook], given)
    return Params(notebook, profile, knobs, models["checkpoint"], models["baseline"], models["plain_cnn"], overridden)


def knob_names(notebook: str) -> tuple[str, ...]:
    """The dotted knob names of ``notebook`` (the same in every profile)."""
    _check_notebook(notebook)
    return knob_paths(NOTEBOOKS[notebook]) + MODELS_USED[notebook]


def describe() -> Iterator[str]:
    """Lines listing every profile's dataset, models and every chapter's knobs (``python -m sbgc.book list``)."""
    for prof in PROFILES.values():
        yield f"{prof.name}: {prof.description}; dataset {prof.dataset}; models {', '.join(m.name for m in prof.models())}"
    for name in NOTEBOOKS:
        yield name
        for knob in knob_paths(NOTEBOOKS[name]):
            values = {p: knob_value(prof.chapters[name], knob) for p, prof in PROFILES.items()}
            yield f"  {knob}: " + ", ".join(f"{p}={'on' if dataclasses.is_dataclass(v) else v}" for p, v in values.items())
