"""Paper Table 3 (accuracy under PGD attacks): the paper's rows, our rows, and clean/adversarial pairs.

The attacks themselves are in :mod:`sbgc.experiments.adversarial`; this module only tabulates and draws their
:class:`~sbgc.experiments.adversarial.PGDResult` objects. Accuracies carry exact (Clopper–Pearson) 95 % intervals.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from sbgc.experiments.adversarial import PGDResult
from sbgc.report import markdown_table
from sbgc.stats import binomial_interval


@dataclasses.dataclass(frozen=True)
class PaperRow3:
    model: str
    clean: float
    linf: float  # accuracy [%] under L∞ PGD, ε = 8/255
    l2: float  # accuracy [%] under L2 PGD, ε = 0.5


# Zimmermann et al. (2021), Table 3 (N = 216 test images, n = 10 probes for the SBGC).
PAPER_TABLE3: tuple[PaperRow3, ...] = (
    PaperRow3("SBGC (Zimmermann et al.)", 95.04, 0.00, 0.00),
    PaperRow3("WideResNet-28-12 (Targ et al.)", 95.42, 0.00, 0.00),
    PaperRow3("WRN-70-16, adversarially trained (Rebuffi et al.; robust state of the art)", 92.23, 66.56, 82.32),
)


def accuracy_cell(correct: np.ndarray) -> str:
    """'k/n = p % [lo, hi]' for a boolean [N] array of correct decisions."""
    correct = np.asarray(correct, bool)
    if correct.ndim != 1 or correct.size == 0:
        raise ValueError(f"expected a non-empty boolean [N] array, got shape {correct.shape}")
    k, n = int(correct.sum()), int(correct.size)
    lo, hi = binomial_interval(k, n)
    return f"{k}/{n} = {100 * k / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def table3_markdown(ours: Sequence[tuple[str, PGDResult, PGDResult]]) -> str:
    """Table 3 with the paper's rows (marked "paper") and ours: (name, L∞ result, L2 result) on the
    same images (the clean accuracy is the L∞ result's clean forward pass)."""
    rows = [(r.model, "paper (N = 216)", f"{r.clean:.2f}", f"{r.linf:.2f}", f"{r.l2:.2f}") for r in PAPER_TABLE3]
    for name, linf, l2 in ours:
        if not np.array_equal(linf.labels, l2.labels):
            raise ValueError(f"{name}: the L∞ and L2 attacks ran on different images")
        rows.append((f"**{name}**", "ours", accuracy_cell(linf.clean_pred == linf.labels),
                     accuracy_cell(linf.adv_pred == linf.labels), accuracy_cell(l2.adv_pred == l2.labels)))
    return markdown_table(("model", "source", "clean [%]", "L∞ PGD, ε = 8/255 [%]", "L2 PGD, ε = 0.5 [%]"), rows)


def settings_markdown(results: Sequence[tuple[str, PGDResult]]) -> str:
    """One row per attack: norm, loss, ε, steps, step size, random start, seconds, measured ‖δ‖."""
    rows = [(name, r.norm, r.loss, f"{r.epsilon:.4g}", r.steps, f"{r.stepsize:.4g}", r.random_start,
             f"{r.linf.max():.4g}", f"{r.l2.max():.4g}", f"{r.seconds:.1f}") for name, r in results]
    return markdown_table(("attack on", "norm", "loss", "ε", "steps", "step size", "random start", "max ‖δ‖∞",
                           "max ‖δ‖₂", "seconds"), rows)


def plot_pairs(clean: np.ndarray, results: Sequence[tuple[str, PGDResult]], class_names: Sequence[str],
               n_show: int = 3):
    """Clean images, and per attack the adversarial image and its perturbation (amplified to fill
    the colour range), titled with the predicted classes."""
    import matplotlib.pyplot as plt

    n_show = min(n_show, len(clean))
    cols = 1 + 2 * len(results)
    fig, axes = plt.subplots(n_show, cols, figsize=(1.9 * cols, 2.1 * n_show), squeeze=False)
    for i in range(n_show):
        first = results[0][1]
        axes[i, 0].imshow(np.clip(clean[i], 0, 1))
        axes[i, 0].set_title(f"clean: {class_names[first.clean_pred[i]]}\n(true {class_names[first.labels[i]]})",
                             fontsize=7)  # fmt: skip
        for j, (name, r) in enumerate(results):
            delta = r.adversarial[i] - clean[i]
            scale = max(float(np.abs(delta).max()), 1e-12)
            axes[i, 1 + 2 * j].imshow(np.clip(r.adversarial[i], 0, 1))
            axes[i, 1 + 2 * j].set_title(f"{name}: {class_names[r.adv_pred[i]]}", fontsize=7)
            axes[i, 2 + 2 * j].imshow(0.5 + 0.5 * delta / scale)
            axes[i, 2 + 2 * j].set_title(f"δ ×{0.5 / scale:.0f}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
