"""CIFAR-10 for the generative classifier: finding, verifying, decoding, caching and augmenting it.

Where the pixels come from (first found wins, per split):

1. The official archive ``cifar-10-python.tar.gz`` in the data dir (the ``data_dir`` argument, else
   ``$SBGC_DATA_DIR``, else ``<repo>/data``). Its md5 is checked before it is decoded. Tag
   ``"official"``: the only source whose numbers compare with the paper.
2. An exported folder (``prepare_for_device(..., mode="arrays")``) given as the data dir: decoded
   uint8 arrays plus a manifest of sha256 sums. The tag of the source it was made from is kept.
3. The offline copy (``$SBGC_OFFLINE_CIFAR``, else the first existing of
   ``<repo>/../shared/data/cifar10`` and ``<repo>/data/offline-cifar10``): all 60,000 images
   JPEG-recompressed (tag ``"jpeg-copy"``), plus the first 846 test images with exact pixels
   (``load_exact_test_head``, tag ``"exact-head"``). Accuracy on the JPEG copy estimates CIFAR-10
   accuracy; its bits/dim are not comparable with published ones (JPEG removes fine detail).

A decoded split is cached once as an uncompressed ``.npz`` under ``$SBGC_CACHE_DIR`` (default
``<repo>/data/cache``), keyed by source, split and the checksum of the file it came from; cache
writes are atomic (temporary file, then ``os.replace``).

Array conventions: images are uint8 NHWC ``[N, 32, 32, 3]``, labels int32 ``[N]``, ``indices``
int64 ``[N]`` the position of each image in the official order (train = data_batch_1..5
concatenated). Model inputs follow the paper (appendix A.1): uniform dequantization
``x = (pixel + u) / 256``, ``u ~ U[0, 1)``, then ``2x − 1`` into the model's [−1, 1] space.

Command line: ``python -m sbgc.data {download,info,prepare,export} [--data-dir DIR]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Iterable, Literal

import jax
import numpy as np

from sbgc.data.files import (ImageSet, cache_path, decoded_digest, read_cache, resolve_cache_dir, resolve_data_dir,
                             verify_file, write_cache)
from sbgc.storage import REPO_ROOT, PathLike, atomic_savez, file_digest

Array = jax.Array
Split = Literal["train", "test"]

CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
EXACT_HEAD_SIZE = 846


OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_ARCHIVE = "cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
_OFFICIAL_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

OFFLINE_FILES = {
    "train": "cifar10_train_jpeg.tar.xz",
    "test": "cifar10_test_jpeg.tar.xz",
    "exact_head": "cifar10_test_exact_head.npz",
}
OFFLINE_SHA256 = {
    "cifar10_train_jpeg.tar.xz": "2832b6345a44a1eba3a59f50fe69b7d0cbc9f365b3bd8cf832dbc86d0cdcbf8d",
    "cifar10_test_jpeg.tar.xz": "52f573822d1dd9e312d3a88cfb32dd89d3d66ac3361de987763525af8f36104a",
    "cifar10_test_exact_head.npz": "c9b2fe527c0376f0f3150b1558be81cb7175bb5d143233df40802abf772bdb00",
}
# Reference decode of the JPEG copy with Pillow 12.1.0 (libjpeg-turbo): sha256 of the source file →
# sha256 of (images bytes ‖ labels as int32 bytes). Another JPEG decoder may round differently:
# a mismatch warns, it does not fail.
DECODED_SHA256 = {
    OFFLINE_SHA256["cifar10_train_jpeg.tar.xz"]:
        "379a9cf905969f3ee9914212d43e7aaa6a1eb82a9d57844a8713b09b008a3e18",
    OFFLINE_SHA256["cifar10_test_jpeg.tar.xz"]:
        "8269a4c3c8e52caff1796987ff709a07df8609624816a41de6279213aa050498",
}

EXPORT_MANIFEST = "sbgc_cifar10_export.json"
EXPORT_FORMAT = "sbgc-cifar10-export/1"
_JPEG_MEMBER = re.compile(r"^(?P<split>train|test)/(?P<index>\d{5})_(?P<label>\d)\.jpg$")


# ------------------------------------------------------------------------------------------------
# Locations
# ------------------------------------------------------------------------------------------------
def offline_dir_candidates() -> list[Path]:
    """Folders that may hold the offline copy, in the order they are tried."""
    env = os.environ.get("SBGC_OFFLINE_CIFAR")
    if env:
        return [Path(env)]
    return [REPO_ROOT.parent / "shared" / "data" / "cifar10", REPO_ROOT / "data" / "offline-cifar10"]


def find_offline_file(name: str) -> Path | None:
    """``name`` (a key of ``OFFLINE_SHA256``) in the first candidate folder that has it."""
    for folder in offline_dir_candidates():
        if (folder / name).is_file():
            return folder / name
    return None


def _missing_data_error(what: str, data_dir: Path, offline_name: str | None) -> FileNotFoundError:
    looked = [f"  - official archive: {data_dir / OFFICIAL_ARCHIVE}",
              f"  - exported arrays:  {data_dir / EXPORT_MANIFEST}"]
    if offline_name is not None:
        origin = "$SBGC_OFFLINE_CIFAR" if os.environ.get("SBGC_OFFLINE_CIFAR") else "default"
        for folder in offline_dir_candidates():
            looked.append(f"  - offline copy ({origin}): {folder / offline_name}")
    return FileNotFoundError(
        f"CIFAR-10 {what} not found. Looked in:\n" + "\n".join(looked) + "\n"
        f"Get the official archive ({OFFICIAL_URL}, md5 {OFFICIAL_MD5}) into a data dir, e.g. with\n"
        f"  python -m sbgc.data download --data-dir DIR\n"
        f"then pass data_dir=DIR or set SBGC_DATA_DIR=DIR (default data dir: {REPO_ROOT / 'data'}).")


# ------------------------------------------------------------------------------------------------
# Decoders (numpy, run once per source; the result is cached)
# ------------------------------------------------------------------------------------------------
def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr)


def _decode_official(archive: Path, split: Split, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 32, 32, 3] and labels int32 [N] of one split of the official archive.

    Each batch is a pickled dict with ``b"data"`` uint8 [n, 3072] (channel-major rows:
    ``c * 1024 + h * 32 + w``) and ``b"labels"`` (list of n ints).
    """
    verify_file(archive, OFFICIAL_MD5, "md5")
    wanted = _OFFICIAL_BATCHES[split]
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bar = _progress(SPLIT_SIZES[split], f"decode {split}", progress)
    with tarfile.open(archive, "r:gz") as tf, bar:
        for member in tf:
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or name not in wanted:
                continue
            entry = pickle.load(tf.extractfile(member), encoding="bytes")
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            labels = np.asarray(entry[b"labels"], dtype=np.int32)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
                raise ValueError(
                    f"{archive}:{member.name}: expected data [n, 3072] and n labels, got data "
                    f"{data.shape} and labels {labels.shape}")
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # [n, C, H, W] -> [n, H, W, C]
            batches[name] = (np.ascontiguousarray(images), labels)
            bar.update(len(labels))
    missing = [b for b in wanted if b not in batches]
    if missing:
        raise ValueError(f"{archive}: expected members {list(wanted)}, missing {missing}")
    images = np.concatenate([batches[b][0] for b in wanted])
    labels = np.concatenate([batches[b][1] for b in wanted])
    return images, labels


