"""The method's LightningModule from a composed pretrain config, with each part merged explicitly (later wins):

- encoder spec = `backbone` group (name, stem, out_dim, width) + dataset (image_size, mean, std) + `method.encoder`;
- optimizer    = `optim` group + `method.optim`, then `lr *= pretrain.lr_scale`;
- views        = `method.views` + the non-null knobs of `pretrain.views` (study-level `min_scale`, `blur_prob`...).
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sslbench.errors import UserError
from sslbench.methods.base import OptimConfig, SSLMethod
from sslbench.models.encoder import EncoderSpec


def encoder_spec(cfg: DictConfig) -> EncoderSpec:
    """backbone group + dataset (image_size, mean, std) + method.encoder overrides."""
    base = {"backbone": cfg.backbone.name, "stem": cfg.backbone.stem, "out_dim": cfg.backbone.out_dim,
            "width": int(cfg.backbone.width),
            "image_size": int(cfg.dataset.image_size), "mean": list(cfg.dataset.mean), "std": list(cfg.dataset.std)}
    overrides = OmegaConf.to_container(cfg.method.encoder, resolve=True) or {}
    assert isinstance(overrides, dict)
    return EncoderSpec.from_dict({**base, **{str(k): v for k, v in overrides.items()}})


def optim_config(cfg: DictConfig) -> OptimConfig:
    """optim group + method.optim overrides; lr scaled by pretrain.lr_scale."""
    # plain dicts: `method.optim` may add a key that the `optim` group's file lacks (`trust_coefficient` for LARS
    # on top of sgd.yaml), which a merge into the composed (struct) config would refuse
    base, own = (OmegaConf.to_container(c, resolve=True) for c in (cfg.optim, cfg.method.optim))
    assert isinstance(base, dict) and isinstance(own, dict)
    merged = {**base, **own}
    unknown = set(merged) - set(OptimConfig.__dataclass_fields__)
    if unknown:
        raise UserError(f"unknown optim keys {sorted(unknown)} (optim group or method.optim); "
                        f"valid: {sorted(OptimConfig.__dataclass_fields__)}")
    merged["lr"] = float(merged["lr"]) * float(cfg.pretrain.lr_scale)
    return OptimConfig(**merged)


def views_config(cfg: DictConfig) -> DictConfig:
    """method.views + the non-null study-level knobs of pretrain.views."""
    knobs = OmegaConf.to_container(cfg.pretrain.views, resolve=True)
    views = OmegaConf.to_container(cfg.method.views, resolve=True)
    assert isinstance(knobs, dict) and isinstance(views, dict)
    # a new config (not the composed one, which stays in struct mode): the knobs may be new keys for this builder
    return OmegaConf.create({**views, **{k: v for k, v in knobs.items() if v is not None}})


def build_method(cfg: DictConfig) -> SSLMethod:
    """The method's LightningModule as the pretrain stage builds it (the benchmarks build it here too). Draws the
    initial weights from torch's generator: seed it first."""
    views = instantiate(views_config(cfg), _convert_="all")
    # objects are passed to the partial, not to instantiate (which would turn the dataclasses into dicts)
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module: SSLMethod = build(encoder=encoder_spec(cfg), views=views, num_classes=int(cfg.dataset.num_classes),
                              optim=optim_config(cfg), batch_size=int(cfg.pretrain.batch_size))
    return module
