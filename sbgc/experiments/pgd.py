"""PGD one image at a time: early stopping, restarts, both losses, ε curves (paper §3.3 on MNIST).

:func:`sbgc.experiments.adversarial.run_pgd` runs Foolbox's PGD on a batch for a fixed number of
steps. Through the probability-flow ODE a step costs seconds per image on a CPU, and most of that is
wasted once an image is misclassified. Here each image is attacked on its own:

* **Early stopping.** Before every step the attacked image is classified; the first misclassified
  iterate ends the attack on that image and is kept. A later step can only find what an earlier one
  missed, never undo a success, so "more steps never help the defender" holds by construction, and
  the worst case over several attacks is the union of their successes (:class:`AttackOutcome`).
* **Restarts and losses.** Each image is attacked with each loss (cross-entropy along its exact
  direction, and the Carlini–Wagner margin; :mod:`sbgc.experiments.adversarial`) from
  ``restarts`` random starts in the ε-ball, stopping at the first success: the robust images are
  exactly those every (loss, restart) failed on.
* **The margin's gradient needs two classes.** d(ℓ_k* − ℓ_y)/dx involves only the true class y and
  the runner-up k*, which the forward pass before the step has just named; for the SBGC the
  gradient then goes through 2 probability-flow solves instead of K
  (:func:`sbgc.method.classify.class_log_likelihoods_pure` with ``classes``). It is the same
  gradient as through all K classes (tested), at ~2/K of the backward pass's cost.
* **One compiled function for every image.** The image's fixed random numbers (its Hutchinson
  probes) are an argument, not a constant baked into the compiled function.
* **An attack that knows a rejection rule.** With ``AttackSettings.reject`` (a
  :class:`sbgc.experiments.reject.RejectRule`), an image counts as broken only where it is misclassified AND
  accepted, and the loss ``"reject_margin"`` ascends min(margin, score − threshold): the margin while the
  image is still classified correctly, the rule's score while it is misclassified but rejected.
* **The step is Foolbox's.** With early stopping off and no random start, :func:`attack_image`
  takes exactly the steps of Foolbox 3's ``LinfPGD`` / ``L2PGD`` (sign step or L2-normalised step of
  ``rel_stepsize · ε``, projection onto the ε-ball, clipping to [0, 1]; tested on the baseline).

:func:`attack_images` attacks many images and returns an :class:`AttackOutcome` (arrays, cacheable
with ``to_arrays`` / ``from_arrays``); :func:`robust_accuracy_curve` runs the attack at ascending ε,
attacking at each budget only the images no smaller budget broke (a perturbation within a smaller
ball lies within every larger one).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.experiments.adversarial import (
    LOSSES,
    NORMS,
    FiniteDifferenceCheck,
    Norm,
    PGDResult,
    SBGCLogitsConfig,
    _from_arrays,
    describe_bound,
    _to_arrays,
    cross_entropy_direction,
    raise_if_failed,
)
from sbgc.cache import CacheKey, CachedResult, ResultCache, cached_blocks
from sbgc.experiments.reject import RejectRule
from sbgc.method.bound import BoundSettings
from sbgc.method.classify import class_log_likelihoods_pure
from sbgc.method.devices import names_the_memory_knobs
from sbgc.method.numerics import highest_precision
from sbgc.method.scorers import Bound

Array = jax.Array
ATTACK_BLOCK = 10  # images per cached block of an attack on the SBGC


# --- the attacked model, one image at a time ---------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class AttackModel:
    """A classifier attacked one image at a time; image i's fixed random numbers are ``aux[i]``.

    logits_and_ok(x [1, *shape], aux_i [1, ...]) → (logits [1, K], ok [1, K]);
    class_logits_and_ok(x, aux_i, classes int [1, k]) → the logits of those classes only, [1, k].
    Both pure and differentiable; the methods below jit them once for every image.
    ``kind``: "sbgc" (logits are log p(x | y), nats), "bound" (lower bounds on them) or "baseline".
    """

    logits_and_ok: Callable[[Array, Array], tuple[Array, Array]]
    class_logits_and_ok: Callable[[Array, Array, Array], tuple[Array, Array]]
    aux: Array  # [B, ...]
    kind: str
    description: str = ""

    @functools.cached_property
    def _forward(self):
        return jax.jit(self.logits_and_ok)

    @functools.cached_property
    def _margin_grad(self):
        def pair_margin(x, aux, pair):  # pair [1, 2] = (true class, runner-up)
            lp, ok = self.class_logits_and_ok(x, aux, pair)
            return lp[0, 1] - lp[0, 0], ok

        return jax.jit(jax.value_and_grad(pair_margin, has_aux=True))

    @functools.cached_property
    def _direction_grad(self):
        def along(x, aux, c):  # ⟨c, logits⟩ with the cotangent c [1, K] held fixed
            lp, ok = self.logits_and_ok(x, aux)
            return jnp.sum(c * lp), ok

        return jax.jit(jax.value_and_grad(along, has_aux=True))

    def _memory_advice(self, what: str, i: int):
        """Name the knobs to lower when image i's ``what`` runs out of device memory."""
        return names_the_memory_knobs(
            f"in the attack's {what} of image {i} ({self.description or self.kind})",
            "lower ode.n_probes (every class's solve carries them), or, for the gradient, the solver's checkpoints "
            "(SolverSettings.checkpoints) or the bound's times (bound_times)")

    def logits(self, x: np.ndarray, i: int, what: str = "forward pass") -> np.ndarray:
        """Logits [K] (float64) of image i at x [*shape]; raises if a solve failed."""
        with self._memory_advice(what, i):
            lp, ok = self._forward(jnp.asarray(x[None], jnp.float32), self.aux[i : i + 1])
        raise_if_failed(ok, what, self.description)
        return np.asarray(lp[0], np.float64)

    def gradient(self, x: np.ndarray, i: int, label: int, logits: np.ndarray, loss: str,
                 reject: RejectRule | None = None) -> np.ndarray:
        """The ascent direction's gradient [*shape] of ``loss`` at x, given the logits [K] there.

        "margin": ∇(ℓ_k* − ℓ_y), k* the runner-up at x, through the two classes' solves only;
        "cross_entropy": ∇⟨c, ℓ⟩ with c = :func:`~sbgc.experiments.adversarial.cross_entropy_direction`
        at x (the cross-entropy's gradient direction, exact at any margin), through all K;
        "reject_margin" (needs ``reject``): the margin's gradient while the margin is below the rule's score
        minus its threshold, else ∇⟨c, ℓ⟩ with c = ``reject.direction`` (the score's gradient), through all K.
        """
        xj = jnp.asarray(x[None], jnp.float32)
        aux = self.aux[i : i + 1]
        if loss not in LOSSES + ("reject_margin",) or (loss == "reject_margin" and reject is None):
            raise ValueError(f"loss must be one of {LOSSES}, or reject_margin with a rejection rule; got {loss!r} "
                             f"({'with' if reject else 'without'} a rule)")
        runner_up = int(np.argmax(np.where(np.arange(len(logits)) == label, -np.inf, logits)))
        if loss == "reject_margin":  # the smaller of the two terms is the one ascended
            loss = "margin" if logits[runner_up] - logits[label] <= float(reject.slack(logits)) else "reject_score"
        with self._memory_advice(f"{loss} gradient", i):
            if loss == "reject_score":
                (_, ok), g = self._direction_grad(xj, aux, reject.direction(logits[None]))
            elif loss == "margin":
                pair = jnp.asarray([[label, runner_up]], jnp.int32)
                (_, ok), g = self._margin_grad(xj, aux, pair)
            else:
                c = cross_entropy_direction(jnp.asarray(logits[None], jnp.float32), jnp.asarray([label], jnp.int32))
                (_, ok), g = self._direction_grad(xj, aux, c)
        raise_if_failed(ok, f"{loss} gradient", self.description)
        return np.asarray(g[0], np.float32)


