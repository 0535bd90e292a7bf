"""Chapter 04 (paper Table 3) as one study: the attacks, their tables and the verdict.

:class:`AdversarialStudy` loads the profile's models and images; each of its methods computes one section of the
chapter through the results cache (the gradient check, the attacks of :mod:`sbgc.experiments.pgd`, the bound
classifier's, the tight-tolerance judge, the likelihood shift) and returns the numbers with the section's markdown;
:meth:`AdversarialStudy.numbers` is the chapter's results record and :meth:`AdversarialStudy.summary_markdown` its
verdict. The table and wording helpers are plain functions, tested on their own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, Sequence

import jax
import numpy as np

from sbgc.cache import CacheKey, cached_blocks
from sbgc.data.datasets import describe, sample_indices
from sbgc.experiments import table3
from sbgc.experiments.adversarial import (
    LOSSES,
    AttackLikelihoods,
    FiniteDifferenceCheck,
    PGDResult,
    SBGCLogitsConfig,
    baseline_logits_fn,
    bound_name,
    describe_bound,
    draw_attack_probes,
    image_shape,
    likelihood_shift,
    run_pgd,
    sbgc_logits_fn,
    worst_of,
)
from sbgc.experiments.pgd import (
    Array,
    AttackModel,
    AttackOutcome,
    AttackSettings,
    attack_in_blocks,
    baseline_attack_model,
    bound_attack_model,
    ATTACK_BLOCK,
    finite_difference_check,
    logits_of,
    plot_accuracy_curves,
    sbgc_attack_model,
)
from sbgc.method.bound import BoundSettings
from sbgc.method.likelihood import SolverSettings, to_unit_interval
from sbgc.report import cpu_trained_note, markdown_table
from sbgc.stats import binomial_interval

FIXED_FD_STEPS = dict(solver="heun", n_steps=32, step_grid="log")  # the smooth solve of the gradient check
NOT_ATTACK_KNOBS = ("n_images", "n_baseline_images", "n_show", "judge_rtol", "bound_times", "bound_weighting",
                    "n_ode_images")  # not in the attacks' keys
NOT_RUN = "Not run at this profile (`{knob}` is None)."
BLOCKS_VERSION = 2  # of the per-image attack blocks (2: sbgc.cache.cached_blocks, keyed by the block's images)


def robustness_verdict(outcomes: Sequence[AttackOutcome]) -> str:
    """Over one classifier's attacks (e.g. both budgets): ``"no image correct"`` (nothing was attacked),
    ``"all broken"`` (every correctly classified image was broken at every budget) or ``"some robust"``."""
    if not outcomes:
        raise ValueError("robustness_verdict needs at least one AttackOutcome")
    if not any(o.clean_correct.any() for o in outcomes):
        return "no image correct"
    return "all broken" if all(o.robust.sum() == 0 for o in outcomes) else "some robust"


def attack_rows(outcomes: dict[tuple[str, str], AttackOutcome], names: dict[str, str]) -> list[tuple]:
    """Rows of the chapter's attack table, one per (who, norm) of ``outcomes`` (``names[who]`` names the
    model): clean correct, broken (by each loss, at the random start), median and max steps to break,
    gradients, seconds (:meth:`AttackOutcome.summary`)."""
    rows = []
    for (who, norm), o in outcomes.items():
        s = o.summary()
        rows.append((names[who], norm, f"{s['clean_correct']}/{s['images']}", f"{s['broken']}",
                     ", ".join(f"{loss} {n}" for loss, n in s["broken_by"].items()), f"{s['at_random_start']}",
                     f"{s['steps']['median']:.0f} (max {s['steps']['max']:.0f})" if s["broken"] else "–",
                     f"{s['gradients']}", f"{s['seconds']:.0f}"))  # fmt: skip
    return rows


def shortest_rows(outcomes: dict[tuple[str, str], AttackOutcome], names: dict[str, str]) -> list[tuple]:
    """Rows of the shortest-adversarial table, one per (who, norm): broken / clean correct, and the
    median and range of the broken images' shortest adversarial sizes ("–" where none broke)."""
    rows = []
    for (who, norm), o in outcomes.items():
        s = o.summary()
        rows.append((names[who], norm, f"{s['broken']}/{s['clean_correct']}",
                     f"{s['shortest']['median']:.3g}" if s["broken"] else "–",
                     f"{s['shortest']['min']:.3g} – {s['shortest']['max']:.3g}" if s["broken"] else "–"))  # fmt: skip
    return rows


def check_line(c: FiniteDifferenceCheck, difference: str = "difference") -> str:
    """'‖∇L‖₂ = …, max |exact − <difference>| / ‖∇L‖₂ = **…**' of one gradient check, for the chapter's text."""
    return f"‖∇L‖₂ = {c.gradient_norm:.4g}, max |exact − {difference}| / ‖∇L‖₂ = **{c.max_error_vs_gradient_norm:.2e}**"


