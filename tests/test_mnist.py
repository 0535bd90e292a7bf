"""MNIST: the official files are found, md5-checked, decoded exactly and cached; bad files fail loudly."""

import gzip
import shutil

import numpy as np
import pytest

from sbgc.data import mnist
from sbgc.data.transforms import dequantize, to_model_space


@pytest.fixture(scope="module")
def offline_dir():
    folder = mnist.folder_candidates()[-1]
    if not all((folder / n).is_file() for n in mnist.MD5):
        pytest.skip(f"the offline MNIST copy is not at {folder}")
    return folder


def test_official_files_decode_to_the_published_facts(offline_dir, tmp_path):
    test = mnist.load_mnist("test", tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert test.images.shape == (10_000, 28, 28, 1) and test.images.dtype == np.uint8
    assert test.source == "mnist-official"
    # the offline copy's README: first labels and the per-digit counts of the test split
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train = mnist.load_mnist("train", tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert train.images.shape == (60_000, 28, 28, 1)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # digits are dark backgrounds with bright strokes: corners black, every image has ink
    assert int(train.images[:, 0, 0, 0].max()) == 0 and (train.images.reshape(60_000, -1).max(1) > 200).all()
    # a second load comes from the cache, identical
    again = mnist.load_mnist("test", tmp_path / "empty", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, test.images)
    assert len(list((tmp_path / "cache").glob("mnist-official-*.npz"))) == 2
    # the model-space conventions of CIFAR-10 apply unchanged (D = 784)
    import jax

    x = to_model_space(dequantize(jax.random.PRNGKey(0), test.images[:4]))
    assert x.shape == (4, 28, 28, 1) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_data_dir_wins_over_the_offline_copy(offline_dir, tmp_path):
    for name in mnist.FILES["test"]:
        shutil.copy(offline_dir / name, tmp_path / name)
    images, labels = mnist.locate("test", tmp_path)
    assert images.parent == tmp_path and labels.parent == tmp_path


def test_missing_files_name_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("SBGC_OFFLINE_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.gz \(md5 9fb629c4189551a2d022fa330f9573f3\)"):
        mnist.load_mnist("test", tmp_path / "empty", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["truncated", "changed"])
def test_a_damaged_file_is_refused_and_nothing_is_cached(offline_dir, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("SBGC_OFFLINE_MNIST", str(tmp_path / "nowhere"))
    data = tmp_path / "data"
    data.mkdir()
    for name in mnist.FILES["test"]:
        shutil.copy(offline_dir / name, data / name)
    bad = data / "t10k-labels-idx1-ubyte.gz"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else gzip.compress(gzip.decompress(raw)[:-1] + b"\x03"))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz.*md5 ec29112dd5afa0611ce80d1b7f02629c"):
        mnist.load_mnist("test", data, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_idx_header_is_checked(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(np.array([2049, 3], ">i4").tobytes() + bytes([1, 2, 3])))
    assert mnist.read_idx(path, "labels").tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="shorter than an IDX images header"):
        mnist.read_idx(path, "images")
    path.write_bytes(gzip.compress(np.array([2049, 1, 1, 1], ">i4").tobytes() + bytes([1])))
    with pytest.raises(ValueError, match="magic 2049, expected 2051"):
        mnist.read_idx(path, "images")
    path.write_bytes(gzip.compress(np.array([2049, 4], ">i4").tobytes() + bytes([1, 2, 3])))
    with pytest.raises(ValueError, match="3 data bytes, expected 4"):
        mnist.read_idx(path, "labels")


def test_the_dataset_registry_knows_each_split_and_names_it_as_the_cache_keys_do():
    from sbgc.data import datasets as D

    test = D.evaluation_split("mnist")
    mnist = D.get_dataset("mnist")
    assert test.images.shape[1:] == mnist.image_shape and len(mnist.class_names) == 10
    # the description enters the shipped results cache's keys (data_source): it must not drift
    assert D.describe(test) == "MNIST test split (official files, exact pixels, 10,000 images)"
    assert D.dataset_of("mnist") == "mnist" and D.dataset_of("exact_head") == "cifar10"
    assert D.SPLIT_DATASET == {"mnist": "mnist", "cifar10": "cifar10", "exact_head": "cifar10"}
    with pytest.raises(ValueError, match="dataset must be one of"):
        D.get_dataset("svhn")
    with pytest.raises(ValueError, match="data must be one of"):
        D.evaluation_split("svhn")
