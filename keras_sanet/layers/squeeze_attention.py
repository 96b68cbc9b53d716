"""The squeeze-and-attention (SA) module of SANet (Zhong et al., CVPR 2020)."""

import keras
from keras import ops

from keras_sanet.layers.conv_bn_act import ConvBNAct
from keras_sanet.layers.conv_bn_act import check_activation
from keras_sanet.layers.conv_bn_act import check_positive_int
from keras_sanet.layers.conv_bn_act import check_size_pair
from keras_sanet.layers.conv_bn_act import serialize_activation
from keras_sanet.layers.resize import resize_to

POOL_TYPES = ("avg", "max")
UPSAMPLINGS = ("nearest", "bilinear")


def _ceil_div(numerator, denominator):
    return (numerator + denominator - 1) // denominator


def _pooled_size(size, pool):
    return None if size is None else _ceil_div(size, pool)


def pool_with_ceil(x, pool_size, pool_type="avg"):
    """Non-overlapping pooling that keeps the partial windows at the edges.

    The output is `ceil(H / p_h) x ceil(W / p_w)`, so odd sizes and inputs
    smaller than the window work. Windows start at the top-left corner; the
    bottom/right edge is padded and the padding never counts: an average is
    taken over the valid pixels of its window only, a maximum ignores the
    padding (padded with -inf). Built from "valid" pooling of an explicitly
    padded tensor, because Keras' `padding="same"` places and counts padding
    differently per backend.

    Args:
        x: NHWC tensor.
        pool_size: int or (int, int); also the stride.
        pool_type: `"avg"` or `"max"`.

    Returns:
        The pooled NHWC tensor.

    Example:
    >>> x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    >>> pool_with_ceil(x, 2, "avg")[0, :, :, 0]
    [[2.0, 3.5], [6.5, 8.0]]
    """
    if pool_type not in POOL_TYPES:
        raise ValueError(f"Unknown pool_type {pool_type!r}; use one of {POOL_TYPES}.")
    pool_h, pool_w = check_size_pair("pool_size", pool_size)
    _, height, width, _ = ops.shape(x)
    # The padding up to a multiple of p, for ints and symbolic TensorFlow
    # dimensions alike. Not `(-n) % p`: tf2onnx turns a floor mod into a
    # truncating division, which is wrong for the negative `-n` in ONNX.
    pad_h = _ceil_div(height, pool_h) * pool_h - height
    pad_w = _ceil_div(width, pool_w) * pool_w - width
    needs_padding = not (
        isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == pad_w == 0
    )
    paddings = [[0, 0], [0, pad_h], [0, pad_w], [0, 0]]
    window = (pool_h, pool_w)
    if pool_type == "max":
        if needs_padding:
            x = ops.pad(x, paddings, constant_values=float("-inf"))
        return ops.max_pool(x, window, window, "valid", "channels_last")
    if not needs_padding:
        return ops.average_pool(x, window, window, "valid", "channels_last")
    x = ops.pad(x, paddings)
    sums = ops.average_pool(x, window, window, "valid", "channels_last")
    # Fraction of each window that lies inside the image.
    mask = ops.pad(ops.ones((1, height, width, 1), dtype=x.dtype), paddings)
    coverage = ops.average_pool(mask, window, window, "valid", "channels_last")
    return sums / coverage


def validate_squeeze_attention_args(
    pool_type, pool_size, convs_per_branch, attention_activation, upsampling
):
    """Checks the SA switches; returns pool_size as a pair of ints."""
    if pool_type not in POOL_TYPES:
        raise ValueError(
            f"Unknown pool_type {pool_type!r}; use 'avg' (the authors' code) or "
            "'max' (the paper text)."
        )
    pool_size = check_size_pair("pool_size", pool_size)
    check_positive_int("convs_per_branch", convs_per_branch)
    check_activation("attention_activation", attention_activation)
    if upsampling not in UPSAMPLINGS:
        raise ValueError(
            f"Unknown upsampling {upsampling!r}; use 'nearest' (the authors' code) "
            "or 'bilinear'."
        )
    return pool_size


