"""Classify or reject (sbgc.experiments.reject) and the attack that knows the rule (sbgc.experiments.pgd)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.experiments import pgd
from sbgc.experiments.reject import RejectRule, calibrate, rejection_scores
from sbgc.method.classify import log_marginal

SHAPE = (6, 6, 1)


def test_scores_are_log_p_x_and_the_log_max_softmax_without_saturating():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 10)) * 3
    np.testing.assert_allclose(rejection_scores(logits, "log_marginal"), log_marginal(logits), rtol=1e-12)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(rejection_scores(logits, "log_max_softmax"), np.log(p.max(axis=1)), rtol=1e-10)
    # SBGC-sized logits (~1e4 nats, margins of tens): finite and exact where a float32 softmax would round to 1
    big = np.array([[-10_000.0, -10_030.0, -10_500.0]])
    assert rejection_scores(big, "log_max_softmax")[0] == pytest.approx(-math.log1p(math.exp(-30) + math.exp(-500)))
    assert rejection_scores(big, "log_marginal")[0] == pytest.approx(-10_000.0 - math.log(3), abs=1e-9)
    with pytest.raises(ValueError, match="score must be one of"):
        rejection_scores(logits, "entropy")
    with pytest.raises(ValueError, match="class axis of at least 2"):
        rejection_scores(np.zeros((3, 1)), "log_marginal")


@pytest.mark.parametrize("frr", [0.0, 0.01, 0.05, 0.5])
def test_calibration_rejects_at_most_the_rate_on_its_own_clean_images(frr):
    logits = np.random.default_rng(1).normal(size=(400, 10)) * 5
    for score in ("log_marginal", "log_max_softmax"):
        rule = calibrate(logits, score, frr)
        rejected = float(np.mean(~rule.accepts(logits)))
        assert rejected <= frr and rejected == math.floor(frr * 400) / 400  # no ties in continuous scores
        assert (rule.frr, rule.n_calibration, rule.score) == (frr, 400, score)
        assert f"set at {100 * frr:g} % false rejection on 400 clean images" in rule.describe()
    with pytest.raises(ValueError, match=r"frr must lie in \[0, 1\)"):
        calibrate(logits, "log_marginal", 1.0)
    with pytest.raises(ValueError, match="finite scores"):
        calibrate(np.full((3, 10), np.nan), "log_marginal", 0.1)


def test_outcomes_split_every_decision_once():
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [1.0, 0.0], [0.0, 0.1]])
    labels = np.array([0, 0, 0, 0])  # right, wrong, right, wrong
    rule = RejectRule("log_max_softmax", threshold=math.log(0.9))  # accepts only the two confident ones
    out = rule.outcomes(logits, labels)
    assert (out["correct_accepted"]["count"], out["wrong_accepted"]["count"], out["rejected"]["count"]) == (1, 1, 2)
    assert out["n"] == 4 and out["rejected"]["share"] == 0.5 and out["rejected"]["interval95"][0] < 0.5
    everything = RejectRule("log_marginal", -math.inf).outcomes(logits, labels)
    assert everything["rejected"]["count"] == 0 and everything["wrong_accepted"]["count"] == 2
    with pytest.raises(ValueError, match="threshold must be finite"):
        RejectRule("log_marginal", math.nan)


@pytest.mark.parametrize("score", ["log_marginal", "log_max_softmax"])
def test_the_direction_is_the_scores_gradient(score):
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 10)) * 4, jnp.float32)
    rule = RejectRule(score, 0.0)
    f = (lambda lp: jax.nn.logsumexp(lp) - math.log(10)) if score == "log_marginal" else (
        lambda lp: jnp.max(lp) - jax.nn.logsumexp(lp))
    expected = jax.vmap(jax.grad(f))(logits)
    np.testing.assert_allclose(np.asarray(rule.direction(logits)), np.asarray(expected), atol=1e-6)


class Linear:
    def __init__(self, key, k=10, scale=0.5):
        self.w = jax.random.normal(key, (math.prod(SHAPE), k)) * scale

    def logits(self, x_unit):
        return x_unit.reshape(x_unit.shape[0], -1) @ self.w


def test_the_adaptive_attack_breaks_only_into_accepted_images():
    """Against a rule that rejects every image the plain attack breaks, the plain attack's successes are rejected,
    while the attack that knows the rule counts (and finds) only misclassified AND accepted images."""
    clf = Linear(jax.random.key(5))
    x = np.asarray(jax.random.uniform(jax.random.key(6), (12, *SHAPE)), np.float32)
    labels = np.asarray(jnp.argmax(clf.logits(x), axis=1))
    model = pgd.baseline_attack_model(clf, len(x))
    plain = pgd.attack_images(model, x, labels, pgd.AttackSettings("linf", 0.15, steps=10, seed=1))
    assert plain.success.sum() >= 4
    # the rule: accept only inputs at least as confident as the clean images' 25 % quantile
    rule = calibrate(np.asarray(clf.logits(x)), "log_max_softmax", 0.25)
    adv_scores = rejection_scores(plain.adv_logits, "log_max_softmax")
    knows = pgd.AttackSettings("linf", 0.15, steps=10, seed=1, losses=("reject_margin", "margin"), reject=rule)
    adaptive = pgd.attack_images(model, x, labels, knows, line_search=3)
    assert np.all(rule.accepts(adaptive.adv_logits[adaptive.success]))  # every success is accepted ...
    assert np.all(np.argmax(adaptive.adv_logits[adaptive.success], axis=1) != labels[adaptive.success])  # ... and wrong
    fooled_plain = plain.success & (adv_scores >= rule.threshold)  # the plain attack's successes the rule lets through
    assert fooled_plain.sum() < plain.success.sum()  # the rule stops some of the plain attack's images ...
    assert adaptive.success.sum() > fooled_plain.sum()  # ... and the attack that knows it gets more through
    assert "broken = misclassified and accepted" in knows.describe()
    assert np.all(np.isfinite(adaptive.shortest[adaptive.success]))
    # with a rule that accepts everything, the rule changes nothing: the margin attack's outcome
    everything = RejectRule("log_max_softmax", -math.inf)
    same = pgd.attack_images(model, x, labels, pgd.AttackSettings("linf", 0.15, steps=10, seed=1, losses=("margin",),
                                                                  reject=everything))  # fmt: skip
    margin_only = pgd.attack_images(model, x, labels, pgd.AttackSettings("linf", 0.15, steps=10, seed=1,
                                                                         losses=("margin",)))  # fmt: skip
    np.testing.assert_array_equal(same.success, margin_only.success)
    np.testing.assert_array_equal(same.adversarial, margin_only.adversarial)
    with pytest.raises(ValueError, match="reject_margin needs a rejection rule"):
        pgd.AttackSettings("linf", 0.1, steps=1, losses=("reject_margin",))
    with pytest.raises(ValueError, match="reject_margin with a rejection rule"):
        model.gradient(x[0], 0, int(labels[0]), np.asarray(clf.logits(x[:1]))[0], "reject_margin")


def test_the_reject_margin_gradient_follows_the_smaller_term():
    """Where the margin is the smaller term, its gradient; where the input is misclassified but rejected, the
    gradient of the rule's score (for a linear classifier: W · ∂score/∂logits)."""
    clf = Linear(jax.random.key(7))
    x = np.asarray(jax.random.uniform(jax.random.key(8), (1, *SHAPE)), np.float32)
    model = pgd.baseline_attack_model(clf, 1)
    logits = np.asarray(clf.logits(x), np.float64)[0]
    label = int(np.argmax(logits))
    for score in ("log_marginal", "log_max_softmax"):
        f = (lambda z: jax.nn.logsumexp(clf.logits(z)[0])) if score == "log_marginal" else (
            lambda z: jnp.max(clf.logits(z)[0]) - jax.nn.logsumexp(clf.logits(z)[0]))
        rejects_all = RejectRule(score, 1e9)  # slack −1e9: below any margin
        g = model.gradient(x[0], 0, label, logits, "reject_margin", rejects_all)
        np.testing.assert_allclose(g, np.asarray(jax.grad(f)(jnp.asarray(x)))[0], rtol=1e-5, atol=1e-6)
        accepts_all = RejectRule(score, -math.inf)  # slack +inf: the margin is the smaller term
        np.testing.assert_array_equal(model.gradient(x[0], 0, label, logits, "reject_margin", accepts_all),
                                      model.gradient(x[0], 0, label, logits, "margin"))


