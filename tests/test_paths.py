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
