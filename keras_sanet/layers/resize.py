"""Resizing NHWC feature maps to an exact size, jit-safe on every backend."""

import numbers

from keras import ops

INTERPOLATIONS = ("bilinear", "nearest")


def _is_static(value):
    # Symbolic TensorFlow dimensions are tensors; everything else is an int.
    return isinstance(value, numbers.Integral)


def _ceil_div(numerator, denominator):
    # Works on Python ints and on symbolic TensorFlow shape scalars alike.
    return (numerator + denominator - 1) // denominator


def _normalize_repeats(repeats):
    if repeats is None:
        return None
    if isinstance(repeats, int) and not isinstance(repeats, bool):
        repeats = (repeats, repeats)
    if (
        not isinstance(repeats, (tuple, list))
        or len(repeats) != 2
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in repeats)
        or min(repeats) < 1
    ):
        raise ValueError(
            f"`repeats` must be a positive int or a pair of positive ints "
            f"(height, width); got {repeats!r}. Pass e.g. repeats=2, or None to "
            "use ceil(target / source)."
        )
    return tuple(repeats)


def _nearest_upsample(x, size, repeats):
    _, in_h, in_w, _ = ops.shape(x)
    out_h, out_w = size
    if repeats is None:
        repeats = (_ceil_div(out_h, in_h), _ceil_div(out_w, in_w))
    for axis, (in_size, out_size, factor) in enumerate(
        zip((in_h, in_w), (out_h, out_w), repeats), start=1
    ):
        if all(_is_static(v) for v in (in_size, out_size, factor)):
            if out_size > in_size * factor:
                raise ValueError(
                    f"resize_to(..., 'nearest') cannot reach size {out_size} from "
                    f"{in_size} with repeat factor {factor} on axis {axis}; use a "
                    "larger `repeats` or leave it None."
                )
            if out_size < in_size:
                raise ValueError(
                    f"resize_to(..., 'nearest') only enlarges (repeat then crop) "
                    f"but axis {axis} goes from {in_size} to {out_size}; use "
                    "interpolation='bilinear' to shrink."
                )
        if not (_is_static(out_size) and _is_static(factor)):
            # Symbolic sizes: a gather of rows i // factor is the same repeat
            # and crop, but its output has exactly `out_size` rows, which JAX's
            # symbolic shapes cannot prove for a slice of a repeated tensor.
            indices = ops.arange(out_size) // factor
            x = ops.take(x, indices, axis=axis)
            continue
        if not (_is_static(factor) and factor == 1):
            x = ops.repeat(x, factor, axis=axis)
        # Crop the overshoot of the integer factor (odd sizes).
        if not (_is_static(x.shape[axis]) and x.shape[axis] == out_size):
            x = x[:, :out_size] if axis == 1 else x[:, :, :out_size]
    return x


def _bilinear_axis(in_size, out_size):
    """Source indices and weights of half-pixel bilinear sampling along one axis."""
    in_float = ops.cast(in_size, "float32")
    scale = in_float / ops.cast(out_size, "float32")
    centres = (ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5
    # Clamping below zero reproduces the edge behaviour of tf.image.resize,
    # torch's interpolate (align_corners=False) and jax.image.resize.
    centres = ops.clip(centres, 0.0, in_float - 1.0)
    lower = ops.floor(centres)
    fraction = centres - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, ops.cast(in_size, "int32") - 1)
    return lower, upper, fraction


