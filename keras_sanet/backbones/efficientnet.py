"""Dilated EfficientNet-B0 ... B7 backbones built from keras.applications.

We build `keras.applications.EfficientNetBx(include_top=False)` (which loads
the weights), edit its config (strides, dilation rates, paddings, dtype
policy, input name, outputs), rebuild it with `keras.Model.from_config` and
copy the weights layer by layer. Layer names and variable shapes never change,
so the ImageNet weights of the plain network load unchanged at every output
stride.

Input: float RGB images in 0..255 named `"images"`, any height and width. The
keras.applications network normalises inside itself (`Rescaling(1/255)` and a
`Normalization` layer holding the ImageNet statistics), so no
`ImageNormalization` layer is added.

Feature maps (no source fixes them, SANET.md leaves the choice to us):

| feature | layer | B0 channels | B7 channels |
| --- | --- | --- | --- |
| C2 (1/4) | last block of stage 2 (`block2b_add` in B0) | 24 | 48 |
| C3 (1/8) | last block of stage 3 (`block3b_add` in B0) | 40 | 80 |
| C4 (1/16) | last block of stage 5 (`block5c_add` in B0) | 112 | 224 |
| C5 (1/32) | `top_activation` | 1280 | 2560 |

Why: C2-C4 are the outputs of the last layer working at each resolution
(stages 4 and 5 share 1/16, so stage 5 ends it), like ResNet's `conv{i}_x`
outputs. For C5 we take `top_activation` rather than the end of stage 7:
it is the map the ImageNet classifier read, so every pretrained weight is
used, and like ResNet's C5 it is the wide, activated last feature map (2560
channels for B7 against ResNet-101's 2048). C2-C4 are the linear
(un-activated) MBConv bottleneck outputs; every head starts with conv -> BN ->
ReLU, so that costs nothing.

Dilation (PyTorch-Encoding's dilated ResNet rule, applied to EfficientNet's
stride-2 stages): at output stride 16 the stage that reaches 1/32 (stage 6)
keeps stride 1; its first depthwise conv uses dilation 1 (half the stage's
rate) and every later depthwise conv (rest of stage 6, stage 7) dilation 2.
At output stride 8 the stage that reaches 1/16 (stage 4) is treated the same
way with rate 2 (block4a: dilation 1; block4b-stage 5: dilation 2), and stage
6 with rate 4 (block6a: dilation 2; block6b-stage 7: dilation 4). The
1x1 convs (expand, squeeze-excite, project, top) are unaffected. A dilated
first block keeps its `ZeroPadding2D` layer (and its name) with a symmetric
padding of `dilation * (kernel - 1) / 2` and a `'valid'` depthwise conv, so
the map keeps its exact size; all later depthwise convs already use `'same'`.

Spatial sizes: keras.applications pads stride-2 convs for even inputs
(`correct_pad` with an unknown size), so each stride-2 step maps `n` to
`n // 2` and the features are exactly `H // 4`, `H // 8`, `H // 16` and
`H // 32` (odd sizes included; `H // 8` for C4 and C5 at output stride 8).
Inputs smaller than 32 px give empty C5 maps at output stride 32.

Weights: `None`, `"imagenet"` (the keras.applications `_notop.h5` download,
cached by Keras in `~/.keras/models`) or a local file of the keras.applications
network (`model.save_weights("x.weights.h5")`, or a legacy `.h5` such as the
downloaded `efficientnetb0_notop.h5`). Note a keras.applications quirk: with
`weights="imagenet"` it adds one extra `Rescaling` layer (dividing by the
square root of the ImageNet std) that it omits for a file path. Offline users
of the official ImageNet file should therefore copy it to
`~/.keras/models/` and pass `"imagenet"` (Keras then finds it in its cache),
not its path.
"""

import copy
import os
import re
import warnings

import h5py
import keras
import numpy as np

from keras_sanet.backbones.registry import BackboneSpec
from keras_sanet.backbones.registry import register_backbone
from keras_sanet.backbones.registry import validate_output_stride
from keras_sanet.backbones.weight_loading import check_weights_argument
from keras_sanet.backbones.weight_loading import imagenet_download_error
from keras_sanet.backbones.weight_loading import transfer_weights
from keras_sanet.layers.conv2d import Conv2D
from keras_sanet.layers.depthwise_conv2d import DepthwiseConv2D

_IMAGENET_URL = "https://storage.googleapis.com/keras-applications/"

