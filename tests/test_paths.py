"""The method name every per-method stage checks before using it as a folder name."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sslbench.errors import UserError
from sslbench.paths import require_method


def _cfg(name: str) -> object:
    return OmegaConf.create({"method": {"name": name, "module": {}}})


def test_the_name_of_the_composed_method_config() -> None:
    assert require_method(_cfg("barlow_twins_bayes-h.2")) == "barlow_twins_bayes-h.2"  # type: ignore[arg-type]
    for missing in (OmegaConf.create({"method": "???"}), _cfg("???")):
        with pytest.raises(UserError, match="no method given: pass method=<method>"):
            require_method(missing)  # type: ignore[arg-type]
    for bad in ("", "..", "a/b", "../models", "a b"):
        with pytest.raises(UserError, match="is not a plain folder name"):
            require_method(_cfg(bad))  # type: ignore[arg-type]


def test_not_applicable_outputs_say_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A declared output that does not apply: a PNG with the reason in its text chunk, a table with a header only."""
    from PIL import Image

    from sslbench.paths import not_applicable, write_not_applicable_png

    png = tmp_path / "gradcam" / "simclr.png"
    png.parent.mkdir()
    write_not_applicable_png(png, "Grad-CAM off")
    assert not_applicable(png) == "Grad-CAM off"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[1] == 24
    drawn = tmp_path / "drawn.png"
    Image.new("RGB", (4, 4)).save(drawn)
    assert not_applicable(drawn) is None
    empty, full = tmp_path / "roc_near.csv", tmp_path / "roc_far.csv"
    empty.write_text("fpr,knn,msp\n")
    full.write_text("fpr,knn,msp\n0,0.1,0.2\n")
    assert not_applicable(empty) == "no rows" and not_applicable(full) is None
    assert not_applicable(tmp_path / "absent.csv") is None
