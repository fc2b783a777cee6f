from sslbench.report.anchors import ACCURACY_ANCHORS, ROBUSTNESS_ANCHORS
from tests.report.fakes import METHODS

STUDY_METHODS = {*METHODS, "simsiam", "barlow_twins", "swav", "dino", "vicreg", "dissl", "cissl"}


def test_anchors_match_reference_section_3_and_name_their_source() -> None:
    tiny, cifar = ACCURACY_ANCHORS
    (imagenet_c,) = ROBUSTNESS_ANCHORS
    assert tiny.values == {"dino": 43.3, "dissl": 45.1, "simclr": 45.2, "cissl": 45.8}
    assert cifar.values["byol"] == 92.58 and len(cifar.values) == 7
    assert imagenet_c.values["swav"] == 70.46 and imagenet_c.lower_is_better
    for anchor in (tiny, cifar, imagenet_c):
        assert anchor.header.startswith(anchor.title) and "paper-scale anchor, not comparable:" in anchor.header
        assert anchor.source and set(anchor.values) <= STUDY_METHODS