# keras.applications' width coefficients, to know the channels before building.
_WIDTH_COEFFICIENTS = {
    "b0": 1.0,
    "b1": 1.0,
    "b2": 1.1,
    "b3": 1.2,
    "b4": 1.4,
    "b5": 1.6,
    "b6": 1.8,
    "b7": 2.0,
}
# Channels of the B0 layers we read: end of stages 2, 3, 5 and top_conv.
_BASE_FEATURE_CHANNELS = (24, 40, 112, 1280)
# Stages whose last block gives C2, C3, C4; C5 is top_activation.
_FEATURE_STAGES = (2, 3, 5)
_DWCONV_NAME = re.compile(r"^block(\d+)([a-z])_dwconv$")
# keras.applications' convolutions become ours: same config, variables and
# `.weights.h5` keys (they keep Keras' class names), but JAX runs depthwise
# convolutions as multiply-adds and 1x1 ones as matmuls (benchmarks/PROFILE.md
# sections 7, 9 and 10), as in the ResNet and MobileNetV2 backbones.
_OWN_LAYERS = {"Conv2D": Conv2D, "DepthwiseConv2D": DepthwiseConv2D}


def _round_filters(filters, width_coefficient, divisor=8):
    """keras.applications' channel rounding (multiples of 8, at most 10% down)."""
    filters *= width_coefficient
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


def feature_channels(variant):
    """Channels of `[C2, C3, C4, C5]`, known without building the network.

    Args:
        variant: `"b0"` ... `"b7"`.

    Example:
    >>> feature_channels("b7")
    (48, 80, 224, 2560)
    """
    width = _WIDTH_COEFFICIENTS[variant]
    return tuple(_round_filters(c, width) for c in _BASE_FEATURE_CHANNELS)


def _keras_application(variant):
    return getattr(keras.applications, f"EfficientNet{variant.upper()}")


def _build_reference(variant, weights, backbone_name):
    """The plain keras.applications network holding the requested weights."""
    application = _keras_application(variant)
    source = f"keras.applications.EfficientNet{variant.upper()}"
    if weights == "imagenet":
        # Downloaded through `keras.utils.get_file` into the cache Keras itself
        # reads, so keras.applications below finds the file (and checks its hash).
        file_name = f"efficientnet{variant}_notop.h5"
        try:
            keras.utils.get_file(
                file_name, _IMAGENET_URL + file_name, cache_subdir="models"
            )
            return application(
                include_top=False, weights="imagenet", input_shape=(None, None, 3)
            )
        except Exception as error:  # urllib/HTTP/OS errors: any means no file.
            raise imagenet_download_error(backbone_name, source, error) from error
    reference = application(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    if weights is not None:
        path = os.fspath(weights)
        # A failing load warns once per skipped layer before raising; keep the
        # warnings only when the load succeeds, where they still mean something.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                reference.load_weights(path)
            except Exception as error:
                raise _explain_load_failure(path, reference, source, error) from error
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=2)
    return reference


class _SavedLayer:
    """One layer's arrays read from a weights file (what transfer_weights reads)."""

    def __init__(self, name, values):
        self.name = name
        self.weights = values

    def get_weights(self):
        return self.weights


class _SavedWeights:
    """A weights file seen as a model, its layers named as the file names them."""

    def __init__(self, layers):
        self.layers = layers


