"""Tests of sbgc.data.cifar10: sources, checksums, caching, export, and the JAX-side transforms."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.data import cifar10 as D
from sbgc.data import cli as CLI
from sbgc.data import files as F
from sbgc.data import transforms as TF


# ------------------------------------------------------------------------------------------------
# Fixtures and builders
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data anywhere: empty data dir, empty offline dir, private cache dir."""
    for name in ("data", "offline", "cache"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("SBGC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SBGC_OFFLINE_CIFAR", str(tmp_path / "offline"))
    monkeypatch.setenv("SBGC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _offline_or_skip(name: str) -> Path:
    path = D.find_offline_file(name)
    if path is None:
        pytest.skip(f"offline CIFAR-10 copy ({name}) not on this machine")
    return path


def _write_fake_official(path: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, tuple]:
    """A tiny cifar-10-python.tar.gz in the official layout; returns {batch: (data, labels)}."""
    rng = np.random.default_rng(seed)
    batches = {}
    with tarfile.open(path, "w:gz") as tf:
        for name, n in sizes.items():
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # [n, C*H*W], channel-major
            labels = [int(v) for v in rng.integers(0, 10, size=n)]
            batches[name] = (data, labels)
            payload = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                    b"filenames": [b"x.png"] * n})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return batches


def _write_jpeg_tar(path: Path, members: dict[str, np.ndarray]) -> None:
    from PIL import Image

    with tarfile.open(path, "w:xz") as tf:
        for name, pixels in members.items():
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
            info = tarfile.TarInfo(name)
            info.size = buf.tell()
            buf.seek(0)
            tf.addfile(info, buf)


OFFICIAL_SIZES = {**{f"data_batch_{i}": 2 + i for i in range(1, 6)}, "test_batch": 4}


# ------------------------------------------------------------------------------------------------
# The offline copy (real data; skipped where it is absent)
# ------------------------------------------------------------------------------------------------
def test_jpeg_copy_agrees_with_exact_head(tmp_path):
    _offline_or_skip(D.OFFLINE_FILES["test"])
    test = D.load_cifar10("test", data_dir=tmp_path)  # empty data dir: the offline copy is used
    head = D.load_exact_test_head(data_dir=tmp_path)
    assert (test.source, head.source) == ("jpeg-copy", "exact-head")
    assert test.images.shape == (10_000, 32, 32, 3) and test.images.dtype == np.uint8
    assert np.array_equal(test.indices, np.arange(10_000))
    assert np.array_equal(np.bincount(test.labels, minlength=10), np.full(10, 1000))
    assert len(head) == D.EXACT_HEAD_SIZE and head.labels.dtype == np.int32
    assert np.array_equal(test.labels[: len(head)], head.labels)
    mae = np.abs(test.images[: len(head)].astype(np.int16) - head.images.astype(np.int16)).mean()
    assert 3.0 <= mae <= 9.0, f"mean |JPEG - exact| = {mae:.2f} grey levels"


def test_jpeg_copy_train_split():
    _offline_or_skip(D.OFFLINE_FILES["train"])
    train = D.load_cifar10("train", data_dir=F.REPO_ROOT / "no-such-dir")
    assert train.source == "jpeg-copy" and train.split == "train"
    assert train.images.shape == (50_000, 32, 32, 3)
    assert np.array_equal(np.bincount(train.labels, minlength=10), np.full(10, 5000))
    assert np.array_equal(train.indices, np.arange(50_000))


