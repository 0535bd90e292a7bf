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
    model = load_model("ci")
    s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=4, batch=2)
    out = tmp_path / "r.json"
    res = E.evaluate(model, s, out=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["model"]["sha256"] == model.sha256 and saved["data"]["source"] == "exact-head"
    assert saved["correct"] == round(saved["accuracy"] * 4) and 0 <= saved["accuracy_interval95"][0] <= saved["accuracy"]
    assert saved["nfe_per_image"] == 10 * (2 + 1)  # K + 1 passes per class
    assert saved["bpd_marginal"]["lo"] < saved["bpd_marginal"]["mean"] < saved["bpd_marginal"]["hi"]
    # a rerun with the same settings computes nothing: every batch comes from the partial file
    monkeypatch.setattr(E, "_class_scores", lambda *a, **k: pytest.fail("recomputed a finished batch"))
    again = E.evaluate(model, s, out=out, progress=False)
    assert again["accuracy"] == res["accuracy"] and again["bpd_marginal"] == res["bpd_marginal"]
    # other settings do not reuse it
    with pytest.raises(pytest.fail.Exception):
        E.evaluate(model, E.EvalSettings(E.cli_scorer("bound", times=3), data="exact_head", n_images=4, batch=2),
                   out=out, progress=False)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="method must be one of"):
        E.cli_scorer("sampling")
    with pytest.raises(TypeError, match="scorer must be a ClassScorer"):
        E.EvalSettings(scorer="ode")
    with pytest.raises(ValueError, match="data must be one of"):
        E.EvalSettings(data="svhn")
    with pytest.raises(ValueError, match=r"mnist images are \(28, 28, 1\), the model expects \(32, 32, 3\)"):
        E.evaluate(load_model("ci"), E.EvalSettings(data="mnist", n_images=2), progress=False)


def test_score_table_through_the_cache_and_an_imported_evaluation(tmp_path, monkeypatch):
    """The cached table equals the evaluation's; an imported finished evaluation becomes the same
    cache entry only if its first batch recomputes to the same numbers."""
    from sbgc.cache import ResultCache
    from sbgc.data.datasets import evaluation_split

    model = load_model("ci")
    s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=4, batch=2)
    out = tmp_path / "eval.json"
    E.evaluate(model, s, out=out, progress=False)
    split = evaluation_split("exact_head")
    cache = ResultCache(tmp_path / "cache")
    entry, worst = E.import_evaluation(cache, model, out)
    assert worst == 0.0 and "imported from eval.json" in entry.provenance_line()
    with np.load(str(out) + ".partial.npz") as z:
        np.testing.assert_array_equal(entry.arrays["log_p"], z["log_p"])
    monkeypatch.setattr(E, "_class_scores", lambda *a, **k: pytest.fail("the imported entry must be loaded"))
    loaded = E.cached_score_table(cache, model, split, s)
    assert not loaded.computed_now
    np.testing.assert_array_equal(loaded.arrays["indices"], E.image_selection(len(split), 4, 0))
    monkeypatch.undo()
    # a partial file whose numbers this code does not reproduce is refused
    with np.load(str(out) + ".partial.npz") as z:
        fields = {k: z[k] for k in z.files}
    fields["log_p"] = fields["log_p"] + 1.0
    np.savez(str(out) + ".partial.npz", **fields)
    with pytest.raises(ValueError, match="not the same computation"):
        E.import_evaluation(ResultCache(tmp_path / "other"), model, out)


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


def test_a_uniform_weighted_evaluation_reports_no_bits_per_dim(tmp_path):
    model = load_model("ci")
    s = E.EvalSettings(E.cli_scorer("bound", times=2, weighting="uniform"), data="exact_head", n_images=2, batch=2)
    res = E.evaluate(model, s, progress=False)
    assert res["bpd_marginal"] is None and res["bpd_true_class"] is None and res["nfe_per_image"] == 10 * 2
    assert "not a bound" in res["method"] and 0 <= res["accuracy"] <= 1


