"""The checks of `last.ckpt` before a run resumes from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sslbench.errors import UserError

CKPT = "last.ckpt"


def resume_state(path: Path, config: dict[str, Any], method: str) -> dict[str, Any] | None:
    """The step to resume at from `path` (None when absent), after checking it was written under `config`.

    The checkpoint is read with `weights_only=True`: Lightning's checkpoint of the pretrain stage holds only tensors
    and plain containers, so nothing is unpickled (a file planted or swapped under models/ cannot run code here).
    """
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say so rather than crash in Lightning
        # torch's message suggests weights_only=False; we never unpickle, so we show only the error type
        raise UserError(f"{path} is unreadable as a plain checkpoint ({type(err).__name__}): it is truncated or "
                        f"not written by this stage; delete it to start pretrain@{method} over") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("global_step"), int):
        raise UserError(f"{path} is not a checkpoint of this stage; delete it to start pretrain@{method} over")
    saved = ckpt.get("sslbench_config", {})
    differ = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if differ:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {config.get(k)!r})" for k in differ[:8])
        raise UserError(f"{path} was written under another config; differing keys: {shown}"
                        f"{' ...' if len(differ) > 8 else ''}. Delete it to start `pretrain@{method}` over, "
                        "or restore those values to resume.")
    return {"global_step": int(ckpt["global_step"])}
