"""The findings page: one row per claim of the paper, generated from the chapters' ``results/*.json``.

:func:`findings_markdown` reads the results files the chapters write (:func:`sbgc.book.provenance.write_results`)
and returns the body of the book's page ``findings.md``: for each claim of the paper its CIFAR-10 number, marked
**paper** and quoted from the constants of :mod:`sbgc.experiments` (never retyped here), this book's number with
its interval and sample size, the estimator and setting the results file records, a verdict computed by a rule
stated on the page, and the chapter and results file the row comes from. ``python -m sbgc.book build`` writes it
to ``book/notebooks/_findings.md`` (included by ``book/findings.md``) before jupyter-book runs.

A results file that does not exist, is not JSON, or lacks a number the row needs (a chapter not run, failed, or
written by an older version of it) gives a row whose verdict is **not computed** and says what is missing; it
never stops the build.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from sbgc.experiments.corruption_robustness import PAPER_TABLE2
from sbgc.experiments.table1 import PAPER_TABLE1
from sbgc.experiments.table3 import PAPER_TABLE3
from sbgc.report import markdown_table
from sbgc.stats import binomial_interval
from sbgc.storage import repo_root

# --- verdicts --------------------------------------------------------------------------------------------
HOLDS, PARTLY, FAILS = "holds", "partly", "does not hold"
INCONCLUSIVE, NOT_COMPARABLE, NOT_COMPUTED = "inconclusive", "not comparable", "not computed"
VERDICTS = {
    HOLDS: "the paper's claim holds for this book's measurement, by the row's rule",
    PARTLY: "the claim holds for some of the groups the rule looks at and fails for others",
    FAILS: "this book's measurement contradicts the claim, by the row's rule",
    INCONCLUSIVE: "the interval is too wide to decide at this sample size",
    NOT_COMPARABLE: "the paper's number has no counterpart here that could agree or disagree with it (another "
                    "data set, network or machine); the row says what can be compared in kind",
    NOT_COMPUTED: "no results file, or one without this number: the chapter has not been run into this results "
                  "folder, its run failed, or the file was written by an older version of the chapter",
}
ACCURACY_GAP = 0.01  # the paper's SBGC is 0.38 points behind its WideResNet: "nearly as accurate" = within 1 point
BROKEN_LEVEL = 0.05  # "no adversarial robustness": robust accuracy below 5 % (the paper: 0.00 % of 216 images)
ENOUGH_PROBES = 10  # the paper: n = 10 trace-estimator draws are "nearly asymptotic"
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile

# The works the rows quote, by a name that appears in the quoted row (first match wins): keys of book/references.bib.
CITATIONS = (
    ("Zimmermann", "zimmermann2021score"), ("SBGC", "zimmermann2021score"), ("Mackowiak", "mackowiak2021generative"),
    ("Fetaya", "fetaya2020understanding"), ("Ardizzone", "ardizzone2020training"), ("FFJORD", "grathwohl2019ffjord"),
    ("Grathwohl", "grathwohl2020your"), ("Targ", "targ2016resnet"), ("Dosovitskiy", "dosovitskiy2020image"),
    ("Dhariwal", "kingma2018glow"), ("VDM", "kingma2021variational"), ("Real NVP", "dinh2017density"),
    ("Schott", "schott2019towards"), ("Madry", "madry2018towards"), ("Hendrycks", "hendrycks2020augmix"),
    ("Calian", "calian2021defending"), ("Rebuffi", "rebuffi2021fixing"),
)


def cite(key: str) -> str:
    """A parenthetical citation of a ``book/references.bib`` key (sphinxcontrib-bibtex's MyST role)."""
    return f"{{cite:p}}`{key}`"


def cite_for(name: str) -> str:
    """The citation of the work a quoted row (``name``: its model or source) comes from; "" if none is known."""
    return next((cite(key) for word, key in CITATIONS if word in name), "")


class Missing(Exception):
    """A number a row needs is not in the results file (the message names it)."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """What a results file says about one claim: this book's number(s), the setting, the verdict and why."""

    ours: str
    setting: str
    verdict: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper: what it says, its **paper** number, the chapter that re-measures it, the rule
    that turns the measurement into a verdict, and ``measure`` (a results record → a :class:`Finding`; it
    raises :class:`Missing`, KeyError, TypeError or ValueError when the record lacks what it needs)."""

    claim: str
    paper: str
    chapter: str
    rule: str
    measure: Callable[[Mapping[str, Any]], Finding]


# --- reading a results record ----------------------------------------------------------------------------
class Found(dict):
    """A mapping :func:`at` found, with the path it was found at (``where``), so that a look-up in it that
    fails names the whole path from the record."""

    where: tuple = ()


def at(record: Any, *path: Any) -> Any:
    """``record[path[0]][path[1]]…``; :class:`Missing` naming the path (from the record, where ``record`` was
    itself found by :func:`at`) where a step is absent or None."""
    where = getattr(record, "where", ())
    node = record
    for i, step in enumerate(path):
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
        if node is None:
            raise Missing(" → ".join(str(p) for p in where + path[: i + 1]))
    if isinstance(node, dict):
        node = Found(node)
        node.where = where + path
    return node


def params(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return at(record, "provenance", "params")


def dataset_label(record: Mapping[str, Any]) -> str:
    """The data set of a chapter's run, as a reader names it ("MNIST", "CIFAR-10")."""
    data = str(at(params(record), "data"))
    return "CIFAR-10" if data.startswith("cifar10") else data.upper() if data == "mnist" else data


def ode_setting(p: Mapping[str, Any]) -> str:
    """The probability-flow ODE settings among a run's parameters (``ode.*``), in words; "" if it has none."""
    if "ode.solver" not in p:
        return ""
    probes = p.get("ode.n_probes")
    steps = (f"{p['ode.n_steps']} fixed steps" if p.get("ode.n_steps")
             else f"rtol {p.get('ode.rtol'):g}, atol {p.get('ode.atol'):g}")
    return f"ODE ({p['ode.solver']}, {steps}, ε {p.get('ode.eps'):g}), {probes} probe{'' if probes == 1 else 's'}"


def sample_sizes(record: Mapping[str, Any]) -> str:
    """The sample sizes the results file's provenance records, e.g. "images 1,000, probes 1"."""
    sizes = record.get("provenance", {}).get("sample_sizes") or {}
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in sizes.items())


