"""The shared shape of every stage entry point.

`stage_main(run, config_name)` builds the `main` of a stage module. Before Hydra composes the config it
- reads `params.yaml` of the working directory (DVC runs every stage in the repository root), checks the whole file
  (`sslbench.params.check_params`: unknown sections and keys, wrong types, unknown methods) and turns the sections
  the stage reads into Hydra overrides placed before the command line's, so that the command line wins;
- refuses a command-line `+key=value` that adds a key no stage reads, and reports an unknown key with the valid keys
  beside it (Hydra's own message suggests adding it with `+`, which would only make the stage ignore it).
After composition it checks that every override has the type of its key's default, then calls `run(cfg)`. A
`UserError` anywhere becomes one line on stderr and exit status 1 (no traceback: the message names the thing and
the fix).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sslbench.errors import UserError
from sslbench.params import (
    FLEXIBLE,
    PARAMS_FILE,
    added_key_error,
    check_params,
    override_key,
    read_params,
    resolve_method,
    stage_overrides,
    type_problem,
)

log = logging.getLogger("sslbench")

_ABSENT = object()


def is_override(token: str) -> bool:
    """A `key=value` Hydra override, as opposed to one of Hydra's flags (`--cfg job`, `-m`)."""
    return "=" in token and not token.startswith("-")


def check_override_types(cfg: DictConfig, defaults: DictConfig, overrides: Sequence[str],
                         groups: Sequence[str] = ()) -> None:
    """Raise `UserError` for an override whose value has another type than the key's default.

    `defaults` is the stage's config composed with the same group choices and no value overrides. The config
    `groups` (`method=simclr`) and keys absent from the defaults (a method's `encoder:` / `optim:` keys) are not
    checked here.
    """
    problems = []
    for key in dict.fromkeys(override_key(o) for o in overrides if is_override(o)):
        if key.startswith("hydra") or key in groups or key in FLEXIBLE:
            continue
        default = OmegaConf.select(defaults, key, default=_ABSENT)
        if default is _ABSENT:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        default, value = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (default, value))
        want = type_problem(value, default)
        if want:
            problems.append(f"{key}={value!r} must be {want} (the default is {default!r})")
    if problems:
        raise UserError("wrong value type: " + "; ".join(problems) + ". Fix the value in params.yaml (or on the "
                        "command line)")


def _check_types(cfg: DictConfig, config_name: str) -> None:
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = {g: c for g, c in hydra_cfg.runtime.choices.items() if c is not None and not g.startswith("hydra")}
    defaults = compose(config_name=config_name, overrides=[f"{g}={c}" for g, c in choices.items()])
    check_override_types(cfg, defaults, list(hydra_cfg.overrides.task), groups=list(choices))


def unknown_key_error(config_name: str, overrides: Sequence[str]) -> UserError | None:
    """The error for an override of a key that the stage config lacks, listing the valid keys beside it; None when
    the overrides compose (or fail for another reason, which Hydra then reports itself)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    values = [o for o in overrides if is_override(o)]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
            try:
                compose(config_name=config_name, overrides=values)
                return None
            except ConfigCompositionException as err:
                missing = getattr(err.__cause__, "full_key", None)
                if not missing:
                    return None
            given = next((k for k in map(override_key, values) if k == missing or k.startswith(f"{missing}.")),
                         missing)
            parent = missing.rpartition(".")[0]
            try:
                groups = [o for o in values if "." not in (key := o.split("=", 1)[0])
                          and o[0] not in "+~" and key != given]
                base = compose(config_name=config_name, overrides=groups)
                node = OmegaConf.select(base, parent) if parent else base
            except Exception:
                node = None
    finally:
        GlobalHydra.instance().clear()
    valid = sorted(str(k) for k in node if k != "hydra") if isinstance(node, DictConfig) else []
    where = f"under `{parent}`" if parent else "at the top level"
    via = " (params.yaml `methods.<name>.<key>` arrives as `method.<key>`)" if given.startswith("method.") else ""
    return UserError(f"unknown config key `{given}` for the {config_name} stage; valid keys {where}: {valid}. Fix the "
                     f"name in params.yaml or on the command line{via}")


def with_params(argv: Sequence[str], config_name: str, params_file: Path = Path(PARAMS_FILE)) -> list[str]:
    """`argv` with the overrides of the params file's sections that the stage reads inserted before the first
    command-line override (so that the command line wins); the params file is checked whole first."""
    cli = [a for a in argv if is_override(a)]
    error = added_key_error(cli)
    if error is not None:
        raise error
    params = read_params(params_file)
    if params is None:
        return list(argv)
    check_params(params, str(params_file))
    overrides = stage_overrides(params, config_name, cli)
    argv = resolve_method(params, argv)
    at = next((i for i, a in enumerate(argv) if is_override(a)), len(argv))
    return [*argv[:at], *overrides, *argv[at:]]


def stage_main(run: Callable[[DictConfig], Any], config_name: str) -> Callable[[], None]:
    import hydra

    @hydra.main(config_path="../conf", config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            _check_types(cfg, config_name)
            run(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    def main() -> None:
        try:
            sys.argv[1:] = with_params(sys.argv[1:], config_name)
            error = unknown_key_error(config_name, sys.argv[1:])
        except UserError as err:
            error = err
        if error is not None:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        _main()

    return main
