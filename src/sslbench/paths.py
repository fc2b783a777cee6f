"""The method a stage works on, as the name of its folders (`models/<method>/`, `data/embeddings/<method>/`,
`reports/<area>/<method>.json`): the one check of that name that every per-method stage runs; and the declared
outputs of a method that may not apply (`write_not_applicable_png`, `not_applicable`)."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sslbench.errors import UserError

METHOD_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def require_method(cfg: DictConfig) -> str:
    """The name of the method the stage works on (`method=<name>` composes the `method` config group, whose `name`
    names the folders); `UserError` when it is missing or not a plain folder name."""
    if OmegaConf.is_missing(cfg, "method") or OmegaConf.is_missing(cfg.method, "name"):
        raise UserError("no method given: pass method=<method> (the folder under models/ to use)")
    name = str(cfg.method.name)
    if not METHOD_NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(f"method={name!r} is not a plain folder name (letters, digits, '_', '-', '.')")
    return name


# ------------------------------------------------------------------------------------------------ optional outputs
# dvc.yaml declares every output of a `foreach` stage for every method, whatever the dataset and settings. An output
# that does not apply is still written, with content that says so, rather than left out (a declared output that is
# missing fails the stage): an ROC table of an empty OOD group is its header alone (no rows), and a Grad-CAM panel
# that is switched off is a small PNG saying why, whose text chunk `NOT_APPLICABLE` holds the reason
# (docs/pipeline.md, "Outputs that do not apply"). Readers skip both (`not_applicable`).

NOT_APPLICABLE = "sslbench:not-applicable"


def write_not_applicable_png(path: Path, reason: str) -> None:
    """Write (atomically) a small PNG that shows `reason` and records it in the text chunk `NOT_APPLICABLE`."""
    from PIL import Image, ImageDraw, PngImagePlugin

    from sslbench.io import atomic_path

    image = Image.new("RGB", (8 + 6 * len(reason), 24), "white")
    ImageDraw.Draw(image).text((4, 6), reason, fill="black")
    info = PngImagePlugin.PngInfo()
    info.add_text(NOT_APPLICABLE, reason)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        image.save(fh, format="PNG", pnginfo=info)


def not_applicable(path: Path) -> str | None:
    """The reason recorded in a not-applicable output (`write_not_applicable_png`; an ROC/CSV table with a header and
    no rows: "no rows"), or None for an output with content (or an unreadable one, left to its reader)."""
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                text = getattr(image, "text", {}) or {}
                return str(text[NOT_APPLICABLE]) if NOT_APPLICABLE in text else None
        if path.suffix in (".csv", ".tsv"):
            with path.open() as fh:
                lines = [line for line in fh.read().splitlines() if line.strip()]
            return "no rows" if len(lines) == 1 else None
    except (OSError, ValueError):
        return None
    return None
