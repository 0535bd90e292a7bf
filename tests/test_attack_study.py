"""Chapter 04 as one study (sbgc.experiments.attack_study): the verdict and table helpers, the gradient
check's wording, and the whole study on a tiny score net (every section, then again from its cache)."""

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.experiments import adversarial as attacks
from sbgc.experiments import attack_study, pgd
from sbgc.method.sde import SDE
from tiny_nets import init_tiny, tiny_score
from test_pgd import linear, Linear, SHAPE  # noqa: F401 (the fixture)


def test_the_verdict_and_the_table_rows_follow_the_outcomes(linear):
    clf, x, labels = linear
    model = pgd.baseline_attack_model(clf, len(x))
    strong = pgd.attack_images(model, x, labels, pgd.AttackSettings("l2", 2.0, steps=10, seed=0), line_search=4)
    weak = pgd.attack_images(model, x, labels, pgd.AttackSettings("linf", 1e-4, steps=1, seed=0))
    wrong = pgd.attack_images(model, x, (labels + 1) % 10, pgd.AttackSettings("linf", 1e-4, steps=1, seed=0))
    assert strong.broken.all() and 0 < weak.robust.sum() and not wrong.clean_correct.any()
    assert attack_study.robustness_verdict([strong, strong]) == "all broken"
    assert attack_study.robustness_verdict([strong, weak]) == "some robust"
    assert attack_study.robustness_verdict([wrong]) == "no image correct"
    with pytest.raises(ValueError, match="at least one"):
        attack_study.robustness_verdict([])
    outcomes = {("base", "l2"): strong, ("base", "linf"): wrong}
    rows = attack_study.attack_rows(outcomes, {"base": "Linear"})
    assert [r[:4] for r in rows] == [("Linear", "l2", "12/12", "12"), ("Linear", "linf", "0/12", "0")]
    assert rows[0][4] == ", ".join(f"{loss} {n}" for loss, n in strong.summary()["broken_by"].items())
    assert rows[0][7] == f"{strong.gradients.sum()}" and rows[1][6] == "–"
    sizes = attack_study.shortest_rows(outcomes, {"base": "Linear"})
    assert sizes == [("Linear", "l2", "12/12", f"{np.median(strong.shortest):.3g}",
                      f"{strong.shortest.min():.3g} – {strong.shortest.max():.3g}"), ("Linear", "linf", "0/0", "–", "–")]


def test_the_gradient_check_reads_the_fixed_step_and_the_attacked_function_apart():
    """The smooth (fixed-step) function decides whether the backward pass is right; the attacked
    (adaptive) one may disagree without that, and the text says which happened."""
    exact = np.array([1.0, -2.0])
    good = attacks.FiniteDifferenceCheck(exact, exact + 1e-4, np.array([1e-4, 5e-5]), 1e-2, 10.0, 0.0)
    bad = attacks.FiniteDifferenceCheck(exact, exact + 1.0, np.array([0.5, 0.5]), 1e-2, 10.0, 0.0)
    solvers = {"attacked function": "dopri5", "fixed steps, same network": "heun"}
    both = attack_study.gradient_check_markdown({("attacked function", "margin"): good}, {"attacked function": "heun"})
    assert both.count("| attacked function | heun | margin |") == 2
    assert "right. The attacked function agrees as well." in both and "**1.00e-05**" in both
    adaptive = attack_study.gradient_check_markdown({("attacked function", "margin"): bad,
                                            ("fixed steps, same network", "margin"): good}, solvers)  # fmt: skip
    assert "pass through this network is right" in adaptive and "as expected of an adaptive" in adaptive
    wrong = attack_study.gradient_check_markdown({("attacked function", "margin"): bad,
                                         ("fixed steps, same network", "margin"): bad}, solvers)  # fmt: skip
    assert "**With fixed steps the reverse-mode gradient disagrees" in wrong and "is right" not in wrong


