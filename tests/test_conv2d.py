"""keras_sanet.layers.Conv2D: keras.layers.Conv2D's outputs, gradients, config and files."""

import re

import keras
import numpy as np
import pytest

from keras_sanet.layers import Conv2D
from tests.helpers import backend
from tests.helpers import assert_gradients_match
from tests.helpers import assert_layer_matches
from tests.helpers import assert_reloads_with_safe_mode
from tests.helpers import assert_weights_files_interchange
from tests.helpers import random_features
from tests.helpers import to_numpy
from tests.helpers import twin_layers
from tests.helpers import winograd_at_any_size

CASES = {
    "1x1": ((2, 7, 7, 5), dict(filters=6, kernel_size=1), True),
    "1x1_stride2_same_even": ((2, 8, 6, 5), dict(filters=6, kernel_size=1, strides=2,
                                                 padding="same"), True),
    "1x1_stride2_same_odd": ((1, 7, 9, 5), dict(filters=6, kernel_size=1, strides=2,
                                                padding="same"), True),
    "1x1_strides_2_3_valid_relu_no_bias": ((1, 9, 10, 4), dict(
        filters=3, kernel_size=1, strides=(2, 3), activation="relu", use_bias=False), True),
    "1x1_dilated": ((1, 6, 6, 4), dict(filters=3, kernel_size=1, dilation_rate=2), True),
    "3x3": ((1, 6, 6, 4), dict(filters=3, kernel_size=3, padding="same"), False),
    "1x3": ((1, 6, 6, 4), dict(filters=3, kernel_size=(1, 3)), False),
    "1x1_grouped": ((1, 6, 6, 4), dict(filters=4, kernel_size=1, groups=2), False),
}

# Kernels whose gradient is one matmul per tap (True) or the backend's (False).
FILTER_GRADIENT_CASES = {
    "3x3_same": ((2, 7, 6, 5), dict(filters=6, kernel_size=3, padding="same"), True),
    "3x3_same_dilated_no_bias": ((1, 9, 8, 4), dict(
        filters=6, kernel_size=3, padding="same", dilation_rate=2, use_bias=False), True),
    "3x5_same_dilated_1_2_relu": ((1, 8, 9, 4), dict(
        filters=3, kernel_size=(3, 5), padding="same", dilation_rate=(1, 2),
        activation="relu"), True),
    "3x3_valid": ((1, 6, 6, 4), dict(filters=3, kernel_size=3), False),
    "3x3_stride2_same": ((1, 7, 6, 4), dict(filters=3, kernel_size=3, strides=2,
                                            padding="same"), False),
    "2x2_same": ((1, 6, 6, 4), dict(filters=3, kernel_size=2, padding="same"), False),
    "3x3_grouped": ((1, 6, 6, 4), dict(filters=4, kernel_size=3, padding="same",
                                       groups=2), False),
    "1x1": ((1, 6, 6, 4), dict(filters=3, kernel_size=1), False),  # a matmul already
}

# Convolutions that see a channels-first view of their input (True) or not (False).
CHANNELS_FIRST_CASES = {
    "3x3_same": ((2, 7, 6, 5), dict(filters=6, kernel_size=3, padding="same"), True),
    "3x3_stride2_same_even": ((1, 8, 6, 4), dict(filters=3, kernel_size=3, strides=2,
                                                 padding="same"), True),  # padded unevenly
    "7x7_stride2_same_odd_no_bias": ((1, 9, 11, 3), dict(
        filters=4, kernel_size=7, strides=2, padding="same", use_bias=False), True),
    "3x5_valid_dilated_relu": ((1, 9, 12, 4), dict(
        filters=3, kernel_size=(3, 5), dilation_rate=(1, 2), activation="relu"), True),
    "3x3_grouped": ((1, 6, 6, 4), dict(filters=4, kernel_size=3, padding="same",
                                       groups=2), True),
    "1x1_grouped": ((1, 6, 6, 4), dict(filters=4, kernel_size=1, groups=2), True),
    "1x1": ((1, 6, 6, 4), dict(filters=3, kernel_size=1), False),  # a matmul already
}

# Convolutions Winograd can compute (True) or not (False).
WINOGRAD_CASES = {
    "3x3_same": ((2, 7, 6, 5), dict(filters=6, kernel_size=3, padding="same"), True),
    "3x3_same_dilated_2_relu_no_bias": ((1, 9, 8, 4), dict(
        filters=3, kernel_size=3, padding="same", dilation_rate=2, activation="relu",
        use_bias=False), True),
    "3x3_same_dilated_1_4": ((1, 6, 10, 4), dict(
        filters=3, kernel_size=3, padding="same", dilation_rate=(1, 4)), True),
    "3x3_valid": ((1, 6, 6, 4), dict(filters=3, kernel_size=3), False),
    "3x3_stride2_same": ((1, 7, 6, 4), dict(filters=3, kernel_size=3, strides=2,
                                            padding="same"), False),
    "5x5_same": ((1, 6, 6, 4), dict(filters=3, kernel_size=5, padding="same"), False),
    "3x3_grouped": ((1, 6, 6, 4), dict(filters=4, kernel_size=3, padding="same",
                                       groups=2), False),
    "1x1": ((1, 6, 6, 4), dict(filters=3, kernel_size=1), False),
}


