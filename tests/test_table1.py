"""Table 1 / Fig. 1 helpers: intervals, summaries, the paper's rows, training logs."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from sbgc.experiments import table1
from sbgc.stats import Estimate, binomial_interval, mean_estimate, sign_test_p
from sbgc.train import baseline
from sbgc.train import pretrained


def test_accuracy_and_mean_estimates():
    acc = table1.accuracy_estimate(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]))
    assert (acc.value, acc.n, acc.successes) == (0.75, 4, 3) and (acc.lo, acc.hi) == pytest.approx(binomial_interval(3, 4))
    assert acc.method == "clopper-pearson" and acc.fmt(2) == f"0.75 [{acc.lo:.2f}, {acc.hi:.2f}] (n = 4)"
    with pytest.raises(ValueError, match="matching non-empty"):
        table1.accuracy_estimate(np.array([0, 1]), np.array([0]))
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):  # the Student-t interval covers the true mean ~95 % of the time
        m = mean_estimate(rng.normal(3.0, 1.0, size=8))
        covered += m.lo <= 3.0 <= m.hi
    assert 0.9 <= covered / 200 <= 0.99
    x = np.array([1.0, 2.0, 4.0])
    m = mean_estimate(x)
    assert m.se == pytest.approx(np.std(x, ddof=1) / np.sqrt(3)) and m.excludes(10.0) and not m.excludes(2.3)
    one = mean_estimate(np.array([3.2]))
    assert one.value == 3.2 and np.isnan(one.lo) and one.as_dict()["lo"] is None and one.fmt(1) == "3.2 (n/a) (n = 1)"
    assert not one.excludes(100.0)  # no interval: nothing is excluded
    assert sign_test_p(12, 12) == pytest.approx(2 / 2**12) and sign_test_p(3, 6) == pytest.approx(1.0)


def test_summarize_generative_uses_the_true_class_and_the_argmax():
    log_p = np.array([[-10.0, -5.0, -7.0], [-1.0, -3.0, -2.0]])
    bpd = np.array([[4.0, 3.0, 3.5], [2.0, 2.5, 2.2]])
    s = table1.summarize_generative(log_p, bpd, np.array([3.1, 2.1]), np.array([1, 2]), np.full((2, 3), 50))
    assert s.accuracy.value == 0.5  # image 0 → class 1 (right), image 1 → class 0 (wrong)
    assert s.bpd_true_class.value == pytest.approx((3.0 + 2.2) / 2)
    assert s.bpd_marginal.value == pytest.approx(2.6) and s.mean_nfe == 50
    with pytest.raises(ValueError, match="expected log_p and bpd"):
        table1.summarize_generative(log_p, bpd[:, :2], np.zeros(2), np.array([0, 1]), np.zeros((2, 3)))


def test_table_marks_paper_rows_and_shows_ours():
    est = Estimate(0.5, 0.4, 0.6, 100)
    md = table1.table_markdown([("SBGC", est, Estimate(3.5, 3.4, 3.6, 10), "ci"), ("WRN", est, None, "ci")])
    lines = md.splitlines()
    paper_lines = [line for line in lines if "| paper |" in line]
    assert len(paper_lines) == len(table1.PAPER_TABLE1) and any("95.04 | 3.11" in line for line in paper_lines)
    ours = [line for line in lines if "ours: ci" in line]
    assert len(ours) == 2 and "50.0 [40.0, 60.0]" in ours[0] and "3.500 [3.400, 3.600]" in ours[0]
    assert ours[1].endswith("| N/A |")
    fig = table1.plot_fig1([("SBGC", est, Estimate(3.5, float("nan"), float("nan"), 1))])
    assert len(fig.axes[0].collections) >= 4  # three paper points with both numbers + ours


def test_every_shipped_parameter_file_has_its_training_log():
    for path in [pretrained.resolve_path(n) for n in pretrained.SHIPPED] + [
        baseline.REPO / p for p in baseline.SHIPPED.values()
    ]:
        log = table1.read_training_log(table1.training_log_path(path))
        meta_step = __import__("json").loads(path.with_name(path.name + ".json").read_text())["step"]
        assert log["step"][-1] == meta_step, f"{path.name}: log ends at {log['step'][-1]}, parameters at {meta_step}"
        assert np.all(np.diff(log["step"]) > 0) and np.all(np.isfinite(log["loss"]))


def test_read_training_log_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training log"):
        table1.read_training_log(tmp_path / "x.csv")
    (tmp_path / "e.csv").write_text("step,loss\n")
    with pytest.raises(ValueError, match="no rows"):
        table1.read_training_log(tmp_path / "e.csv")
    assert table1.training_log_path("a/b/m.msgpack").name == "m_train_log.csv"


def test_probe_noise_separates_the_probes_spread_from_the_images():
    rng = np.random.default_rng(0)
    b, c, n, dim = 400, 3, 8, 784
    image = rng.normal(0.0, 20.0, b)[:, None, None]  # log p of each image: spread 20 nats over images
    probes = rng.normal(0.0, 5.0, (b, 1, n))  # the same probe for every class: spread 5 nats
    lp = -1000.0 + image + probes + np.array([0.0, -30.0, -40.0])[None, :, None]  # class 0 dominates p(x)
    noise = table1.probe_noise(lp, dim)
    to_bpd = 1.0 / (dim * np.log(2.0))
    assert noise.sd_probe == pytest.approx(5.0 * to_bpd, rel=0.05)
    assert noise.sd_image == pytest.approx(np.sqrt(20.0**2 + 5.0**2 / n) * to_bpd, rel=0.1)
    assert noise.standard_error(100, 1) > noise.standard_error(100, 30) > noise.standard_error(400, 30)
    with pytest.raises(ValueError, match="two probes"):
        table1.probe_noise(lp[..., :1], dim)


def test_decision_comparison_counts_agreement_with_the_reference():
    labels = np.array([0, 1, 2, 3])
    md = table1.decision_comparison(labels, ("ref", np.array([0, 1, 2, 0])), [("cheap", np.array([0, 1, 1, 3]))])
    assert "| ref | 4 | 75.0" in md and "| cheap | 4 | 75.0" in md and "50.0% (2 differ)" in md
    with pytest.raises(ValueError, match="cheap"):
        table1.decision_comparison(labels, ("ref", labels), [("cheap", labels[:3])])


def test_reference_check_and_score_summary():
    rng = np.random.default_rng(1)
    lp = rng.normal(0, 1.0, (4, 3, 5)) + np.array([9.0, 0, 0])[None, :, None]
    labels = np.array([0, 0, 1, 0])
    check = table1.reference_check(labels, ("ref", lp.mean(-1).argmax(1)), [("cheap", np.array([0, 0, 0, 1]))],
                                   lp, 784, 1000)  # fmt: skip
    assert check.record["accuracy"]["value"] == 0.75 and check.record["agreement"] == {"cheap": 0.75}
    assert "1,000 images" in check.probe_text and "| cheap | 4 |" in check.table
    s = table1.score_summary(lp.mean(-1), np.full(4, 30.0), labels, 784)
    assert s.accuracy.value == 0.75 and s.mean_nfe == 10.0 and s.as_dict()["mean_nfe"] == 10.0
