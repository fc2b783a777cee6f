"""The image panels the stages draw (`sslbench.report.panels`): each writes a PNG; the mosaic and the Grad-CAM
overlay are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sslbench.data import corruptions as C
from sslbench.eval.gradcam import gradcam
from sslbench.models.encoder import Encoder, EncoderSpec
from sslbench.report.panels import CamRow, corruption_grid, gradcam_panel, overlay, sample_grid, ssim_table_figure, tile


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _setup() -> tuple[Encoder, torch.nn.Linear, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec()).eval()
    probe = torch.nn.Linear(encoder.embedding_dim, 4)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    return encoder, probe, images, np.array([0, 1, 3])


def test_tile_places_images_row_by_row_on_white() -> None:
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 0.5)
    mosaic, h, w, gap = tile([[a, None], [None, b]], row_gap=2)
    assert (h, w, gap) == (4, 4, 1) and mosaic.shape == (4 + 2 + 4, 4 + 1 + 4, 3)
    assert (mosaic[:4, :4] == 0).all() and (mosaic[:4, 5:] == 255).all()  # a, then a blank cell
    assert (mosaic[6:, 5:] == 128).all() and (mosaic[4:6] == 255).all()  # b (grey, from float), rows 2 px apart


def test_sample_grid_writes_a_png(tmp_path: Path) -> None:
    images, labels = _images(30), np.arange(30) % 3
    sample_grid(images, labels, ["a", "b", "c", "d"], tmp_path / "grid.png", per_class=4, title="test")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_corruption_grid_writes_a_png(tmp_path: Path) -> None:
    image = _images(1)[0]
    sets = {(c, s): C.corrupt_image(image, c, s, 0) for c in ("fog", "pixelate") for s in (1, 5)}
    corruption_grid(image, sets, tmp_path / "samples.png", "test")
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_ssim_table_figure_writes_a_png(tmp_path: Path) -> None:
    rows = [{"corruption": c, "group": g, "severity": s, "ssim_mean": 1 - 0.1 * s, "ssim_std": 0.0, "n": 2}
            for c, g in (("fog", "weather"), ("pixelate", "digital")) for s in (1, 2)]
    ssim_table_figure(rows, str(tmp_path / "ssim.png"), "test")  # type: ignore[arg-type]
    assert (tmp_path / "ssim.png").read_bytes()[:4] == b"\x89PNG"


def test_gradcam_panel_writes_a_png(tmp_path: Path) -> None:
    encoder, probe, images, labels = _setup()
    cams, predictions = gradcam(encoder, probe, images, labels)
    rows = [CamRow("clean", images, cams, labels, predictions), CamRow("fog (3)", images[:2], cams[:2], labels[:2],
                                                                      predictions[:2])]
    path = tmp_path / "gradcam" / "m.png"
    gradcam_panel(rows, ["a", "b", "c", "d"], path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_overlay_is_an_rgb_image_brightest_at_one() -> None:
    image = np.full((4, 4, 3), 0.5, np.float32)
    cam = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = overlay(image, cam)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8 and out.max() == 255
    # jet runs from blue (cold) to red (hot): the hottest pixel is redder than the coldest
    assert out[3, 3, 0] > out[0, 0, 0] and out[3, 3, 2] < out[0, 0, 2]