def sbgc_attack_model(model: Any, probes: Array, config: SBGCLogitsConfig) -> AttackModel:
    """The SBGC (class log-likelihoods by the probability-flow ODE, :class:`SBGCLogitsConfig`), with
    probes [B, n, *shape] (:func:`~sbgc.experiments.adversarial.draw_attack_probes`) fixed per image."""
    probes = jnp.asarray(probes)
    if probes.ndim < 3 or probes.shape[1] != config.n_probes:
        raise ValueError(f"probes must have shape [B, n_probes={config.n_probes}, *image_shape], got {tuple(probes.shape)}")
    kw = dict(n_classes=config.n_classes, solver=config.solver, data_scaling=config.data_scaling)

    @highest_precision
    def logits_and_ok(x, p):
        return class_log_likelihoods_pure(model.score_fn, model.sde, x, p, **kw)

    @highest_precision
    def class_logits_and_ok(x, p, classes):
        return class_log_likelihoods_pure(model.score_fn, model.sde, x, p, classes=classes, **kw)

    return AttackModel(logits_and_ok, class_logits_and_ok, probes, "sbgc", config.describe())


def scorer_attack_model(model: Any, scorer: Any, key: Array, n_images: int, n_classes: int = 10, *,
                        kind: str | None = None, description: str | None = None) -> AttackModel:  # fmt: skip
    """Any scorer of :mod:`sbgc.method.scorers` as the attacked classifier, through its differentiable
    form ``scorer.pure``: image i's random numbers are those of id i under ``key``, fixed for the whole
    attack (``aux`` holds the ids), so the attacked function is the one ``scorer.scores`` tabulates."""
    f = scorer.pure(model.score_fn, model.sde, key, n_classes=n_classes)
    return AttackModel(lambda x, ids: f(x, ids), lambda x, ids, classes: f(x, ids, classes),
                       jnp.arange(int(n_images), dtype=jnp.int32), kind or type(scorer).__name__.lower(),
                       description or scorer.describe())  # fmt: skip


