"""CIFAR-10-C evaluation: image samples, the settings grid, same-image evaluation, Table 2, Fig. 4."""

import json

import matplotlib

matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest

from sbgc.book.provenance import _jsonable
from sbgc.data.cifar10 import ImageSet
from sbgc.data.corruptions import CORRUPTIONS, NOISE_CORRUPTIONS, corrupt, corruption_grid, synthetic_images
from sbgc.experiments import corruption_robustness as rb
from sbgc.method.likelihood import SolverSettings
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
    assert out.nfe.shape == table.shape
    with pytest.raises(ValueError, match="int labels"):
        rb.evaluate_grid({"bad": lambda x: np.zeros(len(x))}, evalset, grid, seed=0)  # float labels
    with pytest.raises(ValueError, match="non-finite"):
        rb.evaluate_grid({"bad": lambda x: np.full((len(x), 10), np.nan)}, evalset, grid, seed=0)


def test_sbgc_classifier_uses_common_random_numbers_across_settings():
    """The SBGC closure on a closed-form score: the same image gets the same log p(x | y) in every
    call (one key for all settings), and well-separated classes are told apart."""
    from sbgc.checks.analytic import GaussianMixtureClasses
    from sbgc.method.sde import SDE

    dim = 32 * 32 * 3
    means = np.stack([np.full(dim, -0.5), np.full(dim, 0.5)])  # dark vs bright images, model space
    mix = GaussianMixtureClasses.isotropic_gaussians(jnp.asarray(means), std=0.3, sde=SDE("subvp"))

    def score_fn(x, t, y):
        return mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)

    images = np.stack([np.full((32, 32, 3), 60, np.uint8), np.full((32, 32, 3), 200, np.uint8)])
    classify = rb.sbgc_classifier(score_fn, mix.sde, jax.random.key(0), n_classes=2, n_probes=1,
                                  solver=SolverSettings(rtol=1e-2, atol=1e-2), chunk_size=4)  # fmt: skip
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
    assert (row["all"].lo, row["all"].hi) == pytest.approx(binomial_interval(80, 160))
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
        binomial_width, boot_width = acc.hi - acc.lo, acc.boot_hi - acc.boot_lo
        if wider:
            assert boot_width > 3 * binomial_width
        else:
            assert boot_width == pytest.approx(binomial_width, rel=0.35)
        assert acc.boot_lo <= acc.fraction <= acc.boot_hi
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
    fig = rb.plot_corruption_grid(image, corruption_grid(image, seed=0, index=0), title="x")
    assert len(fig.axes) == 6 * 15
    plt.close(fig)
    with pytest.raises(ValueError, match="corruption grid"):
        rb.plot_corruption_grid(image, np.zeros((15, 4, 32, 32, 3), np.uint8))
