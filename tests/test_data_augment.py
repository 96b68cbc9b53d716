import numpy as np
import pytest
import tensorflow as tf
from test_data_fakes import encoded_image
from test_data_fakes import random_mask

from keras_sanet.data import pad_to_size
from keras_sanet.data import random_scale
from keras_sanet.data import resize_pair
from keras_sanet.data import train_augment


def _pair(height=12, width=16, seed=0):
    mask = random_mask(3, seed=seed, height=height, width=width, void_id=255)
    return tf.constant(encoded_image(mask), tf.float32), tf.constant(mask)


def _seed(value):
    return tf.constant([value, 0], tf.int64)


def _check_alignment(image, mask, flipped):
    """Image channel 0 encodes the mask; channel 1 the column (rising or falling)."""
    valid = mask != 255
    np.testing.assert_array_equal(image[..., 0][valid], 10.0 * mask[valid])
    columns = image[0, :, 1]
    step = np.diff(columns)
    assert np.all(step < 0) if flipped else np.all(step > 0)


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_keep_image_and_mask_aligned(seed):
    image, mask = _pair()
    out_image, out_mask = train_augment(
        image, mask, _seed(seed), crop_size=(8, 10), scale_range=(1, 1)
    )
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.shape == (8, 10, 3) and out_mask.shape == (8, 10)
    flipped = out_image[0, 0, 1] > out_image[0, -1, 1]
    _check_alignment(out_image, out_mask, flipped)
    # The crop is a window of the original (columns are 10 * index).
    left = int(out_image[0, -1 if flipped else 0, 1] / 10)
    top = int(out_image[0, 0, 2] / 10)
    expected = mask.numpy()[top : top + 8, left : left + 10]
    np.testing.assert_array_equal(out_mask, expected[:, ::-1] if flipped else expected)


def test_flip_happens_about_half_the_time():
    image, mask = _pair()
    flips = 0
    for seed in range(40):
        out_image, out_mask = train_augment(
            image, mask, _seed(seed), crop_size=(12, 16), scale_range=(1, 1)
        )
        flipped = bool(out_image[0, 0, 1] > out_image[0, -1, 1])
        _check_alignment(out_image.numpy(), out_mask.numpy(), flipped)
        flips += flipped
    assert 10 <= flips <= 30


@pytest.mark.parametrize("pad_value", [0.0, (10.0, 20.0, 30.0)])
def test_padding_is_ignore_in_mask_and_pad_value_in_image(pad_value):
    image, mask = _pair()
    out_image, out_mask = train_augment(
        image, mask, _seed(0), crop_size=(20, 24), scale_range=(1, 1), flip=False,
        image_pad_value=pad_value,
    )  # fmt: skip
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_mask.shape == (20, 24)
    np.testing.assert_array_equal(out_mask[:12, :16], mask.numpy())
    np.testing.assert_array_equal(out_image[:12, :16], image.numpy())
    assert np.all(out_mask[12:] == 255) and np.all(out_mask[:, 16:] == 255)
    fill = np.broadcast_to(np.asarray(pad_value, np.float32), (3,))
    np.testing.assert_array_equal(out_image[12:].reshape(-1, 3), np.tile(fill, (8 * 24, 1)))
    np.testing.assert_array_equal(out_image[:, 16:].reshape(-1, 3), np.tile(fill, (20 * 8, 1)))


@pytest.mark.parametrize("seed", range(8))
def test_random_scale_invariants(seed):
    image, mask = _pair()
    out_image, out_mask = train_augment(image, mask, _seed(seed), crop_size=(10, 10))
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.shape == (10, 10, 3) and out_image.dtype == np.float32
    assert out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) <= {0, 1, 2, 255}
    assert 0 <= out_image.min() and out_image.max() <= 255


@pytest.mark.parametrize(
    "base_size, scale, expected",
    [(None, 0.5, (6, 8)), (None, 2.0, (24, 32)), (32, 1.0, (24, 32)), (8, 1.5, (9, 12))],
)
def test_scale_sets_the_long_side(base_size, scale, expected):
    image, mask = _pair()
    out_image, out_mask = random_scale(image, mask, _seed(0), (scale, scale), base_size)
    assert tuple(out_mask.shape) == expected and tuple(out_image.shape) == (*expected, 3)


def test_mask_resize_is_nearest():
    mask = tf.constant([[0, 2], [255, 1]], tf.uint8)
    image = tf.zeros([2, 2, 3])
    _, out_mask = resize_pair(image, mask, (4, 4))
    np.testing.assert_array_equal(out_mask.numpy(), np.kron([[0, 2], [255, 1]], np.ones((2, 2))))


def test_pad_does_nothing_when_large_enough():
    image, mask = _pair()
    out_image, out_mask = pad_to_size(image, mask, (5, 5))
    np.testing.assert_array_equal(out_mask.numpy(), mask.numpy())
    np.testing.assert_array_equal(out_image.numpy(), image.numpy())


def test_same_seed_same_result_other_seed_differs():
    image, mask = _pair()
    first = train_augment(image, mask, _seed(3), crop_size=8)
    again = train_augment(image, mask, _seed(3), crop_size=8)
    other = train_augment(image, mask, _seed(4), crop_size=8)
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())


@pytest.mark.parametrize("crop_size", [0, (8,), (8, 0), "8", 2.5, True])
def test_bad_crop_size(crop_size):
    image, mask = _pair()
    with pytest.raises(ValueError, match="crop_size=.* is not a size"):
        train_augment(image, mask, _seed(0), crop_size=crop_size)


@pytest.mark.parametrize("scale_range", [(0, 2), (2, 1), (1,), None])
def test_bad_scale_range(scale_range):
    image, mask = _pair()
    with pytest.raises(ValueError, match="scale_range=.* must be \\(low, high\\)"):
        train_augment(image, mask, _seed(0), crop_size=8, scale_range=scale_range)
