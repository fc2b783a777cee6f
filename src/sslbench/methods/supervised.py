"""`supervised`: cross-entropy on the labels, same backbone and augmentations as the SSL methods.

The reference model of the normalised mean corruption error outside ImageNet (docs/protocols.md), and the ceiling of
the linear probe. A linear classifier on the backbone features is trained jointly with the backbone
(L = CE(W h + b, y), optional label smoothing, Szegedy et al. 2016); the online probe is trained apart as for every
method.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods.base import LossOutput, SSLMethod


class Supervised(SSLMethod):
    """Backbone + linear classifier trained with cross-entropy on the first view.

    Args:
        label_smoothing: epsilon of label smoothing, in [0, 1).
        **base: `SSLMethod` arguments.
    """

    def __init__(self, label_smoothing: float = 0.0, **base: Any) -> None:
        super().__init__(**base)
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"supervised label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.classifier = nn.Linear(self.encoder.feature_dim, self.num_classes)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        h = self.encoder.features(views[0])
        loss = F.cross_entropy(self.classifier(h), labels, label_smoothing=self.label_smoothing)
        return LossOutput(loss, h, {})