def test_fresh_decode_matches_reference_and_is_cached(monkeypatch, tmp_path):
    src = _offline_or_skip(D.OFFLINE_FILES["test"])
    monkeypatch.setenv("SBGC_OFFLINE_CIFAR", str(src.parent))
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a decoder that rounds differently warns
        fresh = D.load_cifar10("test", data_dir=tmp_path, cache_dir=cache)
    assert F.decoded_digest(fresh.images, fresh.labels) == D.DECODED_SHA256[D.OFFLINE_SHA256[src.name]]
    [cached_file] = cache.glob("jpeg-copy-test-*.npz")
    assert not list(cache.glob("*.tmp"))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    decode = D._decode_jpeg_tar
    monkeypatch.setattr(D, "_decode_jpeg_tar", no_decode)
    again = D.load_cifar10("test", data_dir=tmp_path, cache_dir=cache)
    assert np.array_equal(again.images, fresh.images) and np.array_equal(again.labels, fresh.labels)

    # A damaged cache is rebuilt, with a warning: flipped pixel bytes, then a truncated file.
    monkeypatch.setattr(D, "_decode_jpeg_tar", decode)
    blob = bytearray(cached_file.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    cached_file.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="unusable cache"):
        rebuilt = D.load_cifar10("test", data_dir=tmp_path, cache_dir=cache)
    assert np.array_equal(rebuilt.images, fresh.images)
    cached_file.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unusable cache"):
        assert F.read_cache(cached_file, "jpeg-copy", "test") is None


