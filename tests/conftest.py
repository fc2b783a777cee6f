"""Shared fixtures. Everything is generated here; no test touches the network or needs a GPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose() -> Iterator[Callable[..., object]]:
    """Compose a stage config the way `python -m sslbench.stages.<name> overrides...` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):

        def _compose(config_name: str, overrides: list[str] | None = None) -> object:
            return hydra_compose(config_name=config_name, overrides=overrides or [])

        yield _compose
    GlobalHydra.instance().clear()


TINY_SHAPES = [
    "prepare.shapes.n_train=200",
    "prepare.shapes.n_val=60",
    "prepare.shapes.n_test=80",
    "prepare.shapes.n_ood=40",
    "prepare.sample_grid=false",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedded study's `data/` folder (shapes, shapes_heldout, noise_textures, digits), built once."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from sslbench.stages import prepare

    root = tmp_path_factory.mktemp("study")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = hydra_compose(
            "prepare", overrides=[f"paths.data={root / 'data'}", f"paths.reports={root / 'reports'}", *TINY_SHAPES]
        )
    GlobalHydra.instance().clear()
    prepare.run(cfg)
    return root / "data"
