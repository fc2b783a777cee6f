"""Grad-CAM of encoder + linear probe: shapes, range, agreement with the probe and with pytorch-grad-cam."""

from __future__ import annotations

import numpy as np
import torch

from sslbench.eval.gradcam import ProbedEncoder, gradcam
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


def test_gradcam_equals_pytorch_grad_cam() -> None:
    """The hand-written maps (see the module docstring for why) against the library's GradCAM on the same model,
    layer and targets."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    encoder, probe, images, labels = _setup()
    cams, _ = gradcam(encoder, probe, images, labels)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
    model = ProbedEncoder(encoder, probe).eval()
    with GradCAM(model=model, target_layers=[encoder.backbone.last_block]) as cam:
        expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(y)) for y in labels])
    np.testing.assert_allclose(cams, expected, atol=1e-4)
