"""The paper's test protocol: multi-scale, flipped, sliding-window inference.

SANet is evaluated as in PyTorch-Encoding (EncNet's codebase, which the paper
follows): every image is scaled by each of several factors (0.5 ... 1.75),
each scaled image is predicted whole or, when larger than the training crop,
by a sliding window of the crop size with a stride of 2/3 of it, optionally
also mirrored left-right, and the class scores of all these passes are
averaged at the original size.

Where we differ from PyTorch-Encoding's `MultiEvalModule`, and why:

- Averaging. PyTorch-Encoding adds the *logits* of an image and of its
  mirror, exponentiates the sum (`output.exp()`, not a softmax), averages
  windows and sums scales in that unnormalised space. A pass with larger
  logits then outweighs the others, and `exp` of a summed logit overflows
  float32 past ~88. We average *softmax probabilities* over scales and
  flips (each pass counts once, values stay in 0..1) and return their log,
  `log(mean_p)`: logits whose softmax is exactly the averaged probability,
  so one output type serves one pass and many.
- Scales multiply the image's own size by default. With `base_size` they
  follow PyTorch-Encoding: scale `s` makes the long side
  `ceil(base_size * s)` (520 on PASCAL, whose images differ in size), the
  short side keeping the aspect ratio. With CamVid's 480x360 frames, scale
  1.0 of the own size is the frame as trained.
- Windows. Overlapping windows are averaged in logit space by a count map,
  as in PyTorch-Encoding, but a window running off the bottom/right edge is
  shifted back inside the image (as mmsegmentation does) instead of being
  padded, so every window holds real pixels and has the crop's shape (one
  compiled shape). An image smaller than the crop on one side is padded
  there with black (value 0, PyTorch-Encoding's `-mean/std` in normalised
  units), and the padding's logits are cropped off.
- A scaled image no larger than the crop on both sides runs whole, unpadded
  (the model is fully convolutional); PyTorch-Encoding pads it to the crop.
  With `size_multiple` it is mirror-padded at the bottom and right up to a
  multiple of that size and its logits cropped back: sizes in one bucket
  then share one compiled model call (no retracing), at the price of a
  slightly different context near those edges.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_sanet.layers.resize import resize_to

# Probabilities are clipped here before the log, so a class every pass rules
# out gets a large negative logit instead of -inf.
_MIN_PROBABILITY = 1e-30


def _normalize_crop_size(crop_size):
    if crop_size is None:
        return None
    if isinstance(crop_size, numbers.Integral) and not isinstance(crop_size, bool):
        crop_size = (crop_size, crop_size)
    if (
        not isinstance(crop_size, (tuple, list))
        or len(crop_size) != 2
        or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1
            for c in crop_size
        )
    ):
        raise ValueError(
            f"crop_size={crop_size!r} must be None (predict whole images), a positive "
            "int or a (height, width) pair of positive ints, e.g. (360, 480) for CamVid."
        )
    return int(crop_size[0]), int(crop_size[1])


def _normalize_scales(scales):
    if isinstance(scales, numbers.Real):
        scales = (scales,)
    try:
        scales = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(
            f"scales={scales!r} must be a sequence of positive numbers, e.g. (1.0,) or "
            "(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)."
        ) from None
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(
            f"scales={scales!r} must be a non-empty sequence of positive numbers, e.g. "
            "(1.0,) or (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)."
        )
    return scales


def _check_stride_ratio(stride_ratio):
    if (
        isinstance(stride_ratio, bool)
        or not isinstance(stride_ratio, numbers.Real)
        or not 0 < stride_ratio <= 1
    ):
        raise ValueError(
            f"stride_ratio={stride_ratio!r} must be a number in (0, 1]: the window "
            "stride as a fraction of the crop (2/3 in the paper; 1 means no overlap)."
        )


def _check_base_size(base_size):
    if base_size is None:
        return None
    if isinstance(base_size, bool) or not isinstance(base_size, numbers.Real) or not (
        base_size > 0
    ):
        raise ValueError(
            f"base_size={base_size!r} must be None (scale each image's own size) or a positive "
            "number: the long side at scale 1, e.g. 520 as PyTorch-Encoding on PASCAL."
        )
    return base_size


def scaled_size(size, scale, base_size=None):
    """The `(height, width)` of an image of `size` at test scale `scale`.

    Without `base_size` both sides are multiplied by `scale` (rounded,
    >= 1). With it, the long side becomes `ceil(base_size * scale)` and the
    short side keeps the aspect ratio, as PyTorch-Encoding's `MultiEvalModule`
    computes it.

    Example:
    >>> scaled_size((360, 480), 0.75)
    (270, 360)
    >>> scaled_size((375, 500), 1.0, base_size=520)
    (390, 520)
    """
    if base_size is None:
        return tuple(max(1, int(math.floor(s * scale + 0.5))) for s in size)
    height, width = size
    long_side = max(1, int(math.ceil(base_size * scale)))
    if height > width:
        return long_side, max(1, int(1.0 * width * long_side / height + 0.5))
    return max(1, int(1.0 * height * long_side / width + 0.5)), long_side


def window_starts(length, crop, stride):
    """Start offsets of sliding windows of `crop` covering `0..length-1` with `stride`.

    Windows start every `stride` pixels; the last is shifted back so it ends
    exactly at `length` (every window lies inside the image). Needs
    `length >= crop` (pad shorter images first).

    Example:
    >>> window_starts(53, 16, 11)
    [0, 11, 22, 33, 37]
    """
    if length < crop:
        raise ValueError(
            f"window_starts needs length >= crop, got length {length} < crop {crop}; "
            "pad the image to the crop first."
        )
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [min(index * stride, length - crop) for index in range(count)]


def window_stride(crop_size, stride_ratio):
    """`ceil(crop * stride_ratio)` per side: the paper's stride of 2/3 of the crop."""
    return tuple(max(1, int(math.ceil(c * stride_ratio))) for c in crop_size)