# ------------------------------------------------------------------------------------------------
# The official archive (a tiny fake in the official layout)
# ------------------------------------------------------------------------------------------------
def test_official_layout_is_parsed_to_nhwc(monkeypatch, tmp_path):
    archive = tmp_path / D.OFFICIAL_ARCHIVE
    batches = _write_fake_official(archive, OFFICIAL_SIZES)
    monkeypatch.setattr(D, "OFFICIAL_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    cache = tmp_path / "cache"

    train = D.load_cifar10("train", data_dir=tmp_path, cache_dir=cache)
    test = D.load_cifar10("test", data_dir=tmp_path, cache_dir=cache)
    assert train.source == test.source == "official"  # preferred over any offline copy
    data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])  # batches in order
    labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.images.shape == (len(data), 32, 32, 3)
    assert np.array_equal(train.labels, np.array(labels, dtype=np.int32))
    assert np.array_equal(train.indices, np.arange(len(data)))
    # pixel (h, w, c) of image i sits at data[i, c * 1024 + h * 32 + w]
    i, h, w, c = 7, 3, 17, 2
    assert train.images[i, h, w, c] == data[i, c * 1024 + h * 32 + w]
    expected = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(train.images, expected)
    assert np.array_equal(test.images, batches["test_batch"][0].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(D, "_decode_official", no_decode)
    assert np.array_equal(D.load_cifar10("train", data_dir=tmp_path, cache_dir=cache).images, expected)


def test_official_md5_mismatch_is_rejected(tmp_path):
    archive = tmp_path / D.OFFICIAL_ARCHIVE
    _write_fake_official(archive, OFFICIAL_SIZES)
    got = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(ValueError) as err:
        D.load_cifar10("test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(archive) in message and D.OFFICIAL_MD5 in message and got in message
    assert not list((tmp_path / "cache").glob("*"))  # nothing cached from a rejected archive


# ------------------------------------------------------------------------------------------------
# Offline tar parsing and checks (tiny fakes)
# ------------------------------------------------------------------------------------------------
def test_jpeg_tar_members_are_placed_by_index(monkeypatch, isolated):
    name = D.OFFLINE_FILES["test"]
    colours = {0: (250, 10, 10), 1: (10, 250, 10), 2: (10, 10, 250)}
    members = {f"test/{i:05d}_{label}.jpg": np.full((32, 32, 3), colours[i], np.uint8)
               for i, label in ((2, 5), (0, 1), (1, 9))}  # written out of order
    path = isolated / "offline" / name
    _write_jpeg_tar(path, members)
    monkeypatch.setitem(D.OFFLINE_SHA256, name, F.file_digest(path))

    split = D.load_cifar10("test")
    assert split.source == "jpeg-copy"
    assert np.array_equal(split.labels, [1, 9, 5]) and np.array_equal(split.indices, [0, 1, 2])
    for i, colour in colours.items():
        assert np.abs(split.images[i].astype(int) - np.array(colour)).max() <= 8  # JPEG, quality 95


def test_jpeg_tar_with_a_gap_is_rejected(monkeypatch, isolated):
    name = D.OFFLINE_FILES["test"]
    path = isolated / "offline" / name
    _write_jpeg_tar(path, {f"test/{i:05d}_0.jpg": np.zeros((32, 32, 3), np.uint8) for i in (0, 2)})
    monkeypatch.setitem(D.OFFLINE_SHA256, name, F.file_digest(path))
    with pytest.raises(ValueError, match=r"indices 0\.\.1 without gaps"):
        D.load_cifar10("test")


def test_offline_sha256_mismatch_is_rejected(isolated):
    path = isolated / "offline" / D.OFFLINE_FILES["test"]
    path.write_bytes(b"corrupted")
    with pytest.raises(ValueError) as err:
        D.load_cifar10("test")
    message = str(err.value)
    assert str(path) in message and D.OFFLINE_SHA256[path.name] in message
    assert hashlib.sha256(b"corrupted").hexdigest() in message


def test_missing_data_lists_every_place(isolated):
    with pytest.raises(FileNotFoundError) as err:
        D.load_cifar10("train")
    message = str(err.value)
    for place in (isolated / "data" / D.OFFICIAL_ARCHIVE, isolated / "data" / D.EXPORT_MANIFEST,
                  isolated / "offline" / D.OFFLINE_FILES["train"]):
        assert str(place) in message
    assert D.OFFICIAL_URL in message and "python -m sbgc.data download --data-dir DIR" in message
    with pytest.raises(FileNotFoundError, match="exact test head"):
        D.load_exact_test_head()


def test_missing_data_lists_default_offline_folders(monkeypatch, tmp_path):
    monkeypatch.delenv("SBGC_OFFLINE_CIFAR", raising=False)
    monkeypatch.delenv("SBGC_DATA_DIR", raising=False)
    monkeypatch.setattr(D, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(F, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError) as err:
        D.load_cifar10("test")
    message = str(err.value)
    assert str(tmp_path / "shared" / "data" / "cifar10" / D.OFFLINE_FILES["test"]) in message
    assert str(tmp_path / "repo" / "data" / "offline-cifar10" / D.OFFLINE_FILES["test"]) in message
    assert str(tmp_path / "repo" / "data" / D.OFFICIAL_ARCHIVE) in message


def test_bad_split_names_raise():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        D.load_cifar10("valid")
    with pytest.raises(ValueError, match="mode"):
        D.prepare_for_device("x", mode="zip", splits=("test",))
    with pytest.raises(ValueError, match="splits"):
        D.prepare_for_device("x", splits=("validation",))


# ------------------------------------------------------------------------------------------------
# Carrying data to another machine
# ------------------------------------------------------------------------------------------------
def test_exported_arrays_load_with_their_tag(monkeypatch, tmp_path):
    src = _offline_or_skip(D.OFFLINE_FILES["test"])
    _offline_or_skip(D.OFFLINE_FILES["exact_head"])
    monkeypatch.setenv("SBGC_OFFLINE_CIFAR", str(src.parent))
    original = D.load_cifar10("test", data_dir=tmp_path / "none")
    out = D.prepare_for_device(tmp_path / "export", mode="arrays", splits=("test", "exact_head"),
                               data_dir=tmp_path / "none")
    manifest = json.loads((out / D.EXPORT_MANIFEST).read_text())
    assert manifest["splits"]["test"]["source"] == "jpeg-copy"

    monkeypatch.setenv("SBGC_OFFLINE_CIFAR", str(tmp_path / "nowhere"))  # only the export is left
    loaded = D.load_cifar10("test", data_dir=out)
    assert loaded.source == "jpeg-copy" and D.locate("test", out).kind == "export"
    assert np.array_equal(loaded.images, original.images) and np.array_equal(loaded.labels, original.labels)
    head = D.load_exact_test_head(data_dir=out)
    assert head.source == "exact-head" and len(head) == D.EXACT_HEAD_SIZE
    with pytest.raises(FileNotFoundError, match="train split"):  # not exported, nothing else left
        D.load_cifar10("train", data_dir=out)

    blob = bytearray((out / "test.npz").read_bytes())
    blob[-100] ^= 0xFF
    (out / "test.npz").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        D.load_cifar10("test", data_dir=out)


def test_compressed_copy_is_found_as_offline_copy(monkeypatch, tmp_path):
    src = _offline_or_skip(D.OFFLINE_FILES["test"])
    monkeypatch.setenv("SBGC_OFFLINE_CIFAR", str(src.parent))
    out = D.prepare_for_device(tmp_path / "carry", mode="copy", splits=("test", "exact_head"))
    for split in ("test", "exact_head"):
        name = D.OFFLINE_FILES[split]
        assert F.file_digest(out / name) == D.OFFLINE_SHA256[name]
    monkeypatch.setenv("SBGC_OFFLINE_CIFAR", str(out))
    where = D.locate("test", tmp_path / "none")
    assert (where.source, where.kind, where.path) == ("jpeg-copy", "offline", out / D.OFFLINE_FILES["test"])
    assert not list(out.glob("*.tmp"))


def test_cli_info_reports_missing_and_found(isolated, capsys):
    assert CLI.main(["info"]) == 1
    assert "NOT FOUND" in capsys.readouterr().out
    archive = isolated / "data" / D.OFFICIAL_ARCHIVE
    _write_fake_official(archive, OFFICIAL_SIZES)
    CLI.main(["info"])
    out = capsys.readouterr().out
    assert "source=official" in out and str(archive) in out


# ------------------------------------------------------------------------------------------------
# The split container
# ------------------------------------------------------------------------------------------------
def test_cifar_split_validates_and_is_read_only():
    images = np.zeros((3, 32, 32, 3), np.uint8)
    labels = np.array([0, 1, 2], np.int32)
    indices = np.arange(3, dtype=np.int64)
    split = F.ImageSet(images, labels, "toy", indices, "toy")
    assert images.flags.writeable  # the caller's array is left as it was
    with pytest.raises(ValueError):
        split.images[0, 0, 0, 0] = 1
    sub = split.subset(np.array([2, 0]))
    assert np.array_equal(sub.indices, [2, 0]) and np.array_equal(sub.labels, [2, 0])
    with pytest.raises(ValueError, match="labels"):
        F.ImageSet(images, labels[:2], "toy", indices, "toy")
    with pytest.raises(ValueError, match="uint8"):
        F.ImageSet(images.astype(np.float32), labels, "toy", indices, "toy")
    with pytest.raises(ValueError, match="indices"):
        F.ImageSet(images, labels, "toy", indices.astype(np.int32), "toy")


# ------------------------------------------------------------------------------------------------
# JAX transforms
# ------------------------------------------------------------------------------------------------
def test_dequantize_range_and_mean():
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))
    y = TF.dequantize(jax.random.key(1), x)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) < 1.0
    assert np.array_equal(np.floor(np.asarray(y) * 256).astype(np.uint8), np.asarray(x))  # same bin
    offset = float(jnp.mean(y * 256 - x.astype(jnp.float32)))  # E[u] = 1/2; std error ~7e-4
    assert abs(offset - 0.5) < 5e-3
    assert np.array_equal(TF.dequantize(jax.random.key(1), x), y)
    assert not np.array_equal(TF.dequantize(jax.random.key(2), x), y)


