"""PGD one image at a time (sbgc.experiments.pgd): Foolbox's steps, early stopping, restarts, the
two-class margin gradient, the line search, the ε curve and the cache round trip.

A linear classifier stands in for the baseline and a tiny class-conditional conv net for the
SBGC's score model (as in tests/test_adversarial.py)."""

import dataclasses
import functools
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.cache import CacheKey, ResultCache
from sbgc.experiments import adversarial as attacks
from sbgc.experiments import pgd
from sbgc.method.likelihood import SolverSettings
from sbgc.method.sde import SDE
from tiny_nets import init_tiny, tiny_score

SHAPE = (8, 8, 3)
DIM = int(np.prod(SHAPE))


class Linear:
    def __init__(self, key, k=10, scale=0.5):
        self.w = jax.random.normal(key, (DIM, k)) * scale

    def logits(self, x_unit):
        return x_unit.reshape(x_unit.shape[0], -1) @ self.w


@pytest.fixture(scope="module")
def linear():
    clf = Linear(jax.random.key(5))
    x = np.asarray(jax.random.uniform(jax.random.key(6), (12, *SHAPE)), np.float32)
    return clf, x, np.asarray(jnp.argmax(clf.logits(x), axis=1))


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_without_early_stop_the_steps_are_foolboxs(linear, norm, eps):
    """No random start, no early stop, cross-entropy: the same iterates as Foolbox 3's PGD."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox as fb
    clf, x, labels = linear
    settings = pgd.AttackSettings(norm, eps, steps=5, rel_stepsize=0.3, losses=("cross_entropy",),
                                  random_start=False, early_stop=False)  # fmt: skip
    ours = pgd.attack_images(pgd.baseline_attack_model(clf, len(x)), x, labels, settings)
    attack = (fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD)(steps=5, rel_stepsize=0.3, random_start=False)
    _, theirs, success = attack(attacks.foolbox_model(attacks.baseline_logits_fn(clf)), jnp.asarray(x),
                                jnp.asarray(labels), epsilons=eps)  # fmt: skip
    np.testing.assert_allclose(ours.adversarial, np.asarray(theirs), atol=2e-6)
    np.testing.assert_array_equal(ours.success, np.asarray(success))
    assert 0 < ours.success.mean() < 1


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.3)])
def test_early_stop_keeps_the_first_adversarial_and_more_steps_never_help(linear, norm, eps):
    clf, x, labels = linear
    model = pgd.baseline_attack_model(clf, len(x))
    runs = {s: pgd.attack_images(model, x, labels, pgd.AttackSettings(norm, eps, steps=s, seed=3)) for s in (1, 3, 10)}
    for few, many in ((1, 3), (3, 10)):  # the same random starts: successes only grow
        assert np.all(runs[many].success >= runs[few].success)
    r = runs[10]
    assert r.success.any() and not r.success.all()
    np.testing.assert_array_equal(r.success, np.argmax(r.adv_logits, axis=1) != labels)
    assert r.adversarial.min() >= 0 and r.adversarial.max() <= 1
    assert (r.linf if norm == "linf" else r.l2).max() <= eps * (1 + 1e-5)
    broken = r.success
    assert np.all(r.step[broken] >= 0) and np.all(r.step[~broken] == -1)
    # the margin comes first and the cross-entropy runs only on the images it left standing
    assert np.all(r.gradients[~broken] == 2 * 10) and np.all(r.gradients[broken] < 2 * 10 + 1)
    assert r.forwards.min() >= 1 and r.seconds.min() > 0
    again = pgd.attack_images(model, x, labels, pgd.AttackSettings(norm, eps, steps=10, seed=3))
    np.testing.assert_array_equal(again.adversarial, r.adversarial)  # seeded per (seed, image, loss, restart)
    more = pgd.attack_images(model, x, labels, pgd.AttackSettings(norm, eps, steps=10, seed=3, restarts=3))
    assert np.all(more.success >= r.success)


@pytest.mark.slow
def test_the_margin_gradient_through_two_classes_equals_the_full_one():
    """For the SBGC the margin's gradient is taken through the solves of the true and the
    runner-up class only: the same vector as through all K classes with cotangent e_k* − e_y."""
    k = 3
    model = types.SimpleNamespace(score_fn=functools.partial(tiny_score, init_tiny(jax.random.key(0), 3, 8, k)),
                                  sde=SDE())  # fmt: skip
    cfg = attacks.SBGCLogitsConfig(n_probes=2, n_classes=k, solver=SolverSettings("heun", n_steps=6))
    probes = attacks.draw_attack_probes(jax.random.key(2), 2, 2, SHAPE)
    am = pgd.sbgc_attack_model(model, probes, cfg)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (2, *SHAPE)), np.float32)
    for i in range(2):
        logits = am.logits(x[i], i)
        label = int(np.argmin(logits))
        pair = am.gradient(x[i], i, label, logits, "margin")
        c = attacks.margin_direction(jnp.asarray(logits[None], jnp.float32), jnp.asarray([label]))
        (_, ok), full = am._direction_grad(jnp.asarray(x[i : i + 1]), am.aux[i : i + 1], c)
        assert bool(ok.all())
        np.testing.assert_allclose(pair, np.asarray(full[0]), rtol=1e-4, atol=1e-4 * np.abs(pair).max())
        # and the logits are those of the batch classifier with the same probes
        batch = attacks.sbgc_logits_fn(model, probes, cfg).checked(x)
        np.testing.assert_allclose(logits, batch[i], rtol=1e-5)
    with pytest.raises(ValueError, match="loss must be one of"):
        am.gradient(x[0], 0, 0, logits, "hinge")

    # the finite-difference check of chapter 04 tests these very gradients, both losses (fixed steps: smooth in x)
    label = int(np.argmin(am.logits(x[0], 0)))
    for loss in attacks.LOSSES:
        chk = pgd.finite_difference_check(am, x[0], 0, label, loss, jax.random.key(3), n_directions=3, h=1e-2)
        assert chk.exact.shape == (3,) and chk.gradient_norm > 0
        assert chk.max_error_vs_gradient_norm < 1e-2, (loss, chk)
        flipped = types.SimpleNamespace(logits=am.logits, gradient=lambda *a: -am.gradient(*a))  # a wrong gradient
        bad = pgd.finite_difference_check(flipped, x[0], 0, label, loss, jax.random.key(3), n_directions=3, h=1e-2)
        assert bad.max_error_vs_gradient_norm > 0.03, (loss, bad)


def test_the_finite_difference_check_of_a_linear_classifier_is_exact(linear):
    clf, x, labels = linear
    am = pgd.baseline_attack_model(clf, len(x))
    w = np.asarray(clf.w)
    logits = am.logits(x[0], 0)
    runner_up = int(np.argsort(logits)[-2])
    chk = pgd.finite_difference_check(am, x[0], 0, int(labels[0]), "margin", jax.random.key(0), n_directions=2, h=1e-2)
    assert chk.gradient_norm == pytest.approx(np.linalg.norm(w[:, runner_up] - w[:, labels[0]]), rel=1e-5)
    np.testing.assert_allclose(chk.exact, chk.finite_difference, rtol=1e-3)
    with pytest.raises(ValueError, match="n_directions"):
        pgd.finite_difference_check(am, x[0], 0, int(labels[0]), "margin", jax.random.key(0), n_directions=0)


def test_line_search_curve_and_cache_round_trip(linear, tmp_path):
    from sbgc.cache import CacheKey, ResultCache

    clf, x, labels = linear
    model = pgd.baseline_attack_model(clf, len(x))
    settings = pgd.AttackSettings("l2", 2.0, steps=10, seed=0)
    plain = pgd.attack_images(model, x, labels, settings)
    searched = pgd.attack_images(model, x, labels, settings, line_search=8)
    assert plain.success.all()
    np.testing.assert_allclose(plain.shortest, plain.l2, rtol=1e-6)  # without a search: the adversarial's size
    assert np.all(searched.shortest <= plain.l2 * (1 + 1e-6)) and np.all(searched.shortest > 0)
    assert np.all(searched.forwards == plain.forwards + 8)
    # every size is a real adversarial: the point at that distance along the segment is misclassified
    for b in range(len(x)):
        s = searched.shortest[b] / searched.l2[b]
        point = x[b] + np.float32(s) * (searched.adversarial[b] - x[b])
        assert int(np.argmax(model.logits(point, b))) != labels[b]
    curve = searched.accuracy_at([0.0, 0.1, 0.5, 2.0])
    assert curve[0] == 1.0 and curve[-1] == 0.0 and np.all(np.diff(curve) <= 0)
    with pytest.raises(ValueError, match="attacked budget"):
        searched.accuracy_at([3.0])
    # ascending budgets: an image broken at a smaller ε is not attacked again and stays broken
    small = pgd.AttackSettings("linf", 1 / 255, steps=5, seed=0)
    outs = pgd.robust_accuracy_curve(model, x, labels, [1 / 255, 4 / 255, 16 / 255], small)
    assert [o.epsilon for o in outs] == pytest.approx([1 / 255, 4 / 255, 16 / 255])
    for a, b in zip(outs, outs[1:]):
        assert np.all(b.success >= a.success)
        np.testing.assert_array_equal(b.adversarial[a.success], a.adversarial[a.success])
        assert np.all(b.gradients[a.success] == 0)
    with pytest.raises(ValueError, match="strictly ascending"):
        pgd.robust_accuracy_curve(model, x, labels, [0.1, 0.05], small)
    # the outcome through the results cache, and as a PGDResult for the chapter's tables
    cache = ResultCache(tmp_path)
    key = CacheKey("pgd_test", 1, {"s": settings.describe()}, "0" * 64, "toy", np.arange(len(x)))
    back = pgd.AttackOutcome.from_arrays(cache.put(key, searched.to_arrays(), seconds=1.0, device="cpu", commit="x").arrays)
    for f in dataclasses.fields(pgd.AttackOutcome):
        a, b = getattr(searched, f.name), getattr(back, f.name)
        (np.testing.assert_array_equal if isinstance(a, np.ndarray) else lambda u, v: (u == v) or pytest.fail(f.name))(a, b)
    as_pgd = back.as_pgd_result()
    assert as_pgd.robust_accuracy == back.robust_accuracy and as_pgd.norm == "l2"
    # a block of a larger sample uses its own images' random numbers
    part = pgd.attack_images(model, x[4:8], labels[4:8], settings, first_image=4)
    with pytest.raises(ValueError, match="random numbers for 12"):
        pgd.attack_images(model, x[4:8], labels[4:8], settings, first_image=10)
    assert part.success.all()


def test_settings_are_validated():
    with pytest.raises(ValueError, match="norm must be one of"):
        pgd.AttackSettings("l1", 0.1, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        pgd.AttackSettings("linf", 0.1, steps=0)
    with pytest.raises(ValueError, match="losses must be a non-empty tuple"):
        pgd.AttackSettings("linf", 0.1, steps=1, losses=("hinge",))
    assert "restart" in pgd.AttackSettings("linf", 0.3, steps=20, restarts=2).describe()


def test_blocks_join_into_the_attack_of_the_whole_sample(linear, tmp_path):
    """The attack in cached blocks (each image with the numbers of its position) equals one call on all images; a
    second run loads every block, and a larger nested sample reuses the smaller's whole blocks."""
    clf, x, labels = linear
    model = pgd.baseline_attack_model(clf, len(x))
    settings = pgd.AttackSettings("linf", 4 / 255, steps=6, seed=1)
    whole = pgd.attack_images(model, x, labels, settings, line_search=3)
    cache, key = ResultCache(tmp_path), CacheKey("attack_block", 1, {"attack": settings.describe()}, "0" * 64, "fixture",
                                                  np.arange(len(x)))  # fmt: skip
    in_blocks, entries = pgd.attack_in_blocks(model, x, labels, settings, cache, key, line_search=3, block=5)
    assert [len(e.arrays["labels"]) for e in entries] == [5, 5, 2] and all(e.computed_now for e in entries)
    again, loaded = pgd.attack_in_blocks(model, x, labels, settings, cache, key, line_search=3, block=5)
    assert not any(e.computed_now for e in loaded)
    smaller = dataclasses.replace(key, image_indices=key.image_indices[:7])
    part, part_entries = pgd.attack_in_blocks(model, x[:7], labels[:7], settings, cache, smaller, line_search=3, block=5)
    assert [e.computed_now for e in part_entries] == [False, True]
    for f in ("adversarial", "success", "step", "shortest", "adv_logits", "labels", "clean_logits", "linf"):
        for outcome in (in_blocks, again):
            np.testing.assert_array_equal(getattr(outcome, f), getattr(whole, f))
        np.testing.assert_array_equal(getattr(part, f), getattr(whole, f)[:7])
    assert (in_blocks.norm, in_blocks.epsilon, in_blocks.settings, in_blocks.kind, in_blocks.losses) == (
        whole.norm, whole.epsilon, whole.settings, whole.kind, whole.losses)
    with pytest.raises(ValueError, match="13 images and 13 labels for a key of 12 images"):
        pgd.attack_in_blocks(model, np.concatenate([x, x[:1]]), np.concatenate([labels, labels[:1]]), settings, cache, key)
    np.testing.assert_array_equal(pgd.logits_of(model, x[3:6], 3), whole.clean_logits[3:6])
    s = whole.summary()
    broken = whole.success & (np.argmax(whole.clean_logits, axis=1) == labels)
    assert s["images"] == 12 and s["broken"] == int(broken.sum()) > 0
    assert sum(s["broken_by"].values()) == s["broken"] and s["gradients"] == int(whole.gradients.sum())
    assert s["shortest"]["median"] == float(np.median(whole.shortest[broken]))
    assert s["steps"]["max"] == float(whole.step[broken].max())


