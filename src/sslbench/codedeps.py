"""The code each stage runs, found from its imports: the code dependencies of the DVC DAG.

A stage's code is
- the closure of the `sslbench` modules that its entry module imports: every `import` / `from ... import`
  statement of each file counts, the lazy ones inside functions included, with the `__init__.py` of every package
  on the way;
- the Hydra config files it composes: `conf/<config>.yaml` and every option of each config group in its defaults
  list (`paths`, `dataset`, `backbone`, `optim`, `area`), since params.yaml picks the option at run time; for
  `pretrain`, the one method config `conf/method/<method>.yaml` instead of the whole `method` group;
- the modules named by the `_target_`s of those config files (Hydra imports them by name, e.g.
  `sslbench.methods.simclr.SimCLR` and `sslbench.data.views.symmetric_views`), and their closures.

`fingerprint` maps each of these files (relative to the folder holding the package) to its sha256. The `codedeps`
stage writes one fingerprint per stage to `reports/codedeps/`, and each stage of dvc.yaml depends on its
fingerprint file instead of a hand-written list of sources (docs/decisions.md). Derived from the imports,
the list cannot miss a file; a hand-written one had (`errors.py`, `stages/_entry.py` and the stage configs were
declared nowhere). This is written by hand because no library we use does it: `modulefinder` executes nothing
but follows every third-party import too (seconds per stage) and cannot see Hydra's `_target_` strings.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sslbench.errors import UserError

PACKAGE = "sslbench"
SRC_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the package (src/)
# the stages whose code is one fingerprint each; `pretrain` has one per method config instead
SHARED_STAGES = ("prepare", "corrupt", "embed", "evaluate", "report")


def module_file(module: str, src_root: Path = SRC_ROOT) -> Path | None:
    """The file of an `sslbench` module (`a.b` -> `a/b.py` or `a/b/__init__.py`), or None."""
    base = src_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _owning_module(name: str, src_root: Path) -> str | None:
    """The longest prefix of a dotted name that is a module (`sslbench.methods.simclr.SimCLR` -> `...simclr`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        if module_file(module, src_root) is not None:
            return module
    return None


def imported_names(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every dotted name that `source` (the text of `module`) imports, relative imports resolved.

    `from a import b` yields both `a` and `a.b`, since `b` may be a submodule or an attribute of `a`.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def closure(roots: Iterable[str], src_root: Path = SRC_ROOT) -> set[Path]:
    """The files of the `sslbench` modules `roots` and of everything they import from the package, recursively,
    with the `__init__.py` of each package they sit in."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
            continue
        module = _owning_module(name, src_root)
        if module is None or module in seen:
            continue
        seen.add(module)
        path = module_file(module, src_root)
        assert path is not None
        files.add(path)
        parts = module.split(".")
        todo.extend(".".join(parts[:end]) for end in range(1, len(parts)))
        todo.extend(_imports_of(path, module, path.stat().st_mtime_ns))
    return files


@functools.cache
def _imports_of(path: Path, module: str, mtime_ns: int) -> tuple[str, ...]:
    # cached per file version (`mtime_ns`): the stage parses each shared module once, not once per stage
    return tuple(imported_names(path.read_text(), module, is_package=path.name == "__init__.py"))


def _targets(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _load_yaml(path: Path) -> Any:
    return _parse_yaml(path, path.stat().st_mtime_ns)


@functools.cache
def _parse_yaml(path: Path, mtime_ns: int) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); fix the file") from err


def config_files(config: str, method: str | None = None, src_root: Path = SRC_ROOT) -> set[Path]:
    """The Hydra config files that stage config `config` composes (see the module docstring)."""
    conf = src_root / PACKAGE / "conf"
    primary = conf / f"{config}.yaml"
    if not primary.is_file():
        raise UserError(f"no stage config {primary}; valid stages: {sorted(p.stem for p in conf.glob('*.yaml'))}")
    files = {primary}
    for entry in (_load_yaml(primary) or {}).get("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_":  # a config of the same folder (`base`), with its own defaults list
                files.update(config_files(entry, method, src_root))
            continue
        for group in entry:
            if str(group).startswith("override") or "/" in str(group):
                continue  # Hydra's own groups (hydra/job_logging)
            if group == "method":
                if method is not None:
                    files.add(conf / "method" / f"{method}.yaml")
                continue
            files.update((conf / str(group)).glob("*.yaml"))
    return files


def stage_files(config: str, method: str | None = None, src_root: Path = SRC_ROOT) -> list[Path]:
    """Every source and config file the stage `config` (for `method`, where the stage trains one) runs, sorted."""
    confs = config_files(config, method, src_root)
    roots = [f"{PACKAGE}.stages.{config}"]
    for path in sorted(confs):
        roots.extend(_targets(_load_yaml(path)))
    return sorted(confs | closure(roots, src_root))


def methods(src_root: Path = SRC_ROOT) -> list[str]:
    """The method names: one config each under `conf/method/`."""
    return sorted(p.stem for p in (src_root / PACKAGE / "conf" / "method").glob("*.yaml"))


def fingerprint(files: Iterable[Path], src_root: Path = SRC_ROOT) -> dict[str, str]:
    """{file relative to `src_root`: sha256 of its bytes}, sorted by path."""
    return {path.relative_to(src_root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(files)}


def all_fingerprints(src_root: Path = SRC_ROOT,
                     study: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """{name: fingerprint} for every stage: `prepare`, `corrupt`, `embed`, `evaluate`, `report` and
    `pretrain/<method>` for every method config, and for every method of `study` ({name: the method config it
    starts from}, e.g. a variant or a published encoder of params.yaml's `methods:`)."""
    out = {name: fingerprint(stage_files(name, src_root=src_root), src_root) for name in SHARED_STAGES}
    recipes = {m: m for m in methods(src_root)} | dict(study or {})
    for method, recipe in recipes.items():
        out[f"pretrain/{method}"] = fingerprint(stage_files("pretrain", recipe, src_root), src_root)
    return out
