import keras
import numpy as np
import pytest
from helpers import random_images
from helpers import to_numpy

from keras_sanet.evaluation import predict_logits
from keras_sanet.evaluation import scaled_size
from keras_sanet.evaluation import window_starts
from keras_sanet.evaluation import window_stride

NUM_CLASSES = 4


def pointwise_model(num_classes=NUM_CLASSES, seed=1):
    """Per-pixel logits (1x1 conv): any windowing must give the same numbers."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(num_classes, 1),
        ]
    )


def context_model(num_classes=NUM_CLASSES, seed=2, symmetric=False):
    """Two 3x3 convs: outputs depend on neighbours, so windows and flips matter.

    With `symmetric`, every kernel is mirror-symmetric along the width, which
    makes the model flip-equivariant: model(flip(x)) == flip(model(x)).
    """
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(num_classes, 3, padding="same"),
        ]
    )
    if symmetric:
        for layer in model.layers[1:]:
            kernel, bias = (to_numpy(w) for w in layer.weights)
            kernel = (kernel + kernel[:, ::-1]) / 2
            layer.set_weights([kernel, bias])
    return model


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def model_numpy(model, images):
    return to_numpy(model(images)).astype("float64")


@pytest.mark.parametrize("size", [(12, 16), (37, 53), (32, 32)])
@pytest.mark.parametrize("crop_size", [None, (64, 64), (37, 53)])
@pytest.mark.parametrize("own_base_size", [False, True])
def test_single_pass_is_exactly_the_model_call(size, crop_size, own_base_size):
    model = context_model()
    images = random_images(2, *size)
    expected = to_numpy(model(images))
    # A base size equal to the long side is scale 1.0 of the image's own size.
    base_size = max(size) if own_base_size else None
    got = to_numpy(predict_logits(model, images, crop_size=crop_size, base_size=base_size))
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.75])
@pytest.mark.parametrize("crop_size", [None, (12, 16)])
@pytest.mark.parametrize("base_size", [None, 40])
def test_multi_scale_path_with_one_scale_and_no_flip_is_the_single_scale_path(
    scale, crop_size, base_size
):
    # The protocol's multi-scale path (scales list, base size, windows), given
    # one scale and no flip, must be the plain single-scale computation: the
    # image resized to that scale, predicted (whole or by windows) as one pass,
    # the logits resized back. No averaging, no softmax round trip.
    model = context_model()
    images = random_images(2, 21, 30, seed=11)
    target = scaled_size((21, 30), scale, base_size)
    resized = keras.ops.image.resize(images, target, interpolation="bilinear", antialias=False)
    if target == (21, 30):
        resized = images
    single = predict_logits(model, resized, crop_size=crop_size)  # one scale, no flip
    expected = to_numpy(
        keras.ops.image.resize(single, (21, 30), interpolation="bilinear", antialias=False)
        if target != (21, 30)
        else single
    )
    got = to_numpy(
        predict_logits(
            model, images, scales=(scale,), flip=False, crop_size=crop_size, base_size=base_size
        )
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # ...and the same argmax as the averaging path fed the same pass twice.
    twice = to_numpy(
        predict_logits(
            model, images, scales=(scale, scale), crop_size=crop_size, base_size=base_size
        )
    )
    np.testing.assert_allclose(softmax(twice), softmax(got), atol=1e-5)


@pytest.mark.parametrize("crop_size", [(37, 53), (37, 60), (40, 53), 64])
def test_crop_at_least_the_image_equals_the_whole_image(crop_size):
    model = context_model()
    images = random_images(1, 37, 53)
    np.testing.assert_array_equal(
        to_numpy(predict_logits(model, images, crop_size=crop_size)),
        to_numpy(predict_logits(model, images)),
    )


@pytest.mark.parametrize(
    "size, crop_size",
    [
        ((37, 53), 16),
        ((37, 53), (16, 24)),
        ((10, 40), 16),
        ((37, 12), (16, 24)),
        ((33, 33), 32),
    ],
)
def test_windows_of_a_pointwise_model_equal_the_whole_image(size, crop_size):
    # Per-pixel logits do not depend on the window, so averaging overlapping
    # windows (and padding the image where it is smaller than the crop) must
    # give back the whole-image logits: any gap, double count or misplaced
    # window would show.
    model = pointwise_model()
    images = random_images(2, *size, seed=3)
    got = to_numpy(predict_logits(model, images, crop_size=crop_size))
    np.testing.assert_allclose(got, to_numpy(model(images)), rtol=1e-5, atol=1e-5)


def test_windows_of_a_context_model_match_a_numpy_reference():
    model = context_model()
    images = random_images(1, 37, 53, seed=4)
    # crop 16, stride ceil(16 * 2/3) = 11: rows start at 0, 11, 21 (last shifted
    # back to end at 37), columns at 0, 11, 22, 33, 37.
    total = np.zeros((1, 37, 53, NUM_CLASSES))
    counts = np.zeros((37, 53))
    for top in (0, 11, 21):
        for left in (0, 11, 22, 33, 37):
            window = images[:, top : top + 16, left : left + 16]
            total[:, top : top + 16, left : left + 16] += model_numpy(model, window)
            counts[top : top + 16, left : left + 16] += 1
    expected = total / counts[None, :, :, None]
    got = to_numpy(predict_logits(model, images, crop_size=16))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Windows see less context than the whole image: the numbers must differ.
    assert not np.allclose(got, model_numpy(model, images), atol=1e-4)


@pytest.mark.parametrize("length", [16, 17, 27, 37, 53, 100])
@pytest.mark.parametrize("crop", [16, 7])
def test_window_starts_cover_every_pixel_inside_the_image(length, crop):
    stride = window_stride((crop,), 2 / 3)[0]
    assert stride == int(np.ceil(crop * 2 / 3))
    starts = window_starts(length, crop, stride)
    coverage = np.zeros(length, int)
    for start in starts:
        assert 0 <= start and start + crop <= length
        coverage[start : start + crop] += 1
    assert coverage.min() >= 1
    assert starts[0] == 0 and starts[-1] == length - crop
    # Regular stride except the last (shifted back) window.
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))


def test_window_starts_examples():
    assert window_starts(53, 16, 11) == [0, 11, 22, 33, 37]
    assert window_starts(37, 16, 11) == [0, 11, 21]
    assert window_starts(16, 16, 11) == [0]
    with pytest.raises(ValueError, match="pad the image"):
        window_starts(10, 16, 11)


def test_flip_of_a_flip_equivariant_model_changes_nothing():
    model = context_model(symmetric=True)
    images = random_images(2, 13, 21, seed=5)
    plain = model_numpy(model, images)
    mirrored = model_numpy(model, images[:, :, ::-1])[:, :, ::-1]
    np.testing.assert_allclose(mirrored, plain, rtol=1e-4, atol=1e-4)  # the premise
    got = to_numpy(predict_logits(model, images, flip=True))
    np.testing.assert_allclose(softmax(got), softmax(plain), atol=1e-5)
    np.testing.assert_array_equal(got.argmax(-1), plain.argmax(-1))


@pytest.mark.parametrize("crop_size", [None, 8])
def test_flip_averages_the_probabilities_of_image_and_mirror(crop_size):
    model = context_model()
    images = random_images(1, 13, 21, seed=6)
    got = to_numpy(predict_logits(model, images, flip=True, crop_size=crop_size))
    single = lambda x: to_numpy(
        predict_logits(model, x, crop_size=crop_size)
    )  # noqa: E731
    plain = softmax(single(images))
    mirrored = softmax(single(images[:, :, ::-1].copy()))[:, :, ::-1]
    expected = (plain + mirrored) / 2
    np.testing.assert_allclose(softmax(got), expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(got), expected, atol=1e-5)  # log of the mean


def test_multi_scale_matches_a_reference():
    model = context_model()
    images = random_images(1, 20, 30, seed=7)
    scales = (0.5, 1.0, 1.25)
    expected = 0
    for scale in scales:
        size = scaled_size((20, 30), scale)
        scaled = keras.ops.image.resize(
            images, size, interpolation="bilinear", antialias=False
        )
        logits = keras.ops.image.resize(
            model(scaled), (20, 30), interpolation="bilinear", antialias=False
        )
        expected = expected + softmax(to_numpy(logits).astype("float64"))
    expected = expected / len(scales)
    got = to_numpy(predict_logits(model, images, scales=scales))
    assert got.shape == (1, 20, 30, NUM_CLASSES)
    np.testing.assert_allclose(softmax(got), expected, atol=1e-5)


def test_repeated_scale_one_keeps_the_probabilities():
    model = context_model()
    images = random_images(2, 12, 16, seed=8)
    got = to_numpy(predict_logits(model, images, scales=(1.0, 1.0)))
    np.testing.assert_allclose(
        softmax(got), softmax(model_numpy(model, images)), atol=1e-6
    )


def test_paper_protocol_runs_scales_flip_and_windows_together():
    model = context_model()
    images = random_images(1, 24, 32, seed=9)
    got = to_numpy(
        predict_logits(
            model,
            images,
            scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
            flip=True,
            crop_size=(16, 24),
        )
    )
    assert got.shape == (1, 24, 32, NUM_CLASSES)
    probabilities = np.exp(got)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_uint8_images_are_accepted():
    model = pointwise_model()
    images = random_images(1, 12, 16).astype("uint8")
    np.testing.assert_allclose(
        to_numpy(predict_logits(model, images)),
        to_numpy(model(images.astype("float32"))),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "size, scale, expected",
    [
        ((360, 480), 0.5, (180, 240)),
        ((360, 480), 0.75, (270, 360)),
        ((37, 53), 1.25, (46, 66)),
        ((3, 5), 0.1, (1, 1)),
        ((360, 480), 1.75, (630, 840)),
    ],
)
def test_scaled_size(size, scale, expected):
    assert scaled_size(size, scale) == expected


@pytest.mark.parametrize(
    "size, scale, expected",
    [
        # PyTorch-Encoding: long side ceil(520 * s), short side int(short * long / long0 + 0.5).
        ((375, 500), 1.0, (390, 520)),
        ((375, 500), 0.5, (195, 260)),
        ((375, 500), 1.75, (683, 910)),
        ((500, 333), 0.75, (390, 260)),
        ((500, 500), 1.25, (650, 650)),
    ],
)
def test_scaled_size_from_a_base_size(size, scale, expected):
    assert scaled_size(size, scale, base_size=520) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"crop_size": 0}, "crop_size"),
        ({"crop_size": (16, 16, 3)}, "crop_size"),
        ({"scales": ()}, "scales"),
        ({"scales": (1.0, -0.5)}, "scales"),
        ({"scales": "big"}, "scales"),
        ({"stride_ratio": 0}, "stride_ratio"),
        ({"stride_ratio": 1.5}, "stride_ratio"),
        ({"num_classes": 7}, "predicts 4 classes"),
        ({"base_size": 0}, "base_size"),
        ({"base_size": -520}, "base_size"),
        ({"size_multiple": -32}, "size_multiple"),
        ({"size_multiple": 1.5}, "size_multiple"),
        ({"size_multiple": True}, "size_multiple"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_logits(pointwise_model(), random_images(1, 8, 8), **kwargs)


def test_images_must_be_a_batch_of_rgb():
    with pytest.raises(ValueError, match=r"images\[None\]"):
        predict_logits(pointwise_model(), random_images(1, 8, 8)[0])


def test_model_must_return_logits_at_the_input_size():
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(NUM_CLASSES, 2, strides=2)]
    )
    with pytest.raises(ValueError, match="same size"):
        predict_logits(model, random_images(1, 8, 8))


# -- size buckets (size_multiple) ---------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (33, 40)])
@pytest.mark.parametrize("protocol", [{}, {"scales": (0.5, 1.5), "flip": True}])
def test_size_multiple_returns_logits_at_the_input_size(size, protocol):
    logits = predict_logits(context_model(), random_images(2, *size), size_multiple=16, **protocol)
    assert tuple(logits.shape) == (2, *size, NUM_CLASSES)


def test_size_multiple_mirror_pads_bottom_and_right_and_crops_back():
    seen = []

    def echo(images):  # "logits" = the padded images themselves
        seen.append(to_numpy(images))
        return images

    images = random_images(1, 5, 7)
    logits = predict_logits(echo, images, size_multiple=8)
    # Reflect padding at the bottom and right (the edge pixel is not repeated).
    padded = np.pad(images, ((0, 0), (0, 3), (0, 1), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(seen[0], padded)
    np.testing.assert_array_equal(to_numpy(logits), images)
    # Padding longer than the image mirrors it again; a 1-pixel side repeats its pixel.
    images = random_images(1, 5, 1)
    predict_logits(echo, images, size_multiple=8)
    rows = [0, 1, 2, 3, 4, 3, 2, 1]
    np.testing.assert_array_equal(seen[1], images[:, rows][:, :, [0] * 8])


def test_size_multiple_of_a_pointwise_model_changes_nothing_and_zero_is_exact():
    model, images = pointwise_model(), random_images(2, 13, 21)
    padded = to_numpy(predict_logits(model, images, size_multiple=32))
    np.testing.assert_allclose(padded, model_numpy(model, images), atol=1e-6)
    for exact in (None, 0):
        np.testing.assert_array_equal(
            to_numpy(predict_logits(context_model(), images, size_multiple=exact)),
            to_numpy(context_model()(images)),
        )


def test_sizes_in_one_bucket_trace_the_model_once_under_predict_on_batch():
    model = context_model()
    calls = []
    call = model.call

    def counting_call(*args, **kwargs):
        calls.append(1)  # runs once per trace on TensorFlow and JAX
        return call(*args, **kwargs)

    model.call = counting_call
    for size in [(17, 30), (20, 32), (25, 19), (32, 32)]:  # all padded to 32x32
        logits = predict_logits(model.predict_on_batch, random_images(1, *size), size_multiple=16)
        assert tuple(logits.shape) == (1, *size, NUM_CLASSES)
    if keras.backend.backend() == "torch":
        return  # Keras runs PyTorch eagerly: call runs every time
    assert len(calls) == 1
    predict_logits(model.predict_on_batch, random_images(1, 33, 32), size_multiple=16)  # 48x32
    assert len(calls) == 2