def _snake_case(name):
    """Keras' class-name key in `.weights.h5` files (`DepthwiseConv2D` ->
    `depthwise_conv2d`)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_weights_file(path, reference):
    """Reads `path` the way Keras loads it into `reference`.

    Keras 3 `.weights.h5` files key layers by class name and position
    (`conv2d_4`); legacy `.h5` files list the weighted layers in order. Either
    way the i-th entry belongs to the i-th layer of `reference`.

    Returns:
        `(saved, name_map)`: the file as a model-like object for
        `transfer_weights`, and our layer name -> the file entry it loads from
        (so that errors show what the file really holds there).
    """
    layers, name_map = [], {}
    with h5py.File(path, "r") as file:
        if "layer_names" in file.attrs:  # legacy .h5 (keras.applications downloads)
            entries = []
            for layer_name in map(_decode, file.attrs["layer_names"]):
                group = file[layer_name]
                names = [_decode(n) for n in group.attrs.get("weight_names", [])]
                if names:
                    entries.append((layer_name, [np.asarray(group[n]) for n in names]))
            weighted = [layer for layer in reference.layers if layer.weights]
            for layer, (entry_name, values) in zip(weighted, entries):
                layers.append(_SavedLayer(entry_name, values))
                name_map[layer.name] = entry_name
        elif "layers" in file:  # Keras 3 .weights.h5
            seen = {}
            for layer in reference.layers:
                key = _snake_case(type(layer).__name__)
                seen[key] = seen.get(key, -1) + 1
                if seen[key]:
                    key = f"{key}_{seen[key]}"
                name_map[layer.name] = key
                if key not in file["layers"] or "vars" not in file["layers"][key]:
                    continue
                variables = file["layers"][key]["vars"]
                values = [np.asarray(variables[str(i)]) for i in range(len(variables))]
                if values:
                    layers.append(_SavedLayer(key, values))
    return _SavedWeights(layers), name_map


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _explain_load_failure(path, reference, source, error):
    """The clear ValueError for a weights file Keras could not load into `reference`."""
    description = f"the weights file {path!r}"
    try:
        saved, name_map = _read_weights_file(path, reference)
        transfer_weights(
            saved,
            reference,
            name_map=lambda name: name_map.get(name, name),
            source_description=description,
        )
    except ValueError as mismatch:
        return mismatch
    except Exception:  # not HDF5 (e.g. a .keras archive): fall through.
        pass
    return ValueError(
        f"Could not load {description} into {source}(include_top=False): "
        f"{type(error).__name__}: {error}. Pass the weights saved from that "
        "exact network without its classification top (`model.save_weights("
        "'x.weights.h5')` or the `_notop.h5` download), or "
        "`backbone_weights=None`."
    )


def _stage_layout(layer_configs):
    """Per stage: block letters, kernel size and stride, read from the dwconv layers."""
    stages = {}
    for layer in layer_configs:
        match = _DWCONV_NAME.match(layer["name"])
        if not match:
            continue
        stage = stages.setdefault(
            int(match.group(1)),
            {
                "letters": [],
                "kernel": layer["config"]["kernel_size"][0],
                "stride": layer["config"]["strides"][0],
            },
        )
        stage["letters"].append(match.group(2))
    return dict(sorted(stages.items()))


def dilation_plan(stages, output_stride):
    """Maps dwconv layer name -> (strides, dilation rate) for `output_stride`.

    Args:
        stages: `{stage: {"letters", "kernel", "stride"}}` as read from the
            keras.applications config.
        output_stride: 8, 16 or 32.

    Returns:
        `{name: (stride, rate)}` for every depthwise conv whose stride or
        dilation changes; the first block of a dilated stage runs at half the
        stage's rate.

    Example:
    >>> stages = {s: {"letters": ["a", "b"], "kernel": 3, "stride": st}
    ...           for s, st in zip(range(1, 8), (1, 2, 2, 2, 1, 2, 1))}
    >>> dilation_plan(stages, 16)["block6b_dwconv"]
    (1, 2)
    """
    plan = {}
    current_stride = 2  # after the stem
    rate = 1
    for stage, layout in stages.items():
        first_rate = rate
        stride = layout["stride"]
        if stride == 2 and current_stride * 2 > output_stride:
            stride = 1
            rate *= 2
        elif stride == 2:
            current_stride *= 2
        for index, letter in enumerate(layout["letters"]):
            block_rate = first_rate if index == 0 else rate
            block_stride = stride if index == 0 else 1
            original_stride = layout["stride"] if index == 0 else 1
            if block_rate != 1 or block_stride != original_stride:
                plan[f"block{stage}{letter}_dwconv"] = (block_stride, block_rate)
    return plan


def _rename_history(node, old, new):
    """Points every `keras_history` reference to layer `old` at layer `new`."""
    if isinstance(node, dict):
        history = node.get("keras_history")
        if isinstance(history, (list, tuple)) and history and history[0] == old:
            node["keras_history"] = [new, *history[1:]]
        for value in node.values():
            _rename_history(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _rename_history(value, old, new)


def _use_own_layers(layer_configs):
    """Points Keras' Conv2D and DepthwiseConv2D entries at `_OWN_LAYERS`."""
    for layer in layer_configs:
        own = _OWN_LAYERS.get(layer["class_name"])
        if own is not None and layer.get("module") == "keras.layers":
            layer["module"] = own.__module__
            layer["registered_name"] = keras.saving.get_registered_name(own)


def _feature_layer_names(layer_configs):
    """Names of the layers giving `[C2, C3, C4, C5]` (see the module docstring)."""
    names = []
    for stage in _FEATURE_STAGES:
        pattern = re.compile(rf"^block{stage}[a-z]_")
        names.append([c["name"] for c in layer_configs if pattern.match(c["name"])][-1])
    return names + ["top_activation"]


