"""MNIST for the generative classifier: finding, verifying, decoding and caching the official files.

Where the files come from (first folder holding all four wins):

1. the data dir (the ``data_dir`` argument, else ``$SBGC_DATA_DIR``, else ``<repo>/data``), directly
   or in its ``mnist/`` subfolder;
2. the offline copy (``$SBGC_OFFLINE_MNIST``, else ``<repo>/../shared/data/mnist``).

Both hold the four official IDX files (LeCun, Cortes & Burges) byte for byte: each is md5-checked
against the published value before it is decoded, so the pixels are EXACT (source tag
``"mnist-official"``) and accuracy and bits/dim computed on them compare with published MNIST
numbers — unlike the JPEG copy of CIFAR-10.

A decoded split is cached once as an uncompressed ``.npz`` under ``$SBGC_CACHE_DIR`` (default
``<repo>/data/cache``), keyed by the md5 of its image file, written atomically (temporary file, then
rename) and re-verified by a checksum of its pixels and labels on every read.

Array conventions: images uint8 ``[N, 28, 28, 1]`` (NHWC, one channel), labels int32 ``[N]`` in
0..9, indices int64 ``[N]`` the position in the official file. Model inputs use the same
dequantization and model space as CIFAR-10 (:func:`sbgc.data.cifar10.dequantize`,
:func:`sbgc.data.cifar10.to_model_space`): x = (pixel + u)/256, then 2x − 1; D = 784.

Command line: ``python -m sbgc.data.mnist info [--data-dir DIR]`` (also shown by ``python -m sbgc.data info``).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from sbgc.data.files import ImageSet, cache_path, read_cache, resolve_cache_dir, resolve_data_dir, write_cache
from sbgc.storage import REPO_ROOT, PathLike, file_digest

IMAGE_SHAPE = (28, 28, 1)
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
SOURCE = "mnist-official"
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

# The published md5 of each official file (the README of the offline copy lists the same).
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_IDX_MAGIC = {"images": 2051, "labels": 2049}


def folder_candidates(data_dir: PathLike | None = None) -> list[Path]:
    """Folders that may hold the four files, in the order they are tried."""
    root = resolve_data_dir(data_dir)
    env = os.environ.get("SBGC_OFFLINE_MNIST")
    offline = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data" / "mnist"]
    return [root, root / "mnist", *offline]


def locate(split: str, data_dir: PathLike | None = None) -> tuple[Path, Path]:
    """(images file, labels file) of ``split`` in the first folder holding both.

    Raises ``FileNotFoundError`` naming every folder looked in and the files and md5s expected.
    """
    if split not in FILES:
        raise ValueError(f"MNIST split: expected 'train' or 'test', got {split!r}")
    names = FILES[split]
    looked = folder_candidates(data_dir)
    for folder in looked:
        if all((folder / n).is_file() for n in names):
            return folder / names[0], folder / names[1]
    want = "\n".join(f"  {n} (md5 {MD5[n]})" for n in names)
    where = "\n".join(f"  - {f}" for f in looked)
    raise FileNotFoundError(
        f"MNIST {split} split not found. Expected the official files\n{want}\nin one of\n{where}\n"
        "Put them in a data dir and pass --data-dir DIR or set SBGC_DATA_DIR=DIR "
        "(or SBGC_OFFLINE_MNIST=DIR for a copy elsewhere).")


def _check_md5(path: Path) -> None:
    expected = MD5[path.name]
    got = file_digest(path, "md5")
    if got != expected:
        raise ValueError(
            f"{path}: md5 {got} does not match the official {path.name} (md5 {expected}); the file "
            "is truncated, damaged or not the official one. Replace it with the official file.")


def read_idx(path: Path, kind: str) -> np.ndarray:
    """Decode one gzipped IDX file: ``kind="images"`` → uint8 [N, 28, 28, 1], ``"labels"`` → int32 [N].

    Header (big-endian int32): magic (2051 images / 2049 labels), count, then rows and columns for
    images; the uint8 payload follows. A wrong magic or size raises ``ValueError`` naming the file.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read()
    head = 16 if kind == "images" else 8
    if len(raw) < head:
        raise ValueError(f"{path}: {len(raw)} bytes, shorter than an IDX {kind} header")
    fields = np.frombuffer(raw[:head], dtype=">i4")
    if fields[0] != _IDX_MAGIC[kind]:
        raise ValueError(f"{path}: IDX magic {fields[0]}, expected {_IDX_MAGIC[kind]} for {kind}")
    shape = (int(fields[1]), int(fields[2]), int(fields[3]), 1) if kind == "images" else (int(fields[1]),)
    data = np.frombuffer(raw, dtype=np.uint8, offset=head)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} data bytes, expected {int(np.prod(shape))} for shape {shape}")
    return data.reshape(shape).copy() if kind == "images" else data.astype(np.int32)


def load_mnist(split: str, data_dir: PathLike | None = None, *, cache_dir: PathLike | None = None) -> ImageSet:
    """One split of MNIST (``"train"``: 60,000 images, ``"test"``: 10,000), md5-checked and cached.

    Returns a split with images uint8 [N, 28, 28, 1], labels int32 [N], indices int64 [N] (the
    position in the official file) and source ``"mnist-official"``.
    """
    images_path, labels_path = locate(split, data_dir)
    for path in (images_path, labels_path):  # ~30 ms: a wrong file is reported even when a cache exists
        _check_md5(path)
    cached_at = cache_path(resolve_cache_dir(cache_dir), SOURCE, split, MD5[images_path.name])
    cached = read_cache(cached_at, SOURCE, split)
    if cached is not None:
        return cached
    images, labels = read_idx(images_path, "images"), read_idx(labels_path, "labels")
    if len(images) != SPLIT_SIZES[split] or len(labels) != SPLIT_SIZES[split]:
        raise ValueError(f"MNIST {split}: {len(images)} images and {len(labels)} labels, "
                         f"expected {SPLIT_SIZES[split]} of each")
    data = ImageSet(images=images, labels=labels, source=SOURCE,
                      indices=np.arange(len(labels), dtype=np.int64), split=split)
    write_cache(cached_at, data, images_path, MD5[images_path.name])
    return data


def info_lines(data_dir: PathLike | None = None) -> tuple[list[str], int]:
    """Lines saying where each split would be read from (for ``info`` commands), and a status."""
    lines, status = [], 0
    for split in FILES:
        try:
            images, labels = locate(split, data_dir)
        except FileNotFoundError as err:
            lines.append(f"mnist {split:5s} NOT FOUND\n{err}")
            status = 1
            continue
        lines.append(f"mnist {split:5s} source={SOURCE} (exact pixels, md5-checked on decode) "
                     f"files={images}, {labels.name}")
    return lines, status


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sbgc.data.mnist", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("info", "prepare"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    a = p.parse_args(argv)
    try:
        if a.command == "info":
            lines, status = info_lines(a.data_dir)
            print("\n".join(lines))
            return status
        for split in FILES:
            d = load_mnist(split, a.data_dir, cache_dir=a.cache_dir)
            print(f"{split}: {len(d)} images {d.images.shape[1:]}, source={d.source}")
        return 0
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