def bilinear_resize_gather(x, size):
    """Half-pixel bilinear resize built from `take`: accepts symbolic sizes.

    `keras.ops.image.resize` insists on Python ints for `size`, so a TensorFlow
    graph with unknown height or width (a functional model on
    `keras.Input((None, None, C))`) cannot use it. This gather formulation gives
    the same numbers as `keras.ops.image.resize(x, size, "bilinear",
    antialias=False)` (two taps per axis, enlarging or shrinking).

    Args:
        x: NHWC tensor.
        size: `(height, width)`, ints or scalar tensors.

    Returns:
        The resized tensor, in `x`'s dtype.
    """
    _, in_h, in_w, _ = ops.shape(x)
    out_h, out_w = size
    dtype = x.dtype
    lower, upper, fraction = _bilinear_axis(in_h, out_h)
    fraction = ops.reshape(ops.cast(fraction, dtype), (1, -1, 1, 1))
    top = ops.take(x, lower, axis=1)
    bottom = ops.take(x, upper, axis=1)
    x = top + (bottom - top) * fraction
    lower, upper, fraction = _bilinear_axis(in_w, out_w)
    fraction = ops.reshape(ops.cast(fraction, dtype), (1, 1, -1, 1))
    left = ops.take(x, lower, axis=2)
    right = ops.take(x, upper, axis=2)
    return left + (right - left) * fraction


def resize_to(x, size, interpolation="bilinear", repeats=None):
    """Resizes an NHWC tensor to exactly `size`, inside jit on every backend.

    - `"bilinear"`: `keras.ops.image.resize` (half-pixel centres, no antialias).
      When a size is symbolic (a TensorFlow graph with unknown height/width:
      the only backend whose `keras.ops.shape` returns tensors), an equivalent
      gather-based formulation is used, because `keras.ops.image.resize`
      accepts only Python ints.
    - `"nearest"`: `keras.ops.repeat` by an integer factor along height and
      width, then a crop to the exact size. Not `keras.ops.image.resize`:
      TensorFlow's XLA on CPU has no gradient for ResizeNearestNeighbor, so
      `jit_compile=True` training would fail. The factor defaults to
      `ceil(target / source)`. JAX and PyTorch shapes are concrete at run
      time, and so are TensorFlow's whenever the input shape is known (always
      the case under XLA). When a size or factor is symbolic (a TensorFlow
      graph with unknown height/width, or JAX's shape inference for
      `keras.Input((None, None, C))`), the same numbers come from a gather of
      rows `i // factor`, whose gradient XLA also supports, because JAX
      cannot prove that a slice of a symbolically repeated tensor has the
      target size. Nearest only enlarges: shrinking raises a ValueError when
      the sizes are static (with symbolic sizes it degenerates to a crop).

    Args:
        x: NHWC tensor.
        size: `(height, width)` target: ints or values from `keras.ops.shape`.
        interpolation: `"bilinear"` or `"nearest"`.
        repeats: `"nearest"` only: an int or (int, int) repeat factor to use
            instead of `ceil(target / source)`; it must reach the target.
            SqueezeAttention passes its pool size, so every pixel receives the
            attention of the pooling window it belonged to.

    Returns:
        `x` resized to `(N, size[0], size[1], C)`, in `x`'s dtype.

    Example:
    >>> x = np.arange(6, dtype="float32").reshape(1, 2, 3, 1)
    >>> resize_to(x, (3, 5), "nearest")[0, :, :, 0]
    [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]]
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"Unknown interpolation {interpolation!r}; use one of {INTERPOLATIONS}."
        )
    if len(x.shape) != 4:
        raise ValueError(
            f"resize_to expects an NHWC tensor of rank 4; got shape {x.shape}. "
            "Add a batch axis (e.g. x[None]) first."
        )
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(
            f"`size` must be a pair (height, width); got {size!r}. Pass e.g. "
            "keras.ops.shape(reference)[1:3]."
        )
    size = tuple(size)
    repeats = _normalize_repeats(repeats)
    if repeats is not None and interpolation != "nearest":
        raise ValueError(
            "`repeats` applies to interpolation='nearest' only; drop it for "
            f"{interpolation!r}."
        )
    in_size = tuple(ops.shape(x)[1:3])
    if all(_is_static(v) for v in in_size + size) and in_size == size:
        return x
    if interpolation == "nearest":
        return _nearest_upsample(x, size, repeats)
    if all(_is_static(v) for v in size):
        return ops.image.resize(
            x,
            size,
            interpolation="bilinear",
            antialias=False,
            data_format="channels_last",
        )
    return bilinear_resize_gather(x, size)
