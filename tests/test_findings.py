"""The findings page (sbgc.book.findings): one row per claim of the paper, generated from results files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from sbgc.book import findings as fd
from sbgc.book import runner as book
from sbgc.experiments.corruption_robustness import PAPER_TABLE2
from sbgc.experiments.table1 import PAPER_TABLE1
from sbgc.experiments.table3 import PAPER_TABLE3
from sbgc.storage import repo_root

REPO = repo_root()
ODE = {"data": "mnist", "ode.n_probes": 1, "ode.rtol": 1e-3, "ode.atol": 1e-3, "ode.eps": 1e-5, "ode.solver": "dopri5",
       "ode.n_steps": None}


def estimate(value, lo, hi, n):
    return {"value": value, "lo": lo, "hi": hi, "n": n, "level": 0.95}


def record(chapter, numbers, **params):
    return {"notebook": chapter, "numbers": numbers, "provenance": {
        "profile": "mnist", "params": {**ODE, **params}, "sample_sizes": {"images": 100, "probes": 1},
        "commit": "0123456789abcdef", "dirty": True, "timestamp": "2026-12-07T16:51:37+00:00",
        "device": {"platform": "cpu", "device_kind": "cpu", "device_count": 1, "host_cpus": 2}}}


def group(correct, total, images=100, settings=15):
    acc = correct / total
    return {"correct": correct, "total": total, "n_images": images, "n_settings": settings, "accuracy": acc,
            "lo": acc - 0.01, "hi": acc + 0.01, "boot_lo": acc - 0.02, "boot_hi": acc + 0.02}


def attack(robust, n, eps):
    return {"epsilon": eps, "steps": 20, "stepsize": eps / 4, "loss": "margin", "random_start": True,
            "clean_accuracy": 0.9, "robust_accuracy": robust, "n": n}


def fake_results(folder: Path, *, sbgc_right_only=4, baseline_right_only=73) -> Path:
    """A results folder with a record for every chapter a claim reads, in the form the chapters write."""
    folder.mkdir(parents=True, exist_ok=True)
    records = {
        "02_table1": record("02_table1", {
            "sbgc": {"mnist": {"accuracy": estimate(0.921, 0.903, 0.937, 1000),
                               "bpd_marginal": estimate(1.174, 1.159, 1.189, 1000)}},
            "classifier": {"estimator": "ODE, 30 probes", "accuracy": estimate(0.921, 0.903, 0.937, 1000)},
            "paired": {"mnist": {"baseline": estimate(0.99, 0.982, 0.995, 1000),
                                 "baseline_right_sbgc_wrong": baseline_right_only,
                                 "sbgc_right_baseline_wrong": sbgc_right_only}},
            "baseline": "wrn_mnist_cpu.msgpack (WRN-10-2, sha256 81afc06dfb8f…)",
            "published": [{"model": "ABS (Schott et al. 2019)", "accuracy": 99.0, "bpd": None,
                           "kind": "generative classifier", "dataset": "MNIST", "source": "Schott et al. 2019"},
                          {"model": "FFJORD (Grathwohl et al.)", "accuracy": None, "bpd": 0.99,
                           "kind": "generative (no classifier)", "dataset": "MNIST", "source": "FFJORD"}]}),
        "03_corruptions": record("03_corruptions", {
            "family": "MNIST-C", "baseline": {"architecture": "WRN-10-2"},
            "sbgc": {"table2": {"all": group(380, 1500)}},
            "baseline_same_images": {"table2": {"all": group(950, 1500)}},
            "paired_difference_sbgc_minus_baseline": {
                "all": {"difference": -0.25, "lo": -0.27, "hi": -0.23},
                "all_wo_noise": {"difference": -0.23, "lo": -0.25, "hi": -0.21}},
            "robustness_verdict": {"verdict": "less_robust", "text": "…"}}),
        "04_adversarial": record("04_adversarial", {
            "attacks": {"sbgc_linf": attack(0.0, 100, 0.3), "base_linf": attack(0.0, 1000, 0.3),
                        "sbgc_l2": attack(0.3, 100, 1.5), "base_l2": attack(0.115, 1000, 1.5)},
            "sbgc_logits": "n=1 probes, dopri5 rtol=0.001", "baseline": "wrn (WRN-10-2, sha256 …)"}),
        "05_interpolation": record("05_interpolation", {
            "convexity": {"below_chord": estimate(1.0, 0.964, 1.0, 100), "midpoint": estimate(871.2, 815.4, 926.9, 100),
                          "verdict": "convex", "n_pairs": 100},
            "ts": [0.0, 0.25, 0.5, 0.75, 1.0]}),
        "06_convergence": record("06_convergence", {
            "reference": {"estimator": "ODE, 30 probes", "n_images": 72, "accuracy": 0.972,
                          "accuracy_ci95": [0.903, 0.997]},
            "fig3": {"ms": list(range(1, 31)), "accuracy_mean": [0.917] + [0.96] * 29, "sufficient_repetitions": 3,
                     "sufficient_tolerance": 0.019}}),
        "07_compute": record("07_compute", {
            "reference": {"label": "n = 30, rtol 0.001", "n_images": 60, "passes_per_image_mean": 17634.0,
                          "seconds_per_image": 63.4},
            "cheapest_matching_bound": {"label": "K₁ = 10, keep 2, K₂ = 50", "passes_per_image_mean": 210.0,
                                        "seconds_per_image": 0.88}}),
    }
    for name, rec in records.items():
        (folder / f"{name}.json").write_text(json.dumps(rec))
    return folder


def rows(markdown: str) -> list[list[str]]:
    """The body rows of the page's table, split into cells at the unescaped pipes."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_every_claim_gets_a_row_with_its_numbers_sample_verdict_and_source(tmp_path):
    page = fd.findings_markdown(fake_results(tmp_path / "results"), linked={"notebooks/02_table1"})
    table = rows(page)
    assert len(table) == len(fd.CLAIMS) >= 9 and all(len(r) == 7 for r in table)
    by_chapter = {c.chapter for c in fd.CLAIMS}
    assert {"02_table1", "03_corruptions", "04_adversarial", "05_interpolation", "06_convergence",
            "07_compute"} <= by_chapter
    assert not any(r[5].startswith(f"**{fd.NOT_COMPUTED}**") for r in table)
    verdicts = [re.match(r"\*\*(.+?)\*\*", r[5]).group(1) for r in table]
    # accuracy: −6.9 points [−8.6, −5.2] is entirely below −1 point; ABS's 99.0 % lies above our interval;
    # bits/dim: another data set; corruptions: less robust; L∞ 0/100 broken; L2 30/100 not; convex; 3 ≤ 10 probes
    assert verdicts == [fd.FAILS, fd.FAILS, fd.NOT_COMPARABLE, fd.HOLDS, fd.HOLDS, fd.FAILS, fd.HOLDS, fd.HOLDS,
                        fd.NOT_COMPARABLE]
    first = table[0]
    assert "MNIST: SBGC 92.1 % [90.3, 93.7]" in first[3] and "WRN-10-2 99.0 %" in first[3]
    assert "n = 1,000 test images" in first[4] and "ODE, 30 probes" in first[4]  # sample size and estimator
    assert "{doc}`chapter 02 </notebooks/02_table1>`" in first[6] and "02_table1.json" in first[6]
    assert "profile `mnist`, commit 01234567 + changes, 2026-12-07" in first[6]
    assert "chapter 03 (`notebooks/03_corruptions`)" in table[3][6]  # not in the toc: named, not linked
    assert "432" not in page and "1,500 cases" in table[3][4]  # the fake file's sample, not the reference run's
    assert "(**published**)" in table[1][3] and "{cite:p}`schott2019towards`" in table[1][3]
    # every rule is stated on the page, numbered like the rows
    assert all(f"{i}. *{c.claim}*: {c.rule}" in page for i, c in enumerate(fd.CLAIMS, 1))


