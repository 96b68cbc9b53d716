"""The paper's optimizer: poly decay, 10x head learning rate, PyTorch-style weight decay."""

import copy

import keras
import numpy as np
import pytest

from keras_sanet.training import MultiplierSGD
from keras_sanet.training import sgd_poly
from tests.helpers import to_numpy


@pytest.mark.parametrize("step", [0, 1, 7, 50, 99, 100, 150])
def test_sgd_poly_schedule_is_the_papers_poly_decay(step):
    optimizer = sgd_poly(learning_rate=0.01, total_steps=100)
    optimizer.iterations.assign(step)
    expected = 0.01 * (1 - min(step, 100) / 100) ** 0.9
    np.testing.assert_allclose(float(to_numpy(optimizer.learning_rate)), expected, atol=1e-9)


def test_sgd_poly_learning_rate_follows_the_optimizer_step():
    optimizer = sgd_poly(learning_rate=0.1, total_steps=10, momentum=0.0, weight_decay=0.0)
    variable = keras.Variable(np.ones(3, "float32"))
    for step in range(4):
        np.testing.assert_allclose(
            float(to_numpy(optimizer.learning_rate)), 0.1 * (1 - step / 10) ** 0.9, rtol=1e-6
        )
        optimizer.apply([keras.ops.ones(3)], [variable])
    assert int(to_numpy(optimizer.iterations)) == 4


def test_sgd_poly_arguments():
    optimizer = sgd_poly(learning_rate=0.02, total_steps=5, momentum=0.8, weight_decay=3e-4)
    assert optimizer.lr_multipliers == {"sanet_heads": 10.0}
    assert optimizer.coupled_weight_decay == pytest.approx(3e-4)
    assert optimizer.weight_decay is None  # no second, decoupled decay
    assert optimizer.momentum == pytest.approx(0.8)
    assert sgd_poly(head_lr_multiplier=1.0).lr_multipliers == {}


def test_multiplier_sgd_scales_matching_variables_on_apply():
    with keras.name_scope("backbone"):
        body = keras.Variable(np.array([1.0, -2.0], "float32"), name="kernel")
    with keras.name_scope("sanet_heads"):
        head = keras.Variable(np.array([0.5, 3.0], "float32"), name="kernel")
    assert "sanet_heads" in head.path and "sanet_heads" not in body.path
    optimizer = MultiplierSGD(learning_rate=0.1, lr_multipliers={"sanet_heads": 10.0})
    gradient = np.array([0.2, -0.4], "float32")
    optimizer.apply([gradient, gradient], [body, head])
    np.testing.assert_allclose(to_numpy(body), [1.0 - 0.02, -2.0 + 0.04], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(head), [0.5 - 0.2, 3.0 + 0.4], rtol=1e-6)


def _tiny_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="backbone_dense")(inputs)
    outputs = keras.layers.Dense(2, name="sanet_heads_classifier")(hidden)
    return keras.Model(inputs, outputs)


