"""The results cache: keyed by everything that determines a result, verified on load, never computing when read-only."""

import dataclasses
import json

import numpy as np
import pytest

from sbgc.cache import CacheError, CacheKey, ResultCache


@dataclasses.dataclass(frozen=True)
class Knobs:
    n_probes: int = 1
    rtols: tuple[float, ...] = (1e-2, 1e-3)


def key(**changes):
    base = dict(name="table1_ode", code_version=1, settings=Knobs(), checkpoint_sha256="a" * 64,
                data_source="mnist-official test", image_indices=np.arange(5))
    return CacheKey(**{**base, **changes})


def test_computes_once_then_loads_verified(tmp_path):
    cache, calls = ResultCache(tmp_path), []

    def compute():
        calls.append(1)
        return {"log_p": np.arange(10.0).reshape(5, 2), "labels": np.arange(5)}

    first = cache.get(key(), compute, device="1x cpu", commit="c0ffee12")
    second = cache.get(key(), compute)
    assert calls == [1] and first.computed_now and not second.computed_now
    np.testing.assert_array_equal(second.arrays["log_p"], first.arrays["log_p"])
    assert second.record["device"] == "1x cpu" and "/table1_ode-" in second.provenance_line()
    assert second.provenance_line().startswith("loaded from")
    record = json.loads(cache.paths(key())[1].read_text())
    assert record["inputs"]["settings"] == {"n_probes": 1, "rtols": [0.01, 0.001]}  # the key, written out
    cache.get(key(), compute, recompute=True)
    assert calls == [1, 1]


@pytest.mark.parametrize("change", [dict(code_version=2), dict(settings=Knobs(n_probes=2)), dict(checkpoint_sha256="b" * 64),
                                    dict(data_source="mnist-c"), dict(image_indices=np.arange(1, 6))])
def test_every_input_is_part_of_the_key(change):
    assert key(**change).digest() != key().digest()


def test_damaged_or_foreign_entries_are_errors_not_silently_replaced(tmp_path):
    cache = ResultCache(tmp_path)
    cache.get(key(), lambda: {"x": np.ones(3)})
    data, meta = cache.paths(key())
    data.write_bytes(data.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CacheError, match="does not match"):
        cache.get(key(), lambda: {"x": np.ones(3)})
    cache.get(key(), lambda: {"x": np.ones(3)}, recompute=True)  # the explicit way out
    record = json.loads(meta.read_text())
    record["inputs"]["data_source"] = "something else"
    meta.write_text(json.dumps(record))
    with pytest.raises(CacheError, match="does not describe this computation"):
        cache.load(key())


def test_read_only_cache_never_computes(tmp_path):
    with pytest.raises(CacheError, match="read-only.*checkpoint_sha256"):
        ResultCache(tmp_path, read_only=True).get(key(), lambda: {"x": np.ones(1)})
    assert not list(tmp_path.iterdir())
    with pytest.raises(TypeError, match="not a setting"):
        key(settings={"f": object()}).digest()


def test_modes_put_and_imported_entries(tmp_path):
    from sbgc.cache import chapter_cache

    with pytest.raises(ValueError, match="cache mode"):
        chapter_cache("sometimes", tmp_path)
    ro = chapter_cache("read-only", tmp_path)
    with pytest.raises(CacheError, match="read-only"):
        ro.put(key(), {"a": np.zeros(2)}, seconds=1.0)
    use = chapter_cache("use", tmp_path)
    entry = use.put(key(), {"a": np.arange(2.0)}, seconds=12.0, device="1x cpu (2 cores)", commit="c6f6b724",
                    computed_at="2026-11-30", origin="bench/results/x.json (first 10 images recomputed)")
    assert entry.record["seconds"] == 12.0
    loaded = ro.get(key(), lambda: pytest.fail("a read-only cache must not compute"))
    line = loaded.provenance_line()
    assert "loaded from" in line and "in 12 s" in line and "imported from bench/results/x.json" in line
    again = chapter_cache("recompute", tmp_path).get(key(), lambda: {"a": np.ones(2)})
    assert again.computed_now and again.record["device"] and "origin" not in again.record


def test_cached_tuple_rebuilds_named_tuples(tmp_path):
    from typing import NamedTuple

    from sbgc.cache import cached_tuple

    class Result(NamedTuple):
        log_p: np.ndarray
        dim: int
        seconds: float

    cache = ResultCache(tmp_path)
    first, e1 = cached_tuple(cache, key(), lambda: Result(np.arange(4.0).reshape(2, 2), 784, 1.5), Result)
    second, e2 = cached_tuple(cache, key(), lambda: pytest.fail("loaded, not computed"), Result)
    assert e1.computed_now and not e2.computed_now
    assert isinstance(second.dim, int) and second.dim == 784 and second.seconds == 1.5
    np.testing.assert_array_equal(second.log_p, first.log_p)


