"""Real datasets published as image files with list or label files: TinyImageNet, ImageNet, DTD (Textures),
Flowers-102, SUN397, Places365.

Small sets (TinyImageNet, DTD, Flowers-102) are decoded once into `images.npy` at the study resolution: TinyImageNet
is 110 k images of 64×64 (1.35 GB at 64 px), which training reads many times, so decoding JPEGs on every access
would cost more than the copy. Large sets (ImageNet, SUN397, Places365) are written as an index of paths relative
to the located root and decoded on access.

Readers parse the official list/label files directly. torchvision's `DTD`, `Flowers102`, `SUN397` and `Places365`
classes need fixed sub-folder names, MD5-check their metadata files on every construction (so a re-saved copy or a
test fixture is refused), and SUN397's class ignores the official partitions; importing torchvision also costs ~5 s.
Flowers-102's class names are taken from torchvision (the dataset itself publishes none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslbench.data.real_common import (
    DatasetSpec,
    Read,
    RealContext,
    Split,
    carved_note,
    check_listed_files,
    first_with,
    list_images,
    train_val_test,
)
from sslbench.errors import UserError

# ----------------------------------------------------------------------------------------------- TinyImageNet


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path} is missing; the copy is incomplete")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_tinyimagenet(root: Path, ctx: RealContext) -> Read:
    wnids = sorted(_read_lines(root / "wnids.txt"))  # label = position in sorted wnids, as ImageFolder on train/
    label_of = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (root / "words.txt").is_file():
        for line in _read_lines(root / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    train_paths: list[str] = []
    train_labels: list[int] = []
    for wnid in wnids:
        images = list_images(root / "train" / wnid / "images")
        if not images:
            raise UserError(f"tinyimagenet: no images in {root / 'train' / wnid / 'images'}; the copy is incomplete")
        train_paths += [p.relative_to(root).as_posix() for p in images]
        train_labels += [label_of[wnid]] * len(images)
    val_paths: list[str] = []
    val_labels: list[int] = []
    for line in _read_lines(root / "val" / "val_annotations.txt"):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise UserError(f"tinyimagenet: bad line in {root / 'val' / 'val_annotations.txt'}: {line!r}")
        val_paths.append(f"val/images/{fields[0]}")
        val_labels.append(label_of[fields[1]])
    check_listed_files(root, val_paths, "tinyimagenet val/val_annotations.txt", ctx.seed)
    splits = train_val_test(
        np.asarray(train_labels, np.int64), np.asarray(val_labels, np.int64), 0.1, ctx.seed,
        train_paths=train_paths, test_paths=val_paths, test_source="val",
        test_origin="the official val split (val/ + val_annotations.txt): the official test split has no labels",
    )
    return Read(wnids, splits, {"class_names": [words.get(w, w) for w in wnids]})


TINYIMAGENET = DatasetSpec(
    name="tinyimagenet",
    title="Tiny ImageNet (200 classes)",
    homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    layout="""
{folder}/tiny-imagenet-200/wnids.txt, words.txt
{folder}/tiny-imagenet-200/train/<wnid>/images/<wnid>_<i>.JPEG
{folder}/tiny-imagenet-200/val/images/val_<i>.JPEG + val/val_annotations.txt
""",
    find_root=lambda folder: first_with(folder, ["tiny-imagenet-200", ""],
                                        ["wnids.txt", "train", "val/val_annotations.txt"]),
    read=_read_tinyimagenet,
)

# ----------------------------------------------------------------------------------------------- ImageNet


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if e.is_dir())


def _read_imagenet(root: Path, ctx: RealContext) -> Read:
    classes = _class_folders(root / "train")
    if not classes:
        raise UserError(f"imagenet: {root / 'train'} has no class folders")
    val_classes = _class_folders(root / "val")
    if not val_classes:
        raise UserError(
            f"imagenet: {root / 'val'} has no class folders. The official validation archive is flat; sort it "
            "into val/<wnid>/ folders first (torchvision.datasets.ImageNet does it from the devkit, or use the "
            "widely used valprep.sh)"
        )
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise UserError(f"imagenet: val classes not in train: {unknown[:5]}")
    label_of = {c: i for i, c in enumerate(classes)}

    def scan(split: str) -> tuple[list[str], np.ndarray]:
        paths: list[str] = []
        labels: list[int] = []
        for c in classes if split == "train" else val_classes:
            found = list_images(root / split / c)
            paths += [p.relative_to(root).as_posix() for p in found]
            labels += [label_of[c]] * len(found)
        return paths, np.asarray(labels, np.int64)

    train_paths, train_labels = scan("train")
    val_paths, val_labels = scan("val")
    splits = train_val_test(
        train_labels, val_labels, 0.01, ctx.seed, train_paths=train_paths, test_paths=val_paths, test_source="val",
        test_origin="the official validation split (val/<wnid>/): the official test split has no public labels",
    )
    return Read(classes, splits)


IMAGENET = DatasetSpec(
    name="imagenet",
    title="ImageNet (ILSVRC-2012)",
    homepage="https://image-net.org/download.php",
    layout="""
{folder}/train/<wnid>/*.JPEG
{folder}/val/<wnid>/*.JPEG   (validation images sorted into class folders)
""",
    find_root=lambda folder: first_with(folder, ["", "ILSVRC/Data/CLS-LOC", "ILSVRC2012"], ["train", "val"]),
    read=_read_imagenet,
    large=True,
    manual="it needs a registered account; extract the train and val archives into class folders",
    # every split as ImageNet-C's clean images were made (shorter side 256, centre crop 224), so that clean and
    # corrupted errors are measured on identically processed images; training crops are drawn from the same view
    view="center_crop",
)

# ----------------------------------------------------------------------------------------------- DTD


def _read_dtd(root: Path, ctx: RealContext) -> Read:
    classes = _class_folders(root / "images")
    label_of = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {}
    for split in ("train", "val", "test"):
        listed = _read_lines(root / "labels" / f"{split}1.txt")  # lines "<class>/<class>_<id>.jpg"
        labels = []
        for rel in listed:
            cls = rel.split("/")[0]
            if cls not in label_of:
                raise UserError(f"dtd: {root / 'labels' / f'{split}1.txt'} names an unknown class in {rel!r}")
            labels.append(label_of[cls])
        paths = [f"images/{rel}" for rel in listed]
        check_listed_files(root, paths, f"dtd labels/{split}1.txt", ctx.seed)
        splits[split] = Split(np.asarray(labels, np.int64), split, np.arange(len(paths)),
                              f"the official {split} split of partition 1 (labels/{split}1.txt)", paths=paths)
    return Read(classes, splits)


DTD = DatasetSpec(
    name="dtd",
    title="Describable Textures Dataset (DTD, Textures)",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
    layout="""
{folder}/dtd/images/<class>/<class>_<id>.jpg
{folder}/dtd/labels/{{train1.txt, val1.txt, test1.txt}}   (dtd-r1.0.1.tar.gz extracted)
""",
    find_root=lambda folder: first_with(folder, ["dtd", "", "dtd/dtd"], ["images", "labels/train1.txt"]),
    read=_read_dtd,
)

# ----------------------------------------------------------------------------------------------- Flowers-102


def _flowers_classes() -> list[str]:
    from torchvision.datasets import Flowers102

    names = list(getattr(Flowers102, "classes", []))
    return names if len(names) == 102 else [f"flower {i:03d}" for i in range(1, 103)]


def _read_flowers102(root: Path, ctx: RealContext) -> Read:
    from scipy.io import loadmat

    labels = loadmat(root / "imagelabels.mat")["labels"].reshape(-1).astype(np.int64) - 1  # classes from 1
    setid = loadmat(root / "setid.mat")
    splits: dict[str, Split] = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = np.sort(setid[key].reshape(-1).astype(np.int64))  # image numbers from 1
        if ids.min() < 1 or ids.max() > len(labels):
            raise UserError(f"flowers102: setid.mat {key} refers to images outside 1..{len(labels)}")
        paths = [f"jpg/image_{i:05d}.jpg" for i in ids]
        check_listed_files(root, paths, f"flowers102 setid.mat {key}", ctx.seed)
        splits[split] = Split(labels[ids - 1], split, ids - 1, f"the official {split} split (setid.mat {key})",
                              paths=paths)
    return Read(_flowers_classes(), splits, {"index_note": "`index` = image number - 1"})


FLOWERS102 = DatasetSpec(
    name="flowers102",
    title="Oxford Flowers-102",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
    layout="{folder}/jpg/image_<00001…08189>.jpg, {folder}/imagelabels.mat, {folder}/setid.mat",
    find_root=lambda folder: first_with(folder, ["", "flowers-102"], ["jpg", "imagelabels.mat", "setid.mat"]),
    read=_read_flowers102,
)

# ----------------------------------------------------------------------------------------------- SUN397

_SUN_PARTITION_DIRS = ("", "Partitions", "SUN397", "SUN397/Partitions")


def _sun_partitions(folder: Path) -> Path | None:
    return first_with(folder, _SUN_PARTITION_DIRS, ["Training_01.txt", "Testing_01.txt"])


def _find_sun397(folder: Path) -> Path | None:
    root = first_with(folder, ["SUN397", ""], ["ClassName.txt"])
    return root if root is not None and _sun_partitions(folder) is not None else None


def _read_sun397(root: Path, ctx: RealContext) -> Read:
    keys = _read_lines(root / "ClassName.txt")  # "/a/abbey", "/a/apartment_building/outdoor", ...
    label_of = {k: i for i, k in enumerate(keys)}
    parts = _sun_partitions(ctx.raw_root / "sun397")
    if parts is None:
        raise UserError(f"sun397: Training_01.txt / Testing_01.txt not found under {ctx.raw_root / 'sun397'}")

    def listed(name: str) -> tuple[list[str], np.ndarray]:
        lines = _read_lines(parts / name)  # "/a/abbey/sun_aaalbzqrimafwbiv.jpg"
        labels = []
        for line in lines:
            key = line.rsplit("/", 1)[0]
            if key not in label_of:
                raise UserError(f"sun397: {parts / name} names an unknown class in {line!r}")
            labels.append(label_of[key])
        paths = [line.lstrip("/") for line in lines]
        check_listed_files(root, paths, f"sun397 {name}", ctx.seed)
        return paths, np.asarray(labels, np.int64)

    train_paths, train_labels = listed("Training_01.txt")
    test_paths, test_labels = listed("Testing_01.txt")
    splits = train_val_test(
        train_labels, test_labels, 0.1, ctx.seed, train_paths=train_paths, test_paths=test_paths,
        test_origin="the official test list of partition 1 (Testing_01.txt)",
    )
    splits["train"].origin = "Training_01.txt minus `val`"
    splits["val"].origin = carved_note(0.1, ctx.seed, "Training_01.txt")
    return Read([k.split("/", 2)[2] for k in keys], splits, {"partition": 1})


SUN397 = DatasetSpec(
    name="sun397",
    title="SUN397",
    homepage="https://vision.princeton.edu/projects/2010/SUN/",
    layout="""
{folder}/SUN397/ClassName.txt, {folder}/SUN397/<letter>/<class>/sun_*.jpg   (SUN397.tar.gz extracted)
{folder}/Training_01.txt, {folder}/Testing_01.txt   (Partitions.zip extracted; also accepted in Partitions/ or SUN397/)
""",
    find_root=_find_sun397,
    read=_read_sun397,
    large=True,
)

# ----------------------------------------------------------------------------------------------- Places365

_PLACES_TRAIN_DIRS = ("data_256_standard", "data_256", "data_large_standard", "data_large")
_PLACES_VAL_DIRS = ("val_256", "val_large")
_PLACES_LISTS = ("categories_places365.txt", "places365_train_standard.txt", "places365_val.txt")


def _places_dirs(root: Path) -> tuple[str, str] | None:
    train = next((d for d in _PLACES_TRAIN_DIRS if (root / d).is_dir()), None)
    val = next((d for d in _PLACES_VAL_DIRS if (root / d).is_dir()), None)
    return (train, val) if train and val else None


def _find_places365(folder: Path) -> Path | None:
    root = first_with(folder, ["", "places365"], _PLACES_LISTS)
    return root if root is not None and _places_dirs(root) is not None else None


def _read_places365(root: Path, ctx: RealContext) -> Read:
    dirs = _places_dirs(root)
    assert dirs is not None
    train_dir, val_dir = dirs
    categories = {}
    for line in _read_lines(root / "categories_places365.txt"):  # "/a/airfield 0"
        name, idx = line.rsplit(" ", 1)
        categories[int(idx)] = name
    if sorted(categories) != list(range(len(categories))):
        raise UserError(f"places365: {root / 'categories_places365.txt'} does not number classes 0..N-1")
    classes = [categories[i].split("/", 2)[2] for i in range(len(categories))]

    def listed(name: str, prefix: str) -> tuple[list[str], np.ndarray]:
        paths, labels = [], []
        for line in _read_lines(root / name):  # "/a/airfield/00000001.jpg 0" or "Places365_val_00000001.jpg 165"
            rel, idx = line.rsplit(" ", 1)
            paths.append(f"{prefix}/{rel.lstrip('/')}")
            labels.append(int(idx))
        check_listed_files(root, paths, f"places365 {name}", ctx.seed)
        return paths, np.asarray(labels, np.int64)

    train_paths, train_labels = listed("places365_train_standard.txt", train_dir)
    val_paths, val_labels = listed("places365_val.txt", val_dir)
    splits = train_val_test(
        train_labels, val_labels, 0.01, ctx.seed, train_paths=train_paths, test_paths=val_paths, test_source="val",
        test_origin="the official validation split (places365_val.txt): the official test labels are not public",
    )
    return Read(classes, splits, {"images": f"{train_dir}/, {val_dir}/"})


PLACES365 = DatasetSpec(
    name="places365",
    title="Places365-Standard",
    homepage="http://places2.csail.mit.edu/download.html",
    layout="""
{folder}/{{categories_places365.txt, places365_train_standard.txt, places365_val.txt}}
    (filelist_places365-standard.tar extracted)
{folder}/data_256/<letter>/<class>/*.jpg   (train_256_places365standard.tar; torchvision's data_256_standard/, or the
    high-resolution data_large/, also accepted)
{folder}/val_256/Places365_val_*.jpg   (val_256.tar; or val_large/)
""",
    find_root=_find_places365,
    read=_read_places365,
    large=True,
)

SPECS = (TINYIMAGENET, IMAGENET, DTD, FLOWERS102, SUN397, PLACES365)
