"""The embedding loop: a frozen encoder over every split the study uses, streamed into Parquet tables.

`plan_targets` opens (and checks) every split before any encoding: the main dataset's, the OOD and transfer sets'
and every corrupted set under `data/corrupted/<dataset>/`, whose `index` column is the source test-image index (the
corrupted set's meta `index`), so that consumers pair clean and corrupted images by index, not by order; the
`index` column of a dataset split is the image's row in that split. `embed_split` then reads and embeds a split
batch by batch (`iter_embeddings`: eval mode, inference mode) and writes it in row groups of bounded size, so
neither all images nor all embeddings of a split are ever held in memory.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslbench.data.corruptions import CORRUPT_REBUILD, read_corrupted_meta, verify_sets
from sslbench.data.splits import SplitSource, open_split
from sslbench.errors import UserError
from sslbench.eval.semisup import to_float_images
from sslbench.io import EmbeddingWriter, read_json
from sslbench.models.encoder import Encoder

ROW_GROUP_BYTES = 64 << 20  # embeddings buffered before each Parquet row group is written


@dataclass(frozen=True)
class Target:
    """One table to write: `dataset`/`split` (metadata and path names), its images and its `index` column."""

    dataset: str
    split: str
    source: SplitSource
    index: np.ndarray


def open_directory(directory: Path, rebuild: str) -> SplitSource:
    """`open_split` for a split folder outside `data/datasets/` (a corrupted set), in either on-disk form.

    `open_split` only resolves `<data>/datasets/<dataset>/<split>`; corrupted sets live under
    `data/corrupted/<dataset>/<corruption>/<severity>/` (`images.npy` + `labels.npy`, or `index.csv` for
    ImageNet-C). Candidate for `sslbench.data.splits` as `open_split_dir` (then `open_split` would call it).
    """
    meta = read_json(directory / "meta.json", rebuild)
    try:
        if (directory / "images.npy").is_file():
            array = np.load(directory / "images.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(directory / "labels.npy", allow_pickle=False).astype(np.int64)
            if array.ndim != 4 or array.dtype != np.uint8 or len(array) != len(labels):
                raise ValueError(f"images {array.dtype} {array.shape} vs labels {labels.shape}")
            return SplitSource(directory, labels, meta, _array=array)
        with (directory / "index.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        paths = [Path(meta["root"]) / row["path"] for row in rows]
        return SplitSource(directory, np.asarray([int(r["label"]) for r in rows], np.int64), meta, _paths=paths)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"corrupted set {directory} is unreadable ({err}); run `{rebuild}`") from err


def plan_targets(
    data_root: Path,
    dataset: str,
    splits: Sequence[str],
    ood: Mapping[str, Mapping[str, str]],
    transfer: Sequence[str],
) -> list[Target]:
    """Open every split the study uses (main, OOD, transfer, corrupted), checking each before any work.

    `splits` are the main dataset's (train, val, test); corrupted sets index into the last of them. Raises
    `UserError` naming a missing split and `dvc repro prepare` (or `dvc repro corrupt`), or a corrupted set file
    that does not match the family manifest `data/corrupted/<dataset>/meta.json` (`verify_sets`).
    """
    wanted: dict[tuple[str, str], None] = {(dataset, s): None for s in splits}
    for group in ood.values():
        wanted.update({(name, split): None for name, split in group.items()})
    for name in transfer:
        wanted.update({(name, s): None for s in ("train", "val", "test")})
    targets: list[Target] = []
    for name, split in wanted:
        source = open_split(data_root, name, split)
        targets.append(Target(name, split, source, np.arange(len(source), dtype=np.int64)))
    test_len = next(len(t.source) for t in targets if (t.dataset, t.split) == (dataset, splits[-1]))
    root = data_root / "corrupted" / dataset
    if root.is_dir():  # dvc.yaml declares only the family meta.json: every set file must match its manifest
        verify_sets(root, read_corrupted_meta(data_root, dataset))
    for meta_path in sorted(root.glob("*/*/meta.json")):
        directory = meta_path.parent
        source = open_directory(directory, CORRUPT_REBUILD)
        index = np.asarray(source.meta.get("index", []), dtype=np.int64)
        if len(index) != len(source) or (len(index) and (index.min() < 0 or index.max() >= test_len)):
            raise UserError(
                f"corrupted set {directory}: its meta.json `index` must give one source test-image index "
                f"(0..{test_len - 1}) per image; run `{CORRUPT_REBUILD}`"
            )
        split = f"{directory.parent.name}_{directory.name}"
        targets.append(Target(f"{dataset}_c", split, source, index))
    return targets


class _Batches(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Consecutive image batches of a split, item i = (batch i, its first row): float (B, 3, H, W) in [0, 1] for a
    CPU encoder, uint8 (B, H, W, 3) for a GPU one (converted on the device)."""

    def __init__(self, source: SplitSource, batch_size: int, device: torch.device) -> None:
        self.source, self.batch_size, self.device = source, batch_size, device

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        start = i * self.batch_size
        images = self.source.images(slice(start, min(start + self.batch_size, len(self.source))))
        if self.device.type == "cpu":
            return to_float_images(images), start
        return torch.from_numpy(np.array(images, copy=True)), start  # a copy: memory maps are read-only


