"""The shared shape of every stage entry point.

`stage_main(run, config_name)` builds a Hydra `main` that calls `run(cfg)` and turns a `UserError` into one
clear line on stderr and exit status 1 (no traceback: the message names the thing and the fix). Hydra itself
rejects unknown keys and unknown config-group choices before `run` starts, listing the valid ones.

Per-method settings from params.yaml (`methods.<name>: {module: {beta: 0.01}}`) reach a stage through DVC's
dictionary unpacking, which renders them as `--module.beta 0.01`; with `dict_prefix="method"`, `stage_main`
rewrites each such pair into the Hydra override `method.module.beta=0.01` before Hydra parses the command line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from sslbench.errors import UserError

log = logging.getLogger("sslbench")


FREE_SECTIONS = ("encoder", "optim")


def dvc_dict_to_overrides(argv: list[str], prefix: str) -> list[str]:
    """Rewrite DVC's `--a.b value` pairs (and bare `--flag` for true) into Hydra overrides `prefix.a.b=value`.

    dvc.yaml places the unpacked dictionary last on the command line, so a token after a bare `--flag` is never a
    plain override.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and len(token) > 2 and "=" not in token and not token.startswith("--hydra"):
            key = token[2:]
            # `encoder:` and `optim:` of a method config start empty ({}), so their keys are added (`++`); every
            # other key must already exist, so that a typo fails with Hydra's "not in struct" error
            force = "++" if key.split(".")[0] in FREE_SECTIONS else ""
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out.append(f"{force}{prefix}.{key}={argv[i + 1]}")
                i += 2
            else:
                out.append(f"{force}{prefix}.{key}=true")
                i += 1
            continue
        out.append(token)
        i += 1
    return out


def stage_main(
    run: Callable[[DictConfig], Any], config_name: str, dict_prefix: str | None = None
) -> Callable[[], None]:
    import hydra

    @hydra.main(config_path="../conf", config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    def main() -> None:
        if dict_prefix is not None:
            sys.argv[1:] = dvc_dict_to_overrides(sys.argv[1:], dict_prefix)
        _main()

    return main
