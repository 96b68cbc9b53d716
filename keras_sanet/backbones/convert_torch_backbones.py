"""Converting PyTorch ImageNet state dicts into weights files our backbones load.

Handles torchvision's MobileNetV2 (`mobilenet_v2-b0353104.pth`) and the
PyTorch port of EfficientNet-Lite0/1/2 (`efficientnet-lite0-57934424.pth`
etc.). The output is the Keras `.weights.h5` of the full ImageNet classifier
(`mobilenet_v2_classifier` / `efficientnet_lite_classifier`: our backbone's
layers, same names, plus the 1280-channel head and the Dense classifier), so
the converted file can classify images; `weights=<file>` on a backbone loads
it into the classifier and copies the backbone's layers by name.

Layout rules: Conv2D kernels (O, I, kh, kw) -> (kh, kw, I, O); depthwise
(C, 1, kh, kw) -> (kh, kw, C, 1); Dense transposed; BN weight, bias,
running_mean, running_var -> gamma, beta, moving_mean, moving_variance;
`num_batches_tracked` dropped.

The weights were trained on ImageNet, whose terms allow non-commercial
research use only; the packages that bundle them state MIT / Apache-2.0 / ISC.

Usage:
    python -m keras_sanet.backbones.convert_torch_backbones mobilenetv2 \
        mobilenet_v2-b0353104.pth mobilenetv2_imagenet.weights.h5
"""

import argparse
import hashlib
import os
import re

import h5py
import keras
import numpy as np

from keras_sanet.backbones.torch_state_dict import read_torch_state_dict
from keras_sanet.backbones.weight_loading import transfer_weights

# sha256 of the published files (see /work/shared/weights/README.md).
PUBLISHED_SHA256 = {
    "mobilenetv2": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    "efficientnetlite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnetlite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnetlite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}
BACKBONES = tuple(PUBLISHED_SHA256)
LICENCE_NOTE = (
    "ImageNet-1k weights: ImageNet's terms allow non-commercial research use only."
)
# Root attribute of the converted file naming the backbone it belongs to.
BACKBONE_ATTRIBUTE = "keras_sanet_backbone"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path, expected_sha256):
    """Raises a ValueError naming both hashes when `path` is not the expected file."""
    if expected_sha256 is None:
        return
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise ValueError(
            f"{path} has sha256 {actual}, expected {expected_sha256}. The file "
            "is corrupt, truncated or a different release: delete it and "
            "re-download it."
        )


def mobilenet_v2_torch_prefix(layer_name, keras_layer_names):
    """torchvision's module path of one of our MobileNetV2 layers."""
    if layer_name == "classifier":
        return "classifier.1"
    match = re.fullmatch(r"features_(\d+)_(conv|bn)", layer_name)
    if match:  # the stem (features.0) and the head (features.18): ConvBNReLU
        return f"features.{match[1]}.{0 if match[2] == 'conv' else 1}"
    match = re.fullmatch(r"features_(\d+)_(expand|depthwise|project)_(conv|bn)", layer_name)
    if not match:
        raise ValueError(f"Layer {layer_name!r} has no torchvision counterpart.")
    index, part, kind = match.groups()
    # Block 1 has no expansion, so its depthwise ConvBNReLU is conv.0, not conv.1.
    first = 1 if f"features_{index}_expand_conv" in keras_layer_names else 0
    if part == "expand":
        return f"features.{index}.conv.0.{0 if kind == 'conv' else 1}"
    if part == "depthwise":
        return f"features.{index}.conv.{first}.{0 if kind == 'conv' else 1}"
    return f"features.{index}.conv.{first + (1 if kind == 'conv' else 2)}"


_LITE_NAMES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "classifier": "_fc",
}
_LITE_BLOCK_PARTS = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "depthwise_conv": "_depthwise_conv",
    "depthwise_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}


def efficientnet_lite_torch_prefix(layer_name, keras_layer_names=None):
    """The PyTorch port's module path of one of our EfficientNet-Lite layers."""
    if layer_name in _LITE_NAMES:
        return _LITE_NAMES[layer_name]
    match = re.fullmatch(r"blocks_(\d+)_(\w+)", layer_name)
    if not match or match[2] not in _LITE_BLOCK_PARTS:
        raise ValueError(f"Layer {layer_name!r} has no EfficientNet-Lite counterpart.")
    return f"_blocks.{match[1]}.{_LITE_BLOCK_PARTS[match[2]]}"


