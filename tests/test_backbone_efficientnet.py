"""Dilated EfficientNet backbones: shapes, dilation layout, weight mapping, errors."""

import functools

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from keras_sanet.backbones import efficientnet
from keras_sanet.backbones.registry import backbone_names
from keras_sanet.backbones.registry import build_backbone
from keras_sanet.backbones.registry import get_backbone_spec
from keras_sanet.layers import Conv2D
from keras_sanet.layers import DepthwiseConv2D
from tests.helpers import random_images
from tests.helpers import to_numpy

B0_FEATURE_LAYERS = ["block2b_add", "block3b_add", "block5c_add", "top_activation"]


@functools.lru_cache(maxsize=None)
def _random_b0(output_stride):
    """One randomly initialised B0 per output stride, shared by the shape tests."""
    return build_backbone("efficientnetb0", output_stride=output_stride)


def _reference(application=keras.applications.EfficientNetB0):
    return application(include_top=False, weights=None, input_shape=(None, None, 3))


def _randomize(model, seed=1):
    """Non-trivial BN statistics and input normalisation, so a lost weight shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels),
                    rng.normal(0.0, 0.2, channels),
                    rng.normal(0.0, 0.2, channels),
                    rng.uniform(0.5, 1.5, channels),
                ]
            )
        elif isinstance(layer, keras.layers.Normalization):
            layer.set_weights(
                [
                    np.array([0.485, 0.456, 0.406]),
                    np.array([0.229, 0.224, 0.225]) ** 2,
                    np.array(1000.0),
                ]
            )
            layer.finalize_state()
    return model


def _save(model, directory, file_format):
    """Saves as Keras 3 `.weights.h5` or legacy `.h5` (the ImageNet download format)."""
    if file_format == "keras3":
        path = str(directory / "reference.weights.h5")
        model.save_weights(path)
    else:
        path = str(directory / "reference_notop.h5")
        with h5py.File(path, "w") as file:
            legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return path


def _expected_sizes(height, width, output_stride):
    """Every stride-2 step maps n to n // 2 (keras.applications' padding)."""
    strides = [4, 8, min(16, output_stride), min(32, output_stride)]
    return [(height // s, width // s) for s in strides]


def test_registered_variants_and_channels():
    names = [f"efficientnetb{i}" for i in range(8)]
    assert set(names) <= set(backbone_names())
    assert get_backbone_spec("efficientnetb0").feature_channels == (24, 40, 112, 1280)
    assert get_backbone_spec("efficientnetb7").feature_channels == (48, 80, 224, 2560)
    assert get_backbone_spec("efficientnetb3").feature_channels == (32, 48, 136, 1536)
    assert (
        get_backbone_spec("efficientnetb7").imagenet_source
        == "keras.applications.EfficientNetB7"
    )


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_shapes_including_odd_sizes(output_stride):
    backbone = _random_b0(output_stride)
    assert backbone.input.name == "images"
    assert tuple(backbone.input.shape) == (None, None, None, 3)
    assert backbone.output_names == B0_FEATURE_LAYERS
    for height, width in [(64, 64), (65, 47)]:
        features = backbone(random_images(2, height, width))
        sizes = _expected_sizes(height, width, output_stride)
        assert [tuple(f.shape) for f in features] == [
            (2, h, w, c) for (h, w), c in zip(sizes, (24, 40, 112, 1280))
        ]
        assert all(np.isfinite(to_numpy(f)).all() for f in features)


@pytest.mark.parametrize(
    "output_stride, expected",
    [
        # name: (strides, dilation_rate, padding of its ZeroPadding2D or None)
        (
            8,
            {
                "block3a_dwconv": (2, 1, ((1, 2), (1, 2))),
                "block4a_dwconv": (1, 1, ((1, 1), (1, 1))),
                "block4c_dwconv": (1, 2, None),
                "block5a_dwconv": (1, 2, None),
                "block6a_dwconv": (1, 2, ((4, 4), (4, 4))),
                "block6d_dwconv": (1, 4, None),
                "block7a_dwconv": (1, 4, None),
            },
        ),
        (
            16,
            {
                "block4a_dwconv": (2, 1, ((0, 1), (0, 1))),
                "block5c_dwconv": (1, 1, None),
                "block6a_dwconv": (1, 1, ((2, 2), (2, 2))),
                "block6b_dwconv": (1, 2, None),
                "block7a_dwconv": (1, 2, None),
            },
        ),
        (
            32,
            {
                "block6a_dwconv": (2, 1, ((1, 2), (1, 2))),
                "block7a_dwconv": (1, 1, None),
            },
        ),
    ],
)
def test_dilation_layout(output_stride, expected):
    backbone = _random_b0(output_stride)
    for name, (stride, rate, padding) in expected.items():
        layer = backbone.get_layer(name)
        assert tuple(layer.strides) == (stride, stride), name
        assert tuple(layer.dilation_rate) == (rate, rate), name
        if padding is not None:
            pad = backbone.get_layer(name + "_pad").padding
            assert tuple(tuple(p) for p in pad) == padding, name
            assert layer.padding == "valid"
        else:
            assert layer.padding == "same"


def test_dilation_plan_halves_the_rate_of_each_first_block():
    stages = {
        stage: {"letters": list("ab"), "kernel": 3, "stride": stride}
        for stage, stride in zip(range(1, 8), (1, 2, 2, 2, 1, 2, 1))
    }
    assert efficientnet.dilation_plan(stages, 32) == {}
    assert efficientnet.dilation_plan(stages, 16) == {
        "block6a_dwconv": (1, 1),
        "block6b_dwconv": (1, 2),
        "block7a_dwconv": (1, 2),
        "block7b_dwconv": (1, 2),
    }
    plan = efficientnet.dilation_plan(stages, 8)
    assert plan["block4a_dwconv"] == (1, 1)
    assert plan["block4b_dwconv"] == plan["block5a_dwconv"] == (1, 2)
    assert plan["block6a_dwconv"] == (1, 2)
    assert plan["block6b_dwconv"] == plan["block7b_dwconv"] == (1, 4)
    assert "block3a_dwconv" not in plan


def _set_convolution_switches(model, on):
    """Every switch of our Conv2D / DepthwiseConv2D on (their own arithmetic) or off
    (Keras' convolutions)."""
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            layer.pointwise_as_matmul = layer.filter_gradient_as_matmul = on
        elif isinstance(layer, DepthwiseConv2D):
            layer.depthwise_as_multiply_adds = on


@pytest.mark.parametrize("output_stride", [8, 32])
def test_every_convolution_is_ours_and_matches_keras(output_stride):
    backbone = _randomize(build_backbone("efficientnetb0", output_stride=output_stride))
    counts = {
        cls: sum(type(layer) is cls for layer in backbone.layers)
        for cls in (Conv2D, DepthwiseConv2D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    }
    assert counts == {
        Conv2D: 65, DepthwiseConv2D: 16, keras.layers.Conv2D: 0, keras.layers.DepthwiseConv2D: 0
    }
    images = random_images(1, 50, 42, seed=5)  # odd multiples: every padding case
    features = {}
    for on in (True, False):  # ours is the default on JAX only; right everywhere
        _set_convolution_switches(backbone, on)
        features[on] = [to_numpy(f) for f in backbone(images)]
    # The dilated stages (rates 2 and 4 at OS8) run through the multiply-adds too.
    for ours, theirs in zip(features[True], features[False]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("file_format", ["keras3", "legacy_h5"])
def test_weight_mapping_matches_keras_applications(tmp_path, file_format):
    reference = _randomize(_reference())
    path = _save(reference, tmp_path, file_format)
    probe = keras.Model(
        reference.input, [reference.get_layer(n).output for n in B0_FEATURE_LAYERS]
    )
    images = random_images(1, 64, 64, seed=3)
    expected = [to_numpy(f) for f in probe(images)]
    # A fresh network differs, so agreement below proves the weights moved.
    assert np.abs(expected[0]).max() > 0.1

    backbone = build_backbone("efficientnetb0", output_stride=32, weights=path)
    for name, ours, theirs in zip(B0_FEATURE_LAYERS, backbone(images), expected):
        np.testing.assert_allclose(
            to_numpy(ours), theirs, rtol=1e-4, atol=1e-4, err_msg=name
        )

    dilated = build_backbone("efficientnetb0", output_stride=8, weights=path)
    features = dilated(images)
    assert [tuple(f.shape[1:3]) for f in features] == [(16, 16), (8, 8), (8, 8), (8, 8)]
    # Stages before the first dilated one are untouched.
    for ours, theirs in zip(features[:2], expected[:2]):
        np.testing.assert_allclose(to_numpy(ours), theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "file_format, held", [("keras3", "'conv2d_4'"), ("legacy_h5", "'block1b_dwconv'")]
)
def test_weights_of_another_variant_raise_a_clear_error(tmp_path, file_format, held):
    b1 = _reference(keras.applications.EfficientNetB1)
    path = _save(b1, tmp_path, file_format)
    with pytest.raises(ValueError) as info:
        build_backbone("efficientnetb0", output_stride=32, weights=path)
    message = str(info.value)
    assert (
        "Layer 'block2a_expand_conv' expects weights of shapes [(1, 1, 16, 96)]"
        in message
    )
    assert f"for {held}" in message
    assert "backbone_weights=None" in message


def test_imagenet_offline_names_the_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ValueError, match="backbone_weights=None") as info:
        build_backbone("efficientnetb0", output_stride=16, weights="imagenet")
    assert "keras.applications.EfficientNetB0" in str(info.value)
    assert "local weights file" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_imagenet_from_the_keras_cache_matches_keras_applications(
    tmp_path, monkeypatch
):
    """The "imagenet" path, offline: both downloads answer with a local file."""
    path = _save(_randomize(_reference()), tmp_path, "legacy_h5")
    requested = []

    def cached_file(file_name, origin=None, **kwargs):
        requested.append((file_name, origin))
        return path

    monkeypatch.setattr(keras.utils, "get_file", cached_file)
    # keras.applications downloads through the private module, not keras.utils.
    monkeypatch.setattr(file_utils, "get_file", cached_file)
    backbone = build_backbone("efficientnetb0", output_stride=32, weights="imagenet")
    assert requested[0] == (
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
    )
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet", input_shape=(None, None, 3)
    )
    # keras.applications adds a Rescaling by 1/sqrt(std) for ImageNet weights only.
    assert sum(isinstance(x, keras.layers.Rescaling) for x in backbone.layers) == 2
    probe = keras.Model(
        reference.input, [reference.get_layer(n).output for n in B0_FEATURE_LAYERS]
    )
    images = random_images(1, 40, 40, seed=4)
    for ours, theirs in zip(backbone(images), probe(images)):
        np.testing.assert_allclose(
            to_numpy(ours), to_numpy(theirs), rtol=1e-4, atol=1e-4
        )


def test_bad_arguments_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="nor an existing file"):
        build_backbone("efficientnetb0", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="output_stride=4"):
        build_backbone("efficientnetb0", output_stride=4)
    with pytest.raises(ValueError, match="takes no extra options"):
        build_backbone("efficientnetb0", stem="deep")
    with pytest.raises(ValueError, match="Unknown EfficientNet variant"):
        efficientnet.build_efficientnet("b9")


def test_mixed_bfloat16_builds_and_runs():
    backbone = build_backbone("efficientnetb0", output_stride=8, dtype="mixed_bfloat16")
    policies = {
        layer.dtype_policy.name
        for layer in backbone.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }
    assert policies == {"mixed_bfloat16"}
    features = backbone(random_images(1, 33, 32))
    assert [tuple(f.shape) for f in features] == [
        (1, 8, 8, 24),
        (1, 4, 4, 40),
        (1, 4, 4, 112),
        (1, 4, 4, 1280),
    ]
    for feature in features:
        assert keras.backend.standardize_dtype(feature.dtype) == "bfloat16"
        assert np.isfinite(to_numpy(feature).astype("float32")).all()
    # Variables stay float32 under mixed precision.
    assert backbone.get_layer("stem_conv").kernel.dtype == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("variant", [f"b{i}" for i in range(1, 7)])
def test_channels_of_every_variant(variant):
    backbone = efficientnet.build_efficientnet(variant, output_stride=16)
    channels = tuple(o.shape[-1] for o in backbone.outputs)
    assert channels == efficientnet.feature_channels(variant)


@pytest.mark.slow
def test_b7_at_output_stride_8():
    backbone = build_backbone("efficientnetb7", output_stride=8)
    features = backbone(random_images(1, 65, 47))
    assert [tuple(f.shape) for f in features] == [
        (1, 16, 11, 48),
        (1, 8, 5, 80),
        (1, 8, 5, 224),
        (1, 8, 5, 2560),
    ]
    assert backbone.get_layer("block6a_dwconv").dilation_rate == (2, 2)
    assert backbone.get_layer("block7d_dwconv").dilation_rate == (4, 4)
