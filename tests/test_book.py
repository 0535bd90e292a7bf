"""The book frame: profiles, provenance, the papermill runner and the jupyter-book build."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import textwrap
from pathlib import Path

import jupytext
import numpy as np
import pytest

from sbgc.book import runner as book
from sbgc.book import profiles
from sbgc.book import provenance

FIXTURE_HEADER = textwrap.dedent(
    """\
    # %% tags=["parameters"]
    profile = "ci"
    overrides = {}
    cache = "use"
    """
)


def write_source(path: Path, body: str, header: str = FIXTURE_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + textwrap.dedent(body))
    return path


# --- profiles -------------------------------------------------------------------------------------
def test_profile_defaults_and_typed_overrides():
    ci = profiles.chapter_params("01_method", "ci")
    paper = profiles.chapter_params("01_method", "paper")
    assert ci.profile == "ci" and ci.overridden == ()
    assert ci.grid_size < paper.grid_size and ci.n_train_per_class < paper.n_train_per_class
    # text from `-p key=value` takes the field's type; None means "profile default"
    p = profiles.chapter_params("01_method", "ci", {"grid_size": "12", "rtol": "1e-4", "seed": None})
    assert p.grid_size == 12 and isinstance(p.grid_size, int)
    assert p.rtol == 1e-4 and p.overridden == ("grid_size", "rtol")
    assert p.seed == ci.seed and p.n_layers == ci.n_layers


def test_nested_list_and_model_knobs_are_typed():
    p = profiles.chapter_params("07_compute", "ci", {"ode_rtols": "1e-2, 1e-3", "pruning": "10/2/50,20/3/100",
                                                   "bound_times": [5, 7], "checkpoint": "runs/x.msgpack"})
    assert p.ode_rtols == (1e-2, 1e-3) and p.pruning == ((10, 2, 50), (20, 3, 100)) and p.bound_times == (5, 7)
    assert p.checkpoint == "runs/x.msgpack" and p.values["checkpoint"] == "runs/x.msgpack"
    q = profiles.chapter_params("04_adversarial", "ci", {"ode.rtol": "1e-3", "ode.n_steps": "none"})
    assert q.ode.rtol == 1e-3 and q.ode.n_steps is None and q.ode.atol == 1e-2  # the rest of the group stays
    assert q.ode.solver_settings().rtol == 1e-3 and q.values["ode.rtol"] == 1e-3
    assert profiles.chapter_params("04_adversarial", "ci").ode.n_steps == 4  # the profile itself is unchanged
    assert "| `ode.rtol` | 0.001 (set explicitly) |" in q.to_markdown()
    # `-p bound_times=none` reaches the notebook as a knob set to None, not as "the profile's value"
    sent = book.notebook_parameters("04_adversarial", "mnist", book.parse_overrides(["bound_times=none"]))
    assert sent["overrides"] == {"bound_times": "none"}
    assert profiles.chapter_params("04_adversarial", "mnist", sent["overrides"]).bound_times is None
    assert profiles.chapter_params("04_adversarial", "mnist").bound_times is not None


@pytest.mark.parametrize(
    "notebook, overrides, message",
    [
        ("01_method", dict(profile="laptop"), "ci, mnist, ci_cifar10, workstation, paper"),
        ("01_method", dict(grid_siz=3), "no knob 'grid_siz'"),
        ("01_method", dict(grid_size="1.5"), "expects int"),
        ("01_method", dict(rtol="tight"), "expects float"),
        ("02_table1", dict(ode="loose"), "is a group"),
        ("02_table1", {"ode.rtoll": 1e-3}, "no knob 'ode.rtoll'"),
        ("07_compute", dict(pruning="10/2"), "expects"),
        ("05_interpolation", dict(baseline="ci"), "no knob 'baseline'"),  # the chapter loads no baseline
    ],
)
def test_bad_parameters_raise_naming_what_was_expected(notebook, overrides, message):
    profile = overrides.pop("profile", "ci")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        profiles.chapter_params(notebook, profile, overrides)


def test_registry_matches_toc_and_parameter_cells():
    toc = [e.split("/", 1)[1] for e in book.toc_files() if e.startswith("notebooks/")]
    assert toc == list(profiles.NOTEBOOKS), "book/_toc.yml and sbgc.book.profiles.NOTEBOOKS disagree"
    for name in profiles.NOTEBOOKS:
        nb = jupytext.read(book.NOTEBOOK_SOURCES / f"{name}.py")
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, f"{name} needs exactly one parameters cell"
        assigned = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line}
        assert assigned == {"profile", "overrides", "cache"}, \
            f"{name}: the parameters cell holds profile, overrides and the cache mode only"
        assert f'chapter_params("{name}", profile, overrides)' in nb_text(name), f"{name} must resolve its own knobs"


def nb_text(name: str) -> str:
    return (book.NOTEBOOK_SOURCES / f"{name}.py").read_text()


def test_a_chapter_cannot_evaluate_another_dataset_than_its_profile():
    ci = profiles.PROFILES["ci_cifar10"]
    chapters = dict(ci.chapters)
    chapters["06_convergence"] = dataclasses.replace(chapters["06_convergence"], data="mnist")
    with pytest.raises(ValueError, match="data 'mnist' is not an evaluation split of cifar10"):
        dataclasses.replace(ci, chapters=chapters)
    mnist = profiles.PROFILES["mnist"]
    chapters = dict(mnist.chapters)
    chapters["03_corruptions"] = dataclasses.replace(chapters["03_corruptions"], corruptions=("frost",))
    with pytest.raises(ValueError, match=r"corruptions \['frost'\] are not mnist's"):
        dataclasses.replace(mnist, chapters=chapters)
    chapters = dict(mnist.chapters)
    chapters["02_table1"] = dataclasses.replace(chapters["02_table1"], exact_data="exact_head")
    with pytest.raises(ValueError, match="exact_data 'exact_head' is not an evaluation split of mnist"):
        dataclasses.replace(mnist, chapters=chapters)


def test_ci_and_reference_profiles_measure_mnist_with_the_shipped_models():
    for name in ("ci", "mnist"):
        prof = profiles.PROFILES[name]
        assert prof.dataset == "mnist" and prof.sbgc.name == "mnist" and prof.baseline.name == "mnist"
        assert prof.plain_cnn.name == "mnist_cnn"  # MNIST-C's kind of CNN beside WRN-10-2 (chapters 03 and 04)
        assert profiles.chapter_params("03_corruptions", name).plain_cnn == "mnist_cnn"
    assert profiles.chapter_params("04_adversarial", "ci_cifar10").plain_cnn == "none"  # no CIFAR-10 plain CNN
    # the ci run's Table 1 images are the reference run's first ones, with the same keys (a subset check)
    ci, ref = (profiles.chapter_params("02_table1", p) for p in ("ci", "mnist"))
    assert ci.ode == ref.ode and ci.seed == ref.seed and ci.n_images < ref.n_images
    assert ref.n_images >= 1_000 and ref.n_baseline_images == 10_000


def test_every_model_a_profile_uses_is_shipped_or_producible():
    from sbgc.train import baseline, pretrained, score

    for prof in profiles.PROFILES.values():
        for spec in prof.models():
            shipped = pretrained.SHIPPED if spec.kind == "sbgc" else baseline.SHIPPED
            path = spec.path()
            assert path.suffix == ".msgpack", f"{prof.name}: {spec.name} does not resolve to an exported file"
            if spec.name in shipped:
                assert path.is_file(), f"{prof.name}: shipped model {spec.name} is missing at {path}"
                continue
            # producible: its training profile exists, trains on the profile's dataset, and the
            # export command writes exactly the file the chapters load
            trainer = score.get_train_config if spec.kind == "sbgc" else baseline.get_baseline_train_config
            assert trainer(spec.train_profile).data == prof.dataset, f"{prof.name}: {spec.name} trains on other data"
            train_cmd, export_cmd = spec.commands()
            assert f"--profile {spec.train_profile}" in train_cmd and f"--steps {spec.steps}" in train_cmd
            assert profiles.REPO / export_cmd.split("--out ")[1] == path
            # one training folder per model, the same in the printed commands and the pipeline's plan
            assert f"--workdir {spec.workdir()}" in train_cmd and spec.workdir() == Path("runs") / path.stem


# --- provenance -----------------------------------------------------------------------------------
def test_results_record_provenance_and_reject_non_finite(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "a.bin").write_bytes(b"weights")
    params = profiles.chapter_params("01_method", "workstation", {"seed": 3})
    prov = provenance.collect_provenance(params, data_source="fixture", sample_sizes={"test": 5}, checkpoint=ckpt)
    path = provenance.write_results({"acc": np.float32(0.5), "curve": np.arange(3)}, prov, directory=tmp_path)
    record = json.loads(path.read_text())
    assert record["numbers"] == {"acc": 0.5, "curve": [0, 1, 2]}
    p = record["provenance"]
    assert p["profile"] == "workstation" and p["params"]["seed"] == 3 and p["overridden"] == ["seed"]
    assert p["sample_sizes"] == {"test": 5} and len(p["checkpoint_sha256"]) == 64
    assert p["device"]["platform"] and p["device"]["jax_version"] and p["timestamp"].endswith("+00:00")
    # a folder's hash changes with any of its files
    (ckpt / "a.bin").write_bytes(b"weightz")
    assert provenance.sha256_of(ckpt) != p["checkpoint_sha256"]
    line = provenance.provenance_line(prov, note="toy")
    assert "`workstation`" in line and "seed=3" in line and "test 5" in line and p["commit"][:7] in line
    with pytest.raises(ValueError, match=r"numbers.acc is nan"):
        provenance.write_results({"acc": math.nan}, prov, directory=tmp_path)


# --- running --------------------------------------------------------------------------------------
def test_override_reaches_the_notebook_and_its_results(tmp_path):
    write_source(
        tmp_path / "src" / "01_method.py",
        """\
        # %%
        from sbgc.book.profiles import chapter_params
        from sbgc.book.provenance import collect_provenance, write_results
        P = chapter_params("01_method", profile, overrides)
        write_results({"seed_seen": P.seed}, collect_provenance(P, data_source="fixture"))
        """,
    )
    overrides = book.parse_overrides(["seed=7"])
    seconds = book.run("workstation", only=["01_method"], overrides=overrides,
                       sources=tmp_path / "src", book=tmp_path / "book", results=tmp_path / "results")
    record = json.loads((tmp_path / "results" / "01_method.json").read_text())
    assert record["numbers"] == {"seed_seen": 7}
    assert record["provenance"]["profile"] == "workstation"
    assert record["provenance"]["overridden"] == ["seed"]
    executed = json.loads((tmp_path / "book" / "notebooks" / "01_method.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"profile": "workstation", "overrides": {"seed": 7},
                                                               "cache": "use"}
    assert seconds["01_method"] > 0


CACHED_CHAPTER = """\
# %%
import numpy as np
from sbgc.cache import CacheKey, chapter_cache
from sbgc.book.profiles import chapter_params
from sbgc.book.provenance import collect_provenance, write_results
P = chapter_params("01_method", profile, overrides)
entry = chapter_cache(cache).get(CacheKey("fixture", 1, P.knobs, "0" * 64, "fixture data", np.arange(3)),
                                 lambda: {"x": np.full(3, float(P.seed))})