def _decode_jpeg_tar(path: Path, split: Split, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 32, 32, 3] and labels int32 [N] from a tar of ``split/NNNNN_L.jpg``.

    Members are placed by their index NNNNN; the indices must be exactly ``0 .. N-1``.
    """
    from PIL import Image

    file_hash = OFFLINE_SHA256.get(path.name, "")
    verify_file(path, file_hash, "sha256")
    found: dict[int, tuple[np.ndarray, int]] = {}
    bar = _progress(SPLIT_SIZES[split], f"decode {split}", progress)
    with tarfile.open(path, "r|xz") as tf, bar:
        for member in tf:
            if not member.isfile():
                continue
            m = _JPEG_MEMBER.match(member.name)
            if m is None or m["split"] != split:
                raise ValueError(f"{path}: expected members named '{split}/NNNNN_L.jpg', got {member.name!r}")
            with Image.open(io.BytesIO(tf.extractfile(member).read())) as im:
                pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if pixels.shape != IMAGE_SHAPE:
                raise ValueError(f"{path}:{member.name}: expected an image {IMAGE_SHAPE}, got {pixels.shape}")
            index = int(m["index"])
            if index in found:
                raise ValueError(f"{path}: index {index} appears twice (second time in {member.name!r})")
            found[index] = (pixels, int(m["label"]))
            bar.update(1)
    n = len(found)
    if sorted(found) != list(range(n)):
        missing = sorted(set(range(max(found, default=-1) + 1)) - set(found))[:10]
        raise ValueError(f"{path}: expected indices 0..{n - 1} without gaps, missing e.g. {missing}")
    images = np.stack([found[i][0] for i in range(n)]) if n else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    labels = np.array([found[i][1] for i in range(n)], dtype=np.int32)
    expected = DECODED_SHA256.get(file_hash)
    if expected is not None:
        got = decoded_digest(images, labels)
        if got != expected:
            warnings.warn(
                f"{path}: decoded pixels differ from the reference decode (sha256 {got}, reference "
                f"{expected}); this JPEG decoder rounds differently from Pillow 12.1.0. Results "
                "from this host are not pixel-identical to the reference.", stacklevel=3)
    return images, labels


# ------------------------------------------------------------------------------------------------
# Exported folders
# ------------------------------------------------------------------------------------------------
def _read_manifest(folder: Path) -> dict | None:
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: expected format {EXPORT_FORMAT!r}, got {manifest.get('format')!r}")
    return manifest


def _load_exported(folder: Path, entry: dict, split: str) -> ImageSet:
    path = folder / entry["file"]
    verify_file(path, entry["sha256"], "sha256")
    with np.load(path, allow_pickle=False) as z:
        return ImageSet(images=z["images"], labels=z["labels"], source=entry["source"],
                          indices=z["indices"], split=split)


# ------------------------------------------------------------------------------------------------
# Public loaders
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataLocation:
    """Where a split would be read from: ``kind`` is ``"official"``, ``"export"`` or ``"offline"``."""

    source: str
    path: Path
    kind: str


def locate(split: str, data_dir: PathLike | None = None) -> DataLocation:
    """The file that ``load_cifar10(split)`` (or, for ``"exact_head"``, the exact head) would read.

    Raises ``FileNotFoundError`` listing every place looked when nothing is found.
    """
    if split not in ("train", "test", "exact_head"):
        raise ValueError(f"split: expected 'train', 'test' or 'exact_head', got {split!r}")
    root = resolve_data_dir(data_dir)
    archive = root / OFFICIAL_ARCHIVE
    if split != "exact_head" and archive.is_file():
        return DataLocation("official", archive, "official")
    manifest = _read_manifest(root)
    if manifest is not None and split in manifest["splits"]:
        entry = manifest["splits"][split]
        return DataLocation(entry["source"], root / entry["file"], "export")
    offline = find_offline_file(OFFLINE_FILES[split])
    if offline is not None:
        return DataLocation("exact-head" if split == "exact_head" else "jpeg-copy", offline, "offline")
    if split == "exact_head" and archive.is_file():
        return DataLocation("official", archive, "official")
    what = "exact test head (first 846 test images)" if split == "exact_head" else f"{split} split"
    raise _missing_data_error(what, root, OFFLINE_FILES[split])


def load_cifar10(
    split: Split,
    data_dir: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> ImageSet:
    """One split of CIFAR-10 from the first source found (see the module docstring).

    Args:
      split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
      data_dir: folder with ``cifar-10-python.tar.gz`` or an exported folder; default
        ``$SBGC_DATA_DIR`` or ``<repo>/data``.
      cache_dir: where decoded splits are kept; default ``$SBGC_CACHE_DIR`` or ``<repo>/data/cache``.
      progress: show a progress bar while decoding.

    Returns:
      ``ImageSet`` with images uint8 [N, 32, 32, 3], labels int32 [N], indices int64 [N] and the
      source tag (``"official"``, ``"jpeg-copy"``, or the tag an exported folder carries).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    where = locate(split, data_dir)
    source, path = where.source, where.path
    if where.kind == "export":
        return _load_exported(path.parent, _read_manifest(path.parent)["splits"][split], split)

    if source == "official":
        file_hash, decode = OFFICIAL_MD5, _decode_official
    else:
        file_hash, decode = OFFLINE_SHA256[path.name], _decode_jpeg_tar
    cached_at = cache_path(resolve_cache_dir(cache_dir), source, split, file_hash)
    cached = read_cache(cached_at, source, split)
    if cached is not None:
        return cached
    images, labels = decode(path, split, progress)
    data = ImageSet(images=images, labels=labels, source=source,
                      indices=np.arange(len(labels), dtype=np.int64), split=split)
    write_cache(cached_at, data, path, file_hash)
    return data


