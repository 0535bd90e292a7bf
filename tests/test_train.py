"""Training: the loss falls, a killed run resumes bit-identically, divergence and damage are caught."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbgc.data.cifar10 import toy_images
from sbgc.data.transforms import dequantize, to_model_space
from sbgc.method.losses import dsm_loss
from sbgc.method.networks import get_config, init_params, make_noise_fn
from sbgc.method.sde import SDE
from sbgc.train import loop
from sbgc.train import score as T
from sbgc.train.checkpoint import CheckpointError, CheckpointStore, load_params

# The plumbing (loop, checkpoints, resume, export, divergence) runs on the tiny profile: a 9,403-parameter
# U-Net of the same family on toy data, batch 8, compiled in seconds. Learning is checked on it as well
# (test_training_loss_falls_on_toy_data); the shipped models are what shows the real profiles learn.
PROFILE = "tiny"
FAST = {}  # the tiny profile's own settings: batch 8, warm-up 2, a log row and a checkpoint every step, keep 2


def _state(workdir, cfg=None):
    """The newest committed training state of a run folder (params, EMA, optimizer state, key)."""
    cfg = cfg or T.get_train_config(PROFILE, **FAST)
    abstract = T.init_state(jax.random.PRNGKey(cfg.seed), T.get_config(PROFILE), T.make_optimizer(cfg))
    state, meta = CheckpointStore(Path(workdir) / "checkpoints").restore_latest(abstract)
    return state, meta


def _assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_training_loss_falls_on_toy_data(tmp_path):
    cfg = T.get_train_config(PROFILE, batch_size=16, lr=5e-3, warmup_steps=5, log_every=5, ckpt_every=40)
    meta = T.train(cfg, 40, tmp_path, data="toy", toy_size=256, progress=False)
    assert meta["step"] == 40 and meta["data_source"] == "toy-256"
    with open(tmp_path / "train_log.csv") as f:
        logged = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(logged) == 8 and logged[-1] < logged[0], logged

    # the same fixed-noise loss on the same 128 toy images, before and after training
    @jax.jit
    def _fixed_loss(params):
        noise_fn, sde = make_noise_fn(get_config(PROFILE)), SDE("subvp")
        score_fn = lambda x, t, y: -noise_fn(params, x, t, y) / sde.marginal_std(t)[:, None, None, None]
        return jnp.mean(dsm_loss(score_fn, sde, x0, y, jax.random.PRNGKey(7)))

    fixed_loss = lambda params: float(_fixed_loss(params))

    toy = toy_images(256, seed=0)
    x0 = to_model_space(dequantize(jax.random.PRNGKey(5), jnp.asarray(toy.images[:128])))
    y = jnp.asarray(toy.labels[:128])
    before = fixed_loss(init_params(get_config(PROFILE), jax.random.split(jax.random.PRNGKey(cfg.seed))[0]))
    after = fixed_loss(_state(tmp_path, cfg)[0]["params"])
    assert after < 0.8 * before, (before, after)


def _cli(workdir, steps):
    return [sys.executable, "-m", "sbgc.train.score", "--profile", PROFILE, "--steps", str(steps), "--workdir", str(workdir),
            "--data", "toy", "--toy-size", "64", "--no-progress"] + [
        a for k, v in FAST.items() for a in ("--" + k.replace("_", "-"), str(v))]


@pytest.mark.slow
def test_kill_and_resume_gives_identical_parameters(tmp_path):
    k = 3
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(straight, 4 * k), check=True, capture_output=True)

    proc = subprocess.Popen(_cli(killed, 4 * k), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = CheckpointStore(killed / "checkpoints")
    deadline = time.time() + 300
    while not [s for s in store.steps() if s >= k] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    stopped_at = max(store.steps())
    assert k <= stopped_at < 4 * k

    resumed = subprocess.run(_cli(killed, 4 * k), check=True, capture_output=True, text=True)
    assert '"step": %d' % (4 * k) in resumed.stdout
    (a, meta_a), (b, meta_b) = _state(straight), _state(killed)
    assert meta_a["step"] == meta_b["step"] == 4 * k
    _assert_trees_equal(a, b)  # params, EMA, Adam moments, key, step
    with open(killed / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 4 * k + 1))


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = T.get_train_config(PROFILE, **FAST)
    T.train(cfg, 2, tmp_path, data="toy", toy_size=64, progress=False)
    good, _ = _state(tmp_path)

    real_loss = T.dsm_loss
    monkeypatch.setattr(T, "dsm_loss", lambda *a, **k: real_loss(*a, **k) * np.nan)
    with pytest.raises(loop.TrainingDiverged, match=r"non-finite loss.*last good checkpoint: step 2"):
        T.train(cfg, 4, tmp_path, data="toy", toy_size=64, progress=False)
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.steps()[-1] == 2
    store.verify(2)
    after, _ = _state(tmp_path)
    _assert_trees_equal(good, after)


def test_damaged_and_mismatched_checkpoints_are_named(tmp_path):
    cfg = T.get_train_config(PROFILE, **FAST)
    T.train(cfg, 2, tmp_path, data="toy", toy_size=64, progress=False)
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.steps() == [1, 2]

    # a config mismatch is an error naming the file and the field, never a silent restart
    with pytest.raises(CheckpointError, match=r"step_000000002\.json does not match this run: train\.lr"):
        T.train(T.get_train_config(PROFILE, **dict(FAST, lr=5e-4)), 3, tmp_path, data="toy", toy_size=64, progress=False)

    # flip bytes in the largest file of step 2: detected, named, and step 1 is used instead
    victim = max((p for p in (store.dir / "step_000000002").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=f"file {victim} is damaged"):
        state, meta = _state(tmp_path)
    assert meta["step"] == 1 and int(state["step"]) == 1

    # no intact step left: an error naming the damaged files
    (store.dir / "step_000000001.json").unlink()
    with pytest.raises(CheckpointError, match="no intact checkpoint"), pytest.warns(UserWarning):
        _state(tmp_path)


def test_export_and_load_ema_parameters(tmp_path):
    cfg = T.get_train_config(PROFILE, **FAST)
    T.train(cfg, 2, tmp_path / "run", data="toy", toy_size=64, progress=False)
    meta = T.export_ema(tmp_path / "run", tmp_path / "ci.msgpack")
    params, loaded_meta = load_params(tmp_path / "ci.msgpack", expected_sha256=meta["sha256"])
    state, _ = _state(tmp_path / "run")
    _assert_trees_equal(state["ema"], params)
    assert loaded_meta["profile"] == PROFILE and loaded_meta["weights"] == "ema" and loaded_meta["step"] == 2
    # the run's log up to the exported step beside it, where the book's Table 1 chapter reads it
    from sbgc.experiments.table1 import read_training_log, training_log_path

    assert training_log_path(tmp_path / "ci.msgpack") == tmp_path / "ci_train_log.csv"
    assert list(read_training_log(tmp_path / "ci_train_log.csv")["step"]) == [1, 2]

    with pytest.raises(CheckpointError, match="does not match"):
        load_params(tmp_path / "ci.msgpack", expected_sha256="0" * 64)
    blob = bytearray((tmp_path / "ci.msgpack").read_bytes())
    blob[-5] ^= 0x01
    (tmp_path / "ci.msgpack").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"ci\.msgpack: sha256 .* does not match"):
        load_params(tmp_path / "ci.msgpack")


def test_bad_training_settings_raise():
    with pytest.raises(ValueError, match="weighting"):
        T.get_train_config("ci", weighting="uniform")
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        T.get_train_config("ci", steps_per_call=3, log_every=10)
    with pytest.raises(ValueError, match="unknown training profile"):
        T.get_train_config("gigantic")


@pytest.mark.slow
def test_packed_state_continues_exactly_in_another_workdir(tmp_path):
    cfg = T.get_train_config(PROFILE, **FAST)
    T.train(cfg, 4, tmp_path / "straight", data="toy", toy_size=64, progress=False)
    T.train(cfg, 2, tmp_path / "first", data="toy", toy_size=64, progress=False)
    packed = T.pack_state(tmp_path / "first", tmp_path / "carry" / "state.msgpack")
    assert packed["step"] == 2 and packed["kind"] == "training state"
    assert (tmp_path / "carry" / "state_train_log.csv").exists()
    assert T.unpack_state(tmp_path / "carry" / "state.msgpack", tmp_path / "second") == 2
    # unpacking never replaces training that is already there
    with pytest.raises(FileExistsError, match="already holds step 2"):
        T.unpack_state(tmp_path / "carry" / "state.msgpack", tmp_path / "second")
    T.train(cfg, 4, tmp_path / "second", data="toy", toy_size=64, progress=False)
    (a, _), (b, _) = _state(tmp_path / "straight"), _state(tmp_path / "second")
    _assert_trees_equal(a, b)
    with open(tmp_path / "second" / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    # a damaged packed file is refused by its sha256
    blob = bytearray((tmp_path / "carry" / "state.msgpack").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (tmp_path / "carry" / "state.msgpack").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="state.msgpack: sha256"):
        T.unpack_state(tmp_path / "carry" / "state.msgpack", tmp_path / "third")


def test_time_limit_stops_at_a_checkpoint(tmp_path):
    cfg = T.get_train_config(PROFILE, **dict(FAST, ckpt_every=1000, log_every=1000))
    meta = T.train(cfg, 1000, tmp_path, data="toy", toy_size=64, progress=False, time_limit=0.0)
    assert meta["step"] == 1 and CheckpointStore(tmp_path / "checkpoints").steps() == [1]


def test_clipping_acts_in_score_flow_units_and_counts_clipped_steps():
    sde = SDE("subvp")
    cfg = T.get_train_config("ci", grad_clip=1.0, lr=1e-2, warmup_steps=1)
    scale = T.reference_loss_scale(cfg, sde)
    # ½ Z with Z = ∫_ε^1 g²/σ² dt for sub-VP at ε = 1e-5 (the 18.8)
    assert scale == pytest.approx(0.5 * float(sde.importance_weight_normalizer(1e-5)))
    assert 18.5 < scale < 19.2
    # clipping at grad_clip·scale equals score_flow's rule (divide the loss by the scale, clip at
    # grad_clip) followed by Adam, which does not see a gradient's scale: same updates
    import optax

    ours = T.make_optimizer(cfg, scale)
    theirs = optax.chain(optax.scale(1 / scale), optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    params = {"w": jnp.zeros(3)}
    grads = [jnp.array([30.0, 0.0, 40.0]), jnp.array([1.0, -2.0, 0.5]), jnp.array([-60.0, 10.0, 5.0])]

    def updates(opt):
        state, out = opt.init(params), []
        for g in grads:
            u, state = opt.update({"w": g}, state, params)
            out.append(np.asarray(u["w"]))
        return out

    ours, theirs = updates(T.make_optimizer(cfg, scale)), updates(
        optax.chain(optax.scale(1 / scale), optax.clip_by_global_norm(1.0), optax.adam(1e-2)))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    # and not what clipping the raw gradient at 1 gives (the old optimizer: every step clipped)
    raw = updates(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)))
    assert not np.allclose(raw[1], ours[1], rtol=1e-3)


def test_ema_decay_warms_up():
    cfg = T.get_train_config("ci", ema_decay=0.999)
    decays = [float(T.ema_decay_at(cfg, jnp.asarray(s))) for s in (0, 10, 90, 10_000)]
    assert decays == pytest.approx([0.1, 11 / 20, 91 / 100, 0.999])
    # without the warm-up a 1,000-step EMA still holds 0.999^1000 = 37 % of the initialisation
    assert float(T.ema_decay_at(T.get_train_config("ci", ema_decay=0.999, ema_warmup=False), jnp.asarray(0))) == \
        pytest.approx(0.999)
    share = np.prod([float(T.ema_decay_at(cfg, jnp.asarray(s))) for s in range(1000)])
    assert share < 1e-6


def test_the_learning_rate_warms_up_then_decays_by_a_cosine_that_a_resumed_run_may_start():
    cfg = T.get_train_config("mnist_s")  # lr 1e-3, warm-up 100, no decay
    lr = lambda c, s: float(T.learning_rate(c, s))
    assert lr(cfg, 0) == pytest.approx(1e-5) and lr(cfg, 99) == pytest.approx(1e-3) and lr(cfg, 50_000) == pytest.approx(1e-3)
    decayed = T.get_train_config("mnist_s", lr_decay_start=15_000, lr_decay_steps=10_000, lr_final=1e-5)
    assert lr(decayed, 14_999) == pytest.approx(1e-3)
    assert lr(decayed, 20_000) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # half-way down the cosine
    assert lr(decayed, 25_000) == pytest.approx(1e-5) and lr(decayed, 40_000) == pytest.approx(1e-5)
    assert decayed.identity() == cfg.identity()  # run-only: a checkpoint of the constant run resumes with it
    # the optimizer steps with it: Adam's first update at step s is -lr(s) * sign(g)
    for step in (0, 20_000):
        opt = T.make_optimizer(decayed)
        params = {"w": jnp.ones(3)}
        state = opt.init(params)
        is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
        state = jax.tree_util.tree_map(lambda x: x._replace(count=jnp.asarray(step, x.count.dtype)) if is_schedule(x) else x,
                                       state, is_leaf=is_schedule)  # the schedule's step (Adam's bias correction: step 1)
        updates, _ = opt.update({"w": jnp.array([0.1, -0.2, 0.3])}, state, params)
        np.testing.assert_allclose(updates["w"], -lr(decayed, step) * np.array([1, -1, 1]), rtol=1e-4)
    with pytest.raises(ValueError, match="lr decay"):
        T.get_train_config("mnist_s", lr_final=1.0)
