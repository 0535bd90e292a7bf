"""Evaluation numerics: float32 whatever the training dtype, highest matmul precision everywhere."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.experiments import adversarial as attacks
from sbgc.method import bound as elbo
from sbgc.method.likelihood import SolverSettings, log_likelihood, solve_rows
from sbgc.method.networks import make_score_fn
from sbgc.train.checkpoint import export_params
from sbgc.train.pretrained import load_model, model_config_from_meta

OPS = ("stablehlo.convolution", "stablehlo.dot_general")


def _matmul_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(op in line for op in OPS)]


def _assert_all_highest(text: str, what: str):
    lines = _matmul_lines(text)
    assert lines, f"{what}: no convolution or dot in the lowered computation"
    loose = [line.strip()[:160] for line in lines if "HIGHEST" not in line]
    assert not loose, f"{what}: {len(loose)} of {len(lines)} convolutions/dots without HIGHEST precision: {loose[:3]}"


@pytest.fixture(scope="module")
def ci():
    return load_model("ci")


@pytest.mark.slow
def test_likelihood_bound_and_attack_lower_with_highest_precision(ci):
    x = jnp.full((2, 32, 32, 3), 0.1)
    y = jnp.array([0, 3], jnp.int32)
    probes = jnp.ones((2, 1, 32, 32, 3))
    settings = SolverSettings(solver="heun", n_steps=2)
    lowered = jax.jit(lambda xx: solve_rows(ci.score_fn, ci.sde, xx, y, probes, settings).delta_logp).lower(x)
    _assert_all_highest(lowered.as_text(), "likelihood (solve_rows)")
    # the attack differentiates through the solves: forward, JVPs, transposes all at HIGHEST
    cfg = attacks.SBGCLogitsConfig(n_probes=1, solver=settings, n_classes=2)
    fn = attacks.sbgc_logits_fn(ci, jnp.ones((1, 1, 32, 32, 3)), cfg)
    grad = jax.jit(jax.grad(lambda xx: attacks.pgd_surrogate(fn(xx), (jnp.array([1]), jnp.asarray(False)))))
    _assert_all_highest(grad.lower(jnp.full((1, 32, 32, 3), 0.3)).as_text(), "attack gradient")
    # the bound's network passes
    t = jnp.array([0.1, 0.5])
    text = elbo._chunk_terms.lower(ci.score_fn, ci.sde, x, y, t, jax.random.PRNGKey(0), jnp.array([0, 1]),
                                   jnp.array([0, 0])).as_text()
    _assert_all_highest(text, "bound (_chunk_terms)")
    # and the check itself can fail: training keeps the default precision
    from sbgc.method.networks import make_noise_fn

    plain = jax.jit(lambda p, xx: make_noise_fn(ci.config)(p, xx, t, y)).lower(ci.params, x).as_text()
    assert any("HIGHEST" not in line for line in _matmul_lines(plain))


@pytest.mark.slow
def test_a_bfloat16_trained_export_is_evaluated_in_float32(ci, tmp_path):
    meta = {k: v for k, v in ci.meta.items() if k not in ("sha256", "file", "bytes")}
    meta["config"] = dict(meta["config"], model=dict(meta["config"]["model"], dtype="bfloat16"))
    export_params(ci.params, tmp_path / "bf16.msgpack", meta)
    bf16_trained = load_model(tmp_path / "bf16.msgpack")
    assert bf16_trained.config.dtype == "float32"
    assert bf16_trained.meta["config"]["model"]["dtype"] == "bfloat16"  # provenance keeps the truth

    x = (np.arange(2 * 32 * 32 * 3).reshape(2, 32, 32, 3) * 7 % 256).astype(np.uint8)
    y = np.array([1, 2])
    kw = dict(n_probes=1, solver=SolverSettings(rtol=1e-3, atol=1e-3), chunk_size=2, progress=False)
    ours = log_likelihood(bf16_trained.score_fn, bf16_trained.sde, x, y, jax.random.PRNGKey(0), **kw)
    f32 = log_likelihood(ci.score_fn, ci.sde, x, y, jax.random.PRNGKey(0), **kw)
    np.testing.assert_array_equal(ours.log_p, f32.log_p)
    # what evaluating in bfloat16 would have given instead
    cfg16 = dataclasses.replace(model_config_from_meta(bf16_trained.meta), dtype="bfloat16")
    score16 = functools.partial(make_score_fn(cfg16, ci.sde), ci.params)
    b16 = log_likelihood(score16, ci.sde, x, y, jax.random.PRNGKey(0), **kw)
    print("bf16 vs float32 evaluation: |Δ log p| =", np.abs(b16.log_p - f32.log_p), "nats")
    assert np.max(np.abs(b16.log_p - f32.log_p)) > 1.0
