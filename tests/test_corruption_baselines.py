"""sbgc.experiments.corruption_baselines: the baselines per corruption, and the BatchNorm collapse diagnosis."""

import dataclasses

import numpy as np
import pytest

from sbgc.experiments import corruption_baselines as bs
from sbgc.experiments import corruption_robustness as rb

GRID = (("clean", 0), ("brightness", 1), ("fog", 1))


def _grid_result(name: str, correct: np.ndarray, sha: str = "abc") -> rb.GridResult:
    s, n = correct.shape
    labels = np.arange(n) % 10
    predictions = np.where(correct, labels[None, :], (labels[None, :] + 1) % 10)
    return rb.GridResult(name=name, settings=GRID[:s], labels=labels, predictions=predictions, log_p=None, nfe=None,
                         seconds=np.zeros(s), images_sha256=sha, image_indices=np.arange(n), family=rb.MNIST_C.name)  # fmt: skip


def test_per_corruption_table_has_exact_intervals_and_refuses_other_images():
    a = _grid_result("WRN", np.array([[True] * 9 + [False], [False] * 10, [True] * 5 + [False] * 5]))
    b = _grid_result("CNN", np.ones((3, 10), bool))
    table = bs.per_corruption_markdown({"WRN": a, "CNN": b})
    lines = table.splitlines()
    assert "WRN: accuracy %" in lines[0] and "CNN: accuracy %" in lines[0]
    assert "| clean | 90.0 [55.5, 99.7] | 100.0 [69.2, 100.0] |" in table  # Clopper–Pearson, 9/10 and 10/10
    assert "| brightness 1 | 0.0 [0.0, 30.8] |" in table
    assert "| **mean over the corruptions** | 25.0 [8.7, 49.1] | 100.0 [83.2, 100.0] |" in table  # 5/20, clean excluded
    with pytest.raises(ValueError, match="other images"):
        bs.per_corruption_markdown({"WRN": a, "CNN": dataclasses.replace(b, images_sha256="other")})


def _diagnosis(acc, batch, share, shift=(0.1, 3.0, 2.0)):
    return {"accuracy": np.array(acc), "accuracy_batch_statistics": np.array(batch), "modal_share": np.array(share),
            "mean_pixel": np.array([0.13, 0.6, 0.5]), "first_norm_shift": np.array(shift)}  # fmt: skip


def test_collapse_needs_low_accuracy_and_one_dominant_class():
    d = _diagnosis([0.99, 0.10, 0.15], [0.99, 0.98, 0.30], [0.11, 0.95, 0.30])
    assert bs.collapsed(d).tolist() == [False, True, False]  # fog: low accuracy but predictions spread out


def test_collapse_text_says_what_the_batch_statistics_restore_and_what_the_plain_cnn_reads():
    other = _grid_result("plain CNN", np.array([[True] * 10, [False] * 8 + [True] * 2, [True] * 10]))
    d = _diagnosis([0.99, 0.10, 0.11], [0.99, 0.98, 0.40], [0.11, 0.95, 0.90])
    text = bs.collapse_text(d, GRID, "WRN-10-2", other)
    assert text.startswith("WRN-10-2 collapses on 2 settings: brightness 1 (10 %, 95 % of its predictions one class)")
    assert "brightness 1 10 → 98 %, fog 1 11 → 40 %" in text
    assert "mean goes from 10.5 to 69.0 %" in text
    assert "On brightness 1 the collapse **is the BatchNorm statistics**" in text and "moves by 3.00" in text
    assert "On fog 1 batch statistics recover part of it only" in text
    assert "The plain CNN, which has no BatchNorm, reads fog 1 100 % on the same images" in text
    assert "The plain CNN fails on brightness 1 20 % too" in text
    assert "plain CNN" not in bs.collapse_text(d, GRID, "WRN-10-2")
    none = bs.collapse_text(_diagnosis([0.99, 0.9, 0.8], [0.99, 0.9, 0.8], [0.11, 0.12, 0.2]), GRID, "WRN-10-2")
    assert none.startswith("WRN-10-2 collapses on no setting")


