"""Corrupted sets: names and checks, per-image seeding (byte-identical, all 19), resizing, real-set readers, the
family manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslbench.data import corruptions as C
from sslbench.errors import UserError
from sslbench.io import sha256_file, write_json, write_split


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_names_and_groups() -> None:
    assert len(C.CORRUPTIONS) == 19 and len(C.COMMON) == 15 and C.EXTRA == (
        "speckle_noise", "gaussian_blur", "spatter", "saturate")
    from imagecorruptions import get_corruption_names

    assert list(C.CORRUPTIONS) == get_corruption_names("all")  # same names and order as the library
    assert C.resolve_corruptions("all") == list(C.CORRUPTIONS)
    assert C.resolve_corruptions(["fog", "noise", "fog"]) == ["gaussian_noise", "shot_noise", "impulse_noise", "fog"]
    with pytest.raises(UserError, match="unknown corruption 'fogg'; valid corruptions: gaussian_noise, .*, saturate"):
        C.resolve_corruptions(["fogg"])
    assert C.resolve_severities("all") == [1, 2, 3, 4, 5]
    assert C.resolve_severities([5, 1]) == [1, 5]
    for bad in (0, 6, "x", [1, 7], 2.5):
        with pytest.raises(UserError, match="integers 1..5"):
            C.resolve_severities(bad)  # type: ignore[arg-type]


def test_select_indices() -> None:
    assert C.select_indices(10, 3, "first", 0).tolist() == [0, 1, 2]
    picked = C.select_indices(100, 5, "random", 0)
    assert picked.tolist() == sorted(picked.tolist()) and len(set(picked.tolist())) == 5
    assert picked.tolist() == C.select_indices(100, 5, "random", 0).tolist()
    assert picked.tolist() != C.select_indices(100, 5, "random", 1).tolist()
    assert C.select_indices(4, None, "first", 0).tolist() == [0, 1, 2, 3]
    with pytest.raises(UserError):
        C.select_indices(4, 0, "first", 0)


def test_glass_blur_and_impulse_noise_escape_np_random_seed() -> None:
    """Why they get an explicit seed: np.random.seed alone does not make them repeatable."""
    from imagecorruptions import corrupt

    image = _images(1)[0]
    C.corrupt_image(image, "glass_blur", 3, seed=7)  # compile (or load) the numba kernel with the cache on
    for name in ("glass_blur", "impulse_noise"):
        outs = []
        for _ in range(2):
            np.random.seed(0)  # noqa: NPY002
            outs.append(corrupt(image, severity=3, corruption_name=name))
        assert not np.array_equal(outs[0], outs[1]), name
        ours = [C.corrupt_image(image, name, 3, seed=7) for _ in range(2)]
        assert np.array_equal(ours[0], ours[1]), name


def test_all_19_are_byte_identical_across_runs_and_worker_counts() -> None:
    images, index = _images(3), np.array([5, 9, 2])
    state = np.random.get_state()  # noqa: NPY002

    def run(workers: int, seed: int = 0) -> dict[tuple[str, int], bytes]:
        sets = C.generate_corrupted(images, index, C.CORRUPTIONS, [1, 5], seed=seed, workers=workers, progress=False)
        return {(c, s): out.tobytes() for c, s, out in sets}

    first = run(1)
    assert list(first) == [(c, s) for c in C.CORRUPTIONS for s in (1, 5)]
    assert first == run(1)
    assert first == run(2)
    other = run(1, seed=1)
    for name in ("gaussian_noise", "glass_blur", "impulse_noise", "frost", "spatter"):
        assert other[(name, 5)] != first[(name, 5)], name  # the seed matters
    # the caller's global RNG is untouched
    assert all(np.array_equal(a, b) for a, b in zip(state[1:3], np.random.get_state()[1:3], strict=True))  # noqa: NPY002


def test_an_image_is_corrupted_the_same_whatever_the_subset() -> None:
    images, index = _images(3), np.array([5, 9, 2])
    whole = C.corrupt_batch(images, index, "glass_blur", 2, seed=0)
    alone = C.corrupt_batch(images[1:2], index[1:2], "glass_blur", 2, seed=0)
    assert np.array_equal(whole[1], alone[0])
    moved = C.corrupt_batch(images[1:2], np.array([6]), "glass_blur", 2, seed=0)
    assert not np.array_equal(whole[1], moved[0])  # the seed follows the source index


def test_small_images_are_upsampled_or_refused() -> None:
    small = _images(2, size=16)
    out = C.corrupt_batch(small, np.arange(2), "zoom_blur", 3, seed=0)
    assert out.shape == small.shape and out.dtype == np.uint8 and not np.array_equal(out, small)
    with pytest.raises(UserError, match="below corrupt.min_size=32"):
        C.corrupt_image(small[0], "fog", 1, 0, resize="error")
    with pytest.raises(UserError, match="set corrupt.resize=upsample"):
        next(C.generate_corrupted(small, np.arange(2), ["fog"], [1], seed=0, resize="error", progress=False))


def test_cifar10_c_layout(tmp_path: Path) -> None:
    """The real layout: <corruption>.npy uint8 (50000, 32, 32, 3), severity blocks of 10000; labels.npy."""
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    labels = np.tile(np.arange(10), 5000).astype(np.uint8)
    np.save(root / "labels.npy", labels)
    array = np.lib.format.open_memmap(root / "fog.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
    for severity in range(1, 6):  # sparse file: mark the rows the test reads
        for i in (3, 7):
            array[(severity - 1) * 10000 + i] = severity * 10 + i
    array.flush()
    del array
    test_labels = labels[:10000].astype(np.int64)
    images, got = C.load_cifar10_c(root, "fog", 4, np.array([3, 7]), test_labels)
    assert images.shape == (2, 32, 32, 3) and (images[0] == 43).all() and (images[1] == 47).all()
    assert got.tolist() == [3, 7]
    with pytest.raises(UserError, match=r"snow.npy is missing.*zenodo.*labels.npy"):
        C.load_cifar10_c(root, "snow", 1, np.array([0]), test_labels)
    with pytest.raises(UserError, match="labels .* differ"):
        C.load_cifar10_c(root, "fog", 1, np.array([0]), np.roll(test_labels, 1))
    with pytest.raises(UserError, match="not 10000"):
        C.load_cifar10_c(root, "fog", 1, np.array([0]), test_labels[:100])


def test_imagenet_c_rows_pair_by_file_name(tmp_path: Path) -> None:
    root = tmp_path / "ImageNet-C"
    for wnid, name in (("n01440764", "ILSVRC2012_val_00000293.JPEG"), ("n01443537", "ILSVRC2012_val_00000236.JPEG")):
        folder = root / "fog" / "2" / wnid
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"jpeg")
    test_paths = ["val/n01443537/ILSVRC2012_val_00000236.JPEG", "val/n01440764/ILSVRC2012_val_00000293.JPEG"]
    rows = C.imagenet_c_rows(root, "fog", 2, np.array([0, 1]), test_paths, np.array([1, 0]),
                             ["n01440764", "n01443537"])
    assert rows == [("fog/2/n01443537/ILSVRC2012_val_00000236.JPEG", 1),
                    ("fog/2/n01440764/ILSVRC2012_val_00000293.JPEG", 0)]
    with pytest.raises(UserError, match=r"ImageNet-C not found: .*fog/3 is missing.*zenodo"):
        C.imagenet_c_rows(root, "fog", 3, np.array([0]), test_paths, np.array([1, 0]), ["n01440764", "n01443537"])


def test_spatter_without_liquid_keeps_the_image_instead_of_a_black_one() -> None:
    """imagecorruptions' spatter divides by the liquid mask's maximum; with no liquid (seed 35 on a flat 32 px
    image) it returns NaN cast to uint8, a black image. We return the image unchanged."""
    import warnings

    from imagecorruptions import corrupt

    image = np.full((32, 32, 3), 128, np.uint8)
    np.random.seed(35)  # noqa: NPY002
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert (corrupt(image, severity=1, corruption_name="spatter") == 0).all()
    assert np.array_equal(C.corrupt_image(image, "spatter", 1, 35), image)


def test_frost_images_read_once_change_nothing() -> None:
    """The speed-ups around imagecorruptions (frost's images decoded once per process) keep its output bytes."""
    import cv2
    from imagecorruptions import corrupt, corruptions

    image = _images(1)[0]
    ours = [C.corrupt_image(image, "frost", s, seed=s) for s in (1, 5)]  # sets the read-once OpenCV up
    patched = corruptions.cv2
    assert isinstance(patched, C._Cv2ReadOnce)
    try:
        corruptions.cv2 = cv2
        for s, got in zip((1, 5), ours, strict=True):
            np.random.seed(s)  # noqa: NPY002
            assert np.array_equal(corrupt(image, severity=s, corruption_name="frost"), got)
    finally:
        corruptions.cv2 = patched


def _family(root: Path) -> dict[str, object]:
    """Two generated-form sets and one ImageNet-C-form set (index.csv), then the family meta written after them."""
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    for corruption, severity in (("fog", 1), ("fog", 2)):
        write_split(C.corrupted_dir(root, "shapes", corruption, severity), images, np.array([0, 1]), {"index": [0, 1]})
    located = C.corrupted_dir(root, "shapes", "snow", 3)
    located.mkdir(parents=True)
    (located / "index.csv").write_text("path,label\nsnow/3/n01/a.JPEG,0\n")
    (located / "meta.json").write_text('{"index": [0], "root": "/elsewhere"}')
    C.write_summary(C.corrupted_root(root, "shapes"), {"corruptions": ["fog", "snow"], "severities": [1, 2, 3],
                                                       "index": [0, 1]})
    return C.read_corrupted_meta(root, "shapes")


def test_family_manifest_pins_every_set_file(tmp_path: Path) -> None:
    family = _family(tmp_path)
    root = C.corrupted_root(tmp_path, "shapes")
    manifest = family[C.MANIFEST]
    assert isinstance(manifest, dict)
    assert sorted(manifest) == ["fog/1/images.npy", "fog/1/labels.npy", "fog/1/meta.json", "fog/2/images.npy",
                                "fog/2/labels.npy", "fog/2/meta.json", "snow/3/index.csv", "snow/3/meta.json"]
    assert manifest["fog/1/images.npy"] == sha256_file(root / "fog" / "1" / "images.npy")
    C.verify_sets(root, family)
    assert len(C.open_corrupted(tmp_path, "shapes", "fog", 2)) == 2
    # one byte changed in one set: refused by name, both when all sets are read and when that set is opened
    images = root / "fog" / "2" / "images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 1
    images.write_bytes(bytes(data))
    C.verify_sets(root, family, [("fog", 1), ("snow", 3)])  # the other sets still pass
    for check in (lambda: C.verify_sets(root, family), lambda: C.open_corrupted(tmp_path, "shapes", "fog", 2)):
        with pytest.raises(UserError, match=r"fog/2/images.npy differs from the sha256 in the family manifest "
                                            r".*run `dvc repro corrupt`"):
            check()
    # a set file the manifest does not list, and one it lists that is gone
    (root / "fog" / "1" / "extra.npy").write_bytes(b"x")
    with pytest.raises(UserError, match=r"fog/1/extra.npy is not in the family manifest"):
        C.verify_sets(root, family, [("fog", 1)])
    (root / "snow" / "3" / "index.csv").unlink()
    with pytest.raises(UserError, match=r"snow/3/index.csv is missing"):
        C.verify_sets(root, family, [("snow", 3)])


def test_family_meta_without_a_manifest_is_refused(tmp_path: Path) -> None:
    root = C.corrupted_root(tmp_path, "shapes")
    write_json(root / "meta.json", {"corruptions": ["fog"], "severities": [1], "index": [0]})
    with pytest.raises(UserError, match=r"meta.json has no `sha256` manifest.*run `dvc repro corrupt`"):
        C.read_corrupted_meta(tmp_path, "shapes")


def test_robustbench_list_is_the_setting_or_an_installed_packages_copy(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "robustbench"
    (package / "helper_files").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('found without being imported')\n")
    (package / "helper_files" / "imagenet_test_image_ids.txt").write_text("n01440764/ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match=r"no installed robustbench package holds it: set corrupt.subset_list"):
        C.robustbench_list("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert C.robustbench_list("") == package / "helper_files" / "imagenet_test_image_ids.txt"
    own = tmp_path / "ids.txt"
    own.write_text("")
    assert C.robustbench_list(str(own)) == own  # the setting wins
