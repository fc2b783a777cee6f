"""The shared shape of every stage entry point.

`stage_main(run, config_name)` builds a Hydra `main` that calls `run(cfg)` and turns a `UserError` into one
clear line on stderr and exit status 1 (no traceback: the message names the thing and the fix). Hydra itself
rejects unknown keys and unknown config-group choices before `run` starts, listing the valid ones.

Two checks run before `run`, so that a mistake in params.yaml fails at once with the key and the fix rather than
giving a wrong table (issue 9):
- `check_override_types`: every `key=value` override must have the type of the key's default (an integer where the
  default is an integer, a number for a float, a boolean for a boolean, a list for a list). String defaults are
  left to the stage, which checks the allowed choices; `FLEXIBLE` keys take several types and are checked there too.
- `check_params_file` (only under DVC, which sets `DVC_ROOT`): every key of the stage's own section of params.yaml
  (`pretrain:` for the pretrain stage, ...) must exist in the stage's config, and it and the `study:` keys that the
  stage has (`study.seed`, `study.dataset` as the `dataset` group) must have reached the stage with their
  params.yaml values; a misspelt key, or one that dvc.yaml does not pass to the stage, would otherwise be ignored
  without a word. Unknown top-level sections are refused too.

Per-method settings from params.yaml (`methods.<name>: {module: {beta: 0.01}}`) reach a stage through DVC's
dictionary unpacking, which renders them as `--module.beta 0.01`; with `dict_prefix="method"`, `stage_main`
rewrites each such pair into the Hydra override `method.module.beta=0.01` before Hydra parses the command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sslbench.errors import UserError

log = logging.getLogger("sslbench")


FREE_SECTIONS = ("encoder", "optim")
# keys whose value is checked by the stage because several types are valid (`n_images: all`, `devices: auto`)
FLEXIBLE = ("corrupt.n_images", "pretrain.devices")
# params.yaml keys that choose a config group (`backbone=...`, `dataset=...`) rather than set a config value
GROUP_PARAMS = {"pretrain.backbone": "backbone", "study.dataset": "dataset"}
# params.yaml sections that are not a stage's own section
SHARED_SECTIONS = ("study", "methods")
# stage configs that run the areas of several params.yaml sections in one process (README, "Design changes")
COMBINED = {"evaluate": ("probe", "robustness", "ood")}
_ABSENT = object()


def dvc_dict_to_overrides(argv: list[str], prefix: str) -> list[str]:
    """Rewrite DVC's `--a.b value` pairs (and bare `--flag` for true) into Hydra overrides `prefix.a.b=value`.

    dvc.yaml places the unpacked dictionary last on the command line, so every token up to the next `--key` belongs
    to the key: none is a bare flag (true), one a scalar, several the items of a list (`--a.dims 1024 128` becomes
    `prefix.a.dims=[1024,128]`). A one-item list is indistinguishable from a scalar there and arrives as one; a Hydra
    override (`method.a.dims=[128]`) sets such a list.
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
            values = []
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            # DVC renders a list as its items, space-separated (`--encoder.projector_dims 1024 128`)
            value = "true" if not values else values[0] if len(values) == 1 else f"[{','.join(values)}]"
            out.append(f"{force}{prefix}.{key}={value}")
            continue
        out.append(token)
        i += 1
    return out


def dvc_nulls_to_hydra(argv: list[str]) -> list[str]:
    """Turn `key=None` into `key=null`: DVC renders a YAML null of params.yaml as the word None in a stage command,
    which Hydra would read as the string 'None' (e.g. the presets' `pretrain.views.min_scale: null`)."""
    return [f"{token[:-len('None')]}null" if "=" in token and token.endswith("=None") else token for token in argv]


def _override_keys(overrides: Sequence[str]) -> Iterator[str]:
    for override in overrides:
        if override.startswith("~") or "=" not in override:
            continue
        yield override.split("=", 1)[0].lstrip("+")


def _type_problem(value: Any, default: Any) -> str | None:
    """What is wrong with `value` given the type of `default`, or None (None values are left to the stage)."""
    if value is None or default is None or isinstance(default, str):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a boolean (true/false)"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
    if isinstance(default, list | ListConfig):
        return None if isinstance(value, list | ListConfig) else "a list"
    if isinstance(default, dict | DictConfig):
        return None if isinstance(value, dict | DictConfig) else "a mapping"
    return None


def check_override_types(cfg: DictConfig, defaults: DictConfig, overrides: Sequence[str],
                         groups: Sequence[str] = ()) -> None:
    """Raise `UserError` for an override whose value has another type than the key's default.

    `defaults` is the stage's config composed with the same group choices and no value overrides. Keys absent from
    the defaults (added with `+`), the config `groups` (`method=simclr`) and `FLEXIBLE` keys are not checked here.
    """
    problems = []
    for key in dict.fromkeys(_override_keys(overrides)):
        if key.startswith("hydra") or key in FLEXIBLE or key in groups:
            continue
        default = OmegaConf.select(defaults, key, default=_ABSENT)
        if default is _ABSENT:
            continue  # a key added with `+`
        value = OmegaConf.select(cfg, key, default=None)
        want = _type_problem(value, default)
        if want:
            problems.append(f"{key}={value!r} must be {want} (the default is {default!r})")
    if problems:
        raise UserError("wrong value type: " + "; ".join(problems) + ". Fix the value in params.yaml (or on the "
                        "command line)")


