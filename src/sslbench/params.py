"""The study's `params.yaml`, read by every stage: one home for each parameter.

A parameter has its default in a Hydra config (`conf/<stage>.yaml`, `conf/area/<area>.yaml`, the config groups) and,
when a study varies it, its value in `params.yaml`. The stage entry point (`sslbench.stages._entry`) turns the
sections of `params.yaml` that the stage reads into Hydra overrides placed before the command line's own, so that
Hydra composes and checks them like any override and a command-line override still wins:

    params.yaml  `probe: {knn: {k: 50}}`   ->   `probe.knn.k=50`, then the command line's overrides

The sections a stage reads follow from its config, so that no list can drift from it:
- the top-level sections of `conf/<stage>.yaml` and of the areas in its defaults list (`probe:`, `robustness:`,
  ...), and the `study:` keys it has (`study.seed`);
- `study.dataset` and `pretrain.backbone`, which choose the `dataset` and `backbone` config groups, for a stage that
  composes that group;
- `methods.<name>`, the overrides of `conf/method/<name>.yaml`, for the stage that composes the `method` group
  (`pretrain`), which may also add the keys of `addable_keys` (a method config's `encoder:` and `optim:` start
  empty, and its `_target_`s take keyword arguments that the recipe leaves at their defaults).
dvc.yaml lists the same sections, whole, under each stage's `params:`, so DVC reruns exactly the stages whose
sections changed, and adding a parameter never touches dvc.yaml.

`check_params` validates the whole file against every config before the stage does any work; every stage runs it,
so the first stage that runs stops on a misspelt key anywhere in the file, naming the key and the valid ones.

Why not DVC's own Hydra composition (`hydra.enabled` in .dvc/config): it composes `params.yaml` only for
`dvc exp run`, so `dvc repro` and a stage run by hand would not see the same values.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sslbench.errors import UserError, unknown_choice

CONF = Path(__file__).resolve().parent / "conf"
PARAMS_FILE = "params.yaml"
METHODS = "methods"
METHOD_NAME = re.compile(r"[a-z][a-z0-9_]*")
# params.yaml keys that choose a config group rather than set a value
GROUP_PARAMS = {"study.dataset": "dataset", "pretrain.backbone": "backbone"}
_NOT_SECTIONS = ("defaults", "hydra", "paths")
VIEW_KNOBS = "sslbench.data.views.ViewTransform"
# the arguments the pretrain stage itself gives a method's module (`sslbench.training.config.build_method`)
BUILT = ("encoder", "views", "num_classes", "optim", "batch_size")
# keys whose value may take several types, checked by the code that reads them (`n_images: all`, `devices: auto`)
FLEXIBLE = ("corrupt.n_images", "pretrain.devices")


# ------------------------------------------------------------------------------------------------ configs


@functools.cache
def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def group_options(group: str) -> list[str]:
    """The options of a config group: the names of `conf/<group>/*.yaml`."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def stage_configs() -> list[str]:
    """The stage configs: `conf/*.yaml`."""
    return sorted(p.stem for p in CONF.glob("*.yaml"))


def defaults(config_name: str) -> dict[str, Any]:
    """The config groups of a stage config's defaults list and their default options (`{"dataset": "shapes"}`)."""
    out: dict[str, Any] = {}
    for item in _yaml(CONF / f"{config_name}.yaml").get("defaults", []):
        if isinstance(item, Mapping):
            out.update({str(k): v for k, v in item.items() if not str(k).startswith("override ")})
    return out


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else value
    return out


def stage_sections(config_name: str) -> dict[str, dict[str, Any]]:
    """The params sections a stage config has, with their defaults: its own top-level sections and its areas'."""
    sources = [_yaml(CONF / f"{config_name}.yaml")]
    areas = defaults(config_name).get("area") or []
    sources += [_yaml(CONF / "area" / f"{a}.yaml") for a in ([areas] if isinstance(areas, str) else areas)]
    out: dict[str, dict[str, Any]] = {}
    for source in sources:
        for key, value in source.items():
            if key not in _NOT_SECTIONS and isinstance(value, Mapping):
                out[key] = _merge(out.get(key, {}), value)
    return out


@functools.cache
def schema() -> dict[str, dict[str, Any]]:
    """Every params section any stage reads, with its defaults (the union over the stage configs)."""
    out: dict[str, dict[str, Any]] = {}
    for name in stage_configs():
        for section, node in stage_sections(name).items():
            out[section] = _merge(out.get(section, {}), node)
    return out


def _target_keys(target: str) -> list[str]:
    """The keyword arguments a Hydra `_target_` accepts (a class's, its bases' while they take **kwargs)."""
    import importlib
    import inspect

    module, _, name = target.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    keys: list[str] = []
    for fn in ([vars(c)["__init__"] for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]):
        params = inspect.signature(fn).parameters.values()
        keys += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return sorted(set(keys))


