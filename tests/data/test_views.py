import pytest
import torch

from sslbench.data.views import MultiView, ViewTransform, asymmetric_views, multi_crop_views, symmetric_views
from sslbench.errors import UserError


def _images(n: int = 8, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_symmetric_views_shapes_range_and_per_sample_randomness() -> None:
    views = symmetric_views(n_views=2, crop_size=24)
    torch.manual_seed(0)
    out = views(_images())
    assert len(out) == 2 and all(v.shape == (8, 3, 24, 24) for v in out)
    assert all(v.min() >= 0 and v.max() <= 1 for v in out)
    assert not torch.equal(out[0], out[1])
    # parameters are drawn per sample: two copies of one image in a batch get different views
    same = _images(1).expand(4, -1, -1, -1).contiguous()
    first = ViewTransform(crop_size=32)(same)
    assert not torch.equal(first[0], first[1])


def test_views_are_a_function_of_the_torch_seed() -> None:
    views = asymmetric_views(crop_size=32)
    torch.manual_seed(3)
    a = views(_images())
    torch.manual_seed(3)
    b = views(_images())
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_asymmetric_views_follow_their_probabilities() -> None:
    # BYOL: view 1 always blurred, never solarized; with only blur/solarize active, view 2 is mostly untouched
    views = asymmetric_views(
        crop_size=32, min_scale=1.0, hf_prob=0.0, cj_prob=0.0, gray_prob=0.0, blur_sigma=(1.0, 2.0)
    )
    x = _images(64)
    torch.manual_seed(0)
    v1, v2 = views(x)
    changed1 = (v1 - x).abs().flatten(1).amax(1) > 1e-3
    changed2 = (v2 - x).abs().flatten(1).amax(1) > 1e-3
    assert changed1.all()
    assert 0 < changed2.float().mean() < 0.6


def test_multi_crop_views() -> None:
    views = multi_crop_views(crop_size=32, n_local=3, local_size=16)
    assert isinstance(views, MultiView) and len(views) == 5
    out = views(_images(2))
    assert [v.shape[-1] for v in out] == [32, 32, 16, 16, 16]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"cj_prob": 1.5}, "cj_prob"), ({"min_scale": 0.0}, "min_scale"), ({"crop_size": 0}, "crop_size")],
)
def test_bad_knobs(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        ViewTransform(**kwargs)


def test_bad_builders() -> None:
    with pytest.raises(UserError, match="n_views"):
        symmetric_views(n_views=0)
    with pytest.raises(UserError, match="one value per view"):
        asymmetric_views(blur_prob=(1.0,))
    with pytest.raises(UserError, match="n_local"):
        multi_crop_views(n_local=-1)


def test_colour_jitter_definitions() -> None:
    from sslbench.data.views import ColorJitter

    x = _images(16)
    torch.manual_seed(0)
    assert torch.equal(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.0)(x), x)
    # a hue rotation turns about the grey axis: grey pixels stay grey, luma is kept
    grey = torch.full((4, 3, 8, 8), 0.5)
    assert torch.allclose(ColorJitter(0.0, 0.0, 0.0, 0.5)(grey), grey, atol=1e-5)
    mid = x * 0.2 + 0.4  # away from the clamp
    out = ColorJitter(0.0, 0.0, 0.0, 0.3)(mid)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert not torch.allclose(out, mid, atol=1e-2)
    assert torch.allclose((out * luma).sum(1), (mid * luma).sum(1), atol=1e-4)
    # brightness alone scales each sample by one factor in [0.6, 1.4]
    ratio = ColorJitter(0.4, 0.0, 0.0, 0.0)(x * 0.5) / (x * 0.5)
    per_sample = ratio.flatten(1)
    assert torch.allclose(per_sample.min(1).values, per_sample.max(1).values, atol=1e-4)
    assert per_sample.min() >= 0.6 - 1e-5 and per_sample.max() <= 1.4 + 1e-5


def test_resized_crop_flip_geometry() -> None:
    from sslbench.data.views import ResizedCropFlip

    x = _images(6)
    # the whole image at ratio 1: identity, and its mirror image when flipped
    assert torch.equal(ResizedCropFlip(32, (1.0, 1.0), (1.0, 1.0), hf_prob=0.0)(x), x)
    assert torch.equal(ResizedCropFlip(32, (1.0, 1.0), (1.0, 1.0), hf_prob=1.0)(x), x.flip(-1))
    # a crop resampled at its own size is the slice of the drawn box
    crop = ResizedCropFlip(16, (0.25, 0.25), (1.0, 1.0), hf_prob=0.0)
    torch.manual_seed(1)
    out = crop(x)
    torch.manual_seed(1)
    boxes = crop.boxes(6, 32, 32, torch.device("cpu")).long()
    for i, (x0, y0, w, h) in enumerate(boxes.tolist()):
        assert (w, h) == (16, 16)
        assert torch.allclose(out[i], x[i, :, y0 : y0 + h, x0 : x0 + w])


