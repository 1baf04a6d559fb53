"""The edge runtime's input and output handling without a model file, a runtime package or TensorFlow.

`to_model_input` and `from_model_output` are checked against quantization worked out by hand and against the
half-step bound of rounding; `Predictor` runs end to end on an `ArtifactInfo` built here, whose
format row opens a fake backend (`install`), so what the model is fed and what the caller gets
back are both visible. No conftest fixture; seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg_edge import formats
from vgg_edge.backends import Backend
from vgg_edge.errors import VggEdgeError
from vgg_edge.manifest import ArtifactInfo
from vgg_edge.runtime import Predictor, from_model_output, to_model_input

LABELS = ["benign", "malignant", "normal"]
SIZE = 4
FLOAT = {"dtype": "float32"}
INT8_IN = {"dtype": "int8", "quantization": {"scale": 1.0, "zero_point": -128}}  # a full-int8 TFLite model's 0-255 input
INT8_OUT = {"dtype": "int8", "quantization": {"scale": 1 / 256, "zero_point": -128}}  # and its softmax output
THRESHOLD = {"rule": "threshold", "class": "malignant", "threshold": 0.25, "target_sensitivity": 0.9, "chosen_on": "val"}


def artifact(folder: Path, input: dict = FLOAT, output: dict = FLOAT, decision: dict | None = None) -> ArtifactInfo:
    """What `manifest.read` would return for an onnx artifact in `folder` with this I/O and decision record."""
    return ArtifactInfo(
        path=folder, format="onnx", precision="int8", model_file="model.onnx", labels=list(LABELS), image_size=SIZE,
        input={"name": "pixels", "shape": [None, SIZE, SIZE, 3], **input}, output={"name": "probs", "shape": [None, len(LABELS)], **output},
        status="accepted", manifest={"decision": decision},
    )


@dataclasses.dataclass
class FakeRuntime:
    """A backend whose model is `answer` (input batch -> raw output batch); records how it was opened and fed."""

    answer: Callable[[np.ndarray], np.ndarray]
    n_outputs: int | None
    opened: list = dataclasses.field(default_factory=list)
    fed: list = dataclasses.field(default_factory=list)

    def open(self, model: Path, threads: int | None, device: str) -> Backend:
        self.opened.append((model, threads, device))

        def run(x: np.ndarray) -> np.ndarray:
            self.fed.append(x)
            return self.answer(x)

        return Backend(run, self.n_outputs)


@pytest.fixture
def install(monkeypatch):
    """`install(answer, n_outputs)` makes the onnx format row open a FakeRuntime, for this test only."""

    def install(answer=None, n_outputs: int | None = len(LABELS), opener=None) -> FakeRuntime:
        fake = FakeRuntime(answer or (lambda x: np.zeros((len(x), len(LABELS)), np.float32)), n_outputs)
        row = dataclasses.replace(formats.FORMATS["onnx"], open=opener or fake.open)
        monkeypatch.setitem(formats.FORMATS, "onnx", row)
        return fake

    return install


@pytest.mark.parametrize(("quantization", "pixels", "expected"), [
    ({"scale": 1.0, "zero_point": -128}, [0, 1, 128, 255], [-128, -127, 0, 127]),  # TFLite's 0-255 input: exact
    ({"scale": 3.0, "zero_point": -128}, [1, 2, 4, 5], [-128, -127, -127, -126]),  # -127.67, -127.33, -126.67, -126.33: nearest, not truncated
    ({"scale": 0.5, "zero_point": 0}, [10, 63, 64, 255], [20, 126, 127, 127]),  # 128 and 510 saturate at int8's 127
])
def test_int8_inputs_worked_by_hand(quantization, pixels, expected):
    x = to_model_input(np.array(pixels, np.uint8), {"dtype": "int8", "quantization": quantization})
    assert x.dtype == np.int8 and x.tolist() == expected


@pytest.mark.parametrize(("dtype", "scale", "zero_point"), [("int8", 3.0, -128), ("int8", 0.5, 0), ("uint8", 2.0, 10), ("uint8", 1 / 3, 0)])
def test_every_pixel_value_lands_on_the_nearest_step_or_saturates(dtype, scale, zero_point):
    """All 256 pixel values: dequantized, each is within half a step of the pixel, unless the exact code lies
    beyond the dtype's range, where it saturates at the dtype's maximum."""
    pixels = np.arange(256, dtype=np.uint8)
    x = to_model_input(pixels, {"dtype": dtype, "quantization": {"scale": scale, "zero_point": zero_point}})
    assert x.dtype == np.dtype(dtype)
    exact = pixels / scale + zero_point
    beyond = exact > np.iinfo(dtype).max
    error = np.abs((x.astype(np.float64) - zero_point) * scale - pixels)
    assert (error[~beyond] <= scale / 2 + 1e-9).all()
    assert (x[beyond] == np.iinfo(dtype).max).all()


@pytest.mark.parametrize("spec", [FLOAT, {"dtype": "float32", "quantization": {"scale": 0.5, "zero_point": 3}}, {"dtype": "uint8"}],
                         ids=["float32", "float32 with a quantization record", "uint8 without one"])
def test_unquantized_inputs_are_the_raw_pixels(spec):
    """Float models take 0-255 pixels (preprocessing is in the graph): never scaled, whatever else the record says."""
    pixels = np.array([[0, 7, 128, 255]], np.uint8)
    x = to_model_input(pixels, spec)
    assert x.dtype == np.dtype(spec["dtype"]) and x.tolist() == pixels.tolist()


@pytest.mark.parametrize(("raw", "spec", "expected"), [
    (np.array([-128, 0, 127], np.int8), INT8_OUT, [0.0, 0.5, 255 / 256]),
    (np.array([0, 51, 255], np.uint8), {"dtype": "uint8", "quantization": {"scale": 1 / 255, "zero_point": 0}}, [0.0, 0.2, 1.0]),
    (np.array([0.1, 0.9], np.float32), INT8_OUT, [0.1, 0.9]),  # the runtime already dequantized it
    (np.array([0.25, 0.75], np.float64), FLOAT, [0.25, 0.75]),
], ids=["int8", "uint8", "float32 output of a quantized model", "float64"])
def test_outputs_are_dequantized_float32_probabilities(raw, spec, expected):
    probs = from_model_output(raw, spec)
    assert probs.dtype == np.float32 and probs == pytest.approx(expected)


def test_an_int8_model_is_fed_quantized_pixels_and_returns_probabilities(tmp_path, install):
    """End to end: the backend gets int8 pixels (p - 128), the caller dequantized probabilities ((q + 128) / 256);
    one image without a batch axis is a batch of one."""
    raw = np.array([[-128, 64, -64], [127, -128, -128]], np.int8)  # (q + 128) / 256: [0, .75, .25], [255/256, 0, 0]
    fake = install(lambda x: raw[:len(x)])
    pixels = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    predictor = Predictor(artifact(tmp_path, INT8_IN, INT8_OUT), threads=2, device="cpu")
    assert fake.opened == [(tmp_path / "model.onnx", 2, "CPU")]  # the device as the runtime names it
    probs = predictor.predict(pixels)
    assert fake.fed[0].dtype == np.int8 and np.array_equal(fake.fed[0], pixels.astype(np.int16) - 128)
    assert probs.dtype == np.float32 and probs == pytest.approx(np.array([[0, 0.75, 0.25], [255 / 256, 0, 0]]))
    assert np.array_equal(predictor.predict(pixels[0]), probs[:1])


@pytest.mark.parametrize("shape", [(1, SIZE + 1, SIZE + 1, 3), (1, SIZE, SIZE, 1), (1, SIZE, SIZE, 4), (SIZE, SIZE)],
                         ids=["other size", "one channel", "RGBA", "no channel axis"])
def test_pixels_of_the_wrong_shape_are_refused_before_the_model_runs(tmp_path, install, shape):
    fake = install()
    with pytest.raises(VggEdgeError, match=rf"the model needs \({SIZE}, {SIZE}, 3\)"):
        Predictor(artifact(tmp_path)).predict(np.zeros(shape, np.uint8))
    assert fake.fed == []


@pytest.mark.parametrize(("n_outputs", "refused"), [(2, True), (4, True), (3, False), (None, False)])
def test_a_model_with_another_class_count_than_the_labels_is_refused(tmp_path, install, n_outputs, refused):
    """3 labels: a model that reports 2 or 4 outputs belongs to other labels; one that leaves it dynamic (None) runs."""
    install(n_outputs=n_outputs)
    if refused:
        with pytest.raises(VggEdgeError, match=rf"manifest\.json: 3 labels but model\.onnx has {n_outputs} outputs; .*re-export"):
            Predictor(artifact(tmp_path))
    else:
        assert Predictor(artifact(tmp_path)).labels == LABELS


def _missing_runtime(model, threads, device):
    raise ImportError("No module named 'onnxruntime'", name="onnxruntime")


def _corrupt_model(model, threads, device):
    raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF\nsecond line")


@pytest.mark.parametrize(("opener", "device", "decision", "message"), [
    (_missing_runtime, "CPU", None, r"model\.onnx: needs the onnx runtime \(onnxruntime is not installed\); pip install 'vgg-edge\[onnx\]'"),
    (_corrupt_model, "CPU", None, r"model\.onnx: the onnx runtime cannot load it on CPU \(\[ONNXRuntimeError\] : 7 : INVALID_PROTOBUF\)$"),
    (None, "NPU", None, r"device 'NPU': the onnx runtime runs on CPU, CUDA, TensorRT"),
    (None, "CPU", {"rule": "threshold", "class": "melanoma", "threshold": 0.5}, r"manifest\.json: unreadable decision rule .*re-export the model"),
], ids=["runtime not installed", "corrupt model", "unknown device", "decision on an unknown class"])
def test_an_artifact_that_cannot_run_is_one_line_naming_the_fix(tmp_path, install, opener, device, decision, message):
    install(opener=opener)
    with pytest.raises(VggEdgeError, match=message) as err:
        Predictor(artifact(tmp_path, decision=decision), device=device)
    assert "\n" not in str(err.value)


# A float model whose answer is set by each image's grey level: argmax and an operating point on 'malignant'
# (>= 0.25) disagree on grey 10 only (benign by argmax, malignant by the threshold).
ANSWERS = {10: [0.6, 0.3, 0.1], 20: [0.2, 0.1, 0.7], 30: [0.5, 0.2, 0.3]}


@pytest.mark.parametrize(("decision", "labels", "confidences"), [
    (None, ["benign", "normal", "benign"], [0.6, 0.7, 0.5]),
    (THRESHOLD, ["malignant", "normal", "benign"], [0.3, 0.7, 0.5]),  # below the threshold: the most probable other class
], ids=["argmax", "operating point"])
def test_classify_decides_by_the_manifest_decision_record(tmp_path, install, decision, labels, confidences):
    """Files in, labels out: the label and its confidence follow the manifest's rule; `top` stays the ranking."""
    install(lambda x: np.array([ANSWERS[int(v)] for v in x[:, 0, 0, 0]], np.float32))
    paths = []
    for grey in ANSWERS:
        paths.append(tmp_path / f"grey {grey}.png")
        Image.new("L", (SIZE, SIZE), grey).save(paths[-1])
    results, failures = Predictor(artifact(tmp_path, decision=decision)).classify(paths, top_k=3, batch_size=2)
    assert not failures and [r.path for r in results] == [str(p) for p in paths]
    assert [r.label for r in results] == labels
    assert [r.confidence for r in results] == pytest.approx(confidences)
    assert [lab for lab, _ in results[0].top] == ["benign", "malignant", "normal"]