@pytest.mark.slow
def test_the_chapter_study_computes_every_section_and_renders_again_from_its_cache(tmp_path):
    """Chapter 04's AdversarialStudy on a tiny score net and two linear baselines: every section computes
    through the results cache into a writable record, and a study on the read-only cache finds every
    entry (the keys do not depend on the run) and gives the same numbers."""
    import json

    import matplotlib.pyplot as plt

    from sbgc.book.profiles import chapter_params
    from sbgc.book.provenance import collect_provenance, write_results
    from sbgc.cache import ResultCache
    from sbgc.data.files import ImageSet

    ckpt = tmp_path / "tiny.msgpack"
    ckpt.write_bytes(b"a stand-in checkpoint")
    config = types.SimpleNamespace(image_size=SHAPE[0], channels=SHAPE[2], name="Linear")
    loaded = dict(path=str(ckpt), meta={}, config=config, describe=lambda: "a stand-in")
    model = types.SimpleNamespace(score_fn=functools.partial(tiny_score, init_tiny(jax.random.key(0), 3, 8, 10)),
                                  sde=SDE(), sha256="0" * 64, **loaded)  # fmt: skip
    baselines = {who: Linear(jax.random.key(seed)) for who, seed in (("base", 1), ("cnn", 2))}
    for who, clf in baselines.items():
        vars(clf).update(loaded, sha256=str(len(who)) * 64)
    images = np.random.default_rng(0).integers(0, 256, (6, *SHAPE), dtype=np.uint8)
    labels = np.asarray(jnp.argmax(baselines["base"].logits(jnp.asarray(images / 255.0, jnp.float32)), axis=1), np.int32)
    split = ImageSet(images, labels, "toy", np.arange(6), "test")
    params = chapter_params("04_adversarial", "ci", {"n_images": 2, "n_baseline_images": 4, "bound_times": 2,
                                                     "judge_rtol": 0.1, "line_search": 2, "n_ode_images": 1})  # fmt: skip
    numbers = []
    for mode in ({}, {"read_only": True}):
        study = attack_study.AdversarialStudy.of(params, ResultCache(tmp_path / "cache", **mode), model, baselines,
                                                 split, [str(c) for c in range(10)], collect_provenance)  # fmt: skip
        np.testing.assert_array_equal(study.idx, study.idx_base[:2])
        np.testing.assert_array_equal(np.asarray(study.x), np.asarray(study.x_base)[:2])  # per-image noise
        checks = study.gradient_check()
        found = study.attack()
        bound = study.attack_bound(found)
        judge, shift = study.tight_judge(found), study.manifold_shift(found)
        record = study.numbers(checks, found, bound, judge, shift)
        path = write_results(record, study.prov, directory=tmp_path / f"results{len(numbers)}")
        numbers.append(json.loads(path.read_text())["numbers"])
        assert list(found.outcomes) == [(w, n) for n in ("linf", "l2") for w in ("sbgc", "base", "cnn")]
        assert found.results["base", "l2"].labels.shape == (4,) and found.outcomes["sbgc", "l2"].labels.shape == (1,)
        assert found.outcomes["base", "l2"].labels.shape == bound.outcomes["bound", "l2"].labels.shape == (2,)  # all images
        assert shift.shift["l2"].delta_bpd.shape == (1,) and "1 image(s); judge" in judge.markdown  # the ODE's image
        assert list(bound.outcomes) == [("bound", "linf"), ("bound", "l2")] and set(judge.accuracies) == {"linf", "l2"}
        table = study.table3_markdown(found, bound)
        assert "**SBGC, uniform-in-t denoising score (K = 2)**" in table and table.count("Linear baseline, same images") == 2
        fig, sizes = study.size_curves(found, bound)
        plt.close(fig)
        plt.close(study.plot_pairs(found))
        assert sizes.count("| SBGC, uniform-in-t denoising score |") == 2 and "2 bisection steps" in sizes
        summary = study.summary_markdown(found, bound, shift)
        assert summary.startswith("**This run (mnist, 2 images, the exact-ODE SBGC on the first 1).**") and "**The bound classifier** (uniform-in-t denoising score)" in summary
    assert numbers[0] == numbers[1]
    # without the bound classifier and the judge (knobs outside the attacks' keys): the rest loads, read-only
    knobs = dataclasses.replace(params.knobs, bound_times=None, judge_rtol=None)
    study = attack_study.AdversarialStudy.of(dataclasses.replace(params, knobs=knobs),
                                             ResultCache(tmp_path / "cache", read_only=True), model, baselines, split,
                                             [str(c) for c in range(10)], collect_provenance)  # fmt: skip
    found = study.attack()
    bound, judge = study.attack_bound(found), study.tight_judge(found)
    assert bound.markdown == "Not run at this profile (`bound_times` is None)." and not bound.outcomes
    assert judge.markdown == "Not run at this profile (`judge_rtol` is None)." and judge.accuracies == {}
    shift = study.manifold_shift(found)
    assert "classifier is not attacked at this profile" in study.summary_markdown(found, bound, shift)
    assert "denoising score" not in study.table3_markdown(found, bound)
    record = study.numbers(study.gradient_check(), found, bound, judge, shift)
    assert record["bound_classifier"] is None and record["attacks"].keys() == numbers[0]["attacks"].keys() - {
        "bound_linf", "bound_l2"}
    names = [k.rsplit("_", 1)[0] for k in numbers[0]["cache"]]
    assert names == ["fd_check"] + ["pgd_sbgc"] * 2 + ["baseline"] * 8 + ["judge"] * 2 + ["bound"] * 3
    assert numbers[0]["bound_classifier"]["n_times"] == 2 and numbers[0]["tight_judge"]["l2"]["clean_accuracy"] >= 0