def bound_attack_model(model: Any, key: Array, n_images: int, settings: BoundSettings, n_classes: int = 10,
                       data_scaling: str = "centered") -> AttackModel:  # fmt: skip
    """The variational-bound classifier of the same score model (:class:`sbgc.method.scorers.Bound`,
    :func:`scorer_attack_model`); image i's times and noises are those of id i, fixed for the attack."""
    return scorer_attack_model(model, Bound(settings, data_scaling), key, n_images, n_classes, kind="bound",
                               description=describe_bound(settings))  # fmt: skip


def baseline_attack_model(classifier: Any, n_images: int) -> AttackModel:
    """A discriminative classifier with ``.logits(x_unit) -> [B, K]`` (no random numbers)."""
    if not callable(getattr(classifier, "logits", None)):
        raise ValueError(f"classifier must have a callable .logits(x_unit) -> [B, K], got {type(classifier).__name__}")

    @highest_precision
    def logits_and_ok(x, _):
        lp = classifier.logits(x)
        return lp, jnp.isfinite(lp)

    def class_logits_and_ok(x, aux, classes):
        lp, ok = logits_and_ok(x, aux)
        return jnp.take_along_axis(lp, classes, axis=1), jnp.take_along_axis(ok, classes, axis=1)

    return AttackModel(logits_and_ok, class_logits_and_ok, jnp.zeros((int(n_images), 1)), "baseline",
                       type(classifier).__name__)


# --- the attack ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """One threat model and how hard it is searched.

    norm, epsilon: the ball (on the [0, 1] pixel scale). steps: PGD steps per (loss, restart);
    rel_stepsize: step / ε. restarts: random starts per loss (the first is the clean image itself
    when ``random_start`` is False). losses: tried in order, each only on the images the previous
    ones did not break. early_stop: end an image's attack at its first misclassified iterate (off:
    run every step and judge the last iterate, as Foolbox does). seed: of the random starts.
    """

    norm: Norm
    epsilon: float
    steps: int
    rel_stepsize: float = 0.25
    restarts: int = 1
    losses: tuple[str, ...] = ("margin", "cross_entropy")
    random_start: bool = True
    early_stop: bool = True
    seed: int = 0
    reject: RejectRule | None = None  # an image counts as broken only where misclassified AND accepted by this rule

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {self.epsilon}")
        for name in ("steps", "restarts"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not self.rel_stepsize > 0:
            raise ValueError(f"rel_stepsize must be positive, got {self.rel_stepsize}")
        allowed = LOSSES + (("reject_margin",) if self.reject is not None else ())
        if not self.losses or any(loss not in allowed for loss in self.losses):
            raise ValueError(f"losses must be a non-empty tuple of {allowed}, got {self.losses!r} (reject_margin needs "
                             "a rejection rule)")

    def describe(self) -> str:
        start = "random start" if self.random_start else "no random start"
        stop = "early stop" if self.early_stop else "all steps"
        rule = f"; broken = misclassified and accepted ({self.reject.describe()})" if self.reject is not None else ""
        return (f"{self.norm} ε = {self.epsilon:g}: {self.steps} steps of {self.rel_stepsize:g}·ε × "
                f"{self.restarts} restart(s) × losses {', '.join(self.losses)}; {start}, {stop}{rule}")

    def fooled(self, logits: np.ndarray, label: int) -> bool:
        """:func:`fooled` under this attack's rejection rule."""
        return fooled(logits, label, self.reject)


