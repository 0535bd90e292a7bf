"""Budgets read off one table per estimator (sbgc.experiments.converged): stratum subsets are stratified
samples, the curves decide as the estimators would at that budget, and the tables equal the scorers."""

import types

import jax
import numpy as np
import pytest

from sbgc.cache import ResultCache
from sbgc.data.files import ImageSet
from sbgc.experiments import converged as cv
from sbgc.method.bound import BoundSettings
from sbgc.method.classify import ClassLikelihoods
from sbgc.method.likelihood import SolverSettings
from sbgc.method.scorers import Bound, Ode
from sbgc.method.sde import SDE
from tiny_nets import init_tiny, tiny_score


def test_stratum_subsets_pick_one_fine_stratum_per_coarse_one_uniformly():
    rng = np.random.default_rng(0)
    s = cv.stratum_subsets(16, 4, 4000, rng)
    assert s.shape == (4000, 4)
    np.testing.assert_array_equal(s // 4, np.broadcast_to(np.arange(4), s.shape))  # one in each coarse stratum
    counts = np.bincount((s % 4).ravel(), minlength=4) / s.size
    np.testing.assert_allclose(counts, 0.25, atol=0.02)  # each fine stratum equally likely
    # so a point uniform in the chosen fine stratum is uniform in its coarse stratum: a K-stratified sample
    u_fine = (s + rng.random(s.shape)) / 16
    within = (u_fine * 4) % 1
    np.testing.assert_allclose(np.histogram(within, bins=4, range=(0, 1))[0] / within.size, 0.25, atol=0.02)
    np.testing.assert_array_equal(cv.stratum_subsets(8, 8, 3, rng), np.tile(np.arange(8), (3, 1)))
    with pytest.raises(ValueError, match="divide"):
        cv.stratum_subsets(16, 3, 2, rng)


def _table(noise: float, k: int = 16, b: int = 40, c: int = 3, seed: int = 0):
    """Class 0 (the label of every image) scores 1 higher than the others on average; per-time noise."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, noise, (b, c, k)) + np.array([1.0] + [0.0] * (c - 1))[None, :, None]
    return cv.TimeTable(values.astype(np.float32), np.zeros((b, c)), np.full(b, c * k), np.full(b, 2.0), 4, False)


def test_bound_curve_accuracy_rises_with_the_times_and_counts_passes():
    table, labels = _table(3.0), np.zeros(40, int)
    c = cv.bound_curve("u", table, labels, [1, 4, 16], 50, np.random.default_rng(1), reference=labels[:10])
    assert c.accuracy_mean[0] < c.accuracy_mean[1] < c.accuracy_mean[2]
    assert c.accuracy_std[-1] < 1e-12  # every subset of K_max is all of it
    np.testing.assert_array_equal(c.passes, [3, 12, 48])
    np.testing.assert_allclose(c.seconds, 2.0 * np.array([3, 12, 48]) / 48)
    np.testing.assert_allclose(c.agreement_mean[-1], (table.estimate(np.arange(16))[:10].argmax(1) == 0).mean())
    np.testing.assert_allclose(c.paired_accuracy[-1], c.agreement_mean[-1])  # the reference here is the label
    # the full-table decision is the estimate at all times
    full = (table.estimate(np.arange(16)).argmax(1) == labels).mean()
    assert c.accuracy_mean[-1] == pytest.approx(full)
    bound = table._replace(is_bound=True)
    np.testing.assert_array_equal(cv.bound_curve("b", bound, labels, [16], 2, np.random.default_rng(1)).passes, [51])


def test_pruned_curve_keeps_the_class_if_the_first_stage_does():
    table, labels = _table(0.2, c=5), np.zeros(40, int)  # little noise: any subset ranks class 0 first
    p = cv.pruned_curve("p", table, labels, 2, 2, [4, 16], 20, np.random.default_rng(2))
    np.testing.assert_array_equal(p.accuracy_mean, [1.0, 1.0])
    np.testing.assert_array_equal(p.passes, [5 * 2 + 2 * 4, 5 * 2 + 2 * 16])
    # with keep = 1 the decision is the first stage's
    table2 = _table(3.0, c=5)
    one = cv.pruned_curve("p1", table2, labels, 4, 1, [16], 30, np.random.default_rng(3))
    first = cv.bound_curve("b", table2, labels, [4], 30, np.random.default_rng(3))
    np.testing.assert_allclose(one.accuracy_mean, first.accuracy_mean)  # same rng stream: the same K1 subsets
    with pytest.raises(ValueError, match="keep"):
        cv.pruned_curve("p", table, labels, 2, 5, [4], 2, np.random.default_rng(0))
    # the kept classes are decided by their K1 + K2 times combined (the library's Pruned over two bounds)
    table3 = _table(3.0, c=3)
    table3 = table3._replace(values=table3.values - np.array([0, 0, 100.0], np.float32)[None, :, None])  # never kept
    both = cv.pruned_curve("p", table3, labels, 4, 2, [4], 25, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    s1, s2 = cv.stratum_subsets(16, 4, 25, rng), cv.stratum_subsets(16, 4, 25, rng)
    expected = np.mean([table3.estimate(np.concatenate([a, b]))[:, :2].argmax(1) == labels for a, b in zip(s1, s2)])
    assert both.accuracy_mean[0] == pytest.approx(expected)


def test_probe_curve_subsets_probes_and_verdicts_pick_the_cheapest_budget():
    rng = np.random.default_rng(4)
    lp = rng.normal(0, 2.0, (30, 3, 8)) + np.array([1.0, 0, 0])[None, :, None]
    z = np.zeros((30, 3))
    table = cv.ProbeTable(ClassLikelihoods(lp.mean(-1), lp, z, lp, np.full((30, 3), 10), lp, lp, 0.0, 4), np.full(30, 1.0))
    labels = np.zeros(30, int)
    c = cv.probe_curve("ode", table, labels, [1, 2, 8], 40, rng, reference=lp.mean(-1).argmax(1))
    np.testing.assert_array_equal(c.passes, [30 * 2, 30 * 3, 30 * 9])
    assert c.agreement_mean[-1] == 1.0 and c.accuracy_std[-1] < 1e-12
    [v] = cv.verdicts([c], target=c.accuracy_mean[-1], tolerance=0.0)
    assert v.converged_budget == c.budgets[int(np.flatnonzero(c.accuracy_mean >= c.accuracy_mean[-1])[0])]
    assert v.budget == c.budgets[int(np.flatnonzero(c.paired_accuracy >= c.accuracy_mean[-1])[0])]
    np.testing.assert_allclose(c.paired_accuracy, c.accuracy_mean)  # the reference covers every image here
    [never] = cv.verdicts([c], target=2.0, tolerance=0.0)
    assert never.budget is None and np.isnan(never.passes) and never.record()["passes"] is None
    assert "not reached" in cv.convergence_table([c], 2.0, 0.0, {})


def test_the_reference_table_as_a_frontier_point():
    from sbgc.experiments import compute

    rng = np.random.default_rng(5)
    lp = rng.normal(0, 1.0, (6, 3, 4)) + np.array([2.0, 0, 0])[None, :, None]
    table = cv.ProbeTable(ClassLikelihoods(lp.mean(-1), lp, lp.mean(-1), lp, np.full((6, 3), 10), lp, lp, 0.0, 4),
                          np.full(6, 2.0))  # fmt: skip
    labels = np.array([0, 0, 0, 1, 1, 2])
    from sbgc.method.likelihood import SolverSettings
    from sbgc.method.scorers import Ode

    p = compute.table_point(table, Ode(SolverSettings(), n_probes=4), labels, "ref")
    np.testing.assert_array_equal(p.correct, lp.mean(-1).argmax(1) == labels)
    np.testing.assert_array_equal(p.evaluations, np.full(6, 30.0))  # 10 per class, 3 classes
    np.testing.assert_array_equal(p.passes, np.full(6, 30.0 * 5))  # one linearised pass + 4 tangents
    assert p.seconds == 12.0 and p.method == "ODE" and p.settings["n_probes"] == 4
    np.testing.assert_allclose(p.true_log_p, lp.mean(-1)[np.arange(6), labels])
    np.testing.assert_allclose(p.true_log_p_se, (lp.std(-1, ddof=1) / 2.0)[np.arange(6), labels])


@pytest.fixture(scope="module")
def tiny_setup():
    params = init_tiny(jax.random.key(0), channels=1, n_classes=3)
    model = types.SimpleNamespace(score_fn=lambda x, t, y: tiny_score(params, x, t, y), sde=SDE(), sha256="0" * 64)
    rng = np.random.default_rng(0)
    split = ImageSet(rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8), rng.integers(0, 3, 6).astype(np.int32),
                     "toy", np.arange(6, dtype=np.int64), "toy")  # fmt: skip
    return model, split


def test_time_table_at_all_times_is_the_scorer_and_blocks_resume(tiny_setup, tmp_path):
    model, split = tiny_setup
    cache = ResultCache(tmp_path)
    idx = np.array([4, 1, 3, 0, 5])
    for weighting in ("likelihood", "uniform"):
        bound = Bound(BoundSettings(n_times=8, weighting=weighting), chunk_size=64)
        table = cv.bound_time_table(model, split, idx, bound, cache, seed=3, data_source="toy", block=2, n_classes=3)
        assert table.values.shape == (5, 3, 8) and table.is_bound == (weighting == "likelihood")
        for b, sl in enumerate([slice(0, 2), slice(2, 4), slice(4, 5)]):  # block b is the scorer with key fold_in(., b)
            ref = bound.scores(model.score_fn, model.sde, split.images[idx[sl]], jax.random.fold_in(jax.random.PRNGKey(3), b),
                               n_classes=3)  # fmt: skip
            np.testing.assert_allclose(table.estimate(np.arange(8))[sl], ref.log_p, rtol=1e-6)
            np.testing.assert_array_equal(table.passes[sl], ref.passes)
    n_entries = len(list(tmp_path.glob("*.json")))
    assert n_entries == 6
    again = cv.bound_time_table(model, split, idx[:4], bound, ResultCache(tmp_path, read_only=True), seed=3,
                                data_source="toy", block=2, n_classes=3)  # a nested prefix: its blocks are cached
    np.testing.assert_array_equal(again.values, table.values[:4])


def test_probe_table_draws_by_sample_position_whatever_the_blocks(tiny_setup, tmp_path):
    model, split = tiny_setup
    ode = Ode(SolverSettings(rtol=1e-2, atol=1e-2), n_probes=3)
    idx = np.array([2, 0, 5])
    one = cv.ode_probe_table(model, split, idx, ode, ResultCache(tmp_path / "a"), seed=1, data_source="toy", block=1,
                             n_classes=3)  # fmt: skip
    whole = cv.ode_probe_table(model, split, idx, ode, ResultCache(tmp_path / "b"), seed=1, data_source="toy", block=3,
                               n_classes=3)  # fmt: skip
    assert one.log_p_probes.shape == (3, 3, 3)
    np.testing.assert_allclose(one.log_p_probes, whole.log_p_probes, rtol=1e-4)
    ref = ode.scores(model.score_fn, model.sde, split.images[idx], jax.random.PRNGKey(1), n_classes=3)
    np.testing.assert_allclose(whole.log_p_probes.mean(-1), ref.log_p, rtol=1e-6)
    head = whole.head(2, "first two")
    assert head.result.log_p_probes.shape == (2, 3, 3) and head.shared_trajectory
    np.testing.assert_allclose(head.seconds, whole.seconds[:2].sum())


def test_a_corrupted_sample_keeps_each_image_its_position_and_corrupts_it_as_chapter_03_does():
    from sbgc.data.datasets import evaluation_split
    from sbgc.experiments import corruption_robustness as rb

    split = evaluation_split("mnist")
    idx = np.array([7, 3, 1234])
    noisy = cv.corrupted_sample(split, idx, "shot_noise", seed=0)
    np.testing.assert_array_equal(noisy.labels, split.labels[idx])
    np.testing.assert_array_equal(noisy.indices, split.indices[idx])
    assert noisy.images.shape == (3, 28, 28, 1) and np.any(noisy.images != split.images[idx])
    # image 3 alone is corrupted the same: its corruption depends on (seed, its index), not on the sample
    np.testing.assert_array_equal(cv.corrupted_sample(split, idx[1:2], "shot_noise", seed=0).images, noisy.images[1:2])
    evalset = rb.EvaluationSet(split.images[idx], split.labels[idx].astype(np.int64), split.indices[idx], split.source,
                               len(split), rb.MNIST_C)  # fmt: skip
    np.testing.assert_array_equal(rb.corrupted(evalset, ("shot_noise", 1), 0), noisy.images)
    with pytest.raises(ValueError, match="corruptions must be"):
        cv.corrupted_sample(split, idx, "frost", seed=0)


def test_the_command_line_fills_the_blocks_the_chapter_reads(tmp_path, monkeypatch):
    from sbgc.data.datasets import evaluation_split, sample_indices
    from sbgc.train.pretrained import load_model

    monkeypatch.setenv("SBGC_RESULTS_CACHE", str(tmp_path))
    cv.main(["--model", "mnist", "--data", "mnist", "--images", "2", "--block", "2", "--weighting", "uniform", "--times", "2",
             "--corruption", "shot_noise"])  # fmt: skip
    split = evaluation_split("mnist")
    idx = sample_indices(len(split), 2, 0)
    noisy = cv.corrupted_sample(split, idx, "shot_noise", 0)
    source = f"{cv.sample_source(split, 0)}, under shot_noise (regenerated, seed 0)"  # as chapter 06 writes it
    table = cv.bound_time_table(load_model("mnist"), noisy, np.arange(2), Bound(BoundSettings(n_times=2, weighting="uniform")),
                                ResultCache(tmp_path, read_only=True), seed=0, data_source=source, block=2)  # fmt: skip
    assert table.values.shape[:2] == (2, 10)


def test_tolerance_check_is_the_solver_difference_on_the_same_images():
    rng = np.random.default_rng(6)
    lp = rng.normal(0, 1.0, (5, 3, 4)) + np.array([4.0, 0, 0])[None, :, None]

    def table(values, nfe, seconds):
        m = values.mean(-1)
        return cv.ProbeTable(ClassLikelihoods(m, values, -m, values, np.full((len(m), 3), nfe), values, values, 0.0, 4),
                             np.full(len(m), seconds))  # fmt: skip

    loose = table(lp, 10, 1.0)
    shift = np.zeros_like(lp[:3])
    shift[0, 1] = 1.0  # class 1 of image 0 moves by one nat
    check = cv.tolerance_check(loose, table(lp[:3] + shift, 30, 4.0), np.zeros(3, int), (1e-3, 1e-5))
    assert check.n_images == 3 and check.agreement == 1.0
    assert check.abs_diff_max == pytest.approx(1.0) and check.abs_diff_mean == pytest.approx(1.0 / 9)
    assert check.nfe_ratio == pytest.approx(3.0) and check.seconds_ratio == pytest.approx(4.0)
    assert "1e-05" in check.markdown() and "same decision" in check.markdown()
    with pytest.raises(ValueError, match="first of the reference"):
        cv.tolerance_check(table(lp[:2], 10, 1.0), table(lp[:3], 10, 1.0), np.zeros(3, int), (1e-3, 1e-5))
