"""Dilated ResNet backbones: shapes, dilation, weights mapped from the references."""

import math

import keras
import numpy as np
import pytest

from keras_sanet.backbones import backbone_names
from keras_sanet.backbones import build_backbone
from keras_sanet.backbones import get_backbone_spec
from keras_sanet.backbones import resnet
from tests.helpers import random_images
from tests.helpers import to_numpy

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")
APPLICATIONS_STAGE_OUTPUTS = {
    "resnet50": [
        "conv2_block3_out",
        "conv3_block4_out",
        "conv4_block6_out",
        "conv5_block3_out",
    ],
    "resnet101": [
        "conv2_block3_out",
        "conv3_block4_out",
        "conv4_block23_out",
        "conv5_block3_out",
    ],
}


def expected_sizes(size, output_stride):
    """Spatial size of C2..C5: every stride 2 (padded conv, pool) gives ceil(n / 2)."""
    size = math.ceil(math.ceil(size / 2) / 2)  # stem conv + max pool
    sizes = [size]
    for stage_stride in {32: (2, 2, 2), 16: (2, 2, 1), 8: (2, 1, 1)}[output_stride]:
        size = math.ceil(size / stage_stride)
        sizes.append(size)
    return sizes


def randomize_batch_norm(model, seed=0):
    """Random gamma/beta/mean/variance, so that a wrongly mapped BN shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shape).astype("float32"),
                    rng.normal(0.0, 0.1, shape).astype("float32"),
                    rng.normal(0.0, 0.1, shape).astype("float32"),
                    rng.uniform(0.5, 1.5, shape).astype("float32"),
                ]
            )


def hub_resnet(blocks):
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=list(blocks),
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        use_pre_activation=False,
    )


def weighted_layer_names(model):
    return sorted(layer.name for layer in model.layers if layer.weights)


def assert_close(ours, reference):
    ours, reference = to_numpy(ours), to_numpy(reference)
    assert ours.shape == reference.shape
    scale = max(1.0, float(np.max(np.abs(reference))))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * scale)


def conv_settings(model, name):
    config = model.get_layer(name).get_config()
    return tuple(config["strides"]), tuple(config["dilation_rate"])


def test_registered_names_channels_and_sources():
    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        assert name in backbone_names()
    assert get_backbone_spec("resnet18").feature_channels == (64, 128, 256, 512)
    assert get_backbone_spec("resnet34").feature_channels == (64, 128, 256, 512)
    assert get_backbone_spec("resnet50").feature_channels == (256, 512, 1024, 2048)
    assert get_backbone_spec("resnet101").feature_channels == (256, 512, 1024, 2048)
    assert get_backbone_spec("resnet34").imagenet_source is None
    assert "ResNet101" in get_backbone_spec("resnet101").imagenet_source


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("height,width", [(64, 64), (45, 67)])
def test_feature_shapes(output_stride, height, width):
    model = build_backbone("resnet18", output_stride=output_stride)
    assert model.get_layer("images").output.shape == (None, None, None, 3)
    features = model(random_images(2, height, width))
    heights = expected_sizes(height, output_stride)
    widths = expected_sizes(width, output_stride)
    assert [tuple(f.shape) for f in features] == [
        (2, h, w, c) for h, w, c in zip(heights, widths, (64, 128, 256, 512))
    ]


@pytest.mark.parametrize(
    "output_stride,expected",
    [
        (
            8,
            {
                "conv3_block1_1_conv": ((2, 2), (1, 1)),
                "conv4_block1_0_conv": ((1, 1), (1, 1)),
                "conv4_block1_1_conv": ((1, 1), (1, 1)),  # half rate
                "conv4_block1_2_conv": ((1, 1), (2, 2)),
                "conv4_block2_1_conv": ((1, 1), (2, 2)),
                "conv5_block1_0_conv": ((1, 1), (1, 1)),
                "conv5_block1_1_conv": ((1, 1), (2, 2)),  # half rate
                "conv5_block1_2_conv": ((1, 1), (4, 4)),
                "conv5_block2_1_conv": ((1, 1), (4, 4)),
            },
        ),
        (
            16,
            {
                "conv4_block1_1_conv": ((2, 2), (1, 1)),
                "conv4_block2_2_conv": ((1, 1), (1, 1)),
                "conv5_block1_0_conv": ((1, 1), (1, 1)),
                "conv5_block1_1_conv": ((1, 1), (1, 1)),
                "conv5_block1_2_conv": ((1, 1), (2, 2)),
                "conv5_block2_1_conv": ((1, 1), (2, 2)),
            },
        ),
        (
            32,
            {
                "conv4_block1_1_conv": ((2, 2), (1, 1)),
                "conv5_block1_0_conv": ((2, 2), (1, 1)),
                "conv5_block1_1_conv": ((2, 2), (1, 1)),
                "conv5_block2_2_conv": ((1, 1), (1, 1)),
            },
        ),
    ],
)
def test_basic_block_strides_and_dilation(output_stride, expected):
    model = build_backbone("resnet18", output_stride=output_stride)
    for name, settings in expected.items():
        assert conv_settings(model, name) == settings, name


def test_resnet50_weights_of_keras_applications_map_by_name(tmp_path):
    reference = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    randomize_batch_norm(reference)
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)

    ours = build_backbone("resnet50", output_stride=32, weights=path)
    assert weighted_layer_names(ours) == weighted_layer_names(reference)
    probe = keras.Model(
        reference.input,
        [reference.get_layer(n).output for n in APPLICATIONS_STAGE_OUTPUTS["resnet50"]],
    )
    images = random_images(1, 61, 45)
    expected = probe(keras.applications.resnet50.preprocess_input(images.copy()))
    for feature, reference_feature in zip(ours(images), expected):
        assert_close(feature, reference_feature)

    dilated = build_backbone("resnet50", output_stride=8, weights=path)
    features = dilated(images)
    assert [tuple(f.shape) for f in features] == [
        (1, 16, 12, 256),
        (1, 8, 6, 512),
        (1, 8, 6, 1024),
        (1, 8, 6, 2048),
    ]
    np.testing.assert_array_equal(
        to_numpy(dilated.get_layer("conv5_block3_3_conv").kernel),
        to_numpy(reference.get_layer("conv5_block3_3_conv").kernel),
    )
    # v1: the stride leaves the first 1x1 conv and the shortcut; rates go to the 3x3.
    assert conv_settings(dilated, "conv4_block1_0_conv") == ((1, 1), (1, 1))
    assert conv_settings(dilated, "conv4_block1_1_conv") == ((1, 1), (1, 1))
    assert conv_settings(dilated, "conv4_block1_2_conv") == ((1, 1), (1, 1))
    assert conv_settings(dilated, "conv4_block2_2_conv") == ((1, 1), (2, 2))
    assert conv_settings(dilated, "conv5_block1_1_conv") == ((1, 1), (1, 1))
    assert conv_settings(dilated, "conv5_block1_2_conv") == ((1, 1), (2, 2))
    assert conv_settings(dilated, "conv5_block3_2_conv") == ((1, 1), (4, 4))


def test_resnet50_loads_a_file_with_the_classifier_top(tmp_path):
    # The format convert_resnet50_tfjs writes: include_top=True, 1000 classes.
    reference = keras.applications.ResNet50(include_top=True, weights=None)
    randomize_batch_norm(reference, seed=1)
    path = str(tmp_path / "resnet50_top.weights.h5")
    reference.save_weights(path)
    ours = build_backbone("resnet50", output_stride=8, weights=path)
    for name in ("conv1_conv", "conv3_block2_2_bn", "conv5_block3_3_conv"):
        for ours_weight, reference_weight in zip(
            ours.get_layer(name).get_weights(), reference.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(ours_weight, reference_weight)


@pytest.mark.parametrize("as_preset", [False, True])
def test_resnet18_weights_of_keras_hub_map_by_name(tmp_path, as_preset):
    reference = hub_resnet((2, 2, 2, 2))
    randomize_batch_norm(reference)
    if as_preset:
        path = str(tmp_path / "resnet18_preset")
        reference.save_to_preset(path)
    else:
        path = str(tmp_path / "resnet18.weights.h5")
        reference.save_weights(path)

    ours = build_backbone("resnet18", output_stride=32, weights=path)
    assert sorted(resnet.hub_layer_name(n) for n in weighted_layer_names(ours)) == (
        weighted_layer_names(reference)
    )
    probe = keras.Model(
        reference.input, [reference.pyramid_outputs[f"P{i}"] for i in range(2, 6)]
    )
    images = random_images(2, 45, 61)
    expected = probe((images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
    for feature, reference_feature in zip(ours(images), expected):
        assert_close(feature, reference_feature)

    dilated = build_backbone("resnet18", output_stride=8, weights=path)
    assert [tuple(f.shape[1:3]) for f in dilated(images)] == [
        (12, 16),
        (6, 8),
        (6, 8),
        (6, 8),
    ]


def test_hub_layer_name():
    assert resnet.hub_layer_name("conv1_conv") == "conv1_conv"
    assert resnet.hub_layer_name("conv2_block1_1_bn") == "stack0_block0_1_bn"
    assert resnet.hub_layer_name("conv5_block3_0_conv") == "stack3_block2_0_conv"


@pytest.mark.parametrize(
    "saved_blocks,backbone,message",
    [
        # ResNet-18 weights into ResNet-50: the stem conv has no bias there.
        (
            (2, 2, 2, 2),
            "resnet50",
            r"'conv1_conv'.*\(7, 7, 3, 64\), \(64,\)\].*\[\(7, 7, 3, 64\)\]",
        ),
        ((2, 2, 2, 2), "resnet34", r"no weights for layer 'conv2_block3_1_conv'"),
        # A deeper net holds every layer of ResNet-18 and more.
        (
            (3, 4, 6, 3),
            "resnet18",
            r"such as 'stack0_block2_1_conv'.*backbone 'resnet18'",
        ),
    ],
)
def test_wrong_file_raises_clear_error(tmp_path, saved_blocks, backbone, message):
    path = str(tmp_path / "other.weights.h5")
    hub_resnet(saved_blocks).save_weights(path)
    with pytest.raises(ValueError, match=message):
        build_backbone(backbone, output_stride=8, weights=path)


def test_not_a_weights_file_raises(tmp_path):
    path = tmp_path / "notes.weights.h5"
    path.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 weights file"):
        build_backbone("resnet18", weights=str(path))
    with pytest.raises(
        ValueError, match="neither None, 'imagenet' nor an existing file"
    ):
        build_backbone("resnet18", weights=str(tmp_path / "missing.weights.h5"))


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable")


def test_imagenet_without_network_resnet50(monkeypatch):
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setattr(file_utils, "get_file", _no_network)
    with pytest.raises(ValueError, match="backbone_weights=None") as info:
        build_backbone("resnet50", weights="imagenet")
    assert "keras.applications.ResNet50" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_imagenet_without_network_resnet18(monkeypatch):
    import keras_hub

    monkeypatch.setattr(
        keras_hub.models.ResNetBackbone, "from_preset", classmethod(_no_network)
    )
    with pytest.raises(ValueError, match="backbone_weights=None") as info:
        build_backbone("resnet18", weights="imagenet")
    assert "resnet_18_imagenet" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_resnet34_has_no_imagenet_download():
    with pytest.raises(ValueError, match="No ImageNet download exists"):
        build_backbone("resnet34", weights="imagenet")


@pytest.mark.parametrize("name,stem_channels", [("resnet18", 128), ("resnet50", 128)])
def test_deep_stem(name, stem_channels):
    model = build_backbone(name, output_stride=8, stem="deep")
    assert tuple(model.get_layer("conv1_1_conv").kernel.shape) == (3, 3, 3, 64)
    assert tuple(model.get_layer("conv1_2_conv").kernel.shape) == (3, 3, 64, 64)
    assert tuple(model.get_layer("conv1_3_conv").kernel.shape) == (
        3,
        3,
        64,
        stem_channels,
    )
    assert model.get_layer("conv2_block1_0_conv").kernel.shape[2] == stem_channels
    features = model(random_images(1, 33, 40))
    channels = get_backbone_spec(name).feature_channels
    assert [tuple(f.shape) for f in features] == [
        (1, 9, 10, channels[0]),
        (1, 5, 5, channels[1]),
        (1, 5, 5, channels[2]),
        (1, 5, 5, channels[3]),
    ]


def test_deep_stem_rejects_weights(tmp_path):
    with pytest.raises(ValueError, match="stem='standard'"):
        build_backbone("resnet50", stem="deep", weights="imagenet")


def test_invalid_options():
    with pytest.raises(ValueError, match="stem="):
        build_backbone("resnet18", stem="vd")
    with pytest.raises(TypeError, match="unexpected options"):
        build_backbone("resnet18", width=2)
    with pytest.raises(ValueError, match="output_stride"):
        resnet.build_resnet18(output_stride=4)


def test_config_round_trip_keeps_outputs():
    model = build_backbone("resnet18", output_stride=16)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    images = random_images(1, 40, 36)
    for feature, clone_feature in zip(model(images), clone(images)):
        np.testing.assert_allclose(
            to_numpy(clone_feature), to_numpy(feature), atol=1e-5
        )


def test_mixed_precision_policy(tmp_path):
    path = str(tmp_path / "resnet18.weights.h5")
    hub_resnet((2, 2, 2, 2)).save_weights(path)
    model = build_backbone(
        "resnet18", output_stride=8, weights=path, dtype="mixed_bfloat16"
    )
    for layer in model.layers[1:]:
        assert layer.dtype_policy.name == "mixed_bfloat16", layer.name
    for variable in model.weights:
        assert variable.dtype == "float32"
    features = model(random_images(1, 40, 40))
    reference = build_backbone("resnet18", output_stride=8, weights=path)(
        random_images(1, 40, 40)
    )
    for feature, reference_feature in zip(features, reference):
        assert keras.backend.standardize_dtype(feature.dtype) == "bfloat16"
        feature = to_numpy(keras.ops.cast(feature, "float32"))
        reference_feature = to_numpy(reference_feature)
        # bfloat16 keeps ~3 significant digits; deep nets accumulate a few %.
        error = np.abs(feature - reference_feature).mean()
        assert error < 0.05 * np.abs(reference_feature).mean() + 1e-3


@pytest.mark.slow
def test_resnet101_weights_of_keras_applications_map_by_name(tmp_path):
    reference = keras.applications.ResNet101(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    randomize_batch_norm(reference)
    path = str(tmp_path / "resnet101.weights.h5")
    reference.save_weights(path)
    ours = build_backbone("resnet101", output_stride=32, weights=path)
    assert weighted_layer_names(ours) == weighted_layer_names(reference)
    probe = keras.Model(
        reference.input,
        [
            reference.get_layer(n).output
            for n in APPLICATIONS_STAGE_OUTPUTS["resnet101"]
        ],
    )
    images = random_images(1, 64, 64)
    expected = probe(keras.applications.resnet.preprocess_input(images.copy()))
    for feature, reference_feature in zip(ours(images), expected):
        assert_close(feature, reference_feature)
    dilated = build_backbone("resnet101", output_stride=8, weights=path)
    assert [tuple(f.shape) for f in dilated(images)] == [
        (1, 16, 16, 256),
        (1, 8, 8, 512),
        (1, 8, 8, 1024),
        (1, 8, 8, 2048),
    ]


@pytest.mark.slow
def test_resnet34_weights_of_keras_hub_map_by_name(tmp_path):
    reference = hub_resnet((3, 4, 6, 3))
    randomize_batch_norm(reference)
    path = str(tmp_path / "resnet34.weights.h5")
    reference.save_weights(path)
    ours = build_backbone("resnet34", output_stride=32, weights=path)
    probe = keras.Model(
        reference.input, [reference.pyramid_outputs[f"P{i}"] for i in range(2, 6)]
    )
    images = random_images(1, 64, 64)
    expected = probe((images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
    for feature, reference_feature in zip(ours(images), expected):
        assert_close(feature, reference_feature)
