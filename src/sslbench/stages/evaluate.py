"""`evaluate@<method>`: the probe, robustness and ood evaluations of one method, in one process.

python -m sslbench.stages.evaluate method_name=simclr dataset=shapes probe.knn.k=10

The DVC stage of the default DAG for these three areas (README, "Design changes"): each area is still its own
module with its own `run(cfg)`, config section, outputs and metrics file (`sslbench.stages.probe`, `.robustness`,
`.ood`, each runnable alone with the same keys), but one process runs all three. Separate DVC stages cost, per
method and area, a Python start-up with torch and scikit-learn (~3-5 s) and DVC's own bookkeeping (~2 s, most of it
rewriting dvc.lock), which together outweighed the evaluations themselves on the embedded default.

The settings of all three areas are checked before any of them runs, so that a bad value in, say, `ood:` does not
leave a fresh probe report beside a failed stage.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslbench.eval.linear import reuse_probes
from sslbench.io import verify_embeddings
from sslbench.stages import ood, probe, robustness
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.evaluate")


def check(cfg: DictConfig) -> None:
    """Every area's settings, before any work (each area checks its input files itself, before its own work)."""
    probe.require_method(cfg)
    probe.check_settings(cfg.probe)
    robustness.check_settings(cfg)
    ood.check_settings(cfg)


def verify_inputs(cfg: DictConfig) -> None:
    """The method's embeddings, and the `supervised` reference's where present, against their manifests: dvc.yaml
    declares only each folder's `manifest.json`, so a table changed behind DVC's back is caught here."""
    root = Path(cfg.paths.data) / "embeddings"
    verify_embeddings(root / str(cfg.method_name), str(cfg.method_name))
    if str(cfg.method_name) != robustness.SUPERVISED and (root / robustness.SUPERVISED).is_dir():
        verify_embeddings(root / robustness.SUPERVISED, robustness.SUPERVISED)


def run(cfg: DictConfig) -> dict[str, Any]:
    check(cfg)
    verify_inputs(cfg)
    start = time.perf_counter()
    metrics: dict[str, Any] = {}
    with reuse_probes():  # the three areas train the same §2.1 probe on the same embeddings: train it once
        for area in (probe, robustness, ood):
            metrics.update(area.run(cfg))
    log.info("evaluate@%s: probe, robustness and ood in %.1fs", cfg.method_name, time.perf_counter() - start)
    return metrics


main = stage_main(run, "evaluate")

if __name__ == "__main__":
    main()