@pytest.mark.slow
def test_shards_of_an_evaluation_merge_into_the_unsharded_result(tmp_path, monkeypatch):
    """A job array: each shard computes its batches (b mod N = I) into its own file; merged, they are
    the unsharded evaluation's numbers (each batch's random numbers depend on b alone)."""
    model = load_model("ci")
    s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=5, batch=2)  # batches 0, 1, 2
    whole = E.evaluate(model, s, out=tmp_path / "whole.json", progress=False)
    out = tmp_path / "sharded.json"
    for i in (1, 0):
        rec = E.evaluate(model, s, out=out, shard=(i, 2), progress=False)
        assert rec["images_done"] == {0: 3, 1: 2}[i] and (tmp_path / f"sharded.json.shard-{i}-of-2.partial.npz").exists()
    assert not out.exists()  # no summary from a shard
    assert E._shard_count(out) == 2
    E.merge_shards(model, s, out, 2)
    monkeypatch.setattr(E, "_class_scores", lambda *a, **k: pytest.fail("recomputed a merged batch"))
    merged = E.evaluate(model, s, out=out, progress=False)
    for k in ("accuracy", "bpd_marginal", "bpd_true_class", "nfe_per_image"):
        assert merged[k] == whole[k], k
    # a shard of another computation is refused, naming its file
    other = E.EvalSettings(E.cli_scorer("bound", times=3), data="exact_head", n_images=5, batch=2)
    with pytest.raises(ValueError, match="sharded.json.partial.npz holds another computation"):
        E.merge_shards(model, other, out, 2)
    with pytest.raises(ValueError, match="0 <= I < N"):
        E.parse_shard("2/2")
    with pytest.raises(ValueError, match="a shard is I/N"):
        E.parse_shard("half")


_SHARDED_TABLE = r"""
import json, sys
from pathlib import Path
import numpy as np
from sbgc.cache import ResultCache
from sbgc.data.datasets import evaluation_split
from sbgc.experiments import evaluate as E
from sbgc.train.pretrained import load_model
s = E.EvalSettings(E.cli_scorer("bound", times=2), data="exact_head", n_images=5, batch=1)
entry = E.cached_score_table(ResultCache(sys.argv[1]), load_model("ci"), evaluation_split("exact_head"), s)
mine = sorted(Path(sys.argv[1], "partial").glob("*.shard-*-of-2.partial.npz"))
own = {p.name.split(".shard-")[1][:1]: (~np.isnan(np.load(p)["log_p"]).any(axis=1)).tolist() for p in mine}
print(json.dumps({"log_p": entry.arrays["log_p"].tolist(), "computed_now": bool(entry.computed_now), "rows": own}))
"""


@pytest.mark.slow
def test_a_sharded_cache_splits_the_score_table_between_the_shards(tmp_path):
    """Two shards of one cache share Table 1's score table: each computes its batches (b mod 2),
    the entry's owner joins them, and both end with the table of one unsharded process."""
    import json
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
        np.testing.assert_allclose(out["log_p"], whole.arrays["log_p"], rtol=1e-6)
    assert sorted(o["computed_now"] for o in outs) == [False, True]  # one shard wrote the entry, one loaded it
    assert outs[0]["rows"] == {"0": [True, False, True, False, True], "1": [False, True, False, True, False]}
    import shutil

    shard0 = next((tmp_path / "shared" / "partial").glob("*.shard-0-of-2.partial.npz"))
    shutil.copy(shard0, E.shard_partial(tmp_path / "solo", (0, 2)))  # shard 1's file never comes
    with pytest.raises(TimeoutError, match=r"shard\(s\) 1/2 did not finish their batches"):
        E.wait_for_shards(load_model("ci"), s, tmp_path / "solo", 2, timeout_s=0)
    with pytest.raises(ValueError, match="another computation"):
        E.wait_for_shards(load_model("ci"), dataclasses.replace(s, scorer=E.cli_scorer("bound", times=3)), tmp_path / "solo", 2, timeout_s=0)