def model_name(describe: Any) -> str:
    """The architecture in a checkpoint's description ("wrn_mnist_cpu.msgpack (WRN-10-2, sha256 …)" → "WRN-10-2")."""
    found = re.search(r"\(([^,()]+)", str(describe))
    return found.group(1).strip() if found else "the discriminative baseline"


def device_text(record: Mapping[str, Any]) -> str:
    """The machine a chapter ran on, from its provenance: "cpu (cpu, 2 host CPUs)"; "" if not recorded."""
    dev = record.get("provenance", {}).get("device") or {}
    if not dev.get("device_kind"):
        return ""
    count = f"{dev['device_count']}× " if (dev.get("device_count") or 1) > 1 else ""
    return f"{count}{dev['device_kind']} ({dev.get('platform', '?')}, {dev.get('host_cpus', '?')} host CPUs)"


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def with_interval(value: float, lo: float, hi: float, digits: int = 1, scale: float = 100.0, unit: str = " %") -> str:
    """``value`` with its interval: "92.1 % [90.3, 93.7]"."""
    return f"{scale * value:.{digits}f}{unit} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def estimate_text(est: Mapping[str, Any], digits: int = 1, scale: float = 100.0, unit: str = " %") -> str:
    """An :class:`sbgc.stats.Estimate` record (``value``, ``lo``, ``hi``) as text with its interval."""
    return with_interval(at(est, "value"), at(est, "lo"), at(est, "hi"), digits, scale, unit)


def paired_difference(only_a: int, only_b: int, n: int) -> tuple[float, float, float]:
    """Difference of two accuracies measured on the same n images, a − b = (only_a − only_b) / n, with its 95 %
    Wald interval for paired proportions (only_a: images only a gets right; only_b: only b)."""
    if n < 1:
        raise ValueError(f"a paired difference needs images, got n = {n}")
    diff = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - n * diff**2, 0.0)) / n
    return diff, diff - Z95 * se, diff + Z95 * se


