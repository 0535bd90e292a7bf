"""Paper Table 1 and Fig. 1: accuracy and bits/dim of generative classifiers, and our measurement.

The paper's numbers (:data:`PAPER_TABLE1`) are quoted, never recomputed: every row is marked
"paper". Our rows are built from per-image results by :func:`summarize_generative` and
:func:`summarize_discriminative`, which attach 95 % intervals (Clopper–Pearson for an accuracy,
Student-t over images for a mean bits/dim).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from sbgc.data.datasets import get_dataset
from sbgc.stats import Estimate, mean_estimate, proportion_estimate
from sbgc.report import markdown_table


@dataclasses.dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1 (accuracy in %, NLL in bits/dim; None = not reported)."""

    model: str
    accuracy: float | None
    bpd: float | None
    kind: str  # "generative classifier", "discriminative", "generative (no classifier)"
    dataset: str = "CIFAR-10"
    source: str = "paper"  # "paper" (Zimmermann et al. 2021) or the publication a "published" row is quoted from


# Zimmermann et al. (2021), Table 1 (CIFAR-10 test set), and §3.1 for the deeper network.
PAPER_TABLE1: tuple[PaperRow, ...] = (
    PaperRow("Invertible Network (Mackowiak et al.)", 67.30, 4.34, "generative classifier"),
    PaperRow("GLOW (Fetaya et al.)", 84.00, 3.53, "generative classifier"),
    PaperRow("Normalizing flow (Ardizzone et al.)", 89.73, 5.25, "generative classifier"),
    PaperRow("Energy model (Grathwohl et al.)", 92.90, None, "generative classifier"),
    PaperRow("SBGC (Zimmermann et al.)", 95.04, 3.11, "generative classifier"),
    PaperRow("SBGC, deep network (Zimmermann et al., §3.1)", None, 3.08, "generative classifier"),
    PaperRow("WideResNet-28-12 (Targ et al.)", 95.42, None, "discriminative"),
    PaperRow("ViT-H/14 (Dosovitskiy et al.)", 99.50, None, "discriminative"),
    PaperRow("VDM (Kingma et al.)", None, 2.49, "generative (no classifier)"),
)

# Published MNIST rows, quoted from the cited tables (this environment cannot open the PDFs, so
# they were not re-checked here): clean accuracy of the analysis-by-synthesis generative classifiers
# and bits/dim of dequantized-MNIST density models.
PUBLISHED_MNIST: tuple[PaperRow, ...] = (
    PaperRow("ABS (Schott et al. 2019)", 99.0, None, "generative classifier", "MNIST", "Schott et al. 2019, Table 1"),
    PaperRow("binary ABS (Schott et al. 2019)", 99.0, None, "generative classifier", "MNIST",
             "Schott et al. 2019, Table 1"),
    PaperRow("Real NVP (Dinh et al.)", None, 1.06, "generative (no classifier)", "MNIST",
             "Grathwohl et al. 2019 (FFJORD), Table 2"),
    PaperRow("Glow (Kingma & Dhariwal)", None, 1.05, "generative (no classifier)", "MNIST",
             "Grathwohl et al. 2019 (FFJORD), Table 2"),
    PaperRow("FFJORD (Grathwohl et al.)", None, 0.99, "generative (no classifier)", "MNIST",
             "Grathwohl et al. 2019 (FFJORD), Table 2"),
)
PUBLISHED: dict[str, tuple] = {"mnist": PUBLISHED_MNIST}  # published rows shown beside ours, by dataset


def published_rows(dataset: str) -> tuple[PaperRow, ...]:
    """The rows shown beside ours: the paper's CIFAR-10 Table 1, and on MNIST the published MNIST rows too."""
    get_dataset(dataset)  # a ValueError names the datasets otherwise
    return PAPER_TABLE1 + PUBLISHED.get(dataset, ())