@pytest.mark.slow
def test_the_bound_classifier_is_attacked_through_its_fixed_draws():
    """The bound attack model scores image i with the draws of id i (the batch LogitsFn's numbers),
    its two-class margin gradient equals the full one, and the attack runs with early stopping."""
    from sbgc.method.bound import BoundSettings

    k = 3
    model = types.SimpleNamespace(score_fn=functools.partial(tiny_score, init_tiny(jax.random.key(0), 3, 8, k)),
                                  sde=SDE())  # fmt: skip
    settings = BoundSettings(n_times=4)
    am = pgd.bound_attack_model(model, jax.random.key(1), 3, settings, n_classes=k)
    x = np.asarray(jax.random.uniform(jax.random.key(2), (3, *SHAPE)), np.float32)
    batch = attacks.bound_logits_fn(model, jax.random.key(1), np.arange(3), settings, n_classes=k).checked(x)
    for i in range(3):
        logits = am.logits(x[i], i)
        np.testing.assert_allclose(logits, batch[i], rtol=1e-5)
        label = int(np.argmin(logits))
        pair = am.gradient(x[i], i, label, logits, "margin")
        c = attacks.margin_direction(jnp.asarray(logits[None], jnp.float32), jnp.asarray([label]))
        (_, ok), full = am._direction_grad(jnp.asarray(x[i : i + 1]), am.aux[i : i + 1], c)
        np.testing.assert_allclose(pair, np.asarray(full[0]), rtol=1e-4, atol=1e-4 * np.abs(pair).max())
    labels = np.argmax(batch, axis=1)
    out = pgd.attack_images(am, x, labels, pgd.AttackSettings("linf", 0.5, steps=3, rel_stepsize=0.5, restarts=1),
                            line_search=2)  # fmt: skip
    assert out.kind == "bound" and out.clean_correct.all()
    assert np.all(np.abs(out.adversarial - x).reshape(3, -1).max(axis=1) <= 0.5 + 1e-6)
    assert "variational bound, K=4" in am.description


