"""A study method that is a published encoder: `methods: <name>: {method: published, weights: {...}}` in params.yaml.

The `pretrain@<name>` stage of such an entry trains nothing: it reads the weights file (`read_weights`, safe
loading, the format's key mapping), checks it against the sha256 the entry pins, and builds the encoder
(`build_encoder`, strict), which the stage then writes as `models/<name>/encoder.pt` like any trained encoder.

The sha256 pin is how DVC tracks the file: `dvc.yaml`'s `pretrain` stages are one `foreach` over `methods:`, whose
dependencies cannot name a file that only some entries have, but each stage does depend on its own
`methods.<name>` entry, so a new pin reruns exactly that method's chain, and a file that changed under a pin
stops the stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sslbench.checkpoints.api import build_encoder, read_weights
from sslbench.errors import UserError
from sslbench.models.encoder import Encoder


def import_published(name: str, weights: Mapping[str, Any],
                     encoder: Mapping[str, Any]) -> tuple[Encoder, dict[str, Any]]:
    """The encoder of the entry `name` and its provenance (path, format, branch, sha256, what was dropped).

    Args:
        name: the entry's name (for messages).
        weights: `path`, `format`, `sha256` (the pin), `branch` (null: the format's default).
        encoder: `EncoderSpec` values that the file cannot tell: `image_size`, `mean`, `std` (the input
            normalisation the model was trained with; null: ImageNet's).
    """
    key = f"methods.{name}.weights"
    missing = [k for k in ("path", "format") if not weights.get(k)]
    if missing:
        raise UserError(f"{key} needs {' and '.join(missing)} (the weights file and its format; docs/checkpoints.md)")
    read = read_weights(Path(str(weights["path"])), str(weights["format"]), branch=weights.get("branch") or None)
    pin = weights.get("sha256")
    if not pin:
        raise UserError(f"{key}.sha256 is not set: pin the file in params.yaml with `sha256: {read.sha256}` "
                        f"(DVC reruns the method when the pin changes)")
    if str(pin).lower() != read.sha256:
        raise UserError(f"{read.path} has sha256 {read.sha256}, but {key}.sha256 pins {pin}: the file changed; "
                        "restore it, or pin the new file")
    spec = read.spec(image_size=encoder.get("image_size"), mean=_floats(encoder.get("mean")),
                     std=_floats(encoder.get("std")))
    provenance = {"path": str(read.path), "format": read.format, "branch": read.branch, "sha256": read.sha256,
                  "source": read.source, "dropped": dict(read.dropped)}
    return build_encoder(read, spec), provenance


def _floats(value: Any) -> list[float] | None:
    return None if value is None else [float(v) for v in value]
