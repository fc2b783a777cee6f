"""Published SSL checkpoints in, sslbench encoders out (docs/checkpoints.md).

- `import_encoder(path, format, spec=None, *, branch=None) -> Encoder`: a published checkpoint (torchvision, timm,
  DISSL, DINO, Barlow Twins, VICReg, SwAV, MoCo, OpenMMLab, solo-learn, lightly, VISSL) as an sslbench `Encoder`
  that embeds exactly like the original network; `read_weights` + `build_encoder` are its two halves.
- `export_encoder(encoder_pt, out_path) -> Exported`: an sslbench encoder's backbone in torchvision's (ResNet) or
  timm's (ViT) layout.
- `file_sha256(path)`: provenance of an imported file.
- `load_checkpoint(path)`: the safe loader underneath (`torch.load(weights_only=True)` with a named allow-list).

Pure library code: no Hydra config objects; every error is a one-line `UserError` naming the file and the fix.
"""

from sslbench.checkpoints.api import (
    Exported,
    Weights,
    build_encoder,
    export_encoder,
    file_sha256,
    import_encoder,
    read_weights,
)
from sslbench.checkpoints.formats import FORMATS, Format
from sslbench.checkpoints.layout import IMAGENET_MEAN, IMAGENET_STD
from sslbench.checkpoints.safe_load import allowed_names, load_checkpoint

__all__ = [
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Exported",
    "Format",
    "Weights",
    "allowed_names",
    "build_encoder",
    "export_encoder",
    "file_sha256",
    "import_encoder",
    "load_checkpoint",
    "read_weights",
]
