"""MobileNetV2 (torchvision layout), dilated for dense prediction.

The network is torchvision's `mobilenet_v2` (width 1.0): `features.0` is the
stride-2 stem, `features.1` .. `features.17` the inverted residual blocks and
`features.18` the 1x1 convolution to 1280 channels before the classifier.
Keras layer names follow those indices (`features_7_depthwise_conv` is
`features.7.conv.1.0`), so the converter in `convert_torch_backbones` maps the
torchvision state dict one to one.

Padding matches torch exactly: stride-2 convolutions pad 1 pixel on every side
(`ZeroPadding2D(1)` + `"valid"`). Keras `"same"` would pad (0, 1) and shift the
features by half a pixel against the ImageNet weights.

ImageNet weights: there is no Keras download of torchvision's weights, and
`keras.applications.MobileNetV2` pads differently, so `weights="imagenet"` is
refused with instructions; convert torchvision's `mobilenet_v2-b0353104.pth`
once with `python -m keras_sanet.backbones.convert_torch_backbones mobilenetv2
PTH OUT.weights.h5` and pass `weights="OUT.weights.h5"`.
"""

import os

import keras

from keras_sanet.backbones.convert_torch_backbones import check_converted_weights_file
from keras_sanet.backbones.convert_torch_backbones import load_converted_weights
from keras_sanet.backbones.mobile_blocks import conv_bn_relu6
from keras_sanet.backbones.registry import BackboneSpec
from keras_sanet.backbones.registry import register_backbone
from keras_sanet.backbones.registry import validate_output_stride
from keras_sanet.backbones.weight_loading import check_weights_argument
from keras_sanet.layers.image_normalization import ImageNormalization

NAME = "mobilenetv2"
# torchvision's inverted residual settings: expansion t, channels c, repeats n, stride s.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Blocks whose outputs are C2, C3, C4, C5 (strides 4, 8, 16, 32 at output stride 32).
FEATURE_BLOCKS = (3, 6, 13, 17)
FEATURE_CHANNELS = (24, 32, 96, 320)
BN_EPSILON = 1e-5  # torch's default
BN_MOMENTUM = 0.9  # torch's momentum=0.1 in Keras' convention
TORCHVISION_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"


def dilated_block_schedule(block_strides, output_stride, stem_stride=2):
    """(stride, dilation) per block so that the features stop at `output_stride`.

    A stride-2 block that would take the features past `output_stride` keeps
    stride 1 and the current dilation (the first block of a dilated stage
    uses half the stage's rate, as in PyTorch-Encoding); the blocks after it
    use twice that rate. Variable shapes never change, so the plain
    network's ImageNet weights load unchanged.

    Args:
        block_strides: the nominal stride (1 or 2) of each block.
        output_stride: 8, 16 or 32.
        stem_stride: the stride reached before the first block.

    Returns:
        A list of `(stride, dilation)` tuples, one per block.

    Example:
    >>> dilated_block_schedule([2, 1, 2, 1], output_stride=4)
    [(2, 1), (1, 1), (1, 1), (1, 2)]
    """
    schedule = []
    current_stride, rate = stem_stride, 1
    for stride in block_strides:
        if stride == 2 and current_stride * 2 > output_stride:
            schedule.append((1, rate))
            rate *= 2
        else:
            schedule.append((stride, rate))
            current_stride *= stride
    return schedule


def _block_strides():
    return [
        stride if repeat == 0 else 1
        for _, _, repeats, stride in INVERTED_RESIDUAL_SETTING
        for repeat in range(repeats)
    ]


def _conv_bn(
    x, filters, kernel_size, stride, dilation, name, dtype, depthwise=False, activation=True
):
    return conv_bn_relu6(
        x, filters, kernel_size, stride, dilation, name, dtype, BN_EPSILON, BN_MOMENTUM,
        depthwise=depthwise, activation=activation, torch_padding=True,
    )


def _inverted_residual(x, index, expansion, filters, stride, dilation, dtype):
    in_channels = x.shape[-1]
    name = f"features_{index}"
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_channels * expansion, 1, 1, 1, f"{name}_expand", dtype)
    y = _conv_bn(y, None, 3, stride, dilation, f"{name}_depthwise", dtype, depthwise=True)
    y = _conv_bn(y, filters, 1, 1, 1, f"{name}_project", dtype, activation=False)
    if stride == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add", dtype=dtype)([x, y])
    return y


