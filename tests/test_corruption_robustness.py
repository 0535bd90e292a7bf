"""Corruption robustness (CIFAR-10-C and MNIST-C): image samples, the settings grid, same-image
evaluation, Table 2, Fig. 4, the results-cache round trip, the likelihood AUROC and the verdict."""

import dataclasses
import hashlib
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest

from sbgc.cache import CacheKey, ResultCache, block_key
from sbgc.book.provenance import _jsonable
from sbgc.data.cifar10 import ImageSet
from sbgc.data.corruptions import CORRUPTIONS, NOISE_CORRUPTIONS, corrupt, corruption_grid, synthetic_images
from sbgc.data.mnist import load_mnist
from sbgc.data.mnist_c import MNIST_C_CORRUPTIONS, MNIST_C_NOISE, corrupt_mnist
from sbgc.experiments import corruption_robustness as rb
from sbgc.method.likelihood import SolverSettings
from sbgc.method.scorers import Ode
from sbgc.stats import binomial_interval


def fake_split(n: int = 40, seed: int = 0) -> ImageSet:
    images = synthetic_images(n, seed)
    labels = (np.arange(n) % 10).astype(np.int32)
    return ImageSet(images=images, labels=labels, source="toy", indices=np.arange(n, dtype=np.int64) + 100,
                      split="test")  # fmt: skip


def grid_result(correct: np.ndarray, settings, name="clf", digest="d", log_p=None) -> rb.GridResult:
    """A GridResult whose predictions are right exactly where ``correct`` [S, N] is True."""
    correct = np.asarray(correct, bool)
    labels = np.arange(correct.shape[1]) % 10
    preds = np.where(correct, labels[None], (labels[None] + 1) % 10)
    return rb.GridResult(name=name, settings=tuple(settings), labels=labels, predictions=preds, log_p=log_p,
                         nfe=None, seconds=np.zeros(len(settings)), images_sha256=digest,
                         image_indices=np.arange(correct.shape[1]))  # fmt: skip


# --- what to evaluate -------------------------------------------------------------------------------
def test_checks_of_severities_and_corruptions():
    assert rb.check_severities((5, 1, 3, 1)) == (1, 3, 5)
    for bad in ((0,), (6,), (), (2.5,), "3", (True,)):
        with pytest.raises(ValueError, match="severities must be"):
            rb.check_severities(bad)
    assert rb.check_corruptions(("fog", "gaussian_noise")) == ("gaussian_noise", "fog")  # the benchmark's order
    with pytest.raises(ValueError, match="unknown: speckle"):
        rb.check_corruptions(("fog", "speckle"))
    with pytest.raises(ValueError, match="corruptions must be"):
        rb.check_corruptions("fog")  # a string is not a sequence of names
    grid = rb.settings(CORRUPTIONS, (1, 5))
    assert grid[0] == ("clean", 0) and len(grid) == 1 + 15 * 2
    assert grid[1:3] == (("gaussian_noise", 1), ("gaussian_noise", 5))
    assert rb.settings(("fog",), (3,), clean=False) == (("fog", 3),)


def test_samples_are_prefixes_of_one_fixed_permutation():
    split = fake_split(40)
    small, large = rb.select_images(split, 5, seed=3), rb.select_images(split, 30, seed=3)
    np.testing.assert_array_equal(small.indices, large.indices[:5])
    np.testing.assert_array_equal(small.images, large.head(5).images)
    assert len(set(large.indices.tolist())) == 30 and large.n_available == 40 and large.source == "toy"
    # the indices are the split's (corruption keys), and the labels follow the images
    pos = large.indices - 100
    np.testing.assert_array_equal(large.images, split.images[pos])
    np.testing.assert_array_equal(large.labels, split.labels[pos])
    assert not np.array_equal(rb.select_images(split, 30, seed=4).indices, large.indices)
    assert not np.array_equal(np.sort(large.indices), large.indices)  # a random draw, not the head
    with pytest.raises(ValueError, match="cannot draw 41 images from 40"):
        rb.select_images(split, 41, seed=0)


# --- the same images for every classifier ----------------------------------------------------------
def test_every_classifier_sees_the_same_corrupted_images():
    evalset = rb.select_images(fake_split(12), 6, seed=0)
    grid = rb.settings(("gaussian_noise", "fog", "jpeg_compression"), (2, 4))
    seen = {"a": [], "b": []}

    def recorder(name):
        def classify(x):
            seen[name].append(x.copy())
            return (x.reshape(len(x), -1).sum(axis=1) % 10).astype(np.int64)

        return classify

    out = rb.evaluate_grid({"a": recorder("a"), "b": recorder("b")}, evalset, grid, seed=7)
    assert out["a"].images_sha256 == out["b"].images_sha256
    assert len(seen["a"]) == len(grid)
    for setting, xa, xb in zip(grid, seen["a"], seen["b"]):
        np.testing.assert_array_equal(xa, xb)
        expected = evalset.images if setting[0] == "clean" else corrupt(
            evalset.images, setting[0], setting[1], seed=7, indices=evalset.indices)
        np.testing.assert_array_equal(xa, expected)
    assert out["a"].predictions.shape == (len(grid), 6)
    np.testing.assert_array_equal(rb.corrupted(evalset, ("fog", 4), 7, chunk=4), seen["a"][grid.index(("fog", 4))])
    # another seed corrupts differently, and the digest says so
    other = rb.evaluate_grid({"a": recorder("a")}, evalset, grid, seed=8)["a"]
    assert other.images_sha256 != out["a"].images_sha256
    with pytest.raises(ValueError, match="not evaluated on the same images"):
        rb.paired_difference(out["a"], other)


def test_generative_outputs_give_argmax_predictions_and_likelihoods():
    evalset = rb.select_images(fake_split(10), 4, seed=1)
    grid = rb.settings(("contrast",), (5,))
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(grid), 4, 10))
    calls = iter(range(len(grid)))

    class Result:  # the attributes a ClassLikelihoods has
        def __init__(self, log_p):
            self.log_p, self.nfe = log_p, np.full(log_p.shape, 7)

    out = rb.evaluate_grid({"gen": lambda x: Result(table[next(calls)])}, evalset, grid, seed=0)["gen"]
    np.testing.assert_array_equal(out.predictions, table.argmax(axis=2))
    np.testing.assert_allclose(out.log_p, table)
    expected = np.log(np.exp(table).mean(axis=2))
    np.testing.assert_allclose(out.log_marginal(), expected, rtol=1e-12)
    np.testing.assert_array_equal(out.nfe, np.full(table.shape[:2], 70.0))  # per image, summed over the classes
    with pytest.raises(ValueError, match="int labels"):
        rb.evaluate_grid({"bad": lambda x: np.zeros(len(x))}, evalset, grid, seed=0)  # float labels
    with pytest.raises(ValueError, match="non-finite"):
        rb.evaluate_grid({"bad": lambda x: np.full((len(x), 10), np.nan)}, evalset, grid, seed=0)


