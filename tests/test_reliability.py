"""Tier 3: reliability of the real pipeline (docs/reliability.md). Each test drives `dvc repro` in a temporary git
+ DVC copy of the repository with tiny params:

- interruption: `kill -9` of the whole `dvc repro` process group during `corrupt`, during `pretrain@simclr`
  (mid-epoch, after a step checkpoint) and during `embed@simclr`; a plain `dvc repro` then finishes, pretraining
  resumes from `models/simclr/last.ckpt`, and every metrics file equals that of an uninterrupted run;
- determinism: the same seed gives identical metrics files and plot data, another seed different ones;
- bad inputs through `dvc repro`: a non-zero exit with a one-line error naming the thing and the fix (no traceback),
  dvc.lock untouched and no temporary or half-written output.

Bad inputs that only a stage sees are unit-tested beside the stage (tests/stages/*, tests/data/test_download.py,
tests/test_io.py, tests/models/test_encoder.py, tests/stages/test_entry_checks.py); here each is driven once through
DVC. Comparisons leave out the wall-clock metrics (`pretrain/wall_s`, `pretrain/images_per_s`): they measure the
machine, not the result, and `reports/summary.md` quotes them, so it is not compared either.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import REPO
from tests.tier3 import (
    TIMEOUT_S,
    commit,
    copy_repo,
    env,
    leftovers,
    metrics_files,
    metrics_without,
    read_params,
    run,
    tiny_params,
    would_run,
    write_params,
)

pytestmark = pytest.mark.slow

METHODS = {"supervised": {}, "simclr": {}}  # supervised: the robustness reference of every method
N_TRAIN, BATCH, EPOCHS = 200, 16, 2
STEPS_PER_EPOCH = N_TRAIN // BATCH  # 12 (drop-last)
TIMING = ("pretrain/wall_s", "images_per_s", "pretrain_s")  # the second: pretrain/... and the training log's


def study_params(seed: int = 0) -> dict[str, Any]:
    params = tiny_params(METHODS)
    params["study"]["seed"] = seed
    params["prepare"]["shapes"]["n_train"] = N_TRAIN
    # a checkpoint after every step, so that a kill lands mid-epoch with a checkpoint to resume from
    params["pretrain"].update(epochs=EPOCHS, batch_size=BATCH, ckpt_every_n_steps=1)
    return params


def new_study(root: Path, seed: int = 0) -> Path:
    return copy_repo(root, study_params(seed))


def snapshot(root: Path) -> dict[str, Any]:
    """What two runs must agree on: metrics (minus wall-clock keys) and plot data (CSV, and the TSVs of the
    training logs but the throughput's)."""
    tables = [*(root / "reports").rglob("*.csv"), *(root / "reports").rglob("*.tsv")]
    csv = {str(p.relative_to(root)): p.read_text() for p in sorted(tables) if p.name != "images_per_s.tsv"}
    live = {str(p.relative_to(root)): p.read_text() for p in sorted((root / "reports").glob("pretrain/live/*/*.json"))}
    return {"metrics": metrics_without({**metrics_files(root), **live}, TIMING), "csv": csv}


def lock_stages(root: Path) -> set[str]:
    lock = root / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.is_file() else set()


# ----------------------------------------------------------------------------------------------- kill -9


def kill_when(root: Path, args: list[str], ready: Callable[[], bool], log: Path) -> None:
    """Start `dvc repro *args` in its own process group, SIGKILL the whole group as soon as `ready()` holds."""
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", "repro", *args], cwd=root, env=env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"dvc repro {' '.join(args)} ended ({proc.returncode}) before the kill point:\n"
                                     f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no kill point within {TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _any(root: Path, pattern: str) -> Callable[[], bool]:
    return lambda: next(root.glob(pattern), None) is not None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The tiny study run once without interruption (seed 0); the copy is reused by the bad-input tests."""
    root = new_study(tmp_path_factory.mktemp("reference"))
    run(["dvc", "repro"], root)
    commit(root, "repro")
    return root, snapshot(root)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same study (seed 0) killed during corrupt, pretrain@simclr and embed@simclr, then finished with a plain
    `dvc repro`; what was on disk right after each kill is recorded for the tests."""
    root = new_study(tmp_path_factory.mktemp("interrupted"))
    logs = tmp_path_factory.mktemp("logs")
    seen: dict[str, Any] = {"root": root}

    # corrupt: killed once a few corrupted sets are written into its temporary folder
    kill_when(root, ["corrupt"], _any(root, "data/corrupted/.shapes.tmp-*/*/*/meta.json"), logs / "corrupt.log")
    seen["corrupt"] = {"complete": (root / "data/corrupted/shapes").exists(), "lock": lock_stages(root)}

    # pretrain: killed right after its first step checkpoint (checkpoints are written at every step)
    ckpt = root / "models/simclr/last.ckpt"
    kill_when(root, ["pretrain@simclr"], ckpt.is_file, logs / "pretrain.log")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    seen["pretrain"] = {"step": int(state["global_step"]), "encoder": (root / "models/simclr/encoder.pt").exists(),
                        "lock": lock_stages(root)}

    # embed (after corrupt reruns and pretrain resumes): killed once some tables are written
    kill_when(root, ["embed@simclr"], _any(root, "data/embeddings/.simclr.tmp-*/*/*.parquet"), logs / "embed.log")
    seen["resume_log"] = (logs / "embed.log").read_text()
    seen["embed"] = {"complete": (root / "data/embeddings/simclr").exists(), "lock": lock_stages(root),
                     "stale": sorted(p.name for p in (root / "data/embeddings").glob(".simclr.tmp-*"))}

    finish = run(["dvc", "repro"], root)
    seen["finish_log"] = finish.stdout + finish.stderr
    seen["snapshot"] = snapshot(root)
    return seen


def test_kill_during_corrupt_leaves_nothing_that_looks_complete(interrupted: dict[str, Any]) -> None:
    assert interrupted["corrupt"] == {"complete": False, "lock": {"codedeps", "prepare"}}
    assert "Running stage 'corrupt'" in interrupted["resume_log"]  # rerun from scratch by the next `dvc repro`


def test_kill_mid_epoch_then_pretraining_resumes_from_last_ckpt(interrupted: dict[str, Any]) -> None:
    step = interrupted["pretrain"]["step"]
    assert 0 < step < EPOCHS * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH, f"not a mid-epoch checkpoint: {step}"
    assert not interrupted["pretrain"]["encoder"] and "pretrain@simclr" not in interrupted["pretrain"]["lock"]
    assert f"resuming simclr from models/simclr/last.ckpt at step {step}" in interrupted["resume_log"]
    # the checkpoint only serves resumption: gone after success, and never a DVC output
    root = interrupted["root"]
    assert not (root / "models/simclr/last.ckpt").exists()
    assert (root / "models/simclr/encoder.pt").is_file()


def test_kill_during_embed_leaves_nothing_that_looks_complete(interrupted: dict[str, Any]) -> None:
    assert not interrupted["embed"]["complete"] and "embed@simclr" not in interrupted["embed"]["lock"]
    # the killed process's temporary folder was left; the rerun removed it (it lies outside every DVC output)
    assert interrupted["embed"]["stale"], "expected the killed embed's temporary folder"
    assert leftovers(interrupted["root"]) == []


def test_interrupted_study_equals_the_uninterrupted_one(reference: tuple[Path, dict[str, Any]],
                                                        interrupted: dict[str, Any]) -> None:
    # exact equality (CPU, same seed): data order is a function of (seed, epoch), augmentations of (seed, step),
    # optimizer/schedule/history are in the checkpoint, and the corrupted sets are seeded per image
    expected, got = reference[1], interrupted["snapshot"]
    assert got["metrics"].keys() == expected["metrics"].keys() and len(got["metrics"]) >= 9
    for path in expected["metrics"]:
        assert got["metrics"][path] == expected["metrics"][path], path
    assert got["csv"] == expected["csv"]
    # the training log of the resumed run: every step once, the same values (its checkpoint's rows written again)
    assert "reports/pretrain/live/simclr/plots/metrics/ssl_loss.tsv" in got["csv"]
    assert "reports/pretrain/live/simclr/metrics.json" in got["metrics"]


def test_different_seed_gives_different_metrics(reference: tuple[Path, dict[str, Any]],
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    # one pretraining is enough to show that the seed reaches the results (the data, the order, the views); the
    # downstream stages only read what it and `prepare` wrote
    root = new_study(tmp_path_factory.mktemp("seed1"), seed=1)
    run(["dvc", "repro", "pretrain@simclr"], root)
    other, expected = snapshot(root), reference[1]
    path, curve = "reports/pretrain/simclr.json", "reports/pretrain/live/simclr/plots/metrics/ssl_loss.tsv"
    assert other["metrics"][path].keys() == expected["metrics"][path].keys()
    assert other["metrics"][path] != expected["metrics"][path]
    assert other["csv"][curve] != expected["csv"][curve]
    metas = [json.loads((r / "data/datasets/shapes/train/meta.json").read_text()) for r in (root, reference[0])]
    assert metas[0]["sha256"] != metas[1]["sha256"]  # the generated images follow the seed too


# ----------------------------------------------------------------------------------------------- bad inputs


@contextmanager
def restored(root: Path) -> Iterator[None]:
    """Put the copy back as committed after a test that breaks it: DVC removes a stage's outputs before running
    it, so a failed stage leaves them missing; git restores params.yaml and the metrics (`cache: false`), and
    `dvc checkout` the cached outputs."""
    assert not root.resolve().is_relative_to(REPO.resolve()), "only ever reset a temporary copy"
    try:
        yield
    finally:
        run(["git", "checkout", "-q", "--", "."], root)
        run(["dvc", "checkout", "--force", "--quiet"], root)


def lock_without_codedeps(root: Path) -> dict[str, Any]:
    """dvc.lock's stages but `codedeps`, which reruns (and succeeds) before the stage under test whenever params.yaml's
    `methods:` changed: it checks the method names, and records the new `methods` in the lock."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {name: entry for name, entry in stages.items() if name != "codedeps"}


def fails_cleanly(root: Path, args: list[str], *needles: str, extra_env: dict[str, str] | None = None) -> str:
    """`dvc repro *args` must fail with a message containing `needles`, no traceback, dvc.lock untouched (but for
    `codedeps`) and no temporary files; returns the output."""
    lock = lock_without_codedeps(root)
    proc = run(["dvc", "repro", *args], root, check=False, extra_env=extra_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert lock_without_codedeps(root) == lock
    assert leftovers(root) == []
    return out


def set_params(root: Path, **changes: Any) -> None:
    """Set dotted params (`probe.linear.epochs=...`) in the copy's params.yaml."""
    params = read_params(root)
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        node = params
        for part in path:
            node = node.setdefault(part, {})
        node[key] = value
    write_params(root, params)


@pytest.fixture
def study(reference: tuple[Path, dict[str, Any]]) -> Iterator[Path]:
    with restored(reference[0]):
        yield reference[0]


def test_params_yaml_syntax_error(study: Path) -> None:
    (study / "params.yaml").write_text((study / "params.yaml").read_text() + "probe: [unclosed\n")
    fails_cleanly(study, [], "params.yaml")


def test_unknown_dataset_lists_the_valid_ones(study: Path) -> None:
    set_params(study, study__dataset="shapez")
    fails_cleanly(study, ["prepare"], "shapez", "shapes", "cifar10")
    assert not (study / "data/datasets").exists()  # removed by DVC before the run, not rewritten


def test_unknown_key_in_a_params_section(study: Path) -> None:
    set_params(study, probe__knn__kk=5)
    fails_cleanly(study, ["evaluate@simclr"], "probe.knn.kk", "probe.knn.k", "Fix the name")
    assert not (study / "reports/probe/simclr.json").exists()


def test_unknown_key_in_a_method_entry(study: Path) -> None:
    set_params(study, methods__simclr={"module": {"temprature": 0.2}})
    # the first stage that runs (`codedeps`, which reads `methods:`) checks the whole params file and stops
    out = fails_cleanly(study, ["pretrain@simclr"], "methods.simclr.module.temprature", "'temperature'")
    assert "Running stage 'pretrain@simclr'" not in out


def test_wrong_value_type(study: Path) -> None:
    set_params(study, probe__linear__epochs="five")
    fails_cleanly(study, ["evaluate@simclr"], "probe.linear.epochs='five' must be an integer")


def test_negative_epochs(study: Path) -> None:
    set_params(study, pretrain__epochs=-1)
    fails_cleanly(study, ["pretrain@simclr"], "pretrain.epochs=-1 is invalid", "epochs >= 1")
    assert not (study / "models/simclr/last.ckpt").exists()


def test_real_dataset_absent_offline(study: Path) -> None:
    set_params(study, study__dataset="cifar10")
    fails_cleanly(study, ["prepare"], "cifar10", "prepare.download=true")
    assert not (study / "data/datasets").exists() and not (study / "data/raw").exists()


FAKE_MIRROR = '''
import hashlib, os
from pathlib import Path
import sslbench.data.download as download

archive = os.environ.get("SSLBENCH_FAKE_ARCHIVE")


def fetch(url, dest):  # the network is never touched: a "mirror" serving a bad file
    dest.write_bytes(Path(archive).read_bytes() if archive else b"not the published archive")


download.fetch = fetch
if archive:  # a dataset entry whose published checksum is that of a malicious archive
    digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()
    download.RESOURCES["cifar10"] = (download.Resource(("https://example.invalid/c.tar",), "c.tar",
                                                       f"sha256:{digest}", extract=True),)
'''


def fake_mirror(tmp_path: Path, archive: Path | None = None) -> dict[str, str]:
    """Environment that makes every stage process (through `sitecustomize`) download from a fake mirror."""
    (tmp_path / "sitecustomize.py").write_text(FAKE_MIRROR)
    extra = {"PYTHONPATH": str(tmp_path)}
    if archive is not None:
        extra["SSLBENCH_FAKE_ARCHIVE"] = str(archive)
    return extra


def test_download_checksum_mismatch(study: Path, tmp_path: Path) -> None:
    set_params(study, study__dataset="cifar10", prepare__download=True)
    fails_cleanly(study, ["prepare"], "cifar-10-binary.tar.gz", "fails its checksum", "deleted",
                  extra_env=fake_mirror(tmp_path))
    assert not (study / "data/raw").exists() and not (study / "data/datasets").exists()


def test_download_archive_with_path_traversal(study: Path, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        payload = tmp_path / "payload"
        payload.write_text("escaped")
        tar.add(payload, arcname="cifar-10-batches-bin/readme.html")
        tar.add(payload, arcname="../../../../evil.txt")
    set_params(study, study__dataset="cifar10", prepare__download=True)
    fails_cleanly(study, ["prepare"], "refused member", "../../../../evil.txt",
                  extra_env=fake_mirror(tmp_path, archive))
    assert not list(study.parent.rglob("evil.txt")) and not (study / "data/raw").exists()


def test_truncated_parquet(study: Path) -> None:
    table = study / "data/embeddings/simclr/shapes/test.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    # `dvc repro` sees the modified output and rebuilds it ...
    assert "embed@simclr" in would_run(study)
    # ... and the stage forced alone (it declares the folder's manifest, which did not change) names the file and
    # the command that rebuilds it
    fails_cleanly(study, ["--single-item", "--force", "evaluate@simclr"], str(table.relative_to(study)),
                  "changed since `dvc repro embed@simclr` wrote them")


def test_parquet_of_another_method(study: Path) -> None:
    table = study / "data/embeddings/simclr/shapes/test.parquet"
    table.unlink()
    table.write_bytes((study / "data/embeddings/supervised/shapes/test.parquet").read_bytes())
    fails_cleanly(study, ["--single-item", "--force", "evaluate@simclr"], str(table.relative_to(study)),
                  "changed since `dvc repro embed@simclr` wrote them")


def test_missing_encoder(study: Path) -> None:
    encoder = study / "models/simclr/encoder.pt"
    digest = encoder.read_bytes()
    encoder.unlink()
    # the stage alone: DVC refuses to run it without its dependency, naming the file
    fails_cleanly(study, ["--single-item", "embed@simclr"], "No such file or directory", "models/simclr/encoder.pt")
    # the pipeline: DVC restores the encoder from its run cache (same deps and params), it does not retrain
    out = run(["dvc", "repro", "embed@simclr"], study).stdout
    assert "Stage 'pretrain@simclr' is cached - skipping run" in out
    assert "Running stage 'pretrain@simclr'" not in out and encoder.read_bytes() == digest


def test_encoder_of_another_backbone(study: Path) -> None:
    from sslbench.models.encoder import Encoder, EncoderSpec

    path = study / "models/simclr/encoder.pt"
    path.unlink()
    torch.save(Encoder(EncoderSpec(backbone="resnet18")).state_dict(), path)
    fails_cleanly(study, ["--single-item", "embed@simclr"], "models/simclr/encoder.pt does not match",
                  "(backbone 'convnet', width 16", "missing keys", "dvc repro pretrain@simclr")
    assert not (study / "data/embeddings/simclr").exists()


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` unwritable: permission bits for a normal user; root ignores those, so the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("running as root on a filesystem without the immutable flag: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_output_folder_that_cannot_be_written(study: Path) -> None:
    # embed@simclr's output is gone and the folder that receives it is read-only
    shutil.rmtree(study / "data/embeddings/simclr")
    with read_only(study / "data/embeddings"):
        # DVC first tries to restore the output from its run cache, and says it cannot
        fails_cleanly(study, ["--single-item", "embed@simclr"], "data/embeddings/simclr")
        # run for real, the stage stops before embedding anything, naming the folder and the fix
        fails_cleanly(study, ["--single-item", "--force", "embed@simclr"],
                      "cannot write data/embeddings/simclr", "make that folder writable")
    assert not (study / "data/embeddings/simclr").exists()


def test_pretrain_output_folder_that_cannot_be_written(study: Path) -> None:
    # pretrain@simclr's metrics file is gone and the folder that receives it is read-only: the stage stops before
    # training (no checkpoint, no progress line) rather than after the whole run
    (study / "reports/pretrain/simclr.json").unlink()
    with read_only(study / "reports/pretrain"):
        out = fails_cleanly(study, ["--single-item", "--force", "pretrain@simclr"],
                            "cannot write reports/pretrain/simclr.json", "make that folder writable")
    assert "pretrain@simclr: " not in out and not (study / "models/simclr/last.ckpt").exists()
    # no training log either (DVC, which deleted the stage's outputs first, leaves their empty parent folders)
    assert not [p for p in (study / "reports/pretrain/live/simclr").rglob("*") if p.is_file()]