def decide(lo: float, hi: float, threshold: float, *, above_holds: bool) -> str:
    """HOLDS / FAILS / INCONCLUSIVE: an interval [lo, hi] entirely on the claim's side of ``threshold``, entirely
    on the other side, or across it."""
    if lo >= threshold:
        return HOLDS if above_holds else FAILS
    if hi < threshold:
        return FAILS if above_holds else HOLDS
    return INCONCLUSIVE


def budget(eps: float) -> str:
    """An attack budget on the [0, 1] pixel scale as the literature writes it: 8/255, 0.3, 1.5."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and eps < 0.1 else f"{eps:g}"


def paper_row(rows: Sequence[Any], prefix: str) -> Any:
    """The row of a paper table whose model name starts with ``prefix``."""
    return next(r for r in rows if (r.model if hasattr(r, "model") else r[0]).startswith(prefix))


# --- the claims -------------------------------------------------------------------------------------------
_SBGC1, _WRN1 = paper_row(PAPER_TABLE1, "SBGC ("), paper_row(PAPER_TABLE1, "WideResNet")
_DEEP1 = paper_row(PAPER_TABLE1, "SBGC, deep")
_EARLIER = [r for r in PAPER_TABLE1 if r.kind == "generative classifier" and not r.model.startswith("SBGC")]
_BEST_EARLIER = max((r for r in _EARLIER if r.accuracy is not None), key=lambda r: r.accuracy)
_SBGC2, _WRN2 = paper_row(PAPER_TABLE2, "SBGC"), paper_row(PAPER_TABLE2, "WideResNet")
_SBGC3, _WRN3 = paper_row(PAPER_TABLE3, "SBGC"), paper_row(PAPER_TABLE3, "WideResNet")
_N3 = re.search(r"N = (\d+)", _SBGC3.source).group(1)


def _accuracy(record: Mapping[str, Any]) -> Finding:
    p, numbers = params(record), at(record, "numbers")
    data, label = at(p, "data"), dataset_label(record)
    classifier = numbers.get("classifier")
    if classifier:  # the chapter's converged classifier
        acc, estimator = at(classifier, "accuracy"), str(classifier.get("estimator", "the chapter's classifier"))
    else:
        acc, estimator = at(numbers, "sbgc", data, "accuracy"), ode_setting(p)
    paired = at(numbers, "paired", data)
    n = int(at(acc, "n"))
    diff, lo, hi = paired_difference(int(at(paired, "sbgc_right_baseline_wrong")),
                                     int(at(paired, "baseline_right_sbgc_wrong")), n)
    base = model_name(numbers.get("baseline"))
    verdict = decide(lo, hi, -ACCURACY_GAP, above_holds=True)
    reason = f"SBGC − {base} on the same images: {100 * diff:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    if label == "CIFAR-10":
        inside = at(acc, "lo") <= _SBGC1.accuracy / 100 <= at(acc, "hi")
        reason += f"; the paper's {_SBGC1.accuracy:.2f} % is {'inside' if inside else 'outside'} our interval"
    return Finding(f"{label}: SBGC {estimate_text(acc)}; {base} {estimate_text(at(paired, 'baseline'))} on the same images",
                   f"n = {n:,} test images, paired; SBGC: {estimator}; Clopper–Pearson intervals, Wald interval "
                   f"for the paired difference", verdict, reason)


def _generative(record: Mapping[str, Any]) -> Finding:
    p, numbers = params(record), at(record, "numbers")
    data, label = at(p, "data"), dataset_label(record)
    classifier = numbers.get("classifier")
    acc = at(classifier, "accuracy") if classifier else at(numbers, "sbgc", data, "accuracy")
    others = [r for r in at(numbers, "published") if r.get("kind") == "generative classifier"
              and r.get("dataset") == label and r.get("accuracy") is not None and not str(r.get("model")).startswith("SBGC")]
    if not others:
        return Finding(f"{label}: SBGC {estimate_text(acc)}", f"n = {at(acc, 'n'):,} test images", NOT_COMPARABLE,
                       f"the results file quotes no published generative classifier on {label}")
    best = max(others, key=lambda r: r["accuracy"])
    verdict = decide(at(acc, "lo"), at(acc, "hi"), best["accuracy"] / 100, above_holds=True)
    where = "above" if verdict == HOLDS else "below" if verdict == FAILS else "across"
    estimator = classifier.get("estimator", "the chapter's classifier") if classifier else ode_setting(p)
    return Finding(f"{label}: SBGC {estimate_text(acc)}; best published generative classifier: {best['model']} "
                   f"{cite_for(best['model'] + str(best.get('source')))} {best['accuracy']:.1f} % (**published**)",
                   f"n = {at(acc, 'n'):,} test images; SBGC: {estimator}; the published number's own sample is not "
                   f"in the results file",
                   verdict, f"our interval lies {where} the best published {label} generative classifier's accuracy")


def _bits_per_dim(record: Mapping[str, Any]) -> Finding:
    p, numbers = params(record), at(record, "numbers")
    label = dataset_label(record)
    data = p.get("exact_data") or at(p, "data")
    bpd = at(numbers, "sbgc", data, "bpd_marginal")
    ours = f"{label}: {estimate_text(bpd, 3, 1.0, '')} bits/dim"
    setting = f"n = {at(bpd, 'n'):,} test images of `{data}`; {ode_setting(p)}; Student-t interval over images"
    if label == "CIFAR-10":
        verdict = HOLDS if at(bpd, "lo") <= _SBGC1.bpd else FAILS
        return Finding(ours, setting, verdict, f"the paper's {_SBGC1.bpd} bits/dim is "
                       f"{'within reach of' if verdict == HOLDS else 'below'} our interval")
    flows = [r for r in numbers.get("published") or () if r.get("dataset") == label and r.get("bpd") is not None]
    if not flows:
        return Finding(ours, setting, NOT_COMPARABLE, "bits/dim of different data sets")
    best = min(flows, key=lambda r: r["bpd"])
    side = "higher (worse) than" if at(bpd, "lo") > best["bpd"] else "lower (better) than" if at(bpd, "hi") < best["bpd"] \
        else "overlapping"
    return Finding(ours + f"; best published {label} density model: {best['model']} {cite_for(best['model'])} "
                   f"{best['bpd']} bits/dim (**published**)", setting, NOT_COMPARABLE,
                   f"bits/dim of different data sets; in kind, ours is {side} the best published {label} model")


_ROBUSTNESS = {"less_robust": HOLDS, "not_shown": HOLDS, "overall": FAILS, "noise_only": PARTLY,
               "non_noise_only": PARTLY, "overall_pooled_only": PARTLY, "undetermined": INCONCLUSIVE}


def _corruptions(record: Mapping[str, Any]) -> Finding:
    numbers = at(record, "numbers")
    family, base = at(numbers, "family"), at(numbers, "baseline", "architecture")
    ours, theirs = at(numbers, "sbgc", "table2", "all"), at(numbers, "baseline_same_images", "table2", "all")
    boot = "boot_lo" in ours and "boot_lo" in theirs  # image-bootstrap intervals (a setting's cases share images)
    interval = lambda g: with_interval(at(g, "accuracy"), *((at(g, "boot_lo"), at(g, "boot_hi")) if boot
                                                             else (at(g, "lo"), at(g, "hi"))))
    paired = at(numbers, "paired_difference_sbgc_minus_baseline")
    key = at(numbers, "robustness_verdict", "verdict")
    diffs = "; ".join(f"{name} {100 * at(paired, g, 'difference'):+.1f} points [{100 * at(paired, g, 'lo'):+.1f}, "
                      f"{100 * at(paired, g, 'hi'):+.1f}]" for g, name in (("all", "all"), ("all_wo_noise", "w/o noises"))
                      if g in paired)
    return Finding(f"{family}, all corruptions: SBGC {interval(ours)}; {base} {interval(theirs)} on the same images",
                   f"{at(ours, 'n_images'):,} test images × {at(ours, 'n_settings')} corruptions "
                   f"({at(ours, 'total'):,} cases) for both; {ode_setting(params(record))}; "
                   f"{'image-bootstrap' if boot else 'Clopper–Pearson'} intervals, image-bootstrap intervals for the "
                   f"differences", _ROBUSTNESS.get(key, INCONCLUSIVE),
                   f"SBGC − {base}, paired: {diffs} (chapter's verdict: {key.replace('_', ' ')})")


def _adversarial(norm: str) -> Callable[[Mapping[str, Any]], Finding]:
    def measure(record: Mapping[str, Any]) -> Finding:
        numbers = at(record, "numbers")
        sbgc, base = at(numbers, "attacks", f"sbgc_{norm}"), at(numbers, "attacks", f"base_{norm}")
        n = int(at(sbgc, "n"))
        k = round(at(sbgc, "robust_accuracy") * n)
        lo, hi = binomial_interval(k, n)
        name = model_name(numbers.get("baseline"))
        verdict = decide(lo, hi, BROKEN_LEVEL, above_holds=False)
        attack = (numbers.get("per_image_attack") or {}).get(f"sbgc_{norm}", {}).get("settings") or (
            f"{at(sbgc, 'steps')} steps of {at(sbgc, 'stepsize'):g}, {at(sbgc, 'loss')}")
        label, eps = dataset_label(record), budget(at(sbgc, "epsilon"))
        side = {HOLDS: "below", FAILS: "above"}.get(verdict, "not resolved against")
        same = eps == budget(getattr(_SBGC3, f"eps_{norm}"))
        whose = "the paper's budget" if same else (f"the MNIST budget {cite('schott2019towards')}" if label == "MNIST"
                                                   else "not the paper's budget")
        return Finding(f"{label}, {'L∞' if norm == 'linf' else 'L2'} ε = {eps}: SBGC {with_interval(k / n, lo, hi)} "
                       f"(clean {pct(at(sbgc, 'clean_accuracy'))}); {name} {pct(at(base, 'robust_accuracy'))} of "
                       f"{at(base, 'n'):,} images",
                       f"n = {n:,} images; PGD {attack}; SBGC: "
                       f"{numbers.get('sbgc_logits') or ode_setting(params(record))}; Clopper–Pearson interval", verdict,
                       f"the SBGC's robust accuracy is {side} {pct(BROKEN_LEVEL, 0)}; ε = {eps} is {whose}")
    return measure


def _interpolation(record: Mapping[str, Any]) -> Finding:
    numbers = at(record, "numbers")
    conv = at(numbers, "convexity")
    key = at(conv, "verdict")
    below, gap = estimate_text(at(conv, "below_chord")), estimate_text(at(conv, "midpoint"), 0, 1.0, " nats")
    sample = f"n = {at(conv, 'n_pairs'):,} pairs of test images, {len(at(numbers, 'ts'))} values of t"
    ours = f"{dataset_label(record)}: midpoint below the chord in {below} of pairs; chord − f at t = ½: {gap}"
    setting = f"{sample}; {ode_setting(params(record))}; Clopper–Pearson and Student-t intervals"
    return Finding(ours, setting, {"convex": HOLDS, "concave": FAILS}.get(key, INCONCLUSIVE), f"the chapter's verdict: {key}")


def _convergence(record: Mapping[str, Any]) -> Finding:
    numbers = at(record, "numbers")
    fig3, ref = at(numbers, "fig3"), at(numbers, "reference")
    ms, acc = at(fig3, "ms"), at(fig3, "accuracy_mean")
    m_enough, tol = int(at(fig3, "sufficient_repetitions")), float(at(fig3, "sufficient_tolerance"))
    lo, hi = at(ref, "accuracy_ci95")
    verdict = HOLDS if m_enough <= ENOUGH_PROBES else FAILS
    return Finding(f"{dataset_label(record)}: accuracy with m = {ms[0]} probe{'' if ms[0] == 1 else 's'} {pct(acc[0])}, "
                   f"with m = {ms[-1]} {with_interval(at(ref, 'accuracy'), lo, hi)}; within {100 * tol:.1f} points "
                   f"of m = {ms[-1]} from m = {m_enough}",
                   f"n = {at(ref, 'n_images'):,} test images; {at(ref, 'estimator')}; accuracy at m averaged over "
                   f"random subsets of the {ms[-1]} probes; Clopper–Pearson interval", verdict,
                   f"m = {m_enough} probes suffice, {'≤' if verdict == HOLDS else '>'} the paper's {ENOUGH_PROBES}")


def _cost(record: Mapping[str, Any]) -> Finding:
    numbers = at(record, "numbers")
    ref = at(numbers, "reference")
    if isinstance(ref, str):  # older files name the reference point
        ref = next((pt for pt in at(numbers, "points") if pt.get("label") == ref), None) or at(numbers, "points", ref)
    device = device_text(record) or numbers.get("device")
    ours = (f"{dataset_label(record)}: reference ({at(ref, 'label')}): {at(ref, 'passes_per_image_mean'):,.0f} network "
            f"passes, {at(ref, 'seconds_per_image'):.1f} s per image")
    cheap = numbers.get("cheapest_matching_bound")
    if cheap:
        ours += (f"; the cheapest bound classifier within the chapter's tolerance of its accuracy ({at(cheap, 'label')}): "
                 f"{at(cheap, 'passes_per_image_mean'):,.0f} passes, {at(cheap, 'seconds_per_image'):.2f} s "
                 f"({pct(at(cheap, 'passes_per_image_mean') / at(ref, 'passes_per_image_mean'), 0)} of the passes)")
    else:
        ours += "; no bound classifier matched its accuracy"
    return Finding(ours, f"n = {at(ref, 'n_images'):,} test images, on {device}; wall time per image as measured when "
                   f"the results were computed", NOT_COMPARABLE,
                   "seconds of a small MNIST network on this machine cannot agree or disagree with V100 minutes of "
                   "the paper's 67M-parameter CIFAR-10 network; in kind, the row shows how many network passes the "
                   "ODE protocol costs and how many a cheaper estimator needs for the same decisions")


CLAIMS: tuple[Claim, ...] = (
    Claim("An SBGC classifies nearly as accurately as a discriminative network (Table 1)",
          f"SBGC {_SBGC1.accuracy:.2f} %, WideResNet-28-12 {cite_for(_WRN1.model)} {_WRN1.accuracy:.2f} %",
          "02_table1",
          f"holds if the paired difference SBGC − discriminative baseline on the same images has a 95 % interval "
          f"entirely above −{100 * ACCURACY_GAP:.0f} point (the paper's gap: "
          f"{_SBGC1.accuracy - _WRN1.accuracy:+.2f} points); does not hold if entirely below; inconclusive otherwise. "
          f"Comparable in kind only unless the run is on CIFAR-10.",
          _accuracy),
    Claim("It is more accurate than earlier generative classifiers (Table 1)",
          f"SBGC {_SBGC1.accuracy:.2f} %; best earlier: {_BEST_EARLIER.model} {cite_for(_BEST_EARLIER.model)} "
          f"{_BEST_EARLIER.accuracy:.2f} %",
          "02_table1",
          "holds if the SBGC's 95 % interval lies above the best published generative classifier on the same data "
          "set (quoted in the results file, marked **published**); does not hold if it lies below; inconclusive if "
          "the interval contains it.",
          _generative),
    Claim("It does so with a competitive likelihood (Table 1)",
          f"SBGC {_SBGC1.bpd} bits/dim (deep network {_DEEP1.bpd}); earlier generative classifiers "
          f"{min(r.bpd for r in _EARLIER if r.bpd):.2f}–{max(r.bpd for r in _EARLIER if r.bpd):.2f}",
          "02_table1",
          "bits/dim depend on the data set: an MNIST value can neither agree nor disagree with a CIFAR-10 one (not "
          "comparable); in kind, it is set beside the best published density model of the same data set, as higher, "
          "lower or overlapping. On CIFAR-10: holds if our 95 % interval reaches down to the paper's value.",
          _bits_per_dim),
    Claim("It is only slightly, if at all, more robust to common corruptions (Table 2)",
          f"all corruptions: SBGC {_SBGC2[3]:.2f} %, WideResNet-28-12 {_WRN2[3]:.2f} %; w/o noises: "
          f"{_SBGC2[4]:.2f} % vs {_WRN2[4]:.2f} % (CIFAR-10-C {cite('hendrycks2019benchmarking')})",
          "03_corruptions",
          "from the chapter's paired differences SBGC − discriminative baseline on the same corrupted images (a "
          "difference counts only where its 95 % image-bootstrap interval excludes 0): holds if the SBGC is less "
          "accurate or not resolved; does not hold if it is more accurate on all corruptions and without the noises; "
          "partly if only on a subgroup. MNIST-C " + cite("mu2019mnistc") + " against CIFAR-10-C: comparable in kind.",
          _corruptions),
    *(Claim(f"It has no adversarial robustness: PGD {'L∞' if norm == 'linf' else 'L2'} (Table 3)",
            f"PGD {cite('madry2018towards')} at ε = {budget(getattr(_SBGC3, 'eps_' + norm))} (N = {_N3}): "
            f"SBGC {getattr(_SBGC3, norm):.2f} %, WideResNet-28-12 {getattr(_WRN3, norm):.2f} %",
            "04_adversarial",
            f"holds if the 95 % interval of the SBGC's accuracy under the attack lies below {pct(BROKEN_LEVEL, 0)}; "
            f"does not hold if above; inconclusive otherwise. MNIST budgets, so comparable in kind.",
            _adversarial(norm)) for norm in ("linf", "l2")),
    Claim("Log-likelihood along the line between two test images is convex, unlike for GLOW (Fig. 2)",
          f"convex: log p lower between the images than at them (500 pairs, 24 values of t); GLOW concave "
          f"{cite('fetaya2020understanding')}",
          "05_interpolation",
          "the chapter's verdict: holds (convex) if the fraction of pairs whose midpoint lies below the chord, the "
          "mean chord gap at t = ½ and the mean second difference all exclude their neutral value (½, 0, 0) on the "
          "convex side at 95 %; does not hold if all do on the concave side; inconclusive otherwise. A shape, so "
          "comparable in kind across data sets.",
          _interpolation),
    Claim("n = 10 trace-estimator draws give nearly the asymptotic accuracy (appendix A.2.1, Fig. 3)",
          "accuracy rises with the number n of draws; n = 10 is nearly asymptotic, which is above 95 %",
          "06_convergence",
          f"holds if the chapter's smallest sufficient number of probes (mean accuracy within one binomial standard "
          f"error of the accuracy with all probes) is at most {ENOUGH_PROBES}; does not hold otherwise. Comparable in "
          f"kind; the asymptote itself is a property of the data set and network.",
          _convergence),
    Claim("A classification costs an ODE solve per class with n = 30 draws (appendix A.1, §3.3)",
          "n = 30, rtol = atol = 1e-5 per class; no time per classification given; one forward and backward pass "
          "of an attack ≈ 90 minutes on a V100",
          "07_compute",
          "not comparable: times depend on the machine, the network and the data set. The row reports the cost of "
          "the ODE protocol here in network passes and seconds, and the cheapest estimator the chapter found with "
          "the same accuracy.",
          _cost),
)


# --- the page ---------------------------------------------------------------------------------------------
def chapter_link(chapter: str, linked: Collection[str]) -> str:
    """A link to a chapter's page if the book has it (``linked``: the toc's entries), else its name."""
    doc = f"notebooks/{chapter}"
    label = f"chapter {chapter.split('_')[0]}"
    return f"{{doc}}`{label} </{doc}>`" if doc in linked else f"{label} (`{doc}`)"


def shown_path(path: Path) -> str:
    """A results file's path as the page shows it: relative to the repository where it lies inside it."""
    try:
        return path.resolve().relative_to(repo_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def read_record(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A results file's record, or None and why it cannot be used."""
    if not path.is_file():
        return None, f"`{shown_path(path)}` does not exist"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"`{shown_path(path)}` is not a readable JSON file ({type(err).__name__})"
    if not isinstance(record, dict):
        return None, f"`{shown_path(path)}` holds no results record"
    return record, ""


def provenance_text(record: Mapping[str, Any] | None) -> str:
    """Which run wrote a results file: its profile, commit and date."""
    prov = (record or {}).get("provenance") or {}
    if not prov:
        return ""
    commit = str(prov.get("commit") or "?")[:8] + (" + changes" if prov.get("dirty") else "")
    return f"profile `{prov.get('profile', '?')}`, commit {commit}, {str(prov.get('timestamp', '?'))[:10]}"


def finding(claim: Claim, results: Path) -> tuple[Finding, dict[str, Any] | None]:
    """The claim measured from its chapter's results file in ``results``: a NOT_COMPUTED finding when the
    file is missing, unreadable, or lacks a number (naming what is missing)."""
    path = results / f"{claim.chapter}.json"
    record, why = read_record(path)
    if record is None:
        return Finding("–", "–", NOT_COMPUTED, why), None
    try:
        return claim.measure(record), record
    except Missing as err:
        why = f"`{shown_path(path)}` has no `{err}`"
    except (KeyError, IndexError, TypeError, ValueError, StopIteration) as err:
        why = f"`{shown_path(path)}` does not hold this number in the expected form ({type(err).__name__}: {err})"
    return Finding("–", "–", NOT_COMPUTED, why), record


def findings_table(results: Path, linked: Collection[str] = (), claims: Sequence[Claim] = CLAIMS) -> str:
    """The findings table: one row per claim, measured from ``results/<chapter>.json``."""
    rows = []
    for i, claim in enumerate(claims, 1):
        found, record = finding(claim, results)
        sizes = sample_sizes(record or {})
        source = " · ".join(s for s in (chapter_link(claim.chapter, linked),
                                         f"`{shown_path(results / f'{claim.chapter}.json')}`",
                                         provenance_text(record), sizes and f"recorded sample sizes: {sizes}") if s)
        rows.append((str(i), claim.claim, claim.paper, found.ours, found.setting,
                     f"**{found.verdict}**: {found.reason}", source))
    return markdown_table(("#", "the paper's claim", "**paper** (CIFAR-10)", "this book", "sample and setting",
                           "verdict", "source"), rows)


def findings_markdown(results: Path, linked: Collection[str] = (), claims: Sequence[Claim] = CLAIMS) -> str:
    """The findings page's body (the page's title is in ``book/findings.md``), from the results files in
    ``results``; ``linked``: the book's toc entries, to link the chapters that are in it."""
    results = Path(results)
    rules = "\n".join(f"{i}. *{c.claim}*: {c.rule}" for i, c in enumerate(claims, 1))
    verdicts = "\n".join(f"- **{name}**: {text}." for name, text in VERDICTS.items())
    return f"""\
This page is generated from the results files the chapters write (`{shown_path(results)}/<chapter>.json`) by
`sbgc.book.findings` each time the book is built; nothing on it is typed by hand. One row per claim of the
paper {cite("zimmermann2021score")}: its CIFAR-10 number, marked **paper**; this book's number with its 95 %
interval and sample; the estimator and setting the results file records; a verdict computed by the rule listed
below the table; and the chapter and results file the row comes from, with the run that wrote it.

```{{important}}
The paper's numbers are CIFAR-10 numbers; this book's reference run (profile `mnist`) measures the same
quantities on MNIST {cite("lecun1998gradient")}, with a far smaller network trained on a CPU. An MNIST accuracy or
bits/dim is not an estimate of a CIFAR-10 one: the verdicts compare the paper's *qualitative* claims (a gap, a
direction, a shape, a convergence), which can hold or fail on either data set, and mark the rows whose numbers
cannot be compared across data sets **not comparable**.
```

{findings_table(results, linked, claims)}

## The rules

{rules}

## The verdicts

{verdicts}
"""


def write_findings(path: Path, results: Path, linked: Collection[str] = ()) -> Path:
    """Write :func:`findings_markdown` to ``path`` (its folder is made); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(findings_markdown(results, linked))
    return path
