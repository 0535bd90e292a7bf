"""The shipped ci score model loads, is verified by sha256 and gives finite scores."""

import jax
import jax.numpy as jnp
import pytest

from sbgc.train.checkpoint import CheckpointError
from sbgc.train.pretrained import SHIPPED, load_model, resolve_path


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


def test_shipped_mnist_model_loads_and_its_training_state_continues_it(tmp_path):
    from sbgc.train import score as T
    from sbgc.train.checkpoint import load_params

    model = load_model("mnist")
    assert model.meta["data_source"] == "mnist-official" and model.config.image_size == 28
    assert model.config.channels == 1 and model.config.dtype == "float32"
    x = jnp.zeros((2, 28, 28, 1))
    s = model.score_fn(x, jnp.full((2,), 0.5), jnp.array([0, 9], jnp.int32))
    assert s.shape == x.shape and bool(jnp.all(jnp.isfinite(s)))
    # the packed training state is the run the shipped EMA came from, at the same step
    state_file = resolve_path("checkpoints/training/sbgc_mnist_s_state.msgpack")
    _, meta = load_params(state_file)
    assert meta["kind"] == "training state" and meta["step"] == model.meta["step"]
    assert meta["config"]["model"] == model.meta["config"]["model"]
    step = T.unpack_state(state_file, tmp_path / "run")
    assert step == model.meta["step"]
    T.export_ema(tmp_path / "run", tmp_path / "ema.msgpack")
    again, _ = load_params(tmp_path / "ema.msgpack")
    import numpy as np

    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
