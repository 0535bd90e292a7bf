"""The score U-Net: parameter counts, the public score_fn boundary and its input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.method.networks import count_params, get_config, init_params, make_noise_fn, make_score_fn
from sbgc.method.sde import SDE


def _n_params(cfg):
    return count_params(jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0)))


def test_paper_network_has_the_papers_parameter_count():
    n = _n_params(get_config("paper"))
    assert abs(n - 67.19e6) / 67.19e6 < 0.01, n
    # the two other readings of "conditioned on the label" (NOTES.md) give other counts
    assert _n_params(get_config("paper", label_embedding="sum")) == 61_809_539
    assert _n_params(get_config("paper", label_embedding="none")) == 61_804_419


def test_profile_sizes():
    assert _n_params(get_config("ci")) <= 1_000_000
    assert _n_params(get_config("small")) * 16 < 64 * 2**20  # full training state fits one transfer


def test_unknown_profile_and_bad_config():
    with pytest.raises(ValueError, match="unknown model profile"):
        get_config("huge")
    with pytest.raises(ValueError, match="label_embedding"):
        get_config("ci", label_embedding="film")


@pytest.fixture(scope="module")
def ci_net():
    cfg = get_config("ci")
    params = init_params(cfg, jax.random.PRNGKey(0))
    # the last convolution starts at zero (score_sde's init_scale 0): perturb it so outputs are not 0
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = tree.unflatten([p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return cfg, params, make_score_fn(cfg, SDE("subvp"))


def _inputs(b=2):
    x = jax.random.uniform(jax.random.PRNGKey(2), (b, 32, 32, 3), minval=-1, maxval=1)
    return x, jnp.full((b,), 0.3), jnp.arange(b, dtype=jnp.int32)


@pytest.mark.slow
def test_score_fn_shape_and_label_dependence(ci_net):
    cfg, params, score_fn = ci_net
    x, t, y = _inputs()
    s = score_fn(params, x, t, y)
    assert s.shape == x.shape and s.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s)))
    s_other = score_fn(params, x, t, (y + 1) % 10)
    assert float(jnp.max(jnp.abs(s - s_other))) > 1e-3  # the label reaches the output
    # score = −ε̂/σ(t)
    eps_hat = make_noise_fn(cfg)(params, x, t, y)
    np.testing.assert_allclose(s, -eps_hat / SDE().marginal_std(0.3), rtol=1e-5, atol=1e-5)


def test_score_fn_rejects_bad_inputs(ci_net):
    _, params, score_fn = ci_net
    x, t, y = _inputs()
    with pytest.raises(ValueError, match=r"x must be \[B, 32, 32, 3\]"):
        score_fn(params, x[:, :16], t, y)
    with pytest.raises(ValueError, match="floating point"):
        score_fn(params, x.astype(jnp.uint8), t, y)
    with pytest.raises(ValueError, match="t must be a float array of shape"):
        score_fn(params, x, t[:1], y)
    with pytest.raises(ValueError, match="y must be an integer array"):
        score_fn(params, x, t, y.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        score_fn(params, x, t, jnp.array([0, 10], jnp.int32))
    # concrete (numpy) labels inside a jitted function: checked on the host, not staged into the trace
    np.testing.assert_allclose(jax.jit(lambda x: score_fn(params, x, t, np.array([0, 1], np.int32)))(x),
                               score_fn(params, x, t, y), rtol=1e-5, atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        jax.jit(lambda x: score_fn(params, x, t, np.array([0, 10], np.int32)))(x)


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32(ci_net):
    cfg, params, _ = ci_net
    x, t, y = _inputs()
    f32 = make_noise_fn(cfg)(params, x, t, y)
    bf16 = make_noise_fn(get_config("ci", dtype="bfloat16"))(params, x, t, y)
    assert bf16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
    assert rel < 0.05, rel


@pytest.mark.slow
def test_dropout_only_in_training_mode():
    cfg = get_config("ci", dropout=0.5)
    params = init_params(cfg, jax.random.PRNGKey(0))
    leaves, tree = jax.tree_util.tree_flatten(params)
    params = tree.unflatten([p + 0.05 for p in leaves])
    x, t, y = _inputs()
    net = make_noise_fn(cfg)
    a, b = net(params, x, t, y), net(params, x, t, y)
    np.testing.assert_array_equal(a, b)
    c = net(params, x, t, y, train=True, dropout_key=jax.random.PRNGKey(3))
    assert float(jnp.max(jnp.abs(a - c))) > 1e-4


def test_group_norm_equals_flax_group_norm():
    """Our GroupNorm (no grouped reshape) is flax.linen.GroupNorm: same parameters, same output."""
    import flax.linen as nn

    from sbgc.method.networks import GroupNorm

    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 12)) * 2.0 + 0.7
    for groups in (1, 3, 4, 12):
        ours, flax_gn = GroupNorm(num_groups=groups), nn.GroupNorm(num_groups=groups, epsilon=1e-6)
        params = flax_gn.init(jax.random.key(1), x)
        params = jax.tree_util.tree_map(lambda a: a + jax.random.normal(jax.random.key(2), a.shape), params)
        assert jax.tree_util.tree_structure(ours.init(jax.random.key(1), x)) == jax.tree_util.tree_structure(params)
        np.testing.assert_allclose(ours.apply(params, x), flax_gn.apply(params, x), rtol=1e-5, atol=1e-5)
    bf16 = GroupNorm(num_groups=4, dtype=jnp.bfloat16)
    assert bf16.apply(bf16.init(jax.random.key(1), x), x).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="divisible by 5"):
        GroupNorm(num_groups=5).init(jax.random.key(0), x)


# The attack's gradient with 2 probes and 2 rows (classes) through the U-Net: with flax's GroupNorm
# XLA:CPU died with a segmentation fault here, so it runs in a child process.
_TWO_PROBE_GRADIENT = """
import dataclasses, functools, sys, jax, jax.numpy as jnp
from sbgc.method import networks as N
from sbgc.method.sde import SDE
if sys.argv[1] == "flax":
    import flax.linen as nn
    N._group_norm = lambda c, dtype: nn.GroupNorm(num_groups=N.math.gcd(c, min(c // 4, 32)), epsilon=1e-6, dtype=dtype)
cfg = N.ModelConfig(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0, image_size=8, channels=1)
params = N.init_params(cfg, jax.random.key(0))
params = jax.tree_util.tree_map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), params)
score = functools.partial(N.make_score_fn(cfg, SDE("subvp")), params)
probes = jnp.sign(jax.random.normal(jax.random.key(2), (2, 8, 8, 1)))
def divergence(x, y):  # one row: x [8, 8, 1], y []
    _, jvp = jax.linearize(lambda z: score(z[None], jnp.full((1,), 0.5), y[None])[0], x)
    return jnp.sum(jax.vmap(jvp)(probes) * probes)
total = lambda x: jnp.sum(jax.vmap(divergence, in_axes=(None, 0))(x, jnp.arange(2, dtype=jnp.int32)))
g = jax.jit(jax.grad(total))(jax.random.uniform(jax.random.key(3), (8, 8, 1)))
print("gradient norm", float(jnp.linalg.norm(g)))
"""


@pytest.mark.slow
def test_two_probe_gradient_through_the_unet_runs():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _TWO_PROBE_GRADIENT, "ours"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert float(run.stdout.split()[-1]) > 0