def test_the_paper_column_quotes_the_constants_of_the_experiments(tmp_path):
    page = fd.findings_markdown(tmp_path)
    sbgc1 = next(r for r in PAPER_TABLE1 if r.model.startswith("SBGC ("))
    assert f"SBGC {sbgc1.accuracy:.2f} %" in page and f"SBGC {sbgc1.bpd} bits/dim" in page
    sbgc2 = next(r for r in PAPER_TABLE2 if r[0] == "SBGC")
    assert f"SBGC {sbgc2[3]:.2f} %" in page
    assert f"N = 216): SBGC {PAPER_TABLE3[0].linf:.2f} %" in page and "ε = 8/255" in page
    assert all("**paper** (CIFAR-10)" in line for line in page.splitlines() if line.startswith("| # |"))


def test_a_gap_within_one_point_holds_and_an_undecided_one_is_inconclusive(tmp_path):
    holds = fake_results(tmp_path / "a", sbgc_right_only=3, baseline_right_only=5)  # −0.2 points [−0.7, +0.3]
    assert rows(fd.findings_markdown(holds))[0][5].startswith(f"**{fd.HOLDS}**")
    wide = fake_results(tmp_path / "b", sbgc_right_only=3, baseline_right_only=15)  # −1.2 points [−2.0, −0.4]
    assert rows(fd.findings_markdown(wide))[0][5].startswith(f"**{fd.INCONCLUSIVE}**")


