"""`evaluate@<method>`: the probe, robustness and ood evaluations of one method, in one process.

python -m sslbench.stages.evaluate method=simclr dataset=shapes probe.knn.k=10

The DVC stage of the default DAG for these three areas: each area keeps its library module
(`sslbench.areas.probe`, `.robustness`, `.ood`), config section, outputs and metrics file, and runs alone with the
same keys (`sslbench.stages.probe`, `.robustness`, `.ood`), but one process runs all three. Separate DVC stages
cost, per method and area, a Python start-up with torch and scikit-learn (~3-5 s) and DVC's own bookkeeping (~2 s,
most of it rewriting dvc.lock), which together outweighed the evaluations themselves on the embedded default.

The settings of all three areas are checked before any of them runs, so that a bad value in, say, `ood:` does not
leave a fresh probe report beside a failed stage. The three areas fit the same linear probe (`probe.linear`, the
study seed) on the same train and val embeddings: it is trained once here and passed to each.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslbench.areas import ood, probe, robustness
from sslbench.areas.common import main_probes
from sslbench.data.splits import classes_on_disk
from sslbench.io import verify_embeddings
from sslbench.paths import require_method
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.evaluate")


def verify_inputs(cfg: DictConfig) -> None:
    """The method's embeddings, and the `supervised` reference's where present, against their manifests: dvc.yaml
    declares only each folder's `manifest.json`, so a table changed behind DVC's back is caught here."""
    root, method = Path(cfg.paths.data) / "embeddings", require_method(cfg)
    verify_embeddings(root / method, method)
    if method != robustness.SUPERVISED and (root / robustness.SUPERVISED).is_dir():
        verify_embeddings(root / robustness.SUPERVISED, robustness.SUPERVISED)


def run(cfg: DictConfig) -> dict[str, Any]:
    classes_on_disk(cfg)  # a copy with a subset of the classes is evaluated over the classes it has
    # every area's settings before any work (each area checks its input files itself, before its own work)
    probe_settings, robustness_settings, ood_settings = probe.settings(cfg), robustness.settings(cfg), ood.settings(cfg)
    verify_inputs(cfg)
    start = time.perf_counter()
    # the probe area trains on probe.device, robustness and ood on the CPU: one probe per distinct device
    probes = main_probes(probe_settings.study, probe_settings.linear, [probe_settings.device, "cpu"])
    metrics: dict[str, Any] = {}
    metrics.update(probe.run(probe_settings, probes[probe_settings.device]))
    metrics.update(robustness.run(robustness_settings, probes["cpu"]))
    metrics.update(ood.run(ood_settings, probes["cpu"]))
    log.info("evaluate@%s: probe, robustness and ood in %.1fs", probe_settings.study.method,
             time.perf_counter() - start)
    return metrics


main = stage_main(run, "evaluate")

if __name__ == "__main__":
    main()
