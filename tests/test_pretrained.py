"""The shipped ci score model loads, is verified by sha256 and gives finite scores."""

import jax.numpy as jnp
import pytest

from sbgc.checkpoint import CheckpointError
from sbgc.pretrained import SHIPPED, load_model, resolve_path


def test_shipped_ci_model_loads_and_is_verified():
    model = load_model("ci")
    assert model.meta["profile"] == "ci" and model.meta["weights"] == "ema"
    assert model.meta["data_source"] in ("jpeg-copy", "official")
    assert len(model.sha256) == 64 and model.sha256[:12] in model.describe()
    x = jnp.zeros((2, 32, 32, 3))
    s = model.score_fn(x, jnp.full((2,), 0.5), jnp.array([0, 9], jnp.int32))
    assert s.shape == x.shape and bool(jnp.all(jnp.isfinite(s)))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model("ci", expected_sha256="f" * 64)


def test_missing_model_names_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m sbgc.train export"):
        load_model(tmp_path / "nope.msgpack")
    assert resolve_path("ci").name == SHIPPED["ci"].split("/")[-1]
