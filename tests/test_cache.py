"""The results cache: keyed by everything that determines a result, verified on load, never computing when read-only."""

import dataclasses
import json

import numpy as np
import pytest

from sbgc.book.cache import CacheError, CacheKey, ResultCache


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
    assert second.record["device"] == "1x cpu" and "loaded from table1_ode-" in second.provenance_line()
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
