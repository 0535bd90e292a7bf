"""The SBGC as an attacked classifier (sbgc.experiments.adversarial): exact input gradients, PGD, failure handling.

A tiny random class-conditional conv net on 8×8×3 images stands in for the U-Net: the attacked
function is shape-generic, and the tiny network keeps every solve and its second derivatives cheap.
"""

import functools
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.experiments import adversarial as attacks
from sbgc.method.classify import class_log_likelihoods, log_marginal
from sbgc.method.likelihood import LikelihoodSolveError, SolverSettings, bits_per_dim, solve_rows
from sbgc.method.sde import SDE
from tiny_nets import init_tiny, tiny_score

SHAPE = (8, 8, 3)
K = 3


def _init_tiny(key, channels=3, hidden=8, n_classes=K):
    return init_tiny(key, channels, hidden, n_classes)


_tiny_score = tiny_score


@pytest.fixture(scope="module")
def model():
    return types.SimpleNamespace(score_fn=functools.partial(_tiny_score, _init_tiny(jax.random.key(0))), sde=SDE())


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (2, *SHAPE))  # already "dequantized" floats in [0, 1]


def _fn(model, n_probes=2, key=2, **config):
    cfg = attacks.SBGCLogitsConfig(n_probes=n_probes, n_classes=K, solver=SolverSettings(**config))
    probes = attacks.draw_attack_probes(jax.random.key(key), 2, n_probes, SHAPE)
    return attacks.sbgc_logits_fn(model, probes, cfg)


FIXED = dict(solver="heun", n_steps=16)


# --- the attacked function ------------------------------------------------------------------------
@pytest.mark.slow
def test_logits_are_the_classifiers_log_likelihoods_shapes_and_determinism(model, images):
    fn = _fn(model, **FIXED)
    logits = jax.jit(fn)(images)
    assert logits.shape == (2, K) and logits.dtype == jnp.float32
    # The same probes give the same function: another LogitsFn with the same key agrees exactly.
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(_fn(model, **FIXED)(images)))
    assert not np.allclose(np.asarray(logits), np.asarray(_fn(model, key=7, **FIXED)(images)), atol=1e-3)
    # The probes are those of the checked classifier for the probe half of the same key, and the
    # float input is used as given (not dequantized again).
    key = jax.random.key(11)
    probes = attacks.draw_attack_probes(jax.random.split(key)[1], 2, 2, SHAPE)
    cfg = attacks.SBGCLogitsConfig(n_probes=2, n_classes=K, solver=SolverSettings(rtol=1e-4, atol=1e-4))
    mine = attacks.sbgc_logits_fn(model, probes, cfg).checked(images)
    ref = class_log_likelihoods(model.score_fn, model.sde, images, key, n_classes=K, n_probes=2,
                                solver=cfg.solver, dequantize=False, progress=False)  # fmt: skip
    np.testing.assert_allclose(mine, ref.log_p, rtol=0, atol=1e-3)


def test_fixed_steps_take_exactly_n_steps_and_validate():
    x = jax.random.normal(jax.random.key(3), (2, 4))
    score = lambda xx, t, y: -xx
    sol = solve_rows(score, SDE(), x, jnp.zeros(2, jnp.int32), jnp.ones((2, 1, 4)), SolverSettings("heun", n_steps=5))
    assert np.asarray(sol.num_steps).tolist() == [[5], [5]] and bool(sol.successful.all())
    assert int(SolverSettings("heun", n_steps=5).evaluations(5)) == 10
    with pytest.raises(ValueError, match="n_steps must be None"):
        SolverSettings(n_steps=0)
    with pytest.raises(ValueError, match="exceeds max_steps"):
        SolverSettings(n_steps=10, max_steps=5)
    with pytest.raises(ValueError, match="adjoint must be one of"):
        SolverSettings(adjoint="forward")
    with pytest.raises(ValueError, match="checkpoints must be None"):
        SolverSettings(checkpoints=0)