def test_scorer_classifier_uses_common_random_numbers_across_settings():
    """The SBGC's classifier (a scorer with one key) on a closed-form score: the same image gets the same log p(x | y) in every
    call (one key for all settings), and well-separated classes are told apart."""
    from sbgc.checks.analytic import GaussianMixtureClasses
    from sbgc.method.sde import SDE

    dim = 32 * 32 * 3
    means = np.stack([np.full(dim, -0.5), np.full(dim, 0.5)])  # dark vs bright images, model space
    mix = GaussianMixtureClasses.isotropic_gaussians(jnp.asarray(means), std=0.3, sde=SDE("subvp"))

    def score_fn(x, t, y):
        return mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)

    images = np.stack([np.full((32, 32, 3), 60, np.uint8), np.full((32, 32, 3), 200, np.uint8)])
    scorer = Ode(SolverSettings(rtol=1e-2, atol=1e-2), n_probes=1, chunk_size=4)
    classify = rb.scorer_classifier(score_fn, mix.sde, scorer, jax.random.key(0), n_classes=2)
    first = classify(images)
    np.testing.assert_array_equal(first.predict(), [0, 1])
    # another "setting": image 0 unchanged, image 1 altered. Image 0 must get the same noise and
    # probes, hence the same numbers; image 1's change must show.
    other = images.copy()
    other[1, :16] = 30
    second = classify(other)
    np.testing.assert_array_equal(second.log_p[0], first.log_p[0])
    assert not np.allclose(second.log_p[1], first.log_p[1])


# --- Table 2 ------------------------------------------------------------------------------------------
def test_table2_groups_pool_the_right_settings():
    grid = rb.settings(("gaussian_noise", "shot_noise", "fog", "contrast"), (1, 5))
    n = 20
    correct = np.zeros((len(grid), n), bool)
    correct[0, :18] = True  # clean: 18/20
    for i, (name, _) in enumerate(grid[1:], start=1):
        correct[i, : (15 if name in NOISE_CORRUPTIONS else 5)] = True
    row = rb.table2_row(grid_result(correct, grid), n_boot=200)
    assert (row["clean"].correct, row["clean"].total) == (18, 20)
    assert (row["all"].correct, row["all"].total, row["all"].n_settings) == (4 * 15 + 4 * 5, 8 * 20, 8)
    assert (row["all_wo_noise"].correct, row["all_wo_noise"].total) == (4 * 5, 4 * 20)
    assert row["all"].fraction == pytest.approx(np.mean([c.mean() for c in correct[1:]]))  # = mean accuracy
    assert (row["all"].pooled.lo, row["all"].pooled.hi) == pytest.approx(binomial_interval(80, 160))
    assert row["all"].as_dict()["lo"] == row["all"].pooled.lo and row["all"].as_dict()["accuracy"] == 0.5
    assert row["clean"].cell().startswith("90.0 [")
    noise_only = rb.table2_row(grid_result(correct[:5], grid[:5]))
    assert noise_only["all_wo_noise"] is None and noise_only["all"].n_settings == 4


def test_image_bootstrap_widens_the_interval_when_cases_share_images():
    rng = np.random.default_rng(0)
    n_settings, n_images = 30, 60
    clustered = np.repeat(rng.random(n_images)[None] < 0.5, n_settings, axis=0)  # an image is right everywhere or nowhere
    independent = rng.random((n_settings, n_images)) < 0.5
    for correct, wider in ((clustered, True), (independent, False)):
        acc = rb.accuracy_of(correct, n_boot=1000, seed=1)
        binomial_width, boot_width = acc.pooled.hi - acc.pooled.lo, acc.bootstrap.hi - acc.bootstrap.lo
        if wider:
            assert boot_width > 3 * binomial_width
        else:
            assert boot_width == pytest.approx(binomial_width, rel=0.35)
        assert acc.bootstrap.lo <= acc.fraction <= acc.bootstrap.hi and acc.bootstrap.n == n_images
    assert rb.image_bootstrap_interval(np.ones((5, 1), bool)) is None
    assert rb.accuracy_of(np.ones((5, 1), bool)).cell(bootstrap=True) == "100.0 (n/a)"


def test_paired_difference_counts_discordant_cases():
    grid = rb.settings(("fog",), (1, 2))
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]], bool)
    b = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]], bool)
    d = rb.paired_difference(grid_result(a, grid, "a"), grid_result(b, grid, "b"), "all", n_boot=200)
    assert (d["only_a"], d["only_b"], d["cases"]) == (3, 1, 8)
    assert d["difference"] == pytest.approx((6 - 4) / 8)
    assert d["lo"] <= d["difference"] <= d["hi"]
    assert rb.paired_difference(grid_result(a, grid, "a"), grid_result(b, grid, "b"), "clean")["cases"] == 4


def test_table_marks_paper_rows_and_gives_intervals_for_ours():
    grid = rb.settings(("fog",), (3,))
    ours = rb.TableRow("SBGC, here", "ours", "4 × 2", rb.table2_row(grid_result(np.ones((2, 4), bool), grid)))
    md = rb.table2_markdown(rb.paper_rows() + [ours])
    lines = md.splitlines()
    assert len(lines) == 2 + len(rb.PAPER_TABLE2) + 1
    paper_lines = [line for line in lines if "**paper**" in line]
    assert len(paper_lines) == 4 and "95.04 | 76.24 | 75.71" in md and "74.42 | 80.21" in md
    assert "| ours |" in lines[-1] and "100.0 [" in lines[-1]
    assert "**paper**" not in lines[-1]


# --- results and figures -------------------------------------------------------------------------------
def test_results_record_is_json_ready():
    grid = rb.settings(("gaussian_noise", "fog"), (2,))
    log_p = np.random.default_rng(0).normal(size=(len(grid), 3, 10)) - 5000.0
    rec = rb.results_record(grid_result(np.eye(3, dtype=bool), grid, log_p=log_p), n_boot=100)
    text = json.dumps(_jsonable(rec, "record"))
    back = json.loads(text)
    assert back["per_setting"]["settings"] == ["clean", "gaussian_noise 2", "fog 2"]
    assert back["table2"]["all"]["total"] == 6 and len(back["per_setting"]["mean_bpd"]) == 3