def test_dequantize_never_leaves_the_pixel_bin():
    # (x + u) rounds up to x + 1 in float32 for u within ~2^-17 of 1 (x >= 128): ~8 of 10^6 draws.
    for pixel in (255, 130):
        x = jnp.full((1_000_000,), pixel, jnp.uint8)
        y = np.asarray(TF.dequantize(jax.random.key(3), x))
        assert y.max() < (pixel + 1) / 256 and y.min() >= pixel / 256


def test_dequantize_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        TF.dequantize(jax.random.key(0), jnp.zeros((2, 3), jnp.float32))


def test_random_flip_flips_width_only_and_is_deterministic():
    n, h, w = 256, 4, 6
    x = jnp.arange(n * h * w * 3, dtype=jnp.int32).reshape(n, h, w, 3)  # no symmetric image
    key = jax.random.key(7)
    y = np.asarray(TF.random_flip(key, x))
    xn = np.asarray(x)
    same = np.all(y == xn, axis=(1, 2, 3))
    flipped = np.all(y == xn[:, :, ::-1, :], axis=(1, 2, 3))
    assert np.all(same ^ flipped)  # every image is either untouched or mirrored left-right
    assert 0.35 * n < flipped.sum() < 0.65 * n
    assert np.array_equal(np.asarray(TF.random_flip(key, x)), y)
    assert not np.array_equal(np.asarray(TF.random_flip(jax.random.key(8), x)), y)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        TF.random_flip(key, x[0])


