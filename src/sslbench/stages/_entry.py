"""The shared shape of every stage entry point.

`stage_main(run, config_name)` builds a Hydra `main` that calls `run(cfg)` and turns a `UserError` into one
clear line on stderr and exit status 1 (no traceback: the message names the thing and the fix). Hydra itself
rejects unknown keys and unknown config-group choices before `run` starts, listing the valid ones.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from sslbench.errors import UserError

log = logging.getLogger("sslbench")


def stage_main(run: Callable[[DictConfig], Any], config_name: str) -> Callable[[], None]:
    import hydra

    @hydra.main(config_path="../conf", config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    def main() -> None:
        _main()

    return main