def accuracy_estimate(predictions: np.ndarray, labels: np.ndarray) -> Estimate:
    """Accuracy with its exact (Clopper–Pearson) 95 % interval: int [N], int [N]."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or predictions.size == 0:
        raise ValueError(f"predictions and labels must be matching non-empty [N] arrays, got "
                         f"{predictions.shape} and {labels.shape}")  # fmt: skip
    return proportion_estimate(int(np.sum(predictions == labels)), int(labels.size))


@dataclasses.dataclass(frozen=True)
class GenerativeSummary:
    """Our generative classifier on one set of test images."""

    accuracy: Estimate
    bpd_marginal: Estimate  # bits/dim of p(x) = (1/10) Σ_y p(x | y)
    bpd_true_class: Estimate  # bits/dim of p(x | y_true)
    mean_nfe: float  # score evaluations per (image, class) solve

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy.as_dict(), "bpd_marginal": self.bpd_marginal.as_dict(),
                "bpd_true_class": self.bpd_true_class.as_dict(), "mean_nfe": self.mean_nfe}


def summarize_generative(log_p: np.ndarray, bpd: np.ndarray, marginal_bpd: np.ndarray, labels: np.ndarray,
                         nfe: np.ndarray) -> GenerativeSummary:
    """From class log-likelihoods log_p [N, K], their bits/dim [N, K], the marginal's bits/dim [N],
    the true labels [N] and the evaluations per solve [N, K]."""
    log_p, bpd, labels = np.asarray(log_p), np.asarray(bpd), np.asarray(labels)
    if log_p.ndim != 2 or bpd.shape != log_p.shape or labels.shape != log_p.shape[:1]:
        raise ValueError(f"expected log_p and bpd [N, K] and labels [N], got {log_p.shape}, {bpd.shape}, "
                         f"{labels.shape}")  # fmt: skip
    return GenerativeSummary(
        accuracy=accuracy_estimate(np.argmax(log_p, axis=1), labels),
        bpd_marginal=mean_estimate(marginal_bpd),
        bpd_true_class=mean_estimate(bpd[np.arange(len(labels)), labels]),
        mean_nfe=float(np.mean(nfe)),
    )


@dataclasses.dataclass(frozen=True)
class ProbeNoise:
    """How much of the spread of a mean bits/dim is the Hutchinson probes', from a table with n probes per image.

    Each probe gives its own estimate of bits/dim of p(x) per image (all classes of an image share a probe). The
    mean over N images of m-probe estimates has the standard error sqrt(sd_image² / N + sd_probe² / (m N)):
    the images' own spread plus the probes' (their variance, the mean over images of the per-image variance).
    """

    n_images: int
    n_probes: int
    sd_image: float  # standard deviation over images of the all-probe bits/dim of p(x)
    sd_probe: float  # root mean over images of the variance over probes of one probe's bits/dim of p(x)
    mean_all: float  # mean over images of the all-probe bits/dim
    mean_one: float  # mean over images of the first probe's bits/dim (one probe per image)

    def standard_error(self, n_images: int, n_probes: int) -> float:
        """Standard error of a mean over ``n_images`` images of ``n_probes``-probe estimates (bits/dim)."""
        return float(np.sqrt(self.sd_image**2 / n_images + self.sd_probe**2 / (n_probes * n_images)))


def probe_noise(log_p_probes: np.ndarray, dim: int) -> ProbeNoise:
    """:class:`ProbeNoise` of the ODE's per-probe class log-likelihoods log_p_probes [B, C, n] (nats, the same
    probe for every class of an image), D = ``dim``: bits/dim of p(x) = (1/C) Σ_y p(x | y) per probe."""
    from sbgc.method.classify import log_marginal
    from sbgc.method.likelihood import bits_per_dim

    lp = np.asarray(log_p_probes, np.float64)
    if lp.ndim != 3 or lp.shape[0] < 1 or lp.shape[2] < 2:
        raise ValueError(f"log_p_probes must be [B, C, n >= 2] (two probes at least), got shape {lp.shape}")
    b, c, n = lp.shape
    per_probe = bits_per_dim(log_marginal(lp.transpose(0, 2, 1).reshape(b * n, c)), dim).reshape(b, n)  # [B, n]
    all_probes = bits_per_dim(log_marginal(lp.mean(axis=2)), dim)  # [B]
    sd_image = float(all_probes.std(ddof=1)) if b > 1 else float("nan")  # one image: no spread over images
    return ProbeNoise(b, n, sd_image, float(np.sqrt(per_probe.var(axis=1, ddof=1).mean())),
                      float(all_probes.mean()), float(per_probe[:, 0].mean()))  # fmt: skip


def decision_comparison(labels: np.ndarray, reference: tuple[str, np.ndarray],
                        others: Sequence[tuple[str, np.ndarray]]) -> str:
    """Markdown table: on the same N images (labels [N]), the reference's decisions [N] and each other
    estimator's (name, decisions [N]): accuracy with its 95 % interval, and agreement with the reference."""
    labels = np.asarray(labels)
    name_ref, ref = reference
    rows = []
    for name, d in [reference, *others]:
        d = np.asarray(d)
        if d.shape != labels.shape:
            raise ValueError(f"{name}: decisions of shape {d.shape} for {labels.shape} images")
        agree = "—" if name == name_ref else f"{np.mean(d == ref):.1%} ({int(np.sum(d != ref))} differ)"
        rows.append((name, f"{labels.size:,}", accuracy_estimate(d, labels).fmt(1, 100.0), agree))
    return markdown_table(("estimator", "images", "accuracy [%] (95 % CI)", "same decision as the reference"), rows)


