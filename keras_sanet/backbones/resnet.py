"""Dilated ResNet-18/34/50/101 feature extractors (the paper's dilated FCN).

Registers `"resnet18"`, `"resnet34"`, `"resnet50"` and `"resnet101"`. Each
builder returns a functional model taking 0..255 RGB `images` and returning
the stage outputs `[C2, C3, C4, C5]` (see `keras_sanet.backbones.registry`).

Dilation (SANET.md, PyTorch-Encoding): at output stride 8 stages conv4_x and
conv5_x keep their resolution (stride 1) and use dilation rates 2 and 4; the
first block of a dilated stage uses half the rate (2 -> 1, 4 -> 2). Output
stride 16 dilates conv5_x only (rate 2, first block 1); 32 is the plain
network. In a bottleneck block the rate goes to the 3x3 conv; in a basic block
the first 3x3 conv takes the block's rate and the second the stage's rate
(PyTorch-Encoding's `dilation` / `previous_dilation`). Strides and rates never
change a variable's shape, so the plain network's ImageNet weights load as is.

Why our own builder instead of editing `keras.applications.ResNet50`'s config:
one code path serves the bottleneck (50/101) and basic (18/34) nets, the
deep-stem switch and the per-layer dtype policy, without depending on the
private layout of a Keras config. The layer names, paddings, biases and
batch-norm settings are those of the reference networks, so the weights map
by name with no shape change; `tests/test_backbone_resnet.py` proves that our
plain (output stride 32) network reproduces the reference's stage outputs.

- ResNet-50/101 copy `keras.applications.ResNet50/101` (ResNet v1, Caffe
  weights): the stride sits on the first 1x1 conv and on the shortcut, convs
  have biases, batch-norm epsilon 1.001e-5; Caffe preprocessing.
- ResNet-18/34 copy `keras_hub.models.ResNetBackbone` with
  `block_type="basic_block"` (torchvision/timm ResNet v1): no conv biases,
  epsilon 1e-5, momentum 0.9, a symmetric pad before every stride-2 conv
  (torch padding), an identity shortcut in the first block of conv2_x; ImageNet
  mean/std preprocessing. keras.applications-style names
  (`conv3_block1_1_conv`) map to keras-hub's (`stack1_block0_1_conv`).

Weights (`weights=`): `None`, `"imagenet"` (keras.applications' download for
50/101, keras-hub's `resnet_18_imagenet` preset for 18; keras-hub has no plain
ResNet-34 ImageNet preset, only the differently built ResNet-vd) or a local
file: a `.weights.h5` / legacy `.h5` weights file of the reference network
(`reference.save_weights(...)`; keras.applications files with or without the
1000-class top), or for 18/34 a keras-hub preset folder
(`backbone.save_to_preset(folder)`).
"""

import dataclasses
import os
import re

import keras

from keras_sanet.backbones.registry import BackboneSpec
from keras_sanet.backbones.registry import register_backbone
from keras_sanet.backbones.registry import validate_output_stride
from keras_sanet.backbones.weight_loading import check_weights_argument
from keras_sanet.backbones.weight_loading import imagenet_download_error
from keras_sanet.backbones.weight_loading import transfer_weights
from keras_sanet.layers.conv2d import Conv2D
from keras_sanet.layers.image_normalization import ImageNormalization

STEMS = ("standard", "deep")
STAGE_FILTERS = (64, 128, 256, 512)
# (stride, dilation rate) of conv2_x .. conv5_x per output stride.
STAGE_STRIDES_AND_RATES = {
    32: ((1, 1), (2, 1), (2, 1), (2, 1)),
    16: ((1, 1), (2, 1), (2, 1), (1, 2)),
    8: ((1, 1), (2, 1), (1, 2), (1, 4)),
}
KERAS_APPLICATIONS = "keras_applications"
KERAS_HUB = "keras_hub"