def addable_keys(method: str) -> dict[str, list[str]]:
    """The keys a method entry may add to its config beyond those it lists: any field of `EncoderSpec` under
    `encoder:`, any optimizer key under `optim:` (both sections start empty), and any keyword argument of the
    `_target_` of `module:` and `views:` (e.g. `views.hf_prob`, which the recipes leave at its default)."""
    from dataclasses import fields

    from sslbench.models.encoder import EncoderSpec

    recipe = _yaml(CONF / "method" / f"{method}.yaml")
    out = {"encoder": sorted(f.name for f in fields(EncoderSpec)),
           "optim": sorted({str(k) for o in group_options("optim") for k in _yaml(CONF / "optim" / f"{o}.yaml")})}
    for section in ("module", "views"):
        target = (recipe.get(section) or {}).get("_target_")
        if isinstance(target, str):
            out[section] = [k for k in _target_keys(target) if section != "module" or k not in BUILT]
    if "views" in out:  # the view builders pass their other keyword arguments (**knobs) on to every view
        out["views"] = sorted({*out["views"], *_target_keys(VIEW_KNOBS)})
    return out


# ------------------------------------------------------------------------------------------------ checks


def leaves(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; an empty mapping is a leaf."""
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def type_problem(value: Any, default: Any) -> str | None:
    """What is wrong with `value` given the type of `default`, or None. Null values and string defaults are left to
    the code that reads them (which checks the allowed choices: `n_images: all`, `devices: auto`)."""
    if value is None or default is None or isinstance(default, str):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a boolean (true/false)"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
    if isinstance(default, Sequence):
        return None if isinstance(value, Sequence) and not isinstance(value, str) else "a list"
    if isinstance(default, Mapping):
        return None if isinstance(value, Mapping) else "a mapping"
    return None


def _select(node: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


RECIPE = "method"  # the key of a `methods:` entry that names the config it starts from (default: the entry's name)


def recipe_of(name: str, entry: Any) -> str:
    """The method config (`conf/method/<recipe>.yaml`) a `methods:` entry starts from: its `method:` key, else its
    own name (`simclr_t02: {method: simclr, module: {temperature: 0.2}}`; `dino_rn50: {method: published, ...}`)."""
    recipe = entry.get(RECIPE) if isinstance(entry, Mapping) else None
    return str(recipe) if recipe is not None else name


def _without_recipe(entry: Any) -> Any:
    return {k: v for k, v in entry.items() if k != RECIPE} if isinstance(entry, Mapping) else entry


def _check_section(section: str, values: Any, node: Mapping[str, Any], source: str,
                   recipe: str | None = None) -> None:
    """Unknown keys and wrong types of one params section against its defaults `node` (for `methods.<name>`, the
    method's config, plus the keys it may add: `addable_keys`)."""
    if values is None:
        return
    if not isinstance(values, Mapping):
        raise UserError(f"{source}: `{section}:` must be a mapping of keys to values, got {values!r}")
    valid = sorted({k for k, _ in leaves(node)} | {k.partition(".")[2] for k in GROUP_PARAMS
                                                   if k.startswith(f"{section}.")})
    unknown, wrong = [], []
    for key, value in leaves(values):
        full = f"{section}.{key}"
        if full in GROUP_PARAMS:
            group = GROUP_PARAMS[full]
            if value not in group_options(group):
                raise UserError(f"{source}: {unknown_choice(group, str(value), group_options(group))} (`{full}`)")
            continue
        found, default = _select(node, key)
        if not found:
            head, _, rest = key.partition(".")
            addable = addable_keys(recipe) if recipe else {}
            if head in addable and "." not in rest and rest in addable[head]:
                continue
            where = f" (valid keys to add under `{section}.{head}`: {addable[head]})" if head in addable else ""
            unknown.append(f"{full}{where}")
        elif isinstance(default, Mapping) and default and not isinstance(value, Mapping):
            wrong.append(f"{full}={value!r} must be a mapping (it is a section)")
        elif full not in FLEXIBLE and (want := type_problem(value, default)):
            wrong.append(f"{full}={value!r} must be {want} (the default is {default!r})")
    if unknown:
        raise UserError(f"{source}: unknown keys {unknown}; valid keys under `{section}:` are {valid}. Fix the name "
                        "(a misspelt key would otherwise be ignored)")
    if wrong:
        raise UserError(f"{source}: wrong value type: {'; '.join(wrong)}. Fix the value")


def check_params(params: Any, source: str = PARAMS_FILE) -> None:
    """Raise `UserError` for anything in a params file that no stage would read as written: an unknown section, an
    unknown key, a value of the wrong type, a method without a config (each message names the valid choices)."""
    if not isinstance(params, Mapping):
        raise UserError(f"{source} must be a mapping of sections (study:, methods:, pretrain:, ...); got "
                        f"{type(params).__name__}")
    sections = schema()
    valid = sorted([*sections, METHODS])
    unknown = sorted(str(k) for k in params if k not in valid)
    if unknown:
        raise UserError(f"{source} has unknown sections {unknown}; valid sections: {valid}. Fix the name")
    for section, values in params.items():
        if section != METHODS:
            _check_section(section, values, sections[section], source)
    methods = params.get(METHODS) or {}
    if not isinstance(methods, Mapping):
        raise UserError(f"{source}: `{METHODS}:` must map method names to their overrides ({{}} for none), got "
                        f"{methods!r}")
    for name, values in methods.items():
        if not METHOD_NAME.fullmatch(str(name)):
            raise UserError(f"{source}: method name {name!r} must be lower_snake_case (it names folders and stages)")
        recipe = recipe_of(str(name), values)
        if recipe not in group_options("method"):
            via = f" (`{METHODS}.{name}.{RECIPE}`)" if recipe != name else ""
            raise UserError(f"{source}: {unknown_choice('method', recipe, group_options('method'))}{via}; a new "
                            f"name needs `{RECIPE}: <one of them>` to say which config it starts from")
        _check_section(f"{METHODS}.{name}", _without_recipe(values), _yaml(CONF / "method" / f"{recipe}.yaml"),
                       source, recipe)


def read_params(path: Path) -> dict[str, Any] | None:
    """The parsed params file, or None when there is none; `UserError` when it is not valid YAML."""
    if not path.is_file():
        return None
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); fix the file") from err
    return params if params is not None else {}


# ------------------------------------------------------------------------------------------------ overrides


def render(value: Any) -> str:
    """A YAML value as a Hydra override value of the same type (strings quoted, so `all` or `1e-3` stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        if "${" in value:
            raise UserError(f"params value {value!r}: interpolations (${{...}}) belong in the Hydra configs, not in "
                            "params.yaml; write the value itself")
        # Hydra's quoted strings: a backslash escapes only a quote or another backslash before a quote / the end
        escaped = re.sub(r"(\\+)('|$)", lambda m: m.group(1) * 2 + m.group(2), value).replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(value, Sequence):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
    raise UserError(f"params value {value!r} of type {type(value).__name__} cannot be passed to a stage")


def override_key(override: str) -> str:
    """The key an override sets (`++a.b=1` -> `a.b`)."""
    return override.split("=", 1)[0].lstrip("+~")


def stage_overrides(params: Mapping[str, Any], config_name: str, cli: Sequence[str] = ()) -> list[str]:
    """The Hydra overrides that carry the params sections a stage reads, less the keys the command line sets."""
    given = {override_key(o) for o in cli if "=" in o}
    groups = defaults(config_name)
    out: list[str] = []
    for full, group in GROUP_PARAMS.items():
        found, value = _select(params, full)
        if found and group in groups and group not in given:
            out.append(f"{group}={value}")
    for section, node in stage_sections(config_name).items():
        values = params.get(section) or {}
        for key, value in leaves(values):
            full = f"{section}.{key}"
            if full in GROUP_PARAMS or (isinstance(value, Mapping) and not value) or full in given:
                continue
            if section == "study" and not _select(node, key)[0]:
                continue  # `study:` is shared: each stage takes the keys its config has
            out.append(f"{full}={render(value)}")
    if "method" in groups:
        method = next((o.split("=", 1)[1] for o in cli if o.startswith("method=")), groups["method"])
        entry = (params.get(METHODS) or {}).get(method) or {}
        recipe = recipe_of(method, entry)
        for key, value in leaves(_without_recipe(entry)):
            if (isinstance(value, Mapping) and not value) or f"method.{key}" in given:
                continue
            add = "" if _select(_yaml(CONF / "method" / f"{recipe}.yaml"), key)[0] else "++"  # `addable_keys`
            out.append(f"{add}method.{key}={render(value)}")
        if recipe != method:
            out.append(f"method.name={render(method)}")
    return out


def resolve_method(params: Mapping[str, Any] | None, cli: Sequence[str]) -> list[str]:
    """`cli` with `method=<name>` replaced by `method=<recipe>` when the study's entry `name` starts from another
    method config (the entry's name then reaches the stage as `method.name`, from `stage_overrides`)."""
    entries = (params or {}).get(METHODS) or {}
    out = []
    for token in cli:
        if token.startswith("method=") and (name := token.split("=", 1)[1]) in entries:
            token = f"method={recipe_of(name, entries[name])}"
        out.append(token)
    return out


def added_key_error(cli: Sequence[str]) -> UserError | None:
    """The error for a command-line `+key=value` that adds a key no code reads (every key a stage reads has a
    default, so `key=value` sets it); a method's `addable_keys` may be added (`+method.views.hf_prob=0`)."""
    method = next((o.split("=", 1)[1] for o in cli if o.startswith("method=")), None)
    for override in cli:
        if not override.startswith("+") or "=" not in override:
            continue
        key = override_key(override)
        parts = key.split(".")
        if method in group_options("method") and len(parts) == 3 and parts[0] == "method" \
                and parts[2] in addable_keys(str(method)).get(parts[1], []):
            continue
        return UserError(f"`{override}` adds a key that no stage reads. Set an existing key without `+` "
                         f"(`{key}=...`; a wrong name is then reported with the valid ones)")
    return None