def score_summary(log_p: np.ndarray, nfe: np.ndarray, labels: np.ndarray, dim: int) -> GenerativeSummary:
    """:func:`summarize_generative` of an ODE score table (:func:`sbgc.experiments.evaluate.cached_score_table`'s
    ``log_p`` [N, K] nats and ``nfe`` [N] summed over the K classes) with the true labels [N] of its images, D = dim."""
    from sbgc.method.classify import log_marginal
    from sbgc.method.likelihood import bits_per_dim

    k = log_p.shape[1]
    return summarize_generative(log_p, bits_per_dim(log_p, dim), bits_per_dim(log_marginal(log_p), dim), labels,
                                np.repeat(np.asarray(nfe)[:, None] / k, k, axis=1))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ReferenceCheck:
    """The classifier and the bits/dim ODE against the paper's estimator on its images (:func:`reference_check`)."""

    table: str  # markdown: accuracy of each and agreement with the reference
    probe_text: str  # markdown: how many probes the mean bits/dim needs
    record: dict  # for the results file


def reference_check(labels: np.ndarray, reference: tuple[str, np.ndarray], others: Sequence[tuple[str, np.ndarray]],
                    log_p_probes: np.ndarray, dim: int, n_ode_images: int) -> ReferenceCheck:  # fmt: skip
    """On the reference's N images (labels [N]): its decisions (name, [N]) against the others' (name, [N]) (the
    first N of each of their samples), and the probe noise of a mean bits/dim (:func:`probe_noise` of the
    reference's log_p_probes [N, C, n]) for a mean over ``n_ode_images`` one-probe estimates."""
    name_ref, ref = reference
    noise = probe_noise(log_p_probes, dim)
    se = {m: noise.standard_error(n_ode_images, m) for m in (1, noise.n_probes)}
    text = (f"**Probes and the mean bits/dim** (the reference's {noise.n_probes} probes on its {noise.n_images} images): "
            f"images spread by {noise.sd_image:.3f} bits/dim, one probe's estimate by {noise.sd_probe:.3f} bits/dim "
            f"around its image's. On {n_ode_images:,} images the mean's standard error is {se[1]:.4f} bits/dim with "
            f"one probe per image and {se[noise.n_probes]:.4f} with {noise.n_probes}. On the reference's images the "
            f"one-probe mean is {noise.mean_one:.3f} and the {noise.n_probes}-probe mean {noise.mean_all:.3f} bits/dim.")
    record = {"estimator": name_ref, "n_images": int(len(labels)), "accuracy": accuracy_estimate(ref, labels).as_dict(),
              "agreement": {name: float(np.mean(np.asarray(d) == ref)) for name, d in others},
              "probe_noise": dataclasses.asdict(noise), "mean_bpd_standard_error": se}  # fmt: skip
    return ReferenceCheck(decision_comparison(labels, reference, others), text, record)


def table_markdown(ours: Sequence[tuple[str, Estimate | None, Estimate | None, str]], dataset: str = "cifar10") -> str:
    """Table 1: the paper's rows (marked "paper"), published rows of ``dataset`` (marked "published:
    <where>") and ours ((name, accuracy, bpd, where measured)), each with its dataset."""
    ours_dataset = get_dataset(dataset).title
    rows = [(r.model, r.dataset, r.source if r.source == "paper" else f"published: {r.source}",
             "N/A" if r.accuracy is None else f"{r.accuracy:.2f}", "N/A" if r.bpd is None else f"{r.bpd:.2f}")
            for r in published_rows(dataset)]
    rows += [(f"**{name}**", ours_dataset, f"ours: {where}", "not measured" if acc is None else acc.fmt(1, 100.0),
              "N/A" if nll is None else nll.fmt(3)) for name, acc, nll, where in ours]
    return markdown_table(("model", "dataset", "source", "accuracy [%] ↑", "NLL [bits/dim] ↓"), rows)