@dataclasses.dataclass(frozen=True)
class ResNetVariant:
    """One ResNet depth and the reference network its weights come from.

    Args:
        name: the registry name, e.g. `"resnet50"`.
        block: `"bottleneck"` (50/101) or `"basic"` (18/34).
        stage_blocks: number of blocks in conv2_x .. conv5_x.
        family: `"keras_applications"` or `"keras_hub"`: whose layout, layer
            settings and weights the network copies.
        imagenet_source: what `weights="imagenet"` loads, or `None`.
    """

    name: str
    block: str
    stage_blocks: tuple
    family: str
    imagenet_source: str | None

    @property
    def expansion(self):
        return 4 if self.block == "bottleneck" else 1

    @property
    def feature_channels(self):
        return tuple(f * self.expansion for f in STAGE_FILTERS)

    @property
    def normalization(self):
        # keras.applications ResNets are Caffe-converted; keras-hub's presets
        # come from timm/torchvision (ImageNet mean and std).
        return "caffe" if self.family == KERAS_APPLICATIONS else "imagenet"

    @property
    def conv_kwargs(self):
        return {"use_bias": self.family == KERAS_APPLICATIONS}

    @property
    def batch_norm_kwargs(self):
        if self.family == KERAS_APPLICATIONS:
            return {"epsilon": 1.001e-5}
        return {"epsilon": 1e-5, "momentum": 0.9}

    @property
    def reference_description(self):
        if self.family == KERAS_APPLICATIONS:
            return f"keras.applications.{_APPLICATIONS_CLASSES[self.name]}"
        blocks = list(self.stage_blocks)
        return (
            "keras_hub.models.ResNetBackbone(block_type='basic_block', "
            f"stackwise_num_blocks={blocks})"
        )


_APPLICATIONS_CLASSES = {"resnet50": "ResNet50", "resnet101": "ResNet101"}
VARIANTS = {
    "resnet18": ResNetVariant(
        "resnet18",
        "basic",
        (2, 2, 2, 2),
        KERAS_HUB,
        "keras_hub.models.ResNetBackbone.from_preset('resnet_18_imagenet')",
    ),
    "resnet34": ResNetVariant("resnet34", "basic", (3, 4, 6, 3), KERAS_HUB, None),
    "resnet50": ResNetVariant(
        "resnet50",
        "bottleneck",
        (3, 4, 6, 3),
        KERAS_APPLICATIONS,
        "keras.applications.ResNet50",
    ),
    "resnet101": ResNetVariant(
        "resnet101",
        "bottleneck",
        (3, 4, 23, 3),
        KERAS_APPLICATIONS,
        "keras.applications.ResNet101",
    ),
}
_HUB_IMAGENET_PRESETS = {"resnet18": "resnet_18_imagenet"}


