"""keras_sanet.layers.DepthwiseConv2D: keras.layers.DepthwiseConv2D's outputs, gradients,
config and files."""

import keras
import numpy as np
import pytest

from keras_sanet.layers import DepthwiseConv2D
from tests.helpers import backend
from tests.helpers import assert_gradients_match
from tests.helpers import assert_layer_matches
from tests.helpers import assert_reloads_with_safe_mode
from tests.helpers import assert_weights_files_interchange
from tests.helpers import random_features
from tests.helpers import to_numpy
from tests.helpers import twin_layers

# (input shape, layer kwargs, runs as multiply-adds once switched on)
CASES = {
    "3x3_same": ((2, 7, 6, 5), dict(kernel_size=3, padding="same"), True),
    "3x3_stride2_same_odd": ((1, 7, 9, 4), dict(kernel_size=3, strides=2, padding="same"),
                             True),
    "3x3_stride2_same_even": ((1, 8, 6, 4), dict(kernel_size=3, strides=2, padding="same"),
                              True),
    "3x3_stride2_valid_relu": ((1, 9, 8, 4), dict(kernel_size=3, strides=2,
                                                  activation="relu"), True),
    "3x5_dilated_same_no_bias": ((1, 11, 12, 3), dict(
        kernel_size=(3, 5), dilation_rate=2, padding="same", use_bias=False), True),
    "5x5_strides_2_3_valid": ((1, 12, 13, 3), dict(kernel_size=5, strides=(2, 3)), True),
    "depth_multiplier_2": ((1, 6, 6, 3), dict(kernel_size=3, padding="same",
                                              depth_multiplier=2), False),
}


def _twins(shape, kwargs):
    ours, reference, x = twin_layers(DepthwiseConv2D, keras.layers.DepthwiseConv2D, shape,
                                     kwargs)
    ours.depthwise_as_multiply_adds = True  # the default on JAX only; right everywhere
    return ours, reference, x


@pytest.mark.parametrize("case", CASES)
def test_matches_keras_depthwise_conv2d(case):
    shape, kwargs, runs_as_multiply_adds = CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    assert ours.runs_as_multiply_adds is runs_as_multiply_adds
    assert_layer_matches(ours, reference, x)


@pytest.mark.parametrize("case", ["3x3_same", "3x3_stride2_same_odd", "3x5_dilated_same_no_bias"])
def test_gradients_match_keras_depthwise_conv2d(case):
    shape, kwargs, _ = CASES[case]
    ours, reference, x = _twins(shape, kwargs)
    assert_gradients_match(ours, reference, x)


@pytest.mark.skipif(backend() == "tensorflow",
                    reason="TensorFlow's CPU kernels have no channels-first convolution")
@pytest.mark.parametrize("case", CASES)
def test_channels_first_view_matches_keras_depthwise_conv2d(case):
    shape, kwargs, _ = CASES[case]
    ours, reference, x = twin_layers(DepthwiseConv2D, keras.layers.DepthwiseConv2D, shape,
                                     kwargs)
    ours.depthwise_as_multiply_adds = False
    ours.convolve_channels_first = True  # the default on PyTorch only
    assert ours.runs_channels_first
    assert_layer_matches(ours, reference, x)
    assert_gradients_match(ours, reference, x)


def test_channels_first_view_by_default_on_torch_only():
    layer = DepthwiseConv2D(3, padding="same")
    assert layer.runs_channels_first is (backend() == "torch")
    layer.convolve_channels_first = False
    assert not layer.runs_channels_first


def test_multiply_adds_by_default_on_jax_only():
    layer = DepthwiseConv2D(3, padding="same")
    assert layer.runs_as_multiply_adds is (backend() == "jax")


def test_mixed_bfloat16_computes_in_bfloat16_like_keras():
    shape, kwargs, _ = CASES["3x3_stride2_same_odd"]
    ours, reference, x = _twins(shape, dict(kwargs, dtype="mixed_bfloat16"))
    y = ours(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(keras.ops.cast(y, "float32")),
                               to_numpy(keras.ops.cast(reference(x), "float32")),
                               rtol=0.05, atol=0.1)


def test_unknown_sizes_keep_keras_depthwise_conv():
    # A functional model on (None, None, C) traces with unknown sizes: Keras' op.
    layer = DepthwiseConv2D(3, strides=2, padding="same")
    layer.depthwise_as_multiply_adds = True
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, layer(inputs))
    x = random_features((1, 9, 7, 4))
    reference = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")
    reference(x)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(model(x)), to_numpy(reference(x)), rtol=1e-5,
                               atol=1e-5)


def test_config_is_keras_and_weights_files_interchange(tmp_path):
    layer = DepthwiseConv2D(3, strides=2, padding="same", name="depthwise")
    config = layer.get_config()
    assert config == keras.layers.DepthwiseConv2D(3, strides=2, padding="same",
                                                  name="depthwise").get_config()
    assert DepthwiseConv2D.from_config(config).get_config() == config

    # Keras 3 keys a functional model's layers by class name in .weights.h5.
    def network(depthwise_class):
        inputs = keras.Input((6, 6, 3))
        return keras.Model(inputs, depthwise_class(3, padding="same")(inputs))

    assert_weights_files_interchange(network(DepthwiseConv2D),
                                     network(keras.layers.DepthwiseConv2D),
                                     random_features((1, 6, 6, 3)), tmp_path)


def test_saved_model_reloads_with_safe_mode(tmp_path):
    inputs = keras.Input((5, 5, 3))
    model = keras.Model(inputs, DepthwiseConv2D(3, strides=2, padding="same")(inputs))
    assert_reloads_with_safe_mode(model, DepthwiseConv2D, random_features((1, 5, 5, 3)),
                                  tmp_path)