def _dilated_config(reference, variant, output_stride, dtype):
    config = copy.deepcopy(reference.get_config())
    layer_configs = config["layers"]
    by_name = {layer["name"]: layer for layer in layer_configs}

    _use_own_layers(layer_configs)
    stages = _stage_layout(layer_configs)
    for dwconv_name, (stride, rate) in dilation_plan(stages, output_stride).items():
        layer = by_name[dwconv_name]["config"]
        layer["strides"] = [stride, stride]
        layer["dilation_rate"] = [rate, rate]
        pad_name = dwconv_name + "_pad"
        if pad_name in by_name:
            # Former stride-2 block: symmetric padding keeps the size with 'valid'.
            pad = rate * (layer["kernel_size"][0] - 1) // 2
            by_name[pad_name]["config"]["padding"] = [[pad, pad], [pad, pad]]

    if dtype is not None:
        policy = keras.dtype_policies.serialize(keras.dtype_policies.get(dtype))
        for layer in layer_configs:
            if layer["class_name"] != "InputLayer":
                layer["config"]["dtype"] = copy.deepcopy(policy)

    # A single input is written `[name, 0, 0]`; that form keeps `model.input` a
    # tensor rather than a list.
    input_name = config["input_layers"][0]
    _rename_history(layer_configs, input_name, "images")
    by_name[input_name]["name"] = "images"
    by_name[input_name]["config"]["name"] = "images"
    config["input_layers"] = ["images", 0, 0]
    config["output_layers"] = [
        [name, 0, 0] for name in _feature_layer_names(layer_configs)
    ]
    config["name"] = f"efficientnet{variant}_os{output_stride}"
    return config


def build_efficientnet(
    variant="b0", output_stride=8, weights=None, dtype=None, **kwargs
):
    """Builds a dilated EfficientNet returning `[C2, C3, C4, C5]`.

    Args:
        variant: `"b0"` ... `"b7"`.
        output_stride: 8, 16 or 32 (see the module docstring for the
            dilation rates).
        weights: `None`, `"imagenet"` or the path of a weights file of
            `keras.applications.EfficientNet{variant}(include_top=False)`.
        dtype: a dtype policy name (e.g. `"mixed_bfloat16"`) every layer
            computes in, or `None` for the global policy.
        **kwargs: none are accepted; present for the registry's signature.

    Returns:
        A functional `keras.Model` from 0..255 RGB `"images"` of any size to
        the four feature maps.

    Example:
    >>> backbone = build_efficientnet("b0", output_stride=8)
    >>> [tuple(f.shape) for f in backbone(np.zeros((1, 64, 64, 3)))]
    [(1, 16, 16, 24), (1, 8, 8, 40), (1, 8, 8, 112), (1, 8, 8, 1280)]
    """
    if variant not in _WIDTH_COEFFICIENTS:
        raise ValueError(
            f"Unknown EfficientNet variant {variant!r}; use one of "
            f"{sorted(_WIDTH_COEFFICIENTS)}."
        )
    backbone_name = f"efficientnet{variant}"
    if kwargs:
        raise ValueError(
            f"Backbone {backbone_name!r} takes no extra options, got "
            f"{sorted(kwargs)}. Remove them (only output_stride, weights and "
            "dtype apply)."
        )
    validate_output_stride(output_stride)
    check_weights_argument(weights, backbone_name)

    reference = _build_reference(variant, weights, backbone_name)
    config = _dilated_config(reference, variant, output_stride, dtype)
    backbone = keras.Model.from_config(config)
    transfer_weights(
        reference,
        backbone,
        source_description=f"keras.applications.EfficientNet{variant.upper()}",
    )
    # `set_weights` leaves Normalization's cached mean/variance at their
    # build-time values (0 and 1); only `finalize_state` reads the new ones.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    return backbone


def _make_builder(variant):
    def builder(output_stride=8, weights=None, dtype=None, **kwargs):
        return build_efficientnet(
            variant,
            output_stride=output_stride,
            weights=weights,
            dtype=dtype,
            **kwargs,
        )

    builder.__name__ = f"build_efficientnet{variant}"
    builder.__doc__ = (
        f"Dilated EfficientNet-{variant.upper()}; see `build_efficientnet`."
    )
    return builder


for _variant in _WIDTH_COEFFICIENTS:
    register_backbone(
        BackboneSpec(
            name=f"efficientnet{_variant}",
            builder=_make_builder(_variant),
            feature_channels=feature_channels(_variant),
            imagenet_source=f"keras.applications.EfficientNet{_variant.upper()}",
        )
    )
