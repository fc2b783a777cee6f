"""Import a published checkpoint as an sslbench `Encoder`, and export an sslbench encoder in a published layout.

    weights = read_weights("dino_resnet50_pretrain.pth", "dino")     # safe load + the format's converter
    encoder = build_encoder(weights)                                 # spec detected from the weights
    encoder = import_encoder(path, "dino", spec)                     # the two at once, with a given spec

Every error is one line naming the file and the fix (`UserError`); nothing is written on import.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sslbench.checkpoints.formats import FORMATS, Format, LayoutError
from sslbench.checkpoints.layout import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Arch,
    detect,
    fill_num_batches_tracked,
    mismatch,
    table,
    to_canonical,
    to_encoder,
)
from sslbench.checkpoints.safe_load import load_checkpoint
from sslbench.errors import UserError, unknown_choice
from sslbench.models.encoder import Encoder, EncoderSpec

Tensor = torch.Tensor


@dataclass(frozen=True)
class Weights:
    """A checkpoint's backbone, read and converted to the canonical layout (torchvision ResNet / timm ViT names).

    Attributes:
        path, format, branch: what was read (`branch`: the network taken from a multi-network file).
        state: canonical name -> tensor.
        arch: what the weights hold (None when not recognised; `build_encoder` then needs a spec and reports the
            key mismatch).
        dropped: components left out, with their tensor counts.
        source: where in the file the backbone was found.
        sha256: of the file.
        arch_problem: why `arch` is None (what the weights hold instead), for the error messages.
    """

    path: Path
    format: str
    branch: str
    state: dict[str, Tensor]
    arch: Arch | None
    dropped: dict[str, int] = field(default_factory=dict)
    source: str = ""
    sha256: str = ""
    arch_problem: str = ""

    @property
    def label(self) -> str:
        fmt = FORMATS[self.format]
        branch = f", {self.branch}" if len(fmt.branches) > 1 else ""
        return f"checkpoint {self.path} (format {self.format}{branch})"

    def spec(self, *, image_size: int | None = None, mean: list[float] | None = None,
             std: list[float] | None = None) -> EncoderSpec:
        """The `EncoderSpec` these weights fit: the detected backbone, the stem the format gives a 3x3 conv1
        (`Format.cifar_stem`), ImageNet mean/std unless given, and `image_size` (a ViT's is fixed by its position
        embedding; a ResNet's defaults to 224 with a 7x7 stem and 32 with a 3x3 one)."""
        if self.arch is None:
            raise UserError(f"{self.label}: {self.arch_problem}; it cannot be imported into an sslbench backbone")
        arch = self.arch
        if arch.backbone == "vit_small":
            if image_size is not None and image_size != arch.image_size:
                raise UserError(f"{self.label} holds {arch.describe()}; image_size={image_size} would need another "
                                f"position embedding: use image_size={arch.image_size}")
            size = int(arch.image_size or 224)
            stem = "cifar"
        else:
            stem = "imagenet" if arch.conv1_kernel == 7 else FORMATS[self.format].cifar_stem
            size = image_size or (224 if arch.conv1_kernel == 7 else 32)
        return EncoderSpec(backbone=arch.backbone, stem=stem, out_dim=arch.out_dim,
                           out_bottleneck=arch.out_bottleneck, image_size=size,
                           mean=list(mean or IMAGENET_MEAN), std=list(std or IMAGENET_STD))


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise unknown_choice("checkpoint format", name, FORMATS)
    return FORMATS[name]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file (hex), for provenance; `UserError` when it is missing."""
    from sslbench.io import sha256_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path, or download the file first")
    return sha256_file(path)


def read_weights(path: str | os.PathLike[str], format: str, *, branch: str | None = None) -> Weights:
    """Load `path` safely (`safe_load.load_checkpoint`) and convert it with the converter of `format`.

    Args:
        path: the checkpoint file.
        format: a key of `FORMATS`.
        branch: the network to take from a file holding several (`dino`: `teacher`, the default, or `student`);
            None = the format's default.
    """
    fmt = get_format(format)
    branch = branch or fmt.branches[0]
    if branch not in fmt.branches:
        raise UserError(f"format {format!r} has no branch {branch!r}; valid branches: {', '.join(fmt.branches)}")
    path = Path(path)
    obj = load_checkpoint(path)
    label = f"checkpoint {path} (format {format})"
    try:
        extracted = fmt.convert(obj, branch)
    except LayoutError as err:
        raise UserError(f"{label}: {err}; check the file and the format (valid formats: "
                        f"{', '.join(sorted(FORMATS))})") from err
    arch, problem = None, ""
    try:
        arch = detect(extracted.state)
    except LayoutError as err:
        problem = str(err)
    return Weights(path=path, format=format, branch=branch, state=extracted.state, arch=arch,
                   dropped=extracted.dropped, source=extracted.source, sha256=file_sha256(path),
                   arch_problem=problem)


def build_encoder(weights: Weights, spec: EncoderSpec | None = None) -> Encoder:
    """An `Encoder` (eval mode) holding `weights`, loaded with `strict=True` after a key-by-key check.

    `spec=None` uses `weights.spec()` (ImageNet mean/std). A given spec must describe the same network; its mean
    and std are the encoder's input normalisation (published ImageNet models: `IMAGENET_MEAN`/`IMAGENET_STD`).
    The encoder takes over the float32 tensors of `weights.state` without copying them.
    """
    if spec is None:
        spec = weights.spec()
    label = weights.label
    if spec.stochastic_space != "none":
        raise UserError(f"{label}: published checkpoints hold a deterministic backbone; use a spec with "
                        f"stochastic_space='none' (got {spec.stochastic_space!r})")
    arch = weights.arch
    fmt = FORMATS[weights.format]
    if (arch is not None and arch.conv1_kernel == 3 and fmt.cifar_stem != "cifar"
            and spec.stem != fmt.cifar_stem):
        raise UserError(f"{label}: {fmt.publisher}'s 3x3 stem is sslbench's stem={fmt.cifar_stem!r} (its padding "
                        f"and max-pool); set stem={fmt.cifar_stem!r} (got {spec.stem!r})")
    widened = spec.out_dim is not None
    try:
        table(spec.backbone, widened)
    except LayoutError as err:
        raise UserError(f"{label}: {err}; choose one of those backbones") from err
    encoder, on_meta = _unmaterialised_encoder(spec)
    expected = to_canonical(encoder.state_dict(), spec.backbone, widened)  # in the names the file uses
    got = dict(weights.state)
    fill_num_batches_tracked(expected, got)
    problem = mismatch(expected, got)
    if problem:
        held = arch.describe() if arch is not None else weights.arch_problem
        raise UserError(
            f"{label} does not fit the encoder (backbone={spec.backbone}, stem={spec.stem}, out_dim={spec.out_dim}, "
            f"out_bottleneck={spec.out_bottleneck}, image_size={spec.image_size}): {problem}; the file holds {held}: "
            "pass a spec that matches it (or spec=None to detect it), or the right file/format"
        )
    # the encoder's dtypes (e.g. float32 for a half-precision release), contiguous, then taken over without a copy
    got = {k: v.to(dtype=expected[k].dtype).contiguous() for k, v in got.items()}
    encoder.load_state_dict(to_encoder(got, spec.backbone, widened), strict=True, assign=on_meta)
    if on_meta:
        encoder.mean_ = torch.tensor(spec.mean).view(1, 3, 1, 1)
        encoder.std_ = torch.tensor(spec.std).view(1, 3, 1, 1)
        left = [n for n, t in [*encoder.named_parameters(), *encoder.named_buffers()] if t.is_meta]
        if left:  # pragma: no cover - every tensor of the state_dict was checked above
            raise RuntimeError(f"tensors left unloaded: {left[:3]}")
    return encoder.eval()


def _unmaterialised_encoder(spec: EncoderSpec) -> tuple[Encoder, bool]:
    """`Encoder(spec)` on the meta device, and True: its weights are all about to be replaced by the file's, so
    neither their random initialisation nor their memory is needed (the loaded tensors are assigned, not copied).
    Only the non-persistent input normalisation (`mean_`, `std_`) is then set from the spec; an encoder with any
    other non-persistent buffer is built the ordinary way instead (and False)."""
    with torch.device("meta"):
        encoder = Encoder(spec)
    kept = set(encoder.state_dict())
    if {name for name, _ in encoder.named_buffers() if name not in kept} != {"mean_", "std_"}:
        return Encoder(spec), False
    return encoder, True


def import_encoder(path: str | os.PathLike[str], format: str, spec: EncoderSpec | None = None, *,
                   branch: str | None = None) -> Encoder:
    """Read a published checkpoint and return the sslbench `Encoder` (eval mode) that embeds like the original.

    Args:
        path: the checkpoint file.
        format: one of `FORMATS` (`torchvision`, `timm`, `dissl`, `dino`, `barlow_twins`, `vicreg`, `swav`, `moco`,
            `mmselfsup`, `solo_learn`, `lightly`, `vissl`).
        spec: the encoder to build; None = detected from the weights with ImageNet mean/std (`Weights.spec`).
        branch: the network of a multi-network file (`dino`: `teacher` by default, or `student`).

    Raises:
        UserError: one line naming the file and the fix: unknown format, missing/truncated/corrupt file, a pickled
            type outside the allow-list, a container the format does not know, or weights of another network.
    """
    return build_encoder(read_weights(path, format, branch=branch), spec)


@dataclass(frozen=True)
class Exported:
    """What `export_encoder` wrote: the file, its layout (`torchvision` or `timm`, the format to import it with),
    the spec that rebuilds it in sslbench, and its sha256."""

    path: Path
    format: str
    spec: EncoderSpec
    sha256: str


def export_encoder(encoder_pt: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Exported:
    """Write the backbone of an sslbench encoder (`models/<method>/encoder.pt`, with its `config.yaml` beside it) in
    torchvision's ResNet layout (no `fc`; DISSL's widening under `avgpool.0.`) or timm's ViT layout (no `head`).

    Bayes-Z encoders export their backbone (their embedding); Bayes-H encoders are refused, since their embedding is
    the Gaussian head's mean, which neither layout holds. The file is written atomically; on an error nothing is.
    Importing it with the returned `format` and `spec` gives identical embeddings.
    """
    from sslbench.io import atomic_path
    from sslbench.models.encoder import ENCODER_FILE, load_encoder

    encoder_pt = Path(encoder_pt)
    model_dir = encoder_pt if encoder_pt.is_dir() else encoder_pt.parent
    if not encoder_pt.is_dir() and encoder_pt.name != ENCODER_FILE:
        raise UserError(f"{encoder_pt} is not an sslbench {ENCODER_FILE}; pass models/<method>/{ENCODER_FILE}")
    encoder, _ = load_encoder(model_dir)
    spec = encoder.spec
    label = f"{model_dir / ENCODER_FILE}"
    if spec.stochastic_space == "h":
        raise UserError(f"{label} is a Bayes-H encoder: its embedding is the Gaussian head's mean, which a "
                        "torchvision/timm backbone file cannot hold; export a deterministic or Bayes-Z encoder")
    widened = spec.out_dim is not None
    try:
        table(spec.backbone, widened)
    except LayoutError as err:
        raise UserError(f"{label}: {err}; export needs one of those backbones") from err
    backbone = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items() if k.startswith("backbone.")}
    state = to_canonical(backbone, spec.backbone, widened)
    with atomic_path(out_path) as tmp:
        torch.save(state, tmp)
    plain = dataclasses.replace(spec, stochastic_space="none", projector_dims=[], prior="standard",
                                prior_components=10)
    out = Path(out_path)
    return Exported(path=out, format="timm" if spec.backbone == "vit_small" else "torchvision", spec=plain,
                    sha256=file_sha256(out))