def build_resnet(
    variant, output_stride=8, weights=None, dtype=None, stem="standard", **kwargs
):
    """Builds a dilated ResNet feature extractor.

    Args:
        variant: a `ResNetVariant` or its name (`"resnet18"`, `"resnet34"`,
            `"resnet50"`, `"resnet101"`).
        output_stride: 8, 16 or 32 (see the module docstring).
        weights: `None`, `"imagenet"` or the path of a local weights file or
            keras-hub preset folder of the reference network.
        dtype: a dtype policy name such as `"mixed_bfloat16"` (every layer
            computes in it), or `None` for the global policy.
        stem: `"standard"` (7x7 conv, the ImageNet one) or `"deep"`
            (PyTorch-Encoding: three 3x3 convs 64-64-128, the first with stride
            2; random initialisation only).

    Returns:
        A functional `keras.Model` with input `"images"` (0..255 RGB) and
        outputs `[C2, C3, C4, C5]`.

    Example:
    >>> model = build_resnet("resnet18", output_stride=8)
    >>> [f.shape[1] for f in model(np.zeros((1, 64, 64, 3)))]
    [16, 8, 8, 8]
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(
                f"Unknown ResNet {variant!r}; use one of {sorted(VARIANTS)}."
            )
        variant = VARIANTS[variant]
    if kwargs:
        raise TypeError(
            f"Backbone {variant.name!r} got unexpected options {sorted(kwargs)}; "
            "its only option is `stem` ('standard' or 'deep')."
        )
    validate_output_stride(output_stride)
    if stem not in STEMS:
        raise ValueError(
            f"stem={stem!r} is not supported; use 'standard' (7x7 conv, "
            "ImageNet weights exist) or 'deep' (three 3x3 convs, random init)."
        )
    if stem == "deep" and weights is not None:
        raise ValueError(
            f"The deep stem of {variant.name!r} has no pretrained weights (they "
            f"belong to the 7x7 stem), but backbone_weights={weights!r}. Pass "
            "`stem='standard'` to load them, or `backbone_weights=None`."
        )
    check_weights_argument(
        weights, variant.name, has_imagenet=variant.imagenet_source is not None
    )
    # Fetch the weights first: a failing download should not cost a build.
    source = _pretrained_source(variant, weights) if weights is not None else None
    model = _build_network(variant, output_stride, dtype, stem)
    if source is not None:
        _copy_weights(source, model, variant, weights)
    return model


def _build_network(variant, output_stride, dtype, stem):
    images = keras.Input(shape=(None, None, 3), name="images")
    x = ImageNormalization(variant.normalization, dtype=dtype, name="normalization")(
        images
    )
    if stem == "standard":
        x = _standard_stem(x, variant, dtype)
    else:
        x = _deep_stem(x, variant, dtype)
    x = keras.layers.ZeroPadding2D(1, dtype=dtype, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, dtype=dtype, name="pool1_pool")(x)

    features = []
    stages = zip(
        STAGE_FILTERS, variant.stage_blocks, STAGE_STRIDES_AND_RATES[output_stride]
    )
    for stage, (filters, blocks, (stride, rate)) in enumerate(stages, start=2):
        # PyTorch-Encoding: the first block of a dilated stage uses half the rate.
        first_rate = max(rate // 2, 1)
        for index in range(1, blocks + 1):
            block_args = dict(
                filters=filters,
                stride=stride if index == 1 else 1,
                block_rate=first_rate if index == 1 else rate,
                stage_rate=rate,
                variant=variant,
                dtype=dtype,
                name=f"conv{stage}_block{index}",
            )
            if variant.block == "bottleneck":
                x = _bottleneck_block(x, **block_args)
            else:
                x = _basic_block(x, **block_args)
        features.append(x)
    return keras.Model(images, features, name=f"{variant.name}_os{output_stride}")


def _conv(
    x, filters, kernel_size, variant, dtype, name, strides=1, rate=1, padding="same"
):
    return Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=rate,
        dtype=dtype,
        name=name,
        **variant.conv_kwargs,
    )(x)


def _batch_norm(x, variant, dtype, name):
    return keras.layers.BatchNormalization(
        axis=-1, dtype=dtype, name=name, **variant.batch_norm_kwargs
    )(x)


def _relu(x, dtype, name):
    return keras.layers.Activation("relu", dtype=dtype, name=name)(x)


def _standard_stem(x, variant, dtype):
    x = keras.layers.ZeroPadding2D(3, dtype=dtype, name="conv1_pad")(x)
    x = _conv(x, 64, 7, variant, dtype, "conv1_conv", strides=2, padding="valid")
    x = _batch_norm(x, variant, dtype, "conv1_bn")
    return _relu(x, dtype, "conv1_relu")


def _deep_stem(x, variant, dtype):
    for index, (filters, strides) in enumerate(((64, 2), (64, 1), (128, 1)), start=1):
        name = f"conv1_{index}"
        padding = "same"
        if strides > 1:
            # torch pads symmetrically; Keras "same" would pad (0, 1).
            x = keras.layers.ZeroPadding2D(1, dtype=dtype, name=f"{name}_pad")(x)
            padding = "valid"
        # No bias: batch norm follows (PyTorch-Encoding).
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=strides,
            padding=padding,
            use_bias=False,
            dtype=dtype,
            name=f"{name}_conv",
        )(x)
        x = _batch_norm(x, variant, dtype, f"{name}_bn")
        x = _relu(x, dtype, f"{name}_relu")
    return x


def _shortcut(x, out_channels, stride, variant, dtype, name):
    if stride == 1 and x.shape[-1] == out_channels:
        return x
    shortcut = _conv(
        x, out_channels, 1, variant, dtype, f"{name}_0_conv", strides=stride
    )
    return _batch_norm(shortcut, variant, dtype, f"{name}_0_bn")


def _bottleneck_block(x, filters, stride, block_rate, stage_rate, variant, dtype, name):
    """keras.applications' ResNet v1 block: the stride sits on the first 1x1 conv."""
    shortcut = _shortcut(x, 4 * filters, stride, variant, dtype, name)
    x = _conv(x, filters, 1, variant, dtype, f"{name}_1_conv", strides=stride)
    x = _batch_norm(x, variant, dtype, f"{name}_1_bn")
    x = _relu(x, dtype, f"{name}_1_relu")
    x = _conv(x, filters, 3, variant, dtype, f"{name}_2_conv", rate=block_rate)
    x = _batch_norm(x, variant, dtype, f"{name}_2_bn")
    x = _relu(x, dtype, f"{name}_2_relu")
    x = _conv(x, 4 * filters, 1, variant, dtype, f"{name}_3_conv")
    x = _batch_norm(x, variant, dtype, f"{name}_3_bn")
    x = keras.layers.Add(dtype=dtype, name=f"{name}_add")([shortcut, x])
    return _relu(x, dtype, f"{name}_out")


