"""Export an sslbench encoder for use elsewhere: `python -m sslbench.checkpoints export models/simclr out.pth`.

Writes the backbone in torchvision's (ResNet) or timm's (ViT) layout and prints the format to import it with, its
spec and its sha256 (`sslbench.checkpoints.export_encoder`). Errors are one line on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from sslbench.checkpoints.api import export_encoder
from sslbench.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslbench.checkpoints", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="an encoder (models/<method>/ or its encoder.pt) -> torchvision / timm")
    export.add_argument("encoder", help="models/<method> or models/<method>/encoder.pt")
    export.add_argument("out", help="the file to write (e.g. simclr_resnet18.pth)")
    args = parser.parse_args(argv)
    try:
        out = export_encoder(args.encoder, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{out.path}: format {out.format}, backbone {out.spec.backbone} ({out.spec.stem} stem), sha256 {out.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
