"""EfficientNet-Lite backbones: shapes, dilation, torch weight conversion and numerics."""

import collections
import hashlib
import math

import keras
import numpy as np
import pytest

from keras_sanet.backbones import build_backbone
from keras_sanet.backbones import convert_torch_backbones
from keras_sanet.backbones import get_backbone_spec
from keras_sanet.backbones.efficientnet_lite import efficientnet_lite_backbone
from keras_sanet.backbones.efficientnet_lite import efficientnet_lite_classifier
from keras_sanet.backbones.efficientnet_lite import round_filters
from tests.helpers import random_images
from tests.helpers import to_numpy

# Google's efficientnet_lite_builder, written out independently of the module:
# kernel, stride, expansion, output channels, repeats; (width, depth) per variant.
STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]
MULTIPLIERS = {
    "efficientnetlite0": (1.0, 1.0),
    "efficientnetlite1": (1.0, 1.1),
    "efficientnetlite2": (1.1, 1.2),
}
CHANNELS = {
    "efficientnetlite0": (24, 40, 112, 320),
    "efficientnetlite1": (24, 40, 112, 320),
    "efficientnetlite2": (24, 48, 120, 352),
}
# Pinned from the real state dicts: number of keys and of blocks.
REAL_FILES = {
    "efficientnetlite0": (296, 16),
    "efficientnetlite1": (386, 21),
    "efficientnetlite2": (386, 21),
}


def lite_blocks(variant):
    """(kernel, stride, expansion, in, out) per block."""
    width, depth = MULTIPLIERS[variant]
    blocks, in_channels = [], 32
    for index, (kernel, stride, expansion, out, repeats) in enumerate(STAGES):
        if index not in (0, len(STAGES) - 1):  # Lite keeps the first and last stages
            repeats = int(math.ceil(depth * repeats))
        out = round_filters(out, width)
        for r in range(repeats):
            blocks.append(
                (kernel, stride if r == 0 else 1, expansion, in_channels, out)
            )
            in_channels = out
    return blocks


def _expected_shapes(variant, height, width, output_stride):
    shapes = []
    for stride, channels in zip((4, 8, 16, 32), CHANNELS[variant]):
        h, w = height, width
        for _ in range(int(math.log2(min(stride, output_stride)))):
            h, w = -(-h // 2), -(-w // 2)
        shapes.append((1, h, w, channels))
    return shapes


def _schedule(variant, output_stride):
    """(stride, dilation) per block: the rule of the task, spelled out."""
    stride_blocks = [i for i, b in enumerate(lite_blocks(variant)) if b[1] == 2]
    schedule = [(b[1], 1) for b in lite_blocks(variant)]
    if output_stride <= 16:  # the 192-channel stage (the last stride-2 block) dilates
        last = stride_blocks[-1]
        schedule[last] = (1, 1)
        schedule[last + 1 :] = [(1, 2)] * (len(schedule) - last - 1)
    if output_stride == 8:  # the 80-channel stage too, and the rate doubles after it
        second = stride_blocks[-2]
        last = stride_blocks[-1]
        schedule[second] = (1, 1)
        schedule[second + 1 : last + 1] = [(1, 2)] * (last - second)
        schedule[last + 1 :] = [(1, 4)] * (len(schedule) - last - 1)
    return schedule


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("variant", sorted(MULTIPLIERS))
def test_registry_and_block_layout(variant):
    spec = get_backbone_spec(variant)
    assert spec.feature_channels == CHANNELS[variant]
    assert spec.imagenet_source is None
    assert len(lite_blocks(variant)) == REAL_FILES[variant][1]


@pytest.mark.parametrize(
    "variant, output_stride",
    [
        ("efficientnetlite0", 8),
        ("efficientnetlite0", 16),
        ("efficientnetlite0", 32),
        ("efficientnetlite2", 8),
    ],
)
def test_dilation_and_static_shapes_for_odd_and_even_sizes(variant, output_stride):
    model = build_backbone(variant, output_stride=output_stride)
    for index, (stride, dilation) in enumerate(_schedule(variant, output_stride)):
        layer = model.get_layer(f"blocks_{index}_depthwise_conv")
        assert tuple(layer.strides) == (stride, stride)
        assert tuple(layer.dilation_rate) == (dilation, dilation)
        assert layer.padding == "same"
    for size in [(32, 32), (37, 45), (65, 33)]:
        specs = model.compute_output_spec(keras.KerasTensor((1, *size, 3)))
        assert [tuple(s.shape) for s in specs] == _expected_shapes(
            variant, *size, output_stride
        )


def test_forward_shapes_on_an_odd_input():
    # output strides 8 and 32 run forward in the torch comparisons below
    model = build_backbone("efficientnetlite1", output_stride=16)
    outputs = model(random_images(1, 35, 41))
    assert [tuple(o.shape) for o in outputs] == _expected_shapes(
        "efficientnetlite1", 35, 41, 16
    )
    assert all(np.isfinite(to_numpy(o)).all() for o in outputs)


def test_mixed_bfloat16_policy_runs():
    model = build_backbone("efficientnetlite0", output_stride=8, dtype="mixed_bfloat16")
    outputs = model(random_images(1, 32, 32))
    assert all(keras.backend.standardize_dtype(o.dtype) == "bfloat16" for o in outputs)
    assert all(w.dtype == "float32" for w in model.weights)
    assert all(np.isfinite(to_numpy(o).astype("float32")).all() for o in outputs)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="convert_torch_backbones efficientnetlite2"):
        build_backbone("efficientnetlite2", weights="imagenet")
    with pytest.raises(ValueError, match="output_stride=64"):
        build_backbone("efficientnetlite0", output_stride=64)
    with pytest.raises(
        ValueError, match="Unknown EfficientNet-Lite variant 'efficientnetlite7'"
    ):
        efficientnet_lite_backbone("efficientnetlite7")