def test_fig4_has_fifteen_panels_and_marks_corruptions_not_evaluated():
    grid = rb.settings(("gaussian_noise", "fog"), (1, 3))
    rng = np.random.default_rng(0)
    log_p = rng.normal(size=(len(grid), 4, 10)) + 7000.0
    sbgc = grid_result(rng.random((len(grid), 4)) < 0.5, grid, "SBGC", log_p=log_p)
    base = grid_result(rng.random((len(grid), 4)) < 0.5, grid, "baseline")
    fig = rb.plot_fig4(sbgc, {"baseline": base})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [c.replace("_", " ") for c in CORRUPTIONS]
    empty = [ax.get_title() for ax in panels if any("not evaluated" in t.get_text() for t in ax.texts)]
    assert len(empty) == 13 and "fog" not in empty and "gaussian noise" not in empty
    fog = panels[CORRUPTIONS.index("fog")]
    x, y = fog.lines[0].get_data()  # the orange log-likelihood line: clean then severities 1 and 3
    np.testing.assert_array_equal(x, [0, 1, 3])
    rows = [0, grid.index(("fog", 1)), grid.index(("fog", 3))]
    np.testing.assert_allclose(y, sbgc.log_marginal().mean(axis=1)[rows])
    plt.close(fig)
    with pytest.raises(ValueError, match="no likelihoods"):
        rb.plot_fig4(base)


def test_corruption_grid_figure_shows_clean_and_all_settings():
    image = synthetic_images(1, 0)[0]
    full = corruption_grid(image, seed=0, index=0)
    fig = rb.plot_corruption_grid(image, full, title="x")
    assert len(fig.axes) == 6 * 15
    # the family's grid helper gives sbgc.data.corruptions.corruption_grid's rows (checked on two corruptions)
    two = dataclasses.replace(rb.CIFAR10_C, corruptions=("gaussian_noise", "fog"))
    np.testing.assert_array_equal(rb.corruption_grid_of(image, seed=0, index=0, family=two),
                                  full[[CORRUPTIONS.index("gaussian_noise"), CORRUPTIONS.index("fog")]])
    plt.close(fig)
    with pytest.raises(ValueError, match="corruption grid"):
        rb.plot_corruption_grid(image, np.zeros((15, 4, 32, 32, 3), np.uint8))


# --- benchmarks: CIFAR-10-C and MNIST-C -------------------------------------------------------------
def test_families_and_their_checks():
    assert rb.corruption_family("cifar10") is rb.CIFAR10_C and rb.corruption_family("exact_head") is rb.CIFAR10_C
    assert rb.corruption_family("mnist") is rb.MNIST_C and rb.corruption_family("MNIST-C") is rb.MNIST_C
    with pytest.raises(ValueError, match="no corruption benchmark"):
        rb.corruption_family("svhn")
    assert rb.MNIST_C.corruptions == MNIST_C_CORRUPTIONS and rb.MNIST_C.noise_corruptions == MNIST_C_NOISE
    assert rb.MNIST_C.severities == (1,) and rb.MNIST_C.dim == 784 and rb.CIFAR10_C.dim == 3072
    assert rb.MNIST_C.n_settings == 15 and rb.CIFAR10_C.n_settings == 75
    assert rb.check_severities((1,), rb.MNIST_C) == (1,)
    with pytest.raises(ValueError, match="severities must be .* in 1 \\(MNIST-C\\)"):
        rb.check_severities((2,), rb.MNIST_C)
    assert rb.check_corruptions(("zigzag", "shot_noise"), rb.MNIST_C) == ("shot_noise", "zigzag")
    with pytest.raises(ValueError, match="unknown: gaussian_noise"):
        rb.check_corruptions(("gaussian_noise",), rb.MNIST_C)  # not in MNIST-C's benchmark
    with pytest.raises(ValueError, match="unknown: stripe"):
        rb.check_corruptions(("stripe",), rb.CIFAR10_C)
    grid = rb.settings(MNIST_C_CORRUPTIONS, (1,), family=rb.MNIST_C)
    assert grid[0] == ("clean", 0) and len(grid) == 16 and grid[1] == ("shot_noise", 1)
    assert [rb.parse_setting_label(rb.setting_label(s)) for s in grid] == list(grid)
    with pytest.raises(ValueError, match="not a setting label"):
        rb.parse_setting_label("fog")
    mnist = load_mnist("test")
    with pytest.raises(ValueError, match="for CIFAR-10-C"):
        rb.select_images(mnist, 2, seed=0)  # the default family is CIFAR-10-C: 28×28×1 images do not fit
    with pytest.raises(ValueError, match="for MNIST-C"):
        rb.select_images(fake_split(4), 2, seed=0, family=rb.MNIST_C)


def test_noise_split_of_mnist_c():
    grid = rb.settings(MNIST_C_CORRUPTIONS, (1,), family=rb.MNIST_C)
    noise = rb.group_settings(grid, "noise", rb.MNIST_C)
    assert noise == (("shot_noise", 1), ("impulse_noise", 1))
    wo = rb.group_settings(grid, "all_wo_noise", rb.MNIST_C)
    assert len(wo) == 13 and not set(noise) & set(wo) and ("glass_blur", 1) in wo
    assert len(rb.group_settings(grid, "all", rb.MNIST_C)) == 15
    # the CIFAR-10-C noises include gaussian_noise; a result's own family decides its groups
    cgrid = rb.settings(("gaussian_noise", "shot_noise", "fog"), (1,))
    assert rb.group_settings(cgrid, "noise") == (("gaussian_noise", 1), ("shot_noise", 1))
    correct = np.ones((len(grid), 3), bool)
    correct[1:3] = False  # wrong on both noises only
    res = dataclasses.replace(grid_result(correct, grid), family="MNIST-C")
    row = rb.table2_row(res, n_boot=50)
    assert row["all"].total == 45 and row["all_wo_noise"].total == 39 and row["all_wo_noise"].correct == 39