def _mobilenet_v2_features(images, output_stride, dtype):
    """Runs the network to block 17; returns (all block outputs by index, last tensor)."""
    x = ImageNormalization("torch", name="normalization", dtype=dtype)(images)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, 1, "features_0", dtype)
    schedule = dilated_block_schedule(_block_strides(), output_stride)
    outputs, index = {}, 1
    for expansion, filters, repeats, _ in INVERTED_RESIDUAL_SETTING:
        for _ in range(repeats):
            stride, dilation = schedule[index - 1]
            x = _inverted_residual(x, index, expansion, filters, stride, dilation, dtype)
            outputs[index] = x
            index += 1
    return outputs, x


def mobilenet_v2_classifier(num_classes=1000, dtype=None):
    """The full ImageNet classifier (torchvision layout), as the converter saves it.

    Its weights file is what `mobilenet_v2_backbone(weights=...)` loads; the
    `features_18` and `classifier` layers are ignored by the backbone.

    Args:
        num_classes: units of the final Dense layer (`classifier.1` in torch).
        dtype: a dtype policy name, or `None` for the global policy.

    Returns:
        A `keras.Model` mapping 0..255 RGB images to logits.

    Example:
    >>> model = mobilenet_v2_classifier()
    >>> model.output.shape
    (None, 1000)
    """
    images = keras.Input((None, None, 3), name="images")
    _, x = _mobilenet_v2_features(images, 32, dtype)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, 1, "features_18", dtype)
    x = keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    x = keras.layers.Dropout(0.2, name="dropout", dtype=dtype)(x)
    logits = keras.layers.Dense(num_classes, name="classifier", dtype=dtype)(x)
    return keras.Model(images, logits, name="mobilenetv2_classifier")


def mobilenet_v2_backbone(output_stride=8, weights=None, dtype=None):
    """MobileNetV2 feature extractor returning `[C2, C3, C4, C5]`.

    C2..C5 are the outputs of blocks `features.3`, `.6`, `.13` and `.17`
    (24, 32, 96 and 320 channels). C5 is the 320-channel block output, not
    the 1280-channel `features.18` convolution: that layer only widens the
    features for the ImageNet classifier and would quadruple the cost of
    the heads (DeepLab's MobileNetV2 taps the same point).

    At output stride 16 the stride-2 block `features.14` keeps stride 1 and
    blocks 15-17 use dilation 2; at output stride 8 `features.7` also keeps
    stride 1, blocks 8-14 use dilation 2 and 15-17 dilation 4 (the first
    block of a dilated stage at half the rate). Feature sizes are
    `ceil(size / stride)` for any input size, odd ones included.

    Args:
        output_stride: 8, 16 or 32.
        weights: `None` (random initialisation) or the path of a
            `.weights.h5` file written by
            `convert_torch_backbones.convert_mobilenet_v2`. `"imagenet"` is
            refused with instructions: torchvision's weights have no Keras
            download and must be converted once.
        dtype: a dtype policy name such as `"mixed_bfloat16"`, or `None`.

    Returns:
        A functional `keras.Model` taking 0..255 RGB images named `images`.

    Example:
    >>> backbone = mobilenet_v2_backbone(output_stride=16)
    >>> [f.shape[-1] for f in backbone.outputs]
    [24, 32, 96, 320]
    """
    validate_output_stride(output_stride)
    if isinstance(weights, str) and weights == "imagenet":
        raise ValueError(
            f"No Keras download exists for the ImageNet weights of {NAME!r} "
            "(torchvision's weights; keras.applications.MobileNetV2 pads "
            f"differently). Download {TORCHVISION_URL}, convert it once with "
            "`python -m keras_sanet.backbones.convert_torch_backbones "
            f"{NAME} mobilenet_v2-b0353104.pth {NAME}_imagenet.weights.h5` "
            "and pass that file as the weights, or pass `None` for random "
            "initialisation."
        )
    check_weights_argument(weights, NAME, has_imagenet=False)
    if weights is not None:
        check_converted_weights_file(weights, NAME)
    images = keras.Input((None, None, 3), name="images")
    outputs, _ = _mobilenet_v2_features(images, output_stride, dtype)
    features = [outputs[index] for index in FEATURE_BLOCKS]
    model = keras.Model(images, features, name=f"{NAME}_backbone")
    if weights is not None:
        load_converted_weights(
            model, mobilenet_v2_classifier(dtype="float32"), os.fspath(weights), NAME
        )
    return model


register_backbone(
    BackboneSpec(
        name=NAME,
        builder=mobilenet_v2_backbone,
        feature_channels=FEATURE_CHANNELS,
        imagenet_source=None,
    )
)
