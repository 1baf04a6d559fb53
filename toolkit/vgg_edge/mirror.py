"""Whether to flip: the flip augmentation decided by the data, not by hand.

Horizontal flips are the cheapest augmentation and right for most medical images (a tumour or a
lesion is the same on either side), but wrong where the sides differ: a mirrored 3 is not a 3,
and a default that flipped digits cost 0.6 points of MNIST test accuracy (benchmarks/results/recipes.md).
So `train`'s default (`flip=None`, "auto") asks the data before any augmented view is made, with a
cheap stand-in for the network: a logistic regression on frozen ImageNet VGG16 features
(block5_pool averaged over space, the features of benchmarks/frozen_baseline.py).

1. the regression learns the classes from up to `train_images` training images as they are;
2. it classifies up to `val_images` validation images as they are and mirrored;
3. where a mirror keeps the label, the mirrored images are about as easy (the frozen features are
   not exactly mirror-symmetric, so a little harder); where it changes the label, they are
   misread far more often.

Flips stay when the error on mirrored images is at most `MAX_ERROR_RATIO` times the error on the
images as they are (one error added to each count, so a perfect regression still gives a ratio).
Measured (benchmarks/results/mirror_test.md): brain MRI 1.02 and 1.25 (64 and 128 px), skin
lesions 0.97, digits 2.54. A first version that compared the regression's log loss against the
class frequencies failed on skin lesions, where frozen features barely beat the frequencies on
the separate validation split; a version that trained a second regression with mirrored copies
separated digits from brains far less (a linear model, like the network, can learn mirrored
digits beside the originals), so the mirror itself is what is asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import drop_unreadable
from .features import SplitStream, compiled_forward
from .ui import progress

MAX_ERROR_RATIO = 1.5  # flips stay while mirrored validation images are misread at most this much more often


@dataclass(frozen=True)
class MirrorTest:
    """The evidence behind the flip decision, as the run report records it."""

    errors: int  # validation images misread as they are
    mirrored_errors: int  # the same images, mirrored
    train_images: int
    val_images: int

    @property
    def ratio(self) -> float:
        return (self.mirrored_errors + 1) / (self.errors + 1)

    @property
    def flip(self) -> bool:
        return self.ratio <= MAX_ERROR_RATIO

    def record(self) -> dict:
        return {"flip": self.flip, "rule": f"flip while mirrored val images are misread at most {MAX_ERROR_RATIO:g}x as often as the images "
                "as they are, by a logistic regression on frozen VGG16 features learnt from unmirrored train images",
                "errors": self.errors, "mirrored_errors": self.mirrored_errors, "error_ratio": self.ratio,
                "train_images": self.train_images, "val_images": self.val_images}

    def describe(self) -> str:
        return (f"flips {'on' if self.flip else 'off'}: mirrored val images misread {self.ratio:.2f}x as often ({self.mirrored_errors} against "
                f"{self.errors} of {self.val_images}; flips stay up to {MAX_ERROR_RATIO:g}x)")


def mirror_test(base, train: SplitStream, val: SplitStream, batch_size: int, seed: int, train_images: int = 1000, val_images: int = 1000) -> MirrorTest:
    """Run the test with `base` (raw pixels in, the frozen convolutional base's feature maps out)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    forward = compiled_forward(base)
    x_train, _, y_train = _pooled(forward, train, _sample(train, train_images, rng), batch_size, mirrored=False)
    x_val, x_val_mirrored, y_val = _pooled(forward, val, _sample(val, val_images, rng), batch_size, mirrored=True)
    drop_unreadable(train.manifest, {**train.failures, **val.failures})  # a class left without images stops here, in one line
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(x_train, y_train)
    errors = [int(np.sum(classifier.predict(x) != y_val)) for x in (x_val, x_val_mirrored)]
    return MirrorTest(*errors, len(y_train), len(y_val))


def _sample(stream: SplitStream, n: int, rng: np.random.Generator) -> np.ndarray:
    rows = stream.valid
    return np.sort(rng.permutation(rows)[:n])


def _pooled(forward, stream: SplitStream, rows: np.ndarray, batch_size: int, mirrored: bool):
    """Space-averaged features of `rows`, of the same images mirrored (when asked; else None), and their labels;
    undecodable files left out."""
    plain, flipped, labels = [], [], []
    with progress(f"flip test {stream.split}", len(rows)) as advance:
        for start in range(0, len(rows), batch_size):
            kept, pixels = stream.read(rows[start:start + batch_size])
            if len(kept):
                x = pixels.astype(np.float32)
                plain.append(np.asarray(forward(x)).mean(axis=(1, 2)))
                if mirrored:
                    flipped.append(np.asarray(forward(np.ascontiguousarray(x[:, :, ::-1]))).mean(axis=(1, 2)))
                labels.append(stream.labels[kept])
            advance(len(rows[start:start + batch_size]))
    return np.concatenate(plain), (np.concatenate(flipped) if mirrored else None), np.concatenate(labels)