def _twins(shape, kwargs):
    """Ours and Keras' layer with the same (non-trivial) weights."""
    return twin_layers(Conv2D, keras.layers.Conv2D, shape, kwargs)


@pytest.mark.parametrize("case", CASES)
def test_matches_keras_conv2d(case):
    shape, kwargs, runs_as_matmul = CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    assert ours.runs_as_matmul is runs_as_matmul
    assert_layer_matches(ours, reference, x)


@pytest.mark.parametrize("case", ["1x1", "1x1_stride2_same_odd"])
def test_gradients_match_keras_conv2d(case):
    shape, kwargs, _ = CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    assert_gradients_match(ours, reference, x)


@pytest.mark.parametrize("case", FILTER_GRADIENT_CASES)
def test_kernel_gradient_as_matmuls_matches_keras_conv2d(case):
    shape, kwargs, filter_gradient_runs_as_matmul = FILTER_GRADIENT_CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    ours.filter_gradient_as_matmul = True  # the default on JAX only; right everywhere
    assert ours.filter_gradient_runs_as_matmul is filter_gradient_runs_as_matmul
    assert_layer_matches(ours, reference, x)
    assert_gradients_match(ours, reference, x, atol=1e-4, atol_of_largest=True)


def test_kernel_gradient_as_matmuls_by_default_on_jax_only():
    # Where it was measured faster (PROFILE.md section 8); the switch turns it either way.
    layer = Conv2D(3, 3, padding="same")
    assert layer.filter_gradient_runs_as_matmul is (backend() == "jax")
    layer.filter_gradient_as_matmul = not layer.filter_gradient_as_matmul
    assert layer.filter_gradient_runs_as_matmul is (backend() != "jax")


@pytest.mark.skipif(backend() == "tensorflow",
                    reason="TensorFlow's CPU kernels have no channels-first convolution")
@pytest.mark.parametrize("case", CHANNELS_FIRST_CASES)
def test_channels_first_view_matches_keras_conv2d(case):
    shape, kwargs, runs_channels_first = CHANNELS_FIRST_CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    ours.convolve_channels_first = True  # the default on PyTorch only
    assert ours.runs_channels_first is runs_channels_first
    assert_layer_matches(ours, reference, x)
    assert_gradients_match(ours, reference, x)


def test_channels_first_view_by_default_on_torch_only():
    # Where it was measured faster (PROFILE.md section 11); the switch turns it off.
    layer = Conv2D(3, 3, padding="same")
    assert layer.runs_channels_first is (backend() == "torch")
    layer.convolve_channels_first = False
    assert not layer.runs_channels_first


@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_matches_keras_conv2d(case):
    shape, kwargs, winograd_applies = WINOGRAD_CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    winograd_at_any_size(ours)
    assert ours.winograd_applies is winograd_applies
    assert ours.runs_winograd(x) is winograd_applies
    expected = to_numpy(reference(x))
    np.testing.assert_allclose(to_numpy(ours(x)), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())
    assert_gradients_match(ours, reference, x, atol=1e-5, atol_of_largest=True)


@pytest.mark.parametrize("accelerators", [0, 1])
def test_winograd_by_default_where_no_gpu_or_tpu_is_visible(monkeypatch, accelerators):
    # Measured faster on CPUs (PROFILE.md section 12), not measured beside a GPU;
    # the switch turns it either way.
    from keras_sanet import devices

    monkeypatch.setattr(devices, "accelerator_count", lambda: accelerators)
    layer = Conv2D(256, 3, padding="same")
    x = keras.KerasTensor((1, 32, 32, 256))  # the smallest convolution it takes
    assert layer.runs_winograd(x) is (accelerators == 0)
    layer.winograd = not layer.winograd
    assert layer.runs_winograd(x) is (accelerators != 0)


@pytest.mark.parametrize("shape, filters", [
    ((1, 31, 33, 256), 256),  # 1023 pixels
    ((1, 32, 32, 255), 256),
    ((1, 32, 32, 256), 255),
])
def test_winograd_skips_small_convolutions(shape, filters):
    # Below 32x32 pixels or 256 channels in or out the transforms cost more than
    # they save (PROFILE.md section 12).
    layer = Conv2D(filters, 3, padding="same")
    layer.winograd = True
    assert not layer.runs_winograd(keras.KerasTensor(shape))
    assert layer.runs_winograd(keras.KerasTensor((2, 32, 32, 256))) is (filters == 256)


