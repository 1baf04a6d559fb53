"""Streaming input and the on-disk feature cache, on a generated set of distinct images (jittered MNIST crops)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vgg_edge.features import FeatureCache, FeatureStore, cache_key
from vgg_edge.run import RunDir


def test_feature_store_rows_round_trip_through_the_npy_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    store = FeatureStore(tmp_path, "train", views=3, n=50, shape=(4, 4, 8), dtype=np.float16)
    store.create()
    data = rng.normal(size=(3, 50, 4, 4, 8)).astype(np.float16)
    for view in range(3):
        order = rng.permutation(50)  # written in any order, row by row
        store.write(view, order, data[view, order])
    views, rows = rng.integers(0, 3, 20), rng.integers(0, 50, 20)
    assert np.array_equal(store.read(views, rows), data[views, rows].astype(np.float32))
    assert np.array_equal(np.load(store.path(2)), data[2])  # a plain .npy: numpy reads it as written
    assert store.complete() and store.nbytes == data.nbytes
    store.close()


def test_a_cache_is_reused_only_under_its_own_key_and_complete(tmp_path: Path):
    cache = FeatureCache(cache_key(a=1), tmp_path)
    cache.start()
    store = FeatureStore(cache.folder, "train", 1, 4, (2,), np.float16)
    store.create()
    cache.commit({"train": store}, {})
    assert FeatureCache(cache_key(a=1), tmp_path).stores() is not None
    assert FeatureCache(cache_key(a=2), tmp_path).stores() is None  # another key, another folder
    meta = json.loads(cache.meta_path.read_text())
    cache.meta_path.write_text(json.dumps({**meta, "key": "tampered"}))
    assert FeatureCache(cache_key(a=1), tmp_path).stores() is None and not cache.folder.exists()  # a mismatch is rebuilt, never trusted


def test_train_twice_reuses_the_features_and_gets_the_same_model(jittered: Path, tmp_path: Path, monkeypatch):
    from vgg_edge.training import TrainConfig, train

    monkeypatch.setenv("VGG_EDGE_CACHE", str(tmp_path / "cache"))
    config = dict(data=jittered, image_size=32, epochs=2, fine_tune_epochs=1, fine_tune_blocks=1, batch_size=16, views=2)
    first = train(TrainConfig(out=tmp_path / "a", **config))
    second = train(TrainConfig(out=tmp_path / "b", **config))
    cache = first.report["feature_cache"]
    assert not cache["reused"] and second.report["feature_cache"]["reused"] and second.report["feature_cache"]["folder"] == cache["folder"]
    assert cache["bytes"] > 0 and len(list(Path(cache["folder"]).glob("*.npy"))) == 2 + 1 + 2 + 1  # train x2 views, val, and their head features
    assert second.report["timings"]["feature_extraction_s"] < first.report["timings"]["feature_extraction_s"]
    assert second.metrics["confusion_matrix"] == first.metrics["confusion_matrix"]
    a, b = RunDir.open(first.run).load_model(), RunDir.open(second.run).load_model()
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))  # same features, same seed: the same model
    for result in (first, second):  # the broken file is skipped and named: found by decoding, or remembered by the cache
        assert list(RunDir.open(result.run).split.unreadable) == ["4/broken.png"]
        assert "4/broken.png" not in {e.path for e in RunDir.open(result.run).split.entries}
    third = train(TrainConfig(out=tmp_path / "c", **{**config, "views": 3}))  # another key: extracted again, not reused
    assert not third.report["feature_cache"]["reused"] and third.report["feature_cache"]["folder"] != cache["folder"]