def _basic_block(x, filters, stride, block_rate, stage_rate, variant, dtype, name):
    """keras-hub's basic block: 1st conv at the block's rate, second at the stage's."""
    shortcut = _shortcut(x, filters, stride, variant, dtype, name)
    padding = "same"
    if stride > 1:
        # keras-hub pads symmetrically like torch; Keras "same" would pad (0, 1).
        x = keras.layers.ZeroPadding2D(1, dtype=dtype, name=f"{name}_1_pad")(x)
        padding = "valid"
    x = _conv(
        x,
        filters,
        3,
        variant,
        dtype,
        f"{name}_1_conv",
        strides=stride,
        rate=block_rate,
        padding=padding,
    )
    x = _batch_norm(x, variant, dtype, f"{name}_1_bn")
    x = _relu(x, dtype, f"{name}_1_relu")
    x = _conv(x, filters, 3, variant, dtype, f"{name}_2_conv", rate=stage_rate)
    x = _batch_norm(x, variant, dtype, f"{name}_2_bn")
    x = keras.layers.Add(dtype=dtype, name=f"{name}_add")([shortcut, x])
    return _relu(x, dtype, f"{name}_out")


# --- Pretrained weights -------------------------------------------------------


_BLOCK_LAYER = re.compile(r"conv(\d+)_block(\d+)_(.+)")


def hub_layer_name(name):
    """Maps our layer name to keras-hub ResNetBackbone's.

    Example: `conv3_block1_1_conv` -> `stack1_block0_1_conv`; stem names stay.
    """
    match = _BLOCK_LAYER.fullmatch(name)
    if match is None:  # The stem (conv1_conv, conv1_bn) has the same names.
        return name
    stage, block, rest = match.groups()
    return f"stack{int(stage) - 2}_block{int(block) - 1}_{rest}"


def _name_map(source_family):
    return hub_layer_name if source_family == KERAS_HUB else None


def _reference_network(variant, include_top=False, weights=None):
    """The keras.applications / keras-hub network whose weights ours take."""
    if variant.family == KERAS_APPLICATIONS:
        application = getattr(keras.applications, _APPLICATIONS_CLASSES[variant.name])
        input_shape = None if include_top else (None, None, 3)
        return application(
            include_top=include_top, weights=weights, input_shape=input_shape
        )
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=list(STAGE_FILTERS),
        stackwise_num_blocks=list(variant.stage_blocks),
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        use_pre_activation=False,
    )


def _weighted_layer_count(variant, include_top=False):
    """Conv + batch-norm layers (+ the classifier) of the reference network."""
    blocks = sum(variant.stage_blocks)
    convs_per_block = 3 if variant.block == "bottleneck" else 2
    # Stem conv, block convs, one projection shortcut per stage except, for
    # basic blocks, conv2_x (identity shortcut).
    shortcuts = 4 if variant.block == "bottleneck" else 3
    convs = 1 + convs_per_block * blocks + shortcuts
    return 2 * convs + int(include_top)


def _weighted_layer_count_in_file(path):
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"{path!r} is not an HDF5 weights file ({error}). Pass a file written "
            "by `model.save_weights(...)`, a keras-hub preset folder, or "
            "`backbone_weights=None`."
        ) from error
    with file:
        if "layer_names" in file.attrs or "model_weights" in file:
            # Legacy Keras 2 format (keras.applications downloads).
            group = file["model_weights"] if "model_weights" in file else file
            names = [
                n.decode("utf8") if isinstance(n, bytes) else n
                for n in group.attrs["layer_names"]
            ]
            return sum(
                1 for n in names if len(group[n].attrs.get("weight_names", [])) > 0
            )
        if "layers" in file:
            # Keras 3 `.weights.h5`: one group per layer, variables under `vars`.
            return sum(
                1
                for layer in file["layers"].values()
                if "vars" in layer and len(layer["vars"]) > 0
            )
    raise ValueError(
        f"{path!r} is not a Keras weights file (no `layers` group nor legacy "
        "`layer_names`). Pass a file written by `model.save_weights(...)`, a "
        "keras-hub preset folder, or `backbone_weights=None`."
    )