def test_a_rule_table_sets_each_rate_once_and_applies_it_to_every_set():
    from sbgc.experiments.reject import RULE_TABLE_HEADER, rule_table
    from sbgc.report import markdown_table

    rng = np.random.default_rng(3)
    calibration = rng.normal(size=(200, 10)) * 3
    clean = rng.normal(size=(50, 10)) * 3
    far = clean - 40.0  # every class 40 nats less likely: log p(x) far below every clean image
    labels = clean.argmax(axis=1)
    table = rule_table("SBGC", calibration, "log_marginal", (0.01, 0.05), {"clean": (clean, labels), "far": (far, labels)})
    assert [r.frr for r in table.rules] == [0.01, 0.05] and len(table.rows) == 4
    assert table.rows["far", 0.05]["rejected"]["count"] == 50  # all rejected: the rule sees them
    assert table.rows["clean", 0.01]["wrong_accepted"]["count"] == 0
    assert table.rows["clean", 0.05]["rejected"]["count"] >= table.rows["clean", 0.01]["rejected"]["count"]
    text = markdown_table(RULE_TABLE_HEADER, table.markdown_rows())
    assert "| SBGC | far | 5 % FRR | 50 | 0.0 [0.0, 7.1] | 100.0 [92.9, 100.0] | 0.0 [0.0, 7.1] |" in text
    assert set(table.record()["rows"]) == {"clean @ 0.01", "clean @ 0.05", "far @ 0.01", "far @ 0.05"}
    with pytest.raises(ValueError, match="at least one false-rejection rate"):
        rule_table("SBGC", calibration, "log_marginal", (), {})