def load_exact_test_head(data_dir: PathLike | None = None) -> ImageSet:
    """The first 846 CIFAR-10 test images with exact (not JPEG-recompressed) pixels.

    Read from ``cifar10_test_exact_head.npz`` of the offline copy (tag ``"exact-head"``) or an
    exported folder; a user with only the official archive gets its first 846 test images (tag
    ``"official"``). Use it for bits/dim when only the offline copy is available.
    """
    where = locate("exact_head", data_dir)
    source, path = where.source, where.path
    if where.kind == "official":
        return load_cifar10("test", data_dir).subset(slice(0, EXACT_HEAD_SIZE))
    if where.kind == "export":
        return _load_exported(path.parent, _read_manifest(path.parent)["splits"]["exact_head"], "exact_head")
    verify_file(path, OFFLINE_SHA256[path.name], "sha256")
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["x"], z["y"]
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or labels.shape != images.shape[:1]:
        raise ValueError(f"{path}: expected x uint8 [N, 32, 32, 3] and y [N], got x {images.dtype} "
                         f"{images.shape} and y {labels.shape}")
    return ImageSet(images=images, labels=labels.astype(np.int32), source=source,
                      indices=np.arange(len(labels), dtype=np.int64), split="exact_head")


# ------------------------------------------------------------------------------------------------
# Getting the data onto a machine
# ------------------------------------------------------------------------------------------------
def download_cifar10(data_dir: PathLike | None = None, url: str = OFFICIAL_URL) -> Path:
    """Download the official archive into the data dir (md5-checked, atomic); return its path.

    An archive already there with the right md5 is kept as it is.
    """
    from tqdm import tqdm

    root = resolve_data_dir(data_dir)
    target = root / OFFICIAL_ARCHIVE
    if target.is_file() and file_digest(target, "md5") == OFFICIAL_MD5:
        return target
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=OFFICIAL_ARCHIVE + ".", suffix=".part", dir=root)
    md5 = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=OFFICIAL_ARCHIVE, file=sys.stderr) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    md5.update(block)
                    bar.update(len(block))
    except urllib.error.URLError as err:
        raise ConnectionError(
            f"could not download {url} into {root}: {err.reason}. Without internet, use the "
            "offline copy (see `python -m sbgc.data info`).") from err
    else:
        if md5.hexdigest() != OFFICIAL_MD5:
            raise ValueError(f"{url}: md5 mismatch (expected {OFFICIAL_MD5}, got {md5.hexdigest()}); "
                             "the download is damaged, try again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def prepare_for_device(
    dest_dir: PathLike | None = None,
    mode: Literal["copy", "arrays"] = "copy",
    splits: Iterable[str] = ("train", "test", "exact_head"),
    data_dir: PathLike | None = None,
) -> Path:
    """Put the data into a folder that can be carried to another machine; return the folder.

    ``mode="copy"`` (default ``dest_dir``: ``<repo>/data/offline-cifar10``, where the loaders look
    for an offline copy): the offline copy's compressed files, verified, ~20 MB in all; the other
    machine decodes them once (seconds). ``mode="arrays"``: decoded uint8 arrays + a manifest,
    loaded with ``load_cifar10(split, data_dir=dest_dir)``; ~154 MB for train, ~31 MB for test,
    ~2.6 MB for the exact head, so carry train this way only where there is room.
    """
    splits = tuple(splits)
    unknown = [s for s in splits if s not in OFFLINE_FILES]
    if unknown or not splits:
        raise ValueError(f"splits: expected a non-empty subset of {tuple(OFFLINE_FILES)}, got {splits}")
    if mode == "copy":
        dest = Path(dest_dir) if dest_dir is not None else REPO_ROOT / "data" / "offline-cifar10"
        dest.mkdir(parents=True, exist_ok=True)
        for split in splits:
            name = OFFLINE_FILES[split]
            src = find_offline_file(name)
            if src is None:
                raise _missing_data_error(f"offline file {name}", resolve_data_dir(data_dir), name)
            verify_file(src, OFFLINE_SHA256[name])
            target = dest / name
            if target.resolve() == src.resolve():
                continue
            if target.is_file() and file_digest(target) == OFFLINE_SHA256[name]:
                continue
            fd, tmp = tempfile.mkstemp(prefix=name + ".", suffix=".tmp", dir=dest)
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return dest
    if mode != "arrays":
        raise ValueError(f"mode: expected 'copy' or 'arrays', got {mode!r}")
    if dest_dir is None:
        raise ValueError("dest_dir: an output folder is required for mode='arrays', got None")
    dest = Path(dest_dir)
    manifest = _read_manifest(dest) or {"format": EXPORT_FORMAT, "splits": {}}
    for split in splits:
        data = load_exact_test_head(data_dir) if split == "exact_head" else load_cifar10(split, data_dir)
        name = f"{split}.npz"
        atomic_savez(dest / name, images=data.images, labels=data.labels, indices=data.indices)
        manifest["splits"][split] = {"file": name, "sha256": file_digest(dest / name),
                                     "source": data.source, "n": len(data),
                                     "decoded_sha256": decoded_digest(data.images, data.labels)}
    fd, tmp = tempfile.mkstemp(prefix=EXPORT_MANIFEST + ".", suffix=".tmp", dir=dest)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest / EXPORT_MANIFEST)
    return dest