# --- gradients ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("grid", ["uniform", "log"])
def test_unrolled_steps_equal_diffrax_and_log_grid_times(model, images, grid):
    """unroll=True takes the same solver steps in straight-line code: same logits and gradient."""
    fixed = dict(solver="heun", n_steps=6, step_grid=grid)
    loop, flat = _fn(model, **fixed), _fn(model, unroll=True, **fixed)
    np.testing.assert_allclose(flat.checked(images), loop.checked(images), rtol=1e-5)
    target = jnp.asarray(np.argsort(np.asarray(loop(images)), axis=1)[:, -2])
    g_loop, g_flat = (attacks.input_gradient(f, images, target)[1] for f in (loop, flat))
    np.testing.assert_allclose(g_flat, g_loop, rtol=1e-3, atol=1e-3 * np.abs(g_loop).max())
    times = SolverSettings(**fixed).fixed_step_times(1.0)
    assert times[0] == 1e-5 and times[-1] == 1.0 and len(times) == 7 and np.all(np.diff(times) > 0)
    if grid == "log":
        np.testing.assert_allclose(np.diff(np.log(times)), np.log(1e5) / 6, rtol=1e-9)
    with pytest.raises(ValueError, match="needs fixed steps"):
        SolverSettings(unroll=True)
    with pytest.raises(ValueError, match="step_grid='log' needs fixed steps"):
        SolverSettings(step_grid="log")
    with pytest.raises(ValueError, match="step_grid must be one of"):
        SolverSettings(n_steps=4, step_grid="cosine")


@pytest.mark.slow
def test_fixed_step_gradient_matches_central_finite_differences(model, images):
    """Reverse mode through the solver steps is the exact derivative of the fixed-step solution.

    float32: the attacked value is ~1e3 nats (ulp ~1.2e-4), so central differences at h = 1e-2 carry a
    rounding error of up to a few ulp / h ≈ 0.01-0.04 in absolute terms, whatever the derivative: a
    relative bound fails by chance along a direction where the derivative is small (measured on two
    machines: 4.2e-4 and, along a direction with derivative 0.89, 7.4e-3). The test allows 3 ulp / h
    plus 1e-3 relative; a wrong gradient is off by far more along the directions of derivative 2.7-5.7.
    Measured: |exact − FD| ≤ 6.6e-3 nats, 3e-5 of ‖∇‖.
    """
    chk = attacks.finite_difference_check(_fn(model, **FIXED), images, jax.random.key(3), n_directions=3, h=1e-2)
    assert chk.exact.shape == chk.finite_difference.shape == (3,)
    assert np.all(np.abs(chk.exact) > 0.1)  # directions that probe the gradient, not ~0
    rounding = 3 * np.spacing(np.float32(abs(chk.value))) / chk.h  # float32 rounding of f(x ± h d), over 2h
    assert np.all(np.abs(chk.exact - chk.finite_difference) <= rounding + 1e-3 * np.abs(chk.exact)), chk
    assert chk.max_error_vs_gradient_norm < 1e-3, chk


@pytest.mark.slow
def test_adaptive_gradients_recursive_and_backsolve_agree_with_finite_differences(model, images):
    """At rtol = 1e-6 both adjoints match each other and the finite differences on a small network.

(On the U-Nets they do not: see the sbgc.experiments.adversarial module docstring.) The backsolve adjoint's
backward solve is controlled by the RMS norm, the forward one by the default split norm.

    The adaptive solver's step selection jitters between x ± h·d, adding noise ~ tol·|log p|/h to
    the FD: measured relative errors ≤ 1e-3 at h = 1e-2 (≤ 9e-3 along a third direction); the two
    gradient norms differed by 1.2e-6.
    """
    rec, back = _fn(model, rtol=1e-6, atol=1e-6), _fn(model, adjoint="backsolve", rtol=1e-6, atol=1e-6)
    checks = [attacks.finite_difference_check(f, images, jax.random.key(3), n_directions=2, h=1e-2) for f in (rec, back)]
    for chk in checks:
        assert chk.max_relative_error < 1e-2, chk
    np.testing.assert_allclose(checks[1].exact, checks[0].exact, rtol=1e-3)
    assert checks[1].gradient_norm == pytest.approx(checks[0].gradient_norm, rel=1e-3)


@pytest.mark.slow
def test_input_gradient_is_the_gradient_of_the_foolbox_loss(model, images):
    import eagerpy as ep

    logits = jax.random.normal(jax.random.key(4), (5, K)) * 30.0
    labels = jnp.array([0, 1, 2, 0, 1])
    expect = ep.crossentropy(ep.astensor(logits), ep.astensor(labels)).sum().raw
    np.testing.assert_allclose(float(attacks.cross_entropy(logits, labels)), float(expect), rtol=1e-6)
    fn = _fn(model, **FIXED)
    value, grad = attacks.input_gradient(fn, images, jnp.array([2, 0]))
    assert grad.shape == images.shape and grad.dtype == np.float32 and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, float(attacks.cross_entropy(fn(images), jnp.array([2, 0]))), rtol=1e-5)


