"""The ood area's helpers (the area itself runs in tests/stages/test_ood.py, through its stage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslbench.areas import ood
from tests.stages.test_ood import write_study


def test_shared_classes_warn(tmp_path: Path) -> None:
    write_study(tmp_path, "simclr", stochastic=False, digits_classes=["0", "Shape3", "7"])
    with pytest.warns(ood.OODClassOverlapWarning, match="digits/test shares classes .*: shape3"):
        ood.warn_shared_classes(tmp_path / "data", "shapes", "train", {"digits": "test", "shapes_heldout": "test"})