def test_multiplier_sgd_in_fit_moves_heads_ten_times_as_far():
    """One `fit` step (JAX: the stateless path) against plain SGD from the same start."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype("float32")
    y = rng.standard_normal((8, 2)).astype("float32")
    plain, scaled = _tiny_model(), _tiny_model()
    scaled.set_weights(plain.get_weights())
    start = [w.copy() for w in plain.get_weights()]
    plain.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    scaled.compile(
        optimizer=MultiplierSGD(learning_rate=0.05, lr_multipliers={"sanet_heads": 10.0}),
        loss="mse",
    )
    plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    scaled.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    paths = [v.path for v in scaled.trainable_variables]
    assert sum("sanet_heads" in p for p in paths) == 2
    for path, before, after_plain, after_scaled in zip(
        paths, start, plain.get_weights(), scaled.get_weights()
    ):
        multiplier = 10.0 if "sanet_heads" in path else 1.0
        plain_step = after_plain - before
        assert np.abs(plain_step).max() > 1e-4, path  # the step is not trivially zero
        np.testing.assert_allclose(
            after_scaled - before, multiplier * plain_step, rtol=1e-4, atol=1e-7, err_msg=path
        )


def _pytorch_sgd_reference(params, grads, lrs, momentum, weight_decay):
    """`torch.optim.SGD` (one param group per parameter) in NumPy."""
    params = [p.astype("float64").copy() for p in params]
    buffers = [None] * len(params)
    for step_grads in grads:
        for i, (p, g, lr) in enumerate(zip(params, step_grads, lrs)):
            d_p = g + weight_decay * p
            buffers[i] = d_p.copy() if buffers[i] is None else momentum * buffers[i] + d_p
            params[i] = p - lr * buffers[i]
    return params


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_coupled_weight_decay_matches_pytorch_sgd(momentum):
    rng = np.random.default_rng(1)
    start = [rng.standard_normal(4).astype("float32") for _ in range(2)]
    grads = [[rng.standard_normal(4).astype("float32") for _ in range(2)] for _ in range(3)]
    with keras.name_scope("backbone"):
        body = keras.Variable(start[0], name="kernel")
    with keras.name_scope("sanet_heads"):
        head = keras.Variable(start[1], name="kernel")
    optimizer = MultiplierSGD(
        learning_rate=0.05,
        momentum=momentum,
        coupled_weight_decay=0.1,
        lr_multipliers={"sanet_heads": 10.0},
    )
    for step_grads in grads:
        optimizer.apply(step_grads, [body, head])
    expected = _pytorch_sgd_reference(start, grads, [0.05, 0.5], momentum, 0.1)
    np.testing.assert_allclose(to_numpy(body), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(head), expected[1], rtol=1e-5, atol=1e-6)


def test_coupled_weight_decay_agrees_with_torch_optim_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    start = rng.standard_normal(5).astype("float32")
    grads = [rng.standard_normal(5).astype("float32") for _ in range(3)]
    parameter = torch.nn.Parameter(torch.tensor(start))
    reference = torch.optim.SGD([parameter], lr=0.1, momentum=0.9, weight_decay=0.05)
    variable = keras.Variable(start)
    optimizer = MultiplierSGD(learning_rate=0.1, momentum=0.9, coupled_weight_decay=0.05)
    for gradient in grads:
        parameter.grad = torch.tensor(gradient)
        reference.step()
        optimizer.apply([gradient], [variable])
    np.testing.assert_allclose(to_numpy(variable), parameter.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_coupled_weight_decay_honours_exclusions():
    kernel = keras.Variable(np.ones(2, "float32"), name="kernel")
    bias = keras.Variable(np.ones(2, "float32"), name="bias")
    optimizer = MultiplierSGD(learning_rate=0.1, coupled_weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.apply([np.zeros(2, "float32")] * 2, [kernel, bias])
    np.testing.assert_allclose(to_numpy(kernel), [0.95, 0.95], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(bias), [1.0, 1.0])


def test_multiplier_sgd_config_round_trip():
    optimizer = sgd_poly(learning_rate=0.02, total_steps=40, weight_decay=2e-4)
    config = optimizer.get_config()
    assert config["lr_multipliers"] == {"sanet_heads": 10.0}
    assert config["coupled_weight_decay"] == pytest.approx(2e-4)
    # Keras's from_config deserializes the schedule in place: hand it a copy.
    restored = MultiplierSGD.from_config(copy.deepcopy(config))
    assert restored.get_config() == config
    # Through Keras's registry, as `model.keras` files deserialize it.
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, MultiplierSGD)
    assert revived.lr_multipliers == {"sanet_heads": 10.0}
    revived.iterations.assign(10)
    np.testing.assert_allclose(
        float(to_numpy(revived.learning_rate)), 0.02 * (1 - 10 / 40) ** 0.9, rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"lr_multipliers": [("sanet_heads", 10.0)]}, TypeError, "must be a dict"),
        ({"lr_multipliers": {"sanet_heads": 0.0}}, ValueError, "positive numbers"),
        ({"lr_multipliers": {"sanet_heads": "10"}}, ValueError, "positive numbers"),
        ({"lr_multipliers": {"": 10.0}}, ValueError, "non-empty"),
        ({"coupled_weight_decay": -1e-4}, ValueError, "coupled_weight_decay must be"),
    ],
)
def test_multiplier_sgd_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        MultiplierSGD(learning_rate=0.1, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 0}, "epochs x steps per epoch"),
        ({"total_steps": 2.5}, "epochs x steps per epoch"),
        ({"head_lr_multiplier": 0}, "head_lr_multiplier must be a positive"),
    ],
)
def test_sgd_poly_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sgd_poly(**kwargs)
