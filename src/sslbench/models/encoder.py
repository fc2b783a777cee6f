"""The encoder handed downstream: everything needed to embed an image, saved as one plain state_dict.

`Encoder` = backbone (+ the stochastic head of Bayes models). Its structure is rebuilt from an `EncoderSpec`
(stored in `models/<method>/config.yaml` under `encoder:`) without importing any training code, so that the
embedding and evaluation stages stay light; the weights come from `encoder.pt`, loaded with `strict=True` and
`weights_only=True`.

Representation used downstream (`embedding`):
- deterministic models and Bayes-Z: the backbone features h;
- Bayes-H: the mean mu of q(h) (the reference code's sample mean, without sampling noise).
`mu`/`logvar` are those of the stochastic space (h for Bayes-H, z for Bayes-Z).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from sslbench.errors import UserError
from sslbench.models.backbones import build_backbone
from sslbench.models.heads import MLP
from sslbench.models.stochastic import PRIORS, GaussianHead, MixturePrior, StandardNormalPrior, build_prior

STOCHASTIC_SPACES = ("none", "h", "z")


@dataclass(frozen=True)
class EncoderSpec:
    """What rebuilds an `Encoder`: backbone arguments plus the stochastic space.

    Args:
        backbone: backbone name (see `sslbench.models.backbones.BACKBONES`).
        stem: ResNet stem (`cifar`, `tinyimagenet`, `imagenet`).
        out_dim: DISSL "+dim" widening, or None.
        image_size: input resolution (needed by ViT).
        width: first-block width of the `convnet` (w-2w-4w-8w); ignored by the other backbones.
        stochastic_space: `none`, `h` (Bayes-H) or `z` (Bayes-Z).
        projector_dims: Bayes-Z only: the projector's hidden and output widths (input = feature dim); the projector
            belongs to the encoder because z is computed from it.
        prior, prior_components: the prior p of the stochastic space (`standard` or `mog` with that many
            components); part of the encoder so that OOD scores can use log p(mu) (learned for `mog`).
        mean, std: per-channel input normalisation, applied inside the encoder so that every consumer feeds
            float images in [0, 1] (Chhipa et al. 2023 fed unnormalised inputs; we do not).
        out_bottleneck: with `out_dim`, widen with DISSL's expanding bottleneck of this width (its torch.hub `d8192`
            models: 512) instead of a 1x1 conv; written to config.yaml only when set, so the configs of encoders
            without it are unchanged.
    """

    backbone: str = "convnet"
    stem: str = "cifar"
    out_dim: int | None = None
    image_size: int = 32
    width: int = 32
    stochastic_space: str = "none"
    projector_dims: list[int] = field(default_factory=list)
    prior: str = "standard"
    prior_components: int = 10
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    out_bottleneck: int | None = None

    def __post_init__(self) -> None:
        if self.stochastic_space not in STOCHASTIC_SPACES:
            raise UserError(
                f"encoder.stochastic_space must be one of {STOCHASTIC_SPACES}, got {self.stochastic_space!r}"
            )
        if self.prior not in PRIORS:
            raise UserError(f"encoder.prior must be one of {PRIORS}, got {self.prior!r}")
        if self.stochastic_space == "z" and not self.projector_dims:
            raise UserError("encoder.projector_dims is required for the Bayes-Z stochastic space")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["out_bottleneck"] is None:  # an option added later: absent unless set (existing configs unchanged)
            del out["out_bottleneck"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown encoder keys {sorted(unknown)}; valid: {sorted(known)}")
        out = {**data, "projector_dims": list(data.get("projector_dims") or [])}
        for key in ("mean", "std"):
            if key in data:
                out[key] = [float(x) for x in data[key]]
        return cls(**out)


class EncoderOutput(NamedTuple):
    embedding: torch.Tensor
    mu: torch.Tensor | None
    logvar: torch.Tensor | None


class Encoder(nn.Module):
    """Normalisation + backbone + optional stochastic head. `forward(x) -> EncoderOutput`.

    `x` is a float image batch (B, 3, H, W) in [0, 1]; the encoder normalises it with the spec's mean and std.

    Attributes:
        backbone: maps images to h, (B, feature_dim); `backbone.last_block` is the Grad-CAM layer.
        projector: Bayes-Z only, h -> z (an `MLP`); else None.
        gaussian: the `GaussianHead` of the stochastic space, or None.
        prior: the prior over the stochastic space (`log_prob(z)`), or None.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.mean_: torch.Tensor
        self.std_: torch.Tensor
        self.register_buffer("mean_", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std_", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.backbone, self.feature_dim = build_backbone(
            spec.backbone,
            stem=spec.stem,
            out_dim=spec.out_dim,
            image_size=spec.image_size,
            width=spec.width,
            out_bottleneck=spec.out_bottleneck,
        )
        self.projector: MLP | None = None
        self.gaussian: GaussianHead | None = None
        self.prior: StandardNormalPrior | MixturePrior | None = None
        if spec.stochastic_space == "h":
            self.gaussian = GaussianHead(self.feature_dim)
        elif spec.stochastic_space == "z":
            self.projector = MLP([self.feature_dim, *spec.projector_dims])
            self.gaussian = GaussianHead(self.projector.out_dim)
        if self.gaussian is not None:
            self.prior = build_prior(spec.prior, self.gaussian.dim, spec.prior_components)

    @property
    def embedding_dim(self) -> int:
        return self.feature_dim

    @property
    def stochastic_dim(self) -> int | None:
        return None if self.gaussian is None else self.gaussian.dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features h of [0, 1] images (normalised here)."""
        return self.backbone((x - self.mean_) / self.std_)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        h = self.features(x)
        if self.gaussian is None:
            return EncoderOutput(h, None, None)
        if self.projector is None:  # Bayes-H: the stochastic space is h itself
            mu, logvar = self.gaussian(h)
            return EncoderOutput(mu, mu, logvar)
        mu, logvar = self.gaussian(self.projector(h))
        return EncoderOutput(h, mu, logvar)


ENCODER_FILE = "encoder.pt"
CONFIG_FILE = "config.yaml"


def save_encoder(encoder: Encoder, model_dir: str | os.PathLike[str], config: dict[str, Any]) -> None:
    """Write `encoder.pt` (plain state_dict) and `config.yaml` (resolved config + `encoder:` spec) atomically."""
    import yaml

    from sslbench.io import atomic_path

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    full = dict(config)
    full["encoder"] = encoder.spec.to_dict()
    with atomic_path(model_dir / ENCODER_FILE) as tmp:
        torch.save({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, tmp)
    with atomic_path(model_dir / CONFIG_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(full, sort_keys=False))


def load_config(model_dir: str | os.PathLike[str], method: str | None = None) -> dict[str, Any]:
    import yaml

    model_dir = Path(model_dir)
    rebuild = f"dvc repro pretrain@{method or model_dir.name}"
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; run `{rebuild}` to train the model")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); run `{rebuild}`") from err
    if not isinstance(config, dict) or "encoder" not in config:
        raise UserError(f"{path} has no `encoder:` section; run `{rebuild}`")
    return config


def load_encoder(model_dir: str | os.PathLike[str], method: str | None = None) -> tuple[Encoder, dict[str, Any]]:
    """Rebuild the encoder from `config.yaml` and load `encoder.pt` (`weights_only=True`, `strict=True`).

    Returns the encoder in eval mode and the config. Raises `UserError` naming the file and the rebuild command on
    a missing, corrupt or mismatched (e.g. other backbone) file.
    """
    model_dir = Path(model_dir)
    rebuild = f"dvc repro pretrain@{method or model_dir.name}"
    config = load_config(model_dir, method)
    encoder = Encoder(EncoderSpec.from_dict(config["encoder"]))
    path = model_dir / ENCODER_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; run `{rebuild}` to train the model")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError... on a bad file
        # torch's own message suggests weights_only=False; we never unpickle, so we show only the error type
        raise UserError(
            f"{path} is unreadable as plain weights ({type(err).__name__}); it is corrupt or not an sslbench "
            f"encoder: run `{rebuild}`"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state_dict of tensors; it is not an sslbench encoder: run `{rebuild}`")
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(
            f"{path} does not match the encoder described by {model_dir / CONFIG_FILE} "
            f"(backbone {encoder.spec.backbone!r}, width {encoder.spec.width}, stochastic space "
            f"{encoder.spec.stochastic_space!r}): {_state_mismatch(encoder.state_dict(), state)}; it was written "
            f"for another model: run `{rebuild}`"
        ) from err
    return encoder.eval(), config


def _state_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """A short account of how two state_dicts differ (missing and unexpected keys, first shape mismatches)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)} expected" for k, v in expected.items()
              if k in got and got[k].shape != v.shape]
    parts = [f"{len(items)} {what} (e.g. {', '.join(items[:2])})"
             for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", shapes)) if items]
    return "; ".join(parts) or "the weights do not load"
