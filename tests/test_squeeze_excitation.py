"""SqueezeExcitation against a NumPy reference."""

import keras
import numpy as np
import pytest

from keras_sanet.layers import SqueezeExcitation
from tests.helpers import random_features
from tests.helpers import to_numpy


def numpy_se_weights(x, layer):
    w1, b1, w2, b2 = (to_numpy(v) for v in layer.weights)
    hidden = np.maximum(x.mean(axis=(1, 2)) @ w1 + b1, 0)
    weights = 1 / (1 + np.exp(-(hidden @ w2 + b2)))
    return weights[:, None, None, :]


@pytest.mark.parametrize(
    "channels,reduction,hidden", [(16, 4, 4), (12, 4, 3), (8, 2, 4), (2, 4, 1)]
)
def test_matches_numpy(channels, reduction, hidden):
    layer = SqueezeExcitation(reduction)
    x = random_features((2, 5, 7, channels))
    y = to_numpy(layer(x))
    assert layer.squeeze.units == hidden  # max(1, C // reduction)
    # Non-trivial biases so the reference checks the whole formula.
    layer.set_weights([w + 0.1 for w in layer.get_weights()])
    weights = numpy_se_weights(x, layer)
    np.testing.assert_allclose(to_numpy(layer(x)), weights * x, rtol=1e-5, atol=1e-6)
    assert y.shape == x.shape


def test_residual_form():
    layer = SqueezeExcitation(4)
    x = random_features((2, 4, 4, 8))
    residual = random_features((2, 4, 4, 8), seed=1)
    y = to_numpy(layer(x, residual=residual))
    weights = numpy_se_weights(x, layer)
    np.testing.assert_allclose(y, weights * x + residual, rtol=1e-5, atol=1e-6)


def test_get_config_round_trip_and_symbolic():
    layer = SqueezeExcitation(8, name="se")
    config = layer.get_config()
    assert SqueezeExcitation.from_config(config).get_config() == config
    inputs = keras.Input((None, None, 16))
    assert tuple(layer(inputs).shape) == (None, None, None, 16)


@pytest.mark.parametrize("reduction", [0, -1, 2.5, True])
def test_reduction_error(reduction):
    with pytest.raises(ValueError, match="`reduction` must be a positive integer"):
        SqueezeExcitation(reduction)