# --- failures and bad input -----------------------------------------------------------------------
@pytest.mark.slow
def test_failed_solves_raise_naming_rows(model, images):
    fn = _fn(model, rtol=1e-8, atol=1e-8, max_steps=3)
    with pytest.raises(LikelihoodSolveError, match=r"image 0 class 0") as err:
        fn.checked(images)
    assert set(err.value.rows) == {(i, c) for i in range(2) for c in range(K)}
    with pytest.raises(LikelihoodSolveError, match="input gradient"):
        attacks.input_gradient(fn, images, jnp.array([0, 1]))
    with pytest.raises(LikelihoodSolveError, match="clean forward pass"):
        attacks.run_pgd(fn, images, np.array([0, 1]), norm="linf", epsilon=0.03, steps=1)


def test_bad_arguments_raise(model, images):
    with pytest.raises(ValueError, match="probes must have shape"):
        attacks.sbgc_logits_fn(model, jnp.ones((2, 3, *SHAPE)), attacks.SBGCLogitsConfig(n_probes=2))
    fn = _fn(model, **FIXED)
    with pytest.raises(ValueError, match="x_unit must have shape"):
        fn(images[:1])
    with pytest.raises(ValueError, match="n_probes must be a positive int"):
        attacks.SBGCLogitsConfig(n_probes=0)
    with pytest.raises(ValueError, match="must have a callable .logits"):
        attacks.baseline_logits_fn(object())
    with pytest.raises(ValueError, match="norm must be one of"):
        attacks.run_pgd(fn, images, np.array([0, 1]), norm="l1", epsilon=0.1, steps=1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        attacks.run_pgd(fn, images * 2.0, np.array([0, 1]), norm="l2", epsilon=0.1, steps=1)
    with pytest.raises(ValueError, match="float images"):
        attacks.run_pgd(fn, (images * 255).astype(jnp.uint8), np.array([0, 1]), norm="l2", epsilon=0.1, steps=1)
    with pytest.raises(ValueError, match="target is required"):
        attacks.finite_difference_check(fn, images, jax.random.key(0), objective=attacks.cross_entropy)


# --- PGD through Foolbox --------------------------------------------------------------------------
class LinearClassifier:
    """A stand-in discriminative classifier: logits = flatten(x) W."""

    def __init__(self, key, dim, k=10):
        self.w = jax.random.normal(key, (dim, k)) * 0.5

    def logits(self, x_unit):
        return x_unit.reshape(x_unit.shape[0], -1) @ self.w


@pytest.fixture(scope="module")
def linear():
    clf = LinearClassifier(jax.random.key(5), int(np.prod(SHAPE)))
    x = jax.random.uniform(jax.random.key(6), (16, *SHAPE))
    return attacks.baseline_logits_fn(clf), x, np.asarray(jnp.argmax(clf.logits(x), axis=1))


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_reduces_accuracy_within_the_ball_and_bounds(linear, norm, eps):
    fn, x, labels = linear
    res = attacks.run_pgd(fn, x, labels, norm=norm, epsilon=eps, steps=10, seed=0)
    assert res.clean_accuracy == 1.0 and res.robust_accuracy < 0.95
    np.testing.assert_array_equal(res.success, res.adv_pred != labels)
    assert res.adversarial.shape == x.shape and res.adversarial.dtype == np.float32
    assert res.adversarial.min() >= 0.0 and res.adversarial.max() <= 1.0
    assert (res.linf if norm == "linf" else res.l2).max() <= eps * (1 + 1e-5)
    default_rel = 0.01 / 0.3 if norm == "linf" else 0.025  # Foolbox's defaults
    assert res.rel_stepsize == pytest.approx(default_rel) and res.stepsize == pytest.approx(default_rel * eps)
    assert len(res.step_seconds) == 10 and res.seconds > 0
    again = attacks.run_pgd(fn, x, labels, norm=norm, epsilon=eps, steps=10, seed=0)
    np.testing.assert_array_equal(again.adversarial, res.adversarial)  # seeded random start
    other = attacks.run_pgd(fn, x, labels, norm=norm, epsilon=eps, steps=10, seed=1)
    assert not np.array_equal(other.adversarial, res.adversarial)


def test_checked_pgd_equals_plain_foolbox_pgd(linear):
    """The solve-checked step computes exactly Foolbox's own loss gradient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox as fb
    fn, x, labels = linear
    ours = attacks.run_pgd(fn, x, labels, norm="linf", epsilon=8 / 255, steps=5, random_start=False)
    _, theirs, success = fb.attacks.LinfPGD(steps=5, random_start=False)(
        attacks.foolbox_model(fn), x, jnp.asarray(labels), epsilons=8 / 255
    )
    np.testing.assert_allclose(ours.adversarial, np.asarray(theirs), atol=1e-6)
    np.testing.assert_array_equal(ours.success, np.asarray(success))


@pytest.mark.slow
def test_pgd_on_the_sbgc_raises_the_loss_and_leaves_log_likelihoods_comparable(model, images):
    fn = _fn(model, solver="heun", n_steps=4)
    # The tiny net's classes differ by hundreds of nats, so the cross-entropy at the top class is
    # saturated (gradient 0): attack the runner-up label instead.
    labels = np.argsort(np.asarray(fn(images)), axis=1)[:, -2]
    res = attacks.run_pgd(fn, images, labels, norm="l2", epsilon=0.5, steps=2, rel_stepsize=0.5, random_start=False)
    ce = lambda lg: float(attacks.cross_entropy(jnp.asarray(lg), jnp.asarray(labels)))
    assert ce(res.adv_logits) > ce(res.clean_logits) + 1e-3  # ascent on Foolbox's loss
    assert res.l2.max() <= 0.5 * (1 + 1e-5) and res.kind == "sbgc"
    shift = attacks.attack_log_likelihoods(fn, images, res.adversarial)
    np.testing.assert_allclose(shift.log_p_clean, log_marginal(res.clean_logits), rtol=1e-6)
    np.testing.assert_allclose(shift.bpd_adv, bits_per_dim(log_marginal(res.adv_logits), int(np.prod(SHAPE))), rtol=1e-6)
    same = attacks.attack_log_likelihoods(fn, images, images)  # common random numbers: exactly 0
    np.testing.assert_array_equal(same.delta_bpd, np.zeros(2))
    with pytest.raises(ValueError, match="needs an SBGC LogitsFn"):
        attacks.attack_log_likelihoods(attacks.baseline_logits_fn(LinearClassifier(jax.random.key(0), 192)), images, images)



def test_a_subset_of_an_attack_keeps_its_settings_and_restricts_every_per_image_array(linear):
    """PGDResult.subset (Table 3's "same images" rows): every per-image array (every array field with one
    row per image, so a new one cannot be forgotten) restricted by a mask or by positions, the rest kept."""
    fn, x, labels = linear
    res = attacks.run_pgd(fn, x, labels, norm="linf", epsilon=8 / 255, steps=3, seed=0)
    mask = np.arange(len(x)) % 3 == 0
    for sub in (res.subset(mask), res.subset(np.flatnonzero(mask))):
        for name in res.__dataclass_fields__:
            a, b = getattr(res, name), getattr(sub, name)
            if isinstance(a, np.ndarray) and a.ndim >= 1 and len(a) == len(x):
                np.testing.assert_array_equal(b, a[mask], err_msg=name)
            else:
                assert b == a, name
        assert sub.robust_accuracy == pytest.approx(np.mean(res.adv_pred[mask] == labels[mask]))
    assert res.subset(np.zeros(len(x), bool)).labels.shape == (0,)


# --- objectives that do not saturate (SBGC logits are ~1e4 nats) --------------------------------------
def _exact_ce_direction(logits, label):
    """(p − e_y)/‖p − e_y‖ of softmax cross-entropy in decimal arithmetic with enough digits that
    1 − p_y (~e^-margin) survives: no underflow, no cancellation."""
    from decimal import Decimal, getcontext

    getcontext().prec = int((max(logits) - min(logits)) / 2.3) + 40
    z = [Decimal(float(v)) for v in logits]
    top = max(z)
    e = [(v - top).exp() for v in z]
    p = [v / sum(e) for v in e]
    g = [pk - (1 if k == label else 0) for k, pk in enumerate(p)]
    norm = sum(v * v for v in g).sqrt()
    return np.array([float(v / norm) for v in g])


@pytest.mark.parametrize("margin_nats", [1.0, 20.0, 90.0, 500.0, 5000.0])
def test_cross_entropy_direction_is_exact_at_any_margin(margin_nats):
    # SBGC-like logits: ~ -1e4 nats, the true class (0) ahead of the runner-up by margin_nats
    logits = jnp.array([[-9000.0, -9000.0 - margin_nats, -9000.0 - margin_nats - 3.0, -9100.0 - margin_nats]])
    labels = jnp.array([0])
    exact = _exact_ce_direction(np.asarray(logits[0], np.float64), 0)
    g = np.asarray(jax.grad(attacks.pgd_surrogate)(logits, (labels, jnp.asarray(False)))[0], np.float64)
    np.testing.assert_allclose(g / np.linalg.norm(g), exact, atol=1e-6)
    # the float32 softmax cross-entropy's own gradient loses the direction beyond ~17 nats
    naive = lambda lg: jnp.sum(jax.nn.logsumexp(lg, axis=1) - lg[:, 0])
    g_naive = np.asarray(jax.grad(naive)(logits), np.float64)[0]
    if margin_nats >= 20:
        assert g_naive[0] == 0.0 or not np.allclose(g_naive / np.linalg.norm(g_naive), exact, atol=1e-3)
    # the value is accurate too: log(1 + Σ e^{d})
    assert float(attacks.cross_entropy(logits, labels)) == pytest.approx(
        float(np.log1p(np.exp(-margin_nats) + np.exp(-margin_nats - 3) + np.exp(-margin_nats - 100))), rel=1e-4, abs=1e-30)
    # the margin's gradient is e_k* − e_y at every margin
    np.testing.assert_array_equal(np.asarray(jax.grad(attacks.margin)(logits, labels))[0], [-1.0, 1.0, 0.0, 0.0])
    # PGD's one compiled surrogate gives either direction, chosen by a traced flag
    for use_margin, want in ((False, attacks.cross_entropy_direction), (True, attacks.margin_direction)):
        got = jax.jit(jax.grad(attacks.pgd_surrogate))(logits, (labels, jnp.asarray(use_margin)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want(logits, labels)), atol=1e-7)


class ScaledLinear(LinearClassifier):
    def __init__(self, key, dim, k, scale):
        super().__init__(key, dim, k)
        self.scale = scale

    def logits(self, x_unit):
        return self.scale * super().logits(x_unit)


@pytest.mark.parametrize("k,loss", [(2, "cross_entropy"), (10, "margin"), (10, "cross_entropy")])
def test_pgd_flips_the_same_images_when_the_logits_are_rescaled(k, loss):
    """Logits × 1 and × 1e4 have the same decisions; the attack must break the same images (before
    the fix, Foolbox's loss flipped 100 % of 24 images at × 1 and 42 % at × 1e4). Exact for the
    margin and for two classes; for ten classes the cross-entropy's softmax weights over the wrong
    classes depend on the temperature, so there only the share of flipped images is compared."""
    x = jax.random.uniform(jax.random.key(7), (24, *SHAPE))
    runs = []
    for scale in (1.0, 1e4):
        fn = attacks.baseline_logits_fn(ScaledLinear(jax.random.key(5), int(np.prod(SHAPE)), k, scale))
        labels = np.asarray(jnp.argmax(fn(x), axis=1))
        runs.append(attacks.run_pgd(fn, x, labels, norm="linf", epsilon=4 / 255, steps=20, seed=0, loss=loss))
    a, b = runs
    assert a.clean_accuracy == b.clean_accuracy == 1.0 and 0 < a.success.mean()
    if k == 2 or loss == "margin":
        np.testing.assert_array_equal(a.success, b.success)
        np.testing.assert_allclose(a.adversarial, b.adversarial, atol=1e-6)
    else:
        assert abs(a.success.mean() - b.success.mean()) <= 2 / 24, (a.success.mean(), b.success.mean())
    both = attacks.worst_case([a, attacks.run_pgd(
        attacks.baseline_logits_fn(ScaledLinear(jax.random.key(5), int(np.prod(SHAPE)), k, 1.0)), x, a.labels,
        norm="linf", epsilon=4 / 255, steps=20, seed=0, loss="margin" if loss == "cross_entropy" else "cross_entropy")])
    assert both.mean() >= a.success.mean()
    with pytest.raises(ValueError, match="different threat models"):
        attacks.worst_case([a, attacks.run_pgd(attacks.baseline_logits_fn(ScaledLinear(jax.random.key(5), 192, k, 1.0)),
                                               x, a.labels, norm="l2", epsilon=0.1, steps=1, loss=loss)])


# --- image shape from the model; results through the book's cache ----------------------------------
def test_probes_take_the_image_shape_of_the_model():
    mnist = types.SimpleNamespace(config=types.SimpleNamespace(image_size=28, channels=1))
    assert attacks.image_shape(mnist) == (28, 28, 1)
    probes = attacks.draw_attack_probes(jax.random.key(0), 2, 3, attacks.image_shape(mnist))
    assert probes.shape == (2, 3, 28, 28, 1) and set(np.unique(np.asarray(probes)).tolist()) == {-1.0, 1.0}
    cifar = types.SimpleNamespace(config=types.SimpleNamespace(image_size=32, channels=3))
    assert attacks.draw_attack_probes(jax.random.key(0), 1, 1, attacks.image_shape(cifar)).shape == (1, 1, 32, 32, 3)
    with pytest.raises(ValueError, match="image_size and channels"):
        attacks.image_shape(types.SimpleNamespace(config=None))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        attacks.draw_attack_probes(jax.random.key(0), 1, 1, (28, 28))


def _assert_same(a, b):
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert type(x) is type(y) and x == y, (name, x, y)


def test_attack_results_round_trip_through_the_results_cache(linear, tmp_path):
    from sbgc.cache import CacheKey, ResultCache

    fn, x, labels = linear
    results = [attacks.run_pgd(fn, x[:4], labels[:4], norm="linf", epsilon=8 / 255, steps=2, seed=0),
               attacks.run_pgd(fn, x[:4], labels[:4], norm="l2", epsilon=0.5, steps=1, abs_stepsize=0.1,
                               random_start=False, loss="margin")]  # rel_stepsize None
    assert results[1].rel_stepsize is None
    fd = attacks.FiniteDifferenceCheck(np.array([1.0, 2.0]), np.array([1.0, 2.1]), np.array([0.0, 0.05]), 0.01, 3.5, -2.0)
    cache = ResultCache(tmp_path)
    for i, obj in enumerate([*results, fd]):
        arrays = obj.to_arrays()
        assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
        key = CacheKey("attack", 1, {"i": i}, "0" * 64, "test", np.arange(4))
        fresh = cache.get(key, lambda: arrays)
        loaded = cache.get(key, lambda: pytest.fail("must load, not compute"))
        assert fresh.computed_now and not loaded.computed_now
        back = type(obj).from_arrays(loaded.arrays)
        _assert_same(obj, back)
    assert attacks.PGDResult.from_arrays(results[0].to_arrays()).robust_accuracy == results[0].robust_accuracy
    with pytest.raises(KeyError, match="lack the field"):
        attacks.PGDResult.from_arrays({k: v for k, v in results[0].to_arrays().items() if k != "adv_logits"})


def test_running_out_of_device_memory_in_a_batch_attack_names_the_knobs():
    """The batch classifier Foolbox attacks (LogitsFn): an out-of-memory error in its forward pass or
    gradient names the knobs that size them; other errors pass through."""
    from sbgc.method.devices import DeviceMemoryError

    def oom(x):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.0GiB.")

    fn = attacks.LogitsFn(oom, "sbgc", "a stand-in")
    x = jnp.zeros((3, 4, 4, 1))
    with pytest.raises(DeviceMemoryError, match=r"attack's forward pass of 3 image\(s\) \(a stand-in\).*fewer images"):
        fn.checked(x)
    with pytest.raises(DeviceMemoryError, match=r"attack's gradient of 3 image\(s\).*checkpoints.*8\.0GiB"):
        fn.value_and_grad(attacks.pgd_surrogate)(x, (jnp.zeros(3, jnp.int32), jnp.zeros((3, 2))))
    with pytest.raises(ZeroDivisionError):
        attacks.LogitsFn(lambda x: 1 / 0, "sbgc").checked(x)
