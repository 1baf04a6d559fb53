"""ImageNet weight resolution (never downloading) and the in-graph VGG16 preprocessing."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import WEIGHTS

from vgg_edge.errors import VggEdgeError
from vgg_edge.weights import KERAS_FILE, resolve_weights


def _offline() -> Path:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_env_variable_wins(monkeypatch) -> None:
    monkeypatch.setenv("VGG_EDGE_WEIGHTS", str(WEIGHTS))
    assert resolve_weights("imagenet", download=_offline) == WEIGHTS


def test_keras_cache_is_used_before_download(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VGG_EDGE_WEIGHTS")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / KERAS_FILE
    cached.parent.mkdir(parents=True)
    cached.symlink_to(WEIGHTS)
    assert resolve_weights("imagenet", download=_offline) == cached


def test_offline_without_weights_says_how_to_pass_a_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VGG_EDGE_WEIGHTS")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(VggEdgeError, match="VGG_EDGE_WEIGHTS=.*--weights PATH"):
        resolve_weights("imagenet", download=_offline)


def test_paths_and_none(tmp_path: Path, monkeypatch) -> None:
    assert resolve_weights(str(WEIGHTS)) == WEIGHTS
    assert resolve_weights("none") is None
    with pytest.raises(VggEdgeError, match="weights file not found"):
        resolve_weights(str(tmp_path / "missing.h5"))
    monkeypatch.setenv("VGG_EDGE_WEIGHTS", str(tmp_path / "missing.h5"))
    with pytest.raises(VggEdgeError, match="names a missing file"):
        resolve_weights("imagenet")


def test_model_carries_imagenet_weights_and_preprocessing() -> None:
    import keras

    from vgg_edge.model import build_model

    model = build_model(3, 32, WEIGHTS)
    with h5py.File(WEIGHTS) as f:
        group = f["block1_conv1"]
        kernel = np.asarray(group[group.attrs["weight_names"][0]])  # [kernel, bias]
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], kernel)

    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    in_graph = keras.Model(model.input, model.get_layer("vgg16_preprocess").output)(pixels)
    reference = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(np.asarray(in_graph), reference, atol=1e-4)
    assert not any("random" in layer.name for layer in model.layers)


def test_cached_prefix_plus_suffix_is_the_full_model() -> None:
    """Training on cached features trains exactly the saved model: same outputs, shared weights."""
    from vgg_edge.model import build_model, cut_layer_name, split_at

    model = build_model(4, 32, WEIGHTS)
    prefix, suffix = split_at(model, cut_layer_name(1))
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(suffix(prefix(pixels))), np.asarray(model(pixels)), atol=1e-6)
    assert suffix.get_layer("block5_conv1") is model.get_layer("block5_conv1")
    assert prefix.layers[-1].name == "block4_pool"
