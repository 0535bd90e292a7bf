"""The 15 CIFAR-10-C corruptions (Hendrycks & Dietterich, 2019) at their 5 CIFAR severities.

The paper's robustness experiment (Table 2, Fig. 4) evaluates the classifier on CIFAR-10-C. This
module regenerates that benchmark from the CIFAR-10 test set with the **CIFAR parameters** of the
reference generator (hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``), written with
numpy, scipy.ndimage and Pillow only (no ImageMagick, OpenCV or scikit-image at run time).

Conventions
-----------
* Images are ``uint8`` ``[N, 32, 32, 3]`` (or one ``[32, 32, 3]`` image), RGB, in and out.
* Each corruption computes in float on the [0, 1] scale as the reference does and returns to
  ``uint8`` like it: clip to [0, 255], then **truncate** (``np.uint8`` of a float array), except
  where the reference itself produced 8-bit images (JPEG, pixelate, the motion-blurred layers,
  which ImageMagick wrote as 8-bit PNG: rounded).
* Randomness: image ``i`` of a call draws from its own generator
  ``np.random.default_rng([seed, indices[i], corruption_id, severity])``, so a batch equals its
  images corrupted one at a time, and a given test image gets the same corruption whatever subset
  it is generated in. The random draws follow the reference's distributions, not its (global,
  legacy) random stream: the images are a fresh draw of CIFAR-10-C, not a byte copy of it.

Where the reference's behaviour differs from its evident intent, this module follows the behaviour,
because that is what produced the published benchmark:

* ``glass_blur``: the reference "swaps" two pixels with ``x[a], x[b] = x[b], x[a]`` on numpy
  views, which copies ``x[b]`` into ``x[a]`` and leaves ``x[b]`` unchanged. Offsets are drawn with
  ``randint(-1, 1)``, i.e. from {−1, 0}. Both are reproduced (see :func:`glass_shuffle`).
* ``frost``: the texture index is drawn from ``randint(5)``, so only the first five of the six
  frost textures are ever used.
* ``zoom_blur``: the zoom factors are ``np.arange(1, stop, 0.01)``, whose float rounding includes
  the stop value for severities 1 and 2 (7, 12, 16, 21, 26 factors).

Other substitutions (documented at each function): ImageMagick's ``MotionBlurImage`` is a one-sided
line kernel (:func:`motion_blur_taps`); scikit-image's salt-and-pepper noise, HSV round trip and
Gaussian filter, OpenCV's disk blur, bilinear resize, affine warp and grey conversion are written
out with numpy/scipy.

Command line (one ``.npz`` per corruption, see :func:`main`)::

    python -m sbgc.data.corruptions --out data/cifar10c --subset-fraction 0.1 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.ndimage as ndi
from PIL import Image

IMAGE_SIZE = 32
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
SEVERITIES = (1, 2, 3, 4, 5)

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
NOISE_CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "shot_noise", "impulse_noise")

# Float image on the [0, 1] scale, [N, 32, 32, 3] (batch) or [32, 32, 3] / [32, 32] (one image).
FloatImages = np.ndarray
Rngs = Sequence[np.random.Generator]


# ------------------------------------------------------------------------------------------------
# Parameters: the CIFAR values of the reference generator, one entry per severity 1..5.
# ------------------------------------------------------------------------------------------------
class DefocusParams(NamedTuple):
    radius: float  # disk radius, pixels
    alias_blur: float  # σ of the 3×3 Gaussian that anti-aliases the disk


class GlassParams(NamedTuple):
    sigma: float  # Gaussian blur σ before and after the shuffle, pixels
    max_delta: int  # offsets are drawn from {−max_delta, …, max_delta − 1}
    iterations: int  # number of shuffle passes


class MotionParams(NamedTuple):
    radius: float  # kernel has 2·ceil(radius) + 1 taps
    sigma: float  # half-Gaussian fall-off along the line, pixels


class SnowParams(NamedTuple):
    loc: float  # mean of the Gaussian snow field
    scale: float  # its standard deviation
    zoom: float  # centre zoom of the field (flake size)
    threshold: float  # field values below this are set to 0
    blur_radius: float  # motion blur of the flakes (see MotionParams)
    blur_sigma: float
    image_weight: float  # weight of the image against its whitened version


class FrostParams(NamedTuple):
    image_weight: float
    frost_weight: float


class FogParams(NamedTuple):
    strength: float  # amplitude of the plasma fractal added to the image
    decay: float  # plasma roughness: noise half-width shrinks by decay² per octave


class ElasticParams(NamedTuple):
    alpha: float  # amplitude of the elastic displacement, pixels
    sigma: float  # smoothing σ of the elastic displacement field, pixels (0: none)
    affine: float  # half-width of the uniform jitter of the affine control points, pixels


def _elastic(alpha_frac: float, sigma_frac: float, affine_frac: float) -> ElasticParams:
    """The reference states elastic parameters as fractions of the image size."""
    return ElasticParams(IMAGE_SIZE * alpha_frac, IMAGE_SIZE * sigma_frac, IMAGE_SIZE * affine_frac)


# Zoom blur averages the image with its centre zooms by np.arange(1, stop, 0.01).
ZOOM_BLUR_STOPS = (1.06, 1.11, 1.16, 1.21, 1.26)

PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # σ on the [0, 1] scale
    "shot_noise": (500, 250, 100, 75, 50),  # Poisson photon count at full intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    "defocus_blur": tuple(
        DefocusParams(*p) for p in [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]
    ),
    "glass_blur": tuple(
        GlassParams(*p)
        for p in [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]
    ),
    "motion_blur": tuple(
        MotionParams(*p) for p in [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]
    ),
    "zoom_blur": tuple(tuple(np.arange(1, stop, 0.01).tolist()) for stop in ZOOM_BLUR_STOPS),
    "snow": tuple(
        SnowParams(*p)
        for p in [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ]
    ),
    "frost": tuple(
        FrostParams(*p) for p in [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]
    ),
    "fog": tuple(FogParams(*p) for p in [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value channel
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the channel mean
    "elastic_transform": (
        _elastic(0, 0, 0.08),
        _elastic(0.05, 0.2, 0.07),
        _elastic(0.08, 0.06, 0.06),
        _elastic(0.1, 0.04, 0.05),
        _elastic(0.1, 0.03, 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # BOX down-resize factor, then BOX back up
    "jpeg_compression": (80, 65, 58, 50, 40),  # Pillow JPEG quality
}

# Frost textures shipped in sbgc/assets/frost (from the reference repository, Apache-2.0).
FROST_DIR = Path(__file__).resolve().parent / "assets" / "frost"
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_USED = 5  # the reference draws the texture index with randint(5): frost6 is never used
FROST_RESIZE = 0.2  # CIFAR variant: textures are shrunk by 0.2 before a random 32×32 crop

# Motion-blur angles (degrees, uniform) of the reference.
MOTION_BLUR_ANGLES = (-45.0, 45.0)
SNOW_BLUR_ANGLES = (-135.0, -45.0)

# ITU-R 601 luma weights of OpenCV's RGB→grey conversion (used by snow).
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def to_unit(x_u8: np.ndarray) -> FloatImages:
    """uint8 → float64 on [0, 1] (the reference's ``np.array(x) / 255.``)."""
    return x_u8 / 255.0


def from_unit(x: FloatImages) -> FloatImages:
    """float on [0, 1] → float on [0, 255], clipped (the reference's ``np.clip(x, 0, 1) * 255``)."""
    return np.clip(x, 0.0, 1.0) * 255.0


def _to_uint8(x255: np.ndarray) -> np.ndarray:
    """Float on [0, 255] → uint8, clipped then truncated as ``np.uint8(float_array)`` does."""
    return np.clip(x255, 0.0, 255.0).astype(np.uint8)


def _round_u8(x255: np.ndarray) -> np.ndarray:
    """Float on [0, 255] → uint8 rounded to nearest, as an 8-bit image encoder stores it."""
    return np.floor(np.clip(x255, 0.0, 255.0) + 0.5).astype(np.uint8)


def _gaussian_blur_hw(x: FloatImages, sigma: float, mode: str, truncate: float) -> FloatImages:
    """Gaussian filter over the two spatial axes of [N, H, W, C] (channels and batch untouched)."""
    return ndi.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode=mode, truncate=truncate)