def _leaves(obj: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _same(param: Any, value: Any) -> bool:
    """Whether a params.yaml value arrived as `value` (DVC renders it into the command, Hydra parses it back)."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    if isinstance(param, str) and not isinstance(value, str):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:  # a Hydra literal such as "[1.0e-4, 1.0e-5]" (DVC cannot put a YAML list into a command)
            param = OverridesParser.create().parse_override(f"k={param}").value()
        except Exception:
            return False
    if isinstance(param, list) and isinstance(value, list):
        return len(param) == len(value) and all(_same(p, v) for p, v in zip(param, value, strict=True))
    numbers = (int, float)
    if isinstance(param, numbers) and isinstance(value, numbers) and not isinstance(param, bool) \
            and not isinstance(value, bool):
        return float(param) == float(value)
    return bool(param == value) or (param in (None, "") and value in (None, ""))


def check_params_file(params: Any, cfg: DictConfig, section: str | Sequence[str], sections: Sequence[str],
                      choices: Mapping[str, str] | None = None) -> None:
    """Raise `UserError` when params.yaml has an unknown section, when a key of the stage's own `section` (or of
    each of several) is unknown to the stage config, or when a key of it or of `study:` that the stage has did not
    reach the stage with its value (dvc.yaml does not pass it).
    `choices` are the config groups chosen (Hydra's runtime choices), against which `GROUP_PARAMS` are compared.
    """
    if not isinstance(params, Mapping):
        return
    unknown_sections = sorted(str(k) for k in params if k not in (*SHARED_SECTIONS, *sections))
    if unknown_sections:
        raise UserError(f"params.yaml has unknown sections {unknown_sections}; valid sections: "
                        f"{sorted((*SHARED_SECTIONS, *sections))}. Fix the name")
    own_sections = (section,) if isinstance(section, str) else tuple(section)
    unknown, ignored = [], []
    for name in ("study", *own_sections):
        if not isinstance(params.get(name), Mapping) or name not in cfg:
            continue
        own: Any = OmegaConf.to_container(cfg[name])
        valid = sorted([k for k, _ in _leaves(own, f"{name}.")] + [k for k in GROUP_PARAMS if k.startswith(name)])
        for key, param in _leaves(params[name], f"{name}."):
            if key in GROUP_PARAMS:
                got = (choices or {}).get(GROUP_PARAMS[key])
                if got is not None and not _same(param, got):
                    ignored.append(f"{key}={param!r} (the stage got {got!r})")
                continue
            value = OmegaConf.select(cfg, key, default=_ABSENT)
            if value is _ABSENT:
                if name in own_sections:  # `study:` is shared: each stage takes only the keys it needs
                    unknown.append(key)
            elif isinstance(value, DictConfig):
                unknown.append(f"{key} (a section, not a value)")
            elif not _same(param, value):
                ignored.append(f"{key}={param!r} (the stage got {value!r})")
        if unknown:
            raise UserError(f"params.yaml: unknown keys {unknown}; valid keys under `{name}:` are {valid}. Fix the "
                            "name (a misspelt key would be ignored)")
    if ignored:
        raise UserError(f"params.yaml sets {', '.join(ignored)}, but dvc.yaml does not pass these to the stage; "
                        "add `<key>=${<key>}` to the stage's cmd in dvc.yaml (and the key to its params:), or "
                        "remove them from params.yaml")


def _stage_sections() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parents[1] / "conf").glob("*.yaml") if p.stem not in COMBINED)


def _check_inputs(cfg: DictConfig, config_name: str) -> None:
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = {g: c for g, c in hydra_cfg.runtime.choices.items() if c is not None and not g.startswith("hydra")}
    defaults = compose(config_name=config_name, overrides=[f"{g}={c}" for g, c in choices.items()])
    check_override_types(cfg, defaults, list(hydra_cfg.overrides.task), groups=list(choices))
    root = os.environ.get("DVC_ROOT")
    params_path = Path(root) / "params.yaml" if root else None
    if params_path is not None and params_path.is_file():
        import yaml

        try:
            params = yaml.safe_load(params_path.read_text())
        except yaml.YAMLError as err:
            raise UserError(f"{params_path} is not valid YAML ({err}); fix the file") from err
        check_params_file(params, cfg, COMBINED.get(config_name, config_name), _stage_sections(), choices)


def unknown_key_error(config_name: str, overrides: Sequence[str]) -> UserError | None:
    """The error for an override of a key that the stage config lacks, listing the valid keys beside it; None when
    the overrides compose (or fail for another reason, which Hydra then reports itself).

    Hydra's own message for this case suggests appending the key with `+`, which would only make the stage ignore
    it; the key is misspelt or belongs to another stage.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    values = [o for o in overrides if not o.startswith("-")]
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
            given = next((k for k in _override_keys(values) if k == missing or k.startswith(f"{missing}.")), missing)
            parent = missing.rpartition(".")[0]
            try:
                groups = [o for o in values if "=" in o and "." not in (key := o.split("=", 1)[0])
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


def stage_main(
    run: Callable[[DictConfig], Any], config_name: str, dict_prefix: str | None = None
) -> Callable[[], None]:
    import hydra

    @hydra.main(config_path="../conf", config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            _check_inputs(cfg, config_name)
            run(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    def main() -> None:
        if dict_prefix is not None:
            sys.argv[1:] = dvc_dict_to_overrides(sys.argv[1:], dict_prefix)
        sys.argv[1:] = dvc_nulls_to_hydra(sys.argv[1:])
        error = unknown_key_error(config_name, sys.argv[1:])
        if error is not None:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        _main()

    return main