def fooled(logits: np.ndarray, label: int, reject: RejectRule | None = None) -> bool:
    """Whether an input with ``logits`` [K] breaks the classifier: misclassified, and accepted by ``reject`` (if any)."""
    return int(np.argmax(logits)) != label and (reject is None or bool(reject.accepts(logits)))


def random_start(x0: np.ndarray, norm: Norm, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """A uniform point of the ε-ball around x0 (L∞: uniform per pixel; L2: uniform in the ball),
    clipped to [0, 1], as Foolbox's PGD starts."""
    if norm == "linf":
        delta = rng.uniform(-epsilon, epsilon, x0.shape)
    else:
        direction = rng.standard_normal(x0.shape)
        direction /= np.linalg.norm(direction)
        delta = direction * epsilon * rng.uniform() ** (1.0 / x0.size)
    return np.clip(x0 + delta, 0.0, 1.0).astype(np.float32)


def pgd_step(x: np.ndarray, x0: np.ndarray, grad: np.ndarray, norm: Norm, epsilon: float, stepsize: float) -> np.ndarray:
    """One ascent step of Foolbox 3's LinfPGD / L2PGD: normalise (sign, or ÷ max(‖g‖₂, 1e-12)),
    step, project onto the ε-ball around x0, clip to [0, 1]. All float32 [*shape]."""
    x, x0, grad = (np.asarray(a, np.float32) for a in (x, x0, grad))
    if norm == "linf":
        x = x + np.float32(stepsize) * np.sign(grad)
        x = x0 + np.clip(x - x0, -epsilon, epsilon)
    else:
        x = x + np.float32(stepsize) * grad / np.float32(max(float(np.linalg.norm(grad)), 1e-12))
        delta = x - x0
        x = x0 + delta * np.float32(min(1.0, epsilon / max(float(np.linalg.norm(delta)), 1e-12)))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class AttackOutcome:
    """Attacks on B images under one threat model (numpy arrays; [B] unless said).

    success: misclassified at the returned point (a clean error counts, with step 0, loss −1).
    adversarial [B, *shape]: the first misclassified iterate, else the last iterate of the last
    (loss, restart). loss_index, restart, step: where the success was found (−1 if none).
    gradients, forwards: gradient and forward evaluations spent on the image. linf, l2: ‖x_adv − x‖.
    shortest: the perturbation size (in the threat model's norm) of the closest misclassified point
    found on the segment from x to x_adv by :func:`shortest_on_segment` (x_adv's own size without a
    line search; inf where nothing was found): an upper bound on the image's minimal adversarial ε.
    """

    norm: str
    epsilon: float
    settings: str  # AttackSettings.describe()
    stepsize: float  # rel_stepsize · ε
    kind: str
    losses: tuple[str, ...]
    labels: np.ndarray
    clean_logits: np.ndarray  # [B, K]
    adv_logits: np.ndarray  # [B, K]
    adversarial: np.ndarray
    success: np.ndarray
    loss_index: np.ndarray
    restart: np.ndarray
    step: np.ndarray
    gradients: np.ndarray
    forwards: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    seconds: np.ndarray
    shortest: np.ndarray  # [B] threat-model norm of the shortest adversarial on the segment x → x_adv (inf: none)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return _to_arrays(self)

    @classmethod
    def from_arrays(cls, arrays: Any) -> "AttackOutcome":
        return _from_arrays(cls, arrays)

    def image_rows(self) -> dict[str, np.ndarray]:
        """The per-image arrays (image axis first) for :func:`sbgc.cache.cached_blocks`; the fields shared by
        every image (:func:`outcome_header`) stay out, :meth:`from_image_rows` puts them back."""
        return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in _HEADER}

    @classmethod
    def from_image_rows(cls, arrays: Any, header: dict[str, Any]) -> "AttackOutcome":
        """The outcome whose :meth:`image_rows` (of one or more consecutive blocks, joined) are ``arrays``, with
        the ``header`` of its attack (:func:`outcome_header`)."""
        return cls(**header, **{f.name: np.asarray(arrays[f.name]) for f in dataclasses.fields(cls) if f.name not in _HEADER})

    @property
    def clean_correct(self) -> np.ndarray:
        return np.argmax(self.clean_logits, axis=1) == self.labels

    @property
    def robust(self) -> np.ndarray:
        """[B] bool: correctly classified at the returned point (every attack failed)."""
        return ~self.success

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.robust))

    @property
    def broken(self) -> np.ndarray:
        """[B] bool: correctly classified clean, misclassified after the attack."""
        return self.success & self.clean_correct

    def summary(self) -> dict[str, Any]:
        """What the chapter's tables report of one attack: counts (clean correct, broken, broken by
        each loss, broken at the random start), the steps and shortest adversarial sizes of the
        broken images (median, min, max; None when none broke), gradients and seconds spent."""
        broken = self.broken
        steps, found = self.step[broken], self.shortest[broken]
        stats = lambda v: (float(np.median(v)), float(v.min()), float(v.max())) if len(v) else (None, None, None)  # noqa: E731
        return dict(
            images=len(self.labels), clean_correct=int(self.clean_correct.sum()), broken=int(broken.sum()),
            broken_by={loss: int(np.sum(broken & (self.loss_index == j))) for j, loss in enumerate(self.losses)},
            at_random_start=int(np.sum(broken & (self.step == 0))),
            steps=dict(zip(("median", "min", "max"), stats(steps))),
            shortest=dict(zip(("median", "min", "max"), stats(found))),
            gradients=int(self.gradients.sum()), seconds=float(self.seconds.sum()))

    def accuracy_at(self, epsilons: Sequence[float]) -> np.ndarray:
        """Accuracy under the adversarials found, at smaller budgets: the fraction of images whose
        shortest adversarial is larger than ε (an upper bound on the robust accuracy at ε ≤ the
        attacked budget; a stronger attack can only lower it). [len(epsilons)]."""
        eps = np.asarray(epsilons, np.float64)
        if np.any(eps > self.epsilon * (1 + 1e-6)):
            raise ValueError(f"accuracy_at needs ε ≤ the attacked budget {self.epsilon:g}, got {eps.max():g}")
        return np.mean(self.shortest[None, :] > eps[:, None], axis=1)

    def as_pgd_result(self) -> PGDResult:
        """The outcome as a :class:`~sbgc.experiments.adversarial.PGDResult` (for Table 3, the
        likelihood shift and the image pairs), its loss named after the losses tried."""
        return PGDResult(
            norm=self.norm, loss="worst of " + ", ".join(self.losses) + " (early stop)", epsilon=self.epsilon,
            steps=int(self.step.max(initial=0)), rel_stepsize=self.stepsize / self.epsilon, stepsize=self.stepsize,
            random_start=True, seed=0,
            kind=self.kind, labels=self.labels, clean_logits=self.clean_logits,
            clean_pred=np.argmax(self.clean_logits, axis=1), adversarial=self.adversarial, adv_logits=self.adv_logits,
            adv_pred=np.argmax(self.adv_logits, axis=1), success=self.success, linf=self.linf, l2=self.l2,
            seconds=float(self.seconds.sum()), step_seconds=())  # fmt: skip