def mnist_classifiers():
    """A fake generative classifier (log-likelihoods from the distance to per-class mean brightness)
    and a fake discriminative one, on MNIST-shaped uint8 images."""
    levels = np.linspace(10, 120, 10)

    class Likelihoods:
        def __init__(self, log_p):
            self.log_p, self.nfe = log_p, np.full(log_p.shape, 3)

    def generative(x):
        assert x.dtype == np.uint8 and x.shape[1:] == (28, 28, 1)
        mean = x.reshape(len(x), -1).mean(axis=1)
        return Likelihoods(-np.abs(mean[:, None] - levels[None]) - 500.0 - x.reshape(len(x), -1).std(axis=1)[:, None])

    def discriminative(x):
        return (x.reshape(len(x), -1).astype(np.int64).sum(axis=1) // 7) % 10

    return generative, discriminative


def test_mnist_c_end_to_end_on_real_mnist_images():
    evalset = rb.select_images(load_mnist("test"), 5, seed=0, family=rb.MNIST_C)
    assert evalset.images.shape == (5, 28, 28, 1) and evalset.family is rb.MNIST_C
    grid = rb.settings(MNIST_C_CORRUPTIONS, (1,), family=rb.MNIST_C)
    generative, discriminative = mnist_classifiers()
    seen = []
    out = rb.evaluate_grid({"SBGC": generative, "CNN": lambda x: (seen.append(x.copy()), discriminative(x))[1]},
                           evalset, grid, seed=3)
    sbgc, cnn = out["SBGC"], out["CNN"]
    assert sbgc.images_sha256 == cnn.images_sha256 and sbgc.family == cnn.family == "MNIST-C"
    for (name, _), x in zip(grid, seen):
        expected = evalset.images if name == "clean" else corrupt_mnist(evalset.images, name, seed=3,
                                                                         indices=evalset.indices)
        np.testing.assert_array_equal(x, expected)
    assert not np.array_equal(seen[grid.index(("fog", 1))], evalset.images)
    assert sbgc.log_p.shape == (16, 5, 10) and cnn.log_p is None
    np.testing.assert_allclose(sbgc.marginal_bpd(), -sbgc.log_marginal() / (784 * np.log(2)) + 8)
    with pytest.raises(ValueError, match="not settings of MNIST-C"):
        rb.evaluate_grid({"CNN": discriminative}, evalset, (("clean", 0), ("fog", 2)), seed=3)
    # Table 2 groups, the paired difference over the noises, the verdict, the record
    row = rb.table2_row(sbgc, n_boot=100)
    assert row["all"].n_settings == 15 and row["all_wo_noise"].n_settings == 13 and row["clean"].total == 5
    paired = {g: rb.paired_difference(sbgc, cnn, g, n_boot=100) for g in (*rb.GROUPS, "noise")}
    assert paired["noise"]["cases"] == 2 * 5 and paired["all_wo_noise"]["cases"] == 13 * 5
    verdict = rb.robustness_verdict(paired)
    assert verdict["verdict"] in ("overall", "noise_only", "overall_pooled_only", "non_noise_only", "less_robust",
                                  "not_shown") and "noises only" in verdict["text"]
    rec = json.loads(json.dumps(_jsonable(rb.results_record(sbgc, n_boot=100), "record")))
    assert rec["family"] == "MNIST-C" and rec["per_setting"]["settings"][1] == "shot_noise 1"
    assert [r["corruption"] for r in rec["likelihood_auroc"]] == [*MNIST_C_CORRUPTIONS, "all"]
    # the paper's rows beside MNIST-C say they are CIFAR-10-C numbers
    md = rb.table2_markdown(rb.paper_rows(rb.MNIST_C))
    assert md.count("**paper**") == 4 and "not MNIST-C" in md and "95.04" in md
    # figures: one row of clean + 15 grayscale images; Fig. 4 as two panels over clean + 15 corruptions
    image = evalset.images[0]
    grid_u8 = rb.mnist_c_grid(image, seed=3, index=int(evalset.indices[0]))
    assert grid_u8.shape == (15, 1, 28, 28, 1) and grid_u8.dtype == np.uint8
    np.testing.assert_array_equal(grid_u8[MNIST_C_CORRUPTIONS.index("fog"), 0], seen[grid.index(("fog", 1))][0])
    fig = rb.plot_corruption_grid(image, grid_u8, title="digit", family=rb.MNIST_C)
    assert len(fig.axes) == 16 and fig.axes[0].get_title() == "clean"
    assert fig.axes[1].images[0].get_cmap().name == "gray"
    plt.close(fig)
    with pytest.raises(ValueError, match="MNIST-C corruption grid"):
        rb.plot_corruption_grid(image, np.zeros((15, 5, 28, 28, 1), np.uint8), family=rb.MNIST_C)
    fig = rb.plot_fig4(sbgc.select(grid[:1] + grid[3:]), {"CNN": cnn})  # noises not evaluated: grey ticks, no points
    top, bottom = fig.axes[:2]
    labels = [t.get_text() for t in bottom.get_xticklabels()]
    assert labels[0] == "clean" and labels[1:] == [c.replace("_", " ") for c in MNIST_C_CORRUPTIONS]
    x, y = top.lines[0].get_data()
    np.testing.assert_array_equal(x, [0, *range(3, 16)])
    np.testing.assert_allclose(y, sbgc.log_marginal().mean(axis=1)[[0, *range(3, 16)]])
    x, y = bottom.lines[0].get_data()
    np.testing.assert_allclose(y, sbgc.accuracy()[[0, *range(3, 16)]])
    plt.close(fig)


def test_grid_result_round_trips_through_the_results_cache(tmp_path):
    evalset = rb.select_images(load_mnist("test"), 3, seed=1, family=rb.MNIST_C)
    grid = rb.settings(("shot_noise", "fog"), (1,), family=rb.MNIST_C)
    generative, discriminative = mnist_classifiers()
    out = rb.evaluate_grid({"SBGC": generative, "CNN": discriminative}, evalset, grid, seed=0)
    cache = ResultCache(tmp_path)
    for result in out.values():
        arrays = result.to_arrays()
        assert all(a.dtype != object for a in arrays.values())
        key = CacheKey(f"grid_{result.name}", 1, {"settings": [rb.setting_label(s) for s in grid]}, "0" * 64,
                       "mnist: test", evalset.indices)  # fmt: skip
        stored = cache.put(key, arrays, seconds=1.0, device="cpu", commit="x")
        assert stored.computed_now
        loaded = cache.load(key)
        assert loaded is not None and not loaded.computed_now
        back = rb.GridResult.from_arrays(loaded.arrays)
        for field in dataclasses.fields(rb.GridResult):
            a, b = getattr(result, field.name), getattr(back, field.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, field.name
        assert back.corruption_family is rb.MNIST_C
    assert rb.GridResult.from_arrays(out["CNN"].to_arrays()).log_p is None
    score = dataclasses.replace(out["SBGC"], log_p_is_density=False)  # a score that is no density stays one
    assert rb.GridResult.from_arrays(score.to_arrays()).log_p_is_density is False
    assert rb.GridResult.from_arrays(out["SBGC"].to_arrays()).log_p_is_density is True
    with pytest.raises(ValueError, match="not a stored GridResult"):
        rb.GridResult.from_arrays({"name": np.asarray("x")})
    # the key's settings: the chapter's knobs without the baseline's sample size, JSON-able
    from sbgc.book.profiles import PROFILES

    knobs = PROFILES["ci"].chapters["03_corruptions"]
    settings = rb.cache_settings(knobs, rb.MNIST_C, knobs.ode.scorer())
    assert "n_baseline_images" not in settings["knobs"] and settings["family"] == "MNIST-C"
    inputs = CacheKey("corruptions_sbgc", rb.CODE_VERSION, settings, "0" * 64, "mnist", evalset.indices).inputs()
    assert inputs["settings"]["scorer"]["solver"]["rtol"] == knobs.ode.rtol and "ode" not in inputs["settings"]["knobs"]
    assert "chunk_size" not in inputs["settings"]["scorer"]  # it does not change the numbers
    # a larger sample (SBGC or baseline) keeps the key; another scorer changes it
    bigger = dataclasses.replace(knobs, n_baseline_images=knobs.n_baseline_images + 1, n_images=knobs.n_images + 12)
    assert rb.cache_settings(bigger, rb.MNIST_C, knobs.ode.scorer()) == settings
    other = dataclasses.replace(knobs.ode, n_probes=knobs.ode.n_probes + 1).scorer()
    assert CacheKey("c", 3, rb.cache_settings(knobs, rb.MNIST_C, other), "0" * 64, "mnist", evalset.indices).digest() != \
        CacheKey("c", 3, settings, "0" * 64, "mnist", evalset.indices).digest()


@pytest.mark.slow
def test_the_sbgc_grid_in_cached_blocks_equals_the_whole_sample(tmp_path, monkeypatch):
    """The SBGC's grid in cached blocks (each image with the draws of its position in the sample) equals the grid
    of the whole sample: same predictions, likelihoods and image digests; a second run loads every block, and a
    larger sample reuses the smaller's whole blocks."""
    from types import SimpleNamespace

    from sbgc.checks.analytic import GaussianMixtureClasses
    from sbgc.method.sde import SDE

    dim = 28 * 28
    means = np.stack([np.full(dim, -0.6), np.full(dim, 0.2)])
    mix = GaussianMixtureClasses.isotropic_gaussians(jnp.asarray(means), std=0.4, sde=SDE("subvp"))

    def score_fn(x, t, y):
        return mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)

    model = SimpleNamespace(score_fn=score_fn, sde=mix.sde, sha256="0" * 64, config=SimpleNamespace(n_classes=2))
    knobs = chapter_knobs(n_images=5, n_baseline_images=7, corruptions=("shot_noise", "fog"), seed=2)
    sample = rb.chapter_sample(load_mnist("test"), knobs, rb.MNIST_C)
    scorer, key = Ode(SolverSettings(rtol=1e-2, atol=1e-2), n_probes=1, chunk_size=4), jax.random.key(0)
    monkeypatch.setattr(rb, "GRID_BLOCK", 2)
    cache = ResultCache(tmp_path)
    blocks, entries = rb.sbgc_grid(cache, sample, model, scorer, key)
    classify = rb.scorer_classifier(score_fn, mix.sde, scorer, key, n_classes=2)
    whole = rb.evaluate_grid({"SBGC": classify}, sample.sbgc, sample.grid, seed=2)["SBGC"]
    assert [e.computed_now for e in entries] == [True] * 3 and [len(e.arrays["labels"]) for e in entries] == [2, 2, 1]
    np.testing.assert_allclose(blocks.log_p, whole.log_p, rtol=1e-5)  # float32 chunking noise only
    np.testing.assert_array_equal(blocks.predictions, whole.predictions)
    np.testing.assert_array_equal(blocks.nfe, whole.nfe)
    np.testing.assert_array_equal(blocks.image_indices, sample.sbgc.indices)
    np.testing.assert_array_equal(blocks.labels, sample.sbgc.labels)
    assert blocks.images_sha256 == whole.images_sha256 and blocks.seconds.shape == (len(sample.grid),)
    assert blocks.settings == sample.grid and blocks.family == "MNIST-C"
    # without its position every block would reuse the first block's draws: other numbers
    same_draws = rb.evaluate_grid({"SBGC": classify}, sample.sbgc.part(slice(2, 4)), sample.grid, seed=2)["SBGC"]
    assert np.abs(same_draws.log_p - whole.log_p[:, 2:4]).max() > 1e-3
    # the digest is the images': a labels-only classifier on them matches, on other corruptions (seed) not
    zeros = lambda x: np.zeros(len(x), np.int64)  # noqa: E731
    assert rb.evaluate_grid({"c": zeros}, sample.sbgc, sample.grid, seed=2)["c"].images_sha256 == blocks.images_sha256
    assert rb.evaluate_grid({"c": zeros}, sample.sbgc, sample.grid, seed=3)["c"].images_sha256 != blocks.images_sha256
    # a second run loads every block; a larger sample reuses the two whole blocks and computes the rest
    again, loaded = rb.sbgc_grid(cache, sample, model, scorer, key)
    assert not any(e.computed_now for e in loaded)
    np.testing.assert_array_equal(again.log_p, blocks.log_p)
    bigger = rb.chapter_sample(load_mnist("test"), dataclasses.replace(knobs, n_images=7), rb.MNIST_C)
    grown, grown_entries = rb.sbgc_grid(cache, bigger, model, scorer, key)
    assert [e.computed_now for e in grown_entries] == [False, False, True, True]
    np.testing.assert_array_equal(grown.log_p[:, :4], blocks.log_p[:, :4])
    # another scorer is another computation
    _, other = rb.sbgc_grid(cache, sample, model, dataclasses.replace(scorer, n_probes=2), key)
    assert all(e.computed_now for e in other)


# --- does log p(x) detect the corruptions? -----------------------------------------------------------
def brute_force_auroc(pos, neg) -> float:
    pos, neg = np.ravel(pos), np.ravel(neg)
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_matches_a_pairwise_count():
    rng = np.random.default_rng(0)
    for n_pos, n_neg, ties in ((1, 1, False), (5, 3, False), (20, 37, True), (8, 8, True)):
        pos, neg = rng.normal(size=n_pos) + 0.5, rng.normal(size=n_neg)
        if ties:
            pos, neg = np.round(pos), np.round(neg)  # many ties
        assert rb.auroc(pos, neg) == pytest.approx(brute_force_auroc(pos, neg), abs=1e-12)
    assert rb.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0 and rb.auroc([0.0], [1.0]) == 0.0
    assert rb.auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        rb.auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        rb.auroc([np.nan], [1.0])


def test_likelihood_auroc_per_corruption():
    grid = rb.settings(("gaussian_noise", "defocus_blur"), (1, 2))
    n = 6
    lm = np.zeros((len(grid), n))
    lm[0] = np.arange(n)  # clean: 0..5
    lm[1:3] = np.arange(n) - 100.0  # noise: far less likely -> AUROC 1
    lm[3:5] = np.arange(n) + 100.0  # blur: more likely -> AUROC 0
    log_p = np.repeat(lm[:, :, None], 10, axis=2)  # log marginal of equal classes = lm
    res = grid_result(np.ones((len(grid), n), bool), grid, log_p=log_p)
    out = {r["corruption"]: r for r in rb.likelihood_auroc(res)}
    assert list(out) == ["gaussian_noise", "defocus_blur", "all"]
    assert out["gaussian_noise"]["auroc"] == 1.0 and out["defocus_blur"]["auroc"] == 0.0
    assert out["gaussian_noise"]["n_corrupted"] == 12 and out["gaussian_noise"]["fraction_less_likely"] == 1.0
    assert out["defocus_blur"]["mean_change_nats"] == pytest.approx(100.0)
    assert out["all"]["auroc"] == pytest.approx(0.5)
    assert out["all"]["auroc"] == pytest.approx(brute_force_auroc(lm[0], lm[1:]))


def test_likelihood_change_text_compares_blurs_with_the_paper():
    lowered = rb.likelihood_change_text({"glass_blur": (-1526.0, 0.19), "scale": (103.0, 0.58), "fog": (-3.0, 0.1)})
    assert lowered == ("Blurring lowers the likelihood here, unlike the paper's CIFAR-10-C finding: glass blur "
                       "(-1526 nats, accuracy 19 %). The corruptions that raise the mean likelihood: scale (+103 nats, "
                       "accuracy 58 %).")
    raised = rb.likelihood_change_text({"defocus_blur": (40.0, 0.5), "zoom_blur": (2.0, 0.4)})
    assert raised.startswith("Blurring raises the likelihood, as the paper found on CIFAR-10-C: defocus blur (+40")
    assert "raise the mean likelihood: defocus blur (+40 nats, accuracy 50 %), zoom blur" in raised
    mixed = rb.likelihood_change_text({"motion_blur": (5.0, 0.5), "glass_blur": (-5.0, 0.5)})
    assert mixed.startswith("Blurring moves the likelihood both ways")
    assert rb.likelihood_change_text({"fog": (-1.0, 0.3)}) == ("No blur corruption was evaluated. No corruption raises "
                                                               "the mean likelihood.")


# --- the verdict ------------------------------------------------------------------------------------
def test_robustness_verdict_reads_the_intervals():
    def d(diff, lo, hi):
        return {"difference": diff, "lo": lo, "hi": hi}

    zero = d(0.0, -0.05, 0.05)
    cases = {
        "overall": {"clean": zero, "all": d(0.1, 0.05, 0.15), "all_wo_noise": d(0.08, 0.02, 0.1), "noise": d(0.2, 0.1, 0.3)},
        "noise_only": {"clean": zero, "all": d(0.02, -0.01, 0.05), "all_wo_noise": d(-0.04, -0.07, -0.01),
                       "noise": d(0.2, 0.1, 0.3)},
        "overall_pooled_only": {"all": d(0.03, 0.01, 0.05), "all_wo_noise": d(0.02, -0.01, 0.05),
                                "noise": d(0.05, -0.01, 0.1)},
        "non_noise_only": {"all": zero, "all_wo_noise": d(0.03, 0.01, 0.05), "noise": zero},
        "less_robust": {"all": d(-0.1, -0.2, -0.05), "all_wo_noise": d(-0.1, -0.2, -0.05), "noise": zero},
        "not_shown": {"clean": zero, "all": zero, "all_wo_noise": zero, "noise": zero},
        "undetermined": {"all": d(0.1, None, None), "all_wo_noise": d(0.1, None, None), "noise": d(0.0, None, None)},
    }
    for key, paired in cases.items():
        out = rb.robustness_verdict(paired)
        assert out["verdict"] == key, (key, out)
        assert out["text"][0].isupper() and "w/o noises" in out["text"]
    assert "only on the noise corruptions" in rb.robustness_verdict(cases["noise_only"])["text"]
    assert "+10.0 points [+5.0, +15.0]" in rb.robustness_verdict(cases["overall"])["text"]
    clean_better = dict(cases["overall"], clean=d(0.1, 0.05, 0.15))
    assert "On clean images" in rb.robustness_verdict(clean_better)["text"]
    with pytest.raises(ValueError, match="over all corruptions"):
        rb.robustness_verdict({"clean": zero})


def test_images_for_half_width_scales_as_one_over_root_n():
    assert rb.images_for_half_width(0.055, 48, 0.02) == 363  # 48 · 2.75² = 363
    assert rb.images_for_half_width(0.02, 100, 0.02) == 100
    assert rb.images_for_half_width(0.0, 10, 0.02) == 0
    with pytest.raises(ValueError, match="target > 0"):
        rb.images_for_half_width(0.05, 10, 0.0)


# --- chapter 03, one call per section ---------------------------------------------------------------
def chapter_knobs(profile="ci", **changes):
    from sbgc.book.profiles import PROFILES

    return dataclasses.replace(PROFILES[profile].chapters["03_corruptions"], **changes)


def test_chapter_sample_is_a_prefix_and_keys_the_cache_as_the_shipped_entries():
    from sbgc.data.datasets import describe
    from sbgc.storage import repo_root

    split = load_mnist("test")
    knobs = chapter_knobs(n_images=3, n_baseline_images=7, corruptions=("fog", "shot_noise"))
    sample = rb.chapter_sample(split, knobs, rb.MNIST_C)
    assert sample.grid == (("clean", 0), ("shot_noise", 1), ("fog", 1))  # the benchmark's order
    np.testing.assert_array_equal(sample.sbgc.indices, sample.baseline.indices[:3])
    np.testing.assert_array_equal(sample.sbgc.images, sample.baseline.images[:3])
    assert sample.data_source == (f"{describe(split)}; 3 drawn at random for the SBGC, the first of 7 for the "
                                  "baseline; MNIST-C regenerated on the fly (seed 0)")  # fmt: skip
    assert sample.sample_sizes() == {"SBGC images": 3, "settings": 3, "SBGC cases": 9, "baseline images": 7,
                                     "baseline cases": 21, "probes": knobs.ode.n_probes}  # fmt: skip
    assert "clean + 2 of the 15 (corruption, severity) pairs of MNIST-C" in sample.settings_markdown()
    source = f"mnist: {split.source}"
    scorer = knobs.ode.scorer()
    whole = CacheKey("corruptions_sbgc", rb.CODE_VERSION, rb.cache_settings(knobs, rb.MNIST_C, scorer), "0" * 64,
                     source, sample.sbgc.indices)  # fmt: skip
    assert sample.sbgc_key("0" * 64, scorer).digest() == whole.digest()
    plain_knobs = {"corruptions": knobs.corruptions, "severities": knobs.severities, "seed": 0, "family": "MNIST-C"}
    base = CacheKey("corruptions_baseline", 1, plain_knobs, "1" * 64, source, sample.baseline.indices)
    assert sample.baseline_key("corruptions_baseline", "1" * 64).digest() == base.digest()
    with pytest.raises(ValueError, match="must be at least n_images"):
        rb.chapter_sample(split, chapter_knobs(n_images=8, n_baseline_images=7), rb.MNIST_C)
    # the mnist profile's keys name entries of the shipped results cache (what `--cache read-only` loads)
    from sbgc.train.baseline import load_classifier
    from sbgc.train.pretrained import load_model

    shipped = ResultCache(repo_root() / "results-cache", read_only=True)
    full = rb.chapter_sample(split, chapter_knobs("mnist"), rb.MNIST_C)
    first = block_key(full.sbgc_key(load_model("mnist").sha256, chapter_knobs("mnist").ode.scorer()), rb.GRID_BLOCK, 0)
    assert shipped.load(first) is not None
    for name in ("mnist", "mnist_cnn"):
        assert shipped.load(full.baseline_key("corruptions_baseline", load_classifier(name).sha256)) is not None


def fake_network(name: str, predict=None, n_params: int = 1000):
    """The attributes of a loaded network that chapter 03 reads."""
    from pathlib import Path
    from types import SimpleNamespace

    return SimpleNamespace(predict=predict, sha256=hashlib.sha256(name.encode()).hexdigest(),
                           config=SimpleNamespace(name=name), meta={"n_params": n_params},
                           path=Path(f"/models/{name}.msgpack"), describe=lambda: name)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FakeScorer:
    """A scorer of a fake generative classifier ``fn`` of uint8 images (its name keys the cache, ``fn`` not)."""

    name: str
    fn: Any = dataclasses.field(default=None, compare=False, metadata={"cache_key": False})
    gives_density: bool = True

    def scores(self, score_fn, sde, x, key, *, n_classes=10, first_image=0):
        return self.fn(x)

    def describe(self) -> str:
        return f"the fake scorer {self.name}"


def fake_chapter(tmp_path, *, plain_cnn: bool = True, scorer_fn=None, n_images: int = 3, **kw):
    generative, discriminative = mnist_classifiers()
    knobs = chapter_knobs(n_images=n_images, n_baseline_images=6, corruptions=("shot_noise", "fog", "glass_blur"),
                          n_ode_images=min(2, n_images))
    sample = rb.chapter_sample(load_mnist("test"), knobs, rb.MNIST_C)
    cnn = fake_network("CNN", lambda x: (discriminative(x) + 1) % 10) if plain_cnn else None
    models = rb.ChapterModels(fake_network("score", n_params=350_000), fake_network("WRN-10-2", discriminative), cnn,
                              ("mnist", "mnist", "mnist_cnn" if plain_cnn else "none"))  # fmt: skip
    scorer = kw.pop("scorer", None) or FakeScorer("fake", scorer_fn or generative)
    results = rb.evaluate_chapter(ResultCache(tmp_path), sample, models, scorer=scorer, **kw)
    return sample, models, results


def test_evaluate_chapter_checks_the_images_and_caches_every_grid(tmp_path):
    sample, models, results = fake_chapter(tmp_path)
    assert results.sbgc.log_p.shape == (4, 3, 10) and results.base_all.n_images == results.cnn_all.n_images == 6
    assert results.base_same.images_sha256 == results.cnn_same.images_sha256 == results.sbgc.images_sha256
    assert [e.computed_now for e in results.entries + results.baseline_entries] == [True] * 3
    direct = rb.evaluate_grid({"baseline": models.baseline.predict}, sample.baseline, sample.grid, seed=0)["baseline"]
    np.testing.assert_array_equal(results.base_all.predictions, direct.predictions)
    np.testing.assert_array_equal(results.base_same.predictions, direct.predictions[:, :3])
    # a second run loads every grid (the SBGC's classifier is never called) and gets the same numbers
    def never(x):
        raise AssertionError("the SBGC's block should come from the cache")

    _, _, again = fake_chapter(tmp_path, scorer_fn=never)
    assert not any(e.computed_now for e in again.entries + again.baseline_entries)
    np.testing.assert_array_equal(again.sbgc.log_p, results.sbgc.log_p)
    assert again.numbers()["table2_ours"] == results.numbers()["table2_ours"]
    # the texts of the sections
    assert results.cost_markdown().startswith("SBGC: 3 image(s) × 4 settings × 10 classes")
    assert "Baselines: the same 12 cases, then 6 images × 4 settings" in results.cost_markdown()
    table = results.table2_markdown()
    assert table.count("**paper**") == 4
    assert "| SBGC, this project (`mnist`: 0.35M parameters) | ours | 3 × 4 settings |" in table
    assert "| CNN, this project (`mnist_cnn`) | ours | the same 3 × 4 |" in table and rb.MNIST_C_PUBLISHED_NOTE in table
    boot = results.table2_markdown(bootstrap=True)
    assert "**paper**" not in boot and len(boot.splitlines()) == 2 + 5
    assert list(results.paired) == ["WRN-10-2", "CNN"] and set(results.paired["CNN"]) == {*rb.GROUPS, "noise"}
    comparison = results.comparison_markdown()
    assert "**Verdict (MNIST-C, this run).** Against the WRN-10-2: " in comparison and "Against the CNN: " in comparison
    assert "**Precision.**" in comparison  # three images: an image-bootstrap interval exists
    assert list(results.fig4_baselines()) == ["WRN-10-2, the SBGC's 3 image(s)", "WRN-10-2, 6 images", "CNN, 6 images"]
    numbers = json.loads(json.dumps(_jsonable(results.numbers(), "numbers")))
    assert numbers["robustness_verdict"] == numbers["robustness_verdict_each_baseline"]["WRN-10-2"]
    assert numbers["plain_cnn"]["architecture"] == "CNN" and len(numbers["baseline_cache"]) == 2
    assert numbers["settings"] == ["clean", "shot_noise 1", "glass_blur 1", "fog 1"]  # the benchmark's order
    assert numbers["batchnorm_diagnosis"] is None


def test_evaluate_chapter_without_a_plain_cnn_and_with_a_stale_cache(tmp_path):
    _, models, results = fake_chapter(tmp_path / "a", plain_cnn=False)
    assert results.cnn_same is None and list(results.against) == ["WRN-10-2"] and len(results.rows_ours) == 3
    assert "Baseline: the same" in results.cost_markdown() and "plain CNN" not in results.cost_markdown()
    assert results.numbers()["plain_cnn"] is None and results.numbers()["plain_cnn_same_images"] is None
    assert "Plain CNN" not in models.markdown()
    assert models.markdown().startswith("Score model: score, 350,000 parameters.")
    # an SBGC block cached from other images (the corruption code changed): the baseline's digest differs
    sample, _, _ = fake_chapter(tmp_path / "b")
    cache = ResultCache(tmp_path / "b")
    key = block_key(sample.sbgc_key(models.sbgc.sha256, FakeScorer("fake")), rb.GRID_BLOCK, 0)
    stale = dict(cache.load(key).arrays, image_sha256=np.asarray(["0" * 64] * len(sample.sbgc)))
    cache.put(key, stale, seconds=1.0, device="cpu", commit="x")
    with pytest.raises(AssertionError, match="saw other images"):
        fake_chapter(tmp_path / "b")


def test_precision_and_paired_tables():
    def accuracy(lo, hi):
        est = rb.accuracy_of(np.ones((2, 48), bool), n_boot=10)
        return dataclasses.replace(est, bootstrap=dataclasses.replace(est.bootstrap, lo=lo, hi=hi))

    wide = rb.precision_markdown(accuracy(0.25, 0.375), 48, 48 * 100.0, 16)  # half-width 6.25 points
    assert "±6.25 points on 48 images: ±2 points would take about 469 images at this spread" in wide  # 48 · 3.125²
    assert "≈ 13.0 hours. The cached blocks took 100 s per image (all 16 settings" in wide
    narrow = rb.precision_markdown(accuracy(0.5, 0.53125), 48, 1.0, 16)  # half-width 1.5625 points
    assert "within the ±2-point target (at this spread, 30 images would just reach it)" in narrow
    assert rb.precision_markdown(None, 1, 1.0, 16) == ""
    assert rb.precision_markdown(dataclasses.replace(accuracy(0.7, 0.8), bootstrap=None), 1, 1.0, 16) == ""
    paired = {"WRN": {"clean": {"difference": 0.0, "lo": None, "hi": None, "only_a": 0, "only_b": 0, "cases": 1},
                      "noise": None},
              "CNN": {"all": {"difference": -0.4, "lo": -0.5, "hi": -0.25, "only_a": 1, "only_b": 7, "cases": 15}}}
    lines = rb.paired_markdown(paired).splitlines()
    assert len(lines) == 2 + 2  # the group not evaluated has no row
    assert lines[2] == "| WRN | clean | +0.0 | n/a | 0 | 0 | 1 |"
    assert lines[3] == "| CNN | all corruptions | -40.0 | [-50.0, -25.0] | 1 | 7 | 15 |"


def test_likelihood_change_reads_the_strongest_severity_against_clean():
    grid = rb.settings(("gaussian_noise", "defocus_blur"), (1, 3))
    level = np.array([-1000.0, -1050.0, -1100.0, -990.0, -960.0])  # clean, noise 1, 3, blur 1, 3
    log_p = np.repeat(np.repeat(level[:, None, None], 2, axis=1), 10, axis=2)  # every class alike: log p(x) = level
    correct = np.array([[1, 1], [1, 0], [0, 0], [1, 1], [1, 0]], bool)
    text = rb.likelihood_change_markdown(grid_result(correct, grid, log_p=log_p))
    assert "| gaussian_noise | 3 | -100 | +0.047 | 0 |" in text  # 100 / (3072 ln 2) bits/dim
    assert "| defocus_blur | 3 | +40 | -0.019 | 50 |" in text and "| 1 |" not in text
    assert "Clean: mean log p(x) = -1000 nats (8.470 bits/dim), accuracy 100 %, over 2 image(s)." in text
    assert "**Fig. 4 on CIFAR-10-C (this run).** Blurring raises the likelihood, as the paper found" in text


def test_detection_text_names_detected_and_inverted_corruptions():
    def row(name, auroc):
        return {"corruption": name, "auroc": auroc, "n_clean": 1, "n_corrupted": 1, "mean_change_nats": -3.0,
                "fraction_less_likely": 1.0}

    aurocs = [row("shot_noise", 0.95), row("glass_blur", 0.2), row("fog", 0.7), row("all", 0.62)]
    text = rb.detection_text(aurocs, "MNIST-C", 3)
    assert text == ("**Detection (MNIST-C, this run).** Pooled over every corrupted setting, log p(x) separates clean "
                    "from corrupted images with AUROC 0.62. It detects 1 of 3 corruptions well (AUROC ≥ 0.9: shot "
                    "noise); 1 makes the images *more* likely than clean ones (AUROC < 0.5: glass blur). With fewer "
                    "than ten images these are counts over a handful of pairs.")
    none = rb.detection_text([row("fog", 0.7), row("all", 0.7)], "MNIST-C", 10)
    assert "detects 0 of 1 corruptions well (AUROC ≥ 0.9); none makes the images more likely" in none
    assert "handful" not in none
    table = rb.auroc_markdown(aurocs).splitlines()
    assert table[2] == "| shot noise | 0.95 | 1 / 1 | -3 | 100 % |" and len(table) == 2 + 4


def test_a_classifier_without_a_density_is_checked_against_the_exact_ode_on_a_subset(tmp_path):
    """With a denoising-score classifier (no density), the chapter runs the ODE on the first n_ode_images of the
    same images: the decisions are compared case by case, and the likelihood sections read the ODE's grid."""
    generative, _ = mnist_classifiers()

    def shifted(x):  # another classifier on the same images: its decisions differ from the "ODE's" on some cases
        out = generative(x)
        out.log_p = np.roll(out.log_p, 1, axis=1) if x.reshape(len(x), -1).mean() > 40 else out.log_p
        return out

    score = FakeScorer("score", shifted, gives_density=False)
    sample, _, results = fake_chapter(tmp_path, n_images=4, scorer=score, ode_scorer=FakeScorer("ode", generative))
    assert results.sbgc.n_images == 4 and results.ode.n_images == 2 and not results.sbgc.log_p_is_density
    assert results.likelihood is results.ode and len(results.ode_entries) == 1
    a = results.agreement()
    direct = results.sbgc.predictions[:, :2] == results.ode.predictions
    assert (a["cases"], a["agree"], a["n_images"]) == (direct.size, int(direct.sum()), 2) and 0 < a["agree"] < a["cases"]
    assert "the two agree on" in results.agreement_markdown() and "the fake scorer ode" in results.cost_markdown()
    numbers = results.numbers()
    assert numbers["agreement_with_ode"]["agree"] == a["agree"] and numbers["ode_subset"]["n_images"] == 2
    assert "mean_log_p_nats" not in numbers["sbgc"]["per_setting"] and numbers["sbgc"]["likelihood_auroc"] is None
    assert numbers["likelihood_auroc"] == rb.likelihood_auroc(results.ode)
    with pytest.raises(ValueError, match="no density"):
        results.sbgc.log_marginal()
    plt.close(results.plot_fig4())
    # a classifier that is a density needs no subset
    _, _, plain = fake_chapter(tmp_path / "plain", n_images=4)
    assert plain.ode is None and plain.likelihood is plain.sbgc and plain.agreement() is None
    assert plain.agreement_markdown() == ""
    with pytest.raises(ValueError, match="n_ode_images must be None or an int in 1"):
        chapter_knobs(n_images=2, n_ode_images=3)