def test_model_space_round_trip():
    x = jnp.array([0.0, 0.25, 0.5, 1.0])
    assert np.allclose(TF.to_model_space(x), [-1.0, -0.5, 0.0, 1.0])
    assert np.allclose(TF.from_model_space(TF.to_model_space(x)), x)


def test_class_names():
    assert D.CLASS_NAMES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                             "horse", "ship", "truck")


# ------------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------------
def test_toy_images_are_deterministic_and_separable():
    train = D.toy_images(400, seed=0)
    assert train.images.shape == (400, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.source == "toy" and set(np.unique(train.labels)) == set(range(10))
    assert np.array_equal(D.toy_images(400, seed=0).images, train.images)
    assert not np.array_equal(D.toy_images(400, seed=1).images, train.images)
    # A nearest-class-mean classifier on mean colour + per-direction gradient energy must nearly
    # always be right on fresh draws: the class is visible.
    def features(s):
        x = s.images.astype(np.float32)
        gx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))
        gy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
        return np.concatenate([x.mean(axis=(1, 2)), gx[:, None], gy[:, None]], axis=1)

    test = D.toy_images(400, seed=123)
    means = np.stack([features(train)[train.labels == c].mean(0) for c in range(10)])
    pred = np.argmin(((features(test)[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == test.labels).mean() >= 0.95


def test_toy_images_accept_jax_keys_and_check_arguments():
    a = D.toy_images(8, jax.random.key(5), n_classes=3, size=16)
    b = D.toy_images(8, jax.random.PRNGKey(5), n_classes=3, size=16)
    assert a.images.shape == (8, 16, 16, 3) and a.labels.max() < 3
    assert np.array_equal(a.images, b.images)  # typed and raw keys with the same seed agree
    with pytest.raises(ValueError, match="n_classes"):
        D.toy_images(8, 0, n_classes=1)
    with pytest.raises(ValueError, match="n must"):
        D.toy_images(-1, 0)


def test_download_checks_md5_and_writes_atomically(monkeypatch, tmp_path):
    fake = tmp_path / "remote" / D.OFFICIAL_ARCHIVE
    fake.parent.mkdir()
    _write_fake_official(fake, OFFICIAL_SIZES)
    dest = tmp_path / "data"
    with pytest.raises(ValueError, match="md5 mismatch"):  # the real md5: the fake is rejected
        D.download_cifar10(dest, url=fake.as_uri())
    assert not list(dest.iterdir())  # no partial file left behind
    monkeypatch.setattr(D, "OFFICIAL_MD5", F.file_digest(fake, "md5"))
    path = D.download_cifar10(dest, url=fake.as_uri())
    assert path == dest / D.OFFICIAL_ARCHIVE and path.read_bytes() == fake.read_bytes()
    assert D.locate("train", dest).kind == "official"


def test_describe_names_dataset_split_and_pixel_fidelity():
    from sbgc.data.datasets import describe

    images, labels, idx = np.zeros((3, 4, 4, 1), np.uint8), np.zeros(3, np.int32), np.arange(3, dtype=np.int64)
    assert describe(F.ImageSet(images, labels, "mnist-official", idx, "test")) == "MNIST test split (official files, exact pixels, 3 images)"
    assert "exact pixels" in describe(F.ImageSet(images, labels, "exact-head", idx, "exact_head"))
    assert "JPEG-recompressed copy" in describe(F.ImageSet(images, labels, "jpeg-copy", idx, "test"))
