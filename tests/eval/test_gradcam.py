"""Grad-CAM of encoder + linear probe: shapes, range, agreement with the probe, and the PNG panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sslbench.eval.gradcam import CamRow, ProbedEncoder, gradcam, gradcam_panel
from sslbench.models.encoder import Encoder, EncoderSpec


def _setup() -> tuple[Encoder, torch.nn.Linear, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec()).eval()
    probe = torch.nn.Linear(encoder.embedding_dim, 4)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    return encoder, probe, images, np.array([0, 1, 3])


def test_gradcam_maps_have_the_image_shape_and_follow_the_probe() -> None:
    encoder, probe, images, labels = _setup()
    cams, predictions = gradcam(encoder, probe, images, labels)
    assert cams.shape == (3, 32, 32) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 and cams.max() > 0
    with torch.no_grad():
        x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
        logits = ProbedEncoder(encoder, probe)(x)
    np.testing.assert_array_equal(predictions, logits.argmax(1).numpy())
    # the map depends on the target: another class gives another map
    other, _ = gradcam(encoder, probe, images, (labels + 1) % 4)
    assert not np.allclose(cams, other)


def test_gradcam_panel_writes_a_png(tmp_path: Path) -> None:
    encoder, probe, images, labels = _setup()
    cams, predictions = gradcam(encoder, probe, images, labels)
    rows = [CamRow("clean", images, cams, labels, predictions), CamRow("fog (3)", images[:2], cams[:2], labels[:2],
                                                                      predictions[:2])]
    path = tmp_path / "gradcam" / "m.png"
    gradcam_panel(rows, ["a", "b", "c", "d"], path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
