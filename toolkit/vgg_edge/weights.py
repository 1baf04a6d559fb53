"""Where the ImageNet VGG16 weights come from.

`--weights imagenet` tries, in order: the file named by $VGG_EDGE_WEIGHTS, the Keras cache
(~/.keras/models or $KERAS_HOME), then Keras' own download. Offline, the last step fails and
the user is told how to pass a local file. `--weights PATH` and `--weights none` skip all that.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import VggEdgeError

KERAS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + KERAS_FILE
ENV_VAR = "VGG_EDGE_WEIGHTS"


def keras_cache_file() -> Path:
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / KERAS_FILE


def keras_download() -> Path:
    """Keras' own download into its cache (checks the md5 Keras pins)."""
    import keras

    return Path(keras.utils.get_file(KERAS_FILE, KERAS_URL, cache_subdir="models", file_hash="6d6bbae143d832006294945121d1f1fc"))


def resolve_weights(spec: str, download: Callable[[], Path] = keras_download) -> Path | None:
    """Turn `imagenet`, `none` or a path into a local weights file (or None for random weights)."""
    if spec.lower() == "none":
        return None
    if spec.lower() != "imagenet":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise VggEdgeError(f"{path}: weights file not found; pass an existing .h5 file, 'imagenet' or 'none'")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise VggEdgeError(f"{path}: ${ENV_VAR} names a missing file; point it at vgg16 no-top ImageNet weights (.h5)")
        return path
    cached = keras_cache_file()
    if cached.is_file():
        return cached
    try:
        return download()
    except Exception as exc:  # offline: URLError, HTTPError, socket errors, md5 mismatch ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VggEdgeError(
            f"cannot download the ImageNet VGG16 weights ({reason}); offline, set {ENV_VAR}=/path/to/{KERAS_FILE} "
            "or pass --weights PATH (or --weights none to train from scratch)"
        ) from None
