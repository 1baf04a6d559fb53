"""Calibrated probabilities by temperature scaling, folded into the model's last layer.

A fine-tuned network is usually over-confident: its 0.99 is right less often than 99 times in 100.
Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") divides the
logits by one number T fitted on the validation split by likelihood. Dividing by T moves no
argmax, so decisions stay as they were; only the probabilities change. Since the last layer is
`softmax(W x + b)`, `softmax((W x + b) / T)` is the same layer with W/T and b/T: the exported
model carries the calibration and the device does no extra maths.

Expected calibration error (ECE) is the gap between confidence and accuracy, averaged over
equal-width confidence bins and weighted by their images (top-label, 15 bins).
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
OUTPUT_LAYER = "predictions"
T_RANGE = (0.05, 20.0)
#: The temperatures at which training scores every validation epoch (loop.py): 121 steps of x1.05 across T_RANGE,
#: fine enough that the best of them is within 0.1% of the fitted temperature's NLL.
T_GRID = np.geomspace(*T_RANGE, 121)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-300, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in T_RANGE that minimises the negative log-likelihood of `y` under softmax(logits / T)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll(softmax(logits, np.exp(log_t)), y), bounds=tuple(np.log(T_RANGE)), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per confidence bin: mean confidence, accuracy, image count; and the ECE they add up to."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    table = {"confidence": [], "accuracy": [], "count": []}
    ece = 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        table["count"].append(n)
        table["confidence"].append(float(confidence[inside].mean()) if n else None)
        table["accuracy"].append(float(correct[inside].mean()) if n else None)
        if n:
            ece += n / len(y) * abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
    return {"ece": ece, "bins": bins, **table}


def logits_model(model):
    """(input -> logits): the model up to its last layer's pre-softmax output, computed from its inputs."""
    import keras

    return keras.Model(model.inputs, model.get_layer(OUTPUT_LAYER).input, name="penultimate")


def logits(model, features: np.ndarray) -> np.ndarray:
    """The last layer's pre-softmax output for penultimate `features`, in float64."""
    kernel, bias = model.get_layer(OUTPUT_LAYER).get_weights()
    return np.asarray(features, np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64)


def fold(model, temperature: float) -> None:
    """Divide the last layer's weights and bias by `temperature`: its softmax becomes the calibrated one."""
    layer = model.get_layer(OUTPUT_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([(kernel / temperature).astype(kernel.dtype), (bias / temperature).astype(bias.dtype)])


def calibrate(model, features: np.ndarray, y: np.ndarray, fit: bool = True) -> tuple[dict, np.ndarray]:
    """Fit the temperature on val (`features`: the last layer's inputs for val's images) and fold it into
    `model`; returns the record (NLL and ECE before and after) and the calibrated val probabilities.
    With `fit` off the temperature is 1: the record still says how calibrated the model is."""
    z = logits(model, features)
    t = fit_temperature(z, y) if fit else 1.0
    before, after = softmax(z), softmax(z, t)
    fold(model, t)
    record = {
        "temperature": t, "fitted_on": "val" if fit else None, "folded_into": OUTPUT_LAYER if fit else None,
        "val": {"nll_before": nll(before, y), "nll_after": nll(after, y), "ece_before": reliability(before, y)["ece"], "ece_after": reliability(after, y)["ece"]},
    }
    return record, after
