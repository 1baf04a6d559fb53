"""The VGG16 transfer-learning model.

    image (raw RGB, 0-255, float32)
      -> vgg16_preprocess   a fixed 1x1 convolution: RGB->BGR and ImageNet mean subtraction,
                            exactly `keras.applications.vgg16.preprocess_input`, but inside the
                            graph, so that every exported model takes raw pixels and an edge
                            device does no maths of its own
      -> block1 ... block5  the ImageNet-pretrained VGG16 convolutional base, flattened into
                            this model so that blocks can be frozen and cut by name
      -> head               global average pooling (or flatten), dense, dropout, softmax

The saved inference model has no random layers: augmentation wraps it only while training
(a RandomFlip in the graph breaks tf2onnx and full-int8 TFLite conversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .ui import progress

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
BLOCKS = 5
PREPROCESS_LAYER = "vgg16_preprocess"
#: The input preprocessings a model can have in its graph (`vgg-edge import --preprocess` names one);
#: every model this product ships takes raw RGB 0-255 pixels and does its preprocessing itself.
PREPROCESSING = {
    "vgg16": "keras.applications.vgg16.preprocess_input (caffe mode): RGB->BGR, minus the ImageNet BGR mean "
             f"{list(IMAGENET_BGR_MEAN)}",
    "scale": "x / 255 (the seed notebooks' ImageDataGenerator(rescale=1./255))",
    "none": "none: the model was trained on raw 0-255 RGB pixels",
}


def preprocessing_record(mode: str) -> dict:
    """What an artifact's manifest says about its inputs: preprocessing in the graph, the device only decodes and resizes."""
    return {
        "in_graph": True, "mode": mode, "what": PREPROCESSING[mode],
        "device_does": "decode to RGB uint8 and resize to the input size (vgg_edge.images.read_image); no scaling, no mean",
    }


def preprocess_layer(mode: str):
    """The fixed Keras layer that does `mode`'s preprocessing (PREPROCESSING) on raw 0-255 RGB, inside the graph.

    vgg16 is a 1x1 convolution (RGB->BGR and minus the mean in one op, which every converter and
    int8 quantizer handles); scale is a Rescaling by 1/255; none is an identity.
    """
    import keras

    if mode == "scale":
        return keras.layers.Rescaling(1.0 / 255.0, name="scale_preprocess")
    if mode == "none":
        return keras.layers.Identity(name="no_preprocess")
    preprocess = keras.layers.Conv2D(3, 1, name=PREPROCESS_LAYER, trainable=False)
    preprocess.build((None, None, None, 3))
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for rgb in range(3):
        kernel[0, 0, rgb, 2 - rgb] = 1.0
    preprocess.set_weights([kernel, -np.array(IMAGENET_BGR_MEAN, np.float32)])
    return preprocess


POOLINGS = ("gap", "flatten")


@dataclass(frozen=True)
class HeadConfig:
    pooling: str = "gap"  # one of POOLINGS: global average pooling or flatten
    dense_units: int = 256
    dropout: float = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    """The seeds' augmentations; applied only while training, only when enabled."""

    flip: bool | None = None  # None: decided on the data (`train` runs mirror.mirror_test first)
    rotation: float = 0.05
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1


def build_model(num_classes: int, image_size: int, weights: Path | None, head: HeadConfig = HeadConfig()):
    """The inference model: raw RGB in, class probabilities out."""
    import keras

    if image_size < 32:
        raise ValueError("VGG16 needs images of at least 32x32 pixels")
    inputs = keras.Input((image_size, image_size, 3), name="image", dtype="float32")
    x = preprocess_layer("vgg16")(inputs)

    base = keras.applications.VGG16(include_top=False, weights=str(weights) if weights else None, input_shape=(image_size, image_size, 3))
    for layer in base.layers[1:]:
        x = layer(x)
    if head.pooling == "gap":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif head.pooling == "flatten":
        x = keras.layers.Flatten(name="head_pool")(x)
    else:
        raise ValueError(f"unknown head pooling {head.pooling!r}; use 'gap' or 'flatten'")
    x = keras.layers.Dense(head.dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(head.dropout, name="head_dropout")(x)
    # float32 even under a mixed-precision policy: a softmax in bfloat16 rounds probabilities to 3 digits.
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="vgg_edge")


def augmenter(augment: AugmentConfig, seed: int):
    """The random augmentation layers as one model: (raw pixels, training=True) -> an augmented view."""
    import keras

    if augment.flip is None:
        raise ValueError("augmenter: decide the flip first (mirror.mirror_test)")
    layers = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, seed=seed))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, seed=seed))
    if augment.brightness:
        layers.append(keras.layers.RandomBrightness(augment.brightness, value_range=(0, 255), seed=seed))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255), seed=seed))
    return keras.Sequential(layers, name="augment")


def augmenting(model, augment: AugmentConfig, seed: int):
    """`model` behind random augmentation layers: the training model of online augmentation. Not saved."""
    import keras

    inputs = keras.Input(model.input_shape[1:], name="image")
    return keras.Model(inputs, model(augmenter(augment, seed)(inputs)), name="vgg_edge_training")


def conv_block_layers(model, first_block: int) -> list:
    """The VGG16 layers of blocks `first_block`..5 (names start with 'blockN_')."""
    return [layer for layer in model.layers if layer.name.startswith("block") and int(layer.name[5]) >= first_block]


def set_trainable(model, first_block: int) -> None:
    """Blocks >= first_block train; earlier blocks (and the fixed preprocessing) stay frozen."""
    trainable = {id(layer) for layer in conv_block_layers(model, first_block)}
    for layer in conv_block_layers(model, 1):
        layer.trainable = id(layer) in trainable


def cut_layer_name(fine_tune_blocks: int) -> str:
    """The last layer that stays frozen in every phase: its output can be computed once and cached."""
    if not 0 <= fine_tune_blocks <= BLOCKS:
        raise ValueError(f"fine-tune blocks must be 0..{BLOCKS}")
    return PREPROCESS_LAYER if fine_tune_blocks == BLOCKS else f"block{BLOCKS - fine_tune_blocks}_pool"


def split_at(model, layer_name: str):
    """Split the chain model into (prefix, suffix) after `layer_name`; all share the layer objects.

    Training the suffix trains the full model's own weights, so there is nothing to copy back.
    Both halves are re-traced from fresh inputs: the VGG16 layers were first called inside the
    Keras application model, so their `.output` belongs to that graph, not to this one.
    """
    layers = model.layers[1:]  # a chain: [InputLayer, preprocess, block1_conv1, ..., predictions]
    cut = [layer.name for layer in layers].index(layer_name) + 1
    prefix = _chain(layers[:cut], model.input_shape[1:], "frozen_prefix")
    return prefix, _chain(layers[cut:], prefix.output_shape[1:], "trainable_suffix")


def _chain(layers: list, input_shape: tuple, name: str):
    import keras

    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def batched_predict(model, x: np.ndarray, batch_size: int, description: str, transform=None) -> np.ndarray:
    """Run `model` over `x` in batches with a progress bar (uint8 and float16 are cast to float32).

    `transform`, a Keras model, is applied to each batch first in training mode (random augmentation).
    """
    outputs = []
    with progress(description, len(x)) as advance:
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            batch = batch.astype(np.float32) if batch.dtype in (np.uint8, np.float16) else batch
            if transform is not None:
                batch = np.asarray(transform(batch, training=True))
            out = model.predict_on_batch(batch)
            outputs.append(np.asarray(out).astype(np.float32, copy=False))  # bfloat16 features under mixed precision
            advance(len(batch))
    return np.concatenate(outputs) if outputs else np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)
