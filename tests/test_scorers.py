"""The one scorer interface (sbgc.method.scorers): each scorer's table equals its module's function,
its pure form equals its table, pruning wraps any scorer, and the scorer is its own cache key."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.cache import CacheKey
from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method import bound as B
from sbgc.method.likelihood import SolverSettings, log_likelihood_table
from sbgc.method.scorers import Bound, ClassScorer, Ode, Pruned, all_classes

A, S = 0.6, 0.7
CORNERS = GaussianMixtureClasses.isotropic_gaussians(np.array([[A, A], [-A, A], [-A, -A], [A, -A]]), S)
X = np.array([[0.3, -0.2], [-1.5, 1.0], [2.0, 0.1]], np.float32)
ODE = Ode(solver=SolverSettings(rtol=1e-4, atol=1e-4), n_probes=2, data_scaling="unit")
BOUND = Bound(B.BoundSettings(n_times=8, data_std=S), data_scaling="unit")


def test_each_scorer_is_its_modules_function_with_the_same_key():
    key = jax.random.key(1)
    ode = ODE.scores(CORNERS.score, CORNERS.sde, X, key, n_classes=4)
    ref = log_likelihood_table(CORNERS.score, CORNERS.sde, X, all_classes(3, 4), key, solver=ODE.solver, n_probes=2,
                               dequantize=False, data_scaling="unit", progress=False)  # fmt: skip
    np.testing.assert_array_equal(ode.log_p, ref.log_p)
    np.testing.assert_array_equal(ode.nfe, ref.nfe.sum(axis=1))
    np.testing.assert_array_equal(ode.passes, 3 * ode.nfe)  # a forward and two tangent passes per evaluation
    np.testing.assert_allclose(ode.log_p_se, ref.log_p_probes.std(axis=-1, ddof=1) / math.sqrt(2))
    assert ode.is_log_density and not ode.is_bound and ode.seconds > 0
    bound = BOUND.scores(CORNERS.score, CORNERS.sde, X, key, n_classes=4)
    ref_b = B.class_log_bounds(CORNERS.score, CORNERS.sde, X, key, n_classes=4, settings=BOUND.settings,
                               dequantize=False, data_scaling="unit", progress=False)  # fmt: skip
    np.testing.assert_array_equal(bound.log_p, ref_b.log_p)
    np.testing.assert_array_equal(bound.nfe, 4 * 9)
    np.testing.assert_array_equal(bound.passes, bound.nfe)
    np.testing.assert_array_equal(bound.bpd(), ref_b.bpd)
    assert bound.is_bound and not bound.is_log_density
    uniform = Bound(B.BoundSettings(n_times=8, data_std=S, weighting="uniform"), data_scaling="unit")
    u = uniform.scores(CORNERS.score, CORNERS.sde, X, key, n_classes=4)
    assert np.all(np.isnan(u.bpd())) and not u.is_bound and np.all(u.nfe == 4 * 8)
    np.testing.assert_array_equal(u.predict(), np.argmax(u.log_p, axis=1))
    # a subset of classes per image: the same numbers as in the full table
    sub = BOUND.scores(CORNERS.score, CORNERS.sde, X, key, classes=np.array([[2, 0]] * 3, np.int32))
    np.testing.assert_allclose(sub.log_p, bound.log_p[:, [2, 0]], rtol=1e-6)
    np.testing.assert_array_equal(sub.predict(), np.where(bound.log_p[:, 2] > bound.log_p[:, 0], 2, 0))


@pytest.mark.slow
@pytest.mark.parametrize("scorer", [ODE, BOUND, Bound(B.BoundSettings(n_times=8, data_std=S, weighting="uniform"),
                                                      data_scaling="unit")], ids=["ode", "bound", "uniform"])
def test_the_pure_form_is_the_table_and_differentiable(scorer):
    key = jax.random.key(2)
    table = scorer.scores(CORNERS.score, CORNERS.sde, X, key, n_classes=4)
    f = scorer.pure(CORNERS.score, CORNERS.sde, key, n_classes=4)
    log_p, ok = f(jnp.asarray(X), jnp.arange(3))
    assert bool(ok.all())
    np.testing.assert_allclose(log_p, table.log_p, rtol=1e-5, atol=2e-3)
    two, _ = f(jnp.asarray(X[1:]), jnp.array([1, 2]), jnp.array([[3, 1], [3, 1]]))  # by id, two classes
    np.testing.assert_allclose(two, table.log_p[1:][:, [3, 1]], rtol=1e-5, atol=2e-3)
    grad = jax.grad(lambda x: f(x, jnp.arange(3))[0][:, 0].sum())(jnp.asarray(X))
    assert grad.shape == X.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


@pytest.mark.slow
def test_pruning_wraps_any_scorer():
    key = jax.random.key(3)
    x, _ = CORNERS.sample(jax.random.key(0), 20)
    pruned = Pruned(BOUND, ODE, keep=2).scores(CORNERS.score, CORNERS.sde, x, key, n_classes=4)
    first = BOUND.scores(CORNERS.score, CORNERS.sde, x, key, n_classes=4)
    top = np.argsort(-first.log_p, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(np.sort(np.nonzero(pruned.candidates)[1].reshape(-1, 2), axis=1), np.sort(top, axis=1))
    second = ODE.scores(CORNERS.score, CORNERS.sde, x, jax.random.fold_in(key, 1), classes=top.astype(np.int32))
    rows = np.arange(len(x))[:, None]
    np.testing.assert_array_equal(pruned.log_p[rows, top], second.log_p)
    np.testing.assert_array_equal(pruned.nfe, first.nfe + second.nfe)
    np.testing.assert_array_equal(pruned.passes, first.passes + second.passes)
    assert np.all(pruned.candidates[np.arange(len(x)), pruned.predict()]) and pruned.is_log_density
    with pytest.raises(ValueError, match="pruned"):
        pruned.log_marginal()
    # two bounds that differ only in K combine their draws: the bound module's pruning
    combined = Pruned(BOUND, Bound(B.BoundSettings(n_times=40, data_std=S), data_scaling="unit"), keep=2)
    got = combined.scores(CORNERS.score, CORNERS.sde, x, key, n_classes=4)
    ref = B.pruned_class_bounds(CORNERS.score, CORNERS.sde, x, key, n_classes=4, settings=BOUND.settings, keep=2,
                                second_times=40, dequantize=False, data_scaling="unit", progress=False)  # fmt: skip
    np.testing.assert_array_equal(got.log_p, ref.log_p)
    np.testing.assert_array_equal(got.predict(), ref.predict())
    assert "combined" in combined.describe() and "re-scored" in Pruned(BOUND, ODE).describe()
    with pytest.raises(TypeError, match="must be a scorer"):
        Pruned(BOUND, "ode")
    with pytest.raises(NotImplementedError, match="not differentiable"):
        combined.pure(CORNERS.score, CORNERS.sde, key)


def test_the_uniform_weighting_reaches_the_bayes_accuracy():
    """Equal isotropic classes: every time's error ranks classes by the distance to their mean, so the
    uniform-weighted score at convergence decides as Bayes does (the quadrants: Φ(a/s)²)."""
    x, y = CORNERS.sample(jax.random.key(0), 300)
    scorer = Bound(B.BoundSettings(n_times=256, data_std=S, weighting="uniform"), data_scaling="unit", chunk_size=65536)
    res = scorer.scores(CORNERS.score, CORNERS.sde, x, jax.random.key(1), n_classes=4)
    assert np.mean(res.predict() == np.asarray(CORNERS.bayes_predict(x))) > 0.9  # (93.8 %: near the boundaries, noise decides)
    bayes = (0.5 * (1 + math.erf(A / S / math.sqrt(2)))) ** 2
    assert abs(np.mean(res.predict() == np.asarray(y)) - bayes) < 3 * math.sqrt(bayes * (1 - bayes) / len(y))


def test_a_scorer_is_its_cache_key_without_its_chunk_size():
    key = lambda scorer: CacheKey("scores", 1, scorer, "a" * 64, "toy", np.arange(3)).digest()
    assert key(Ode(chunk_size=5)) == key(Ode(chunk_size=None))
    assert key(Ode(n_probes=2)) != key(Ode())
    assert key(Bound(chunk_size=8)) == key(Bound())
    assert key(Bound(B.BoundSettings(weighting="uniform"))) != key(Bound())
    assert "chunk_size" not in CacheKey("s", 1, Ode(), "a", "toy", np.arange(1)).inputs()["settings"]
    assert all(isinstance(s, ClassScorer) for s in (ODE, BOUND, Pruned(BOUND, ODE)))
    assert ODE.gives_density and BOUND.gives_density and not Pruned(BOUND, ODE).gives_density
    assert not Bound(B.BoundSettings(weighting="uniform")).gives_density
    with pytest.raises(ValueError, match="n_probes"):
        Ode(n_probes=0)
    with pytest.raises(TypeError, match="BoundSettings"):
        Bound(settings={"n_times": 4})
    with pytest.raises(ValueError, match="first_image"):
        BOUND.scores(CORNERS.score, CORNERS.sde, X, jax.random.key(0), n_classes=4, first_image=3)


def test_the_scipy_reference_is_a_scorer_paired_with_the_one_probe_ode():
    from sbgc.checks.reference import Reference, reference_log_likelihood_table

    key = jax.random.key(7)
    ref = Reference(SolverSettings(rtol=1e-5, atol=1e-5), data_scaling="unit")
    assert isinstance(ref, ClassScorer) and "scipy RK45" in ref.describe()
    got = ref.scores(CORNERS.score, CORNERS.sde, X, key, n_classes=4)
    table = reference_log_likelihood_table(CORNERS.score, CORNERS.sde, X, all_classes(3, 4), key, solver=ref.solver,
                                           dequantize=False, data_scaling="unit", progress=False)  # fmt: skip
    np.testing.assert_array_equal(got.log_p, table.log_p)
    ode = Ode(SolverSettings(rtol=1e-5, atol=1e-5), n_probes=1, data_scaling="unit").scores(
        CORNERS.score, CORNERS.sde, X, key, n_classes=4)
    np.testing.assert_allclose(got.log_p, ode.log_p, atol=1e-2)  # the same probe, two solvers
    np.testing.assert_array_equal(got.predict(), ode.predict())
    with pytest.raises(NotImplementedError, match="no differentiable form"):
        ref.pure(CORNERS.score, CORNERS.sde, key)
