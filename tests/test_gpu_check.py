"""bench/gpu_check.py --tiny (what CI runs of the prepared GPU check): every section is recorded with
sane numbers, the training run resumes instead of restarting, and a failing section is recorded,
not fatal. Two runs of the script into one train dir, as separate processes (as on the GPU)."""

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["environment", "train_throughput", "likelihood", "precision", "attack_gradient", "train"]


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[dict, str]:
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(out),
           "--train-dir", str(tmp_path / "run"), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text()), proc.stdout


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_export(train: dict, step: int) -> None:
    export = train["export"]
    path = Path(export["path"])
    assert export["step"] == step and path.is_file() and Path(export["metadata"]).is_file()
    assert export["sha256"] == _sha256(path) == json.loads(Path(export["metadata"]).read_text())["sha256"]


@pytest.mark.slow
def test_tiny_run_records_every_section_resumes_training_and_survives_a_failing_section(tmp_path):
    report, table = _run(tmp_path, "first")
    s = report["sections"]
    assert sorted(s) == sorted(SECTIONS) and report["section_order"] == SECTIONS  # JSON keys are sorted
    assert report["finished"] and report["mode"] == "tiny"
    for name, entry in s.items():
        assert entry["status"] == "ok", f"{name}: {entry.get('error')}\n{entry.get('traceback')}"
        assert _positive(entry["seconds"]) or name == "environment"
        assert name in table  # the printed table has a line per section

    env = s["environment"]
    assert env["backend"] == "cpu" and env["device_count"] >= 1 and env["memory_stats"] is None
    assert env["jax"] and env["python"] and (env["git_commit"] is None or len(env["git_commit"]) == 40)

    row, base = s["train_throughput"]["rows"]
    assert row["profile"] == "ci" and row["dtype"] == "float32" and row["peak_bytes"] is None  # CPU: no allocator stats
    assert _positive(row["images_per_s"]) and _positive(row["step_s"]) and row["forward_s"] is None
    assert (base["kind"], base["profile"], base["dtype"]) == ("baseline", "ci", "float32")  # the baseline's step
    assert _positive(base["images_per_s"]) and _positive(base["step_s"]) and base["n_params"] > 100_000

    lik = s["likelihood"]
    ours, ref, n, images = lik["ours"], lik["reference"], lik["settings"]["n_probes"], lik["settings"]["images"]
    for value in (ours["steady_s"], ours["images_per_s"], ours["mean_bpd"], ours["mean_nfe"],
                  ref["s_per_solve"], ref["images_per_s"], ref["mean_bpd"], ref["mean_nfe"]):
        assert _positive(value)
    assert ours["s_per_image"] == pytest.approx(ours["steady_s"] / images)
    assert ref["s_per_image"] == pytest.approx(ref["s_per_solve"] * n / images)  # n probes cost n scipy solves
    assert ref["s_per_solve"] == pytest.approx(ref["solve_s"][1])  # steady: the solves after the first
    assert lik["ratio_reference_over_ours"] == pytest.approx(ref["s_per_image"] / ours["s_per_image"])
    assert lik["paired"]["draws"] == "our probe 0 of n"  # same noise and probe as reference solve 0
    assert math.isfinite(lik["paired"]["max_abs_delta_log_p_nats"])

    prec = s["precision"]
    assert prec["highest_ops_share"] == {"highest": 1.0, "default": 0.0}  # the switch took effect
    assert prec["highest_from"].startswith("the likelihood section")
    assert 0 <= prec["max_abs_delta_log_p_nats"] < 1e-3  # a CPU's default precision is full float32
    assert _positive(prec["mean_bpd_default"]) and _positive(prec["default_first_s"])

    att = s["attack_gradient"]
    assert _positive(att["compile_s"]) and _positive(att["run_s"]) and _positive(att["grad_norm"])
    assert "n=2 probes" in att["settings"]["config"]  # the multi-probe gradient (it once crashed XLA:CPU)
    assert math.isfinite(att["objective_value"])

    train = s["train"]
    assert (train["resumed"], train["start_step"], train["end_step"], train["steps_done"]) == (False, 0, 3, 3)
    assert _positive(train["images_per_s"]) and train["data_source"] == "toy-1024"
    _check_export(train, 3)

    # Again into the same train dir, the environment section forced to fail: recorded, and the
    # training after it continues the run from its checkpoint instead of starting over.
    again, _ = _run(tmp_path, "second", "--sections", "environment,train", "--fail-section", "environment")
    s2 = again["sections"]
    assert sorted(s2) == sorted(SECTIONS) and again["finished"]
    assert s2["environment"]["status"] == "error" and "ForcedFailure" in s2["environment"]["error"]
    assert "--fail-section environment" in s2["environment"]["traceback"]
    assert {s2[name]["status"] for name in SECTIONS[1:-1]} == {"not selected"}
    train2 = s2["train"]
    assert train2["status"] == "ok", train2.get("traceback")
    assert (train2["resumed"], train2["start_step"], train2["end_step"]) == (True, 3, 6)
    _check_export(train2, 6)
    assert train2["export"]["sha256"] != train["export"]["sha256"]


def test_the_real_run_keeps_the_papers_settings_and_leaves_time_to_train():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gc
    spec.loader.exec_module(gc)
    plan = gc.full_plan("none")
    assert plan.throughput_profiles == ("small", "paper") and set(plan.dtypes) == {"float32", "bfloat16"}
    assert (plan.n_classes, plan.n_probes, plan.attack_probes) == (10, 30, 10)
    for ode in (plan.ode, plan.attack_ode):
        assert (ode.solver, ode.rtol, ode.atol, ode.eps, ode.n_steps) == ("dopri5", 1e-5, 1e-5, 1e-5, None)
    # the model trained is the one the workstation profile loads (tests/test_book.py: producible)
    assert (plan.train_profile, plan.train_steps) == (gc.GPU_MODEL.train_profile, gc.GPU_MODEL.steps)
    # at the estimates (start-up ~15 s), the default budget leaves at least a minute of training
    left = 480 - 15 - sum(s for _, s in plan.estimates_s) - gc.EXPORT_RESERVE_S - plan.setup_reserve_s
    assert left >= max(plan.min_train_s, 60), left
