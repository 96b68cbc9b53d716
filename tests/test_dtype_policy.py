"""with_dtype_policy: a SANet rebuilt under another dtype policy, same weights, errors."""

import keras
import numpy as np
import pytest
from helpers import random_images
from helpers import to_numpy

from keras_sanet import SANet
from keras_sanet.models import with_dtype_policy


def _slow_on_jax(case):
    # JAX compiles every initialiser of a SANet it builds (tens of seconds per model
    # on a 2-core CPU): there the fast run rebuilds under one policy only.
    if keras.backend.backend() == "jax":
        return pytest.param(*case, marks=pytest.mark.slow)
    return case


@pytest.fixture(scope="module")
def float32_model():
    keras.utils.set_random_seed(3)
    model = SANet(backbone="resnet18", output_stride=32, num_classes=3)
    model.build((None, None, None, 3))
    images = random_images(1, 32, 48)
    return model, images, to_numpy(model(images))


@pytest.mark.parametrize(
    "policy,atol",
    [("mixed_bfloat16", 0.05), _slow_on_jax(("mixed_float16", 0.01)),
     _slow_on_jax(("bfloat16", 0.05))],
)
def test_rebuilt_model_keeps_the_weights_and_float32_logits(float32_model, policy, atol):
    model, images, expected = float32_model
    rebuilt = with_dtype_policy(model, policy)
    assert rebuilt is not model and rebuilt.dtype_policy.name == policy
    assert model.dtype_policy.name == "float32"  # the original is untouched
    compute = policy.split("_")[-1]
    assert {layer.compute_dtype for layer in rebuilt.backbone.layers if layer.weights} == {
        compute
    }
    variable_dtype = "float32" if policy.startswith("mixed") else compute
    assert {str(w.dtype) for w in rebuilt.weights} == {variable_dtype}
    rtol = 0 if policy.startswith("mixed") else 1e-2  # bfloat16 variables round the values
    for original, copied in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_allclose(copied.astype("float32"), original, rtol=rtol, atol=0)
    logits = to_numpy(rebuilt(images))
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=atol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [None, "", "float32", keras.DTypePolicy("float32")])
def test_no_policy_or_the_same_policy_keeps_the_model(float32_model, dtype):
    model = float32_model[0]
    assert with_dtype_policy(model, dtype) is model


# Keras knows "int32" and "int8_from_float32", but float weights cannot run under them.
@pytest.mark.parametrize("dtype", ["float8", "mixed_bf16", 16, "int32", "int8_from_float32"])
def test_unknown_policy_names_the_valid_ones(float32_model, dtype):
    match = f"The dtype policy {dtype!r} is not a floating-point .*use one of float32, mixed_bf"
    with pytest.raises(ValueError, match=match):
        with_dtype_policy(float32_model[0], dtype)


def test_models_whose_layers_do_not_follow_the_config_are_refused():
    inputs = keras.Input((None, None, 3))
    functional = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    sequential = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    fix = r'keras.config.set_dtype_policy\("mixed_bfloat16"\), then build it'
    with pytest.raises(ValueError, match="its config carries no dtype. .*" + fix):
        with_dtype_policy(functional, "mixed_bfloat16")
    with pytest.raises(ValueError, match=r"layers keep their own policy \(float32\). .*" + fix):
        with_dtype_policy(sequential, "mixed_bfloat16")