def test_shipped_wrn_collapses_under_brightness_and_batch_statistics_restore_it():
    """The measurement chapter 03 states, on 200 official MNIST test images: the shipped WRN-10-2 puts most
    brightness images in one class, and normalising with the batch's own statistics brings the accuracy back;
    the plain CNN has no statistics to diagnose."""
    from sbgc.data.mnist import load_mnist
    from sbgc.train.baseline import load_classifier

    clf = load_classifier("mnist")
    assert bs.has_batchnorm(clf)
    evalset = rb.select_images(load_mnist("test"), 200, 0, family=rb.MNIST_C)
    d = bs.batchnorm_diagnosis(clf, evalset, GRID[:2], 0, batch=100)
    assert d["accuracy"][0] > 0.95 and d["accuracy_batch_statistics"][0] > 0.95  # clean: either statistics work
    assert bs.collapsed(d).tolist() == [False, True], d
    assert d["accuracy_batch_statistics"][1] > 0.9, d
    assert d["mean_pixel"][1] > 2 * d["mean_pixel"][0] and d["first_norm_shift"][1] > 5 * d["first_norm_shift"][0], d
    plain = dataclasses.replace(clf, variables={"params": clf.variables["params"], "batch_stats": {}})
    assert not bs.has_batchnorm(plain)
    with pytest.raises(ValueError, match="no BatchNorm statistics"):
        bs.batchnorm_diagnosis(plain, evalset, GRID[:1], 0)


def test_chapter_diagnosis_is_cached_and_tells_its_story(tmp_path):
    """The chapter's diagnosis of the shipped WRN-10-2 through a results cache: computed once, then loaded; the
    same arrays as :func:`batchnorm_diagnosis`; its table, text and record; None for a network without BatchNorm."""
    from types import SimpleNamespace

    from sbgc.book.profiles import PROFILES
    from sbgc.cache import ResultCache
    from sbgc.data.mnist import load_mnist
    from sbgc.train.baseline import load_classifier

    clf = load_classifier("mnist")
    knobs = dataclasses.replace(PROFILES["ci"].chapters["03_corruptions"], n_images=1, n_baseline_images=60,
                                corruptions=("brightness",))  # fmt: skip
    sample = rb.chapter_sample(load_mnist("test"), knobs, rb.MNIST_C)
    other = _grid_result("plain CNN", np.ones((2, 60), bool))
    results = SimpleNamespace(models=SimpleNamespace(baseline=clf), sample=sample, cnn_all=other)
    cache = ResultCache(tmp_path)
    first = bs.cached_collapse_diagnosis(cache, results)
    again = bs.cached_collapse_diagnosis(cache, results)
    assert first.entry.computed_now and not again.entry.computed_now
    direct = bs.batchnorm_diagnosis(clf, sample.baseline, sample.grid, 0)
    for k, v in direct.items():
        np.testing.assert_allclose(again.arrays[k], v, rtol=1e-6)
    md = again.markdown()
    assert "| brightness 1 **(collapse)** |" in md and "plain CNN accuracy % (no BatchNorm)" in md
    assert "**Why WRN-10-2 collapses (MNIST-C, 60 images, this run).** WRN-10-2 collapses on 1 setting" in md
    record = again.record()
    assert record["settings"] == ["clean", "brightness 1"] and record["collapsed"] == [False, True]
    assert record["text"] == again.text() and len(record["accuracy"]) == 2
    plain = dataclasses.replace(clf, variables={"params": clf.variables["params"], "batch_stats": {}})
    assert bs.cached_collapse_diagnosis(cache, SimpleNamespace(models=SimpleNamespace(baseline=plain), sample=sample,
                                                               cnn_all=None)) is None