def _reference_holding_file(variant, path):
    """Builds the reference network that `path` was saved from and loads it.

    The file's number of weighted layers tells which ResNet saved it. When it
    is another depth than `variant`, that network is returned anyway so that
    `transfer_weights` names the first layer that does not fit.
    """
    count = _weighted_layer_count_in_file(path)
    candidates = [variant] + [v for v in VARIANTS.values() if v is not variant]
    for candidate in candidates:
        tops = (False, True) if candidate.family == KERAS_APPLICATIONS else (False,)
        for include_top in tops:
            if _weighted_layer_count(candidate, include_top) != count:
                continue
            reference = _reference_network(candidate, include_top)
            try:
                reference.load_weights(path)
            except Exception as error:
                message = str(error).strip().splitlines()[0][:400]
                raise ValueError(
                    f"The weights file {path!r} does not load into "
                    f"{candidate.reference_description}: {message} Pass the "
                    f"weights saved from {variant.reference_description} "
                    "(`reference.save_weights(...)`), or `backbone_weights=None`."
                ) from error
            return reference, candidate
    raise ValueError(
        f"The weights file {path!r} holds {count} weighted layers, but "
        f"{variant.reference_description} has "
        f"{_weighted_layer_count(variant)} (no other ResNet matches either). "
        f"Pass the weights saved from {variant.reference_description}, or "
        "`backbone_weights=None`."
    )


def _hub_preset_source(variant, preset):
    import keras_hub

    try:
        source = keras_hub.models.ResNetBackbone.from_preset(preset)
    except Exception as error:
        if os.path.isdir(str(preset)):
            raise ValueError(
                f"{preset!r} is not a keras-hub ResNetBackbone preset folder "
                f"({type(error).__name__}: {error}). Pass a folder written by "
                "`backbone.save_to_preset(...)`, a weights file, or "
                "`backbone_weights=None`."
            ) from error
        raise imagenet_download_error(
            variant.name, variant.imagenet_source, error
        ) from error
    return source, None


def _pretrained_source(variant, weights):
    """Returns `(reference model holding the weights, its variant or None)`."""
    if weights == "imagenet":
        if variant.family == KERAS_HUB:
            return _hub_preset_source(variant, _HUB_IMAGENET_PRESETS[variant.name])
        try:
            return _reference_network(variant, weights="imagenet"), variant
        except Exception as error:
            raise imagenet_download_error(
                variant.name, variant.imagenet_source, error
            ) from error
    path = os.fspath(weights)
    if os.path.isdir(path):
        return _hub_preset_source(variant, path)
    return _reference_holding_file(variant, path)


def _copy_weights(source, model, variant, weights):
    reference, reference_variant = source
    description = (
        f"the ImageNet weights ({variant.imagenet_source})"
        if weights == "imagenet"
        else f"the weights at {os.fspath(weights)!r}"
    )
    family = reference_variant.family if reference_variant else KERAS_HUB
    name_map = _name_map(family)
    transfer_weights(
        reference, model, name_map=name_map, source_description=description
    )
    # transfer_weights checks that every layer of ours found its weights; a
    # deeper network's file would pass that test, so also check the converse.
    used = {
        name_map(layer.name) if name_map else layer.name
        for layer in model.layers
        if layer.weights
    }
    unused = [
        layer.name
        for layer in reference.layers
        if layer.weights and layer.name not in used and layer.name != "predictions"
    ]
    if unused or (reference_variant is not None and reference_variant is not variant):
        saved_from = (
            reference_variant.reference_description
            if reference_variant is not None
            else "a different network"
        )
        example = f" such as {unused[0]!r}" if unused else ""
        raise ValueError(
            f"{description} was saved from {saved_from}: it holds weights for "
            f"layers{example} that backbone {variant.name!r} does not have. Pass "
            f"the weights saved from {variant.reference_description}, or "
            "`backbone_weights=None`."
        )


def _make_builder(name):
    def builder(output_stride=8, weights=None, dtype=None, stem="standard", **kwargs):
        return build_resnet(
            VARIANTS[name],
            output_stride=output_stride,
            weights=weights,
            dtype=dtype,
            stem=stem,
            **kwargs,
        )

    builder.__name__ = f"build_{name}"
    builder.__doc__ = (
        f"Builds the dilated {name} feature extractor; see `build_resnet`."
    )
    return builder


build_resnet18 = _make_builder("resnet18")
build_resnet34 = _make_builder("resnet34")
build_resnet50 = _make_builder("resnet50")
build_resnet101 = _make_builder("resnet101")

for _name, _builder in (
    ("resnet18", build_resnet18),
    ("resnet34", build_resnet34),
    ("resnet50", build_resnet50),
    ("resnet101", build_resnet101),
):
    register_backbone(
        BackboneSpec(
            name=_name,
            builder=_builder,
            feature_channels=VARIANTS[_name].feature_channels,
            imagenet_source=VARIANTS[_name].imagenet_source,
        )
    )