def _torch_values(layer, prefix, state, used, source):
    """The Keras weights of `layer` taken from the torch keys under `prefix`."""

    def take(suffix, expected_shape, to_keras=lambda v: v):
        key = f"{prefix}.{suffix}"
        if key not in state:
            raise ValueError(
                f"{source} has no key {key!r} (needed by layer {layer.name!r}). It "
                "is not the state dict of this network or variant: pass the "
                "matching file."
            )
        value = to_keras(np.asarray(state[key], dtype="float32"))
        if tuple(value.shape) != tuple(expected_shape):
            raise ValueError(
                f"{source} key {key!r} has shape {tuple(state[key].shape)}, which "
                f"maps to {tuple(value.shape)}, but layer {layer.name!r} needs "
                f"{tuple(expected_shape)}. The file belongs to another variant: "
                "pass the state dict of the matching network."
            )
        used.add(key)
        return value

    shapes = [tuple(w.shape) for w in layer.weights]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        values = [take("weight", shapes[0], lambda v: v.transpose(2, 3, 0, 1))]
    elif isinstance(layer, keras.layers.Conv2D):
        values = [take("weight", shapes[0], lambda v: v.transpose(2, 3, 1, 0))]
    elif isinstance(layer, keras.layers.BatchNormalization):
        values = [
            take(suffix, shape)
            for suffix, shape in zip(("weight", "bias", "running_mean", "running_var"), shapes)
        ]
        used.add(f"{prefix}.num_batches_tracked")
    elif isinstance(layer, keras.layers.Dense):
        values = [take("weight", shapes[0], lambda v: v.T)]
    else:
        raise ValueError(f"No torch layout rule for layer {layer.name!r} ({type(layer).__name__}).")
    if len(shapes) > len(values):  # a bias
        values.append(take("bias", shapes[len(values)]))
    return values


def state_dict_to_model(state, model, torch_prefix, source="the state dict"):
    """Copies a torch state dict into `model`, every key accounted for.

    Args:
        state: `dict` of NumPy arrays in torch layout (`read_torch_state_dict`).
        model: our classifier model.
        torch_prefix: `torch_prefix(layer_name, layer_names)` -> module path.
        source: how to name the state dict in errors.

    Raises:
        ValueError: a key is missing or has the wrong shape, or the state
            dict holds weights the model has no place for.
    """
    names = {layer.name for layer in model.layers}
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = torch_prefix(layer.name, names)
        layer.set_weights(_torch_values(layer, prefix, state, used, source))
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise ValueError(
            f"{source} holds {len(unused)} tensors this network has no place for "
            f"(e.g. {unused[:3]}). It belongs to a deeper or different network: "
            "pass the state dict of the matching variant."
        )


def _convert(pth_path, output_path, name, model, torch_prefix, expected_sha256):
    output_path = os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(
            f"output_path={output_path!r} must end in '.weights.h5' (the Keras "
            "weights format the backbones load)."
        )
    if not os.path.isfile(pth_path):
        raise ValueError(f"{pth_path} does not exist. Pass the path of the downloaded .pth file.")
    check_sha256(pth_path, expected_sha256)
    state = read_torch_state_dict(pth_path)
    state_dict_to_model(state, model, torch_prefix, source=os.path.basename(pth_path))
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    model.save_weights(output_path)
    with h5py.File(output_path, "a") as file:
        file.attrs[BACKBONE_ATTRIBUTE] = name
        file.attrs["source_file"] = os.path.basename(pth_path)
        file.attrs["source_sha256"] = file_sha256(pth_path)
        file.attrs["licence"] = LICENCE_NOTE
    return output_path


def convert_mobilenet_v2(pth_path, output_path, expected_sha256=None):
    """Converts torchvision's MobileNetV2 state dict into our `.weights.h5`.

    Args:
        pth_path: the torchvision state dict (`mobilenet_v2-b0353104.pth`).
        output_path: where to write the weights; must end in `.weights.h5`.
        expected_sha256: if given, the file's sha256 must match (see
            `PUBLISHED_SHA256["mobilenetv2"]`).

    Returns:
        `output_path`, loadable with `mobilenet_v2_backbone(weights=...)`
        and `mobilenet_v2_classifier().load_weights(...)`.

    Example:
    >>> convert_mobilenet_v2("mobilenet_v2-b0353104.pth", "mnv2.weights.h5",
    ...                      PUBLISHED_SHA256["mobilenetv2"])
    'mnv2.weights.h5'
    """
    from keras_sanet.backbones.mobilenet_v2 import mobilenet_v2_classifier

    model = mobilenet_v2_classifier(dtype="float32")
    return _convert(
        pth_path, output_path, "mobilenetv2", model, mobilenet_v2_torch_prefix, expected_sha256
    )