# ---------------------------------------------------------------- conversion


def torch_state_dict_shapes(variant):
    """Key -> shape of the PyTorch port's state dict, from the block table."""
    shapes = collections.OrderedDict()

    def bn(prefix, channels):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{suffix}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["_conv_stem.weight"] = (32, 3, 3, 3)
    bn("_bn0", 32)
    for i, (kernel, _, expansion, in_channels, out) in enumerate(lite_blocks(variant)):
        hidden = in_channels * expansion
        if expansion != 1:
            shapes[f"_blocks.{i}._expand_conv.weight"] = (hidden, in_channels, 1, 1)
            bn(f"_blocks.{i}._bn0", hidden)
        shapes[f"_blocks.{i}._depthwise_conv.weight"] = (hidden, 1, kernel, kernel)
        bn(f"_blocks.{i}._bn1", hidden)
        shapes[f"_blocks.{i}._project_conv.weight"] = (out, hidden, 1, 1)
        bn(f"_blocks.{i}._bn2", out)
    shapes["_conv_head.weight"] = (1280, lite_blocks(variant)[-1][-1], 1, 1)
    bn("_bn1", 1280)
    shapes["_fc.weight"] = (1000, 1280)
    shapes["_fc.bias"] = (1000,)
    return shapes


def fake_state_dict(variant, seed=0):
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for key, shape in torch_state_dict_shapes(variant).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(100, "int64")
        elif key.endswith("running_var") or (
            key.endswith(".weight") and len(shape) == 1
        ):
            state[key] = rng.uniform(0.5, 1.5, shape).astype("float32")
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(
                "float32"
            )
    return state


def test_description_matches_the_real_files():
    for variant, (keys, _) in REAL_FILES.items():
        assert len(torch_state_dict_shapes(variant)) == keys
    lite2 = torch_state_dict_shapes("efficientnetlite2")
    assert lite2["_blocks.20._project_conv.weight"] == (352, 1248, 1, 1)
    assert lite2["_blocks.7._depthwise_conv.weight"] == (288, 1, 3, 3)
    assert torch_state_dict_shapes("efficientnetlite0")[
        "_blocks.15._depthwise_conv.weight"
    ] == (1152, 1, 3, 3)


def _write_pth(state, path):
    torch = pytest.importorskip("torch")
    torch.save(
        collections.OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()),
        path,
        _use_new_zipfile_serialization=False,  # as the real files
    )
    return path


