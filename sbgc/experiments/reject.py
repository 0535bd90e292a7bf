"""Classify or reject: a classifier that may refuse an input whose own score calls it unlikely.

A generative classifier knows log p(x): it can refuse to answer where that is low. A discriminative one has
only its logits; the standard baseline refuses where the maximum softmax probability is low (Hendrycks &
Gimpel 2017). Both rules are functions of the logits the attacks already compute:

* ``"log_marginal"``: log p(x) = logsumexp_y log p(x | y) − log K (the SBGC, whose logits are class
  log-likelihoods in nats; :func:`sbgc.method.classify.log_marginal`);
* ``"log_max_softmax"``: log max_y softmax(logits)_y = max_y ℓ_y − logsumexp_y ℓ_y ≤ 0 (a CNN), in log space so
  that it does not saturate at 1 where the softmax would.

:func:`calibrate` sets a rule's threshold on held-out clean images at a false-rejection rate (e.g. 1 % or 5 %):
the input is rejected when its score falls below the threshold. :meth:`RejectRule.outcomes` splits a set of
decisions into correct-and-accepted, rejected and wrong-and-accepted; an attack succeeds only where its image is
wrong AND accepted. :meth:`RejectRule.direction` is the score's gradient with respect to the logits, which the
adaptive attack (:mod:`sbgc.experiments.pgd`, loss ``"reject_margin"``) pushes when the image is already
misclassified but still rejected: that attack knows the rule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.stats import binomial_interval

SCORES: tuple[str, ...] = ("log_marginal", "log_max_softmax")


def rejection_scores(logits: Any, score: str) -> np.ndarray:
    """The rule's score of each input: logits [..., K] → [...] (float64; higher = more "in distribution")."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    lp = np.asarray(logits, np.float64)
    if lp.ndim < 1 or lp.shape[-1] < 2:
        raise ValueError(f"logits must have a class axis of at least 2, got shape {lp.shape}")
    top = lp.max(axis=-1)
    lse = top + np.log(np.exp(lp - top[..., None]).sum(axis=-1))
    return lse - math.log(lp.shape[-1]) if score == "log_marginal" else top - lse


@dataclasses.dataclass(frozen=True)
class RejectRule:
    """Reject an input when its ``score`` (:data:`SCORES`) is below ``threshold``; ``frr`` the false-rejection
    rate it was set at on ``n_calibration`` held-out clean images (:func:`calibrate`)."""

    score: str
    threshold: float
    frr: float = float("nan")
    n_calibration: int = 0

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if not math.isfinite(self.threshold) and self.threshold != -math.inf:
            raise ValueError(f"threshold must be finite (or -inf: accept everything), got {self.threshold!r}")

    def slack(self, logits: Any) -> np.ndarray:
        """[...]: the score minus the threshold; the rule accepts where it is ≥ 0."""
        return rejection_scores(logits, self.score) - self.threshold

    def accepts(self, logits: Any) -> np.ndarray:
        """bool [...]: the inputs the rule answers for."""
        return self.slack(logits) >= 0

    def direction(self, logits: Any) -> jax.Array:
        """∂ score / ∂ logits, [..., K] float32: softmax(ℓ) for log p(x); e_argmax − softmax(ℓ) for the log max
        softmax (its gradient away from ties)."""
        lp = jnp.asarray(logits, jnp.float32)
        p = jax.nn.softmax(lp, axis=-1)
        if self.score == "log_marginal":
            return p
        return jax.nn.one_hot(jnp.argmax(lp, axis=-1), lp.shape[-1], dtype=lp.dtype) - p

    def outcomes(self, logits: Any, labels: Any) -> dict[str, Any]:
        """The decisions of inputs with ``logits`` [N, K] and true ``labels`` [N] under the rule: counts and shares of
        correct-and-accepted, rejected (whatever the class) and wrong-and-accepted, each share with its exact
        95 % interval."""
        lp, y = np.asarray(logits, np.float64), np.asarray(labels)
        if lp.ndim != 2 or y.shape != (lp.shape[0],):
            raise ValueError(f"need logits [N, K] and labels [N], got {lp.shape} and {y.shape}")
        accepted, right = self.accepts(lp), lp.argmax(axis=1) == y
        n, out = len(y), {"n": len(y)}
        for name, mask in (("correct_accepted", right & accepted), ("rejected", ~accepted),
                           ("wrong_accepted", ~right & accepted)):  # fmt: skip
            k = int(mask.sum())
            out[name] = {"count": k, "share": k / n if n else float("nan"),
                         "interval95": list(binomial_interval(k, n)) if n else [float("nan")] * 2}
        return out

    def describe(self) -> str:
        what = "log p(x)" if self.score == "log_marginal" else "log max softmax"
        at = f" (set at {100 * self.frr:g} % false rejection on {self.n_calibration:,} clean images)" if self.n_calibration else ""
        return f"reject when {what} < {self.threshold:.6g}{at}"


