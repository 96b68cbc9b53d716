"""Training augmentation of SANet / PyTorch-Encoding, as TensorFlow ops.

`train_augment` applies, to one `(image, mask)` pair:

1. random scale: the long side becomes `base_size * s`, `s` uniform in
   `scale_range` (default 0.5-2.0). `base_size=None` uses the image's own
   long side, i.e. the image is scaled by `s` (what we do on CamVid, whose
   frames are all 480x360). PyTorch-Encoding uses base 520 on VOC/Context.
   The image is resized bilinearly (antialiased when shrinking, like PIL),
   the mask with nearest neighbour so ids stay ids;
2. pad at the bottom and right up to the crop size: the image with
   `image_pad_value` (0, black, as PyTorch-Encoding; or the dataset mean),
   the mask with the ignore index, so padding never counts in the loss;
3. random crop of `crop_size` `(height, width)`;
4. random horizontal flip of image and mask together.

All randomness is stateless and driven by one `seed` tensor of shape `(2,)`
per element, so results are reproducible and independent of parallelism.
"""

import numbers

import tensorflow as tf

from keras_sanet.data.dataset_info import IGNORE_INDEX

DEFAULT_SCALE_RANGE = (0.5, 2.0)


def normalize_size(size, name):
    """`size` as `(height, width)` of positive ints; an int means a square."""

    def is_int(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if is_int(size):
        size = (size, size)
    try:
        ok = len(size) == 2 and all(is_int(s) and s >= 1 for s in size)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name}={size!r} is not a size; pass a positive int (square) or a "
            "(height, width) pair of positive ints."
        )
    return int(size[0]), int(size[1])


def check_scale_range(scale_range):
    """Returns `scale_range` as two floats, raising unless `0 < low <= high`."""
    try:
        low, high = (float(s) for s in scale_range)
    except (TypeError, ValueError):
        low = high = -1.0
    if not 0 < low <= high:
        raise ValueError(
            f"scale_range={scale_range!r} must be (low, high) with 0 < low <= high, e.g. "
            "(0.5, 2.0) as in the paper; use (1.0, 1.0) for no scaling."
        )
    return low, high


def _split_seed(seed, count):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=count))


def random_scale(image, mask, seed, scale_range=DEFAULT_SCALE_RANGE, base_size=None):
    """Resizes so the long side is `base_size * s`, `s ~ U(scale_range)`.

    Args:
        image: float32 `(H, W, 3)`.
        mask: uint8 `(H, W)`.
        seed: int32/int64 tensor of shape `(2,)`.
        scale_range: `(low, high)` of the random factor.
        base_size: the long side at scale 1; `None` means the image's own.

    Returns:
        `(image, mask)` resized (bilinear / nearest).
    """
    low, high = check_scale_range(scale_range)
    shape = tf.shape(mask)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    long_side = tf.maximum(height, width)
    base = long_side if base_size is None else tf.constant(float(base_size), tf.float32)
    scale = tf.random.stateless_uniform([], seed, minval=low, maxval=high)
    ratio = base * scale / long_side
    new_size = tf.stack(
        [
            tf.maximum(1, tf.cast(tf.round(height * ratio), tf.int32)),
            tf.maximum(1, tf.cast(tf.round(width * ratio), tf.int32)),
        ]
    )
    return resize_pair(image, mask, new_size)


def resize_pair(image, mask, size):
    """Resizes the image bilinearly and the mask with nearest neighbour.

    The image is antialiased when shrinking (as PIL's bilinear resize, which
    PyTorch-Encoding uses); the mask keeps its ids and its uint8 dtype.

    Args:
        image: float32 `(H, W, 3)`.
        mask: uint8 `(H, W)`.
        size: `(height, width)`, ints or an int32 tensor.
    """
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    # The antialiasing kernel overshoots by float rounding (255.00006); keep 0..255.
    image = tf.clip_by_value(image, 0.0, 255.0)
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def pad_to_size(image, mask, size, image_pad_value=0.0, ignore_index=IGNORE_INDEX):
    """Pads at the bottom and right so both sides are at least `size`.

    Args:
        image: float32 `(H, W, 3)`.
        mask: uint8 `(H, W)`.
        size: `(height, width)` minimum.
        image_pad_value: a float or an `(R, G, B)` triple in 0..255.
        ignore_index: the mask value of padded pixels.
    """
    shape = tf.shape(mask)
    pad_h = tf.maximum(size[0] - shape[0], 0)
    pad_w = tf.maximum(size[1] - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    mask = tf.pad(mask, paddings, constant_values=tf.cast(ignore_index, mask.dtype))
    pad_value = tf.constant(image_pad_value, tf.float32)
    if pad_value.shape.rank == 0:
        image = tf.pad(image, paddings + [[0, 0]], constant_values=pad_value)
    else:
        # Per-channel fill: add the colour where a padded 0/1 "inside" map is 0,
        # which leaves the real pixels bit-exact.
        inside = tf.pad(tf.ones_like(image[..., :1]), paddings + [[0, 0]])
        image = tf.pad(image, paddings + [[0, 0]]) + (1.0 - inside) * pad_value
    return image, mask


def random_crop(image, mask, size, seed):
    """Crops the same random `size` window out of image and mask.

    Both must already be at least `size` (see `pad_to_size`).
    """
    crop_h, crop_w = size
    shape = tf.shape(mask)
    seed_top, seed_left = _split_seed(seed, 2)
    top = tf.random.stateless_uniform([], seed_top, 0, shape[0] - crop_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seed_left, 0, shape[1] - crop_w + 1, dtype=tf.int32)
    image = image[top : top + crop_h, left : left + crop_w]
    mask = mask[top : top + crop_h, left : left + crop_w]
    image.set_shape([crop_h, crop_w, 3])
    mask.set_shape([crop_h, crop_w])
    return image, mask


def random_flip(image, mask, seed):
    """Mirrors image and mask left-right together with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(
        flip,
        lambda: (tf.reverse(image, [1]), tf.reverse(mask, [1])),
        lambda: (image, mask),
    )


def train_augment(
    image,
    mask,
    seed,
    crop_size,
    base_size=None,
    scale_range=DEFAULT_SCALE_RANGE,
    flip=True,
    image_pad_value=0.0,
    ignore_index=IGNORE_INDEX,
):
    """Random scale, pad, random crop and random flip of one pair.

    Args:
        image: float32 `(H, W, 3)` RGB in 0..255.
        mask: uint8 `(H, W)` of training ids.
        seed: int32/int64 tensor of shape `(2,)`; same seed, same result.
        crop_size: int or `(height, width)` of the output.
        base_size: long side at scale 1; `None` = the image's own long side.
        scale_range: `(low, high)` of the random scale.
        flip: random horizontal flip on/off.
        image_pad_value: fill of padded image pixels (float or RGB triple).
        ignore_index: fill of padded mask pixels.

    Returns:
        `(image, mask)` of shapes `(crop_h, crop_w, 3)` float32 and
        `(crop_h, crop_w)` uint8.

    Example:

    ```python
    image, mask = train_augment(image, mask, tf.constant([0, 1]), crop_size=256)
    ```
    """
    crop_size = normalize_size(crop_size, "crop_size")
    seed_scale, seed_crop, seed_flip = _split_seed(tf.cast(seed, tf.int64), 3)
    image, mask = random_scale(image, mask, seed_scale, scale_range, base_size)
    image, mask = pad_to_size(image, mask, crop_size, image_pad_value, ignore_index)
    image, mask = random_crop(image, mask, crop_size, seed_crop)
    if flip:
        image, mask = random_flip(image, mask, seed_flip)
    return image, mask