def gradient_check_markdown(checks: dict[tuple[str, str], FiniteDifferenceCheck], solvers: dict[str, str],
                            attacked: str = "attacked function", tolerance: float = 1e-2) -> str:  # fmt: skip
    """The chapter's gradient-check table and its reading: ``checks[function, loss]`` of the functions
    whose solver ``solvers[function]`` describes (``attacked`` names the attacked one). The reverse-mode
    gradient "agrees" where the largest error relative to ‖∇L‖₂ of a function's checks is below
    ``tolerance``; the smooth (fixed-step) one is the better of the two functions."""
    worst = {name: max(c.max_error_vs_gradient_norm for (n, _), c in checks.items() if n == name) for name in solvers}
    rows = [(name, solvers[name], loss, j, f"{e:.6g}", f"{d:.6g}", f"{r:.2e}") for (name, loss), c in checks.items()
            for j, (e, d, r) in enumerate(zip(c.exact, c.finite_difference, c.relative_error))]  # fmt: skip
    summary = "; ".join(f"{name}, {loss}: {check_line(c)}" for (name, loss), c in checks.items())
    h = next(iter(checks.values())).h
    return (markdown_table(("function", "solver", "loss", "direction", "exact (reverse mode)", "central difference",
                            "relative error"), rows)
            + f"\n\nh = {h:g}. {summary} (the relative error compares two small numbers where a direction is nearly "
            "orthogonal to ∇L).\n\n"
            + ("With fixed steps the reverse-mode gradient agrees with the finite differences: the second-order "
               "backward pass through this network is right. " if min(worst.values()) < tolerance else
               "**With fixed steps the reverse-mode gradient disagrees with the finite differences:** before trusting "
               "any attack below, find out why (a central difference errs by ~h² × the third derivative: try a "
               "smaller `fd_h`). ")
            + ("The attacked function agrees as well." if worst[attacked] < tolerance else
               "The attacked function's finite differences disagree with its gradient, as expected of an adaptive "
               "solve whose steps change with x (above): the attacks' success, not this table, is the evidence that "
               "its gradient points somewhere useful."))  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class GradientChecks:
    """The chapter's finite-difference checks of the SBGC's margin gradient on its first image.

    checks[(function, loss)]: :class:`~sbgc.experiments.adversarial.FiniteDifferenceCheck` with [J] arrays
    (J = ``n_fd_directions``); solvers[function]: its :meth:`SBGCLogitsConfig.describe`; entries: the cache
    entries, in order; markdown: the table and its reading, with provenance.
    """

    checks: dict[tuple[str, str], FiniteDifferenceCheck]
    solvers: dict[str, str]
    entries: list
    markdown: str


@dataclasses.dataclass(frozen=True, eq=False)
class Attacks:
    """Every model attacked under both budgets (norms in the order of the chapter's budgets).

    settings[norm]: the per-image attack. outcomes[(who, norm)]: :class:`AttackOutcome` on the SBGC's B
    images for who in "sbgc" and the baselines ("base", "cnn"). results[(who, norm)]: the SBGC's outcome as a
    :class:`~sbgc.experiments.adversarial.PGDResult` [B]; a baseline's Foolbox batch PGD on its N images
    (worst case over both losses) [N]. by_loss[(who, norm, loss)]: that batch attack's record per loss.
    sbgc_entries / baseline_entries[who]: cache entries, in order; baseline_provenance: each baseline's
    provenance line; markdown: the attack table, the settings and provenance.
    """

    settings: dict[str, AttackSettings]
    outcomes: dict[tuple[str, str], AttackOutcome]
    results: dict[tuple[str, str], PGDResult]
    by_loss: dict[tuple[str, str, str], dict]
    sbgc_entries: list
    baseline_entries: dict[str, list]
    baseline_provenance: str
    markdown: str


@dataclasses.dataclass(frozen=True, eq=False)
class BoundAttack:
    """The variational-bound classifier attacked like the SBGC (``settings`` None: not at this profile).

    checks[loss]: its gradient check on the first image; outcomes / results[("bound", norm)] as in
    :class:`Attacks`; entries: its cache entries (the check's, then the attacks' blocks).
    """

    settings: BoundSettings | None
    checks: dict[str, FiniteDifferenceCheck]
    outcomes: dict[tuple[str, str], AttackOutcome]
    results: dict[tuple[str, str], PGDResult]
    entries: list
    markdown: str

    @property
    def worst_check(self) -> float:
        """The largest error relative to ‖∇L‖₂ over the bound's gradient checks."""
        return max(c.max_error_vs_gradient_norm for c in self.checks.values())


@dataclasses.dataclass(frozen=True, eq=False)
class TightJudge:
    """The SBGC's adversarials classified again at a tight tolerance: accuracies[norm] holds the clean and
    adversarial accuracy at ``judge_rtol`` and the adversarial accuracy under the attacked solver ({}: not run)."""

    accuracies: dict[str, dict[str, float]]
    markdown: str


@dataclasses.dataclass(frozen=True, eq=False)
class ManifoldShift:
    """Do the attacks leave the data manifold, by the SBGC's likelihood (per norm)?

    shift / shift_baseline[norm]: :class:`~sbgc.experiments.adversarial.AttackLikelihoods` [B] of the SBGC's own
    adversarials and of the baseline's (on the SBGC's images); transfer[norm]: the SBGC's accuracy on the
    baseline's adversarials; judged_match[norm]: max |stored − this run's| of those images; entries: the
    cache entries of the SBGC's forward passes on them.
    """

    shift: dict[str, AttackLikelihoods]
    shift_baseline: dict[str, AttackLikelihoods]
    transfer: dict[str, float]
    judged_match: dict[str, float]
    entries: list
    markdown: str


