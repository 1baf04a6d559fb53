"""The automatic flip decision (mirror.py) on real images: mirrored brains are brains, mirrored digits are not digits."""

from __future__ import annotations

import pytest
from helpers import BRAIN, MNIST

from vgg_edge.data import plan_split
from vgg_edge.features import SplitStream
from vgg_edge.mirror import MAX_ERROR_RATIO, mirror_test
from vgg_edge.model import build_model, split_at
from vgg_edge.weights import resolve_weights

SIZE = 48


@pytest.fixture(scope="module")
def base():
    return split_at(build_model(4, SIZE, resolve_weights("imagenet")), "block5_pool")[0]


@pytest.mark.parametrize("data, flips", [(BRAIN, True), (MNIST, False)], ids=["brain-mri", "mnist-digits"])
def test_flips_stay_exactly_where_mirrored_validation_images_keep_their_labels(base, data, flips):
    manifest = plan_split(data)
    test = mirror_test(base, SplitStream(manifest, "train", SIZE), SplitStream(manifest, "val", SIZE), 64, seed=0, train_images=600, val_images=300)
    assert test.train_images == 600 and test.val_images == 300
    assert test.errors < 0.3 * 300  # the frozen features know the classes of unmirrored images (4 and 10 of them)
    assert test.flip is flips and test.record()["flip"] is flips
    if flips:  # about as easy mirrored
        assert test.ratio <= 1.25
    else:  # misread far more often: well beyond the line, not at it
        assert test.ratio > 1.5 * MAX_ERROR_RATIO