def _call(model, images, num_classes):
    logits = ops.convert_to_tensor(model(images))
    if len(logits.shape) != 4 or tuple(logits.shape[:3]) != tuple(images.shape[:3]):
        raise ValueError(
            f"The model must map images (N, H, W, 3) to logits (N, H, W, K) at the same "
            f"size; it mapped {tuple(images.shape)} to {tuple(logits.shape)}. Upsample "
            "the logits to the input size inside the model (SANet does)."
        )
    if num_classes is not None and logits.shape[-1] != num_classes:
        raise ValueError(
            f"The model predicts {logits.shape[-1]} classes but num_classes={num_classes}. "
            "Evaluate with the num_classes the model was trained for, or load the "
            "model that matches the dataset."
        )
    return logits


def _check_size_multiple(size_multiple):
    if size_multiple is None:
        return 0
    if (
        isinstance(size_multiple, bool)
        or not isinstance(size_multiple, numbers.Integral)
        or size_multiple < 0
    ):
        raise ValueError(
            f"size_multiple={size_multiple!r} must be None or 0 (exact sizes) or a positive "
            "int, e.g. 32: whole images are padded up to a multiple of it."
        )
    return int(size_multiple)


def _mirror_pad(images, height, width):
    """`images` (N, h, w, C) extended to (N, height, width, C) by mirroring the bottom and right.

    Reflect padding (the edge pixel is not repeated), reflected again where the
    padding exceeds the image, as `np.pad(..., mode="reflect")`.
    """
    for axis, size in ((1, height), (2, width)):
        length = int(images.shape[axis])
        if size > length:
            indices = np.pad(np.arange(length), (0, size - length), mode="reflect")
            images = ops.take(images, indices, axis=axis)
    return images