_SPLIT_SCRIPT = r"""
import functools, json, re, sys, types
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np
from sbgc.experiments import adversarial as attacks, pgd
from sbgc.method.bound import BoundSettings
from sbgc.method.devices import split_rows_in_trace
from sbgc.method.likelihood import SolverSettings
from sbgc.method.sde import SDE
from tiny_nets import init_tiny, tiny_score
shape, k = (8, 8, 3), 3
model = types.SimpleNamespace(score_fn=functools.partial(tiny_score, init_tiny(jax.random.key(0), 3, 8, k)),
                              sde=SDE())
x = np.asarray(jax.random.uniform(jax.random.key(1), (2, *shape)), np.float32)
cfg = attacks.SBGCLogitsConfig(n_probes=2, n_classes=k, solver=SolverSettings(rtol=1e-3, atol=1e-3))
ode = pgd.sbgc_attack_model(model, attacks.draw_attack_probes(jax.random.key(2), 2, 2, shape), cfg)
bound = pgd.bound_attack_model(model, jax.random.key(3), 2, BoundSettings(n_times=4), n_classes=k)
out = {"devices": jax.local_device_count()}
for name, am in (("ode", ode), ("bound", bound)):
    logits = am.logits(x[1], 1)
    label = int(np.argmin(logits))
    hlo = am._forward.lower(jnp.asarray(x[1:2]), am.aux[1:2]).compile().as_text()
    parts = re.search(r"num_partitions=(\d+)", hlo)
    out[name] = {"logits": logits.tolist(), "partitions": 1 if parts is None else int(parts.group(1)),
                 "margin": am.gradient(x[1], 1, label, logits, "margin").ravel().tolist(),
                 "ce": am.gradient(x[1], 1, label, logits, "cross_entropy").ravel().tolist()}
split = jax.jit(lambda a: split_rows_in_trace(a)[0])(jnp.arange(3.0))
out["split"] = {"devices": len(split.sharding.device_set), "shape": list(split.shape)}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_attacked_functions_split_their_solves_over_the_devices():
    """The attack's logits and both losses' gradients (SBGC through the ODE and the bound) solve
    their rows across every local device (here 2 forced CPU host devices; 3 classes, so a padding
    row is added and dropped) and equal the one-device values: each row keeps its random numbers."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    got = {}
    for devices in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", _SPLIT_SCRIPT, str(Path(__file__).parent)], env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        got[devices] = json.loads(out.stdout.strip().splitlines()[-1])
        assert got[devices]["devices"] == devices
    assert got[1]["split"] == {"devices": 1, "shape": [3]}
    assert got[2]["split"] == {"devices": 2, "shape": [4]}  # 3 rows padded to a multiple of 2, split
    for name in ("ode", "bound"):
        one, two = got[1][name], got[2][name]
        assert (one["partitions"], two["partitions"]) == (1, 2)  # the compiled forward pass is split
        np.testing.assert_allclose(two["logits"], one["logits"], rtol=1e-6)
        for loss in ("margin", "ce"):
            g1, g2 = np.asarray(one[loss]), np.asarray(two[loss])
            assert np.abs(g1).max() > 0
            np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-5 * np.abs(g1).max())


