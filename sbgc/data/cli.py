"""Command line of the data layer: ``python -m sbgc.data {download,info,prepare,export} [--data-dir DIR]``.

``info`` says where each split of CIFAR-10 and MNIST would be read from (and whether it is cached);
``download`` fetches the official CIFAR-10 archive (md5-checked); ``prepare`` decodes and caches
CIFAR-10; ``export`` writes a folder to carry to another machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from sbgc.data import mnist
from sbgc.data.cifar10 import (OFFLINE_FILES, OFFICIAL_URL, decoded_digest, download_cifar10, load_cifar10,
                               load_exact_test_head, locate, offline_dir_candidates, prepare_for_device)
from sbgc.data.files import resolve_cache_dir, resolve_data_dir

# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def _cmd_info(args) -> int:
    cache = resolve_cache_dir(args.cache_dir)
    print(f"data dir:  {resolve_data_dir(args.data_dir)}")
    print(f"cache dir: {cache}")
    print("offline copy candidates: " + ", ".join(str(p) for p in offline_dir_candidates()))
    status = 0
    for split in ("train", "test", "exact_head"):
        try:
            where = locate(split, args.data_dir)
        except FileNotFoundError as err:
            print(f"{split:10s} NOT FOUND\n{err}")
            status = 1
            continue
        cached = sorted(cache.glob(f"{where.source}-{split}-*.npz")) if where.kind != "export" else []
        note = f"; cached: {cached[0]} ({_size(cached[0])})" if cached else ""
        print(f"{split:10s} source={where.source:10s} {where.kind:8s} file={where.path} "
              f"({_size(where.path)}){note}")
    lines, mnist_status = mnist.info_lines(args.data_dir)
    print("\n".join(lines))
    return max(status, mnist_status)


def _cmd_prepare(args) -> int:
    for split in ("train", "test"):
        data = load_cifar10(split, args.data_dir, cache_dir=args.cache_dir, progress=True)
        print(f"{split}: {len(data)} images, source={data.source}, "
              f"decoded sha256={decoded_digest(data.images, data.labels)}")
    try:
        head = load_exact_test_head(args.data_dir)
        print(f"exact_head: {len(head)} images, source={head.source}")
    except FileNotFoundError:
        print("exact_head: not available (only shipped with the offline copy)")
    return 0


def _cmd_export(args) -> int:
    out = prepare_for_device(args.out, mode=args.mode, splits=args.splits, data_dir=args.data_dir)
    total = 0
    for path in sorted(out.iterdir()):
        if path.is_file():
            total += path.stat().st_size
            print(f"{path} ({_size(path)})")
    print(f"total {total / 2**20:.1f} MiB in {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbgc.data", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz or an export")
    parser.add_argument("--cache-dir", default=None, help="decode cache (default data/cache)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("download", help=f"download {OFFICIAL_URL} into --data-dir (md5-checked)")
    sub.add_parser("info", help="which source each split would use, and the sizes")
    sub.add_parser("prepare", help="decode and cache all splits")
    export = sub.add_parser("export", help="write a folder to carry to another machine")
    export.add_argument("--out", default=None,
                        help="output folder (default data/offline-cifar10 for --mode copy)")
    export.add_argument("--mode", choices=("copy", "arrays"), default="copy",
                        help="copy: the compressed offline files (~20 MB); arrays: decoded uint8 npz")
    export.add_argument("--splits", nargs="+", choices=tuple(OFFLINE_FILES),
                        default=list(OFFLINE_FILES))
    # Let --data-dir / --cache-dir also come after the subcommand.
    for p in sub.choices.values():
        p.add_argument("--data-dir", default=argparse.SUPPRESS)
        p.add_argument("--cache-dir", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(download_cifar10(args.data_dir))
            return 0
        return {"info": _cmd_info, "prepare": _cmd_prepare, "export": _cmd_export}[args.command](args)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