def test_missing_partial_and_broken_results_give_not_computed_rows(tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    table = rows(fd.findings_markdown(empty))
    assert len(table) == len(fd.CLAIMS)
    assert all(r[5].startswith(f"**{fd.NOT_COMPUTED}**") and "does not exist" in r[5] for r in table)

    results = fake_results(tmp_path / "results")
    partial = json.loads((results / "02_table1.json").read_text())
    del partial["numbers"]["paired"]  # an older or partial run of chapter 02
    (results / "02_table1.json").write_text(json.dumps(partial))
    (results / "05_interpolation.json").write_text('{"notebook": "05_interp')  # cut off mid-write
    (results / "06_convergence.json").unlink()
    (results / "07_compute.json").write_text(json.dumps(record("07_compute", {"reference": {"label": "x"}})))
    table = rows(fd.findings_markdown(results))
    verdict = {i + 1: r[5] for i, r in enumerate(table)}
    assert verdict[1].startswith("**not computed**") and "has no `numbers → paired`" in verdict[1]
    assert verdict[2].startswith("**does not hold**")  # the rows of the same file that have their numbers
    assert "is not a readable JSON file" in verdict[7] and "06_convergence.json` does not exist" in verdict[8]
    assert "has no `numbers → reference → passes_per_image_mean`" in verdict[9]
    assert verdict[4].startswith("**holds**")  # the other chapters are unaffected
    assert table[0][3] == "–" and table[0][4] == "–"


def test_every_citation_is_in_the_bibliography(tmp_path):
    bib = (REPO / "book" / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", bib, flags=re.MULTILINE)
    assert len(keys) == len(set(keys)) and {"zimmermann2021score", "song2021maximum", "schott2019towards",
                                            "mu2019mnistc", "li2023diffusion", "hendrycks2019benchmarking",
                                            "madry2018towards", "fetaya2020understanding"} <= set(keys)
    page = fd.findings_markdown(fake_results(tmp_path / "results"))
    cited = set(re.findall(r"\{cite:[pt]\}`([^`]+)`", page)) | {key for _, key in fd.CITATIONS}
    assert cited <= set(keys), cited - set(keys)
    for entry in re.split(r"\n(?=@)", bib.split("\n@", 1)[1]):
        assert re.search(r"^\s*(author|title|year) = ", entry, flags=re.MULTILINE), entry  # the fields a style needs


def test_the_book_lists_the_findings_first_and_the_references_last():
    assert book.toc_files()[:2] == ["intro", "findings"] and book.toc_files()[-1] == "references"
    assert f"{{include}} {book.EXECUTED}/{book.FINDINGS_TABLE}" in (REPO / "book" / "findings.md").read_text()
    assert "{bibliography}" in (REPO / "book" / "references.md").read_text()
    import yaml

    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["bibtex_bibfiles"] == ["references.bib"] and (REPO / "book" / "references.bib").is_file()


def test_paired_difference_and_decide():
    diff, lo, hi = fd.paired_difference(4, 73, 1000)
    assert diff == pytest.approx(-0.069) and lo < diff < hi and hi - lo == pytest.approx(2 * 1.96 * 0.0085, rel=0.01)
    assert fd.paired_difference(0, 0, 10) == (0.0, 0.0, 0.0)
    assert fd.decide(0.1, 0.2, 0.05, above_holds=True) == fd.HOLDS
    assert fd.decide(0.0, 0.04, 0.05, above_holds=False) == fd.HOLDS
    assert fd.decide(0.0, 0.06, 0.05, above_holds=False) == fd.INCONCLUSIVE
    assert fd.budget(8 / 255) == "8/255" and fd.budget(0.3) == "0.3" and fd.budget(1.5) == "1.5"
    assert fd.model_name("wrn_mnist_cpu.msgpack (WRN-10-2, sha256 81af…)") == "WRN-10-2"


def test_build_writes_the_page_and_renders_its_citations(tmp_path):
    """A book of an intro, the findings page and the references: the build writes the page from the results
    folder, jupyter-book renders its table and citations without a warning, and a missing file is a row."""
    root = tmp_path / "book"
    root.mkdir()
    (root / "_config.yml").write_text(
        'title: "fixture"\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: "off"\n'
        "bibtex_bibfiles:\n  - references.bib\n"
        "sphinx:\n  extra_extensions:\n    - sphinx-mathjax-offline\n"
        "  config:\n    bibtex_reference_style: author_year\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: findings\n  - file: references\n")
    (root / "intro.md").write_text("# Fixture\n")
    for page in ("findings.md", "references.md", "references.bib"):
        shutil.copy(REPO / "book" / page, root / page)
    results = fake_results(tmp_path / "results")
    (results / "04_adversarial.json").unlink()
    book.build(root, results=results)
    assert "not computed" in (root / book.EXECUTED / book.FINDINGS_TABLE).read_text()
    html = (root / "_build" / "html" / "findings.html").read_text()
    assert "<table" in html and "Zimmermann" in html and "cite:p" not in html
    assert "Schott" in (root / "_build" / "html" / "references.html").read_text()