def test_winograd_in_a_model_of_unknown_image_size_matches_keras():
    # TensorFlow's symbolic call has no height or width: Keras' convolution there;
    # predict and a training step trace with the batch's own sizes, one of them odd.
    def network(conv_class):
        inputs = keras.Input((None, None, 3))
        outputs = conv_class(4, 3, padding="same", dilation_rate=2)(inputs)
        return keras.Model(inputs, outputs)

    ours, reference = network(Conv2D), network(keras.layers.Conv2D)
    winograd_at_any_size(ours.layers[1])
    reference.set_weights(ours.get_weights())
    for model in (ours, reference):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    for shape in [(2, 8, 8, 3), (1, 9, 6, 3)]:
        x, y = random_features(shape), random_features(shape[:3] + (4,), seed=3)
        expected = reference.predict_on_batch(x)
        np.testing.assert_allclose(ours.predict_on_batch(x), expected, rtol=0,
                                   atol=1e-5 * np.abs(expected).max())
        np.testing.assert_allclose(ours.train_on_batch(x, y), reference.train_on_batch(x, y),
                                   rtol=1e-5)
        for weight, expected in zip(ours.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(weight, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [3, "4", None])
def test_unknown_winograd_output_size_is_refused_where_it_is_set(size):
    layer = Conv2D(4, 3, padding="same", name="head_conv")
    with pytest.raises(ValueError, match=(
            r"Conv2D 'head_conv': winograd_output_size must be one of \[2, 4\].*got "
            + re.escape(repr(size)) + r".*winograd = False")):
        layer.winograd_output_size = size
    assert layer.winograd_output_size == 4  # unchanged


def test_winograd_is_float32_only():
    layer = Conv2D(3, 3, padding="same", dtype="mixed_bfloat16")
    layer.winograd = True
    assert layer.winograd_shape and not layer.winograd_applies


def test_mixed_bfloat16_computes_in_bfloat16_like_keras():
    shape, kwargs, _ = CASES["1x1_stride2_same_odd"]
    kwargs = dict(kwargs, dtype="mixed_bfloat16")
    ours, reference, x = _twins(shape, kwargs)
    y = ours(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(y, "float32")),
        to_numpy(keras.ops.cast(reference(x), "float32")), rtol=0.05, atol=0.1,
    )


def test_mixed_bfloat16_kernel_gradient_as_matmuls_like_keras():
    shape, kwargs, _ = FILTER_GRADIENT_CASES["3x3_same_dilated_no_bias"]
    kwargs = dict(kwargs, dtype="mixed_bfloat16")
    ours, reference, x = _twins(shape, kwargs)
    ours.filter_gradient_as_matmul = True
    assert keras.backend.standardize_dtype(ours(x).dtype) == "bfloat16"
    # float32 variables, bfloat16 arithmetic: agree to bfloat16's ~3 digits.
    assert_gradients_match(ours, reference, x, rtol=0.05, atol=0.02, atol_of_largest=True)


def test_config_is_keras_conv2d_s_and_round_trips():
    layer = Conv2D(8, 1, strides=2, use_bias=False, name="pointwise")
    config = layer.get_config()
    assert config == keras.layers.Conv2D(8, 1, strides=2, use_bias=False,
                                         name="pointwise").get_config()
    assert Conv2D.from_config(config).get_config() == config


def test_weights_files_are_interchangeable_with_keras_conv2d(tmp_path):
    # Keras 3 keys a functional model's layers by class name in .weights.h5:
    # ours must keep Conv2D's key so that existing files load into it and back.
    def network(conv_class):
        inputs = keras.Input((6, 6, 3))
        x = conv_class(4, 3, padding="same")(inputs)
        outputs = conv_class(5, 1, strides=2)(x)
        return keras.Model(inputs, outputs)

    assert_weights_files_interchange(network(Conv2D), network(keras.layers.Conv2D),
                                     random_features((1, 6, 6, 3)), tmp_path)


def test_saved_model_reloads_with_safe_mode(tmp_path):
    inputs = keras.Input((5, 5, 3))
    model = keras.Model(inputs, Conv2D(4, 1, strides=2, activation="relu")(inputs))
    assert_reloads_with_safe_mode(model, Conv2D, random_features((1, 5, 5, 3)), tmp_path)


@pytest.mark.skipif(backend() != "jax", reason="jax.export's symbolic shapes are JAX's")
def test_strided_1x1_beside_a_strided_3x3_exports_with_symbolic_sizes():
    # A basic block's shortcut (1x1, stride 2) is added to its padded 3x3 stride-2
    # conv: under jax.export both sizes must be the same symbolic expression.
    import jax

    inputs = keras.Input((None, None, 4))
    shortcut = Conv2D(6, 1, strides=2)(inputs)
    main = keras.layers.ZeroPadding2D(1)(inputs)
    main = Conv2D(6, 3, strides=2, padding="valid")(main)
    model = keras.Model(inputs, keras.layers.Add()([shortcut, main]))
    variables = [v.value for v in model.variables]

    def forward(x):
        outputs, _ = model.stateless_call(variables, [], x)
        return outputs

    shape = jax.export.symbolic_shape("b, h, w, 4")
    exported = jax.export.export(jax.jit(forward))(jax.ShapeDtypeStruct(shape, "float32"))
    x = random_features((2, 9, 6, 4))
    np.testing.assert_allclose(np.asarray(exported.call(x)), to_numpy(model(x)), rtol=1e-5,
                               atol=1e-5)