def _skimage_gaussian(x: FloatImages, sigma: float) -> FloatImages:
    """scikit-image's ``gaussian(x, sigma, multichannel=True)`` on [N, H, W, C]: σ on H and W,
    border mode 'nearest', kernel truncated at 4σ."""
    return _gaussian_blur_hw(x, sigma, mode="nearest", truncate=4.0)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of ``x`` [..., H, H, C] by ``factor`` ≥ 1, keeping the H×H size.

    Crops the central ceil(H / factor) square, zooms it bilinearly (scipy.ndimage.zoom, order 1)
    and trims the excess symmetrically, as the reference's ``clipped_zoom``. Leading axes (a batch)
    are not zoomed.
    """
    h = x.shape[-3]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    patch = x[..., top : top + crop, top : top + crop, :]
    zoom = (1,) * (x.ndim - 3) + (factor, factor, 1)
    out = ndi.zoom(patch, zoom, order=1)
    trim = (out.shape[-3] - h) // 2
    return out[..., trim : trim + h, trim : trim + h, :]


def motion_blur_taps(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The line kernel of ImageMagick's ``MotionBlurImage(radius, sigma, angle)``.

    ``K = 2·ceil(radius) + 1`` taps at distances i = 0 … K−1 from the pixel along the direction
    ``angle`` (degrees; 0 points along +x = columns, 90 along +y = rows, image y pointing down),
    at integer offsets ``(round(i·sin θ), round(i·cos θ))`` (rows, columns; rounding half down as
    ImageMagick's ``ceil(v − ½)``), with half-Gaussian weights ``exp(−i² / 2σ²)`` normalised to 1.
    The blur is one-sided: out(y, x) = Σ_i w_i · in(y + dy_i, x + dx_i).

    Returns ``offsets`` int [K, 2] (dy, dx) and ``weights`` float [K].
    """
    if radius <= 0 or sigma <= 0:
        raise ValueError(f"motion blur needs radius > 0 and sigma > 0, got radius={radius}, sigma={sigma}")
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    theta = np.deg2rad(angle)
    dy = np.ceil(i * np.sin(theta) - 0.5).astype(np.int64)
    dx = np.ceil(i * np.cos(theta) - 0.5).astype(np.int64)
    return np.stack([dy, dx], axis=1), weights


