"""`embed@<method>`: embed every split the study uses with the frozen encoder, once.

python -m sslbench.stages.embed method=simclr dataset=shapes embed.batch_size=256

Reads `models/<method>/` (`load_encoder`: eval mode, no augmentation) and writes, under
`data/embeddings/<method>/`, one Parquet table per split (`io.EmbeddingWriter`: columns index, label, embedding
[+ mu, logvar of the stochastic space for Bayes models]; metadata method, dataset, split, dim, stochastic space,
encoder sha256):
- `<dataset>/{train,val,test}.parquet` of the main dataset (split names from the dataset config);
- `<ood_set>/<split>.parquet` for every `{dataset: split}` of `dataset.ood.{validation,near,far}`;
- `<transfer_set>/{train,val,test}.parquet` for every `dataset.transfer` set;
- `<dataset>_c/<corruption>_<severity>.parquet` for every corrupted set present under
  `data/corrupted/<dataset>/<corruption>/<severity>/`, indexed by source test image (`sslbench.embedding`).
Last comes `manifest.json`, the sha256 of every table (`io.write_embedding_manifest`), which `evaluate@<method>`
declares and checks instead of the folder.

Every source is opened (and checked) before any encoding (`sslbench.embedding.plan_targets`); the whole
`data/embeddings/<method>/` folder is written under a temporary name and renamed into place at the end, so a failed
run leaves no table that looks complete.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sslbench.accel import resolve_device
from sslbench.data.corruptions import CORRUPT_REBUILD
from sslbench.embedding import embed_targets, plan_targets
from sslbench.errors import UserError
from sslbench.io import EMBED_DTYPES, atomic_path, ensure_writable, sha256_file, write_embedding_manifest
from sslbench.models.encoder import ENCODER_FILE, load_encoder
from sslbench.paths import require_method
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.embed")


def run(cfg: DictConfig) -> dict[str, Any]:
    method = require_method(cfg)
    batch_size, num_workers = int(cfg.embed.batch_size), int(cfg.embed.num_workers)
    if batch_size < 1 or num_workers < 0:
        raise UserError(f"embed.batch_size must be >= 1 and embed.num_workers >= 0 (got {batch_size}, {num_workers})")
    dtype = str(cfg.embed.dtype)
    if dtype not in EMBED_DTYPES:
        raise UserError(f"embed.dtype={dtype!r} is not a storage type: use one of {', '.join(EMBED_DTYPES)}")
    device = resolve_device(str(cfg.embed.device))
    data_root = Path(cfg.paths.data)
    model_dir = Path(cfg.paths.models) / method
    ensure_writable(data_root / "embeddings" / method)
    encoder, _ = load_encoder(model_dir, method)
    dataset = str(cfg.dataset.name)
    targets = plan_targets(
        data_root,
        dataset,
        [str(cfg.dataset.train), str(cfg.dataset.val), str(cfg.dataset.test)],
        {group: dict(cfg.dataset.ood[group] or {}) for group in ("validation", "near", "far")},
        [str(name) for name in cfg.dataset.transfer],
    )
    n_corrupted = sum(t.dataset == f"{dataset}_c" for t in targets)
    if n_corrupted == 0:
        log.info("no corrupted sets under %s (run `%s` to build them)", data_root / "corrupted" / dataset,
                 CORRUPT_REBUILD)
    # NHWC convolution weights (activations follow): ~2x the eval throughput of NCHW on this 2-core CPU (oneDNN)
    # and faster on tensor-core GPUs; the embeddings differ from NCHW ones by float rounding only
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    spec = encoder.spec
    sha = sha256_file(model_dir / ENCODER_FILE)
    total = sum(len(t.source) for t in targets)
    from sslbench.progress import progress

    start = time.perf_counter()
    out_root = data_root / "embeddings" / method
    with atomic_path(out_root) as tmp, progress(total=total, unit="img", desc=f"embed {method}") as bar:
        rows = embed_targets(encoder, targets, tmp, method=method, encoder_sha256=sha, batch_size=batch_size,
                             device=device, num_workers=num_workers, progress=bar, dtype=dtype)
        write_embedding_manifest(tmp)  # last: the sha256 of every table, on which evaluate@<method> depends
    seconds = time.perf_counter() - start
    log.info(
        "embedded %d tables (%d corrupted), %d images, dim %d%s in %.1fs (%.0f img/s) -> %s",
        len(targets), n_corrupted, total, encoder.embedding_dim,
        f" + {spec.stochastic_space} mu/logvar {encoder.stochastic_dim}" if encoder.stochastic_dim else "",
        seconds, total / max(seconds, 1e-9), out_root,
    )
    return {"tables": rows, "images": total, "seconds": seconds}


main = stage_main(run, "embed")

if __name__ == "__main__":
    main()