def _predict_windows(model, images, crop_size, stride_ratio, num_classes):
    """Sliding-window logits of `images` (N, h, w, 3), averaged where windows overlap."""
    batch, height, width, channels = (int(d) for d in images.shape)
    crop_h, crop_w = crop_size
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:
        # Black bottom/right padding; its logits are cropped off below.
        images = ops.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    padded_h, padded_w = height + pad_h, width + pad_w
    stride_h, stride_w = window_stride(crop_size, stride_ratio)
    total = None
    counts = np.zeros((padded_h, padded_w), "float32")
    for top in window_starts(padded_h, crop_h, stride_h):
        for left in window_starts(padded_w, crop_w, stride_w):
            window = ops.slice(images, (0, top, left, 0), (batch, crop_h, crop_w, channels))
            logits = ops.cast(_call(model, window, num_classes), "float32")
            # Padding each window's logits to the full canvas keeps this to
            # backend-agnostic ops (no in-place slice update).
            placed = ops.pad(
                logits,
                (
                    (0, 0),
                    (top, padded_h - top - crop_h),
                    (left, padded_w - left - crop_w),
                    (0, 0),
                ),
            )
            total = placed if total is None else total + placed
            counts[top : top + crop_h, left : left + crop_w] += 1.0
    if counts.min() < 1:  # cannot happen with window_starts; a cheap guard
        raise ValueError(
            f"Sliding windows of {crop_size} left pixels of a {padded_h}x{padded_w} image "
            "uncovered: a bug in keras_sanet.evaluation; please report it. Meanwhile use "
            "crop_size=None."
        )
    logits = total / ops.convert_to_tensor(counts[None, :, :, None])
    if pad_h or pad_w:
        logits = ops.slice(logits, (0, 0, 0, 0), (batch, height, width, logits.shape[-1]))
    return logits


