"""No-op `dvc repro` of this repository against DVC's own floor for a pipeline of the same number of stages.

    python benchmarks/dvc_noop.py [--repeats 7] [--repo .]

Run after the study, when `dvc status` reports nothing to do. Four pipelines, each timed as a whole `dvc repro`
process (what a user waits for), alternately `--repeats` times after one warm-up call each, so that load from other
processes affects all of them; the medians are compared:
- repo: this repository's `dvc.yaml` as it is (every stage depends on its code fingerprint from `codedeps`);
- plain src deps: a copy whose stages depend on the source folder `src/sslbench` itself instead of a fingerprint,
  without the `codedeps` stage (the simpler alternative: any code change then reruns every stage);
- no dir deps: a copy of the repository (data hard-linked, nothing copied) whose `dvc.yaml` has every directory
  dependency removed and whose `dvc.lock` is recommitted to match (`dvc commit -f`): the cost of the stages, their
  file deps, params and outputs without hashing directory trees;
- floor: a fresh DVC project in a temporary folder with as many stages as this repository, each with one file dep,
  one param and one file out: what DVC itself needs for that many stages on this machine.
Prints the three medians and each one's ratio to the floor. Leaves the repository untouched (the copies live in a
temporary folder and are removed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, check=False)


def n_stages(repo: Path) -> int:
    out = dvc("stage", "list", "--name-only", cwd=repo)
    if out.returncode:
        raise SystemExit(f"`dvc stage list` failed in {repo}: {out.stderr.strip()}")
    return len(out.stdout.split())


def floor_project(root: Path, stages: int) -> Path:
    """A DVC project of `stages` trivial stages, reproduced once."""
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc("init", "-q", cwd=root)
    (root / "dep.txt").write_text("x\n")
    (root / "params.yaml").write_text("a: 1\n")
    spec = {f"s{i}": {"cmd": f"echo {i} > out{i}.txt", "deps": ["dep.txt"], "params": ["a"], "outs": [f"out{i}.txt"]}
            for i in range(stages)}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}))
    if dvc("repro", "-q", cwd=root).returncode:
        raise SystemExit("could not build the floor pipeline")
    return root


def _copy(repo: Path, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copy `repo` into `root` (git-tracked files copied, DVC-tracked data hard-linked, the cache shared); returns
    the copy's dvc.yaml and params."""
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, root / rel)
    for top in ("data", "models", "reports"):
        if (repo / top).is_dir():
            shutil.copytree(repo / top, root / top, copy_function=_link, dirs_exist_ok=True)
    (root / ".dvc" / "cache").symlink_to((repo / ".dvc" / "cache").resolve())
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return yaml.safe_load((root / "dvc.yaml").read_text()), yaml.safe_load((repo / "params.yaml").read_text())


def _commit(root: Path, spec: dict[str, Any], what: str) -> Path:
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if dvc("commit", "-f", cwd=root).returncode or "up to date" not in dvc("status", cwd=root).stdout:
        raise SystemExit(f"the copy {what} is not up to date; run the study first")
    return root


def without_dir_deps(repo: Path, root: Path) -> Path:
    """A copy of `repo` without directory dependencies."""
    spec, params = _copy(repo, root)
    some_method = next(iter(params["methods"]))

    def resolved(dep: str) -> Path:  # a foreach dep names a directory when it does for one method
        return repo / dep.replace("${key}", some_method).replace("${study.dataset}", params["study"]["dataset"])

    for stage in spec["stages"].values():
        body = stage.get("do", stage)
        body["deps"] = [d for d in body.get("deps", []) if not resolved(d).is_dir()]
    return _commit(root, spec, "without directory deps")


def plain_src_deps(repo: Path, root: Path) -> Path:
    """A copy of `repo` whose stages depend on `src/sslbench` instead of their `codedeps` fingerprint."""
    spec, _ = _copy(repo, root)
    spec["stages"].pop("codedeps", None)
    for stage in spec["stages"].values():
        body = stage.get("do", stage)
        body["deps"] = ["src/sslbench" if str(d).startswith("reports/codedeps") else d for d in body.get("deps", [])]
    return _commit(root, spec, "with plain source deps")


def _link(src: str, dst: str) -> None:
    """Hard-link `src` to `dst` (a copy across file systems); files already copied from git are kept."""
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def timed_noop(cwd: Path) -> float:
    start = time.perf_counter()
    out = dvc("repro", cwd=cwd)
    elapsed = time.perf_counter() - start
    if out.returncode or "up to date" not in out.stdout:
        raise SystemExit(f"`dvc repro` in {cwd} was not a no-op:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    stages = n_stages(repo)
    with tempfile.TemporaryDirectory(prefix="dvc_noop_") as tmp:
        projects = {
            "repo": repo,
            "plain src deps": plain_src_deps(repo, Path(tmp) / "plain"),
            "no dir deps": without_dir_deps(repo, Path(tmp) / "nodirs"),
            "floor": floor_project(Path(tmp) / "floor", stages),
        }
        times: dict[str, list[float]] = {name: [] for name in projects}
        for path in projects.values():  # warm-up: state databases, page cache
            timed_noop(path)
        for _ in range(args.repeats):
            for name, path in projects.items():
                times[name].append(timed_noop(path))
    floor = statistics.median(times["floor"])
    print(f"{stages} stages, {args.repeats} alternating runs each (median, min-max)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<14} {med:6.2f} s  ({min(ts):.2f}-{max(ts):.2f})  x{med / floor:.2f} of the floor")


if __name__ == "__main__":
    main()