write_results({"x": entry.arrays["x"], "computed_now": entry.computed_now},
              collect_provenance(P, data_source="fixture"))
"""


@pytest.mark.slow
def test_cache_modes_reach_the_notebooks(tmp_path):
    """use: compute once, then load; read-only: a missing entry fails the notebook; --out keeps the book alone."""
    write_source(tmp_path / "src" / "01_method.py", CACHED_CHAPTER)
    kw = dict(only=["01_method"], sources=tmp_path / "src", book=tmp_path / "out", results=tmp_path / "out" / "results",
              cache_dir=tmp_path / "out" / "cache")

    def numbers():
        return json.loads((tmp_path / "out" / "results" / "01_method.json").read_text())["numbers"]

    book.run("ci", **kw)
    assert numbers() == {"x": [0.0, 0.0, 0.0], "computed_now": True}
    book.run("ci", **kw)
    assert numbers()["computed_now"] is False  # loaded, verified
    book.run("ci", cache="recompute", **kw)
    assert numbers()["computed_now"] is True
    with pytest.raises(book.NotebookError, match="read-only"):  # another seed: not in the cache
        book.run("ci", overrides={"seed": "5"}, cache="read-only", **kw)
    with pytest.raises(ValueError, match="cache mode"):
        book.run("ci", cache="sometimes", **kw)


def test_failing_cell_names_the_notebook_and_keeps_the_executed_copy(tmp_path):
    source = write_source(tmp_path / "broken_chapter.py", '# %%\nraise RuntimeError("boom at cell two")\n')
    root = make_fixture_book(tmp_path / "book", ["broken_chapter"])
    out = root / "notebooks" / "broken_chapter.ipynb"
    with pytest.raises(book.NotebookError, match=r"notebook broken_chapter .*boom at cell two"):
        book.execute_notebook(source, out, {"profile": "ci"})
    assert "boom at cell two" in out.read_text()
    with pytest.raises(RuntimeError, match="broken_chapter failed"):  # the book is not built from it
        book.build(root, results=tmp_path)


def test_cli_rejects_bad_input_with_exit_status_1(capsys):
    assert book.main(["run", "--profile", "laptop"]) == 1
    assert "ci, mnist, ci_cifar10, workstation, paper" in capsys.readouterr().err
    assert book.main(["run", "--only", "01_method", "-p", "no_such_knob=1"]) == 1
    assert "no_such_knob" in capsys.readouterr().err
    with pytest.raises(ValueError, match="key=value"):
        book.parse_overrides(["seed"])


# --- building -------------------------------------------------------------------------------------
FIGURES = """\
# %% [markdown]
# # Figures
# %%
import matplotlib
import matplotlib.pyplot as plt
for k in range(2):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [k, 1 - k])
    plt.show()