# ------------------------------------------------------------------------------------------------
# A synthetic stand-in for fast tests
# ------------------------------------------------------------------------------------------------
def _class_palette(n_classes: int) -> np.ndarray:
    """[n_classes, 3] float RGB in [0, 255], hues spread evenly around the colour wheel."""
    hue = np.arange(n_classes) / n_classes
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6.0) % 6.0  # HSV → RGB with S = V = 1
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    value = np.where(np.arange(n_classes) % 2 == 0, 0.9, 0.6)[:, None]  # neighbours differ in brightness too
    return 255.0 * (0.15 + 0.85 * rgb * value)


def toy_images(
    n: int,
    seed: int | Array = 0,
    n_classes: int = NUM_CLASSES,
    size: int = 32,
) -> ImageSet:
    """``n`` synthetic uint8 images whose class shows in colour and stripe orientation.

    Class ``c`` gets a hue ``c / n_classes`` on the colour wheel and stripes at angle
    ``π c / n_classes`` with a random phase, plus pixel noise (std 12 grey levels); labels are
    drawn uniformly. For training and classification tests that must not need CIFAR-10.

    Args:
      n: number of images.
      seed: an int or a JAX PRNG key.
      n_classes: number of classes, 2 .. 64.
      size: image height and width.

    Returns:
      ``ImageSet`` (source ``"toy"``, split ``"toy"``): images uint8 [n, size, size, 3].
    """
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ValueError(f"toy_images: n must be a non-negative int, got {n!r}")
    if not 2 <= n_classes <= 64:
        raise ValueError(f"toy_images: n_classes must be in 2..64, got {n_classes}")
    if not 4 <= size <= 256:
        raise ValueError(f"toy_images: size must be in 4..256, got {size}")
    if isinstance(seed, (int, np.integer)):
        rng = np.random.default_rng(int(seed))
    else:
        typed = jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
        raw = jax.random.key_data(seed) if typed else seed  # uint32 words of the key
        rng = np.random.default_rng(np.asarray(raw, dtype=np.uint32).ravel().tolist())
    labels = rng.integers(0, n_classes, size=n).astype(np.int32)  # [n]
    angle = np.pi * labels / n_classes  # [n]
    phase = rng.uniform(0, 2 * np.pi, size=n)  # [n]
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")  # [size, size] each
    coord = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy  # [n, size, size]
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * coord / 8.0 + phase[:, None, None])  # [n, size, size]
    colour = _class_palette(n_classes)[labels]  # [n, 3]
    images = colour[:, None, None, :] * (0.55 + 0.45 * stripes[..., None])  # [n, size, size, 3]
    images = images + rng.normal(0.0, 12.0, size=images.shape)
    return ImageSet(images=np.clip(np.rint(images), 0, 255).astype(np.uint8), labels=labels,
                      source="toy", indices=np.arange(n, dtype=np.int64), split="toy")
