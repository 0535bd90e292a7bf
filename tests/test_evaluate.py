"""sbgc.experiments.evaluate: the image selection is nested, results carry provenance, long runs resume."""

import dataclasses
import json

import numpy as np
import pytest

from sbgc.experiments import evaluate as E
from sbgc.train.pretrained import load_model


def test_image_selection_is_nested_and_fixed():
    a, b = E.image_selection(10_000, 250, 0), E.image_selection(10_000, 1000, 0)
    np.testing.assert_array_equal(a, b[:250])
    assert len(set(b.tolist())) == 1000
    assert not np.array_equal(a, E.image_selection(10_000, 250, 1))
    with pytest.raises(ValueError, match="asked for 20 images, the split has 10"):
        E.image_selection(10, 20, 0)


def test_bound_evaluation_reports_and_resumes(tmp_path, monkeypatch):
    from sbgc.cache import ResultCache

    model = load_model("ci")
    s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=4, batch=2)
    out, cache = tmp_path / "r.json", ResultCache(tmp_path / "cache")
    res = E.evaluate(model, s, out=out, cache=cache, progress=False)
    saved = json.loads(out.read_text())
    assert saved["model"]["sha256"] == model.sha256 and saved["data"]["source"] == "exact-head"
    assert saved["correct"] == round(saved["accuracy"] * 4) and 0 <= saved["accuracy_interval95"][0] <= saved["accuracy"]
    assert saved["nfe_per_image"] == 10 * (2 + 1)  # K + 1 passes per class
    assert saved["bpd_marginal"]["lo"] < saved["bpd_marginal"]["mean"] < saved["bpd_marginal"]["hi"]
    # a rerun with the same settings computes nothing: every block comes from the cache
    monkeypatch.setattr(E, "_class_scores", lambda *a, **k: pytest.fail("recomputed a finished block"))
    again = E.evaluate(model, s, cache=cache, progress=False)
    assert again["accuracy"] == res["accuracy"] and again["bpd_marginal"] == res["bpd_marginal"]
    # other settings do not reuse it
    with pytest.raises(pytest.fail.Exception):
        E.evaluate(model, E.EvalSettings(E.cli_scorer("bound", times=3), data="exact_head", n_images=4, batch=2),
                   cache=cache, progress=False)


def test_a_larger_evaluation_reuses_the_blocks_of_a_smaller_and_blocks_do_not_change_the_numbers(tmp_path, monkeypatch):
    from sbgc.cache import ResultCache
    from sbgc.data.datasets import evaluation_split

    model, split = load_model("ci"), evaluation_split("exact_head")
    s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=4, batch=1)
    cache = ResultCache(tmp_path / "blocks")
    small = E.cached_score_table(cache, model, split, s, block=2)
    assert [e.computed_now for e in small.entries] == [True, True]
    computed = []
    real = E._class_scores
    monkeypatch.setattr(E, "_class_scores", lambda m, images, *a: computed.append(len(images)) or real(m, images, *a))
    large = E.cached_score_table(cache, model, split, dataclasses.replace(s, n_images=6), block=2)
    assert computed == [1, 1] and [e.computed_now for e in large.entries] == [False, False, True]  # only images 5, 6
    np.testing.assert_array_equal(large.indices, E.image_selection(len(split), 6, 0))
    np.testing.assert_array_equal(large.log_p[:4], small.log_p)
    # batch b's key is fold_in(seed, b) over the whole sample: one block of 6 gives the same numbers
    whole = E.cached_score_table(ResultCache(tmp_path / "one"), model, split, dataclasses.replace(s, n_images=6), block=6)
    np.testing.assert_allclose(whole.log_p, large.log_p, rtol=1e-6)
    with pytest.raises(ValueError, match="whole batches of 4"):
        E.cached_score_table(cache, model, split, dataclasses.replace(s, batch=4), block=6)


def test_the_command_line_keeps_its_blocks_in_the_cache_it_is_given(tmp_path, capsys):
    argv = ["--model", "ci", "--data", "exact_head", "--images", "3", "--times", "2", "--batch", "1",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r.json"), "--no-progress"]
    assert E.main(argv) == 0
    assert len(list((tmp_path / "c").glob("scores_bound-*.json"))) == 1  # 3 images: one block of 100
    assert json.loads((tmp_path / "r.json").read_text())["data"]["n_images"] == 3
    assert '"accuracy"' in capsys.readouterr().out


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="method must be one of"):
        E.cli_scorer("sampling")
    with pytest.raises(TypeError, match="scorer must be a ClassScorer"):
        E.EvalSettings(scorer="ode")
    with pytest.raises(ValueError, match="data must be one of"):
        E.EvalSettings(data="svhn")
    with pytest.raises(ValueError, match=r"mnist images are \(28, 28, 1\), the model expects \(32, 32, 3\)"):
        E.evaluate(load_model("ci"), E.EvalSettings(data="mnist", n_images=2), progress=False)


