"""The code each stage runs, found from its imports and configs (sslbench.codedeps)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sslbench import codedeps
from sslbench.errors import UserError


def names(files: list[Path] | set[Path], root: Path = codedeps.SRC_ROOT) -> set[str]:
    return {p.relative_to(root).as_posix() for p in files}


def test_pretrain_of_one_method_runs_that_method_and_not_the_others() -> None:
    files = names(codedeps.stage_files("pretrain", "simclr"))
    # reached only through the method config's `_target_`s (Hydra imports them by name)
    assert {"sslbench/methods/simclr.py", "sslbench/data/views.py", "sslbench/conf/method/simclr.yaml"} <= files
    # imported by the stage but declared nowhere in the hand-written lists this replaces
    assert {"sslbench/errors.py", "sslbench/stages/_entry.py", "sslbench/conf/pretrain.yaml"} <= files
    # the params.yaml reader and the base config every stage config includes
    assert {"sslbench/params.py", "sslbench/conf/base.yaml", "sslbench/conf/paths/default.yaml"} <= files
    # every option of a config group the stage composes, since params.yaml picks one at run time
    assert {"sslbench/conf/backbone/resnet18.yaml", "sslbench/conf/optim/adamw.yaml"} <= files
    assert not {"sslbench/methods/byol.py", "sslbench/conf/method/byol.yaml", "sslbench/stages/probe.py"} & files
    bayes = names(codedeps.stage_files("pretrain", "barlow_twins_bayes_h"))
    assert {"sslbench/methods/stochastic.py", "sslbench/methods/barlow_twins.py"} <= bayes


def test_evaluate_runs_its_three_areas_and_no_training_code() -> None:
    files = names(codedeps.stage_files("evaluate"))
    assert {"sslbench/areas/probe.py", "sslbench/areas/robustness.py", "sslbench/areas/ood.py",
            "sslbench/eval/linear.py", "sslbench/conf/area/ood.yaml"} <= files
    assert not any(f.startswith(("sslbench/methods/", "sslbench/conf/method/", "sslbench/training/")) for f in files)


def write(root: Path, rel: str, text: str = "") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_closure_follows_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    write(tmp_path, "sslbench/__init__.py")
    write(tmp_path, "sslbench/pkg/__init__.py")
    write(tmp_path, "sslbench/a.py", "import os\n\ndef f():\n    from sslbench.pkg import b\n    return b\n")
    write(tmp_path, "sslbench/pkg/b.py", "from .c import helper\n")
    write(tmp_path, "sslbench/pkg/c.py", "helper = 1\n")
    write(tmp_path, "sslbench/unused.py", "import sslbench.a\n")
    got = names(codedeps.closure(["sslbench.a"], tmp_path), tmp_path)
    assert got == {"sslbench/__init__.py", "sslbench/a.py", "sslbench/pkg/__init__.py", "sslbench/pkg/b.py",
                   "sslbench/pkg/c.py"}


def test_a_source_change_changes_only_the_fingerprints_of_the_stages_that_run_it(tmp_path: Path) -> None:
    shutil.copytree(codedeps.SRC_ROOT / "sslbench", tmp_path / "sslbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = codedeps.all_fingerprints(tmp_path)
    assert set(before) == {*codedeps.SHARED_STAGES, *(f"pretrain/{m}" for m in codedeps.methods(tmp_path))}
    with open(tmp_path / "sslbench" / "methods" / "byol.py", "a") as fh:
        fh.write("\n# an edit\n")
    after = codedeps.all_fingerprints(tmp_path)
    assert {name for name in before if before[name] != after[name]} == {"pretrain/byol"}
    with open(tmp_path / "sslbench" / "errors.py", "a") as fh:
        fh.write("\n# an edit\n")
    everything = codedeps.all_fingerprints(tmp_path)
    assert all(everything[name] != after[name] for name in after)


def test_unknown_stage_config_is_refused_with_the_valid_names() -> None:
    with pytest.raises(UserError, match="valid stages: .*pretrain"):
        codedeps.stage_files("pretrian")