def _predict_one_size(model, images, crop_size, stride_ratio, num_classes, size_multiple=0):
    batch, height, width = (int(d) for d in images.shape[:3])
    if crop_size is not None and (height > crop_size[0] or width > crop_size[1]):
        return _predict_windows(model, images, crop_size, stride_ratio, num_classes)
    if not size_multiple:
        return _call(model, images, num_classes)
    padded_h, padded_w = (-(-side // size_multiple) * size_multiple for side in (height, width))
    logits = _call(model, _mirror_pad(images, padded_h, padded_w), num_classes)
    return ops.slice(logits, (0, 0, 0, 0), (batch, height, width, logits.shape[-1]))


def predict_logits(
    model,
    images,
    scales=(1.0,),
    flip=False,
    crop_size=None,
    stride_ratio=2 / 3,
    num_classes=None,
    base_size=None,
    size_multiple=None,
):
    """Class logits of a batch under the paper's test protocol (multi-scale, flip, windows).

    For each scale the batch is resized (bilinear) to `scaled_size` (of the
    image's own size, or of `base_size` on the long side); if the
    scaled image exceeds `crop_size` on either side it is predicted by
    sliding windows of `crop_size` with stride `ceil(crop * stride_ratio)`
    (padded with black where smaller than the crop; overlapping window logits
    averaged), else whole. With `flip` the mirrored image is predicted too
    and its logits mirrored back. Each pass's logits are resized (bilinear)
    to the input size and turned into softmax probabilities; the result is
    `log(mean probability)` over all passes: logits whose softmax is the
    averaged probability (see the module docstring for why probabilities
    and not PyTorch-Encoding's `exp` of summed logits).

    With one scale and no flip this is the single-scale path: the image
    resized to that scale, predicted whole or by windows, and the logits
    resized back, nothing averaged. At scale 1.0 of the image's own size
    (no `base_size`, or one equal to the long side) with an image no larger
    than the crop and no `size_multiple`, the model's own logits are
    returned unchanged: `predict_logits(model, x)` is exactly `model(x)`.

    Args:
        model: a Keras model or any callable mapping float RGB images
            `(N, H, W, 3)` in 0..255 to logits `(N, H, W, K)` at the same size
            (e.g. `SANet` at inference, or a compiled `predict_on_batch`).
        images: `(N, H, W, 3)` float images, 0..255 RGB (NumPy or tensor).
        scales: scale factors of the image's own size; the paper's
            multi-scale set is `(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)`.
        flip: also predict the horizontally mirrored image.
        crop_size: `None` (whole images), an int or `(height, width)`: the
            sliding-window size, normally the training crop.
        stride_ratio: window stride as a fraction of the crop, in (0, 1].
        num_classes: if given, the model's class count is checked against it.
        base_size: `None` (scales multiply each image's own size) or the long
            side at scale 1, e.g. 520 (PyTorch-Encoding's PASCAL protocol).
        size_multiple: `None` or 0 (whole images at their exact size), or N:
            whole-image passes are mirror-padded at the bottom and right up to
            multiples of N and the logits cropped back, so every size in one
            N-bucket runs one compiled function of a `predict_on_batch`
            (TensorFlow, JAX) instead of retracing; the padding changes the
            context near those edges, so the logits differ slightly.

    Returns:
        A float tensor `(N, H, W, K)` of logits at the input size.

    Example:

    ```python
    model = keras_sanet.SANet(backbone="resnet18", num_classes=11)
    images = np.zeros((1, 360, 480, 3), "float32")
    logits = predict_logits(model, images, scales=(0.5, 1.0, 1.5), flip=True,
                            crop_size=(360, 480))
    classes = keras.ops.argmax(logits, axis=-1)  # (1, 360, 480)
    ```
    """
    scales = _normalize_scales(scales)
    crop_size = _normalize_crop_size(crop_size)
    _check_stride_ratio(stride_ratio)
    base_size = _check_base_size(base_size)
    size_multiple = _check_size_multiple(size_multiple)
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"predict_logits takes a batch of RGB images (N, H, W, 3); got shape "
            f"{tuple(images.shape)}. Add the batch axis with images[None] if needed."
        )
    if "float" not in keras.backend.standardize_dtype(images.dtype):
        images = ops.cast(images, "float32")  # uint8 photos straight from a decoder
    size = (int(images.shape[1]), int(images.shape[2]))

    passes = []
    for scale in scales:
        # resize_to returns its input unchanged at the same size.
        scaled = resize_to(images, scaled_size(size, scale, base_size), "bilinear")
        # The mirror is predicted in the same model call as the image (one
        # batch of 2N), which halves the calls and their dispatch cost.
        batch = ops.concatenate([scaled, ops.flip(scaled, axis=2)], axis=0) if flip else scaled
        logits = _predict_one_size(
            model, batch, crop_size, stride_ratio, num_classes, size_multiple
        )
        logits = resize_to(logits, size, "bilinear")
        if flip:
            count = int(images.shape[0])
            passes.append(logits[:count])
            passes.append(ops.flip(logits[count:], axis=2))
        else:
            passes.append(logits)
    if len(passes) == 1:
        return passes[0]
    probabilities = None
    for logits in passes:
        p = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        probabilities = p if probabilities is None else probabilities + p
    probabilities = probabilities / float(len(passes))
    return ops.log(ops.maximum(probabilities, _MIN_PROBABILITY))


def inference_protocol(model, scales=(1.0,), flip=False, size_multiple=None):
    """How `predict_logits` ran a model, as `keras-sanet eval` and `predict` record it.

    One record for both commands' JSON, so a score always states the
    protocol it was measured under.

    Args:
        model: the model that was predicted with; its dtype policy is
            recorded (None for a callable without one).
        scales, flip, size_multiple: the arguments given to `predict_logits`.

    Returns:
        A JSON-ready dict: `scales` (list of floats), `flip`, `size_multiple`
        (0: exact sizes) and `dtype_policy` (the policy's name, or None).

    Example:
    >>> inference_protocol(model, scales=(1.0, 1.5), flip=True, size_multiple=32)
    {'scales': [1.0, 1.5], 'flip': True, 'size_multiple': 32, 'dtype_policy': 'float32'}
    """
    policy = getattr(model, "dtype_policy", None)
    return {
        "scales": list(_normalize_scales(scales)),
        "flip": bool(flip),
        "size_multiple": _check_size_multiple(size_multiple),
        "dtype_policy": None if policy is None else policy.name,
    }