def motion_blur_image(x: np.ndarray, radius: float, sigma: float, angle: float) -> FloatImages:
    """Apply :func:`motion_blur_taps` to one image [H, W] or [H, W, C] (any scale, float result).

    Pixels beyond the border repeat the edge pixel (ImageMagick's default virtual-pixel method).
    """
    offsets, weights = motion_blur_taps(radius, sigma, angle)
    pad = int(np.abs(offsets).max())
    h, w = x.shape[:2]
    pad_width = [(pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x.astype(np.float64), pad_width, mode="edge")
    out = np.zeros(x.shape, dtype=np.float64)
    for (dy, dx), wgt in zip(offsets, weights):
        out += wgt * padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return out


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk kernel [17, 17] of the reference's defocus blur (for radius ≤ 8).

    The indicator of {x² + y² ≤ radius²} on the integer grid −8 … 8, normalised to sum 1, then
    smoothed by a 3×3 Gaussian of σ = ``alias_blur`` (OpenCV ``GaussianBlur``, reflect-101 border).
    """
    if not 0 < radius <= 8:
        raise ValueError(f"disk radius must be in (0, 8] (the CIFAR range), got {radius}")
    grid = np.arange(-8, 9)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2.0 * alias_blur**2))
    g /= g.sum()
    return ndi.correlate(disk, np.outer(g, g), mode="mirror")


def plasma_fractal(rng: np.random.Generator, size: int = IMAGE_SIZE, decay: float = 3.0) -> np.ndarray:
    """A [size, size] diamond-square height map on [0, 1], periodic in both axes.

    Starting from one corner at 0 and a step equal to ``size``, each octave sets the centre of
    every square to the mean of its 4 corners, then the midpoint of every edge to the mean of its
    4 diamond neighbours (2 corners, 2 centres; indices wrap), each plus uniform noise of
    half-width ``spread``; the step then halves and ``spread`` shrinks by ``decay²`` (the
    reference's ``wibble · U(−wibble, wibble)`` with ``wibble /= decay``; its starting amplitude
    cancels in the final min-max normalisation).
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma size must be a power of two ≥ 2, got {size}")
    h = np.zeros((size, size))
    step, spread = size, 1.0
    while step >= 2:
        half = step // 2
        corners = h[::step, ::step]  # [m, m], m = size / step
        # Squares: centre (i·step + half, j·step + half) ← corners (i, j), (i+1, j), (i, j+1), (i+1, j+1).
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        h[half::step, half::step] = around / 4 + rng.uniform(-spread, spread, corners.shape)
        centres = h[half::step, half::step]
        # Diamonds on corner rows: (i·step, j·step + half) ← corners (i, j), (i, j+1);
        # centres (i, j) below and (i−1, j) above.
        around = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        h[::step, half::step] = around / 4 + rng.uniform(-spread, spread, corners.shape)
        # Diamonds on centre rows: (i·step + half, j·step) ← corners (i, j), (i+1, j);
        # centres (i, j) right and (i, j−1) left.
        around = corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        h[half::step, ::step] = around / 4 + rng.uniform(-spread, spread, corners.shape)
        step = half
        spread /= decay**2
    h -= h.min()
    return h / h.max()


def glass_shuffle(x_u8: np.ndarray, offsets: np.ndarray, max_delta: int = 1) -> np.ndarray:
    """One pass of the reference's local pixel shuffle on one image [32, 32, 3] uint8.

    The reference visits rows h = 32−d … d+1 and columns w = 32−d … d+1 (d = ``max_delta``) in
    decreasing order and "swaps" pixel (h, w) with (h + dy, w + dx), dy, dx ∈ {−d, …, d−1}; its
    swap of numpy views copies the neighbour into (h, w) and leaves the neighbour unchanged.
    For d = 1 every neighbour read lies in a row or column not yet visited, so the pass equals
    the simultaneous gather ``out[h, w] = x[h + dy, w + dx]`` computed here.

    ``offsets``: int [n, n, 2] (dy, dx) for the visited pixels in increasing (h, w) order,
    n = 32 − 2d.
    """
    if max_delta != 1:
        raise ValueError(f"the vectorised shuffle is exact for max_delta = 1 only, got {max_delta}")
    lo, hi = max_delta + 1, IMAGE_SIZE - max_delta + 1  # visited rows/columns: lo … hi − 1
    n = hi - lo
    if offsets.shape != (n, n, 2):
        raise ValueError(f"glass offsets must have shape {(n, n, 2)}, got {offsets.shape}")
    rows = np.arange(lo, hi)[:, None] + offsets[..., 0]
    cols = np.arange(lo, hi)[None, :] + offsets[..., 1]
    out = x_u8.copy()
    out[lo:hi, lo:hi] = x_u8[rows, cols]
    return out


# ------------------------------------------------------------------------------------------------
# The corruptions. Each maps uint8 [N, 32, 32, 3] + one generator per image + the severity's
# parameter to [N, 32, 32, 3] on the [0, 255] scale (float, or uint8 where the reference
# produced 8-bit images); ``corrupt`` converts to uint8.
# ------------------------------------------------------------------------------------------------
def gaussian_noise(x_u8: np.ndarray, rngs: Rngs, sigma: float) -> np.ndarray:
    """x + N(0, σ²) per value, on [0, 1]."""
    noise = np.stack([rng.normal(size=IMAGE_SHAPE) for rng in rngs])  # [N, 32, 32, 3]
    return from_unit(to_unit(x_u8) + sigma * noise)


def shot_noise(x_u8: np.ndarray, rngs: Rngs, photons: float) -> np.ndarray:
    """Poisson(x · c) / c per value, on [0, 1] (c photons at full intensity)."""
    rate = to_unit(x_u8) * photons
    counts = np.stack([rng.poisson(lam) for rng, lam in zip(rngs, rate)])
    return from_unit(counts / photons)


def impulse_noise(x_u8: np.ndarray, rngs: Rngs, amount: float) -> np.ndarray:
    """Salt and pepper: each value independently becomes 1 (salt) or 0 (pepper) with
    probability ``amount``, salt and pepper equally likely (scikit-image ``random_noise(mode='s&p')``)."""
    x = to_unit(x_u8).copy()
    for xi, rng in zip(x, rngs):
        hit = rng.random(IMAGE_SHAPE) < amount
        salt = rng.random(IMAGE_SHAPE) < 0.5
        xi[hit & salt] = 1.0
        xi[hit & ~salt] = 0.0
    return from_unit(x)


def defocus_blur(x_u8: np.ndarray, rngs: Rngs, p: DefocusParams) -> np.ndarray:
    """Correlation with :func:`disk_kernel`, reflect-101 border (OpenCV ``filter2D``)."""
    kernel = disk_kernel(p.radius, p.alias_blur)
    out = ndi.correlate(to_unit(x_u8), kernel[None, :, :, None], mode="mirror")
    return from_unit(out)


def glass_blur(x_u8: np.ndarray, rngs: Rngs, p: GlassParams) -> np.ndarray:
    """Gaussian blur (σ), to uint8 (truncated), ``iterations`` × :func:`glass_shuffle`, blur again."""
    blurred = (_skimage_gaussian(to_unit(x_u8), p.sigma) * 255).astype(np.uint8)
    n = IMAGE_SIZE - 2 * p.max_delta
    shuffled = np.empty_like(blurred)
    for i, rng in enumerate(rngs):
        offsets = rng.integers(-p.max_delta, p.max_delta, size=(p.iterations, n, n, 2))
        xi = blurred[i]
        for it in range(p.iterations):
            xi = glass_shuffle(xi, offsets[it], p.max_delta)
        shuffled[i] = xi
    return from_unit(_skimage_gaussian(to_unit(shuffled), p.sigma))


def motion_blur(x_u8: np.ndarray, rngs: Rngs, p: MotionParams) -> np.ndarray:
    """:func:`motion_blur_image` at a uniform random angle in [−45°, 45°], stored as 8-bit."""
    out = np.empty_like(x_u8)
    for i, rng in enumerate(rngs):
        angle = rng.uniform(*MOTION_BLUR_ANGLES)
        out[i] = _round_u8(motion_blur_image(x_u8[i], p.radius, p.sigma, angle))
    return out


@functools.cache
def zoom_matrix(factor: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """R [size, size] with ``clipped_zoom(x, factor)[:, :, c] == R @ x[:, :, c] @ R.T``.

    scipy's order-1 zoom is a tensor product of 1-D linear interpolations, so the clipped zoom
    is one matrix per axis: column k of R is the 1-D clipped zoom of the unit vector e_k.
    """
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    cols = ndi.zoom(np.eye(size)[top : top + crop], (factor, 1), order=1)  # [zoomed, size]
    trim = (cols.shape[0] - size) // 2
    return cols[trim : trim + size]


def zoom_blur(x_u8: np.ndarray, rngs: Rngs, factors: tuple[float, ...]) -> np.ndarray:
    """(x + Σ_z clipped_zoom(x, z)) / (len(factors) + 1), in float32 as the reference.

    The zooms are applied as R_z · x · R_zᵀ per channel (:func:`zoom_matrix`), equal to
    :func:`clipped_zoom` up to float rounding and much faster on a batch.
    """
    x = to_unit(x_u8).astype(np.float32)
    planes = np.moveaxis(x, -1, 1)  # [N, 3, 32, 32]
    acc = np.zeros_like(planes)
    for z in factors:
        r = zoom_matrix(z).astype(np.float32)
        acc += r @ planes @ r.T
    return from_unit((x + np.moveaxis(acc, 1, -1)) / (len(factors) + 1))


def snow_layer(rng: np.random.Generator, p: SnowParams) -> np.ndarray:
    """The falling-snow layer [32, 32, 1] on [0, 1] of one image.

    Gaussian field N(loc, scale²), centre-zoomed by ``zoom``, values below ``threshold`` zeroed,
    stored as 8-bit grey (truncated), motion-blurred at a uniform angle in [−135°, −45°], stored
    as 8-bit again.
    """
    field = rng.normal(loc=p.loc, scale=p.scale, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
    field = clipped_zoom(field, p.zoom)
    field[field < p.threshold] = 0.0
    flakes = (np.clip(field[..., 0], 0.0, 1.0) * 255).astype(np.uint8)
    angle = rng.uniform(*SNOW_BLUR_ANGLES)
    blurred = _round_u8(motion_blur_image(flakes, p.blur_radius, p.blur_sigma, angle))
    return (blurred / 255.0)[..., None]


def snow(x_u8: np.ndarray, rngs: Rngs, p: SnowParams) -> np.ndarray:
    """Whiten the image towards max(x, 1.5·grey + 0.5), then add the snow layer and its 180° turn."""
    x = to_unit(x_u8).astype(np.float32)
    layers = np.stack([snow_layer(rng, p) for rng in rngs])  # [N, 32, 32, 1]
    grey = (x @ _GREY_WEIGHTS.astype(np.float32))[..., None]  # [N, 32, 32, 1]
    x = p.image_weight * x + (1 - p.image_weight) * np.maximum(x, grey * 1.5 + 0.5)
    return from_unit(x + layers + np.rot90(layers, k=2, axes=(1, 2)))


@functools.cache
def frost_textures() -> tuple[np.ndarray, ...]:
    """The frost textures used by the reference, shrunk for CIFAR: uint8 RGB [h, w, 3] each.

    OpenCV's bilinear ``resize(fx=fy=0.2)`` maps output pixel i to input coordinate
    (i + ½) / 0.2 − ½ = 5i + 2, an integer: the shrunk texture is exactly the input sampled at
    rows and columns 5i + 2, with round(0.2·size) of them. Alpha channels are dropped, as
    ``cv2.imread`` does.
    """
    step = round(1 / FROST_RESIZE)
    folder = FROST_DIR
    out = []
    for name in FROST_FILES[:FROST_USED]:
        with Image.open(folder / name) as img:
            rgb = np.asarray(img.convert("RGBA"))[..., :3]
        h, w = (int(np.rint(s * FROST_RESIZE)) for s in rgb.shape[:2])
        out.append(np.ascontiguousarray(rgb[step // 2 :: step, step // 2 :: step][:h, :w]))
    return tuple(out)


def frost_patch(rng: np.random.Generator) -> np.ndarray:
    """A random 32×32 crop [32, 32, 3] uint8 of a random (shrunk) frost texture."""
    textures = frost_textures()
    tex = textures[rng.integers(len(textures))]
    top = rng.integers(0, tex.shape[0] - IMAGE_SIZE)
    left = rng.integers(0, tex.shape[1] - IMAGE_SIZE)
    return tex[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]


def frost(x_u8: np.ndarray, rngs: Rngs, p: FrostParams) -> np.ndarray:
    """image_weight · x + frost_weight · frost patch, on [0, 255]."""
    patches = np.stack([frost_patch(rng) for rng in rngs]).astype(np.float64)
    return np.clip(p.image_weight * x_u8 + p.frost_weight * patches, 0.0, 255.0)


def fog(x_u8: np.ndarray, rngs: Rngs, p: FogParams) -> np.ndarray:
    """(x + s·plasma) · m / (m + s), m = the image's maximum value, s = ``strength``."""
    x = to_unit(x_u8)
    plasma = np.stack([plasma_fractal(rng, IMAGE_SIZE, p.decay) for rng in rngs])[..., None]
    peak = x.max(axis=(1, 2, 3), keepdims=True)  # [N, 1, 1, 1]
    return from_unit((x + p.strength * plasma) * peak / (peak + p.strength))


def brightness(x_u8: np.ndarray, rngs: Rngs, delta: float) -> np.ndarray:
    """Add ``delta`` to the HSV value channel (clipped to 1), keeping hue and saturation.

    At fixed hue and saturation RGB is proportional to V = max(R, G, B), so the HSV round trip is
    rgb · V' / V with V' = min(V + delta, 1); black (V = 0, saturation 0) becomes grey V'.
    """
    x = to_unit(x_u8)
    v = x.max(axis=-1, keepdims=True)
    v_new = np.minimum(v + delta, 1.0)
    scale = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    return from_unit(np.where(v > 0, x * scale, v_new))


def contrast(x_u8: np.ndarray, rngs: Rngs, factor: float) -> np.ndarray:
    """(x − μ) · factor + μ, μ = each image's per-channel mean."""
    x = to_unit(x_u8)
    mean = x.mean(axis=(1, 2), keepdims=True)  # [N, 1, 1, 3]
    return from_unit((x - mean) * factor + mean)


class ElasticField(NamedTuple):
    """The two random warps of one elastic_transform draw."""

    affine: np.ndarray  # [2, 3] forward affine map (x, y, 1) → (x', y'), x = column, y = row
    control_shift: np.ndarray  # [3, 2] jitter of the 3 control points, (x, y), pixels
    dy: np.ndarray  # [32, 32] elastic displacement of the sampling rows, pixels
    dx: np.ndarray  # [32, 32] elastic displacement of the sampling columns, pixels


# Affine control points (x, y) of the reference: centre ± a third of the image size.
_ELASTIC_CENTRE = float(IMAGE_SIZE // 2)
_ELASTIC_HALF = float(IMAGE_SIZE // 3)
ELASTIC_CONTROL_POINTS = np.array(
    [
        [_ELASTIC_CENTRE + _ELASTIC_HALF, _ELASTIC_CENTRE + _ELASTIC_HALF],
        [_ELASTIC_CENTRE + _ELASTIC_HALF, _ELASTIC_CENTRE - _ELASTIC_HALF],
        [_ELASTIC_CENTRE - _ELASTIC_HALF, _ELASTIC_CENTRE - _ELASTIC_HALF],
    ]
)


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The [2, 3] affine map A with A·(src_k, 1) = dst_k for 3 points (x, y) (``getAffineTransform``)."""
    design = np.concatenate([src, np.ones((3, 1))], axis=1)  # [3, 3]
    return np.linalg.solve(design, dst).T


def elastic_field(rng: np.random.Generator, p: ElasticParams) -> ElasticField:
    """Draw the random affine warp and the elastic displacement of one image.

    Affine: the 3 control points move by U(−affine, affine) each coordinate. Elastic: per axis,
    U(−1, 1) noise smoothed by a Gaussian of σ = ``sigma`` (border 'reflect', truncated at 3σ),
    times ``alpha``; no elastic part when σ = 0 (severity 1).
    """
    shift = rng.uniform(-p.affine, p.affine, size=(3, 2))
    affine = affine_from_points(ELASTIC_CONTROL_POINTS, ELASTIC_CONTROL_POINTS + shift)
    shape = (IMAGE_SIZE, IMAGE_SIZE)

    def displacement() -> np.ndarray:
        noise = rng.uniform(-1.0, 1.0, size=shape)
        if p.sigma == 0:
            return np.zeros(shape)
        return ndi.gaussian_filter(noise, p.sigma, mode="reflect", truncate=3.0) * p.alpha

    dx = displacement()
    dy = displacement()
    return ElasticField(affine=affine, control_shift=shift, dy=dy, dx=dx)


def _sample(image: FloatImages, rows: np.ndarray, cols: np.ndarray, mode: str) -> FloatImages:
    """Bilinear sampling of [H, W, C] at (rows, cols) [H, W] per channel, scipy border ``mode``."""
    c = image.shape[-1]
    coords = np.stack(
        [
            np.broadcast_to(rows[..., None], rows.shape + (c,)),
            np.broadcast_to(cols[..., None], cols.shape + (c,)),
            np.broadcast_to(np.arange(c), rows.shape + (c,)),
        ]
    )
    return ndi.map_coordinates(image, coords, order=1, mode=mode)


def apply_elastic_field(x: FloatImages, field: ElasticField) -> FloatImages:
    """Warp one [32, 32, 3] image on [0, 1]: the affine warp (output pixel q samples the input at
    A⁻¹ q, reflect-101 border, as OpenCV ``warpAffine``), then the elastic warp (output (y, x)
    samples (y + dy, x + dx), border 'reflect')."""
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    lin, shift = field.affine[:, :2], field.affine[:, 2]
    inv = np.linalg.inv(lin)
    q = np.stack([cols - shift[0], rows - shift[1]], axis=-1)  # [32, 32, 2] (x, y)
    src = q @ inv.T
    warped = _sample(x, src[..., 1], src[..., 0], mode="mirror")
    return _sample(warped, rows + field.dy, cols + field.dx, mode="reflect")


def elastic_transform(x_u8: np.ndarray, rngs: Rngs, p: ElasticParams) -> np.ndarray:
    """Random affine warp followed by a smooth random displacement (:func:`elastic_field`)."""
    x = to_unit(x_u8).astype(np.float32)
    out = np.stack([apply_elastic_field(xi, elastic_field(rng, p)) for xi, rng in zip(x, rngs)])
    return from_unit(out)


def pixelate(x_u8: np.ndarray, rngs: Rngs, factor: float) -> np.ndarray:
    """Pillow BOX resize to int(32 · factor) pixels a side and BOX back to 32."""
    small = int(IMAGE_SIZE * factor)
    out = np.empty_like(x_u8)
    for i, xi in enumerate(x_u8):
        img = Image.fromarray(xi).resize((small, small), Image.Resampling.BOX)
        out[i] = np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX))
    return out


def jpeg_compression(x_u8: np.ndarray, rngs: Rngs, quality: int) -> np.ndarray:
    """Encode as JPEG with Pillow at ``quality`` (Pillow defaults otherwise) and decode."""
    out = np.empty_like(x_u8)
    for i, xi in enumerate(x_u8):
        buf = io.BytesIO()
        Image.fromarray(xi).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


CorruptionFn = Callable[[np.ndarray, Rngs, object], np.ndarray]
_FUNCTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
# Corruptions that draw random numbers; the others are deterministic functions of the image.
RANDOM_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
)
assert tuple(_FUNCTIONS) == CORRUPTIONS and set(RANDOM_CORRUPTIONS) <= set(CORRUPTIONS)


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------
def _check_name_severity(name: str, severity: int) -> None:
    if name not in _FUNCTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {name!r}")
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)):
        raise ValueError(f"severity must be an int in 1..5, got {severity!r} ({type(severity).__name__})")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be in 1..5, got {severity}")


def image_rngs(
    seed: int, indices: np.ndarray, name: str, severity: int
) -> list[np.random.Generator]:
    """One generator per image: ``default_rng([seed, index, corruption_id, severity])``."""
    cid = CORRUPTIONS.index(name)
    return [np.random.default_rng([seed, int(i), cid, int(severity)]) for i in indices]


def corrupt(
    images_u8: np.ndarray,
    name: str,
    severity: int,
    *,
    seed: int | None = None,
    indices: np.ndarray | Sequence[int] | int | None = None,
) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) to CIFAR images.

    Args:
        images_u8: uint8 [N, 32, 32, 3] or [32, 32, 3], RGB.
        name: one of :data:`CORRUPTIONS`.
        severity: int in 1..5.
        seed: non-negative int; ``None`` draws one from the operating system (not reproducible).
        indices: the images' indices in their dataset, int [N] (or an int for one image);
            default 0 … N−1. Image i's randomness depends only on (seed, indices[i], name,
            severity), so results do not depend on batching.

    Returns:
        uint8 array of the same shape as ``images_u8``.
    """
    _check_name_severity(name, severity)
    x = np.asarray(images_u8)
    if x.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got dtype {x.dtype}")
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"images must have shape [N, 32, 32, 3] or [32, 32, 3], got {tuple(np.shape(images_u8))}"
        )
    n = x.shape[0]
    if indices is None:
        idx = np.arange(n)
    else:
        idx = np.atleast_1d(np.asarray(indices))
        if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer) or (idx < 0).any():
            raise ValueError(
                f"indices must be {n} non-negative integers (one per image), got {np.asarray(indices)!r:.200}"
            )
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    elif isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    if n == 0:
        return np.asarray(images_u8).copy()
    param = PARAMETERS[name][severity - 1]
    rngs = image_rngs(int(seed), idx, name, severity) if name in RANDOM_CORRUPTIONS else [None] * n
    out = _to_uint8(_FUNCTIONS[name](x, rngs, param))
    assert out.shape == x.shape
    return out[0] if single else out


def corruption_grid(image_u8: np.ndarray, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """One image [32, 32, 3] uint8 under every corruption and severity: uint8 [15, 5, 32, 32, 3]
    (rows in the order of :data:`CORRUPTIONS`, columns severities 1..5)."""
    x = np.asarray(image_u8)
    if x.shape != IMAGE_SHAPE:
        raise ValueError(f"corruption_grid takes one image of shape (32, 32, 3), got {x.shape}")
    return np.stack(
        [
            np.stack([corrupt(x, name, s, seed=seed, indices=index) for s in SEVERITIES])
            for name in CORRUPTIONS
        ]
    )


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth, textured stand-in images uint8 [n, 32, 32, 3] for runs without CIFAR-10.

    Each image: a smooth random colour field (Gaussian-filtered noise, σ = 5 px), a finer texture
    (σ = 1 px, smaller amplitude) and a random bright or dark disc with a sharp edge.
    """
    if n < 1:
        raise ValueError(f"need at least one synthetic image, got n={n}")
    rng = np.random.default_rng([seed, 0x5EED])
    coarse = _gaussian_blur_hw(rng.normal(size=(n,) + IMAGE_SHAPE), 5.0, "wrap", 4.0)
    fine = _gaussian_blur_hw(rng.normal(size=(n,) + IMAGE_SHAPE), 1.0, "wrap", 4.0)
    coarse /= coarse.std(axis=(1, 2, 3), keepdims=True)
    fine /= fine.std(axis=(1, 2, 3), keepdims=True)
    x = 0.5 + 0.15 * coarse + 0.05 * fine
    rows, cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    centre = rng.uniform(8, 24, size=(n, 2))
    radius = rng.uniform(4, 10, size=n)
    dist2 = (rows - centre[:, :1, None]) ** 2 + (cols - centre[:, 1:, None]) ** 2  # [n, 32, 32]
    inside = dist2 <= radius[:, None, None] ** 2
    shade = rng.choice([-0.25, 0.25], size=n)[:, None, None, None]
    x = x + shade * inside[..., None]
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a uniformly random ``fraction`` of n images (all when fraction = 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def generate(
    images_u8: np.ndarray,
    indices: np.ndarray,
    names: Sequence[str],
    severities: Sequence[int],
    seed: int,
    chunk: int = 250,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Corrupt ``images_u8`` [N, 32, 32, 3] under each name and severity.

    Returns {name: uint8 [len(severities), N, 32, 32, 3]}; ``progress(k)`` is called after every
    chunk of k images.
    """
    out = {}
    for name in names:
        x = np.empty((len(severities),) + images_u8.shape, dtype=np.uint8)
        for si, s in enumerate(severities):
            for start in range(0, len(images_u8), chunk):
                stop = min(start + chunk, len(images_u8))
                x[si, start:stop] = corrupt(
                    images_u8[start:stop], name, s, seed=seed, indices=indices[start:stop]
                )
                if progress is not None:
                    progress(stop - start)
        out[name] = x
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Write ``OUT/<corruption>.npz`` for each requested corruption.

    Each file holds ``x`` uint8 [S, N, 32, 32, 3] (S = number of severities, in the order of
    ``severities``), ``y`` [N] labels, ``indices`` [N] test-set indices of the images, ``severities``
    [S], ``seed``, ``corruption`` (its name) and ``source`` (where the clean images came from).
    ``--subset-fraction f`` keeps a uniformly random fraction f of the test set (drawn from
    ``--seed``; the paper evaluates on 10%).
    """
    parser = argparse.ArgumentParser(
        prog="python -m sbgc.data.corruptions", description=main.__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--corruptions", nargs="+", default=list(CORRUPTIONS), metavar="NAME", choices=CORRUPTIONS
    )
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES), choices=SEVERITIES)
    parser.add_argument("--subset-fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder passed to sbgc.data.cifar10.load_cifar10")
    parser.add_argument(
        "--synthetic", type=int, default=None, metavar="N", help="use N synthetic images instead of CIFAR-10"
    )
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")

    if args.synthetic is not None:
        images = synthetic_images(args.synthetic, seed=args.seed)
        labels = np.zeros(len(images), dtype=np.int64)
        indices = np.arange(len(images))
        source = f"synthetic:{args.synthetic}:seed{args.seed}"
    else:
        from sbgc.data.cifar10 import load_cifar10

        data = load_cifar10("test", data_dir=args.data_dir)
        images, labels = np.asarray(data.images), np.asarray(data.labels)
        indices, source = np.asarray(data.indices), str(data.source)
    try:
        keep = _subset(len(images), args.subset_fraction, args.seed)
    except ValueError as e:
        parser.error(str(e))
    images, labels, indices = images[keep], labels[keep], indices[keep]

    from tqdm import tqdm

    from sbgc.storage import atomic_savez

    os.makedirs(args.out, exist_ok=True)
    total = len(args.corruptions) * len(args.severities) * len(images)
    with tqdm(total=total, unit="img", desc="CIFAR-10-C") as bar:
        for name in args.corruptions:
            bar.set_postfix_str(name)
            x = generate(images, indices, [name], args.severities, args.seed, progress=bar.update)[name]
            atomic_savez(
                Path(args.out) / f"{name}.npz",
                x=x,
                y=labels,
                indices=indices,
                severities=np.asarray(args.severities, dtype=np.int64),
                seed=np.int64(args.seed),
                corruption=np.str_(name),
                source=np.str_(source),
            )


if __name__ == "__main__":
    main()
