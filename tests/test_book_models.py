"""The models a profile needs (sbgc.book.models): the plan, its estimates, producing what is
missing (with a stand-in for the training commands), the dry run's paths and shrunk knobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbgc.book import models, profiles, runner


def test_the_plan_names_each_model_its_file_and_how_long_it_takes(tmp_path):
    (tmp_path / "train_throughput_x.json").write_text(json.dumps(
        {"device": "1x NVIDIA H200 (gpu)", "rows": [{"profile": "small", "dtype": "float32", "images_per_s": 1280.0},
                                                    {"profile": "small", "dtype": "bfloat16", "images_per_s": 9e9}]}))
    (tmp_path / "train_throughput_y.json").write_text(json.dumps(  # a baseline row; its profile names a score model too
        {"device": "1x cpu (cpu)", "rows": [{"kind": "baseline", "profile": "small", "dtype": "float32", "images_per_s": 7.0},
                                            {"kind": "baseline", "profile": "wrn28_10", "dtype": "float32",
                                             "images_per_s": 2.5}]}))
    throughput = models.measured_throughput(tmp_path)
    assert throughput == {("sbgc", "small", "1x NVIDIA H200"): 1280.0, ("baseline", "small", "1x cpu"): 7.0,
                          ("baseline", "wrn28_10", "1x cpu"): 2.5}  # float32 rows only; no kind: a score model
    steps = models.plan("workstation", device="1x NVIDIA H200", throughput=throughput)
    assert [s.role for s in steps] == ["score model", "baseline"]
    score, base = steps
    assert score.path == profiles.SMALL_GPU.path() and base.path == profiles.WRN28_10_GPU.path()
    # 200,000 steps × batch 128 at 1,280 images/s
    assert score.estimate_s == pytest.approx(200_000 * 128 / 1280.0) and "1280.0 images/s" in score.estimate_note
    assert base.estimate_s is None and "--baselines wrn28_10" in base.estimate_note and "1x cpu" in base.estimate_note
    on_cpu = models.plan("workstation", device="1x cpu", throughput=throughput)
    assert on_cpu[0].estimate_s is None  # the baseline's "small" row is not the score model's
    assert on_cpu[1].estimate_s == pytest.approx(78_200 * 128 / 2.5)
    train, export = score.commands
    assert train[1:5] == ("-m", "sbgc.train", "--profile", "small") and ("--steps", "200000") == train[5:7]
    assert export[-2:] == ("--out", str(score.path)) and "~5.6 h" in score.describe()
    assert train[-2:] == ("--workdir", str(profiles.REPO / profiles.SMALL_GPU.workdir()))  # the folder commands() prints
    assert all(s.present for s in models.plan("mnist", device="1x cpu", throughput={}))  # shipped


def test_produce_runs_the_missing_models_commands_in_order_and_checks_their_files(tmp_path):
    steps = models.plan("workstation", dry_run=tmp_path, device="1x cpu", throughput={})
    assert all(not s.present and s.path.is_relative_to(tmp_path) for s in steps)
    assert steps[0].path == tmp_path / "checkpoints" / "sbgc_small_gpu.msgpack"
    train = steps[0].commands[0]
    assert train[train.index("--steps") + 1] == "2" and train.count("--steps") == 1  # the dry run's 2 steps
    assert "to train, dry run: 2 steps of profile small (it trains 200,000)" in steps[0].describe()
    assert Path(train[train.index("--workdir") + 1]).is_relative_to(tmp_path)
    ran = []

    class Done:
        returncode = 0

    def fake_run(argv, cwd):
        ran.append(argv)
        if "export" in argv:
            out = Path(argv[argv.index("--out") + 1])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"model")
        return Done()

    assert models.produce(steps, run=fake_run) == [s.path for s in steps]
    assert [a[2] for a in ran] == ["sbgc.train", "sbgc.train", "sbgc.train.baseline", "sbgc.train.baseline"]
    again = models.plan("workstation", dry_run=tmp_path, device="1x cpu", throughput={})
    assert all(s.present for s in again) and models.produce(again, run=lambda *a, **k: 1 / 0) == []  # nothing to redo

    class Failed:
        returncode = 3

    fresh = models.plan("workstation", dry_run=tmp_path / "other", device="1x cpu", throughput={})
    with pytest.raises(RuntimeError, match="exit 3.*resume"):
        models.produce(fresh, run=lambda argv, cwd: Failed())
    with pytest.raises(RuntimeError, match="was not written"):
        models.produce(fresh, run=lambda argv, cwd: Done())


def test_a_dry_run_keeps_the_profile_and_its_models_and_shrinks_every_knob(tmp_path):
    steps = models.plan("workstation", dry_run=tmp_path, device="1x cpu", throughput={})
    for name in profiles.NOTEBOOKS:
        overrides = models.dry_run_overrides("workstation", steps, name)
        # every override is a knob the runner accepts (an optional group switched off by name included)
        assert set(overrides) <= set(profiles.knob_names(name)), name
        assert runner.notebook_parameters(name, "workstation", overrides)["profile"] == "workstation"
        params = profiles.chapter_params(name, "workstation", overrides)
        like = profiles.chapter_params(name, "ci_cifar10")
        capped = {k: min(v, models.DRY_RUN_CAPS[k]) for k, v in like.values.items() if k in models.DRY_RUN_CAPS}
        capped.update({k: v[: models.DRY_RUN_FIRST[k]] for k, v in like.values.items()
                       if k in models.DRY_RUN_FIRST and isinstance(v, tuple)})
        own = profiles.flat_fields(profiles.get_profile("workstation").chapters[name])
        capped.update({k: max(capped.get(k, like.values[k]), min(own[k], cap)) for k, cap in models.DRY_RUN_FROM_PROFILE.items()
                       if k in own})  # fmt: skip
        capped.update({k: "none" if own[k] is None else own[k] for k in models.DRY_RUN_KEEP if k in own})
        like = profiles.chapter_params(name, "ci_cifar10", capped)
        assert params.profile == "workstation" and params.knobs == like.knobs, name
        if "ode.n_probes" in own:  # the GPU profile's several probes run (the attack's multi-probe gradient), 2 of them
            assert params.ode.n_probes == min(2, own["ode.n_probes"]), name
        assert getattr(params, "n_baseline_images", 0) <= models.DRY_RUN_CAPS["n_baseline_images"]
        assert len(getattr(params, "corruptions", ())) <= 2
        if "checkpoint" in profiles.MODELS_USED[name]:
            assert params.checkpoint == str(steps[0].path)
        if "baseline" in profiles.MODELS_USED[name]:
            assert params.baseline == str(steps[1].path)
    assert models.dry_run_overrides("workstation", steps, "04_adversarial")["ode.n_probes"] == 2  # CPU profile: 1
    assert models.dry_run_overrides("workstation", steps, "02_table1")["ode.chunk_size"] == "none"  # sized from memory
    assert models.dry_run_overrides("workstation", steps, "06_convergence")["ode.n_probes"] == 2  # CPU profile: 4
    # a chapter that loads no model would repeat the ci run's own: left out
    assert sorted(models.dry_run_chapters("workstation")) == [n for n in profiles.NOTEBOOKS if n != "01_method"]
    assert models.dry_run_chapters("workstation")[0] == "04_adversarial"  # the slowest starts first


def test_a_gpu_profile_is_not_trained_on_a_cpu_without_being_asked(tmp_path):
    steps = models.plan("workstation", device="1x cpu", throughput={})
    with pytest.raises(RuntimeError, match=r'pip install "jax\[cuda13\]==.*--allow-cpu'):
        models.require_accelerator(steps, "workstation")
    models.require_accelerator(models.plan("mnist", device="1x cpu", throughput={}), "mnist")  # nothing to train
