"""The 15 MNIST-C corruptions (Mu & Gilmer, 2019) at the single severity of the published benchmark.

MNIST-C ("MNIST-C: A Robustness Benchmark for Computer Vision", arXiv:1906.02337) corrupts the MNIST
test set with 15 corruptions. This module regenerates them from the reference generator,
``corruptions.py`` of github.com/google-research/mnist-c (commit
``bba57e4ccc282f106907c5239958e72298451ea7``, 2019-06-07, the last commit of that repository),
written with numpy, scipy.ndimage and Pillow only: no scikit-image, OpenCV or ImageMagick (wand)
at run time.

Severity
--------
The reference corruption functions keep the ImageNet-C signature ``f(x, severity=k)`` with five
parameter values each, but every one has a *default* severity, and the four corruptions without
a severity (stripe, dotted_line, zigzag, canny_edges) can only be called as ``f(x)``: the benchmark
applies each function with its default. That default is the one used here (the published dataset
itself is not re-read by this module). Per corruption: shot_noise 5/5, impulse_noise 4/5,
glass_blur 1/5, motion_blur 1/5, shear 2/5, scale 3/5, rotate 2/5, brightness 5/5, translate 3/5,
fog 5/5, spatter 4/5; see :data:`REFERENCE_SEVERITY` and :data:`PARAMETERS`.

Conventions
-----------
* Images are ``uint8`` ``[N, 28, 28, 1]`` (the layout of :mod:`sbgc.data.mnist` and of the
  published MNIST-C arrays) or ``[N, 28, 28]``, in and out (the output has the input's shape).
* Each corruption computes in float on the [0, 1] scale as the reference does (the reference
  receives a PIL ``L`` image, i.e. a [28, 28] array, and returns ``float32`` on [0, 255]).
* Return to ``uint8``: the reference functions stop at ``float32``; the only float→uint8
  conversion in the reference repository is ``round_and_astype`` of ``visualize_corruptions.ipynb``,
  ``np.round(x).astype(np.uint8)``, so this module clips to [0, 255], casts to ``float32`` (as the
  reference returns) and **rounds half to even** (``np.round``). The float32 step matters where
  the result sits on a half-integer (brightness: x + 127.5). motion_blur's reference output is
  already an 8-bit image (ImageMagick PNG) and is rounded half up there.
* Randomness: image ``i`` of a call draws from its own generator
  ``np.random.default_rng([seed, indices[i], corruption_id, 0])`` (``corruption_id`` = position in
  :data:`MNIST_C_CORRUPTIONS`), so a batch equals its images corrupted one at a time and a given
  test image gets the same corruption whatever subset it is generated in. The draws follow the
  reference's distributions, not its (global, legacy) random stream: the images are a fresh draw
  of MNIST-C, not a byte copy of it.

Where the reference's behaviour differs from its evident intent, this module follows the
behaviour, because that is what produced the published benchmark:

* ``glass_blur``: the reference blurs with scikit-image ``gaussian(x, sigma, multichannel=True)``
  on a 2-D [28, 28] image, which treats the *columns* as channels: the blur acts along the rows
  (axis 0) only. Its offsets come from ``randint(-1, 1)``, i.e. {−1, 0}. (Unlike the CIFAR case,
  the swap ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on a 2-D array exchanges scalars, so it *is*
  a real swap; it is done in the reference's sequential order, see :func:`glass_shuffle`.)
* ``shear``: scikit-image's ``AffineTransform(shear=s)`` of 2019 (unchanged up to 0.20; 0.21
  switched to a tan-based shear) is the matrix [[1, −sin s], [0, cos s]]: a shear that also
  scales the row axis by cos s, reproduced as the reference ran it.
* ``dotted_line`` / ``zigzag``: the line helper zeroes every column from ``ceil(c1)`` on, so the
  dotted line never reaches column 27; the zigzag's last point is ``(d, r / (2 (d − max_c)))``
  (see :func:`zigzag_endpoints`), reproduced literally.
* ``spatter``: the severity tuple's last entry (mud vs. water in ImageNet-C) is unused by the
  MNIST reference: the spatter is always mud of grey level 63.

Substitutions for library routines are documented at each function: scikit-image ``warp`` with
an ``AffineTransform`` (:func:`affine_warp`), ``random_noise(mode='s&p')``, ``gaussian``,
``rgb2hsv``/``hsv2rgb``/``rgb2gray`` (brightness), ``feature.canny`` (:func:`canny`), and
ImageMagick's ``MotionBlurImage`` (:func:`sbgc.data.corruptions.motion_blur_image`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.ndimage as ndi

from sbgc.data.corruptions import from_unit, motion_blur_image, plasma_fractal, to_unit

IMAGE_SIZE = 28
CENTRE = 13.5  # the reference keeps the pixel-grid centre (13.5, 13.5) fixed in shear/scale/rotate

MNIST_C_CORRUPTIONS: tuple[str, ...] = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)
# The noise corruptions, for the "all but noise" split. The MNIST-C paper describes its suite in
# groups (noise: shot and impulse noise; blur: glass and motion blur; affine transformations; ...)
# and these two are its noise group; MNIST-C has no Gaussian noise (the reference defines
# gaussian_noise but leaves it out of its benchmark list).
MNIST_C_NOISE: tuple[str, ...] = ("shot_noise", "impulse_noise")

# The reference's default severity (1..5) of each corruption; None: the function has none.
REFERENCE_SEVERITY: dict[str, int | None] = {
    "shot_noise": 5,
    "impulse_noise": 4,
    "glass_blur": 1,
    "motion_blur": 1,
    "shear": 2,
    "scale": 3,
    "rotate": 2,
    "brightness": 5,
    "translate": 3,
    "stripe": None,
    "fog": 5,
    "spatter": 4,
    "dotted_line": None,
    "zigzag": None,
    "canny_edges": None,
}

# Images as float on [0, 1] (or [0, 255] where stated), [N, 28, 28].
FloatImages = np.ndarray
Rngs = Sequence[np.random.Generator]


# ------------------------------------------------------------------------------------------------
# Parameters (the reference values at REFERENCE_SEVERITY)
# ------------------------------------------------------------------------------------------------
class GlassParams(NamedTuple):
    sigma: float  # Gaussian blur σ (along the rows only, see glass_blur), pixels
    max_delta: int  # offsets are drawn from {−max_delta, …, max_delta − 1}
    iterations: int  # number of shuffle passes


class MotionParams(NamedTuple):
    radius: float  # ImageMagick radius: 2·ceil(radius) + 1 taps
    sigma: float  # half-Gaussian fall-off along the line, pixels
    max_angle: float  # angle ~ U(−max_angle, max_angle), degrees


class FogParams(NamedTuple):
    strength: float  # amplitude of the plasma fractal added to the image
    decay: float  # plasma roughness ("wibbledecay")
    map_size: int  # the plasma is generated at map_size² and cropped to its top-left 28×28


class SpatterParams(NamedTuple):
    loc: float  # mean of the Gaussian liquid field
    scale: float  # its standard deviation
    sigma: float  # blur σ of the field
    threshold: float  # field values below this are dropped; the mask is field > threshold
    mask_sigma: float  # blur σ of the mask
    mask_threshold: float  # blurred mask values below this are set to 0 (hard-coded 0.8)
    colour: float  # mud grey level on [0, 1] (63 / 255)


class CannyParams(NamedTuple):
    sigma: float  # Gaussian pre-smoothing σ
    low: float  # hysteresis thresholds on the gradient magnitude of the [0, 1] image
    high: float


class ZigzagParams(NamedTuple):
    length: float  # "a": half-period of the zigzag along the line, pixels
    width: float  # "b": amplitude, pixels
    c0: int  # first and last column of the straight line
    c1: int
    max_row: int  # r0 ~ U{0, …, max_row − 1}
    drop: tuple[int, int]  # r1 − r0 ~ U{drop[0], …, drop[1] − 1}


PARAMETERS: dict[str, object] = {
    "shot_noise": 3,  # Poisson photon count at full intensity ([60, 25, 12, 5, 3][4])
    "impulse_noise": 0.17,  # fraction of pixels set to 0 or 1 ([.03, .06, .09, .17, .27][3])
    "glass_blur": GlassParams(0.7, 1, 2),  # [(0.7,1,2), (0.9,2,1), (1,2,3), (1.1,3,2), (1.5,4,2)][0]
    "motion_blur": MotionParams(10, 3, 45.0),  # [(10,3), (15,5), (15,8), (15,12), (20,15)][0]
    "shear": 0.4,  # radians, random sign ([.2, .4, .6, .8, 1][1])
    "scale": 1 / 0.7,  # inverse-map scale factor: the digit shrinks by 0.7 ([1/.9, …, 1/.5][2])
    "rotate": 0.4,  # radians (22.9°), random sign ([.2, .4, .6, .8, 1][1])
    "brightness": 0.5,  # added to the HSV value ([.1, .2, .3, .4, .5][4])
    "translate": 3,  # pixels, random sign on each axis ([1, 2, 3, 4, 5][2])
    "stripe": ((0, 7), (21, 28)),  # column ranges that are inverted (255 − x)
    "fog": FogParams(3.0, 1.4, 256),  # [(1.5,2), (2,2), (2.5,1.7), (2.5,1.5), (3,1.4)][4]
    "spatter": SpatterParams(0.65, 0.3, 1.0, 0.65, 1.5, 0.8, 63 / 255),  # tuple [3]
    "dotted_line": 2,  # dash period: columns 4k, 4k+1 blanked, 4k+2, 4k+3 kept
    "zigzag": ZigzagParams(2.0, 2.0, 2, 25, 27, (-5, 5)),
    "canny_edges": CannyParams(1.0, 0.1, 0.2),  # scikit-image defaults for a float image
}

# Line corruptions: the vertical distance d of a pixel to the line gives 1 + log(1 − d / 2.3).
LINE_HALF_WIDTH = 2.3
# scikit-image's rgb2gray weights (ITU-R 709 luma).
_RGB2GRAY = np.array([0.2125, 0.7154, 0.0721])


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def to_uint8(x255: np.ndarray) -> np.ndarray:
    """Float on [0, 255] → uint8 as the reference repository does: the corruption returns
    ``float32``, then ``np.round(x).astype(np.uint8)`` (round half to even)."""
    return np.round(np.clip(x255, 0.0, 255.0).astype(np.float32)).astype(np.uint8)


def _skimage_gaussian(x: FloatImages, sigma: float | Sequence[float], mode: str = "nearest") -> FloatImages:
    """scikit-image ``gaussian`` (2019) on each image of [N, 28, 28]: scipy's Gaussian filter with
    the given σ per spatial axis (none along the batch), border ``mode``, kernel truncated at 4σ."""
    sig = (sigma, sigma) if np.isscalar(sigma) else tuple(sigma)
    return ndi.gaussian_filter(x, sigma=(0.0, *sig), mode=mode, truncate=4.0)


def skimage_affine(
    scale: tuple[float, float] = (1.0, 1.0), rotation: float = 0.0, shear: float = 0.0
) -> np.ndarray:
    """The linear part [2, 2] of scikit-image's (≤ 0.20) ``AffineTransform(scale, rotation, shear)``,
    acting on (x, y) = (column, row): [[sx cos r, −sy sin(r + s)], [sx sin r, sy cos(r + s)]]."""
    sx, sy = scale
    return np.array(
        [
            [sx * np.cos(rotation), -sy * np.sin(rotation + shear)],
            [sx * np.sin(rotation), sy * np.cos(rotation + shear)],
        ]
    )


def centred(linear: np.ndarray, centre: float = CENTRE) -> np.ndarray:
    """[3, 3] affine map with linear part ``linear`` that fixes (centre, centre), as the reference
    sets its translation to ``13.5 · (1 − a1 − a2)``, ``13.5 · (1 − b1 − b2)``."""
    m = np.eye(3)
    m[:2, :2] = linear
    m[:2, 2] = centre * (1.0 - linear.sum(axis=1))
    return m


def affine_warp(x: FloatImages, inverse_maps: np.ndarray) -> FloatImages:
    """scikit-image ``warp(x, inverse_map=AffineTransform)`` with its defaults (order 1, mode
    'constant', cval 0) on [N, H, W] float images.

    Output pixel (row r, column c) takes the input at (x', y') = M · (c, r, 1), coordinates in
    (column, row) order, by bilinear interpolation between the pixels ``floor`` and ``ceil`` of each
    coordinate; pixels outside the image count as 0 (scikit-image's Cython ``_warp_fast``).
    ``inverse_maps``: [3, 3] for all images or [N, 3, 3], one per image.
    """
    n, h, w = x.shape
    m = np.broadcast_to(np.asarray(inverse_maps, dtype=np.float64), (n, 3, 3))
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    xs = m[:, 0, 0, None, None] * cols + m[:, 0, 1, None, None] * rows + m[:, 0, 2, None, None]
    ys = m[:, 1, 0, None, None] * cols + m[:, 1, 1, None, None] * rows + m[:, 1, 2, None, None]
    r0, c0 = np.floor(ys), np.floor(xs)
    r1, c1 = np.ceil(ys), np.ceil(xs)
    dr, dc = ys - r0, xs - c0
    batch = np.arange(n)[:, None, None]

    def pixel(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        ri = np.clip(r, 0, h - 1).astype(np.int64)
        ci = np.clip(c, 0, w - 1).astype(np.int64)
        return np.where(inside, x[batch, ri, ci], 0.0)

    top = (1 - dc) * pixel(r0, c0) + dc * pixel(r0, c1)
    bottom = (1 - dc) * pixel(r1, c0) + dc * pixel(r1, c1)
    return (1 - dr) * top + dr * bottom


def _random_signs(rngs: Rngs, k: int = 1) -> np.ndarray:
    """[N, k] signs ±1, each equally likely (the reference's ``np.random.choice([-1, 1], k)``)."""
    return np.stack([rng.choice(np.array([-1, 1]), size=k) for rng in rngs])


def line_layer(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """The reference's ``line_from_points``: a [28, 28] line image on [0, 1] through (c0, r0) and
    (c1, r1) (column, row).

    Each pixel gets ``1 + log(1 − d / 2.3)`` clipped to [0, 1], with d its *vertical* distance to
    the line (clipped below 2.3), so the line is about 2·2.3·(1 − 1/e) ≈ 2.9 px tall; columns
    before ``floor(c0)`` and from ``ceil(c1)`` on are zeroed. A vertical line (c0 = c1) is empty.
    """
    if c1 == c0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    cc, rr = grid[None, :], grid[:, None]
    slope = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rr - (slope * (cc - c0) + r0)), 0.0, LINE_HALF_WIDTH - 1e-10)
    layer = np.clip(np.log(1.0 - dist / LINE_HALF_WIDTH) + 1.0, 0.0, 1.0)
    layer[:, : int(np.floor(c0))] = 0.0
    layer[:, int(np.ceil(c1)) :] = 0.0
    return layer


def dotted_line_layer(r0: int, r1: int, period: int = 2) -> np.ndarray:
    """:func:`line_layer` from (0, r0) to (27, r1) with every other run of ``period`` columns
    blanked, starting with columns 0 … period − 1 (the reference's ``off`` toggle over
    ``np.arange(0, 30, 2)``)."""
    layer = line_layer(0, r0, IMAGE_SIZE - 1, r1)
    edges = np.arange(0, 30, period)
    off = True
    for a, b in zip(edges[:-1], edges[1:]):
        if off:
            layer[:, a:b] = 0.0
        off = not off
    return layer


def zigzag_endpoints(r0: float, r1: float, p: ZigzagParams) -> np.ndarray:
    """The zigzag's vertices [2, K] (columns, rows) as the reference builds them.

    Along a straight line of length d = (c1 − c0) / cos θ (θ = arctan((r1 − r0) / (c1 − c0))) the
    vertices are (0, 0), then ((2i + 1) a, (−1)^i b) for i = 0 … (d − a) // 2a, then — when d is not
    a multiple of 2a, i.e. always for these parameters — (d, r_last / (2 (d − max_c))) with
    max_c = 2a · (d // 2a) and r_last the last vertex's row offset (the reference's expression,
    reproduced literally). The vertices are rotated by θ and shifted to (c0, r0).
    """
    a, b = p.length, p.width
    theta = np.arctan((r1 - r0) / (p.c1 - p.c0))
    d = (p.c1 - p.c0) / np.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        points.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        points.append((d, r_i / (2 * (d - max_c))))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    ends = rot @ np.array(points).T
    ends[0] += p.c0
    ends[1] += r0
    return ends


def _sobel(x: FloatImages, axis: int) -> FloatImages:
    """scipy ``ndimage.sobel(image, axis)`` of each [H, W] image of [N, H, W] (derivative
    [−1, 0, 1] along ``axis``, smoothing [1, 2, 1] along the other spatial axis, border 'reflect');
    ``axis`` is 0 (rows) or 1 (columns) of the image."""
    a = axis + 1
    other = 2 if a == 1 else 1
    out = ndi.correlate1d(x, [-1.0, 0.0, 1.0], axis=a, mode="reflect")
    return ndi.correlate1d(out, [1.0, 2.0, 1.0], axis=other, mode="reflect")


def canny(x: FloatImages, p: CannyParams = PARAMETERS["canny_edges"]) -> np.ndarray:
    """scikit-image 0.14/0.15 ``feature.canny(image)`` (no mask, absolute thresholds) of each image
    of [N, H, W] float on [0, 1]; returns bool [N, H, W].

    1. Smooth with a Gaussian (σ, border 0, 4σ kernel) and divide by the same filter applied to an
       image of ones (``smooth_with_function_and_mask``, which renormalises near the border).
    2. Sobel gradients (:func:`_sobel`), magnitude ``hypot``.
    3. Non-maximum suppression on the pixels that are not on the 1-pixel border and have a
       non-zero gradient: in each of the four 45° sectors of the gradient direction the magnitude
       must be ≥ the two neighbours along the gradient, each interpolated linearly between an axial
       and a diagonal neighbour; the sectors are evaluated in scikit-image's order, a later sector
       overwriting an earlier one on their shared boundary.
    4. Hysteresis: keep the 8-connected components of {maxima with magnitude ≥ low} that hold a
       maximum with magnitude ≥ high.
    """
    n, h, w = x.shape
    bleed = ndi.gaussian_filter(np.ones((h, w)), p.sigma, mode="constant", truncate=4.0)
    smoothed = ndi.gaussian_filter(x, (0.0, p.sigma, p.sigma), mode="constant", truncate=4.0)
    smoothed = smoothed / (bleed + np.finfo(float).eps)
    gj = _sobel(smoothed, axis=1)  # along columns
    gi = _sobel(smoothed, axis=0)  # along rows
    ai, aj = np.abs(gi), np.abs(gj)
    mag = np.hypot(gi, gj)

    inner = np.zeros((h, w), dtype=bool)
    inner[1:-1, 1:-1] = True
    candidates = inner & (mag > 0)
    padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)))

    def neighbour(dy: int, dx: int) -> np.ndarray:
        return padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    same_sign = ((gi >= 0) & (gj >= 0), (gi <= 0) & (gj <= 0))
    opposite = ((gi <= 0) & (gj >= 0), (gi >= 0) & (gj <= 0))
    # (sector pixels, weight numerator/denominator, + side (axial, diagonal), − side (axial, diagonal))
    sectors = [
        (same_sign, ai >= aj, (aj, ai), ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
        (same_sign, ai <= aj, (ai, aj), ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
        (opposite, ai <= aj, (ai, aj), ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
        (opposite, ai >= aj, (aj, ai), ((-1, 0), (-1, 1)), ((1, 0), (1, -1))),
    ]
    maxima = np.zeros((n, h, w), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for signs, dominant, (num, den), plus, minus in sectors:
            pts = candidates & (signs[0] | signs[1]) & dominant
            wgt = num / den
            c_plus = wgt * neighbour(*plus[1]) + (1 - wgt) * neighbour(*plus[0]) <= mag
            c_minus = wgt * neighbour(*minus[1]) + (1 - wgt) * neighbour(*minus[0]) <= mag
            maxima[pts] = (c_plus & c_minus)[pts]

    high = maxima & (mag >= p.high)
    low = maxima & (mag >= p.low)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = ndi.label(low, structure)
    if count == 0:
        return low
    good = np.zeros(count + 1, dtype=bool)
    good[1:] = np.asarray(ndi.sum(high, labels, np.arange(1, count + 1))) > 0
    return good[labels]


def glass_shuffle(x_u8: np.ndarray, swap: np.ndarray, offsets: np.ndarray, max_delta: int = 1) -> np.ndarray:
    """One pass of the reference's local pixel shuffle on uint8 images [N, 28, 28] (a new array).

    Rows h = 28 − d … d + 1 and, within each, columns w = 28 − d … d + 1 (d = ``max_delta``) are
    visited in decreasing order; where ``swap`` is set, pixel (h, w) is exchanged with
    (h + dy, w + dx). The exchange is sequential — a value moved to a pixel not yet visited may
    move again — exactly as the reference's loop (done for all images at once).

    ``swap``: bool [N, n, n]; ``offsets``: int [N, n, n, 2] (dy, dx), both indexed by
    (h − d − 1, w − d − 1), n = 28 − 2d.
    """
    n_img = x_u8.shape[0]
    lo, hi = max_delta + 1, IMAGE_SIZE - max_delta  # visited rows/columns: hi … lo
    n = hi - lo + 1
    if swap.shape != (n_img, n, n) or offsets.shape != (n_img, n, n, 2):
        raise ValueError(f"glass shuffle needs swap [{n_img}, {n}, {n}] and offsets [{n_img}, {n}, {n}, 2]")
    out = x_u8.copy()
    batch = np.arange(n_img)
    step = offsets * swap[..., None]  # no move where no swap
    for h in range(hi, lo - 1, -1):
        for w in range(hi, lo - 1, -1):
            dy, dx = step[:, h - lo, w - lo, 0], step[:, h - lo, w - lo, 1]
            a = out[batch, h, w]
            b = out[batch, h + dy, w + dx]
            out[batch, h, w] = b
            out[batch, h + dy, w + dx] = a
    return out


# ------------------------------------------------------------------------------------------------
# The corruptions. Each maps uint8 [N, 28, 28] + one generator per image to [N, 28, 28] on the
# [0, 255] scale (float, or uint8 where the reference produced 8-bit images); corrupt_mnist
# converts to uint8 with to_uint8.
# ------------------------------------------------------------------------------------------------
def shot_noise(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Poisson(x · c) / c per pixel on [0, 1], c = 3 photons at full intensity."""
    c = PARAMETERS["shot_noise"]
    rate = to_unit(x_u8) * c
    return from_unit(np.stack([rng.poisson(lam) for rng, lam in zip(rngs, rate)]) / c)


def impulse_noise(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Salt and pepper (scikit-image ``random_noise(mode='s&p', amount=0.17)``): each pixel is hit
    with probability 0.17 and then set to 1 or 0 with equal probability."""
    amount = PARAMETERS["impulse_noise"]
    x = to_unit(x_u8).copy()
    shape = x.shape[1:]
    for xi, rng in zip(x, rngs):
        hit = rng.random(shape) < amount
        salt = rng.random(shape) < 0.5
        xi[hit & salt] = 1.0
        xi[hit & ~salt] = 0.0
    return from_unit(x)


def glass_blur(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Blur, to uint8 (truncated, ``np.uint8(... * 255)``), ``iterations`` × :func:`glass_shuffle`,
    blur again.

    The blur is scikit-image ``gaussian(x, 0.7, multichannel=True)`` on a [28, 28] image, which
    takes the last axis for channels: a 1-D Gaussian along the rows only (σ = 0.7, border
    'nearest', 4σ kernel). Each visited pixel is swapped with probability ½
    (``np.random.choice([True, False])``) with the offset (dy, dx) ∈ {−1, 0}² (``randint(-1, 1)``).
    """
    p: GlassParams = PARAMETERS["glass_blur"]
    blur = (p.sigma, 0.0)
    x = (_skimage_gaussian(to_unit(x_u8), blur) * 255).astype(np.uint8)
    n = IMAGE_SIZE - 2 * p.max_delta
    draws = [
        (rng.random((p.iterations, n, n)) < 0.5, rng.integers(-p.max_delta, p.max_delta, (p.iterations, n, n, 2)))
        for rng in rngs
    ]
    swap = np.stack([d[0] for d in draws])  # [N, it, n, n]
    offsets = np.stack([d[1] for d in draws])
    for it in range(p.iterations):
        x = glass_shuffle(x, swap[:, it], offsets[:, it], p.max_delta)
    return from_unit(_skimage_gaussian(to_unit(x), blur))


def motion_blur(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """ImageMagick ``MotionBlurImage(radius=10, sigma=3, angle)``, angle ~ U(−45°, 45°), on the
    8-bit image, stored as 8-bit (rounded) as the reference's PNG round trip.

    Substitution: :func:`sbgc.data.corruptions.motion_blur_image` (a one-sided line kernel of
    2·ceil(radius) + 1 = 21 half-Gaussian taps at rounded integer offsets, edge pixels repeated
    beyond the border).
    """
    p: MotionParams = PARAMETERS["motion_blur"]
    out = np.empty_like(x_u8)
    for i, rng in enumerate(rngs):
        angle = rng.uniform(-p.max_angle, p.max_angle)
        blurred = motion_blur_image(x_u8[i], p.radius, p.sigma, angle)
        out[i] = np.floor(np.clip(blurred, 0.0, 255.0) + 0.5).astype(np.uint8)
    return out


def _warp(x_u8: np.ndarray, maps: np.ndarray) -> np.ndarray:
    return from_unit(affine_warp(to_unit(x_u8), maps))


def shear(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """:func:`affine_warp` by scikit-image's ``AffineTransform(shear=±0.4)`` about the centre:
    the output pixel (x, y) takes the input at (x − sin s · (y − 13.5), 13.5 + cos s · (y − 13.5)),
    s = ±0.4 rad with a random sign."""
    s = PARAMETERS["shear"] * _random_signs(rngs)[:, 0]
    return _warp(x_u8, np.stack([centred(skimage_affine(shear=si)) for si in s]))


def scale(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """:func:`affine_warp` by ``AffineTransform(scale=(1/0.7, 1/0.7))`` about the centre: the
    output pixel q takes the input at 13.5 + (q − 13.5) / 0.7, i.e. the digit shrinks by 0.7."""
    k = PARAMETERS["scale"]
    return _warp(x_u8, centred(skimage_affine(scale=(k, k))))


def rotate(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """:func:`affine_warp` by ``AffineTransform(rotation=±0.4)`` about the centre (random sign):
    the output pixel q takes the input at 13.5 + R(θ)(q − 13.5) in (column, row) coordinates, so
    the content turns by −θ (rows point down: θ > 0 turns the digit counter-clockwise on screen)."""
    theta = PARAMETERS["rotate"] * _random_signs(rngs)[:, 0]
    return _warp(x_u8, np.stack([centred(skimage_affine(rotation=t)) for t in theta]))


def brightness(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """scikit-image gray2rgb → rgb2hsv → V + 0.5 (clipped to 1) → hsv2rgb → rgb2gray.

    Substitution: for a grey pixel (R = G = B = v) the HSV round trip is exact (S = 0, H = 0,
    V = v) and rgb2gray is the dot product with weights summing to 1, so the result is
    min(v + 0.5, 1) up to float rounding, which the reference's float32 output absorbs: a pixel
    x becomes round_half_even(min(x + 127.5, 255)).
    """
    v = np.clip(to_unit(x_u8) + PARAMETERS["brightness"], 0.0, 1.0)
    return from_unit(np.stack([v, v, v], axis=-1) @ _RGB2GRAY)


def translate(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """:func:`affine_warp` by ``AffineTransform(translation=(dx, dy))``, dx, dy = ±3 with
    independent random signs: output (r, c) takes input (r + dy, c + dx), so the digit moves by
    (−dy, −dx) (rows, columns), zeros shifted in."""
    t = PARAMETERS["translate"] * _random_signs(rngs, 2)
    maps = np.tile(np.eye(3), (len(t), 1, 1))
    maps[:, 0, 2], maps[:, 1, 2] = t[:, 0], t[:, 1]
    return _warp(x_u8, maps)


def stripe(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Invert (255 − x) columns 0 … 6 and 21 … 27."""
    x = x_u8.astype(np.float32)
    for a, b in PARAMETERS["stripe"]:
        x[:, :, a:b] = 255.0 - x[:, :, a:b]
    return x


def fog(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """x + 3 · plasma, rescaled by max(x) / (max(x) + 3), on [0, 1].

    The plasma is the reference's diamond-square map of 256 × 256 (its default ``mapsize``), decay
    1.4, min-max normalised over the whole map and cropped to its top-left 28 × 28
    (:func:`sbgc.data.corruptions.plasma_fractal`); max(x) is the image's own maximum.
    """
    p: FogParams = PARAMETERS["fog"]
    x = to_unit(x_u8)
    out = np.empty_like(x)
    for i, rng in enumerate(rngs):
        top = x[i].max()
        plasma = plasma_fractal(rng, size=p.map_size, decay=p.decay)[:IMAGE_SIZE, :IMAGE_SIZE]
        out[i] = (x[i] + p.strength * plasma) * top / (top + p.strength)
    return from_unit(out)


def spatter(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Mud spatter (ImageNet-C's spatter, mud branch, MNIST parameters).

    A N(0.65, 0.3²) field is blurred (σ = 1; scikit-image ``gaussian``: border 'nearest', 4σ
    kernel); the mask is field > 0.65, blurred (σ = 1.5) and zeroed below 0.8; then
    x ← x · (1 − m) + (63 / 255) · m.
    """
    p: SpatterParams = PARAMETERS["spatter"]
    x = to_unit(x_u8)
    field = np.stack([rng.normal(p.loc, p.scale, size=x.shape[1:]) for rng in rngs])
    field = _skimage_gaussian(field, p.sigma)
    field[field < p.threshold] = 0.0
    m = _skimage_gaussian((field > p.threshold).astype(np.float64), p.mask_sigma)
    m[m < p.mask_threshold] = 0.0
    return from_unit(x * (1.0 - m) + p.colour * m)


def dotted_line(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Add a dashed line (:func:`dotted_line_layer`) from (column 0, row r0) to (27, r1),
    r0, r1 ~ U{0, …, 26} independently, clipped to [0, 1]."""
    period = PARAMETERS["dotted_line"]
    x = to_unit(x_u8)
    rows = [rng.integers(0, IMAGE_SIZE - 1, size=2) for rng in rngs]
    lines = np.stack([dotted_line_layer(int(r0), int(r1), period) for r0, r1 in rows])
    return from_unit(x + lines)


def zigzag(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Add a zigzag (:func:`zigzag_endpoints`, segments drawn with :func:`line_layer`, clipped to
    [0, 1] after each) along a line from (column 2, row r0) to (25, r1), r0 ~ U{0, …, 26},
    r1 − r0 ~ U{−5, …, 4}."""
    p: ZigzagParams = PARAMETERS["zigzag"]
    x = to_unit(x_u8).copy()
    for i, rng in enumerate(rngs):
        r0 = int(rng.integers(0, p.max_row))
        r1 = r0 + int(rng.integers(*p.drop))
        cs, rs = zigzag_endpoints(r0, r1, p)
        xi = x[i]
        for k in range(1, len(cs)):
            xi = np.clip(xi + line_layer(cs[k - 1], rs[k - 1], cs[k], rs[k]), 0.0, 1.0)
        x[i] = xi
    return from_unit(x)


def canny_edges(x_u8: np.ndarray, rngs: Rngs) -> np.ndarray:
    """Canny edge map (:func:`canny`, σ = 1, thresholds 0.1 / 0.2 on [0, 1]) as 0 / 255."""
    return canny(to_unit(x_u8)).astype(np.float32) * 255.0


CorruptionFn = Callable[[np.ndarray, Rngs], np.ndarray]
_FUNCTIONS: dict[str, CorruptionFn] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "brightness": brightness,
    "translate": translate,
    "stripe": stripe,
    "fog": fog,
    "spatter": spatter,
    "dotted_line": dotted_line,
    "zigzag": zigzag,
    "canny_edges": canny_edges,
}
# Corruptions that draw random numbers (shear, rotate and translate only a sign); the others are
# deterministic functions of the image.
RANDOM_CORRUPTIONS: tuple[str, ...] = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "rotate",
    "translate",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
)
assert tuple(_FUNCTIONS) == MNIST_C_CORRUPTIONS and set(RANDOM_CORRUPTIONS) <= set(MNIST_C_CORRUPTIONS)
assert set(MNIST_C_NOISE) <= set(MNIST_C_CORRUPTIONS) and tuple(REFERENCE_SEVERITY) == MNIST_C_CORRUPTIONS


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------
def image_rngs(seed: int, indices: np.ndarray, name: str) -> list[np.random.Generator]:
    """One generator per image: ``default_rng([seed, index, corruption_id, 0])``."""
    cid = MNIST_C_CORRUPTIONS.index(name)
    return [np.random.default_rng([seed, int(i), cid, 0]) for i in indices]


def corrupt_mnist(
    images_u8: np.ndarray,
    name: str,
    *,
    seed: int,
    indices: np.ndarray | Sequence[int] | None = None,
) -> np.ndarray:
    """Apply MNIST-C corruption ``name`` to MNIST images.

    Args:
        images_u8: uint8 [N, 28, 28, 1] or [N, 28, 28].
        name: one of :data:`MNIST_C_CORRUPTIONS`.
        seed: non-negative int.
        indices: the images' indices in their dataset, int [N]; default 0 … N−1. Image i's
            randomness depends only on (seed, indices[i], name), so results do not depend on
            batching.

    Returns:
        uint8 array of the same shape as ``images_u8``.
    """
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown MNIST-C corruption {name!r}; valid names: {', '.join(MNIST_C_CORRUPTIONS)}")
    x = np.asarray(images_u8)
    if x.dtype != np.uint8:
        raise ValueError(f"MNIST images must be uint8, got dtype {x.dtype}")
    shape = x.shape
    if x.ndim == 4 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 1):
        x = x[..., 0]
    elif not (x.ndim == 3 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)):
        raise ValueError(f"MNIST images must have shape [N, 28, 28, 1] or [N, 28, 28], got {tuple(shape)}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n = shape[0]
    if indices is None:
        idx = np.arange(n)
    else:
        idx = np.asarray(indices)
        if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer) or (idx < 0).any():
            raise ValueError(
                f"indices must be {n} non-negative integers (one per image), got {np.asarray(indices)!r:.200}"
            )
    if n == 0:
        return np.asarray(images_u8).copy()
    x = np.ascontiguousarray(x)
    rngs = image_rngs(int(seed), idx, name) if name in RANDOM_CORRUPTIONS else [None] * n
    out = to_uint8(_FUNCTIONS[name](x, rngs))
    assert out.shape == x.shape
    return out.reshape(shape)