def calibrate(logits: Any, score: str, frr: float) -> RejectRule:
    """The rule that rejects at most a fraction ``frr`` of held-out clean inputs (logits [N, K]): the threshold is
    the ⌊frr·N⌋-th smallest score (0-based), so exactly the ⌊frr·N⌋ lower scores fall below it (ties aside)."""
    if not 0 <= frr < 1:
        raise ValueError(f"frr must lie in [0, 1), got {frr!r}")
    s = np.sort(rejection_scores(logits, score).ravel())
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"calibration needs finite scores of at least one clean input, got {s.size} value(s)")
    return RejectRule(score, float(s[int(math.floor(frr * s.size))]), float(frr), int(s.size))


@dataclasses.dataclass(frozen=True)
class RuleTable:
    """Every rule of one classifier (one per false-rejection rate, all set on the same held-out clean images)
    applied to named input sets: ``rows[(set name, frr)]`` is :meth:`RejectRule.outcomes` of that set."""

    classifier: str
    rules: tuple[RejectRule, ...]
    rows: dict[tuple[str, float], dict[str, Any]]

    def markdown_rows(self) -> list[tuple[str, ...]]:
        """One table row per (input set, rule): classifier, inputs, rule, n, and the three shares in % with their
        exact 95 % intervals."""
        pct = lambda o: f"{100 * o['share']:.1f} [{100 * o['interval95'][0]:.1f}, {100 * o['interval95'][1]:.1f}]"  # noqa: E731
        return [(self.classifier, name, f"{100 * frr:g} % FRR", str(o["n"]), pct(o["correct_accepted"]),
                 pct(o["rejected"]), pct(o["wrong_accepted"])) for (name, frr), o in self.rows.items()]  # fmt: skip

    def record(self) -> dict[str, Any]:
        """JSON-ready: the rules and the rows keyed "set @ frr"."""
        return {"classifier": self.classifier,
                "rules": [dataclasses.asdict(r) | {"describe": r.describe()} for r in self.rules],
                "rows": {f"{name} @ {frr:g}": o for (name, frr), o in self.rows.items()}}  # fmt: skip


RULE_TABLE_HEADER = ("classifier", "inputs", "rule", "n", "correct and accepted [%]", "rejected [%]",
                     "wrong and accepted [%]")


def rule_table(classifier: str, calibration_logits: Any, score: str, frrs: tuple[float, ...],
               sets: dict[str, tuple[Any, Any]]) -> RuleTable:
    """The rules of ``score`` set at each false-rejection rate of ``frrs`` on ``calibration_logits`` [M, K] (held-out
    clean inputs, none of them in ``sets``), applied to each named set ``{name: (logits [N, K], labels [N])}``."""
    if not frrs:
        raise ValueError("rule_table needs at least one false-rejection rate")
    rules = tuple(calibrate(calibration_logits, score, f) for f in frrs)
    rows = {(name, r.frr): r.outcomes(logits, labels) for name, (logits, labels) in sets.items() for r in rules}
    return RuleTable(classifier, rules, rows)