def finite_difference_check(model: AttackModel, x0: np.ndarray, i: int, label: int, loss: str, key: Array,
                            n_directions: int = 4, h: float = 1e-2) -> FiniteDifferenceCheck:
    """The gradient PGD steps along, checked against central finite differences of the same scalar.

    ``exact`` = ⟨:meth:`AttackModel.gradient` of ``loss`` at image i's x0 [*shape], d_j⟩ along random unit
    directions d_j [J = n_directions] (standard normal scaled to unit L2 norm, from ``key``): the very
    compiled functions the attack calls (for "margin" through the two classes' solves only). The scalar is
    the one that gradient differentiates: for "cross_entropy" ⟨c, ℓ(x)⟩ with the cotangent c of
    :func:`~sbgc.experiments.adversarial.cross_entropy_direction` held at x0, for "margin" ℓ_k*(x) − ℓ_y(x)
    with the runner-up k* held at x0. Its central differences use the attacked forward pass (all classes;
    a class's solve does not depend on which other classes are solved, tested), in float64 less the clean
    maximum logit, which changes neither scalar's differences.
    """
    if not (isinstance(n_directions, (int, np.integer)) and n_directions >= 1):
        raise ValueError(f"n_directions must be a positive int, got {n_directions!r}")
    if not h > 0:
        raise ValueError(f"h must be positive, got {h}")
    x0 = np.asarray(x0, np.float32)
    clean = model.logits(x0, i, "finite-difference check")
    grad = model.gradient(x0, i, label, clean, loss)
    weights = np.zeros_like(clean)
    if loss == "margin":
        weights[int(np.argmax(np.where(np.arange(len(clean)) == label, -np.inf, clean)))] = 1.0
        weights[label] = -1.0
    else:
        weights = np.asarray(cross_entropy_direction(jnp.asarray(clean[None], jnp.float32),
                                                     jnp.asarray([label], jnp.int32))[0], np.float64)  # fmt: skip
    shift = clean.max()
    score = lambda x: float(np.dot(weights, model.logits(np.asarray(x, np.float32), i, "finite difference") - shift))
    dirs = np.asarray(jax.random.normal(key, (n_directions, *x0.shape), jnp.float32), np.float64)
    dirs /= np.sqrt(np.sum(dirs**2, axis=tuple(range(1, dirs.ndim)), keepdims=True))
    exact = np.array([float(np.vdot(grad, d)) for d in dirs])
    fd = np.array([(score(x0 + h * d) - score(x0 - h * d)) / (2 * h) for d in dirs])
    rel = np.abs(exact - fd) / np.maximum(np.maximum(np.abs(exact), np.abs(fd)), 1e-30)
    return FiniteDifferenceCheck(exact, fd, rel, float(h), float(np.linalg.norm(grad)), float(np.dot(weights, clean - shift)))