@pytest.fixture(scope="module")
def converted_lite0(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lite0")
    state = fake_state_dict("efficientnetlite0")
    pth = _write_pth(state, str(folder / "efficientnet-lite0-fake.pth"))
    sha256 = hashlib.sha256(open(pth, "rb").read()).hexdigest()
    output = convert_torch_backbones.convert_efficientnet_lite(
        pth, str(folder / "lite0.weights.h5"), "efficientnetlite0", sha256
    )
    return state, pth, output


def test_converted_values_land_in_the_right_layers(converted_lite0):
    state, _, output = converted_lite0
    model = build_backbone("efficientnetlite0", output_stride=8, weights=output)
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("stem_conv").kernel),
        state["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )
    dw = model.get_layer("blocks_11_depthwise_conv").kernel
    assert tuple(dw.shape) == (5, 5, 672, 1)
    np.testing.assert_array_equal(
        to_numpy(dw), state["_blocks.11._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("blocks_4_expand_conv").kernel),
        state["_blocks.4._expand_conv.weight"].transpose(2, 3, 1, 0),
    )
    for layer_name, prefix in [
        ("blocks_15_project_bn", "_blocks.15._bn2"),
        ("blocks_0_depthwise_bn", "_blocks.0._bn1"),
        ("blocks_3_expand_bn", "_blocks.3._bn0"),
    ]:
        bn = model.get_layer(layer_name)
        for variable, suffix in zip(
            (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance),
            ("weight", "bias", "running_mean", "running_var"),
        ):
            np.testing.assert_array_equal(
                to_numpy(variable), state[f"{prefix}.{suffix}"]
            )
    classifier = efficientnet_lite_classifier("efficientnetlite0")
    classifier.load_weights(output)
    np.testing.assert_array_equal(
        to_numpy(classifier.get_layer("head_bn").moving_variance),
        state["_bn1.running_var"],
    )
    np.testing.assert_array_equal(
        to_numpy(classifier.get_layer("classifier").kernel), state["_fc.weight"].T
    )


def _torch_reference(variant, state, images, schedule):
    """The PyTorch port's forward (TF 'same' padding) in plain torch: (C2..C5, logits)."""
    import torch
    import torch.nn.functional as F

    s = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) - 127.0) / 128.0

    def bn(x, p):
        return F.batch_norm(
            x,
            s[p + ".running_mean"],
            s[p + ".running_var"],
            s[p + ".weight"],
            s[p + ".bias"],
            False,
            0.0,
            1e-3,
        )

    def conv_same(x, w, stride=1, dilation=1, groups=1):
        k = (w.shape[-1] - 1) * dilation + 1
        pads = []
        for n in (x.shape[3], x.shape[2]):
            total = max((-(-n // stride) - 1) * stride + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(
            F.pad(x, pads), w, stride=stride, dilation=dilation, groups=groups
        )

    x = F.relu6(bn(conv_same(x, s["_conv_stem.weight"], 2), "_bn0"))
    blocks = lite_blocks(variant)
    taps = [
        max(i for i, b in enumerate(blocks) if b[4] == c) for c in CHANNELS[variant]
    ]
    features = []
    for i, (stride, dilation) in enumerate(schedule):
        p, y = f"_blocks.{i}", x
        if f"{p}._expand_conv.weight" in s:
            y = F.relu6(bn(F.conv2d(y, s[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
        w = s[f"{p}._depthwise_conv.weight"]
        y = F.relu6(
            bn(conv_same(y, w, stride, dilation, groups=w.shape[0]), f"{p}._bn1")
        )
        y = bn(F.conv2d(y, s[f"{p}._project_conv.weight"]), f"{p}._bn2")
        x = x + y if stride == 1 and x.shape[1] == y.shape[1] else y
        if i in taps:
            features.append(x.permute(0, 2, 3, 1).numpy())
    x = F.relu6(bn(F.conv2d(x, s["_conv_head.weight"]), "_bn1"))
    logits = F.linear(x.mean(dim=(2, 3)), s["_fc.weight"], s["_fc.bias"])
    return features, logits.numpy()


@pytest.mark.parametrize("output_stride", [8, 32])
def test_features_match_a_torch_forward(converted_lite0, output_stride):
    state, _, output = converted_lite0
    images = random_images(1, 33, 47, seed=1)
    expected, _ = _torch_reference(
        "efficientnetlite0",
        state,
        images,
        _schedule("efficientnetlite0", output_stride),
    )
    model = build_backbone(
        "efficientnetlite0", output_stride=output_stride, weights=output
    )
    for got, want in zip(model(images), expected):
        got = to_numpy(got)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_lite2_classifier_logits_match_a_torch_forward(tmp_path):
    # Lite2 checks the width-scaled channels and the depth-scaled block count.
    state = fake_state_dict("efficientnetlite2", seed=3)
    pth = _write_pth(state, str(tmp_path / "efficientnet-lite2-fake.pth"))
    output = str(tmp_path / "lite2.weights.h5")
    convert_torch_backbones.main(["efficientnetlite2", pth, output])
    images = random_images(1, 35, 29, seed=2)
    _, expected = _torch_reference(
        "efficientnetlite2", state, images, _schedule("efficientnetlite2", 32)
    )
    classifier = efficientnet_lite_classifier("efficientnetlite2")
    classifier.load_weights(output)
    got = to_numpy(classifier(images))
    np.testing.assert_allclose(
        got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_converter_errors(converted_lite0, tmp_path):
    state, pth, output = converted_lite0
    with pytest.raises(
        ValueError, match=r"sha256 [0-9a-f]{64}, expected f{64}.*re-download"
    ):
        convert_torch_backbones.convert_efficientnet_lite(
            pth, str(tmp_path / "a.weights.h5"), "efficientnetlite0", "f" * 64
        )
    # a Lite0 file is too shallow and too narrow for Lite2
    lite2 = efficientnet_lite_classifier("efficientnetlite2")
    with pytest.raises(ValueError, match="another variant|no key"):
        convert_torch_backbones.state_dict_to_model(
            state, lite2, convert_torch_backbones.efficientnet_lite_torch_prefix
        )
    with pytest.raises(
        ValueError, match="holds weights of backbone 'efficientnetlite0'"
    ):
        build_backbone("efficientnetlite2", weights=output)
    with pytest.raises(ValueError, match="Cannot convert backbone 'resnet50'"):
        convert_torch_backbones.convert("resnet50", pth, str(tmp_path / "b.weights.h5"))