def test_resized_crop_flip_grid_equals_affine_grid() -> None:
    # the separable sampling grid is the one `F.affine_grid` builds for the box's theta (the former implementation)
    import torch.nn.functional as F

    from sslbench.data.views import ResizedCropFlip

    x = _images(16)
    crop = ResizedCropFlip(24, (0.2, 1.0), hf_prob=0.5)
    torch.manual_seed(3)
    out = crop(x)
    torch.manual_seed(3)
    x0, y0, w, h = crop.boxes(16, 32, 32, torch.device("cpu")).unbind(1)
    flip = torch.rand(16) < 0.5
    assert 0 < int(flip.sum()) < 16
    theta = torch.zeros(16, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -w / 32, w / 32)
    theta[:, 0, 2] = (2 * x0 + w) / 32 - 1
    theta[:, 1, 1] = h / 32
    theta[:, 1, 2] = (2 * y0 + h) / 32 - 1
    grid = F.affine_grid(theta, [16, 3, 24, 24], align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out, ref, atol=1e-5)


def test_resized_crop_boxes_follow_torchvision_sampling() -> None:
    from sslbench.data.views import ResizedCropFlip

    torch.manual_seed(0)
    boxes = ResizedCropFlip(32, (0.3, 1.0)).boxes(20000, 32, 40, torch.device("cpu"))
    x0, y0, w, h = boxes.unbind(1)
    area = w * h / (32 * 40)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 40).all() and (y0 + h <= 32).all()
    assert area.min() >= 0.29 and area.max() <= 1.0
    # the same distribution as torchvision's sampler (refused draws make large boxes rarer than uniform)
    from torchvision.transforms import RandomResizedCrop

    ref = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 32, 40), [0.3, 1.0], [3 / 4, 4 / 3])
                        for _ in range(4000)], dtype=torch.float32)
    ref_area = ref[:, 2] * ref[:, 3] / (32 * 40)
    assert abs(float(area.mean() - ref_area.mean())) < 0.015
    assert abs(float((w / h).mean() - (ref[:, 3] / ref[:, 2]).mean())) < 0.02
    assert (w / h).min() >= 0.7 and (w / h).max() <= 1.4  # [3/4, 4/3] up to the rounding of w and h
    # too small an image for the drawn boxes: the fallback is the centred whole image at the nearest ratio
    fallback = ResizedCropFlip(8, (1.0, 1.0), (2.0, 3.0)).boxes(4, 10, 10, torch.device("cpu"))
    assert fallback.tolist() == [[0.0, 2.5, 10.0, 5.0]] * 4


def test_gaussian_blur_matches_kornia() -> None:
    import kornia

    from sslbench.data.views import GaussianBlur

    x = _images(5)
    blurred = GaussianBlur(5, (1.3, 1.3), p=1.0)(x)
    assert torch.allclose(blurred, kornia.filters.gaussian_blur2d(x, (5, 5), (1.3, 1.3)), atol=1e-6)
    assert torch.equal(GaussianBlur(5, (1.0, 2.0), p=0.0)(x), x)


def test_grayscale_and_solarize_match_kornia() -> None:
    import kornia

    from sslbench.data.views import Grayscale, Solarize

    x = _images(6)
    assert torch.allclose(Grayscale(1.0)(x), kornia.color.rgb_to_grayscale(x).expand_as(x), atol=1e-6)
    assert torch.equal(Solarize(1.0)(x), kornia.enhance.solarize(x, 0.5))
    assert torch.equal(Grayscale(0.0)(x), x) and torch.equal(Solarize(0.0)(x), x)
    # per sample: with p = 0.5 some images of a batch change and the others are left as they were
    torch.manual_seed(0)
    out = Solarize(0.5)(x.repeat(8, 1, 1, 1))
    changed = (out != x.repeat(8, 1, 1, 1)).flatten(1).any(1)
    assert 0 < int(changed.sum()) < len(changed)


def test_one_blur_probability_sets_every_view() -> None:
    from sslbench.data.views import GaussianBlur

    def blurs(views: MultiView) -> list[float]:
        return [op.p for t in views.transforms for op in t.ops if isinstance(op, GaussianBlur)]

    assert blurs(asymmetric_views(crop_size=32)) == [1.0, 0.1]
    assert blurs(asymmetric_views(crop_size=32, blur_prob=0.3)) == [0.3, 0.3]
    assert blurs(multi_crop_views(crop_size=32, n_local=2, blur_prob=0.0)) == []  # p = 0: no blur op at all
    assert blurs(multi_crop_views(crop_size=32, n_local=2)) == [1.0, 0.1, 0.5, 0.5]

