"""Shared test setup: one persistent JAX compilation cache for the whole suite (and its subprocesses)."""

import os
from pathlib import Path

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