def test_a_profiles_ode_group_is_passed_to_the_scorer_unchanged():
    from sbgc.book.profiles import Ode

    knobs = Ode(n_probes=3, rtol=1e-3, atol=1e-4, eps=1e-4, solver="heun", n_steps=8, chunk_size=7)
    scorer = knobs.scorer()
    assert scorer.solver == knobs.solver_settings() and scorer.n_probes == 3 and scorer.chunk_size == 7
    s = E.EvalSettings(scorer, "mnist", 20, 0, E.BOOK_BATCH)
    assert s.method == "ode" and E.EvalSettings.from_plain(json.loads(json.dumps(E.plain(s)))) == \
        dataclasses.replace(s, scorer=dataclasses.replace(scorer, chunk_size=None))  # chunk_size: not a setting
    assert "heun, 8 fixed steps" in s.describe() and "3 rademacher" in s.describe()


def test_the_command_line_scorers():
    from sbgc.method.scorers import Bound, Ode, Pruned

    assert isinstance(E.cli_scorer("ode", probes=4), Ode) and E.cli_scorer("ode", probes=4).n_probes == 4
    uniform = E.cli_scorer("bound", times=16, weighting="uniform")
    assert isinstance(uniform, Bound) and uniform.settings.weighting == "uniform" and uniform.settings.n_times == 16
    pruned = E.cli_scorer("pruned", times=8, keep=3, second_times=40)
    assert isinstance(pruned, Pruned) and pruned.keep == 3 and pruned.second.settings.n_times == 40
    assert "combined" in pruned.describe()


def test_a_uniform_weighted_evaluation_reports_no_bits_per_dim(tmp_path, monkeypatch):
    monkeypatch.setenv("SBGC_SHARD", "1/2")  # its own temporary cache computes every block, whatever the shard
    model = load_model("ci")
    s = E.EvalSettings(E.cli_scorer("bound", times=2, weighting="uniform"), data="exact_head", n_images=2, batch=2)
    res = E.evaluate(model, s, progress=False)
    assert res["bpd_marginal"] is None and res["bpd_true_class"] is None and res["nfe_per_image"] == 10 * 2
    assert "not a bound" in res["method"] and 0 <= res["accuracy"] <= 1


_SHARDED_TABLE = r"""
import json, sys
from sbgc.cache import ResultCache
from sbgc.data.datasets import evaluation_split
from sbgc.experiments import evaluate as E
from sbgc.train.pretrained import load_model
s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=5, batch=1)
t = E.cached_score_table(ResultCache(sys.argv[1]), load_model("ci"), evaluation_split("exact_head"), s, block=1)
print(json.dumps({"log_p": t.log_p.tolist(), "computed_now": [bool(e.computed_now) for e in t.entries]}))
"""


@pytest.mark.slow
def test_a_sharded_cache_splits_the_score_table_between_the_shards(tmp_path):
    """Two shards of one cache share Table 1's score table: each computes its own blocks (b mod 2) and loads the
    other's, and both end with the table of one unsharded process."""
    import os
    import subprocess
    import sys

    from sbgc.cache import ResultCache
    from sbgc.data.datasets import evaluation_split

    s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=5, batch=1)
    whole = E.cached_score_table(ResultCache(tmp_path / "alone"), load_model("ci"), evaluation_split("exact_head"), s)
    env = lambda i: dict(os.environ, SBGC_SHARD=f"{i}/2", SBGC_SHARD_WAIT="300")  # noqa: E731
    procs = [subprocess.Popen([sys.executable, "-c", _SHARDED_TABLE, str(tmp_path / "shared")], env=env(i),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]  # fmt: skip
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    for out in outs:
        np.testing.assert_allclose(out["log_p"], whole.log_p, rtol=1e-6)
    assert outs[0]["computed_now"] == [True, False, True, False, True]
    assert outs[1]["computed_now"] == [False, True, False, True, False]
