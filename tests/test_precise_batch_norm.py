"""`recalibrate_batch_norm` and the `PreciseBatchNorm` callback on tiny models, every backend."""

import keras
import numpy as np
import pytest

from keras_sanet.training.precise_batch_norm import PreciseBatchNorm
from keras_sanet.training.precise_batch_norm import batch_count
from keras_sanet.training.precise_batch_norm import batch_norm_layers
from keras_sanet.training.precise_batch_norm import recalibrate_batch_norm
from tests.helpers import random_images
from tests.helpers import to_numpy


def bn_first_model(frozen=False):
    """Input -> BatchNorm -> conv: the batch norm sees the raw images, whatever the weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    norm = keras.layers.BatchNormalization(momentum=0.9, name="norm")
    norm.trainable = not frozen
    hidden = norm(inputs)
    hidden = keras.layers.Conv2D(4, 3, padding="same", name="conv")(hidden)
    hidden = keras.layers.BatchNormalization(name="inner_norm")(hidden)
    outputs = keras.layers.Conv2D(2, 1, name="logits")(hidden)
    return keras.Model(inputs, outputs)


def image_batches(count=3, batch=2, size=8):
    return [random_images(batch, size, size, seed=i) / 255.0 + i for i in range(count)]


def expected_statistics(batches):
    """The average over batches of each batch's per-channel mean and (biased) variance."""
    means = [batch.mean(axis=(0, 1, 2)) for batch in batches]
    variances = [batch.var(axis=(0, 1, 2)) for batch in batches]
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def as_tf_dataset(batches, with_masks):
    import tensorflow as tf

    images = tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(len(batches[0]))
    if with_masks:
        return images.map(lambda x: (x, tf.zeros(tf.shape(x)[:3], "uint8")))
    return images


@pytest.mark.parametrize("source", ["list", "tf_images", "tf_pairs"])
@pytest.mark.parametrize("steps", [None, 2])
def test_statistics_become_the_average_of_the_batch_statistics(source, steps):
    model = bn_first_model()
    batches = image_batches()
    conv_kernel = to_numpy(model.get_layer("conv").kernel)
    images = batches if source == "list" else as_tf_dataset(batches, source == "tf_pairs")

    used = recalibrate_batch_norm(model, images, steps=steps, verbose=0)

    assert used == (steps or len(batches))
    mean, variance = expected_statistics(batches[:used])
    norm = model.get_layer("norm")
    np.testing.assert_allclose(to_numpy(norm.moving_mean), mean, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(norm.moving_variance), variance, rtol=1e-4)
    assert norm.momentum == 0.9  # restored
    np.testing.assert_array_equal(to_numpy(model.get_layer("conv").kernel), conv_kernel)
    np.testing.assert_array_equal(to_numpy(norm.gamma), np.ones(3))


def test_nested_batch_norms_are_found_and_frozen_ones_left_alone():
    inner = bn_first_model(frozen=True)
    inputs = keras.Input((None, None, 3))
    outer = keras.Model(inputs, keras.layers.BatchNormalization(name="outer_norm")(inner(inputs)))

    names = sorted(layer.name for layer in batch_norm_layers(outer))
    assert names == ["inner_norm", "outer_norm"]
    recalibrate_batch_norm(outer, image_batches(), verbose=0)
    frozen = inner.get_layer("norm")
    np.testing.assert_array_equal(to_numpy(frozen.moving_mean), np.zeros(3))
    assert not np.allclose(to_numpy(inner.get_layer("inner_norm").moving_variance), 1.0)


@pytest.mark.parametrize(
    "images, message",
    [([np.zeros((8, 8, 3), "float32")], "image batches"), ([], "no image batches")],
)
def test_bad_input_is_a_clear_error(images, message):
    model = bn_first_model()
    with pytest.raises(ValueError, match=message):
        recalibrate_batch_norm(model, images, verbose=0)
    assert model.get_layer("norm").momentum == 0.9


def _sources(kind):
    """Three batches of two images, as `kind` gives them."""
    import tensorflow as tf

    batches = image_batches()
    if kind == "list":
        return batches
    if kind == "array":
        return np.stack(batches)  # (batches, batch, H, W, C)
    if kind == "generator":
        return (batch for batch in batches)
    dataset = as_tf_dataset(batches, with_masks=kind == "tf_pairs")
    if kind == "tf_filtered":  # a filter leaves the cardinality unknown to TensorFlow
        return dataset.filter(lambda x: tf.reduce_all(tf.shape(x) > 0))
    if kind == "tf_repeated":  # infinite
        return dataset.repeat()
    return dataset


@pytest.mark.parametrize(
    "kind, expected",
    [("list", 3), ("array", 3), ("tf_images", 3), ("tf_pairs", 3), ("generator", None),
     ("tf_filtered", None), ("tf_repeated", None)],
)
def test_batch_count_is_known_for_sized_inputs_only(kind, expected):
    assert batch_count(_sources(kind)) == expected
    # steps caps a known count and stands in for an unknown one.
    assert batch_count(_sources(kind), steps=2) == 2
    assert batch_count(_sources(kind), steps=5) == (expected or 5)


@pytest.mark.parametrize("kind, bar", [("tf_pairs", "3/3"), ("generator", "3/Unknown")])
def test_progress_bar_shows_the_total_when_known(kind, bar, capsys):
    used = recalibrate_batch_norm(bn_first_model(), _sources(kind), verbose=1)
    assert used == 3
    output = capsys.readouterr().out
    assert bar in output and output.endswith("\n")  # the bar's line is ended either way


@pytest.mark.parametrize("epochs, validation_freq, recalibrations", [(3, 2, 2), (2, 1, 2)])
def test_callback_recalibrates_before_validation_and_at_the_end(
    epochs, validation_freq, recalibrations
):
    model = bn_first_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = random_images(4, 8, 8, seed=9)
    y = np.zeros((4, 8, 8, 2), "float32")
    batches = image_batches()
    callback = PreciseBatchNorm(batches, verbose=0)

    class ValidationStatistics(keras.callbacks.Callback):
        """Records the statistics each validation starts with (it runs after `callback`)."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def on_test_begin(self, logs=None):
            self.seen.append(to_numpy(self.model.get_layer("norm").moving_mean))

    validation = ValidationStatistics()
    model.fit(
        x, y, batch_size=2, epochs=epochs, validation_data=(x, y), verbose=0,
        validation_freq=validation_freq, callbacks=[callback, validation],
    )

    assert callback.recalibrations == recalibrations
    mean, _ = expected_statistics(batches)
    assert len(validation.seen) == epochs // validation_freq
    for seen in validation.seen:
        np.testing.assert_allclose(seen, mean, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(model.get_layer("norm").moving_mean), mean, rtol=1e-5)
