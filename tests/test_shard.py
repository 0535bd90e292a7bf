"""Several processes filling one results cache (sbgc.shard, ResultCache's waiting, the runner's --shard):
every missing entry computed once, by its owner; every process ends with the same results."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sbgc.cache import CacheError, CacheKey, ResultCache
from sbgc.shard import Shard, current_shard, obtaining_block, own_blocks_first, owner_of_entry, parse_shard


def test_shards_parse_and_name_their_owners(monkeypatch):
    assert parse_shard("1/3") == Shard(1, 3) and parse_shard(None) == Shard(0, 1) and str(Shard(2, 5)) == "2/5"
    for bad, message in (("3/3", "0 <= I < N"), ("-1/2", "0 <= I < N"), ("half", "a shard is I/N"), ("1/0", "0 <= I")):
        with pytest.raises(ValueError, match=message):
            parse_shard(bad)
    monkeypatch.setenv("SBGC_SHARD", "2/4")
    assert current_shard() == Shard(2, 4)
    monkeypatch.setenv("SBGC_SHARD", "4/4")
    with pytest.raises(ValueError, match=r"\$SBGC_SHARD"):
        current_shard()
    s = Shard(1, 3)
    assert [s.owner_of_block(b) for b in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert s.owner_of_key("ff") == 255 % 3
    assert owner_of_entry(s, "ff") == 0  # outside a block loop: the key's owner
    with obtaining_block(2):
        assert owner_of_entry(s, "ff") == 2  # inside: the block's


def test_a_shard_obtains_its_own_blocks_first_and_returns_them_in_order():
    seen = []

    def obtain(b):
        seen.append((b, owner_of_entry(Shard(1, 3), "0")))
        return b * 10

    assert own_blocks_first(7, obtain, Shard(1, 3)) == [0, 10, 20, 30, 40, 50, 60]
    assert [b for b, _ in seen] == [1, 4, 0, 2, 3, 5, 6]  # own (1, 4) first, then the others' in order
    assert all(owner == b % 3 for b, owner in seen)
    seen.clear()
    assert own_blocks_first(3, obtain, Shard()) == [0, 10, 20] and [b for b, _ in seen] == [0, 1, 2]


def _key(name, i=0):
    return CacheKey(name, 1, {"i": i}, "0" * 64, "fixture", np.arange(3))


def test_waiting_for_another_shards_entry_gives_up_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SBGC_SHARD_WAIT", "0.3")
    cache = ResultCache(tmp_path, shard=Shard(1, 2))
    with obtaining_block(0), pytest.raises(CacheError, match=r"computed by shard 0/2.*within 0 s.*SBGC_SHARD_WAIT"):
        cache.get(_key("block"), lambda: pytest.fail("a foreign block must not be computed here"))
    with obtaining_block(1):  # its own block: computed
        assert cache.get(_key("block", 1), lambda: {"x": np.ones(2)}).computed_now
    other = ResultCache(tmp_path, shard=Shard(0, 2))
    with obtaining_block(0):
        other.get(_key("block"), lambda: {"x": np.zeros(2)})
    with obtaining_block(0):  # now there: loaded, not computed
        got = cache.get(_key("block"), lambda: pytest.fail("must be loaded"))
    assert not got.computed_now and got.arrays["x"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="recomputing into a shared cache"):
        ResultCache(tmp_path, recompute=True, shard=Shard(0, 2))
    monkeypatch.setenv("SBGC_SHARD_WAIT", "soon")
    with obtaining_block(0), pytest.raises(ValueError, match="SBGC_SHARD_WAIT must be a number"):
        cache.get(_key("block", 2), dict)


_FILL_SCRIPT = textwrap.dedent(r"""
    import json, os, sys, time
    import numpy as np
    from sbgc.cache import CacheKey, ResultCache, cached_blocks
    me = os.environ["SBGC_SHARD"]
    cache = ResultCache(sys.argv[1])

    def compute(b, idx):
        time.sleep(0.3)
        return {"positions": idx, "by": np.full(len(idx), me)}

    _, entries = cached_blocks(cache, CacheKey("fill_block", 1, {}, "0" * 64, "fixture", np.arange(23)), 4, compute)
    blocks = [e.arrays for e in entries]
    whole = cache.get(CacheKey("fill_whole", 1, {}, "0" * 64, "fixture", np.arange(3)), lambda: {"by": np.asarray(me)})
    print(json.dumps({"blocks": [[b["positions"].tolist(), str(b["by"][0])] for b in blocks],
                      "whole": str(whole.arrays["by"]), "whole_key": whole.record["key"]}))