@keras.saving.register_keras_serializable(package="keras_sanet")
class SqueezeAttention(keras.layers.Layer):
    """Squeeze-and-attention module: X_out = X_attn * X_res + X_attn.

    Main branch: `convs_per_branch` x ConvBNAct(filters, 3x3) at full
    resolution = X_res. Attention branch: a "not fully squeezed" pooling of the
    input (`pool_size`, ceil mode: any input size works), `convs_per_branch` x
    ConvBNAct(filters, 3x3) whose last activation is `attention_activation`,
    then an upsampling to exactly X_res's height and width = X_attn.

    Defaults follow the authors' published snippet (average pooling 2x2, two
    convs per branch, ReLU attention, nearest upsampling). The paper text's
    variant is `pool_type="max", pool_size=8, convs_per_branch=1,
    attention_activation="sigmoid"`.

    Nearest upsampling repeats each attention cell `pool_size` times and crops,
    so every pixel gets the attention of the pooling window it fell in (this
    is the authors' `scale_factor=2` upsampling for even sizes).

    Args:
        filters: output channels of both branches (C/4 in SANet's heads).
        pool_type: `"avg"` or `"max"`.
        pool_size: int or (int, int) pooling window and stride.
        convs_per_branch: number of ConvBNAct per branch.
        attention_activation: activation of the attention branch's last conv,
            `"relu"` (authors' code) or `"sigmoid"` (paper text), or any Keras
            activation name.
        upsampling: `"nearest"` or `"bilinear"`.
        **kwargs: standard layer arguments.

    Call arguments:
        x: NHWC tensor.
        training: batch-norm mode.
        return_branches: if True, return `(output, main, attention)`, the two
            branches being X_res and the upsampled X_attn.

    Example:
    >>> layer = SqueezeAttention(8)
    >>> layer(np.zeros((1, 7, 9, 16), "float32")).shape
    (1, 7, 9, 8)
    """

    def __init__(
        self,
        filters,
        pool_type="avg",
        pool_size=2,
        convs_per_branch=2,
        attention_activation="relu",
        upsampling="nearest",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        self.pool_size = validate_squeeze_attention_args(
            pool_type, pool_size, convs_per_branch, attention_activation, upsampling
        )
        self.filters = filters
        self.pool_type = pool_type
        self.convs_per_branch = convs_per_branch
        self.attention_activation = attention_activation
        self.upsampling = upsampling
        self.main_convs = [
            ConvBNAct(filters, 3, dtype=self.dtype_policy, name=f"main_conv{i + 1}")
            for i in range(convs_per_branch)
        ]
        self.attention_convs = [
            ConvBNAct(
                filters,
                3,
                activation=(
                    attention_activation if i == convs_per_branch - 1 else "relu"
                ),
                dtype=self.dtype_policy,
                name=f"attention_conv{i + 1}",
            )
            for i in range(convs_per_branch)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.main_convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        batch, height, width, channels = input_shape
        shape = (
            batch,
            _pooled_size(height, self.pool_size[0]),
            _pooled_size(width, self.pool_size[1]),
            channels,
        )
        for conv in self.attention_convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)

    def call(self, x, training=None, return_branches=False):
        main = x
        for conv in self.main_convs:
            main = conv(main, training=training)
        attention = pool_with_ceil(x, self.pool_size, self.pool_type)
        for conv in self.attention_convs:
            attention = conv(attention, training=training)
        repeats = self.pool_size if self.upsampling == "nearest" else None
        attention = resize_to(
            attention, ops.shape(main)[1:3], self.upsampling, repeats=repeats
        )
        output = attention * main + attention
        if return_branches:
            return output, main, attention
        return output

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def compute_output_spec(self, x, training=None, return_branches=False):
        shape = self.compute_output_shape(x.shape)
        if return_branches:
            return tuple(
                keras.KerasTensor(shape, dtype=self.compute_dtype) for _ in range(3)
            )
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "pool_type": self.pool_type,
                "pool_size": self.pool_size,
                "convs_per_branch": self.convs_per_branch,
                "attention_activation": serialize_activation(
                    self.attention_activation
                ),
                "upsampling": self.upsampling,
            }
        )
        return config
