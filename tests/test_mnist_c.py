"""Tests of the MNIST-C corruptions (sbgc/data/mnist_c.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from sbgc.data import mnist_c as M

NAMES = M.MNIST_C_CORRUPTIONS
DETERMINISTIC = tuple(n for n in NAMES if n not in M.RANDOM_CORRUPTIONS)


def _synthetic_digits(n: int) -> np.ndarray:
    """Stand-in digits (a few thick strokes, blurred) uint8 [n, 28, 28, 1], for runs without MNIST."""
    rng = np.random.default_rng(0)
    out = np.zeros((n, 28, 28))
    for i in range(n):
        for _ in range(3):
            r0, r1 = rng.integers(6, 22, size=2)
            out[i] += M.line_layer(6.0, float(r0), 21.0, float(r1))
        out[i] = np.maximum(out[i], ndi.rotate(out[i], 60, reshape=False, order=1))
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)[..., None]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    try:
        from sbgc.data.mnist import load_mnist

        return np.array(load_mnist("test").images[:8])
    except (FileNotFoundError, OSError, ValueError):
        return _synthetic_digits(8)


def _blob(row: float, col: float, sigma: float = 1.5) -> np.ndarray:
    """One uint8 [1, 28, 28, 1] image: a Gaussian blob of peak 255 at (row, col)."""
    r, c = np.mgrid[:28, :28]
    g = np.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))
    return np.round(255 * g).astype(np.uint8)[None, :, :, None]


def _com(img: np.ndarray) -> np.ndarray:
    """Centre of mass (row, col) of one image [28, 28] or [28, 28, 1]."""
    return np.array(ndi.center_of_mass(np.asarray(img, dtype=np.float64).reshape(28, 28)))


def _expected_position(linear: np.ndarray, row: float, col: float) -> np.ndarray:
    """Where the warp with inverse map ``centred(linear)`` sends the input point (row, col)."""
    x, y = np.linalg.solve(linear, np.array([col, row]) - M.CENTRE) + M.CENTRE
    return np.array([y, x])


# --- API --------------------------------------------------------------------------------------
def test_names_and_parameters():
    assert NAMES == (
        "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
        "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges",
    )
    assert M.MNIST_C_NOISE == ("shot_noise", "impulse_noise")
    assert set(M.PARAMETERS) == set(NAMES) == set(M.REFERENCE_SEVERITY)
    assert set(DETERMINISTIC) == {"scale", "brightness", "stripe", "canny_edges"}
    assert M.PARAMETERS["shot_noise"] == 3 and M.PARAMETERS["impulse_noise"] == 0.17
    assert M.PARAMETERS["rotate"] == 0.4 and M.PARAMETERS["shear"] == 0.4 and M.PARAMETERS["translate"] == 3
    assert M.PARAMETERS["glass_blur"] == (0.7, 1, 2) and M.PARAMETERS["fog"] == (3.0, 1.4, 256)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_change_and_seeds(images, name):
    a = M.corrupt_mnist(images, name, seed=3)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert not np.array_equal(a, images), f"{name} left the images unchanged"
    np.testing.assert_array_equal(a, M.corrupt_mnist(images, name, seed=3))
    # [N, 28, 28] in gives [N, 28, 28] out, same pixels.
    flat = M.corrupt_mnist(images[..., 0], name, seed=3)
    assert flat.shape == images.shape[:3]
    np.testing.assert_array_equal(flat, a[..., 0])
    b = M.corrupt_mnist(images, name, seed=4)
    if name in M.RANDOM_CORRUPTIONS:
        assert not np.array_equal(a, b), f"{name}: another seed gave the same images"
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_at_a_time(images, name):
    idx = np.array([7, 100, 3, 42, 9, 0, 5, 11])
    batch = M.corrupt_mnist(images, name, seed=5, indices=idx)
    for i in range(len(images)):
        one = M.corrupt_mnist(images[i : i + 1], name, seed=5, indices=idx[i : i + 1])
        np.testing.assert_array_equal(one[0], batch[i])
    # A subset in another order: each image keeps its own corruption.
    sub = [5, 2, 6]
    np.testing.assert_array_equal(M.corrupt_mnist(images[sub], name, seed=5, indices=idx[sub]), batch[sub])


def test_empty_batch(images):
    out = M.corrupt_mnist(images[:0], "fog", seed=0)
    assert out.shape == (0, 28, 28, 1) and out.dtype == np.uint8


def test_bad_inputs(images):
    with pytest.raises(ValueError, match="unknown MNIST-C corruption 'gaussian_noise'.*shot_noise.*canny_edges"):
        M.corrupt_mnist(images, "gaussian_noise", seed=0)
    with pytest.raises(ValueError, match="uint8"):
        M.corrupt_mnist(images.astype(np.float32), "rotate", seed=0)
    for bad in (images[0], images[:, :27], np.repeat(images, 3, axis=-1), images[None]):
        with pytest.raises(ValueError, match=r"\[N, 28, 28, 1\] or \[N, 28, 28\]"):
            M.corrupt_mnist(bad, "rotate", seed=0)
    for seed in (-1, 1.5, None, True):
        with pytest.raises(ValueError, match="seed"):
            M.corrupt_mnist(images, "rotate", seed=seed)
    for idx in (np.arange(3), -np.arange(len(images)), np.linspace(0, 1, len(images))):
        with pytest.raises(ValueError, match="indices"):
            M.corrupt_mnist(images, "rotate", seed=0, indices=idx)


def test_to_uint8_rounds_half_to_even_after_float32():
    x = np.array([-3.0, 0.4, 0.5, 1.5, 127.5, 128.5, 128.5 + 1e-12, 254.6, 300.0])
    np.testing.assert_array_equal(M.to_uint8(x), [0, 0, 0, 2, 128, 128, 128, 255, 255])


# --- library substitutes against closed forms -------------------------------------------------
def test_affine_warp_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.random((2, 28, 28))
    np.testing.assert_allclose(M.affine_warp(x, np.eye(3)), x)
    # Integer translation (dx, dy) = (2, −3): output (r, c) takes input (r − 3, c + 2), zeros outside.
    t = np.eye(3)
    t[0, 2], t[1, 2] = 2, -3
    expected = np.zeros_like(x)
    expected[:, 3:, :-2] = x[:, :-3, 2:]
    np.testing.assert_allclose(M.affine_warp(x, t), expected)
    # A quarter turn about (13.5, 13.5) maps the grid onto itself: np.rot90.
    quarter = M.centred(M.skimage_affine(rotation=np.pi / 2))
    np.testing.assert_allclose(M.affine_warp(x, quarter), np.rot90(x, 1, axes=(1, 2)), atol=1e-9)
    # Half-pixel shift: the mean of two neighbours; beyond the border, half of the edge pixel.
    h = np.eye(3)
    h[0, 2] = 0.5
    out = M.affine_warp(x, h)
    np.testing.assert_allclose(out[:, :, :-1], (x[:, :, :-1] + x[:, :, 1:]) / 2)
    np.testing.assert_allclose(out[:, :, -1], x[:, :, -1] / 2)


def test_skimage_affine_matrix():
    s = 0.4
    np.testing.assert_allclose(M.skimage_affine(shear=s), [[1, -np.sin(s)], [0, np.cos(s)]])
    np.testing.assert_allclose(M.skimage_affine(scale=(2, 3)), [[2, 0], [0, 3]])
    m = M.centred(M.skimage_affine(rotation=0.7))
    np.testing.assert_allclose(m @ [13.5, 13.5, 1], [13.5, 13.5, 1])


def test_glass_shuffle_matches_the_reference_loop():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    swap = rng.random((3, 26, 26)) < 0.5
    offsets = rng.integers(-1, 1, size=(3, 26, 26, 2))
    out = M.glass_shuffle(x, swap, offsets)
    for i in range(3):
        ref = x[i].copy()
        for h in range(27, 1, -1):
            for w in range(27, 1, -1):
                if swap[i, h - 2, w - 2]:
                    dy, dx = offsets[i, h - 2, w - 2]
                    ref[h, w], ref[h + dy, w + dx] = ref[h + dy, w + dx], ref[h, w]
        np.testing.assert_array_equal(out[i], ref)
        assert sorted(out[i].ravel()) == sorted(x[i].ravel())  # a permutation


def test_line_layer_closed_form():
    layer = M.line_layer(0, 10, 27, 10)
    on_line = 1.0
    one_off = 1 + np.log(1 - 1 / 2.3)
    np.testing.assert_allclose(layer[10, :27], on_line)
    np.testing.assert_allclose(layer[[9, 11], :27], one_off)
    assert (layer[:9] == 0).all() and (layer[12:] == 0).all()
    assert (layer[:, 27] == 0).all()  # columns from ceil(c1) on are zeroed
    assert not M.line_layer(5, 0, 5, 20).any()
    dotted = M.dotted_line_layer(10, 10)
    kept = np.flatnonzero(dotted[10])
    np.testing.assert_array_equal(kept, [c for c in range(27) if c % 4 in (2, 3)])


def test_zigzag_endpoints_closed_form():
    p = M.PARAMETERS["zigzag"]
    cs, rs = M.zigzag_endpoints(10, 10, p)  # horizontal: θ = 0, d = 23
    np.testing.assert_allclose(cs, [2, 4, 8, 12, 16, 20, 24, 25])
    np.testing.assert_allclose(rs, [10, 12, 8, 12, 8, 12, 8, 10 - 2 / 6])


def test_canny_closed_forms():
    x = np.zeros((2, 28, 28))
    x[0, :, 14:] = 1.0  # vertical step between columns 13 and 14
    edges = M.canny(x)
    assert not edges[1].any()  # constant image: no edges
    cols = np.flatnonzero(edges[0].any(axis=0))
    np.testing.assert_array_equal(cols, [13, 14])
    np.testing.assert_array_equal(edges[0][1:-1, 13], True)
    assert not edges[0][[0, -1]].any()  # the border is never an edge
    # The same step turned a quarter: edges only on rows 13 and 14, at least one per inner column
    # (which of the two tied rows wins non-maximum suppression is decided by float rounding).
    turned = M.canny(x.transpose(0, 2, 1))[0]
    np.testing.assert_array_equal(np.flatnonzero(turned.any(axis=1)), [13, 14])
    np.testing.assert_array_equal(turned[13:15, 1:-1].any(axis=0), True)


# --- concrete properties of each corruption ---------------------------------------------------
@pytest.mark.parametrize(
    "name, linears",
    [
        ("rotate", [M.skimage_affine(rotation=s * 0.4) for s in (1, -1)]),
        ("shear", [M.skimage_affine(shear=s * 0.4) for s in (1, -1)]),
        ("scale", [M.skimage_affine(scale=(1 / 0.7, 1 / 0.7))]),
    ],
)
def test_geometric_moves_a_blob_where_expected(name, linears):
    row, col = 8.0, 18.0
    blob = _blob(row, col)
    seen = set()
    for seed in range(12):
        com = _com(M.corrupt_mnist(blob, name, seed=seed)[0])
        dists = [np.abs(com - _expected_position(L, row, col)).max() for L in linears]
        k = int(np.argmin(dists))
        assert dists[k] < 0.25, (name, com, dists)
        seen.add(k)
    assert seen == set(range(len(linears)))  # both signs occur


def test_rotate_angle_of_a_single_pixel():
    x = np.zeros((1, 28, 28), dtype=np.uint8)
    x[0, 4, 13] = 255  # 9.5 px above the centre, half a pixel left
    outs = {M.corrupt_mnist(x, "rotate", seed=s).tobytes() for s in range(10)}
    assert len(outs) == 2
    for b in outs:
        out = np.frombuffer(b, dtype=np.uint8).reshape(28, 28)
        dy, dx = _com(out) - M.CENTRE
        angle = np.arctan2(dy, dx) - np.arctan2(4 - 13.5, 13 - 13.5)
        angle = (angle + np.pi) % (2 * np.pi) - np.pi
        assert abs(abs(angle) - 0.4) < 0.03, angle


def test_translate_shifts_by_three(images):
    out = M.corrupt_mnist(images, "translate", seed=0, indices=np.arange(len(images)) * 17)
    shifts = set()
    for x, y in zip(images[..., 0], out[..., 0]):
        found = None
        for dy in (-3, 3):
            for dx in (-3, 3):
                shifted = ndi.shift(x, (dy, dx), order=0, mode="constant", cval=0)
                if np.array_equal(shifted, y):
                    found = (dy, dx)
        assert found is not None
        shifts.add(found)
        if x[3:-3, 3:-3].sum() == x.sum():  # nothing pushed out: the centre of mass moves by (±3, ±3)
            np.testing.assert_allclose(_com(y) - _com(x), found, atol=1e-9)
    assert len(shifts) >= 2


def test_brightness_stripe_exact(images):
    x = images.astype(np.int64)
    b = M.corrupt_mnist(images, "brightness", seed=0).astype(np.int64)
    expected = np.minimum(np.where(x % 2 == 0, x + 128, x + 127), 255)  # round_half_even(x + 127.5)
    np.testing.assert_array_equal(b, expected)
    assert b.mean() > x.mean() + 100
    s = M.corrupt_mnist(images, "stripe", seed=0).astype(np.int64)
    np.testing.assert_array_equal(s[:, :, 7:21], x[:, :, 7:21])
    np.testing.assert_array_equal(s[:, :, :7], 255 - x[:, :, :7])
    np.testing.assert_array_equal(s[:, :, 21:], 255 - x[:, :, 21:])


def test_canny_edges_on_digits(images):
    e = M.corrupt_mnist(images, "canny_edges", seed=0)
    assert set(np.unique(e)) <= {0, 255}
    frac = (e == 255).mean(axis=(1, 2, 3))
    assert (frac > 0.02).all() and (frac < 0.3).all()
    # Edges lie on the digit's outline: near ink, not in the empty background far from it.
    ink = ndi.binary_dilation(images[..., 0] > 0, iterations=2)
    assert (e[..., 0][~ink] == 0).all()


def test_noise_statistics(images):
    shot = M.corrupt_mnist(images, "shot_noise", seed=0)
    assert set(np.unique(shot)) <= {0, 85, 170, 255}  # Poisson(3x)/3, clipped
    assert (shot[images == 0] == 0).all()
    imp = M.corrupt_mnist(np.repeat(images, 8, axis=0), "impulse_noise", seed=0)
    background = np.repeat(images, 8, axis=0) == 0
    salt = (imp[background] == 255).mean()
    assert abs(salt - 0.085) < 0.01  # hit 0.17, then salt with probability ½
    assert set(np.unique(imp[background])) <= {0, 255}


def test_line_corruptions_add_only(images):
    for name in ("dotted_line", "zigzag"):
        out = M.corrupt_mnist(images, name, seed=0)
        assert (out >= images).all()
        added = (out.astype(int) - images).reshape(len(images), -1)
        assert (added.max(axis=1) > 100).all()
    dotted = M.corrupt_mnist(images, "dotted_line", seed=0)
    gaps = [c for c in range(28) if c % 4 in (0, 1) or c == 27]
    np.testing.assert_array_equal(dotted[:, :, gaps], images[:, :, gaps])


def test_blur_fog_spatter_properties(images):
    glass = M.corrupt_mnist(images, "glass_blur", seed=0)
    assert abs(glass.astype(float).mean() - images.mean()) < 0.15 * images.mean()
    # glass_blur's reference blur acts along the rows (axis 0) only: a bright column, constant down
    # the rows, is left unchanged by it.
    col = np.zeros((1, 28, 28))
    col[0, :, 10] = 1.0
    blurred = M._skimage_gaussian(col, (M.PARAMETERS["glass_blur"].sigma, 0.0))
    np.testing.assert_allclose(blurred, col)
    motion = M.corrupt_mnist(images, "motion_blur", seed=0)
    assert abs(motion.astype(float).mean() - images.mean()) < 0.1 * images.mean()
    fog = M.corrupt_mnist(images, "fog", seed=0).astype(float)
    assert (fog.reshape(len(images), -1).std(axis=1) > 5).all() and fog.mean() > images.mean()
    spat = M.corrupt_mnist(images, "spatter", seed=0)
    changed = spat != images
    assert changed.any() and changed.mean() < 0.5