""")


def test_two_processes_fill_one_cache_each_entry_computed_once(tmp_path):
    """Two shards run the same loop (6 blocks) and one entry outside it against one directory: each
    block is computed by shard b mod 2, the other entry by its key's owner, and both processes end
    with the same, complete results."""
    env = lambda i: dict(os.environ, SBGC_SHARD=f"{i}/2", SBGC_SHARD_WAIT="120")  # noqa: E731
    procs = [subprocess.Popen([sys.executable, "-c", _FILL_SCRIPT, str(tmp_path)], env=env(i), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]  # fmt: skip
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    blocks = outs[0]["blocks"]
    assert [positions for positions, _ in blocks] == [list(range(s, min(s + 4, 23))) for s in range(0, 23, 4)]
    assert [by for _, by in blocks] == [f"{b % 2}/2" for b in range(6)]
    assert outs[0]["whole"] == f"{Shard(0, 2).owner_of_key(outs[0]['whole_key'])}/2"
    assert len(list(tmp_path.glob("fill_block-*.json"))) == 6


_SHARDED_CHAPTER = '''\
# %% tags=["parameters"]
profile = "ci"
overrides = {}
cache = "use"

# %%
import os
import numpy as np
from sbgc.cache import CacheKey, cached_blocks, chapter_cache
from sbgc.book.profiles import chapter_params
from sbgc.book.provenance import collect_provenance, write_results
P = chapter_params("01_method", profile, overrides)
C = chapter_cache(cache)
by, _ = cached_blocks(C, CacheKey("fixture_block", 1, {}, "0" * 64, "fixture", np.arange(9)), 3,
                      lambda b, idx: {"by": np.full(len(idx), os.environ["SBGC_SHARD"])})
write_results({"by": [str(b) for b in by["by"][::3]]}, collect_provenance(P, data_source="fixture"))
'''

_RUN_SHARD = r"""
import sys
from pathlib import Path
from sbgc.book import runner
from sbgc.shard import parse_shard
root, shard = Path(sys.argv[1]), parse_shard(sys.argv[2])
dirs = runner.shard_dirs(shard, root / "out")
runner.run("ci", only=["01_method"], sources=root / "src", shard=shard, **dirs)
"""


@pytest.mark.slow
def test_the_runner_runs_a_chapter_as_two_shards_into_one_cache(tmp_path):
    """``run(shard=...)`` hands the shard to the kernels; two shards of one chapter share the cache
    (each block computed once, by its owner), shard 0 writes the book's notebook and results, shard 1
    its own folder, and both results agree. A sharded recompute is refused."""
    from sbgc.book import runner

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "01_method.py").write_text(_SHARDED_CHAPTER)
    env = dict(os.environ, SBGC_SHARD_WAIT="300")
    env.pop("SBGC_SHARD", None)
    procs = [subprocess.Popen([sys.executable, "-c", _RUN_SHARD, str(tmp_path), f"{i}/2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]  # fmt: skip
    for p in procs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
    out = tmp_path / "out"
    records = [json.loads((d / "results" / "01_method.json").read_text()) for d in (out, out / "shard-1-of-2")]
    assert records[0]["numbers"] == records[1]["numbers"] == {"by": ["0/2", "1/2", "0/2"]}
    assert (out / "notebooks" / "01_method.ipynb").is_file()
    assert (out / "shard-1-of-2" / "notebooks" / "01_method.ipynb").is_file()
    assert len(list((out / "cache").glob("fixture_block-*.json"))) == 3
    assert runner.shard_dirs(Shard(0, 1), None) == {}
    assert runner.shard_dirs(Shard(2, 3), None)["book"] == runner.REPO / "build" / "shard-2-of-3"
    with pytest.raises(ValueError, match="cannot be sharded"):
        runner.run("ci", only=["01_method"], cache="recompute", shard=Shard(1, 2), sources=tmp_path / "src")
