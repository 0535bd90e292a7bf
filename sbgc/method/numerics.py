"""Evaluation numerics: every likelihood, bound and attack computation runs in float32 at the
highest matmul precision, whatever the model was trained in.

Why: a log-det integral of ~10⁴ nats (CIFAR-10) or ~10³ (MNIST) turns a relative error of 10⁻³ in the
score into errors of several nats, the size of class margins. GPUs (Ampere, Hopper) run float32 dots
and convolutions in TF32 (~10⁻³ relative) unless asked otherwise; bfloat16 (spacing 2⁻⁸ near 1)
cannot even represent the dequantization noise inside one pixel bin (2/256 in model space).
Training may keep the defaults (``sbgc.train.score``); evaluation may not.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax

F = TypeVar("F", bound=Callable)

EVAL_PRECISION = "highest"


def highest_precision(fn: F) -> F:
    """``fn`` traced under ``jax.default_matmul_precision("highest")``: every dot and convolution it
    (and its JVPs, VJPs and transposes) binds asks for full float32 precision. Works inside an outer
    ``jit``: the precision is fixed when the operations are traced."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(EVAL_PRECISION):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