def _fig1_panel(ax, rows: Sequence[PaperRow], title: str):
    """Generative classifiers of ``rows`` with both numbers as points, density models' bits/dim as lines."""
    for r in rows:
        if r.kind == "generative classifier" and r.accuracy is not None and r.bpd is not None:
            own = r.model.startswith("SBGC")
            ax.scatter(r.bpd, r.accuracy, marker="*" if own else "o", s=160 if own else 50,
                       color="C3" if own else "0.45", zorder=3)  # fmt: skip
            ax.annotate(f"{r.model} ({r.source.split(',')[0]})", (r.bpd, r.accuracy), textcoords="offset points",
                        xytext=(6, -10), fontsize=8)  # fmt: skip
        elif r.accuracy is None and r.bpd is not None and r.dataset == "MNIST":
            ax.axvline(r.bpd, color="0.7", lw=1, ls="--", zorder=1)
            ax.annotate(r.model.split(" (")[0], (r.bpd, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=7, color="0.4")
        elif r.bpd is None and r.accuracy is not None and r.dataset == "MNIST":
            ax.axhline(r.accuracy, color="0.7", lw=1, ls=":", zorder=1)
            ax.annotate(f"{r.model} (published, accuracy only)", (0.02, r.accuracy), xycoords=("axes fraction", "data"),
                        fontsize=7, color="0.4", va="bottom")
    ax.set_xlabel("NLL [bits/dim] (lower is better)")
    ax.set_ylabel("test accuracy [%]")
    ax.set_title(title, fontsize=10)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)


def plot_fig1(ours: Sequence[tuple[str, Estimate, Estimate]], dataset: str = "cifar10"):
    """Fig. 1: accuracy vs bits/dim of generative classifiers with our points (95 % error bars in
    both coordinates). CIFAR-10: one panel, the paper's classifiers and ours. MNIST: the paper's
    CIFAR-10 panel beside an MNIST panel with ours and the published MNIST numbers."""
    import matplotlib.pyplot as plt

    other = dataset != "cifar10"  # the paper's panel is CIFAR-10's; another dataset gets its own beside it
    title = get_dataset(dataset).title
    fig, axes = plt.subplots(1, 2 if other else 1, figsize=(11.5 if other else 6.0, 4.2), squeeze=False)
    _fig1_panel(axes[0, 0], PAPER_TABLE1, "CIFAR-10 (paper, Table 1)" if other else "CIFAR-10")
    ax = axes[0, -1]
    if other:
        _fig1_panel(ax, PUBLISHED.get(dataset, ()), f"{title} (ours, with published numbers)")
    for i, (name, acc, nll) in enumerate(ours):
        xerr = None if np.isnan(nll.lo) else [[nll.value - nll.lo], [nll.hi - nll.value]]
        yerr = [[100 * (acc.value - acc.lo)], [100 * (acc.hi - acc.value)]]
        ax.errorbar(nll.value, 100 * acc.value, xerr=xerr, yerr=yerr, fmt="s", color=f"C{i}", capsize=3, zorder=4,
                    label=f"{name} (ours, 95 % CI)")  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def read_training_log(path: str | Path) -> dict[str, np.ndarray]:
    """A training log CSV (``sbgc.train.score`` / ``sbgc.train.baseline``) as columns of floats."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training log {path} not found")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"training log {path} has no rows")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def training_log_path(parameter_file: str | Path) -> Path:
    """The training log shipped beside a parameter file: ``NAME.msgpack`` → ``NAME_train_log.csv``."""
    from sbgc.train.loop import log_beside

    return log_beside(parameter_file)


def plot_training_logs(score_log: dict[str, np.ndarray], baseline_log: dict[str, np.ndarray] | None):
    """Loss against step for the score model (and the baseline's loss and training accuracy)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if baseline_log else 1, figsize=(11 if baseline_log else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(score_log["step"], score_log["loss"], color="C0")
    ax.set(xlabel="step", ylabel="loss per dimension (IS-weighted)", title="score model")
    ax.grid(alpha=0.3)
    if baseline_log:
        ax = axes[0, 1]
        ax.plot(baseline_log["step"], baseline_log["loss"], color="C1", label="cross-entropy")
        ax.set(xlabel="step", ylabel="cross-entropy", title="discriminative baseline")
        ax.grid(alpha=0.3)
        if "train_accuracy" in baseline_log:
            twin = ax.twinx()
            twin.plot(baseline_log["step"], 100 * baseline_log["train_accuracy"], color="C2", label="training accuracy")
            twin.set_ylabel("training-batch accuracy [%]", color="C2")
    fig.tight_layout()
    return fig
