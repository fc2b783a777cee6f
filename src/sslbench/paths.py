"""The method a stage works on, as the name of its folders (`models/<method>/`, `data/embeddings/<method>/`,
`reports/<area>/<method>.json`): the one check of that name that every per-method stage runs."""

from __future__ import annotations

import re

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
