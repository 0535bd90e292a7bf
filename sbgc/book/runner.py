"""Execute the book's notebooks with papermill and build the book with jupyter-book.

    python -m sbgc.book run --profile ci [--only 01_method] [-p key=value ...] [--keep-going] [--shard I/N]
    python -m sbgc.book build

``run`` reads each registered notebook (``sbgc.book.profiles.NOTEBOOKS``, in reading order) from its
jupytext file ``notebooks/<name>.py``, injects ``profile`` and the ``-p`` overrides into its
``parameters`` cell and executes it headless in the repository root, writing the executed copy to
``book/notebooks/<name>.ipynb``, where the book reads it. A failing cell stops the run with an error
naming the notebook (the failed copy, with the traceback, is still written); the process exits 1.
The kernels share a persistent JAX compilation cache (``$JAX_COMPILATION_CACHE_DIR``, default
``<repo>/.jax_cache``).

``build`` renders the executed notebooks (jupyter-book does not execute anything) with
``jb build book -W -n --keep-going``: any Sphinx warning fails it. It first checks that every
notebook in ``book/_toc.yml`` has been executed and writes ``book/notebooks/_runs.md`` (the table of
which run produced each page, included by the introduction) from the executed notebooks and
``results/*.json``, and ``book/notebooks/_findings.md`` (the findings page's table, included by
``book/findings.md``: one row per claim of the paper, from ``results/*.json``, :mod:`sbgc.book.findings`);
afterwards it checks that every image output of every executed notebook is in the built HTML.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import html.parser
import json
import re
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sbgc.book import findings, profiles, provenance
from sbgc.cache import CACHE_ENV, FORMAT, MODES
from sbgc.report import markdown_table
from sbgc.shard import SHARD_ENV, Shard, current_shard, parse_shard
from sbgc.storage import repo_root

REPO = repo_root()
NOTEBOOK_SOURCES = REPO / "notebooks"
BOOK = REPO / "book"
EXECUTED = "notebooks"  # folder of executed notebooks, relative to the book
RUNS_TABLE = "_runs.md"  # generated inside the executed-notebooks folder
FINDINGS_TABLE = "_findings.md"  # generated there too; included by the page findings.md
IMAGE_MIMES = ("image/svg+xml", "image/png", "image/jpeg")  # myst-nb's HTML render priority


class NotebookError(RuntimeError):
    """A notebook failed to execute; the message names it and where its executed copy is."""


# --- running ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _environment(updates: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block (they inherit them)."""
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def kernel_environment(results_dir: Path | None = None, cache_dir: Path | None = None) -> dict[str, str]:
    """Variables the kernels need: the shared JAX cache (unless set) and, optionally, the results
    folder and the results cache's folder."""
    cache = os.environ.get(provenance.JAX_CACHE_ENV) or str(provenance.default_jax_cache_dir())
    env = {provenance.JAX_CACHE_ENV: cache}
    if results_dir is not None:
        env[provenance.RESULTS_ENV] = str(results_dir)
    if cache_dir is not None:
        env[CACHE_ENV] = str(cache_dir)
    return env