def attack_image(model: AttackModel, x0: np.ndarray, label: int, i: int, settings: AttackSettings,
                 clean_logits: np.ndarray | None = None) -> dict[str, Any]:
    """PGD on image i (x0 [*shape] in [0, 1], float32) under ``settings``: a dict of one row of
    :class:`AttackOutcome` (adversarial, adv_logits, success, loss_index, restart, step, gradients,
    forwards). Random starts from ``numpy.random.default_rng([seed, i, loss, restart])``."""
    x0 = np.asarray(x0, np.float32)
    clean = model.logits(x0, i, "clean forward pass") if clean_logits is None else np.asarray(clean_logits)
    forwards = int(clean_logits is None)
    row = dict(adversarial=x0, adv_logits=clean, success=False, loss_index=-1, restart=-1, step=-1, gradients=0)
    if settings.fooled(clean, label):
        return row | dict(success=True, step=0, forwards=forwards)
    stepsize = settings.rel_stepsize * settings.epsilon
    gradients = 0
    for li, loss in enumerate(settings.losses):
        for r in range(settings.restarts):
            if settings.random_start:
                rng = np.random.default_rng([settings.seed, int(i), li, r])
                x, logits = random_start(x0, settings.norm, settings.epsilon, rng), None
            else:
                x, logits = x0, clean
            for s in range(settings.steps + 1):
                if logits is None:
                    logits = model.logits(x, i, f"{settings.norm} PGD ({loss}) step {s}")
                    forwards += 1
                if settings.fooled(logits, label) and (settings.early_stop or s == settings.steps):
                    return row | dict(adversarial=x, adv_logits=logits, success=True, loss_index=li, restart=r,
                                      step=s, gradients=gradients, forwards=forwards)  # fmt: skip
                if s == settings.steps:
                    break
                grad = model.gradient(x, i, label, logits, loss, settings.reject)
                gradients += 1
                x, logits = pgd_step(x, x0, grad, settings.norm, settings.epsilon, stepsize), None
            row |= dict(adversarial=x, adv_logits=logits)
    return row | dict(gradients=gradients, forwards=forwards)


def logits_of(model: AttackModel, images: np.ndarray, first_image: int = 0, what: str = "forward pass") -> np.ndarray:
    """The attacked classifier's logits of images [B, *shape] (image b as image first_image + b of
    the sample, with its random numbers): [B, K]. ``what`` names the pass in solver errors."""
    return np.stack([model.logits(np.asarray(im, np.float32), first_image + b, what) for b, im in enumerate(images)])


def perturbation_size(delta: np.ndarray, norm: Norm) -> float:
    """‖δ‖∞ or ‖δ‖₂ of one perturbation (float64)."""
    d = np.asarray(delta, np.float64).ravel()
    return float(np.abs(d).max() if norm == "linf" else np.linalg.norm(d))