def test_many_entries_of_one_computation_are_summarised_in_the_provenance_line(tmp_path):
    """A loop's blocks (here 5 entries of one name) give one summary, not 5 repeated clauses: how many
    were loaded and computed now, their keys, the time span, the seconds in all, the commits; up to
    3 entries are listed one by one."""
    from sbgc.book.provenance import entries_provenance

    cache = ResultCache(tmp_path)
    entries = [cache.get(CacheKey("blocky", 1, {"block": b}, "0" * 64, "fixture", np.arange(3)),
                         lambda: {"x": np.zeros(2)}) for b in range(5)]  # fmt: skip
    entries[0] = cache.put(CacheKey("blocky", 1, {"block": 0}, "0" * 64, "fixture", np.arange(3)), {"x": np.zeros(2)},
                           seconds=100.0, commit="a" * 40, origin="an earlier run")  # fmt: skip
    loaded = [cache.load(CacheKey("blocky", 1, {"block": b}, "0" * 64, "fixture", np.arange(3))) for b in range(5)]
    line = entries_provenance(loaded[:2] + entries[2:])
    assert line.startswith("5 entries, 2 loaded from ") and "3 computed now" in line
    assert all(e.path.stem.rsplit("-", 1)[-1][:8] in line for e in entries)
    total = sum(e.record["seconds"] for e in loaded[:2] + entries[2:])
    assert f"in {total:,.0f} s in all" in line and "aaaaaaaa" in line and "1 imported" in line
    assert line.count("computed ") == 2  # "computed now" and the one time span, not one clause per entry
    assert entries_provenance(entries[:2]) == " · ".join(e.provenance_line() for e in entries[:2])


@dataclasses.dataclass(frozen=True)
class KnobsWithWeighting(Knobs):
    weighting: str = "likelihood"


def test_rekey_moves_an_entry_to_its_new_settings_without_touching_its_arrays(tmp_path):
    """A knob that enters the key with the default the entry was computed at: the entry is found under
    the new key with the same bytes, the old key is gone, and the record says why; damaged ones refuse."""
    cache = ResultCache(tmp_path)
    arrays = {"log_p": np.arange(4.0)}
    cache.get(key(), lambda: arrays, device="1x cpu", commit="c0ffee12")
    old_npz = cache.paths(key())[0].read_bytes()
    cache.get(key(name="other"), lambda: arrays, device="1x cpu", commit="c0ffee12")
    add = lambda settings: {**settings, "weighting": "likelihood"}
    moved = cache.rekey("table1_ode", add, reason="weighting knob added")
    assert len(moved) == 1 and cache.load(key()) is None
    found = ResultCache(tmp_path, read_only=True).load(key(settings=KnobsWithWeighting()))
    np.testing.assert_array_equal(found.arrays["log_p"], arrays["log_p"])
    assert cache.paths(key(settings=KnobsWithWeighting()))[0].read_bytes() == old_npz
    assert found.record["rekeyed"][0]["reason"] == "weighting knob added"
    assert cache.load(key(name="other")) is not None  # another computation is left alone
    assert cache.rekey("table1_ode", add, reason="again") == []  # already migrated: nothing to do
    path = cache.paths(key(name="other"))[0]
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CacheError, match="damaged"):
        cache.rekey("other", add, reason="x")
    with pytest.raises(CacheError, match="read-only"):
        ResultCache(tmp_path, read_only=True).rekey("other", add, reason="x")


def test_cached_blocks_compute_each_block_once_and_resume(tmp_path):
    from sbgc.cache import cached_blocks

    calls = []

    def compute(b, idx):
        calls.append(b)
        if b == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # interrupted in the third block
        return {"v": idx * 10.0, "w": np.stack([idx, idx], axis=1)}

    key = CacheKey("blocks", 1, {"k": 1}, "0" * 64, "toy", np.arange(20, 27))
    cache = ResultCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cached_blocks(cache, key, 3, compute)
    assert calls == [0, 1, 2]
    arrays, entries = cached_blocks(cache, key, 3, compute)  # resumes: blocks 0 and 1 are loaded
    assert calls == [0, 1, 2, 2]
    np.testing.assert_array_equal(arrays["v"], np.arange(20, 27) * 10.0)
    assert arrays["w"].shape == (7, 2) and [e.computed_now for e in entries] == [False, False, True]
    prefix = CacheKey("blocks", 1, {"k": 1}, "0" * 64, "toy", np.arange(20, 26))  # a nested prefix: all cached
    arrays6, _ = cached_blocks(ResultCache(tmp_path, read_only=True), prefix, 3, compute)
    np.testing.assert_array_equal(arrays6["v"], arrays["v"][:6])
    with pytest.raises(CacheError, match="read-only"):  # another block size is another computation
        cached_blocks(ResultCache(tmp_path, read_only=True), prefix, 2, compute)
    with pytest.raises(CacheError, match="one row per image"):
        cached_blocks(ResultCache(tmp_path / "x"), key, 3, lambda b, idx: {"v": np.zeros(2)})
