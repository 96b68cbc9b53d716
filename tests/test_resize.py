"""resize_to: exact sizes, NumPy references, and gradients under jit."""

import numpy as np
import pytest
from keras import ops

from keras_sanet.layers.resize import bilinear_resize_gather
from keras_sanet.layers.resize import resize_to
from tests.helpers import backend
from tests.helpers import random_features
from tests.helpers import to_numpy


def numpy_nearest(x, size, repeats=None):
    height, width = size
    if repeats is None:
        repeats = (-(-height // x.shape[1]), -(-width // x.shape[2]))
    x = np.repeat(np.repeat(x, repeats[0], axis=1), repeats[1], axis=2)
    return x[:, :height, :width]


def numpy_bilinear(x, size):
    """Half-pixel-centre bilinear resize, separable, edges clamped."""

    def along(x, axis, out_size):
        in_size = x.shape[axis]
        centres = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
        centres = np.clip(centres, 0, in_size - 1)
        lower = np.floor(centres).astype(int)
        upper = np.minimum(lower + 1, in_size - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = out_size
        fraction = (centres - lower).reshape(shape)
        low = np.take(x, lower, axis=axis)
        return low + (np.take(x, upper, axis=axis) - low) * fraction

    return along(along(x, 1, size[0]), 2, size[1])


# (source height, width) -> (target height, width), odd sizes included.
SIZES = [
    ((2, 3), (3, 5)),
    ((4, 4), (7, 9)),
    ((3, 3), (9, 9)),
    ((1, 1), (5, 3)),
    ((5, 7), (5, 7)),
    ((4, 5), (8, 10)),
]
# Shrinking (bilinear only), e.g. the multi-scale test protocol's 0.5 scale.
SHRINK_SIZES = [((9, 7), (4, 3)), ((8, 8), (2, 5))]


@pytest.mark.parametrize("source,target", SIZES)
def test_nearest_matches_numpy_repeat_and_crop(source, target):
    x = random_features((2,) + source + (3,))
    y = to_numpy(resize_to(x, target, "nearest"))
    assert y.shape == (2,) + target + (3,)
    np.testing.assert_array_equal(y, numpy_nearest(x, target))


@pytest.mark.parametrize("repeats", [2, (3, 2), 8])
def test_nearest_with_explicit_repeats(repeats):
    x = random_features((1, 3, 4, 2))
    pair = (repeats, repeats) if isinstance(repeats, int) else repeats
    y = to_numpy(resize_to(x, (5, 7), "nearest", repeats=repeats))
    np.testing.assert_array_equal(y, numpy_nearest(x, (5, 7), pair))


@pytest.mark.parametrize("source,target", SIZES + SHRINK_SIZES)
def test_bilinear_matches_numpy_half_pixel(source, target):
    x = random_features((2,) + source + (3,))
    expected = numpy_bilinear(x, target)
    np.testing.assert_allclose(
        to_numpy(resize_to(x, target, "bilinear")), expected, atol=1e-5
    )
    # The gather formulation used for symbolic sizes gives the same numbers.
    np.testing.assert_allclose(
        to_numpy(bilinear_resize_gather(x, target)), expected, atol=1e-5
    )


def test_same_size_is_identity():
    x = random_features((1, 5, 7, 2))
    for interpolation in ("bilinear", "nearest"):
        np.testing.assert_array_equal(to_numpy(resize_to(x, (5, 7), interpolation)), x)


def test_dynamic_size_from_ops_shape():
    x = random_features((1, 3, 4, 2))
    reference = ops.zeros((1, 7, 9, 1))
    size = ops.shape(reference)[1:3]
    np.testing.assert_array_equal(
        to_numpy(resize_to(x, size, "nearest")), numpy_nearest(x, (7, 9))
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"size": (4, 4), "interpolation": "bicubic"}, "Unknown interpolation"),
        ({"size": (4,), "interpolation": "nearest"}, "pair"),
        ({"size": (2, 2), "interpolation": "nearest"}, "use interpolation='bilinear'"),
        (
            {"size": (9, 9), "interpolation": "nearest", "repeats": 2},
            "larger `repeats`",
        ),
        ({"size": (8, 8), "interpolation": "nearest", "repeats": 0}, "positive int"),
        ({"size": (8, 8), "interpolation": "bilinear", "repeats": 2}, "nearest"),
    ],
)
def test_errors(kwargs, match):
    x = random_features((1, 4, 4, 2))
    with pytest.raises(ValueError, match=match):
        resize_to(x, **kwargs)


def test_rank_error():
    with pytest.raises(ValueError, match="rank 4"):
        resize_to(random_features((4, 4, 2)), (8, 8), "nearest")


