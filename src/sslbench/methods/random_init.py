"""`random_init`: the untrained, seeded encoder, the floor every method must beat on the same probe.

It is never optimised: the pretrain stage sees `trainable = False` and saves the encoder as initialised after
`seed_everything(study.seed)`, the same initialisation every other method starts from.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sslbench.methods.base import LossOutput, SSLMethod


class RandomInit(SSLMethod):
    """No heads and no loss; `loss_step` only exists to satisfy the interface (it returns a zero loss)."""

    trainable: ClassVar[bool] = False

    def __init__(self, **base: Any) -> None:
        super().__init__(**base)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        h = self.encoder.features(views[0])
        return LossOutput(h.sum() * 0.0, h, {})
