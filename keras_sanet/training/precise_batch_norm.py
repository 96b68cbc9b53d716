"""Precise batch norm: moving statistics re-estimated on full-size images after training on crops.

A segmentation network trained on small random-scale crops carries batch-norm
moving statistics of those crops, which can describe full frames badly (our
CamVid ResNet-50 run: 77 % pixel accuracy with its moving statistics, 91 %
with batch statistics on the same frames). Re-estimating them with a few
forward passes over full-size training images, weights untouched, is the
"precise BN" of Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021), as in
fvcore's `update_bn_stats`: every batch normalization layer's moving mean and
variance become the plain average of its batch statistics over the passes.
"""

import keras
import numpy as np


def batch_norm_layers(model):
    """The model's `BatchNormalization` layers that learn statistics (nested ones included).

    Layers with `trainable=False` (frozen batch norm) keep their statistics:
    Keras runs them in inference mode even when training.
    """
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def batch_count(images, steps=None):
    """How many batches `recalibrate_batch_norm` will use, when it can be known beforehand.

    Args:
        images: what `recalibrate_batch_norm` takes: a list or array of
            batches (its length), a `tf.data.Dataset` (its cardinality, when
            TensorFlow knows it: not after `filter`, say), or any other
            iterable (unknown, e.g. a generator).
        steps: the most batches to use (None: no limit).

    Returns:
        The smaller of the input's length and `steps`, whichever are known;
        None when neither is (the progress bar then counts without a total).

    Example:
    >>> batch_count(tf.data.Dataset.range(10).batch(4))
    3
    >>> batch_count(iter(batches), steps=5)
    5
    """
    if hasattr(images, "cardinality"):  # a tf.data.Dataset
        size = int(images.cardinality())
        size = size if size >= 0 else None  # -1: infinite, -2: unknown
    else:
        try:
            size = len(images)
        except TypeError:  # a generator or another unsized iterable
            size = None
    known = [count for count in (size, steps) if count is not None]
    return min(known) if known else None


def _image_batches(images):
    if hasattr(images, "as_numpy_iterator"):  # a tf.data.Dataset
        images = images.as_numpy_iterator()
    for batch in images:
        if isinstance(batch, (tuple, list)):  # (images, masks) pairs: keep the images
            batch = batch[0]
        yield np.asarray(batch)


def recalibrate_batch_norm(model, images, steps=None, verbose=1):
    """Re-estimates the moving statistics of every batch normalization layer of `model`.

    Runs `model` in training mode (no weight update) over the batches of
    `images` and sets each layer's moving mean and variance to the average of
    its batch statistics over those batches (momentum `1 - 1/k` at the k-th
    batch). Nothing else of the model changes: weights, optimizer and
    dropout state aside, its inference output is only affected through the
    new statistics. Use batches of the size and kind the model meets at test
    time (full frames, not crops) and a few dozen images or more.

    Args:
        model: a Keras model (built).
        images: an iterable of image batches `(batch, H, W, C)`: a
            `tf.data.Dataset` of images or of `(image, mask)` batches, or a
            list of arrays. Every batch must hold at least 2 images or be a
            large image (a batch norm after global pooling needs several).
        steps: use at most this many batches (None: all of them).
        verbose: 1 shows a Keras progress bar (out of `batch_count(images,
            steps)` batches when that is known), 0 is silent.

    Returns:
        The number of batches used.

    Example:
    >>> full_frames = camvid_dataset(root, "train", augment=False, batch_size=4).take(12)
    >>> recalibrate_batch_norm(model, full_frames)
    12
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    progress = None
    if verbose:
        progress = keras.utils.Progbar(batch_count(images, steps), unit_name="batch")
    used = 0
    try:
        for batch in _image_batches(images):
            if steps is not None and used >= steps:
                break
            if batch.ndim != 4:
                raise ValueError(
                    f"recalibrate_batch_norm needs image batches (batch, height, width, "
                    f"channels); got an array of shape {batch.shape}. Batch the dataset "
                    "(e.g. `.batch(4)`)."
                )
            used += 1
            for layer in layers:
                # moving = moving * m + batch * (1 - m): the running average of all batches.
                layer.momentum = 1.0 - 1.0 / used
            model(batch, training=True)
            if progress is not None:
                progress.update(used)
        if progress is not None and (progress.target is None or used < progress.target):
            # Without a reached total the bar never ends its line itself.
            progress.update(used, finalize=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not used:
        raise ValueError(
            "recalibrate_batch_norm got no image batches; pass a non-empty dataset or list "
            "of image batches."
        )
    return used


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recalibrates batch-norm statistics before each validation of `fit` and at its end.

    Training itself uses batch statistics, so recalibrating does not change
    the trajectory of a run; it makes the moving statistics that validation,
    the best checkpoint and the saved model use describe `images` (full
    frames) instead of the training crops. It recalibrates only when the
    weights changed since the last recalibration.

    Args:
        images: image batches for `recalibrate_batch_norm` (a `tf.data.Dataset`
            is iterated afresh each time).
        steps: batches per recalibration (None: all of `images`).
        verbose: progress bar of each recalibration.

    Example:
    >>> model.fit(crops, validation_data=val, epochs=10,
    ...           callbacks=[PreciseBatchNorm(full_frames.take(12))])
    """

    def __init__(self, images, steps=None, verbose=1):
        super().__init__()
        self.images = images
        self.steps = steps
        self.verbose = verbose
        # A fresh callback knows nothing of the model's statistics (e.g. a resumed run).
        self.stale = True
        self.recalibrations = 0

    def _recalibrate(self):
        if self.stale:
            if self.verbose:
                print("Recalibrating batch-norm statistics on full-size images")
            recalibrate_batch_norm(self.model, self.images, self.steps, verbose=self.verbose)
            self.stale = False
            self.recalibrations += 1

    def on_epoch_begin(self, epoch, logs=None):
        # Every epoch trains (no per-batch hook: it would sync the logs every step).
        self.stale = True

    def on_test_begin(self, logs=None):
        self._recalibrate()

    def on_train_end(self, logs=None):
        self._recalibrate()