@dataclasses.dataclass(frozen=True, eq=False)
class AdversarialStudy:
    """Chapter 04 (paper Table 3): the SBGC, its variational-bound classifier and the baselines attacked on
    one sample, every expensive result through the results cache, each section's tables and text built here.

    params: the chapter's :class:`sbgc.book.profiles.Params` (``"04_adversarial"``). cache: a
    :class:`sbgc.cache.ResultCache`. model: the score model (``score_fn``, ``sde``, ``sha256``, ``path``, ``meta``,
    ``describe()``, ``config``). baselines: {"base": the Wide-ResNet, "cnn": the plain CNN if the profile has
    one}, each with ``logits`` and the same attributes (``config.name``). idx [B] / idx_base [N]: the SBGC's and
    the baselines' images, positions in the split (idx = idx_base[:B]); labels [B] / labels_base [N] int32;
    x [B, H, W, C] / x_base [N, H, W, C]: float32 in [0, 1], dequantized once (image i's noise from
    ``fold_in(fold_in(key, 0), i)``). source: the data source of every cache key. prov / prov_bases[who]:
    provenance of the SBGC's and each baseline's numbers; note: the CPU-trained models' note.

    Build it with :meth:`open` (loads the profile's models and data) or :meth:`of`; each method computes
    one section of the chapter and returns its numbers with their markdown.
    """

    params: Any
    cache: Any
    model: Any
    baselines: dict[str, Any]
    class_names: tuple[str, ...]
    idx: np.ndarray
    idx_base: np.ndarray
    labels: np.ndarray
    labels_base: np.ndarray
    x: Any
    x_base: Any
    source: str
    prov: Any
    prov_bases: dict[str, Any]
    note: str | None

    @classmethod
    def open(cls, params: Any, cache: Any, provenance: Callable[..., Any]) -> "AdversarialStudy":
        """The profile's score model, baselines (the plain CNN unless ``plain_cnn`` is "none") and data."""
        from sbgc.data.datasets import class_names, evaluation_split
        from sbgc.train.baseline import load_classifier
        from sbgc.train.pretrained import load_model

        model = load_model(params.checkpoint)
        baselines = {"base": load_classifier(params.baseline)}
        if params.plain_cnn != "none":  # the second baseline, without BatchNorm
            baselines["cnn"] = load_classifier(params.plain_cnn)
        return cls.of(params, cache, model, baselines, evaluation_split(params.data), class_names(params.data),
                      provenance)

    @classmethod
    def of(cls, params: Any, cache: Any, model: Any, baselines: dict[str, Any], split: Any,
           class_names: Sequence[str], provenance: Callable[..., Any]) -> "AdversarialStudy":  # fmt: skip
        """The study of loaded models on ``split`` (an :class:`sbgc.data.files.ImageSet` of uint8 images
        [M, H, W, C]): draws the samples (:func:`sbgc.data.datasets.sample_indices`, the SBGC's a prefix of
        the baselines'), dequantizes them and collects the provenance with ``provenance`` (the book's
        :func:`sbgc.book.provenance.collect_provenance`: the book layer sits above this one)."""
        P = params
        shape = image_shape(model)  # (H, W, C): MNIST (28, 28, 1), CIFAR-10 (32, 32, 3)
        if tuple(split.images.shape[1:]) != shape or any(image_shape(c) != shape for c in baselines.values()):
            raise ValueError(f"{P.data} images are {split.images.shape[1:]}, the score model reads {shape}, "
                             f"the baselines {[image_shape(c) for c in baselines.values()]}")
        idx_base = sample_indices(len(split), max(P.n_baseline_images, P.n_images), P.seed)
        idx = idx_base[: P.n_images]  # a prefix of one permutation: a larger run extends it
        key = jax.random.fold_in(jax.random.key(P.seed), 0)
        source = f"{describe(split)}, random images, dequantized once"
        prov = provenance(P, data_source=source, checkpoint=model.path,
                                  sample_sizes={"images (SBGC)": len(idx), "probes": P.ode.n_probes,
                                                "PGD steps": P.pgd_steps, "restarts": P.restarts})  # fmt: skip
        prov_bases = {who: provenance(P, data_source=source, checkpoint=c.path,
                                              sample_sizes={"images (baseline)": len(idx_base), "PGD steps": P.pgd_steps})
                      for who, c in baselines.items()}  # fmt: skip
        return cls(P, cache, model, dict(baselines), tuple(class_names), idx, idx_base,
                   split.labels[idx].astype(np.int32), split.labels[idx_base].astype(np.int32),
                   to_unit_interval(split.images[idx], key, dequantize=True),
                   to_unit_interval(split.images[idx_base], key, dequantize=True), source, prov, prov_bases,
                   cpu_trained_note(model.meta, *(c.meta for c in baselines.values())))  # fmt: skip

    # the fixed pieces of the attacks
    @property
    def key(self) -> Array:
        """The chapter's root key (``seed``); ``fold_in`` 0: the dequantization noise, 1: the probes, 2: the
        gradient checks' directions, 3: the bound classifier's times and noises."""
        return jax.random.key(self.params.seed)

    @property
    def budgets(self) -> dict[str, float]:
        """{"linf": ε∞, "l2": ε₂} on the [0, 1] pixel scale."""
        return {"linf": self.params.eps_linf, "l2": self.params.eps_l2}

    @property
    def attack_knobs(self) -> dict[str, Any]:
        """The knobs that change an attack's numbers (not the sample sizes, nor what is shown or judged)."""
        return {k: v for k, v in dataclasses.asdict(self.params.knobs).items() if k not in NOT_ATTACK_KNOBS}

    @property
    def names(self) -> dict[str, str]:
        """Display name of each attacked model ("sbgc", "bound" and the baselines)."""
        bound = BoundSettings(n_times=2, weighting=self.params.bound_weighting)
        return {"sbgc": "SBGC", "bound": f"SBGC, {bound_name(bound)}"} | {w: c.config.name for w, c in self.baselines.items()}

    @functools.cached_property
    def config(self) -> SBGCLogitsConfig:
        """The SBGC's logits: the profile's ``ode`` knobs (probes and solver)."""
        return SBGCLogitsConfig(n_probes=self.params.ode.n_probes, solver=self.params.ode.solver_settings())

    @functools.cached_property
    def attack_model(self) -> AttackModel:
        """The attacked SBGC, with probes [B, n, H, W, C] from ``fold_in(key, 1)``: the very object PGD calls."""
        probes = draw_attack_probes(jax.random.fold_in(self.key, 1), len(self.idx), self.params.ode.n_probes,
                                    image_shape(self.model))  # fmt: skip
        return sbgc_attack_model(self.model, probes, self.config)

    @property
    def attack_settings(self) -> dict[str, AttackSettings]:
        """The per-image attack under each budget (the profile's steps, step size, restarts and seed)."""
        P = self.params
        return {norm: AttackSettings(norm, eps, steps=P.pgd_steps, rel_stepsize=P.rel_stepsize, restarts=P.restarts,
                                     seed=P.seed) for norm, eps in self.budgets.items()}  # fmt: skip

    def line(self, *entries: Sequence[Any]) -> str:
        """The SBGC's provenance line with the CPU note and the cache entries of ``entries`` (lists, joined)."""
        return self.prov.line(self.note, [e for group in entries for e in group])

    def header_markdown(self) -> str:
        """The notice, the models, the SBGC's logits, the budgets and the provenance of every model."""
        P, m = self.params, self.model
        cnn, eps = self.baselines.get("cnn"), table3.format_epsilon
        return (P.notice(m.meta, *(c.meta for c in self.baselines.values())) + "\n\n"
                f"Score model: {m.describe()}.\n\nBaseline: {self.baselines['base'].describe()}.\n\n"
                + (f"Plain CNN: {cnn.describe()}.\n\n" if cnn else "") + f"SBGC logits: {self.config.describe()}.\n\n"
                f"Budgets ({P.spec.dataset}): ε∞ = {eps(P.eps_linf)}, ε₂ = {eps(P.eps_l2)}.\n\n"
                + self.line() + "\n\n" + "\n\n".join(pb.line(self.note) for pb in self.prov_bases.values()))  # fmt: skip

    def _key(self, name: str, sha256: str, settings: dict, n: int | None = None) -> CacheKey:
        """The key of a per-image computation ``name`` on the SBGC's (first ``n``) images, cached in blocks of
        ``ATTACK_BLOCK`` (:func:`sbgc.cache.cached_blocks`; the nested sample fixes each image's position, hence
        its numbers)."""
        return CacheKey(name, BLOCKS_VERSION, settings, sha256, self.source, self.idx[:n])

    @property
    def n_ode(self) -> int:
        """How many of the images the exact-ODE SBGC is attacked on (the first; the knob ``n_ode_images``): its
        attack, the tight judge and the likelihood sections run on them, the bound and the baselines on all."""
        return self.params.n_ode_images or len(self.idx)

    @property
    def ode_subset_text(self) -> str:
        return f" (the exact-ODE SBGC on the first {self.n_ode})" if self.n_ode < len(self.idx) else ""

    def _fd_check(self, am: AttackModel, name: str, settings: dict, entries: list) -> FiniteDifferenceCheck:
        """:func:`finite_difference_check` of ``am``'s margin gradient on the first image, through the cache."""
        P = self.params
        key = CacheKey(name, 2, settings, self.model.sha256, self.source, self.idx[:1])
        entries.append(self.cache.get(key, lambda: finite_difference_check(
            am, self.x[0], 0, int(self.labels[0]), settings["loss"], jax.random.fold_in(self.key, 2),
            P.n_fd_directions, P.fd_h).to_arrays()))  # fmt: skip
        return FiniteDifferenceCheck.from_arrays(entries[-1].arrays)

    # the sections
    def gradient_check(self) -> GradientChecks:
        """The margin's gradient as PGD computes it, against central differences on the first image: of the
        attacked function and, when its solver is adaptive, of the same network with fixed Heun steps
        (32, equally spaced in log t), whose solution is smooth in x."""
        cfg = self.config
        cfgs = {"attacked function": cfg}
        if cfg.solver.n_steps is None:  # adaptive: check the network's gradient on a smooth fixed-step solve as well
            fixed = SolverSettings(**FIXED_FD_STEPS, eps=self.params.ode.eps)
            cfgs["fixed steps, same network"] = dataclasses.replace(cfg, solver=fixed)
        checks, entries = {}, []
        for name, c in cfgs.items():
            am = self.attack_model if c is cfg else sbgc_attack_model(self.model, self.attack_model.aux, c)
            for loss in ["margin"]:  # PGD's first loss, which every attacked image goes through
                settings = {"knobs": self.attack_knobs, "solver": repr(c.solver), "loss": loss}
                checks[name, loss] = self._fd_check(am, "adversarial_fd_check", settings, entries)
        solvers = {name: c.describe() for name, c in cfgs.items()}
        return GradientChecks(checks, solvers, entries,
                              gradient_check_markdown(checks, solvers) + "\n\n" + self.line(entries))

    def _baseline_batch(self, who: str, norm: str, epsilon: float) -> dict:
        """Foolbox's batch PGD on the baselines' sample with each loss: the worst case per image, and each
        loss's record (JSON in a 0-d string array)."""
        P, f = self.params, baseline_logits_fn(self.baselines[who])
        runs = [run_pgd(f, self.x_base, self.labels_base, norm=norm, epsilon=epsilon, loss=loss, steps=P.pgd_steps,
                        rel_stepsize=P.rel_stepsize, seed=P.seed) for loss in LOSSES]  # fmt: skip
        return {**worst_of(runs).to_arrays(), "by_loss": np.asarray(json.dumps({r.loss: r.record() for r in runs}))}

    def attack(self) -> Attacks:
        """The per-image attack (:func:`attack_in_blocks`, cached by block) on the SBGC and the baselines on the
        SBGC's images, and Foolbox's batch PGD on the baselines' larger sample."""
        P, settings, names = self.params, self.attack_settings, self.names
        attacked = {"sbgc": (self.attack_model, "adversarial_pgd_sbgc_block", self.model.sha256)} | {
            who: (baseline_attack_model(c, len(self.idx)), "adversarial_pgd_baseline_block", c.sha256)
            for who, c in self.baselines.items()}  # fmt: skip
        outcomes, sbgc_entries, entries_of = {}, [], {who: [] for who in self.baselines}
        for norm in self.budgets:  # every model, block by block through the results cache
            for who, (am, cache_name, sha256) in attacked.items():
                n = self.n_ode if who == "sbgc" else len(self.idx)
                key = self._key(cache_name, sha256, {"knobs": self.attack_knobs, "norm": norm}, n)
                outcomes[who, norm], got = attack_in_blocks(am, self.x[:n], self.labels[:n], settings[norm], self.cache,
                                                            key, line_search=P.line_search)  # fmt: skip
                (sbgc_entries if who == "sbgc" else entries_of[who]).extend(got)
        results, by_loss = {}, {}
        for norm, epsilon in self.budgets.items():
            results["sbgc", norm] = outcomes["sbgc", norm].as_pgd_result()
            for who, c in self.baselines.items():
                key = CacheKey("adversarial_pgd_baseline_batch", 1, {"knobs": self.attack_knobs, "norm": norm}, c.sha256,
                               self.source, self.idx_base)  # fmt: skip
                entries_of[who].append(self.cache.get(key, lambda: self._baseline_batch(who, norm, epsilon)))
                results[who, norm] = PGDResult.from_arrays(entries_of[who][-1].arrays)
                records = json.loads(str(entries_of[who][-1].arrays["by_loss"]))
                by_loss |= {(who, norm, loss): r for loss, r in records.items()}
        base_lines = "\n\n".join(self.prov_bases[who].line(self.note, entries_of[who]) for who in self.baselines)
        markdown = (
            markdown_table(("model", "norm", "clean correct", "broken", "broken by (loss: images)", "at the random start",
                            "steps to break: median", "gradients", "seconds"), attack_rows(outcomes, names))
            + f"\n\nPer-image attack on the SBGC's {len(self.idx)} images{self.ode_subset_text}: "
            f"{settings['linf'].describe()}; "
            f"{settings['l2'].describe()}. \"broken\": correctly classified clean, misclassified after the attack. "
            "seconds: for the SBGC those of the runs that computed the cache entries.\n\n"
            + table3.settings_markdown([(names[k], r) for (k, _), r in results.items() if k in self.baselines])
            + "\n\n" + self.line(sbgc_entries) + "\n\n" + base_lines)  # fmt: skip
        return Attacks(settings, outcomes, results, by_loss, sbgc_entries, entries_of, base_lines, markdown)

    def attack_bound(self, attacks: Attacks) -> BoundAttack:
        """The variational-bound classifier with ``bound_times`` times (draws from ``fold_in(key, 3)``, fixed per
        image): its gradient check, then the SBGC's attack on the same images, cached by block; compared with
        the exact-ODE SBGC of ``attacks``."""
        P = self.params
        if P.bound_times is None:
            return BoundAttack(None, {}, {}, {}, [], NOT_RUN.format(knob="bound_times"))
        settings = BoundSettings(n_times=P.bound_times, eps=P.ode.eps, weighting=P.bound_weighting)
        am = bound_attack_model(self.model, jax.random.fold_in(self.key, 3), len(self.idx), settings)
        knobs = {"knobs": self.attack_knobs, "bound": settings}
        entries = []  # the margin's gradient as the attack computes it, on the first image
        checks = {loss: self._fd_check(am, "adversarial_fd_check_bound", {**knobs, "loss": loss}, entries)
                  for loss in ["margin"]}  # fmt: skip
        outcomes = {}
        for norm, s in attacks.settings.items():
            key = self._key("adversarial_pgd_bound_block", self.model.sha256, {**knobs, "norm": norm})
            outcomes["bound", norm], got = attack_in_blocks(am, self.x, self.labels, s, self.cache, key,
                                                            line_search=P.line_search)  # fmt: skip
            entries.extend(got)
        rows = []
        for who, outs in (("sbgc", attacks.outcomes), ("bound", outcomes)):
            for norm in self.budgets:
                o, s = outs[who, norm], outs[who, norm].summary()
                rows.append(("SBGC, exact ODE" if who == "sbgc" else f"SBGC, {bound_name(settings)}", norm,
                             f"{s['clean_correct']}/{s['images']}", table3.accuracy_cell(o.robust), f"{s['broken']}",
                             f"{s['shortest']['median']:.3g}" if s["broken"] else "–",
                             f"{s['steps']['median']:.0f}" if s["broken"] else "–",
                             f"{s['gradients']}", f"{s['seconds']:.0f}"))  # fmt: skip
        markdown = (
            f"Bound classifier: {describe_bound(settings)}; "
            f"{settings.n_times + (settings.weighting == 'likelihood')} network passes per "
            f"class. Gradient check on the first image, the margin's gradient as the attack computes it: "
            + "; ".join(f"{loss}: {check_line(c, 'central difference')}" for loss, c in checks.items())
            + f" over {P.n_fd_directions} directions (h = {P.fd_h:g}).\n\n"
            + markdown_table(("classifier", "norm", "clean correct", "robust accuracy [%] (95 % interval)", "broken",
                              "median shortest adversarial ε", "median steps to break", "gradients", "seconds"), rows)
            + (f"\n\n{len(self.idx)} image(s), the same for both rows" if self.n_ode == len(self.idx) else
               f"\n\n{len(self.idx)} image(s); the exact ODE on the first {self.n_ode} of them")
            + "; the same attack settings.\n\n"
            + self.line(attacks.sbgc_entries, entries))  # fmt: skip
        results = {k: o.as_pgd_result() for k, o in outcomes.items()}
        return BoundAttack(settings, checks, outcomes, results, entries, markdown)

    @property
    def in_ode(self) -> np.ndarray:
        """[N] bool: which of the baselines' images the exact-ODE SBGC is attacked on."""
        return np.isin(self.idx_base, self.idx[: self.n_ode])

    @property
    def in_sbgc(self) -> np.ndarray:
        """[N] bool: which of the baselines' images are the SBGC's."""
        return np.isin(self.idx_base, self.idx)

    def table3_markdown(self, attacks: Attacks, bound: BoundAttack) -> str:
        """Table 3: the published rows, then ours (the SBGC, the bound classifier, each baseline on the SBGC's
        images and on its larger sample) with exact 95 % intervals, and provenance."""
        res, names = attacks.results | bound.results, self.names
        ours = [("SBGC", res["sbgc", "linf"], res["sbgc", "l2"])]
        if bound.settings is not None:
            ours.append((f"SBGC, {bound_name(bound.settings)} (K = {self.params.bound_times})", res["bound", "linf"],
                         res["bound", "l2"]))  # fmt: skip
        for who in self.baselines:
            ours += [(f"{names[who]} baseline, same images", res[who, "linf"].subset(self.in_sbgc),
                      res[who, "l2"].subset(self.in_sbgc)),
                     (f"{names[who]} baseline, {len(self.idx_base)} images", res[who, "linf"], res[who, "l2"])]  # fmt: skip
        return (table3.table3_markdown(ours, dataset=self.params.spec.dataset) + "\n\n" + self.line(attacks.sbgc_entries)
                + "\n\n" + attacks.baseline_provenance)

    def size_curves(self, attacks: Attacks, bound: BoundAttack) -> tuple[Any, str]:
        """Accuracy against ε from the line search's shortest adversarials (every model, both norms, the
        published MNIST points beside them): (figure, markdown table of the shortest sizes)."""
        P, outcomes = self.params, attacks.outcomes | bound.outcomes
        published = [(f"{m} (published)", n, e, a) for m, n, e, a in table3.published_points(P.spec.dataset)]
        fig = plot_accuracy_curves([(self.names[who], o) for (who, _), o in outcomes.items()], published=published)
        n = 2**P.line_search
        return fig, (
            markdown_table(("model", "norm", "broken / clean correct", "median shortest adversarial ε", "range"),
                           shortest_rows(outcomes, self.names))
            + f"\n\n{len(self.idx)} image(s), {P.line_search} bisection steps per broken image, so a size is known to "
            f"within 1/{n} of the adversarial's own (resolution ε∞/{n} = {P.eps_linf / n:.3g} when the PGD point sits "
            "on the L∞ ball); sizes on the [0, 1] pixel scale in the attack's norm.\n\n" + self.line(attacks.sbgc_entries))

    def tight_judge(self, attacks: Attacks) -> TightJudge:
        """The clean images and the SBGC's adversarials at the full budget classified again by the same model
        and probes with dopri5 at rtol = atol = ``judge_rtol`` (cached)."""
        P, cfg, outcomes = self.params, self.config, attacks.outcomes
        if P.judge_rtol is None:
            return TightJudge({}, NOT_RUN.format(knob="judge_rtol"))
        tight = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, solver="dopri5", rtol=P.judge_rtol,
                                                                    atol=P.judge_rtol, n_steps=None, step_grid="uniform",
                                                                    unroll=False))  # fmt: skip
        f = sbgc_logits_fn(self.model, self.attack_model.aux[: self.n_ode], tight)  # the probes of the ODE's images
        entry = self.cache.get(
            CacheKey("adversarial_sbgc_tight_judge", 1, {"knobs": self.attack_knobs, "judge": tight.describe()},
                     self.model.sha256, self.source, self.idx[: self.n_ode]),
            lambda: {"clean": f.checked(np.asarray(self.x[: self.n_ode]), "clean images"),
                     **{norm: f.checked(outcomes["sbgc", norm].adversarial, f"{norm} adversarial images")
                        for norm in self.budgets}})  # fmt: skip
        t, accuracies, labels = entry.arrays, {}, self.labels[: self.n_ode]
        for norm in self.budgets:
            accuracies[norm] = {"clean_accuracy": float(np.mean(np.argmax(t["clean"], 1) == labels)),
                                "adversarial_accuracy": float(np.mean(np.argmax(t[norm], 1) == labels)),
                                "attacked_adversarial_accuracy": outcomes["sbgc", norm].robust_accuracy}
        rows = [(n, f"{100 * j['clean_accuracy']:.0f} %", f"{100 * j['adversarial_accuracy']:.0f} %",
                 f"{100 * j['attacked_adversarial_accuracy']:.0f} %") for n, j in accuracies.items()]
        return TightJudge(accuracies, markdown_table(
            ("norm", f"clean accuracy, rtol {P.judge_rtol:g}", f"on the adversarials, rtol {P.judge_rtol:g}",
             f"on the adversarials, attacked solver ({cfg.solver.rtol:g})"), rows)
            + f"\n\n{self.n_ode} image(s); judge: {tight.describe()}.\n\n" + self.line(attacks.sbgc_entries, [entry]))

    def manifold_shift(self, attacks: Attacks) -> ManifoldShift:
        """Δ bits/dim of p(x) = (1/K) Σ_y p(x | y) from the clean images to the SBGC's adversarials and to the
        baseline's (the SBGC's forward passes on the latter cached by block), with the same probes; and the
        SBGC's accuracy on the baseline's adversarials (a transfer attack)."""
        res, budgets, base_name = attacks.results, self.budgets, self.baselines["base"].config.name
        dim, n = int(np.prod(self.x.shape[1:])), self.n_ode
        shift = {norm: likelihood_shift(res["sbgc", norm].clean_logits, res["sbgc", norm].adv_logits, dim)
                 for norm in budgets}  # fmt: skip
        entries, judged, match = [], {}, {}
        for norm in budgets:  # the SBGC's logits of the baseline's adversarial images
            adv = res["base", norm].adversarial[self.in_ode]
            key = self._key("adversarial_sbgc_judges_baseline_block", self.model.sha256,
                            {"knobs": self.attack_knobs, "norm": norm, "baseline_sha256": self.baselines["base"].sha256}, n)

            def judge(b: int, idx: np.ndarray, adv=adv) -> dict[str, np.ndarray]:
                rows = slice(b * ATTACK_BLOCK, b * ATTACK_BLOCK + len(idx))
                return {"images": adv[rows],
                        "logits": logits_of(self.attack_model, adv[rows], rows.start, "baseline's adversarial image")}

            judged[norm], got = cached_blocks(self.cache, key, ATTACK_BLOCK, judge)
            entries.extend(got)
            match[norm] = float(np.abs(judged[norm]["images"] - adv).max())
        shift_base = {norm: likelihood_shift(res["sbgc", norm].clean_logits, judged[norm]["logits"], dim)
                      for norm in budgets}  # fmt: skip
        lines = []
        for who, table in (("to fool the SBGC", shift), (f"to fool the {base_name}", shift_base)):
            for norm, s in table.items():
                d = s.delta_bpd
                lines.append((who, norm, f"{s.bpd_clean.mean():.4f}", f"{s.bpd_adv.mean():.4f}",
                              f"{d.mean():+.4f} ({d.min():+.4f}, {d.max():+.4f})"))
        transfer = {norm: float(np.mean(np.argmax(judged[norm]["logits"], axis=1) == self.labels[:n])) for norm in budgets}
        transfer_text = "; ".join(f"{k}: SBGC accuracy {100 * a:.0f} % ({int(round(a * n))}/{n})"
                                  for k, a in transfer.items())  # fmt: skip
        markdown = (markdown_table(("images attacked …", "norm", "bits/dim clean", "bits/dim attacked",
                                    "Δ bits/dim (mean, min, max)"), lines)
                    + f"\n\n**Transfer attack** (the {base_name}'s adversarial images given to the SBGC): "
                    f"{transfer_text}.\n\n{n} image(s); the SBGC's solver: {self.config.describe()}. The baseline's "
                    "adversarial images judged are stored with their SBGC logits; max |stored − this run's| per norm: "
                    + ", ".join(f"{k} {d:.2g}" for k, d in match.items()) + ".\n\n"
                    + self.line(attacks.sbgc_entries, entries))  # fmt: skip
        return ManifoldShift(shift, shift_base, transfer, match, entries, markdown)

    def plot_pairs(self, attacks: Attacks):
        """Clean images and, per attack on the SBGC and on the baseline (on the same images), the adversarial
        and its perturbation (:func:`sbgc.experiments.table3.plot_pairs`): the figure."""
        res, base = attacks.results, self.baselines["base"].config.name
        return table3.plot_pairs(np.asarray(self.x[: self.n_ode]), [(f"SBGC {n}", res["sbgc", n]) for n in self.budgets]
                          + [(f"{base} {n}", res["base", n].subset(self.in_ode)) for n in self.budgets],
                          self.class_names, n_show=self.params.n_show)  # fmt: skip

    def numbers(self, checks: GradientChecks, attacks: Attacks, bound: BoundAttack, judge: TightJudge,
                manifold: ManifoldShift) -> dict[str, Any]:  # fmt: skip
        """The chapter's results record (:func:`sbgc.book.provenance.write_results`): plain values and arrays."""
        P = self.params
        res, outcomes = attacks.results | bound.results, attacks.outcomes | bound.outcomes
        base_entries = [e for entries in attacks.baseline_entries.values() for e in entries]
        records = {"fd_check": checks.entries, "pgd_sbgc": attacks.sbgc_entries, "baseline": base_entries,
                   "judge": manifold.entries, "bound": bound.entries}
        return {
            "dataset": P.spec.dataset, "budgets": self.budgets,
            "images": self.idx, "baseline_images": self.idx_base, "sbgc_logits": self.config.describe(),
            "finite_difference": {f"{name}, {loss}": {"solver": checks.solvers[name], "loss": loss, "exact": c.exact,
                                                      "finite_difference": c.finite_difference,
                                                      "relative_error": c.relative_error, "h": c.h,
                                                      "max_error_vs_gradient_norm": c.max_error_vs_gradient_norm}
                                  for (name, loss), c in checks.checks.items()},
            "attacks": {f"{k}_{n}": r.record() for (k, n), r in res.items()},
            "attacks_by_loss": {f"{k}_{n}_{l}": r for (k, n, l), r in attacks.by_loss.items()},
            "likelihood_shift_bpd": {n: s.delta_bpd for n, s in manifold.shift.items()},
            "likelihood_shift_bpd_baseline_attacks": {n: s.delta_bpd for n, s in manifold.shift_baseline.items()},
            "judged_images_max_abs_difference": manifold.judged_match,
            "checkpoint": self.model.describe(), "baseline": self.baselines["base"].describe(),
            "baseline_sha256": self.baselines["base"].sha256,
            "paper_table3": [dataclasses.asdict(r) for r in table3.PAPER_TABLE3],
            "published_mnist": [dataclasses.asdict(r) for r in table3.PUBLISHED_MNIST],
            "per_image_attack": {f"{who}_{n}": {"settings": o.settings, "success": o.success,
                                                "clean_correct": o.clean_correct, "loss_index": o.loss_index,
                                                "step": o.step,
                                                "shortest": [float(v) if np.isfinite(v) else None for v in o.shortest],
                                                "gradients": o.gradients, "robust_accuracy": o.robust_accuracy}
                                 for (who, n), o in outcomes.items()},
            "transfer_from_baseline_sbgc_accuracy": manifold.transfer,
            "tight_judge": judge.accuracies,
            "cache": {f"{name}_{i}": e.record for name, entries in records.items() for i, e in enumerate(entries)},
            "bound_classifier": None if bound.settings is None else {
                "settings": describe_bound(bound.settings), "n_times": P.bound_times,
                "finite_difference_max_error_vs_gradient_norm": bound.worst_check},
        }  # fmt: skip

    def summary_markdown(self, attacks: Attacks, bound: BoundAttack, manifold: ManifoldShift) -> str:
        """The chapter's reading of this run: per budget the SBGC's robust accuracy (95 % interval), the
        baselines' and the transfer attack's; the verdict (:func:`robustness_verdict`) on the SBGC and on the
        bound classifier; on MNIST, when every image broke, the published rows at the same budgets."""
        P, outcomes, res, n_base = self.params, attacks.outcomes | bound.outcomes, attacks.results, len(self.idx_base)
        base, cnn = self.baselines["base"].config.name, self.baselines.get("cnn")
        lines = []
        for norm, eps in self.budgets.items():
            o, b = outcomes["sbgc", norm], outcomes["base", norm]
            k, n = int(o.robust.sum()), len(o.labels)  # the exact-ODE SBGC's images: the baselines' first n
            lo, hi = binomial_interval(k, n)
            s = o.summary()
            med = f"; median shortest adversarial found ε = {s['shortest']['median']:.3g}" if s["broken"] else ""
            if s["broken"]:
                med += (f"; {s['at_random_start']} of the {s['broken']} broken at a random start, before any gradient "
                        f"step (a random point of the ε-ball; at most {P.restarts * len(attacks.settings[norm].losses)} "
                        "draws per image)")  # fmt: skip
            lines.append(
                f"* **{norm}, ε = {eps:g}**: SBGC robust accuracy {k}/{n} = {100 * k / n:.0f} % (95 % interval "
                f"{100 * lo:.0f}–{100 * hi:.0f} %; clean {int(o.clean_correct.sum())}/{n}){med}; the {base} on the "
                f"same images {int(b.robust[:n].sum())}/{n}, on {n_base:,} images {100 * res['base', norm].robust_accuracy:.1f} %"
                + (f"; the {cnn.config.name} on the same images {int(outcomes['cnn', norm].robust[:n].sum())}/{n}, on "
                   f"{n_base:,} images {100 * res['cnn', norm].robust_accuracy:.1f} %" if cnn else "")
                + f". Transfer from the {base}'s adversarials: SBGC accuracy {100 * manifold.transfer[norm]:.0f} %.")  # fmt: skip
        verdict = robustness_verdict([outcomes["sbgc", n] for n in self.budgets])
        verdict_bound = None if bound.settings is None else robustness_verdict([outcomes["bound", n] for n in self.budgets])
        nothing = ("no image was classified correctly, so this run says nothing about robustness (too few images or "
                   "too weak a model). ")
        broken_all = verdict == "all broken"
        subset = f", the exact-ODE SBGC on the first {self.n_ode}" if self.n_ode < len(self.idx) else ""
        return (f"**This run ({P.spec.dataset}, {len(self.idx)} images{subset}).**\n\n" + "\n".join(lines) + "\n\n"
                + {"all broken": "Every image the SBGC classified correctly was broken at both budgets, by the gradient "
                                 "attack through the ODE: the score-based generative classifier shows **no adversarial "
                                 "robustness here either**. ",
                   "some robust": "Some images withstood every attack: before reading that as robustness, check the "
                                  "gradient table above (gradient masking), the curves (accuracy must fall to 0 as ε "
                                  "grows) and a gradient-free attack. ",
                   "no image correct": "For the SBGC " + nothing}[verdict]
                + self._bound_summary(outcomes, verdict_bound, broken_all, nothing) + "\n\n"
                + ("**Published, at the same budgets (other attacks and images; the table above gives sources):** "
                   + "; ".join(f"{r.model}: " + ", ".join(f"{lab} {v:g} %" for lab, v in (("L∞", r.linf), ("L2", r.l2))
                                                          if v is not None) for r in table3.PUBLISHED_MNIST)
                   + ". ABS was robust at the L2 budget and not at the L∞ one (binary ABS and Madry et al.'s "
                     "adversarially trained CNN the other way round); the SBGC here is robust at neither.\n\n"
                   if P.spec.dataset == "mnist" and broken_all else "")
                + self.line(attacks.sbgc_entries, bound.entries))  # fmt: skip

    def _bound_summary(self, outcomes: dict, verdict: str | None, sbgc_broken_all: bool, nothing: str) -> str:
        """The summary's sentences on the bound classifier (``verdict`` None: not attacked)."""
        if verdict is None:
            return "The variational-bound classifier is not attacked at this profile."
        n = len(self.idx)
        return (
            f"**The bound classifier** ({bound_name(BoundSettings(n_times=2, weighting=self.params.bound_weighting))}) "
            f"of the same network (K = {self.params.bound_times}, draws fixed per "
            "image): " + "; ".join(f"{k}: robust {int(outcomes['bound', k].robust.sum())}/{n} (clean "
                                   f"{int(outcomes['bound', k].clean_correct.sum())}, "
                                   f"{outcomes['bound', k].summary()['at_random_start']} broken at a random start), "
                                   f"the exact-ODE SBGC {int(outcomes['sbgc', k].robust.sum())}/{self.n_ode}"
                                   for k in self.budgets) + ". "
            + {"all broken": "Every image the bound classifier classified correctly was broken at both budgets"
                             + (": the estimator does not decide robustness here, both fall to the same attack."
                                if sbgc_broken_all else "."),
               "some robust": "The bound classifier keeps images: before reading that as robustness, check its "
                              "gradient check above and the curves; a fixed-draw bound has an exact gradient, but its "
                              "landscape may still mask it.",
               "no image correct": "For the bound classifier " + nothing}[verdict])  # fmt: skip