def shortest_on_segment(model: AttackModel, x0: np.ndarray, x_adv: np.ndarray, label: int, i: int, norm: Norm,
                        n_bisect: int, reject: RejectRule | None = None) -> tuple[float, int]:
    """Bisection for the closest misclassified point x0 + s·(x_adv − x0), s ∈ (0, 1], given that
    x_adv is misclassified: (its perturbation size in ``norm``, forward passes spent). Only points
    seen misclassified are returned, so the size is an upper bound on the minimal adversarial ε
    (the decision need not be monotone along the segment; bisection then finds one crossing). With a
    rejection rule, "misclassified" means misclassified and accepted (:func:`fooled`)."""
    x0, x_adv = np.asarray(x0, np.float32), np.asarray(x_adv, np.float32)
    lo, hi = 0.0, 1.0
    for _ in range(int(n_bisect)):
        mid = 0.5 * (lo + hi)
        logits = model.logits(x0 + np.float32(mid) * (x_adv - x0), i, "line search")
        lo, hi = (lo, mid) if fooled(logits, label, reject) else (mid, hi)
    return perturbation_size(np.float32(hi) * (x_adv - x0), norm), int(n_bisect)


def attack_images(model: AttackModel, images: np.ndarray, labels: np.ndarray, settings: AttackSettings, *,
                  attack: Sequence[bool] | None = None, line_search: int = 0, first_image: int = 0,
                  progress: bool = False) -> AttackOutcome:
    """:func:`attack_image` on every image (images float32 [B, *shape] in [0, 1], labels int [B]);
    image i uses ``model.aux[first_image + i]`` (a block of a larger sample passes its offset).
    ``attack[i]`` False skips image i (it is returned unattacked, a success if already
    misclassified): how :func:`robust_accuracy_curve` spares the images a smaller budget already
    broke. ``line_search``: bisection steps of :func:`shortest_on_segment` per broken image (0: the
    adversarial's own size)."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim < 2 or labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"need images [B, *shape] and int labels [B], got {images.shape} and {labels.dtype} {labels.shape}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"images must lie in [0, 1], got range [{images.min():.4g}, {images.max():.4g}]")
    if first_image + len(images) > model.aux.shape[0]:
        raise ValueError(f"images {first_image}…{first_image + len(images) - 1} but the model has random numbers "
                         f"for {model.aux.shape[0]}")
    attack = np.ones(len(images), bool) if attack is None else np.asarray(attack, bool)
    rows = []
    iterator = range(len(images))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"{settings.norm} ε={settings.epsilon:g}")
    for b in iterator:
        i = first_image + b
        t0 = time.perf_counter()
        clean = model.logits(images[b], i, "clean forward pass")
        if attack[b]:
            row = attack_image(model, images[b], int(labels[b]), i, settings, clean_logits=clean)
        else:
            broken = settings.fooled(clean, int(labels[b]))
            row = dict(adversarial=images[b], adv_logits=clean, success=broken, loss_index=-1, restart=-1,
                       step=0 if broken else -1, gradients=0, forwards=0)  # fmt: skip
        shortest, extra = np.inf, 0
        if row["success"]:
            shortest = perturbation_size(row["adversarial"] - images[b], settings.norm)
            if line_search and row["loss_index"] >= 0:  # broken by an attack (not a clean error: size 0)
                shortest, extra = shortest_on_segment(model, images[b], row["adversarial"], int(labels[b]), i,
                                                      settings.norm, line_search, settings.reject)
        rows.append(row | dict(clean_logits=clean, seconds=time.perf_counter() - t0, shortest=shortest,
                               forwards=row["forwards"] + 1 + extra))
    stack = lambda k, dtype=None: np.asarray([r[k] for r in rows], dtype)  # noqa: E731
    adv = stack("adversarial", np.float32)
    delta = (adv.astype(np.float64) - images.astype(np.float64)).reshape(len(images), -1)
    return AttackOutcome(
        **outcome_header(model.kind, settings), labels=labels.astype(np.int64), clean_logits=stack("clean_logits", np.float64),
        adv_logits=stack("adv_logits", np.float64), adversarial=adv, success=stack("success", bool),
        loss_index=stack("loss_index", np.int64), restart=stack("restart", np.int64), step=stack("step", np.int64),
        gradients=stack("gradients", np.int64), forwards=stack("forwards", np.int64),
        linf=np.abs(delta).max(axis=1), l2=np.linalg.norm(delta, axis=1), seconds=stack("seconds", np.float64),
        shortest=stack("shortest", np.float64),
    )  # fmt: skip


def robust_accuracy_curve(model: AttackModel, images: np.ndarray, labels: np.ndarray, epsilons: Sequence[float],
                          settings: AttackSettings, *, progress: bool = False) -> list[AttackOutcome]:
    """:func:`attack_images` at each ε of ``epsilons`` (ascending), each with ``settings`` but that
    ε; an image broken at a smaller ε is not attacked again (its adversarial lies in every larger
    ball) and counts as broken. Returns one :class:`AttackOutcome` per ε."""
    eps = [float(e) for e in epsilons]
    if not eps or any(b <= a for a, b in zip(eps, eps[1:])) or eps[0] <= 0:
        raise ValueError(f"epsilons must be positive and strictly ascending, got {epsilons!r}")
    out: list[AttackOutcome] = []
    for e in eps:
        broken = out[-1].success if out else np.zeros(len(images), bool)
        res = attack_images(model, images, labels, dataclasses.replace(settings, epsilon=e), attack=~broken,
                            progress=progress)
        if out:  # the images broken at the smaller ε keep that attack's outcome (its point is in this ball too)
            res = dataclasses.replace(res, **{f: np.where(broken.reshape((-1,) + (1,) * (getattr(res, f).ndim - 1)),
                                                          getattr(out[-1], f), getattr(res, f)) for f in _PER_IMAGE})
        out.append(res)
    return out


_PER_IMAGE = ("adv_logits", "adversarial", "success", "loss_index", "restart", "step", "linf", "l2", "shortest")


_HEADER = ("norm", "epsilon", "settings", "stepsize", "kind", "losses")  # an AttackOutcome's fields shared by its images


def outcome_header(kind: str, settings: "AttackSettings") -> dict[str, Any]:
    """The fields of an :class:`AttackOutcome` that every image of the attack shares: its threat model and settings,
    and the ``kind`` of model attacked."""
    return dict(norm=settings.norm, epsilon=float(settings.epsilon), settings=settings.describe(),
                stepsize=float(settings.rel_stepsize * settings.epsilon), kind=kind, losses=tuple(settings.losses))


def attack_in_blocks(model: AttackModel, images: np.ndarray, labels: np.ndarray, settings: AttackSettings,
                     cache: ResultCache, key: CacheKey, *, line_search: int = 0,
                     block: int = ATTACK_BLOCK) -> tuple[AttackOutcome, list[CachedResult]]:
    """:func:`attack_images` on the images of ``key`` (its ``image_indices``; ``images``/``labels`` their pixels and
    labels, in that order) through ``cache`` in blocks of ``block`` images (:func:`sbgc.cache.cached_blocks`: an
    interrupted attack resumes at its first missing block, a larger nested sample reuses the smaller's blocks,
    ``--shard`` splits the blocks between processes); image i keeps the random numbers of its position in the
    sample (``first_image``), so the outcome equals one call on all images. Returns (outcome, the blocks' entries).
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    if not (len(images) == len(labels) == len(key.image_indices)):
        raise ValueError(f"{key.name}: {len(images)} images and {len(labels)} labels for a key of "
                         f"{len(key.image_indices)} images")

    def compute(b: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows = slice(b * block, b * block + len(idx))
        return attack_images(model, images[rows], labels[rows], settings, line_search=line_search,
                             first_image=rows.start).image_rows()

    arrays, entries = cached_blocks(cache, key, block, compute)
    return AttackOutcome.from_image_rows(arrays, outcome_header(model.kind, settings)), entries


def plot_accuracy_curves(curves: Sequence[tuple[str, AttackOutcome]], n_points: int = 61, published: Sequence[tuple[str, str, float, float]] = ()):
    """Accuracy vs ε per threat model (one panel per norm): for each (label, outcome), the fraction
    of images whose shortest adversarial found is larger than ε (:meth:`AttackOutcome.accuracy_at`,
    an upper bound on robust accuracy), from 0 to the attacked budget. ``published``: (label, norm,
    ε, accuracy) points drawn as markers. Returns the figure."""
    import matplotlib.pyplot as plt

    norms = list(dict.fromkeys(o.norm for _, o in curves))
    fig, axes = plt.subplots(1, len(norms), figsize=(4.6 * len(norms), 3.4), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for label, o in curves:
            if o.norm != norm:
                continue
            eps = np.linspace(0.0, o.epsilon, n_points)
            ax.step(eps, 100 * o.accuracy_at(eps), where="post", label=f"{label} (n = {len(o.labels)})")
        for label, n, e, acc in published:
            if n == norm:
                ax.plot([e], [100 * acc], "x", label=label)
        ax.set_xlabel(f"ε ({'L∞' if norm == 'linf' else 'L2'}, [0, 1] pixels)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