def execute_notebook(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    cwd: Path = REPO,
    results_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> float:
    """Execute the jupytext notebook ``source`` with ``parameters`` into ``output``; returns seconds.

    Raises NotebookError naming ``source`` when a cell fails (``output`` still holds the failed run).
    """
    import jupytext
    import papermill

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f"notebook source {source} does not exist")
    notebook = jupytext.read(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _environment(kernel_environment(results_dir, cache_dir)):
        try:
            papermill.execute_notebook(
                notebook,
                str(output),
                parameters=dict(parameters),
                kernel_name="python3",
                language="python",
                cwd=str(cwd),
                progress_bar=False,
            )
        except papermill.PapermillExecutionError as err:
            raise NotebookError(
                f"notebook {source.stem} ({source}) failed in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}\nexecuted copy with the traceback: {output}"
            ) from err
        except Exception as err:  # the kernel died, a cell timed out, ...: name the notebook too
            raise NotebookError(
                f"notebook {source.stem} ({source}) did not finish: {type(err).__name__}: {err}"
            ) from err
    seconds = time.perf_counter() - start
    remove_parameter_cells(output)
    return seconds


def remove_parameter_cells(notebook: Path) -> None:
    """Tag the ``parameters`` cell and papermill's ``injected-parameters`` cell ``remove-cell``, so a
    page opens with its question, not with the run's settings (the runs table names them)."""
    nb = json.loads(Path(notebook).read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    Path(notebook).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def select_notebooks(only: Sequence[str] | None) -> list[str]:
    """Registered notebooks in reading order, or the ``only`` ones (each must be registered)."""
    if not only:
        return list(profiles.NOTEBOOKS)
    for name in only:
        profiles.knob_names(name)  # raises for an unknown name
    return [name for name in profiles.NOTEBOOKS if name in only]


def notebook_parameters(name: str, profile: str, overrides: Mapping[str, str], cache: str = "use") -> dict[str, Any]:
    """Papermill parameters for one notebook: the profile, typed, the overrides it has knobs for, and
    the results-cache mode (:data:`sbgc.cache.MODES`)."""
    if cache not in MODES:
        raise ValueError(f"cache mode must be one of {', '.join(MODES)}, got {cache!r}")
    own = {k: v for k, v in overrides.items() if k in profiles.knob_names(name)}
    params = profiles.chapter_params(name, profile, own)
    values = params.values
    return {"profile": profile, "overrides": {k: _plain(values[k]) for k in params.overridden}, "cache": cache}


def _plain(value: Any) -> Any:
    """Tuples as lists (papermill writes parameters as Python literals; JSON metadata has no tuples);
    a knob set to None as the text ``"none"`` (a None override means "the profile's value")."""
    if value is None:
        return "none"
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def run(
    profile: str,
    *,
    only: Sequence[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    keep_going: bool = False,
    sources: Path = NOTEBOOK_SOURCES,
    book: Path = BOOK,
    results: Path | None = None,
    cache: str = "use",
    cache_dir: Path | None = None,
    shard: Shard | None = None,
    jobs: int = 1,
) -> dict[str, float]:
    """Execute the selected notebooks at ``profile``, ``jobs`` at a time (:func:`run_each`); returns
    seconds per notebook.

    Each override must be a knob of at least one selected notebook; it is passed to those that
    have it. Raises NotebookError after the first failure (or, with ``keep_going``, after all).
    ``results`` redirects the notebooks' ``results/*.json`` (default: ``<repo>/results``);
    ``cache`` is the results cache's mode and ``cache_dir`` its folder (default ``results-cache/``).
    ``shard``: this process is one of N filling that cache together (:mod:`sbgc.shard`; the kernels
    get ``$SBGC_SHARD``); None: as ``$SBGC_SHARD`` says (unset: alone).
    """
    profiles.check_profile(profile)
    if shard is not None and not shard.alone and cache == "recompute":
        raise ValueError(f"shard {shard}: --cache recompute cannot be sharded (the shards could not tell new "
                         "entries from old ones); run the shards into a fresh --out folder instead")
    names = select_notebooks(only)
    overrides = dict(overrides or {})
    known = {k for name in names for k in profiles.knob_names(name)}
    if set(overrides) - known:
        raise ValueError(
            f"no selected notebook has knob(s) {', '.join(sorted(set(overrides) - known))}; "
            f"knobs: {', '.join(sorted(known))}"
        )
    plans = {name: notebook_parameters(name, profile, overrides, cache) for name in names}  # validate all first

    def execute(name: str, parameters: dict[str, Any]) -> float:
        print(f"[sbgc.book.runner] {name}: profile {profile}, parameters {parameters}", flush=True)
        seconds = execute_notebook(sources / f"{name}.py", book / EXECUTED / f"{name}.ipynb", parameters,
                                   results_dir=results, cache_dir=cache_dir)
        print(f"[sbgc.book.runner] {name}: done in {seconds:.1f} s", flush=True)
        return seconds

    with _environment({} if shard is None else {SHARD_ENV: str(shard)}):  # the kernels inherit it
        return run_each({name: functools.partial(execute, name, p) for name, p in plans.items()}, jobs=jobs,
                        keep_going=keep_going)


def run_each(tasks: Mapping[str, Callable[[], float]], *, jobs: int = 1, keep_going: bool = False) -> dict[str, float]:
    """Run every task (name → a function returning its seconds), ``jobs`` at a time; returns the seconds
    in the order of ``tasks``.

    A task executes a notebook in its own kernel process, so ``jobs`` tasks run side by side in threads of
    this process (on 2 CPU cores two chapters together take ~1.4x less time than one after the other:
    much of a chapter is single-threaded XLA compilation). On a GPU keep 1: each kernel would claim most
    of the device's memory. A NotebookError stops the tasks not yet started and is raised once the
    running ones end (with ``keep_going``: every task runs, and all failures are raised together).
    """
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    seconds: dict[str, float] = {}
    failures: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {name: pool.submit(task) for name, task in tasks.items()}
        for name, future in futures.items():
            try:
                seconds[name] = future.result()
            except concurrent.futures.CancelledError:
                continue
            except NotebookError as err:
                failures.append(str(err))
                if not keep_going:
                    for other in futures.values():
                        other.cancel()  # those not started; the running ones finish
    if failures:
        raise NotebookError("\n\n".join(failures))
    return {name: seconds[name] for name in tasks if name in seconds}


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` → ``{key: value}`` (values stay text; knobs give them their type)."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected a parameter as key=value, got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


# --- building ---------------------------------------------------------------------------------------
def toc_files(book: Path = BOOK) -> list[str]:
    """Every ``file:``/``root:`` entry of ``<book>/_toc.yml``, in order (paths without suffix)."""
    import yaml

    toc_path = book / "_toc.yml"
    if not toc_path.is_file():
        raise FileNotFoundError(f"no table of contents at {toc_path}")

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    yield str(Path(node[key]).with_suffix(""))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(yaml.safe_load(toc_path.read_text())))


def executed_notebooks(book: Path = BOOK) -> list[Path]:
    """The executed ``.ipynb`` of every notebook entry of the toc; raises if one is missing or failed."""
    entries = [entry for entry in toc_files(book) if entry.startswith(f"{EXECUTED}/")]
    missing = [entry for entry in entries if not (book / f"{entry}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"the toc lists notebook(s) not executed yet: {', '.join(missing)} "
            f"(expected {book / EXECUTED}/<name>.ipynb); run `python -m sbgc.book run` first"
        )
    paths = [book / f"{entry}.ipynb" for entry in entries]
    failed = [p.stem for p in paths if json.loads(p.read_text()).get("metadata", {}).get("papermill", {}).get("exception")]
    if failed:
        raise RuntimeError(f"the last run of notebook(s) {', '.join(failed)} failed; fix and run them again")
    return paths


def cache_entries(record: Any) -> list[dict[str, Any]]:
    """The results-cache records (:mod:`sbgc.cache`) found anywhere in a results record, each once."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("format") == FORMAT and "key" in node:
                found.setdefault(node["key"], node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(record)
    return list(found.values())


def runs_table(notebooks: Sequence[Path], results: Path | None = None) -> str:
    """Markdown table of which run produced each page: papermill metadata + results/<name>.json,
    with the compute time of the cached results the page loaded (summed over its cache entries)."""
    results = results or provenance.results_dir()
    rows = []
    for path in notebooks:
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        parameters = dict(meta.get("parameters", {}))
        profile = parameters.get("profile", "?")
        given = parameters.get("overrides") or {}
        overrides = ", ".join(f"{k}={v}" for k, v in given.items()) or "none"
        duration = f"{meta['duration']:.0f} s" if meta.get("duration") is not None else "?"
        finished = str(meta.get("end_time", "?"))[:19].replace("T", " ")
        device, commit, cached = "?", "?", "none"
        result_path = results / f"{path.stem}.json"
        if result_path.is_file():
            record = json.loads(result_path.read_text())
            prov = record.get("provenance", {})
            if prov.get("profile") == profile:
                device = f"{prov['device']['device_kind']} ({prov['device']['platform']})"
                commit = prov["commit"][:8] + (" + changes" if prov.get("dirty") else "")
                entries = cache_entries(record.get("numbers"))
                if entries:
                    hours = sum(e["seconds"] for e in entries) / 3600
                    cached = f"{hours:.2f} h in {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        rows.append((path.stem, f"`{profile}`", overrides, duration, finished, device, commit, cached))
    return markdown_table(("page", "profile", "overrides", "run time", "finished (UTC)", "device", "commit",
                           "cached results: compute time"), rows) + "\n"


class _ImageSources(html.parser.HTMLParser):
    """Collects the ``src`` of every ``<img>`` of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.extend(value for key, value in attrs if key == "src" and value)


def notebook_image_hashes(notebook: Path) -> list[str]:
    """sha256 of every image output of an executed notebook (one per output, the MIME type myst-nb shows)."""
    hashes = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            mime = next((m for m in IMAGE_MIMES if m in data), None)
            if mime is None:
                continue
            payload = data[mime]
            payload = "".join(payload) if isinstance(payload, list) else payload
            raw = payload.encode() if mime == "image/svg+xml" else base64.b64decode(payload)
            hashes.append(hashlib.sha256(raw).hexdigest())
    return hashes


def html_image_hashes(page: Path) -> list[str]:
    """sha256 of every local image an HTML page shows."""
    parser = _ImageSources()
    parser.feed(page.read_text())
    hashes = []
    for src in parser.sources:
        if src.startswith("data:"):
            header, _, payload = src.partition(",")
            raw = base64.b64decode(payload) if header.endswith(";base64") else payload.encode()
        else:
            file = (page.parent / src.split("?")[0]).resolve()
            if not file.is_file():
                continue
            raw = file.read_bytes()
        hashes.append(hashlib.sha256(raw).hexdigest())
    return hashes


def html_page(book: Path, notebook: Path, html_dir: Path) -> Path:
    """The built HTML page of an executed notebook; RuntimeError if the build did not write it."""
    page = html_dir / notebook.relative_to(book).with_suffix(".html")
    if not page.is_file():
        raise RuntimeError(f"no HTML page {page} for executed notebook {notebook}")
    return page


def check_figures(book: Path, notebooks: Sequence[Path], html_dir: Path | None = None) -> dict[str, int]:
    """Check that every image output of every executed notebook is shown in the built HTML.

    Returns images per notebook; raises RuntimeError naming the notebook and the missing count.
    """
    html_dir = html_dir or book / "_build" / "html"
    counts = {}
    for notebook in notebooks:
        page = html_page(book, notebook, html_dir)
        wanted = notebook_image_hashes(notebook)
        shown = set(html_image_hashes(page))
        missing = [h for h in wanted if h not in shown]
        if missing:
            raise RuntimeError(
                f"{len(missing)} of {len(wanted)} figure(s) of {notebook.stem} are not in {page}"
            )
        counts[notebook.stem] = len(wanted)
    return counts


def markdown_table_count(notebook: Path) -> int:
    """Markdown tables an executed notebook shows: in its markdown cells and its text/markdown outputs
    (a table = a line starting with ``|`` followed by an alignment row ``| --- |``)."""
    texts = []
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell.get("cell_type") == "markdown":
            texts.append("".join(cell.get("source", "")))
        for output in cell.get("outputs", []):
            md = output.get("data", {}).get("text/markdown")
            if md is not None:
                texts.append("".join(md) if isinstance(md, list) else md)
    count = 0
    for text in texts:
        lines = [line.strip() for line in text.splitlines()]
        count += sum(1 for a, b in zip(lines, lines[1:]) if a.startswith("|") and _ALIGN_ROW.fullmatch(b))
    return count


_ALIGN_ROW = re.compile(r"\|(\s*:?-{3,}:?\s*\|)+")


def check_tables(book: Path, notebooks: Sequence[Path], html_dir: Path | None = None) -> dict[str, int]:
    """Check that every markdown table of every executed notebook became an HTML ``<table>``.

    A cell holding an unescaped ``|`` turns a whole table into a paragraph of raw text without any
    warning from the build; this catches it. Returns tables per notebook; raises RuntimeError naming
    the notebook and both counts.
    """
    html_dir = html_dir or book / "_build" / "html"
    counts = {}
    for notebook in notebooks:
        page = html_page(book, notebook, html_dir)
        wanted, shown = markdown_table_count(notebook), page.read_text().count("<table")
        if shown < wanted:
            raise RuntimeError(f"{notebook.stem}: {wanted} markdown table(s) but only {shown} HTML table(s) in {page}; "
                               "a cell probably holds an unescaped '|' (build tables with sbgc.report.markdown_table)")
        counts[notebook.stem] = wanted
    return counts


def check_offline_math(html_dir: Path) -> int:
    """Check that every page loads MathJax from the built book itself (formulas render offline).

    Returns the number of pages checked; raises RuntimeError naming a page that loads it elsewhere.
    """
    pages = sorted(html_dir.rglob("*.html"))
    for page in pages:
        sources = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', page.read_text(), flags=re.IGNORECASE)
        for src in sources:
            local = (page.parent / src.split("?")[0]).resolve()
            if "://" in src or not local.is_file():
                raise RuntimeError(f"{page} loads MathJax from {src}, not from the book (no formulas offline)")
    return len(pages)


def jb_command() -> list[str]:
    """The jupyter-book executable of this interpreter's environment (or the one on PATH)."""
    local = Path(sys.executable).parent / "jb"
    return [str(local)] if local.is_file() else ["jb"]


def check_findings(html_dir: Path) -> bool:
    """Check that the findings page, where the book has one, shows its table; returns whether it has one."""
    page = html_dir / "findings.html"
    if page.is_file() and "<table" not in page.read_text():
        raise RuntimeError(f"{page} shows no table: the generated {FINDINGS_TABLE} did not render as one")
    return page.is_file()


def build(book: Path = BOOK, *, results: Path | None = None) -> dict[str, int]:
    """Build the HTML book from executed notebooks; returns the figure count per notebook.

    ``results``: the folder of the chapters' results files the runs table and the findings page are made from
    (default :func:`sbgc.book.provenance.results_dir`). Raises FileNotFoundError for a toc notebook not yet
    executed, RuntimeError when ``jb`` fails (any warning) or a figure is missing from the HTML.
    """
    notebooks = executed_notebooks(book)
    results = results or provenance.results_dir()
    (book / EXECUTED).mkdir(parents=True, exist_ok=True)
    (book / EXECUTED / RUNS_TABLE).write_text(runs_table(notebooks, results))
    findings.write_findings(book / EXECUTED / FINDINGS_TABLE, results, linked=toc_files(book))
    # --path-output: without it jb writes next to the _config.yml it finds (the repository root)
    command = [*jb_command(), "build", str(book), "--path-output", str(book), "-W", "-n", "--keep-going"]
    print("[sbgc.book.runner] " + " ".join(command), flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed with exit status {done.returncode}")
    counts = check_figures(book, notebooks)
    print(f"[sbgc.book.runner] figures in the HTML: {counts}", flush=True)
    print(f"[sbgc.book.runner] tables in the HTML: {check_tables(book, notebooks)}", flush=True)
    print(f"[sbgc.book.runner] MathJax served locally on {check_offline_math(book / '_build' / 'html')} pages", flush=True)
    if check_findings(book / "_build" / "html"):
        print(f"[sbgc.book.runner] findings page built from {results}", flush=True)
    return counts


# --- command line ---------------------------------------------------------------------------------
def scratch_dirs(root: Path) -> dict[str, Path]:
    """:func:`run`'s folders for a scratch run under ``root`` (``--out``): executed notebooks, results, cache."""
    return {"book": root, "results": root / "results", "cache_dir": root / "cache"}


def shard_dirs(shard: Shard, out: Path | None) -> dict[str, Path]:
    """:func:`run`'s folders for shard I of N: shard 0 writes where an unsharded run would (the book,
    or ``out``); the others write their executed notebooks and results under ``build/shard-I-of-N``
    (or ``out/shard-I-of-N``), all into the same results cache."""
    dirs = {} if out is None else scratch_dirs(out)
    if shard.index == 0:
        return dirs
    root = (REPO / "build" if out is None else out) / f"shard-{shard.index}-of-{shard.count}"
    return {**dirs, "book": root, "results": root / "results"}


def produce_models(profile: str, *, plan_only: bool = False, allow_cpu: bool = False, dry_run: Path | None = None,
                   jobs: int = 1) -> None:
    """``python -m sbgc.book models``: print the profile's model plan, train what is missing
    (:mod:`sbgc.book.models`); with ``dry_run``, then run every chapter on those models with shrunk
    knobs, all under ``dry_run``, ``jobs`` chapters at a time."""
    from sbgc.book import models

    steps = models.plan(profile, dry_run=dry_run)
    print("\n".join(f"[sbgc.book.models] {s.describe()}" for s in steps), flush=True)
    if plan_only:
        return
    if dry_run is None and not allow_cpu:
        models.require_accelerator(steps, profile)
    models.produce(steps)
    if dry_run is not None:
        steps = models.plan(profile, dry_run=dry_run)

        def chapter(name: str) -> float:
            return run(profile, only=[name], overrides=models.dry_run_overrides(profile, steps, name), cache="recompute",
                       **scratch_dirs(dry_run))[name]

        run_each({name: functools.partial(chapter, name) for name in models.dry_run_chapters(profile)}, jobs=jobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbgc.book", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="execute the notebooks with papermill")
    run_cmd.add_argument("--profile", default="ci", help=f"one of {', '.join(profiles.PROFILES)}")
    run_cmd.add_argument("--only", action="append", metavar="NAME", help="run only this notebook (repeatable)")
    run_cmd.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                         help="override a knob of the profile, e.g. n_images=20 or ode.rtol=1e-3 (repeatable)")
    run_cmd.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    run_cmd.add_argument("--jobs", type=int, default=1, metavar="N",
                         help="execute N notebooks side by side (CPU; on a GPU keep 1: each kernel claims its memory)")
    run_cmd.add_argument("--cache", default="use", choices=MODES,
                         help="results cache (results-cache/): load or compute and store (use), load only and fail "
                              "on a missing entry (read-only), or compute and overwrite (recompute)")
    run_cmd.add_argument("--out", default=None, metavar="DIR",
                         help="write executed notebooks, results and the cache under DIR instead of book/notebooks, "
                              "results/ and results-cache/ (a scratch run that leaves the book alone)")
    run_cmd.add_argument("--shard", default=None, metavar="I/N",
                         help="be process I of N filling one results cache on a shared file system (a job array): "
                              "each missing entry is computed by one shard, the others wait for it; shard 0 writes "
                              "the book, the others write under build/shard-I-of-N")
    models_cmd = commands.add_parser("models", help="train and export the models the profile needs that are missing "
                                                    "(prints the plan and estimated times first; resumable)")
    models_cmd.add_argument("--profile", default="mnist", help=f"one of {', '.join(profiles.PROFILES)}")
    models_cmd.add_argument("--plan", action="store_true", help="print the plan only")
    models_cmd.add_argument("--allow-cpu", action="store_true", help="train a GPU profile's models on a CPU")
    models_cmd.add_argument("--dry-run", default=None, metavar="DIR",
                            help="the whole pipeline on this machine, every stage shrunk, everything under DIR: "
                                 "each model trained for 2 steps, then every chapter at the profile with the knobs "
                                 "of a CPU profile of its dataset")
    models_cmd.add_argument("--jobs", type=int, default=1, metavar="N", help="with --dry-run: N chapters side by side")
    build_cmd = commands.add_parser("build", help="build the HTML book (jb build book -W -n --keep-going)")
    build_cmd.add_argument("--results", default=None, metavar="DIR",
                           help="the results files the runs table and the findings page are made from (default: "
                                f"${provenance.RESULTS_ENV} or results/; a scratch run's: DIR/results)")
    commands.add_parser("list", help="list the profiles (dataset, models) and every notebook's knobs")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            shard = parse_shard(args.shard) if args.shard else current_shard()
            out = shard_dirs(shard, None if args.out is None else Path(args.out))
            seconds = run(args.profile, only=args.only, overrides=parse_overrides(args.param),
                          keep_going=args.keep_going, cache=args.cache, shard=shard, jobs=args.jobs, **out)
            print("[sbgc.book.runner] " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
        elif args.command == "models":
            produce_models(args.profile, plan_only=args.plan, allow_cpu=args.allow_cpu,
                           dry_run=None if args.dry_run is None else Path(args.dry_run), jobs=args.jobs)
        elif args.command == "build":
            build(results=None if args.results is None else Path(args.results))
        else:
            print("\n".join(profiles.describe()))
    except (NotebookError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"[sbgc.book.runner] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
