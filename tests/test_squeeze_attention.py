"""SqueezeAttention and its ceil-mode pooling, against NumPy references."""

import keras
import numpy as np
import pytest

from keras_sanet.layers import ConvBNAct
from keras_sanet.layers import SqueezeAttention
from keras_sanet.layers import pool_with_ceil
from tests.helpers import backend
from tests.helpers import random_features
from tests.helpers import to_numpy

PAPER_TEXT = dict(
    pool_type="max", pool_size=8, convs_per_branch=1, attention_activation="sigmoid"
)


def numpy_pool(x, pool_size, pool_type):
    """Windows from the top-left; partial windows use their valid pixels only."""
    batch, height, width, channels = x.shape
    out_h, out_w = -(-height // pool_size), -(-width // pool_size)
    reduce = np.mean if pool_type == "avg" else np.max
    out = np.zeros((batch, out_h, out_w, channels), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = x[
                :,
                i * pool_size : (i + 1) * pool_size,
                j * pool_size : (j + 1) * pool_size,
            ]
            out[:, i, j] = reduce(window, axis=(1, 2))
    return out


@pytest.mark.parametrize("pool_type", ["avg", "max"])
@pytest.mark.parametrize("pool_size", [2, 3, 8])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 5), (3, 3), (9, 2)])
def test_pool_with_ceil_matches_numpy(pool_type, pool_size, size):
    x = random_features((2,) + size + (3,))
    y = to_numpy(pool_with_ceil(x, pool_size, pool_type))
    np.testing.assert_allclose(
        y, numpy_pool(x, pool_size, pool_type), rtol=1e-5, atol=1e-6
    )


def test_pool_with_ceil_rejects_unknown_type():
    with pytest.raises(ValueError, match="Unknown pool_type"):
        pool_with_ceil(random_features((1, 4, 4, 1)), 2, "median")


@pytest.mark.parametrize("variant", [{}, PAPER_TEXT, {"upsampling": "bilinear"}])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 5), (3, 3), (1, 6)])
def test_output_shape_any_size(variant, size):
    layer = SqueezeAttention(6, **variant)
    x = random_features((2,) + size + (5,))
    y = layer(x)
    assert tuple(y.shape) == (2,) + size + (6,)
    assert layer.compute_output_shape((2,) + size + (5,)) == (2,) + size + (6,)


@pytest.mark.parametrize("variant", [{}, PAPER_TEXT, {"pool_size": 3}])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (3, 3)])
def test_output_is_attention_times_main_plus_attention(variant, size):
    layer = SqueezeAttention(4, **variant)
    x = random_features((2,) + size + (3,))
    output, main, attention = (
        to_numpy(t) for t in layer(x, training=False, return_branches=True)
    )
    np.testing.assert_allclose(
        output, attention * main + attention, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(to_numpy(layer(x)), output, rtol=1e-5, atol=1e-6)

    # Main branch: the full-resolution conv stack.
    expected_main = x
    for conv in layer.main_convs:
        expected_main = conv(expected_main, training=False)
    np.testing.assert_allclose(main, to_numpy(expected_main), rtol=1e-5, atol=1e-5)

    # Attention branch: pool (ceil), conv stack, then each pooled cell repeated
    # over its own window (nearest) and cropped to the input size.
    pool = layer.pool_size[0]
    small = pool_with_ceil(x, pool, layer.pool_type)
    for conv in layer.attention_convs:
        small = conv(small, training=False)
    small = to_numpy(small)
    expected_attention = np.repeat(np.repeat(small, pool, 1), pool, 2)
    expected_attention = expected_attention[:, : size[0], : size[1]]
    np.testing.assert_allclose(attention, expected_attention, rtol=1e-5, atol=1e-5)


def test_paper_text_variant_attention_is_a_sigmoid():
    layer = SqueezeAttention(4, **PAPER_TEXT)
    _, _, attention = layer(random_features((1, 9, 7, 3)), return_branches=True)
    attention = to_numpy(attention)
    assert attention.min() > 0 and attention.max() < 1
    assert len(layer.main_convs) == len(layer.attention_convs) == 1


def test_default_attention_is_relu():
    layer = SqueezeAttention(4)
    _, _, attention = layer(random_features((1, 6, 6, 3)), return_branches=True)
    assert to_numpy(attention).min() >= 0
    assert [c.activation for c in layer.attention_convs] == ["relu", "relu"]


def test_symbolic_call_with_branches():
    inputs = keras.Input((None, None, 5))
    outputs = SqueezeAttention(3)(inputs, return_branches=True)
    assert len(outputs) == 3
    assert all(tuple(t.shape) == (None, None, None, 3) for t in outputs)


def test_unknown_spatial_dims_in_functional_model():
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, SqueezeAttention(3)(inputs))
    for size in [(7, 9), (4, 4)]:
        assert tuple(model(random_features((1,) + size + (4,))).shape) == (
            (1,) + size + (3,)
        )


def test_get_config_round_trip():
    layer = SqueezeAttention(5, **PAPER_TEXT, upsampling="bilinear", name="sa")
    config = layer.get_config()
    clone = SqueezeAttention.from_config(config)
    assert clone.get_config() == config
    x = random_features((1, 9, 9, 3))
    layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(clone(x)), to_numpy(layer(x)), rtol=1e-6)


def test_conv_bn_act_defaults_and_round_trip():
    layer = ConvBNAct(4, dilation_rate=2)
    y = layer(random_features((2, 7, 5, 3)))
    assert tuple(y.shape) == (2, 7, 5, 4)
    assert not layer.conv.use_bias
    assert layer.bn.momentum == 0.9 and layer.bn.epsilon == 1e-5
    config = layer.get_config()
    assert ConvBNAct.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pool_type": "median"}, "Unknown pool_type 'median'; use 'avg'"),
        ({"pool_size": 0}, "`pool_size` must be a positive int"),
        ({"convs_per_branch": 0}, "`convs_per_branch` must be a positive integer"),
        ({"attention_activation": "nope"}, "Unknown `attention_activation`"),
        ({"upsampling": "bicubic"}, "Unknown upsampling 'bicubic'; use 'nearest'"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SqueezeAttention(4, **kwargs)


def test_filters_error():
    with pytest.raises(ValueError, match="`filters` must be a positive integer"):
        SqueezeAttention(0)


@pytest.mark.skipif(backend() != "tensorflow", reason="TensorFlow XLA training test")
def test_trains_under_tensorflow_xla():
    inputs = keras.Input((7, 9, 3))
    model = keras.Model(inputs, SqueezeAttention(4)(inputs))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    x = random_features((2, 7, 9, 3))
    history = model.fit(x, np.zeros((2, 7, 9, 4), "float32"), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.skipif(backend() != "jax", reason="jax.jit test")
def test_gradient_under_jax_jit():
    import jax

    layer = SqueezeAttention(4, **PAPER_TEXT)
    x = random_features((2, 7, 9, 3))
    layer(x)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def loss(trainable, x):
        y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
        return (y**2).sum()

    value, grads = jax.value_and_grad(loss)(trainable, x)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in grads)
