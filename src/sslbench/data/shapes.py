"""`shapes`: a procedurally generated, seeded, class-structured RGB image set (docs/datasets.md).

The label is the shape alone. Nuisances, all drawn per image from the seed: foreground colour, position, scale,
rotation, a background texture (flat, gradient, stripes, checkerboard or smooth noise) with its own colours, and
pixel noise. So the usual SSL augmentations (crops, flips, colour jitter, blur) preserve the label, and a
representation must learn shape to be linearly separable.

Shapes are drawn by inside-tests on canonical coordinates (u, v) in [-1, 1]², rendered with 2x2 super-sampling.
`SHAPES` is ordered: the first `n_classes` are in-distribution, the next `n_heldout` are near-OOD classes that never
appear in training (`shapes_heldout`). The same seed gives byte-identical arrays on any machine (numpy's PCG64).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polygon(n_sides: int, radius: float = 0.85) -> Mask:
    # a regular polygon as the intersection of half-planes
    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        apothem = radius * np.cos(np.pi / n_sides)
        ok = np.ones(u.shape, dtype=bool)
        for k in range(n_sides):
            angle = 2 * np.pi * k / n_sides + np.pi / 2 + np.pi / n_sides
            ok &= u * np.cos(angle) + v * np.sin(angle) <= apothem
        return ok

    return inside


def _star(points: int = 5, outer: float = 0.9, inner: float = 0.4) -> Mask:
    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = np.hypot(u, v)
        theta = np.mod(np.arctan2(v, u) - np.pi / 2, 2 * np.pi / points)
        half = np.pi / points
        t = np.abs(theta - half) / half  # 0 at inner vertex, 1 at outer vertex
        return r <= inner + (outer - inner) * t

    return inside


SHAPES: dict[str, Mask] = {
    "circle": lambda u, v: u**2 + v**2 <= 0.8**2,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.68,
    "triangle": _polygon(3, 0.95),
    "cross": lambda u, v: ((np.abs(u) <= 0.25) & (np.abs(v) <= 0.85)) | ((np.abs(v) <= 0.25) & (np.abs(u) <= 0.85)),
    "ring": lambda u, v: (u**2 + v**2 <= 0.85**2) & (u**2 + v**2 >= 0.5**2),
    "star": _star(5),
    "ellipse": lambda u, v: (u / 0.9) ** 2 + (v / 0.45) ** 2 <= 1,
    "crescent": lambda u, v: (u**2 + v**2 <= 0.8**2) & ((u - 0.35) ** 2 + v**2 >= 0.6**2),
    "half_disk": lambda u, v: (u**2 + v**2 <= 0.85**2) & (v >= -0.1),
    "l_shape": lambda u, v: (
        ((np.abs(u + 0.45) <= 0.25) & (np.abs(v) <= 0.8)) | ((np.abs(v - 0.55) <= 0.25) & (np.abs(u) <= 0.7))
    ),
    # held out as near-OOD by default
    "hexagon": _polygon(6, 0.85),
    "heart": lambda u, v: ((1.3 * u) ** 2 + (1.3 * -v) ** 2 - 1) ** 3 - (1.3 * u) ** 2 * (1.3 * -v) ** 3 <= 0,
    "arrow": lambda u, v: ((np.abs(v) <= 0.2) & (u >= -0.85) & (u <= 0.2)) | ((u >= 0.1) & (np.abs(v) <= 0.8 - u)),
    "t_shape": lambda u, v: (
        ((np.abs(u) <= 0.22) & (v <= 0.6) & (v >= -0.85)) | ((np.abs(v - 0.62) <= 0.22) & (np.abs(u) <= 0.8))
    ),
}
TEXTURES = ("flat", "gradient", "stripes", "checker", "blobs")
# Difficulty of the in-distribution images, calibrated so that every method learns within the default CPU budget
# (docs/calibration.md): shape radius as a fraction of the half-width, background texture contrast, pixel noise.
SCALE_RANGE = (0.55, 0.85)
BG_CONTRAST = 0.35
NOISE_MAX = 0.05


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape (N,); returns (N, 3) in [0, 1]."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def _backgrounds(
    rng: np.random.Generator, n: int, size: int, textures: tuple[str, ...], contrast: float = 1.0
) -> np.ndarray:
    """Background textures (N, H, W, 3) in [0, 1], each from two random colours and a random pattern; `contrast`
    in [0, 1] moves the second colour towards the first (0: flat backgrounds whatever the pattern)."""
    c1 = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.8, n), rng.uniform(0.15, 0.95, n))
    c2 = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.8, n), rng.uniform(0.15, 0.95, n))
    c2 = c1 + contrast * (c2 - c1)
    kind = rng.integers(0, len(textures), n)
    angle = rng.uniform(0, np.pi, n)
    freq = rng.uniform(1.5, 5.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    coarse = rng.random((n, 4, 4))
    ys, xs = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    proj = xs[None] * np.cos(angle)[:, None, None] + ys[None] * np.sin(angle)[:, None, None]
    alpha = np.zeros((n, size, size))
    for k, name in enumerate(textures):
        sel = kind == k
        if not sel.any():
            continue
        if name == "gradient":
            alpha[sel] = (proj[sel] + 1.5) / 3.0
        elif name == "stripes":
            alpha[sel] = 0.5 + 0.5 * np.sin(np.pi * freq[sel, None, None] * proj[sel] + phase[sel, None, None])
        elif name == "checker":
            cells = np.floor((xs[None] + 1) * freq[sel, None, None]) + np.floor((ys[None] + 1) * freq[sel, None, None])
            alpha[sel] = np.mod(cells, 2)
        elif name == "blobs":  # smooth noise: bilinear upsampling of a 4x4 grid
            idx = np.linspace(0, 3, size)
            i0 = np.clip(np.floor(idx).astype(int), 0, 2)
            w = idx - i0
            rows = coarse[sel][:, i0] * (1 - w)[None, :, None] + coarse[sel][:, i0 + 1] * w[None, :, None]
            alpha[sel] = rows[:, :, i0] * (1 - w)[None, None] + rows[:, :, i0 + 1] * w[None, None]
    alpha = np.clip(alpha, 0, 1)[..., None]
    return c1[:, None, None] * (1 - alpha) + c2[:, None, None] * alpha


def render_shapes(
    labels: np.ndarray,
    shape_names: list[str],
    size: int,
    rng: np.random.Generator,
    noise_max: float = NOISE_MAX,
    scale_range: tuple[float, float] = SCALE_RANGE,
    bg_contrast: float = BG_CONTRAST,
) -> np.ndarray:
    """Render one image per label: `shape_names[label]` with random nuisances. Returns uint8 (N, size, size, 3)."""
    n = len(labels)
    scale = rng.uniform(*scale_range, n)  # shape radius relative to the half-width
    rotation = rng.uniform(0, 2 * np.pi, n)
    centre = rng.uniform(-1, 1, (n, 2)) * (1 - scale)[:, None] * 0.9
    fg = _hsv_to_rgb(rng.random(n), rng.uniform(0.4, 1.0, n), rng.uniform(0.5, 1.0, n))
    background = _backgrounds(rng, n, size, TEXTURES, bg_contrast)
    sigma = rng.uniform(0, noise_max, n)
    noise = rng.standard_normal((n, size, size, 3))
    # 2x2 super-sampled coverage of the shape
    sub = 2 * size
    grid = (np.arange(sub) + 0.5) / sub * 2 - 1
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    coverage = np.zeros((n, size, size))
    for k, name in enumerate(shape_names):
        sel = np.flatnonzero(labels == k)
        if len(sel) == 0:
            continue
        dx = xs[None] - centre[sel, 0, None, None]
        dy = ys[None] - centre[sel, 1, None, None]
        cos, sin = np.cos(rotation[sel])[:, None, None], np.sin(rotation[sel])[:, None, None]
        u = (cos * dx + sin * dy) / scale[sel, None, None]
        v = (-sin * dx + cos * dy) / scale[sel, None, None]
        mask = SHAPES[name](u, v).astype(np.float64)
        coverage[sel] = mask.reshape(len(sel), size, 2, size, 2).mean(axis=(2, 4))
    cov = coverage[..., None]
    image = background * (1 - cov) + fg[:, None, None] * cov + sigma[:, None, None, None] * noise
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def generate(
    seed: int, n_per_split: dict[str, int], shape_names: list[str], size: int, chunk: int = 1000
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Generate class-balanced splits `{split: (images, labels)}` of the given shapes.

    Each split uses its own child seed (derived from `seed` and the split name), so changing one split's size never
    changes another split. Labels cycle through the classes and are then shuffled.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, n in n_per_split.items():
        split_key = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
        rng = np.random.default_rng([seed, split_key])
        labels = rng.permutation(np.arange(n) % len(shape_names)).astype(np.int64)
        parts = [render_shapes(labels[i : i + chunk], shape_names, size, rng) for i in range(0, n, chunk)]
        images = np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)
        out[split] = (images, labels)
    return out


def generate_noise_textures(
    seed: int, n_per_split: dict[str, int], size: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Far-OOD set: background textures plus strong pixel noise, no shape. Label 0 ("texture") for all."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, n in n_per_split.items():
        split_key = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
        rng = np.random.default_rng([seed, 7919, split_key])
        background = _backgrounds(rng, n, size, TEXTURES[1:])
        sigma = rng.uniform(0.05, 0.25, n)[:, None, None, None]
        image = background + sigma * rng.standard_normal((n, size, size, 3))
        out[split] = (np.clip(np.round(image * 255), 0, 255).astype(np.uint8), np.zeros(n, np.int64))
    return out
