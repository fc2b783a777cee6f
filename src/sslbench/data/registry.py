"""All dataset names `prepare` knows: embedded (generated or package-shipped) and real; and the check, before
anything is written, that every real dataset of a study is on disk or can be downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sslbench.data import download
from sslbench.data.embedded import EMBEDDED, ShapesConfig
from sslbench.data.real import REAL_DATASETS, SPECS, RealContext
from sslbench.data.real_common import locate, offline_error
from sslbench.errors import UserError, unknown_choice


def dataset_names() -> list[str]:
    return sorted({*EMBEDDED, *REAL_DATASETS})


def check_names(names: list[str]) -> None:
    """Raise `UserError` listing the valid names if any of `names` is unknown (before any work)."""
    for name in names:
        if name not in EMBEDDED and name not in REAL_DATASETS:
            raise unknown_choice("dataset", name, dataset_names())


def _absent(name: str, raw_root: Path) -> str | None:
    """Why the real dataset `name` is not on disk under `raw_root/<name>/` (None when it is)."""
    folder = raw_root / name
    if folder.is_dir() and SPECS[name].find_root(folder) is not None:
        return None
    return f"no copy in {folder}" if not folder.exists() else f"{folder} does not hold the expected layout"


def check_available(names: Sequence[str], ctx: RealContext) -> None:
    """Raise one `UserError` for every real dataset of `names` that is neither under `ctx.raw_root/<name>/` nor
    downloadable (`ctx.download` and its published files known, `download.RESOURCES`). Reads only folder listings:
    no network, nothing written. Embedded datasets are always available."""
    problems: dict[str, UserError] = {}
    for name in dict.fromkeys(names):
        if name not in SPECS or (what := _absent(name, ctx.raw_root)) is None:
            continue
        spec = SPECS[name]
        if not ctx.download:
            problems[name] = offline_error(spec, ctx, f"{what} and downloading is off (prepare.download=false)")
        elif spec.manual or not download.RESOURCES.get(name):
            problems[name] = offline_error(spec, ctx, f"{what}, and it cannot be downloaded automatically")
    if len(problems) == 1:
        raise next(iter(problems.values()))
    if problems:
        raise UserError(f"{len(problems)} datasets of the study are not available ({', '.join(problems)}); nothing "
                        "was written. For each:\n\n" + "\n\n".join(str(p) for p in problems.values()))


def fetch_missing(names: Sequence[str], ctx: RealContext) -> None:
    """Download (checksummed, `download.download_all`) every real dataset of `names` that is not on disk yet, all
    of them before any dataset is written; `check_available` first."""
    for name in names:
        if name in SPECS and _absent(name, ctx.raw_root) is not None:
            locate(SPECS[name], ctx)


def prepare_dataset(name: str, data_root: Path, raw_root: Path, *, seed: int, image_size: int, download: bool,
                    shapes: ShapesConfig) -> None:
    """Materialise one dataset under `data_root/datasets/<name>/`."""
    check_names([name])
    if name in EMBEDDED:
        EMBEDDED[name](data_root, seed, image_size, shapes)
    else:
        REAL_DATASETS[name](RealContext(data_root, raw_root, download, image_size, seed))
