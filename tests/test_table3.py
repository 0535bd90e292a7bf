"""Table 3 helpers: paper rows marked, intervals, same-image check, figure."""

import matplotlib

matplotlib.use("Agg")

import dataclasses

import numpy as np
import pytest

from sbgc.experiments import table3
from sbgc.experiments.adversarial import PGDResult


def _result(norm, labels, clean_pred, adv_pred, eps=0.5):
    b = len(labels)
    x = np.zeros((b, 32, 32, 3), np.float32)
    return PGDResult(norm=norm, loss="cross_entropy", epsilon=eps, steps=3, rel_stepsize=0.25, stepsize=0.25 * eps, random_start=True, seed=0,
                     kind="baseline", labels=np.asarray(labels), clean_logits=np.zeros((b, 10)),
                     clean_pred=np.asarray(clean_pred), adversarial=x + 0.01, adv_logits=np.zeros((b, 10)),
                     adv_pred=np.asarray(adv_pred), success=np.asarray(adv_pred) != np.asarray(labels),
                     linf=np.full(b, 0.01), l2=np.full(b, 0.55), seconds=1.0, step_seconds=(0.3,) * 3)


def test_table3_rows_and_intervals():
    linf = _result("linf", [0, 1, 2, 3], [0, 1, 2, 0], [0, 5, 5, 5], eps=8 / 255)
    l2 = _result("l2", [0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 5, 5])
    md = table3.table3_markdown([("WRN", linf, l2)]).splitlines()
    assert sum("| paper (N = 216) | CIFAR-10 | ε∞ = 8/255, ε₂ = 0.5 |" in line for line in md) == len(table3.PAPER_TABLE3) == 3
    ours = [line for line in md if line.startswith("| **WRN**")][0]
    assert "| ours | CIFAR-10 | ε∞ = 8/255, ε₂ = 0.5 |" in ours
    assert "3/4 = 75.0 %" in ours and "1/4 = 25.0 %" in ours and "2/4 = 50.0 %" in ours
    assert table3.accuracy_cell(np.array([True, False])).startswith("1/2 = 50.0 % [1.3, 98.7]")
    with pytest.raises(ValueError, match="different images"):
        table3.table3_markdown([("WRN", linf, _result("l2", [9, 9, 9, 9], [0] * 4, [0] * 4))])
    with pytest.raises(ValueError, match="expected an L∞ and an L2"):
        table3.table3_markdown([("WRN", l2, linf)])
    settings = table3.settings_markdown([("WRN", l2)])
    assert "| WRN | l2 | cross_entropy | 0.5 | 3 | 0.125 | True | 0.01 | 0.55 | 1.0 |" in settings
    fig = table3.plot_pairs(np.zeros((4, 32, 32, 3)), [("a", linf), ("b", l2)], [str(i) for i in range(10)], n_show=2)
    assert len(fig.axes) == 2 * 5


def test_table3_on_mnist_keeps_the_papers_cifar10_rows_apart_and_draws_grey_images():
    shape = (4, 28, 28, 1)
    linf = dataclasses.replace(_result("linf", [0, 1, 2, 3], [0, 1, 2, 3], [0, 5, 2, 5], eps=0.3),
                               adversarial=np.full(shape, 0.2, np.float32))
    l2 = dataclasses.replace(_result("l2", [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 5], eps=1.5),
                             adversarial=np.full(shape, 0.2, np.float32))
    md = table3.table3_markdown([("SBGC", linf, l2)], dataset="mnist").splitlines()
    paper = [line for line in md if "| paper (N = 216) |" in line]
    assert len(paper) == 3 and all("| CIFAR-10 | ε∞ = 8/255, ε₂ = 0.5 |" in line for line in paper)
    ours = [line for line in md if line.startswith("| **SBGC**")][0]
    assert "| ours | MNIST | ε∞ = 0.3, ε₂ = 1.5 |" in ours and "2/4 = 50.0 %" in ours and "3/4 = 75.0 %" in ours
    assert table3.published_rows("mnist")[: len(table3.PAPER_TABLE3)] == table3.PAPER_TABLE3
    assert table3.PUBLISHED_MNIST and all(r.dataset == "MNIST" and r.source.startswith("published")
                                          and (r.eps_linf, r.eps_l2) == (0.3, 1.5) for r in table3.PUBLISHED_MNIST)
    published = [line for line in md if "| published" in line]
    assert len(published) == len(table3.PUBLISHED_MNIST) and all("| MNIST | ε∞ = 0.3, ε₂ = 1.5 |" in line for line in published)
    assert any(line.endswith("| – | 88.00 | – |") for line in published)  # a source without clean and L2 numbers
    points = table3.published_points("mnist")
    assert len(points) == sum((r.linf is not None) + (r.l2 is not None) for r in table3.PUBLISHED_MNIST)
    assert all(0 <= acc <= 1 and eps in (0.3, 1.5) for _, _, eps, acc in points) and table3.published_points("cifar10") == []
    with pytest.raises(ValueError, match="dataset must be"):
        table3.published_rows("svhn")
    assert [table3.format_epsilon(e) for e in (8 / 255, 0.5, 0.3, 1.5)] == ["8/255", "0.5", "0.3", "1.5"]
    fig = table3.plot_pairs(np.zeros(shape), [("a", linf), ("b", l2)], [str(i) for i in range(10)], n_show=1)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 5 and all(im.get_array().ndim == 2 and im.get_cmap().name == "gray" for im in images)