def test_running_out_of_device_memory_in_an_attack_names_the_knobs(linear):
    """An XLA out-of-memory error in the attack's forward pass or gradient becomes an error naming
    the knobs that size it (n_probes, the solver's checkpoints, the bound's times); others pass."""
    from sbgc.method.devices import DeviceMemoryError

    clf, x, labels = linear
    am = pgd.baseline_attack_model(clf, len(x))
    logits = am.logits(x[0], 0)

    def oom(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 31.2GiB.")

    for name in ("_forward", "_margin_grad", "_direction_grad"):
        am.__dict__[name] = oom  # the cached compiled functions, replaced
    with pytest.raises(DeviceMemoryError, match=r"attack's clean forward pass of image 3 .*lower ode\.n_probes.*31\.2GiB"):
        am.logits(x[3], 3, "clean forward pass")
    for loss in ("margin", "cross_entropy"):
        with pytest.raises(DeviceMemoryError, match=f"attack's {loss} gradient of image 0.*checkpoints"):
            am.gradient(x[0], 0, int(labels[0]), logits, loss)
    am.__dict__["_forward"] = lambda *a: 1 / 0
    with pytest.raises(ZeroDivisionError):
        am.logits(x[0], 0)
    with pytest.raises(ValueError, match="loss must be one of"):
        am.gradient(x[0], 0, 0, logits, "hinge")
