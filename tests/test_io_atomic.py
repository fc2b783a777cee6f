"""Atomic writes after a `kill -9` and into folders that cannot be written (docs/reliability.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sslbench.errors import UserError
from sslbench.io import _tmp_prefix, atomic_path, ensure_writable, remove_stale_temporaries, write_text


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "out" / "simclr"
    target.parent.mkdir()
    stale = target.parent / f"{_tmp_prefix(target)}{_dead_pid()}"
    (stale / "shapes").mkdir(parents=True)  # what `kill -9` leaves of a directory write
    alive = target.parent / f"{_tmp_prefix(target)}{os.getpid()}x"  # not a pid: never touched
    alive.mkdir()
    other_host = target.parent / f".simclr.tmp-otherhost-{_dead_pid()}"
    other_host.mkdir()
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "table.parquet").write_text("x")
    assert not stale.exists() and alive.exists() and other_host.exists()
    assert (target / "table.parquet").read_text() == "x"
    assert remove_stale_temporaries(target) == []


def test_a_live_writer_keeps_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    mine = tmp_path / f"{_tmp_prefix(target)}{os.getppid()}"  # the parent process is alive
    mine.write_text("partial")
    write_text(target, "{}")
    assert mine.exists() and target.read_text() == "{}"


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A folder that cannot be written: a *file* where the folder should be (works for root too)."""
    blocker = tmp_path / "reports"
    blocker.write_text("not a folder")
    return blocker


def test_unwritable_folder_is_a_user_error_before_any_work(unwritable: Path) -> None:
    with pytest.raises(UserError, match=rf"cannot write {unwritable}/probe/simclr.json: .*make that folder writable"):
        ensure_writable(unwritable / "probe" / "simclr.json")
    ran = False
    with pytest.raises(UserError, match="cannot write"), atomic_path(unwritable / "ood" / "x.json"):
        ran = True
    assert not ran


def test_the_check_leaves_no_folder_behind(tmp_path: Path) -> None:
    ensure_writable(tmp_path / "a" / "b" / "c.json")
    assert list(tmp_path.iterdir()) == []
