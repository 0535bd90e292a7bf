"""Files under the data layer: the labelled-image container, where data and caches live, checksums,
atomic writes and the decode cache shared by every dataset (CIFAR-10, MNIST).

The decode cache holds one decoded split per ``.npz`` (uncompressed) under ``$SBGC_CACHE_DIR``
(default ``<repo>/data/cache``), keyed by source, split and the checksum of the file it came from,
with the sha256 of its pixels and labels written beside them: a damaged or foreign cache file is
ignored (with a warning) and rebuilt, never trusted. Every write goes to a temporary file first and
is renamed into place, so an interrupted write leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from sbgc.storage import REPO_ROOT, PathLike, atomic_savez, file_digest

CACHE_FORMAT = 1

# ------------------------------------------------------------------------------------------------
# The split container
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageSet:
    """One split of a labelled image dataset (CIFAR-10, MNIST or a stand-in), with where its pixels came from.

    Attributes:
      images: uint8 ``[N, H, W, 3]`` (NHWC; ``H = W = 32`` for CIFAR-10), read-only.
      labels: int32 ``[N]`` in ``0 .. 9``.
      source: ``"official"``, ``"jpeg-copy"``, ``"exact-head"`` or ``"toy"``: quote it with results.
      indices: int64 ``[N]``, each image's index in the official order of its split.
      split: ``"train"``, ``"test"``, ``"exact_head"`` or, for stand-ins, their own name.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str
    indices: np.ndarray
    split: str

    def __post_init__(self):
        images, labels, indices = self.images, self.labels, self.indices
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
                and images.shape[-1] in (1, 3)):
            raise ValueError(
                "ImageSet.images: expected a uint8 numpy array [N, H, W, C] with C = 3 (CIFAR-10) or 1 (MNIST), got "
                f"{type(images).__name__} {getattr(images, 'dtype', None)} "
                f"{getattr(images, 'shape', None)}")
        n = images.shape[0]
        for name, arr, dtype in (("labels", labels, np.int32), ("indices", indices, np.int64)):
            if not (isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.shape == (n,)):
                raise ValueError(
                    f"ImageSet.{name}: expected {np.dtype(dtype).name} [{n}] to match images, got "
                    f"{type(arr).__name__} {getattr(arr, 'dtype', None)} {getattr(arr, 'shape', None)}")
        for name in ("images", "labels", "indices"):  # read-only views; the caller's arrays stay as they are
            view = getattr(self, name).view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, selection: np.ndarray | slice | Sequence[int]) -> "ImageSet":
        """The images picked by ``selection`` (positions, boolean mask or slice); indices follow."""
        return ImageSet(
            images=np.ascontiguousarray(self.images[selection]),
            labels=np.ascontiguousarray(self.labels[selection]),
            source=self.source,
            indices=np.ascontiguousarray(self.indices[selection]),
            split=self.split,
        )



# ------------------------------------------------------------------------------------------------
# Locations
# ------------------------------------------------------------------------------------------------
def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The data dir: the argument, else ``$SBGC_DATA_DIR``, else ``<repo>/data``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("SBGC_DATA_DIR")
    return Path(env) if env else REPO_ROOT / "data"


def resolve_cache_dir(cache_dir: PathLike | None = None) -> Path:
    """The decode cache: the argument, else ``$SBGC_CACHE_DIR``, else ``<repo>/data/cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SBGC_CACHE_DIR")
    return Path(env) if env else REPO_ROOT / "data" / "cache"


# ------------------------------------------------------------------------------------------------
# Checksums and atomic files
# ------------------------------------------------------------------------------------------------
def verify_file(path: PathLike, expected: str, algorithm: str = "sha256") -> None:
    """Raise ``ValueError`` naming the file and both digests unless ``path`` hashes to ``expected``."""
    got = file_digest(path, algorithm)
    if got != expected:
        raise ValueError(
            f"{path}: {algorithm} mismatch (expected {expected}, got {got}); the file is damaged "
            "or not the one this project expects. Delete it and get it again.")


def decoded_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a decoded split: images bytes followed by the labels as int32 bytes."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------------
def cache_path(cache_dir: Path, source: str, split: str, file_hash: str) -> Path:
    return cache_dir / f"{source}-{split}-{file_hash[:16]}.npz"


def read_cache(path: Path, source: str, split: str) -> ImageSet | None:
    """The cached split, or None (with a warning if the file exists but is unusable)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            expected = {"format": CACHE_FORMAT, "source": source, "split": split}
            if any(meta.get(k) != v for k, v in expected.items()):
                raise ValueError(f"metadata {meta} does not describe {source}/{split}")
            images, labels = z["images"], z["labels"]
            if decoded_digest(images, labels) != meta.get("decoded_sha256"):
                raise ValueError("pixels or labels do not match the checksum written with them")
            return ImageSet(images=images, labels=labels, source=source, indices=z["indices"],
                              split=split)
    except Exception as err:  # a damaged cache is rebuilt, never trusted
        warnings.warn(f"ignoring unusable cache file {path}: {err}", stacklevel=3)
        return None


def write_cache(path: Path, data: ImageSet, origin: Path, file_hash: str) -> None:
    meta = {"format": CACHE_FORMAT, "source": data.source, "split": data.split,
            "origin": str(origin), "origin_hash": file_hash,
            "decoded_sha256": decoded_digest(data.images, data.labels)}
    try:
        atomic_savez(path, images=data.images, labels=data.labels, indices=data.indices,
                      meta=np.array(json.dumps(meta)))
    except OSError as err:  # a read-only cache dir costs a decode per load, nothing else
        warnings.warn(f"could not write the decode cache {path}: {err}", stacklevel=3)
