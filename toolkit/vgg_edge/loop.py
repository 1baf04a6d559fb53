"""The training loop: epochs of one train step run by a tf.distribute strategy, with Keras callbacks.

It stands where `model.fit` would, because fit fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585; distribute.py). One loop serves every strategy, so a single-process run and
a multi-worker run train the same way. Each step: every replica takes every n-th example of the
global batch, computes its share of the batch's mean loss (per-example loss times 1/global batch
size), and the optimizer sums the replicas' gradients (Keras' optimizers all-reduce under a
strategy). The epoch's figures (loss, accuracy, val_loss, val_accuracy, val_calibrated_loss) are summed
over replicas with `strategy.reduce`, so every worker sees the same numbers and makes the same
early-stopping and learning-rate decisions.

`val_calibrated_loss` is the validation loss of the epoch's model as it would ship: after the temperature
that suits it (temperature.py), the best of `T_GRID`. It selects epochs. The plain val loss punishes an
over-confident epoch, and under label smoothing an under-confident one, for what the temperature folded in
at the end removes; so the plain figure would choose an epoch for a flaw that does not ship. Each replica
sums its examples' loss at every temperature of the grid: sums reduce across replicas and workers as
the other figures do.

Keras' EarlyStopping and ReduceLROnPlateau run as they do under fit (driven by a CallbackList);
`resume.PhaseState` and `resume.EpochCheckpoint` make the phase resumable after every epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from .distribute import Placement
from .resume import EpochCheckpoint, PhaseState
from .temperature import T_GRID

CALIBRATED_LOSS = "val_calibrated_loss"


class Batches:
    """Batches of a source (views x rows: a FeatureStore, or decoded images) over the given rows.

    With a seed, each epoch takes one random view of every image in a random order, both drawn from
    (seed, epoch), so a resumed or distributed phase sees the batches an uninterrupted single one
    would. Without one (validation): view 0, in order. `class_weight` (one per class) scales each
    example's loss, as Keras' fit does. One batch in memory at a time."""

    def __init__(self, source, rows: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None = None,
                 class_weight: np.ndarray | None = None):
        self.source, self.rows, self.labels, self.batch_size, self.seed = source, rows, labels, batch_size, seed
        self.class_weight = class_weight
        self.set_epoch(0)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if self.seed is None:
            self.order, self.view = self.rows, np.zeros(len(self.rows), np.int64)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            self.order, self.view = rng.permutation(self.rows), rng.integers(0, self.source.views, len(self.rows))

    def part(self, i: int, replica: int, replicas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Replica `replica`'s share of batch `i` (every `replicas`-th example): inputs, labels, and each
        example's weight in the batch's mean loss (1 / the whole batch's size)."""
        whole = slice(i * self.batch_size, (i + 1) * self.batch_size)
        order, view = self.order[whole], self.view[whole]
        mine = slice(replica, None, replicas)
        rows = order[mine]
        labels = self.labels[rows]
        weights = np.full(len(rows), 1 / len(order), np.float32)
        if self.class_weight is not None:
            weights *= self.class_weight[labels]
        return self.source.read(view[mine], rows), labels, weights


def training_loss(y, probs, label_smoothing: float = 0.0):
    """Per-example cross-entropy of the true labels `y` (class indices) under `probs`; with `label_smoothing` e,
    against targets that put 1 - e on the true class and e spread evenly over all classes (Keras' definition)."""
    import keras
    import tensorflow as tf

    if not label_smoothing:
        return keras.losses.sparse_categorical_crossentropy(y, probs)
    targets = tf.one_hot(tf.cast(y, tf.int32), tf.shape(probs)[-1], dtype=probs.dtype)
    return keras.losses.categorical_crossentropy(targets, probs, label_smoothing=label_smoothing)


