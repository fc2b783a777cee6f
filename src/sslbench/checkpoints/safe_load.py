"""Read a published checkpoint without executing anything it pickles.

Every file goes through `torch.load(weights_only=True)`: PyTorch's restricted unpickler rebuilds tensors and plain
containers only, and refuses any other class or function the pickle names. Some published files also pickle a few
harmless non-tensor objects beside the weights; `ALLOWED_GLOBALS` admits exactly those, by name:

- real types, whose constructors only store data: `argparse.Namespace` (the `args` of DINO's full checkpoints),
  numpy scalars, dtypes and arrays (schedulers' learning rates in Lightning checkpoints, mmengine's histories),
  `pathlib` paths, `collections.defaultdict` and `typing.Any` with the builtin types omegaconf records as metadata;
- stand-ins (`_StandIn`) registered under the qualified name of a class whose package need not be installed and is
  never imported: mmengine's `HistoryBuffer` (the `message_hub` of OpenMMLab checkpoints) and omegaconf's containers
  and nodes (Lightning's `hyper_parameters` of Hydra projects). A stand-in only keeps the state it is given.

Anything else (a custom class, a function, `os.system`...) stops the load with a one-line `UserError` naming the
file, the refused name and how to extract the weights in a trusted environment; nothing in the file has run by then.
`.safetensors` files (timm's hub weights) are read with the `safetensors` library, which never unpickles.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import pickle
import re
import typing
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslbench.errors import UserError

EXTRACT_HINT = (
    "if you trust the file, load it once in a trusted environment (torch.load with weights_only=False) and save "
    "only its weights with torch.save (e.g. its ['state_dict'] or the backbone's state_dict), then import that file"
)


class _StandIn:
    """Takes the place of a harmless class that is not imported: keeps the arguments and state it is built with."""

    qualified_name = ""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name}>"


def _stand_in(qualified_name: str) -> tuple[type, str]:
    name = qualified_name.rsplit(".", 1)[1]
    cls = type(name, (_StandIn,), {"qualified_name": qualified_name, "__module__": __name__})
    return cls, qualified_name


# classes recorded by name only; their packages are never imported
STAND_INS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
)


def _numpy_globals() -> list[Any]:
    """numpy's pickling helpers under the names numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) write."""
    core = np._core if hasattr(np, "_core") else np.core
    out: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(core.multiarray.scalar, f"{module}.scalar"), (core.multiarray._reconstruct, f"{module}._reconstruct")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: the dtype classes, e.g. numpy.dtypes.Float64DType
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    return out


def _allowed_globals() -> list[Any]:
    plain: list[Any] = [argparse.Namespace, collections.defaultdict, typing.Any, pathlib.PosixPath,
                        pathlib.PurePosixPath, (pathlib.PosixPath, "pathlib._local.PosixPath"),
                        (pathlib.PurePosixPath, "pathlib._local.PurePosixPath")]
    plain += [(t, f"builtins.{t.__name__}") for t in (dict, list, tuple, int, float, str, bool)]
    return plain + _numpy_globals() + [_stand_in(name) for name in STAND_INS]


ALLOWED_GLOBALS: list[Any] = _allowed_globals()


def allowed_names() -> list[str]:
    """The qualified names the loader admits besides tensors and plain containers (for docs and errors)."""
    names = []
    for entry in ALLOWED_GLOBALS:
        if isinstance(entry, tuple):
            names.append(entry[1])
        else:
            names.append(f"{entry.__module__}.{entry.__qualname__}")
    return sorted(set(names))


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The object a checkpoint file holds, loaded on the CPU without executing anything it pickles.

    Raises:
        UserError: (one line, naming the file and the fix) the file is missing, a folder, empty, truncated or
            corrupt, not a PyTorch/safetensors file, or it pickles a type outside `ALLOWED_GLOBALS`.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; check the path, or download the file first")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder; give the path of the checkpoint file inside it")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise UserError(f"checkpoint {path} cannot be read ({err.strerror}); check its permissions") from err
    if not head:
        raise UserError(f"checkpoint {path} is empty; download it again")
    if _looks_like_safetensors(head):
        return _load_safetensors(path)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO)):
        raise UserError(
            f"{path} is not a PyTorch checkpoint (it starts with {head[:8]!r}, neither a torch.save zip archive nor a "
            "pickle); pass the .pth/.pt/.ckpt/.tar/.safetensors file the publisher released"
        )
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise _corrupt(path, err) from err
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            raise UserError(
                f"{path} is a zip archive but not a torch.save file (no data.pkl inside); pass the .pth/.ckpt file "
                "itself rather than an archive that contains it"
            )
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused(path, err) from err
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError,
            TypeError, IndexError) as err:
        raise _corrupt(path, err) from err


def _refused(path: Path, err: pickle.UnpicklingError) -> UserError:
    text = str(err)
    found = re.search(r"GLOBAL (\S+)", text) or re.search(r"unrecognized function (\S+)", text)
    if found is None and re.search(r"truncated|Unsupported operand|load key|underflow|EOF", text):
        return _corrupt(path, err)
    if found is not None:
        what = f"`{found.group(1).rstrip('.,')}`"
    else:
        what = f"an object the safe loader cannot rebuild ({_first_line(err)})"
    return UserError(
        f"checkpoint {path} pickles {what}, which is not on sslbench's allow-list of harmless types: it was "
        f"refused and nothing in it ran; {EXTRACT_HINT}"
    )


def _corrupt(path: Path, err: BaseException) -> UserError:
    # torch's messages suggest weights_only=False, which we never use: show only the first line of the cause
    return UserError(
        f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {_first_line(err)}); download it again "
        "and compare its sha256 with the publisher's"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 28)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as err:  # pragma: no cover - safetensors comes with timm
        raise UserError(f"{path} is a safetensors file and the `safetensors` package is missing; pip install "
                        "safetensors") from err
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as err:  # safetensors raises its own SafetensorError on a bad header or short file
        raise UserError(
            f"checkpoint {path} is a truncated or corrupt safetensors file ({_first_line(err)}); download it again"
        ) from err