def iter_embeddings(
    encoder: Encoder, source: SplitSource, *, batch_size: int, device: str = "cpu", num_workers: int = 0
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """Yield `(first_row, embedding, mu, logvar)` per batch of `source` (eval mode, inference mode, CPU tensors)."""
    dev = torch.device(device)
    loader = torch.utils.data.DataLoader(
        _Batches(source, batch_size, dev), batch_size=None, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    encoder.eval()
    with torch.inference_mode():
        for images, start in loader:
            if dev.type == "cpu":
                x = images
            else:
                x = images.to(dev, non_blocking=True).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
            out = encoder(x)
            mu = None if out.mu is None else out.mu.cpu()
            logvar = None if out.logvar is None else out.logvar.cpu()
            yield int(start), out.embedding.cpu(), mu, logvar


def embed_split(
    encoder: Encoder,
    target: Target,
    writer: EmbeddingWriter,
    *,
    batch_size: int,
    device: str = "cpu",
    num_workers: int = 0,
    progress: Any = None,
) -> int:
    """Embed `target` into `writer`, buffering up to `ROW_GROUP_BYTES` of embeddings per Parquet row group.

    `progress` (a bar of `sslbench.progress.progress`, or None) is advanced by the number of images done. Returns
    the rows written.
    """
    width = writer.dim + 2 * (writer.stochastic_dim or 0)
    group_rows = max(batch_size, ROW_GROUP_BYTES // (4 * width))
    buffer: list[tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
    buffered = 0

    def flush() -> None:
        nonlocal buffered
        if not buffer:
            return
        rows = np.concatenate([np.arange(s, s + len(e)) for s, e, _, _ in buffer])
        stochastic = buffer[0][2] is not None

        # NumPy concatenation (one thread): torch.cat's parallel copy stalls when the cores are shared with other jobs
        embedding = np.concatenate([e.numpy() for _, e, _, _ in buffer])
        mu = np.concatenate([m.numpy() for _, _, m, _ in buffer if m is not None]) if stochastic else None
        logvar = np.concatenate([v.numpy() for _, _, _, v in buffer if v is not None]) if stochastic else None
        writer.write(target.index[rows], target.source.labels[rows], embedding, mu, logvar)
        buffer.clear()
        buffered = 0

    for item in iter_embeddings(encoder, target.source, batch_size=batch_size, device=device,
                                num_workers=num_workers):
        buffer.append(item)
        buffered += len(item[1])
        if progress is not None:
            progress.update(len(item[1]))
        if buffered >= group_rows:
            flush()
    flush()
    return writer.rows


def embed_targets(
    encoder: Encoder,
    targets: Sequence[Target],
    folder: Path,
    *,
    method: str,
    encoder_sha256: str,
    batch_size: int,
    device: str = "cpu",
    num_workers: int = 0,
    progress: Any = None,
    dtype: str = "float32",
) -> dict[str, int]:
    """Write `<folder>/<dataset>/<split>.parquet` for every target, in order (`embed_split`); returns the rows of
    each table by `<dataset>/<split>`. `progress` (a bar of `sslbench.progress.progress`: a tqdm bar on a terminal,
    a few log lines otherwise; or None) shows the table being written. `dtype`: the tables' storage type
    (`io.EMBED_DTYPES`; float16 halves them on disk)."""
    spec = encoder.spec
    rows: dict[str, int] = {}
    for target in targets:
        if progress is not None:
            progress.set_postfix_str(f"{target.dataset}/{target.split}")
        with EmbeddingWriter(
            folder / target.dataset / f"{target.split}.parquet",
            method=method,
            dataset=target.dataset,
            split=target.split,
            dim=encoder.embedding_dim,
            stochastic_space=spec.stochastic_space,
            stochastic_dim=encoder.stochastic_dim,
            encoder_sha256=encoder_sha256,
            dtype=dtype,
        ) as writer:
            embed_split(encoder, target, writer, batch_size=batch_size, device=device, num_workers=num_workers,
                        progress=progress)
        rows[f"{target.dataset}/{target.split}"] = writer.rows
    return rows
