"""The shipped, sha256-checked score models the book's chapters use.

``load_model("ci")`` (or a path to a ``.msgpack`` parameter file written by
``python -m sbgc.train export``) returns the EMA parameters, the model config rebuilt from the
file's metadata, the SDE and a ready ``score_fn(x, t, y)`` in model space, plus the metadata and the
file's sha256 for provenance lines.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

from sbgc.method.networks import ModelConfig, make_score_fn
from sbgc.method.sde import SDE
from sbgc.train.checkpoint import load_params

REPO = Path(__file__).resolve().parents[2]

# name -> parameter file (relative to the repository). Each has a JSON with its sha256 beside it.
SHIPPED: dict[str, str] = {
    # 0.78M-parameter `ci` network trained on 2 CPU cores: proves the plumbing, not the paper.
    "ci": "checkpoints/sbgc_ci_cpu.msgpack",
    # MNIST (`mnist_s`, 0.35M parameters) trained on 2 CPU cores; its full training state, to
    # continue the run, is checkpoints/training/sbgc_mnist_s_state.msgpack (`python -m sbgc.train unpack`)
    "mnist": "checkpoints/sbgc_mnist_cpu.msgpack",
}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    params: Any
    config: ModelConfig
    sde: SDE
    score_fn: Callable  # (x [B, H, W, C] in [-1, 1], t [B], y [B] int) -> score; float32, highest precision
    meta: dict
    path: Path

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    def describe(self) -> str:
        """One line for provenance: file, sha256 prefix, profile, steps, data, device."""
        m = self.meta
        return (f"{self.path.name} (sha256 {self.sha256[:12]}…, profile {m.get('profile')}, "
                f"{m.get('step')} steps on {m.get('data_source')}, trained on {m.get('device')})")


def model_config_from_meta(meta: dict) -> ModelConfig:
    """Rebuild the :class:`ModelConfig` recorded in a checkpoint's metadata."""
    fields = meta["config"]["model"]
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def resolve_path(name_or_path: str | Path, shipped: dict[str, str] | None = None) -> Path:
    """A shipped model's name (a key of ``shipped``, default :data:`SHIPPED`) or a path, as an
    absolute path (relative paths are taken from the repository root)."""
    shipped = SHIPPED if shipped is None else shipped
    if str(name_or_path) in shipped:
        return REPO / shipped[str(name_or_path)]
    p = Path(name_or_path)
    return p if p.is_absolute() else REPO / p


def load_model(name_or_path: str | Path = "ci", expected_sha256: str | None = None) -> LoadedModel:
    """Load and verify a shipped score model; raises FileNotFoundError naming how to produce it."""
    path = resolve_path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"score model {path} not found; shipped: {SHIPPED}. Produce one with "
            "`python -m sbgc.train --profile PROFILE --steps N --workdir DIR` and "
            f"`python -m sbgc.train export --workdir DIR --out {path}`")
    params, meta = load_params(path, expected_sha256)
    # Evaluate in float32 whatever the training compute dtype was (sbgc.method.numerics): bfloat16 would
    # round away the dequantization noise. The trained dtype stays in meta["config"]["model"].
    config = dataclasses.replace(model_config_from_meta(meta), dtype="float32")
    sde = SDE(meta["config"]["train"].get("sde", "subvp"))
    score_fn = functools.partial(make_score_fn(config, sde), params)
    return LoadedModel(params=params, config=config, sde=sde, score_fn=score_fn, meta=meta, path=path)