def run_epochs(model, placement: Placement, train: Batches, val: Batches, epochs: int, callbacks: list, state: PhaseState,
               checkpoint: EpochCheckpoint, on_epoch: Callable[[int, dict, float], None], label_smoothing: float = 0.0) -> None:
    """Train the compiled `model` on `train` for `epochs` epochs (fewer when early stopping ends it), going on
    from the last completed epoch that `checkpoint` holds; `on_epoch(epoch, logs, seconds)` after each.

    `label_smoothing` softens the training targets only: the validation losses are the plain cross-entropy,
    comparable across recipes."""
    import keras
    import tensorflow as tf

    strategy = placement.strategy
    optimizer = model.optimizer
    with strategy.scope():
        optimizer.build(model.trainable_variables)
    first = checkpoint.restore(model, optimizer, placement.agree)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    if first:
        state.restore(first, model)

    def train_replica(x, y, w):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            losses = training_loss(y, probs, label_smoothing)
            loss = tf.reduce_sum(losses * w)
            scaled = optimizer.scale_loss(loss)  # float16: the loss-scaled optimizer's scale; otherwise the loss
        optimizer.apply_gradients(zip(tape.gradient(scaled, model.trainable_variables), model.trainable_variables))
        return tf.reduce_sum(losses), _correct(probs, y)

    def eval_replica(x, y, w):
        probs = model(x, training=False)
        return tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, probs)), _correct(probs, y), _loss_per_temperature(probs, y)

    def stepper(replica_fn):
        @tf.function(reduce_retracing=True)
        def step(iterator):
            sums = strategy.run(replica_fn, args=next(iterator))
            return tuple(strategy.reduce("SUM", s, axis=None) for s in sums)

        return step

    train_step, eval_step = stepper(train_replica), stepper(eval_replica)
    for epoch in range(first, epochs):
        if model.stop_training:
            break
        started = time.perf_counter()
        callback_list.on_epoch_begin(epoch)
        train.set_epoch(epoch)
        loss, accuracy = _over(train, train_step, placement, model.input_shape[1:])
        val_loss, val_accuracy, val_per_temperature = _over(val, eval_step, placement, model.input_shape[1:])
        logs = {"loss": float(loss), "accuracy": float(accuracy), "val_loss": float(val_loss), "val_accuracy": float(val_accuracy),
                CALIBRATED_LOSS: float(np.min(val_per_temperature))}
        callback_list.on_epoch_end(epoch, logs)
        state.save(epoch + 1, logs, model)
        checkpoint.save(epoch + 1)
        on_epoch(epoch, logs, time.perf_counter() - started)
    callback_list.on_train_end()


def _correct(probs, y):
    import tensorflow as tf

    return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=-1), y), tf.float32))


def _loss_per_temperature(probs, y):
    """Summed cross-entropy of `y` under softmax(log(probs) / T), for every T of T_GRID: [len(T_GRID)].
    log(probs) are the logits up to a constant per example, which the softmax ignores."""
    import tensorflow as tf

    log_p = tf.math.log(tf.clip_by_value(tf.cast(probs, tf.float32), 1e-30, 1.0))
    scaled = log_p[:, None, :] / tf.constant(T_GRID, tf.float32)[None, :, None]  # [examples, temperatures, classes]
    true = tf.gather(scaled, tf.cast(y, tf.int32), axis=2, batch_dims=1)  # [examples, temperatures]
    return tf.reduce_sum(tf.reduce_logsumexp(scaled, axis=2) - true, axis=0)


def _over(batches: Batches, step, placement: Placement, input_shape: tuple) -> list[np.ndarray]:
    """The means over examples of what `step` sums (loss, correct answers, ...) in one pass over `batches`,
    every replica fed its share of each batch."""
    import tensorflow as tf

    strategy, replicas = placement.strategy, placement.replicas
    signature = (tf.TensorSpec((None, *input_shape), tf.float32), tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.float32))

    def per_worker(context: tf.distribute.InputContext):
        local = replicas // context.num_input_pipelines  # this worker's replicas, fed in turn from its one dataset
        first = context.input_pipeline_id * local

        def parts():
            for i in range(len(batches)):
                for r in range(local):
                    yield batches.part(i, first + r, replicas)

        return tf.data.Dataset.from_generator(parts, output_signature=signature).prefetch(2)

    iterator = iter(strategy.distribute_datasets_from_function(per_worker))
    totals = None
    for _ in range(len(batches)):
        sums = [np.asarray(s, np.float64) for s in step(iterator)]
        totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
    n = max(len(batches.rows), 1)
    return [t / n for t in totals]