def _numpy_nearest_grad(source, target, upstream):
    """d/dx sum(resize(x) * upstream): the sum of upstream over each source cell."""
    factor_h = -(-target[0] // source[0])
    factor_w = -(-target[1] // source[1])
    padded = np.zeros(
        (upstream.shape[0], source[0] * factor_h, source[1] * factor_w)
        + upstream.shape[3:],
        upstream.dtype,
    )
    padded[:, : target[0], : target[1]] = upstream
    return padded.reshape(
        upstream.shape[0], source[0], factor_h, source[1], factor_w, -1
    ).sum(axis=(2, 4))


@pytest.mark.skipif(backend() != "tensorflow", reason="tf.function / XLA test")
@pytest.mark.parametrize("unknown_spatial", [False, True])
def test_nearest_gradient_under_tensorflow_xla(unknown_spatial):
    import tensorflow as tf

    source, target = (3, 4), (7, 9)
    x = random_features((2,) + source + (3,))
    upstream = random_features((2,) + target + (3,), seed=1)
    spec_shape = (2, None, None, 3) if unknown_spatial else x.shape

    @tf.function(
        jit_compile=True,
        input_signature=[
            tf.TensorSpec(spec_shape, tf.float32),
            tf.TensorSpec((2, None, None, 3) if unknown_spatial else upstream.shape),
        ],
    )
    def grad(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            size = ops.shape(upstream)[1:3]
            loss = tf.reduce_sum(resize_to(x, size, "nearest") * upstream)
        return tape.gradient(loss, x)

    np.testing.assert_allclose(
        grad(x, upstream).numpy(),
        _numpy_nearest_grad(source, target, upstream),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.skipif(backend() != "tensorflow", reason="TensorFlow graph test")
def test_unknown_spatial_dims_in_tensorflow_graph():
    import tensorflow as tf

    x = random_features((1, 3, 4, 2))
    reference = np.zeros((1, 7, 9, 1), "float32")

    @tf.function(
        input_signature=[
            tf.TensorSpec((1, None, None, 2)),
            tf.TensorSpec((1, None, None, 1)),
        ]
    )
    def both(x, reference):
        size = ops.shape(reference)[1:3]
        return resize_to(x, size, "nearest"), resize_to(x, size, "bilinear")

    nearest, bilinear = both(x, reference)
    np.testing.assert_array_equal(nearest.numpy(), numpy_nearest(x, (7, 9)))
    np.testing.assert_allclose(bilinear.numpy(), numpy_bilinear(x, (7, 9)), atol=1e-5)


@pytest.mark.skipif(backend() != "jax", reason="jax.jit test")
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize_and_gradient_under_jax_jit(interpolation):
    import jax

    source, target = (3, 4), (7, 9)
    x = random_features((2,) + source + (3,))
    upstream = random_features((2,) + target + (3,), seed=1)

    @jax.jit
    def loss(x):
        return (resize_to(x, target, interpolation) * upstream).sum()

    value, gradient = jax.jit(jax.value_and_grad(loss))(x)
    reference = (numpy_nearest if interpolation == "nearest" else numpy_bilinear)(
        x, target
    )
    np.testing.assert_allclose(float(value), (reference * upstream).sum(), rtol=1e-4)
    if interpolation == "nearest":
        np.testing.assert_allclose(
            np.asarray(gradient),
            _numpy_nearest_grad(source, target, upstream),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.skipif(backend() != "torch", reason="torch gradient test")
def test_nearest_gradient_under_torch():
    import torch

    source, target = (3, 4), (7, 9)
    x = torch.tensor(random_features((2,) + source + (3,)), requires_grad=True)
    upstream = random_features((2,) + target + (3,), seed=1)
    (resize_to(x, target, "nearest") * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(
        x.grad.numpy(),
        _numpy_nearest_grad(source, target, upstream),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.slow
@pytest.mark.skipif(backend() != "torch", reason="torch.compile test")
def test_torch_compile_with_dynamic_shapes():
    import torch

    def loss(x, reference):
        size = (reference.shape[1], reference.shape[2])
        return (
            resize_to(x, size, "nearest").sum() + resize_to(x, size, "bilinear").sum()
        )

    compiled = torch.compile(loss, backend="aot_eager", dynamic=True, fullgraph=True)
    for height in (3, 5):
        x = torch.tensor(random_features((1, height, height + 1, 2)))
        reference = torch.zeros(1, 2 * height + 1, 2 * height + 3, 1)
        np.testing.assert_allclose(
            compiled(x, reference).item(), loss(x, reference).item(), rtol=1e-5
        )