def convert_efficientnet_lite(pth_path, output_path, variant, expected_sha256=None):
    """Converts an EfficientNet-Lite PyTorch state dict into our `.weights.h5`.

    Args:
        pth_path: the state dict (e.g. `efficientnet-lite0-57934424.pth`).
        output_path: where to write the weights; must end in `.weights.h5`.
        variant: `"efficientnetlite0"`, `"efficientnetlite1"` or
            `"efficientnetlite2"`.
        expected_sha256: if given, the file's sha256 must match.

    Returns:
        `output_path`, loadable with `efficientnet_lite_backbone(variant,
        weights=...)`.

    Example:
    >>> convert_efficientnet_lite("efficientnet-lite0-57934424.pth",
    ...                           "lite0.weights.h5", "efficientnetlite0")
    'lite0.weights.h5'
    """
    from keras_sanet.backbones.efficientnet_lite import efficientnet_lite_classifier

    model = efficientnet_lite_classifier(variant, dtype="float32")
    return _convert(
        pth_path, output_path, variant, model, efficientnet_lite_torch_prefix, expected_sha256
    )


def convert(name, pth_path, output_path, expected_sha256=None):
    """Converts the state dict of backbone `name` (one of `BACKBONES`)."""
    if name == "mobilenetv2":
        return convert_mobilenet_v2(pth_path, output_path, expected_sha256)
    if name in BACKBONES:
        return convert_efficientnet_lite(pth_path, output_path, name, expected_sha256)
    raise ValueError(f"Cannot convert backbone {name!r}; use one of {list(BACKBONES)}.")


def check_converted_weights_file(path, name):
    """Checks, before anything is built, that `path` is a converted file of backbone `name`.

    Raises:
        ValueError: the file is a raw torch file, not a `.weights.h5`, not
            readable, or labelled with another backbone.
    """
    path = os.fspath(path)
    if path.endswith((".pth", ".pt")):
        raise ValueError(
            f"{path} is a PyTorch file; convert it once with `python -m "
            f"keras_sanet.backbones.convert_torch_backbones {name} {path} "
            f"{name}_imagenet.weights.h5` and pass the .weights.h5 file."
        )
    if not path.endswith(".weights.h5"):
        raise ValueError(
            f"{path} is not a '.weights.h5' file. Pass a file written by "
            "keras_sanet.backbones.convert_torch_backbones."
        )
    try:
        with h5py.File(path, "r") as file:
            stored = file.attrs.get(BACKBONE_ATTRIBUTE)
    except OSError as error:
        raise ValueError(
            f"{path} is not a readable HDF5 weights file ({error}). Re-run the "
            "conversion with keras_sanet.backbones.convert_torch_backbones."
        ) from None
    if isinstance(stored, bytes):
        stored = stored.decode()
    if stored is not None and stored != name:
        raise ValueError(
            f"{path} holds weights of backbone {stored!r}, not {name!r}. Pass "
            f"`backbone={stored!r}` or the weights file converted for {name!r}."
        )


def load_converted_weights(backbone, classifier, path, name):
    """Loads a converted `.weights.h5` into `backbone` via the full `classifier`.

    Args:
        backbone: our feature model (any output stride: dilation does not
            change variable shapes).
        classifier: the float32 classifier model of the same network, whose
            weights the file holds.
        path: the `.weights.h5` file.
        name: the backbone name, for checks and messages.

    Raises:
        ValueError: the file is a raw torch file, of another backbone, or
            does not fit the network.
    """
    path = os.fspath(path)
    check_converted_weights_file(path, name)
    try:
        classifier.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"{path} does not fit backbone {name!r}: {str(error)[:400]} Pass a "
            f"file converted for {name!r} with "
            "keras_sanet.backbones.convert_torch_backbones."
        ) from None
    transfer_weights(classifier, backbone, source_description=f"weights file {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert a PyTorch ImageNet state dict into a keras-sanet "
        "backbone weights file."
    )
    parser.add_argument("backbone", choices=BACKBONES)
    parser.add_argument("pth", help="the downloaded .pth state dict")
    parser.add_argument("output", help="the .weights.h5 file to write")
    parser.add_argument(
        "--sha256",
        default=None,
        help="expected sha256 of the .pth; 'published' uses the known hash of the release",
    )
    args = parser.parse_args(argv)
    expected = PUBLISHED_SHA256[args.backbone] if args.sha256 == "published" else args.sha256
    path = convert(args.backbone, args.pth, args.output, expected)
    print(path)
    print(LICENCE_NOTE)


if __name__ == "__main__":
    main()