# %% [markdown]
# Text between the figures, with math $p(x \\mid y)$.
# %%
fig, ax = plt.subplots(figsize=(2, 2))
ax.imshow([[0, 1], [1, 0]])
ax.set_title("third")
"""


TABLES = """\
# %% [markdown]
# # Tables

# %%
from IPython.display import Markdown, display
from sbgc.report import markdown_table
display(Markdown(markdown_table(("set", "bits/dim of p(x | y)"), [("a", 1.0)])))

# %% [markdown]
# A formula, $\\log p(x)$, and a hand-written table:
#
# | a | b |
# | --- | --- |
# | 1 | 2 |
"""


def make_fixture_book(root: Path, chapters: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / "_config.yml").write_text(
        'title: "fixture"\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: "off"\n'
        "sphinx:\n  extra_extensions:\n    - sphinx-mathjax-offline\n"
        "  config:\n    nb_render_markdown_format: myst\n"  # as the book: markdown outputs may hold tables
    )
    toc = "format: jb-book\nroot: intro\nchapters:\n" + "".join(f"  - file: notebooks/{c}\n" for c in chapters)
    (root / "_toc.yml").write_text(toc)
    (root / "intro.md").write_text("# Fixture\n\n```{include} notebooks/_runs.md\n```\n")
    return root


def test_build_shows_every_figure_of_every_notebook(tmp_path):
    root = make_fixture_book(tmp_path / "book", ["figs"])
    source = write_source(tmp_path / "figs.py", FIGURES)
    book.execute_notebook(source, root / "notebooks" / "figs.ipynb", {"profile": "ci"})
    assert len(book.notebook_image_hashes(root / "notebooks" / "figs.ipynb")) == 3

    assert book.build(root, results=tmp_path) == {"figs": 3}
    assert "figs" in (root / "_build" / "html" / "intro.html").read_text()  # the runs table

    # the check fails when the HTML lacks a figure the notebook has
    executed = root / "notebooks" / "figs.ipynb"
    nb = json.loads(executed.read_text())
    extra = {"output_type": "display_data", "metadata": {},
             "data": {"image/png": base64.b64encode(b"an image the HTML never saw").decode()}}
    nb["cells"][-1]["outputs"].append(extra)
    executed.write_text(json.dumps(nb))
    with pytest.raises(RuntimeError, match=r"1 of 4 figure\(s\) of figs"):
        book.check_figures(root, [executed])


def test_build_checks_tables_and_offline_math(tmp_path):
    root = make_fixture_book(tmp_path / "book", ["tables"])
    source = write_source(tmp_path / "tables.py", TABLES)
    executed = root / "notebooks" / "tables.ipynb"
    book.execute_notebook(source, executed, {"profile": "ci"})
    book.build(root, results=tmp_path)  # runs both checks
    html = root / "_build" / "html"
    assert book.check_tables(root, [executed]) == {"tables": 2}
    assert book.check_offline_math(html) >= 2
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # a table whose cell holds an unescaped "|" is a paragraph in the HTML: the check names it
    nb = json.loads(executed.read_text())
    broken = {"output_type": "display_data", "metadata": {},
              "data": {"text/markdown": "| a | p(x | y) |\n| --- | --- |\n| 1 | 2 |", "text/plain": "x"}}
    [c for c in nb["cells"] if c["cell_type"] == "code"][-1]["outputs"].append(broken)
    executed.write_text(json.dumps(nb))
    with pytest.raises(RuntimeError, match=r"tables: 3 markdown table\(s\) but only 2 HTML table"):
        book.check_tables(root, [executed])
    # a page that loads MathJax from a CDN is named
    (html / "cdn.html").write_text('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>')
    with pytest.raises(RuntimeError, match="cdn.html loads MathJax from https://"):
        book.check_offline_math(html)


def test_build_refuses_a_toc_notebook_not_executed(tmp_path):
    root = make_fixture_book(tmp_path / "book", ["never_run"])
    with pytest.raises(FileNotFoundError, match="never_run"):
        book.build(root, results=tmp_path)


def test_runs_table_sums_the_cached_compute_time_of_a_page():
    rec = {"format": "sbgc-result-cache/1", "key": "k1", "seconds": 1800.0}
    other = {"format": "sbgc-result-cache/1", "key": "k2", "seconds": 5400.0}
    numbers = {"a": {"cache": rec}, "b": [rec, other], "c": {"format": "something else", "key": "k3", "seconds": 1}}
    assert sorted(e["key"] for e in book.cache_entries(numbers)) == ["k1", "k2"]  # each entry once
    assert book.cache_entries({"x": [1, 2]}) == []


def test_run_each_runs_tasks_side_by_side_in_order_and_stops_after_a_failure():
    import threading
    import time

    started, both = [], threading.Barrier(2, timeout=10)

    def task(name, seconds, fail=False, meet=False):
        def run():
            started.append(name)
            if meet:
                both.wait()  # returns only when two tasks run at once
            time.sleep(seconds)
            if fail:
                raise book.NotebookError(f"{name} failed")
            return seconds
        return run

    out = book.run_each({"a": task("a", 0.2, meet=True), "b": task("b", 0.01, meet=True), "c": task("c", 0.0)}, jobs=2)
    assert list(out) == ["a", "b", "c"] and out["a"] == 0.2  # the order of the tasks, not of their ends
    started.clear()
    with pytest.raises(book.NotebookError, match="a failed"):
        book.run_each({"a": task("a", 0.05, fail=True), "b": task("b", 0.5), "c": task("c", 0.5), "d": task("d", 0.0)},
                      jobs=2)
    assert "a" in started and "b" in started and "d" not in started  # the running ones end, the rest never start
    with pytest.raises(book.NotebookError, match=r"(?s)a failed.*c failed"):
        book.run_each({"a": task("a", 0.0, fail=True), "b": task("b", 0.0), "c": task("c", 0.0, fail=True)},
                      jobs=1, keep_going=True)
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        book.run_each({}, jobs=0)


def test_the_convergence_knobs_refuse_budgets_and_samples_that_do_not_nest():
    knobs = profiles.PROFILES["mnist"].chapters["06_convergence"]
    knobs.check()
    with pytest.raises(ValueError, match="dividing the largest"):
        dataclasses.replace(knobs, bound_times=(8, 24, 64))
    with pytest.raises(ValueError, match="weightings"):
        dataclasses.replace(knobs, weightings=("cosine",))
    with pytest.raises(ValueError, match="n_compare_images <= n_reference_images <= n_images"):
        dataclasses.replace(knobs, n_reference_images=knobs.n_images + 1).check()
    with pytest.raises(ValueError, match="pruning"):
        dataclasses.replace(knobs, pruning=((24, 2),)).check()
    with pytest.raises(ValueError, match="n_tight_images <= n_reference_images"):
        dataclasses.replace(knobs, tight_rtol=1e-5, n_tight_images=knobs.n_reference_images + 1).check()


def test_table1_knobs_nest_the_reference_and_the_classifier_is_a_scorer():
    from sbgc.method import scorers

    knobs = profiles.PROFILES["mnist"].chapters["02_table1"]
    knobs.check()
    assert isinstance(knobs.classifier.scorer(), scorers.Bound)
    pruned = profiles.BoundScore(n_times=64, first_times=16, keep=3)
    assert isinstance(pruned.scorer(), scorers.Pruned) and pruned.scorer().keep == 3
    assert "K = 16" in pruned.describe() and "3 best" in pruned.describe()
    with pytest.raises(ValueError, match="weighting"):
        profiles.BoundScore(weighting="cosine")
    with pytest.raises(ValueError, match="n_reference_images"):
        dataclasses.replace(knobs, n_reference_images=knobs.n_images + 1).check()
    with pytest.raises(ValueError, match="the ODE classifies"):
        dataclasses.replace(knobs, classifier=None, n_bpd_images=knobs.n_images - 1).check()
    # a field of an optional knob group is typed like any other
    p = profiles.chapter_params("02_table1", "mnist", {"classifier.n_times": "32", "classifier.first_times": "8"})
    assert p.knobs.classifier.n_times == 32 and p.knobs.classifier.first_times == 8


def test_an_optional_group_is_a_knob_of_its_own_in_every_profile():
    # a profile where the group is off (workstation: classifier None) and one where it is on (mnist) name the same knobs
    names = profiles.knob_names("02_table1")
    assert {"classifier", "classifier.n_times", "reference", "reference.n_probes"} <= set(names)
    assert "ode" not in names  # a group that is always on is set field by field
    sent = book.notebook_parameters("02_table1", "mnist", book.parse_overrides(["classifier=none"]))
    assert sent["overrides"] == {"classifier": "none"}
    assert profiles.chapter_params("02_table1", "mnist", sent["overrides"]).classifier is None
    # a field of a group that is off turns it on from the group's defaults
    p = profiles.chapter_params("02_table1", "workstation", {"classifier.n_times": "32"})
    assert p.classifier == profiles.BoundScore(n_times=32)
    listing = "\n".join(profiles.describe())
    assert "  classifier.n_times: ci=16, mnist=64, ci_cifar10=None" in listing and "  classifier: ci=on" in listing


VISIBLE_CODE_LINES = 100  # a page narrates; the library computes (plumbing goes in hide-input cells)


@pytest.mark.parametrize("name", list(profiles.NOTEBOOKS))
def test_a_page_shows_at_most_a_hundred_lines_of_code(name):
    nb = jupytext.read(book.NOTEBOOK_SOURCES / f"{name}.py")
    hidden = {"hide-cell", "hide-input", "parameters", "remove-cell", "remove-input"}
    visible = [line for c in nb.cells if c.cell_type == "code" and not hidden & set(c.metadata.get("tags", []))
               for line in c.source.splitlines() if line.strip()]
    assert len(visible) <= VISIBLE_CODE_LINES, f"{name}: {len(visible)} visible code lines"


def test_chapters_06_and_07_share_the_reference_and_the_rule_that_matches_it():
    for name, prof in profiles.PROFILES.items():
        conv, cost = prof.chapters["06_convergence"], prof.chapters["07_compute"]
        assert cost.reference == conv.ode and cost.tolerance == conv.tolerance, name


def test_a_cheaper_setting_matches_when_it_is_at_most_the_tolerance_below_the_reference():
    import types

    from sbgc.experiments import compute

    ref = types.SimpleNamespace(accuracy=0.97)
    pt = lambda method, acc, passes: types.SimpleNamespace(method=method, accuracy=acc,  # noqa: E731
                                                          passes=np.array([passes]))
    points = [pt("bound", 0.92, 100), pt("bound", 0.966, 300), pt("uniform-t score", 0.98, 200)]
    # 92 % lies inside a 100-image interval of 97 % ([91.5, 99.4]) but 5 points below: it does not match
    assert compute.cheapest_match(points, ref, ("bound",), 0.005).passes[0] == 300
    assert compute.cheapest_match(points, ref, ("bound", "uniform-t score"), 0.005).passes[0] == 200
    assert compute.cheapest_match(points, ref, ("bound",), 0.001) is None
