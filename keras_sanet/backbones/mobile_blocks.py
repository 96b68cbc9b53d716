"""The conv -> batch norm -> ReLU6 unit that MobileNetV2 and EfficientNet-Lite are built of."""

import keras

from keras_sanet.layers.conv2d import Conv2D
from keras_sanet.layers.depthwise_conv2d import DepthwiseConv2D


def conv_bn_relu6(
    x,
    filters,
    kernel_size,
    stride,
    dilation,
    name,
    dtype,
    bn_epsilon,
    bn_momentum,
    depthwise=False,
    activation=True,
    torch_padding=False,
):
    """Conv (or depthwise conv) -> BatchNormalization -> optional ReLU6.

    Layer names are `{name}_conv`, `{name}_bn`, `{name}_relu` (and
    `{name}_pad`): the ImageNet converters map state-dict keys onto them.

    Args:
        x: the input tensor (NHWC).
        filters: output channels (ignored for a depthwise conv).
        kernel_size: odd kernel size.
        stride: 1 or 2.
        dilation: dilation rate (for the dilated stages).
        name: prefix of the layer names.
        dtype: the layers' dtype policy.
        bn_epsilon, bn_momentum: the batch-norm settings of the weights' origin
            (torch: 1e-5 and 0.9 in Keras' convention; TensorFlow: 1e-3, 0.99).
        depthwise: a depthwise conv instead of a full one.
        activation: end with ReLU6.
        torch_padding: for weights trained in torch: a stride-2 conv pads
            `kernel_size // 2` on every side (Keras `"same"` pads (0, 1)).

    Example:
    >>> x = keras.Input((32, 32, 3))
    >>> y = conv_bn_relu6(x, 16, 3, 2, 1, "stem", None, 1e-5, 0.9, torch_padding=True)
    >>> tuple(y.shape)
    (None, 16, 16, 16)
    """
    padding = "same"  # stride 1 with an odd kernel: symmetric, as in torch
    if torch_padding and stride == 2:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad", dtype=dtype)(x)
        padding = "valid"
    common = dict(
        kernel_size=kernel_size,
        strides=stride,
        dilation_rate=dilation,
        padding=padding,
        use_bias=False,
        name=f"{name}_conv",
        dtype=dtype,
    )
    if depthwise:
        x = DepthwiseConv2D(**common)(x)
    else:
        x = Conv2D(filters, **common)(x)
    x = keras.layers.BatchNormalization(
        epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_bn", dtype=dtype
    )(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu", dtype=dtype)(x)
    return x
