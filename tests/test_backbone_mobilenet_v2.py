"""MobileNetV2 backbone: shapes, dilation, torchvision weight conversion and numerics."""

import collections
import hashlib

import keras
import numpy as np
import pytest

from keras_sanet.backbones import build_backbone
from keras_sanet.backbones import convert_torch_backbones
from keras_sanet.backbones import get_backbone_spec
from keras_sanet.backbones.mobilenet_v2 import dilated_block_schedule
from keras_sanet.backbones.mobilenet_v2 import mobilenet_v2_backbone
from keras_sanet.backbones.mobilenet_v2 import mobilenet_v2_classifier
from tests.helpers import random_images
from tests.helpers import to_numpy

CHANNELS = [24, 32, 96, 320]
# torchvision's table (expansion, channels, repeats, stride), written out independently
# of the module so that the key layout is checked against the real one.
TORCHVISION_TABLE = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _ceil_div(size, stride):
    return -(-size // stride)


def _expected_shapes(height, width, output_stride):
    strides = [4, 8, min(16, output_stride), min(32, output_stride)]
    sizes = []
    for stride in strides:
        h, w = height, width
        for _ in range(int(np.log2(stride))):
            h, w = _ceil_div(h, 2), _ceil_div(w, 2)
        sizes.append((h, w))
    return [(1, h, w, c) for (h, w), c in zip(sizes, CHANNELS)]


# ---------------------------------------------------------------- architecture


def test_registry_entry():
    spec = get_backbone_spec("mobilenetv2")
    assert spec.feature_channels == tuple(CHANNELS)
    assert spec.imagenet_source is None
    assert spec.builder is mobilenet_v2_backbone


SCHEDULES = {
    # blocks 1..17: the stride-2 blocks are 2, 4, 7 and 14
    32: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (2, 1)]
    + [(1, 1)] * 6
    + [(2, 1)]
    + [(1, 1)] * 3,
    16: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (2, 1)]
    + [(1, 1)] * 6
    + [(1, 1)]
    + [(1, 2)] * 3,
    8: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (1, 1)]
    + [(1, 2)] * 6
    + [(1, 2)]
    + [(1, 4)] * 3,
}


def _block_strides():
    return [s if r == 0 else 1 for _, _, n, s in TORCHVISION_TABLE for r in range(n)]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_dilation_and_static_shapes_for_odd_and_even_sizes(output_stride):
    expected = SCHEDULES[output_stride]
    assert dilated_block_schedule(_block_strides(), output_stride) == expected
    model = build_backbone("mobilenetv2", output_stride=output_stride)
    for index, (stride, dilation) in enumerate(expected, start=1):
        layer = model.get_layer(f"features_{index}_depthwise_conv")
        assert tuple(layer.strides) == (stride, stride)
        assert tuple(layer.dilation_rate) == (dilation, dilation)
        # stride-2 convolutions pad symmetrically, as torch does
        assert layer.padding == ("valid" if stride == 2 else "same")
    for size in [(32, 32), (37, 45), (65, 33)]:
        specs = model.compute_output_spec(keras.KerasTensor((1, *size, 3)))
        assert [tuple(s.shape) for s in specs] == _expected_shapes(*size, output_stride)


def test_forward_shapes_on_an_odd_input():
    # output strides 8 and 32 run forward in the torch comparisons below
    model = build_backbone("mobilenetv2", output_stride=16)
    outputs = model(random_images(1, 35, 41))
    assert [tuple(o.shape) for o in outputs] == _expected_shapes(35, 41, 16)
    assert all(np.isfinite(to_numpy(o)).all() for o in outputs)


def test_mixed_bfloat16_policy_runs():
    model = build_backbone("mobilenetv2", output_stride=16, dtype="mixed_bfloat16")
    outputs = model(random_images(1, 32, 32))
    assert all(keras.backend.standardize_dtype(o.dtype) == "bfloat16" for o in outputs)
    assert all(w.dtype == "float32" for w in model.weights)
    assert all(np.isfinite(to_numpy(o).astype("float32")).all() for o in outputs)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="convert_torch_backbones mobilenetv2"):
        build_backbone("mobilenetv2", weights="imagenet")
    with pytest.raises(ValueError, match="output_stride=4"):
        build_backbone("mobilenetv2", output_stride=4)
    with pytest.raises(ValueError, match="neither None"):
        build_backbone("mobilenetv2", weights=str(tmp_path / "missing.weights.h5"))
    torch_file = tmp_path / "mobilenet_v2.pth"
    torch_file.write_bytes(b"x")
    with pytest.raises(ValueError, match="PyTorch file; convert it"):
        build_backbone("mobilenetv2", weights=str(torch_file))
    not_hdf5 = tmp_path / "broken.weights.h5"
    not_hdf5.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not a readable HDF5 weights file"):
        build_backbone("mobilenetv2", weights=str(not_hdf5))
    other = tmp_path / "weights.npz"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a '.weights.h5' file"):
        build_backbone("mobilenetv2", weights=str(other))


# ---------------------------------------------------------------- conversion


def torchvision_state_dict_shapes():
    """Key -> shape of torchvision's mobilenet_v2 state dict, from its definition."""
    shapes = collections.OrderedDict()

    def bn(prefix, channels):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{suffix}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def conv_bn_relu(prefix, out_channels, in_channels, kernel, groups=1):
        shapes[f"{prefix}.0.weight"] = (
            out_channels,
            in_channels // groups,
            kernel,
            kernel,
        )
        bn(f"{prefix}.1", out_channels)

    conv_bn_relu("features.0", 32, 3, 3)
    in_channels, index = 32, 1
    for expansion, channels, repeats, _ in TORCHVISION_TABLE:
        for _ in range(repeats):
            hidden, prefix, j = in_channels * expansion, f"features.{index}.conv", 0
            if expansion != 1:
                conv_bn_relu(f"{prefix}.0", hidden, in_channels, 1)
                j = 1
            conv_bn_relu(f"{prefix}.{j}", hidden, hidden, 3, groups=hidden)
            shapes[f"{prefix}.{j + 1}.weight"] = (channels, hidden, 1, 1)
            bn(f"{prefix}.{j + 2}", channels)
            in_channels, index = channels, index + 1
    conv_bn_relu("features.18", 1280, 320, 1)
    shapes["classifier.1.weight"] = (1000, 1280)
    shapes["classifier.1.bias"] = (1000,)
    return shapes


def fake_state_dict(seed=0):
    """Random values with the real keys and shapes (running variances positive)."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for key, shape in torchvision_state_dict_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(100, "int64")
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, shape).astype("float32")
        elif key.endswith(".weight") and len(shape) == 1:  # BN gamma
            state[key] = rng.uniform(0.5, 1.5, shape).astype("float32")
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(
                "float32"
            )
    return state


def test_description_matches_the_real_file():
    shapes = torchvision_state_dict_shapes()
    # pinned from torchvision's mobilenet_v2-b0353104.pth
    assert len(shapes) == 314
    assert shapes["features.1.conv.0.0.weight"] == (32, 1, 3, 3)
    assert shapes["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert shapes["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert shapes["features.18.0.weight"] == (1280, 320, 1, 1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Converts a fake torchvision file through the command line, as users do."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("mobilenet_v2")
    state = fake_state_dict()
    pth = str(folder / "mobilenet_v2-fake.pth")
    # The real file uses torch's legacy format; write that one.
    torch.save(
        collections.OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()),
        pth,
        _use_new_zipfile_serialization=False,
    )
    sha256 = hashlib.sha256(open(pth, "rb").read()).hexdigest()
    output = str(folder / "mobilenetv2_fake.weights.h5")
    convert_torch_backbones.main(["mobilenetv2", pth, output, "--sha256", sha256])
    return state, pth, output


def test_converted_values_land_in_the_right_layers(converted):
    state, _, output = converted
    model = build_backbone("mobilenetv2", output_stride=8, weights=output)
    stem = model.get_layer("features_0_conv").kernel
    np.testing.assert_array_equal(
        to_numpy(stem), state["features.0.0.weight"].transpose(2, 3, 1, 0)
    )
    # block 1 has no expansion: its depthwise conv is conv.0.0, its projection conv.1
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("features_1_depthwise_conv").kernel),
        state["features.1.conv.0.0.weight"].transpose(2, 3, 0, 1),
    )
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("features_1_project_conv").kernel),
        state["features.1.conv.1.weight"].transpose(2, 3, 1, 0),
    )
    dw = model.get_layer("features_14_depthwise_conv").kernel
    assert tuple(dw.shape) == (3, 3, 576, 1)
    np.testing.assert_array_equal(
        to_numpy(dw), state["features.14.conv.1.0.weight"].transpose(2, 3, 0, 1)
    )
    bn = model.get_layer("features_17_project_bn")
    for variable, suffix in zip(
        (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance),
        ("weight", "bias", "running_mean", "running_var"),
    ):
        np.testing.assert_array_equal(
            to_numpy(variable), state[f"features.17.conv.3.{suffix}"]
        )
    classifier = mobilenet_v2_classifier()
    classifier.load_weights(output)
    np.testing.assert_array_equal(
        to_numpy(classifier.get_layer("classifier").kernel),
        state["classifier.1.weight"].T,
    )


def _torch_reference(state, images, schedule):
    """torchvision's MobileNetV2 forward in plain torch: (C2..C5, logits)."""
    import torch
    import torch.nn.functional as F

    s = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x / 255.0 - mean) / std

    def bn(x, p):
        return F.batch_norm(
            x,
            s[p + ".running_mean"],
            s[p + ".running_var"],
            s[p + ".weight"],
            s[p + ".bias"],
            False,
            0.0,
            1e-5,
        )

    x = F.relu6(
        bn(F.conv2d(x, s["features.0.0.weight"], stride=2, padding=1), "features.0.1")
    )
    features = {}
    for i, (stride, dilation) in enumerate(schedule, start=1):
        p, y, j = f"features.{i}.conv", x, 0
        if f"{p}.3.weight" in s:
            y = F.relu6(bn(F.conv2d(y, s[f"{p}.0.0.weight"]), f"{p}.0.1"))
            j = 1
        w = s[f"{p}.{j}.0.weight"]
        y = F.conv2d(
            y, w, stride=stride, padding=dilation, dilation=dilation, groups=w.shape[0]
        )
        y = F.relu6(bn(y, f"{p}.{j}.1"))
        y = bn(F.conv2d(y, s[f"{p}.{j + 1}.weight"]), f"{p}.{j + 2}")
        x = x + y if stride == 1 and x.shape[1] == y.shape[1] else y
        features[i] = x.permute(0, 2, 3, 1).numpy()
    x = F.relu6(bn(F.conv2d(x, s["features.18.0.weight"]), "features.18.1"))
    logits = F.linear(
        x.mean(dim=(2, 3)), s["classifier.1.weight"], s["classifier.1.bias"]
    )
    return [features[i] for i in (3, 6, 13, 17)], logits.numpy()


@pytest.mark.parametrize("output_stride", [8, 32])
def test_features_match_a_torch_forward(converted, output_stride):
    state, _, output = converted
    schedule = SCHEDULES[output_stride]
    images = random_images(1, 33, 47, seed=1)
    expected, _ = _torch_reference(state, images, schedule)
    model = build_backbone("mobilenetv2", output_stride=output_stride, weights=output)
    for got, want in zip(model(images), expected):
        got = to_numpy(got)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_classifier_logits_match_a_torch_forward(converted):
    state, _, output = converted
    images = random_images(1, 35, 29, seed=2)
    _, expected = _torch_reference(state, images, SCHEDULES[32])
    classifier = mobilenet_v2_classifier()
    classifier.load_weights(output)
    got = to_numpy(classifier(images))
    np.testing.assert_allclose(
        got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_converter_errors(converted, tmp_path):
    state, pth, _ = converted
    with pytest.raises(
        ValueError, match=r"sha256 [0-9a-f]{64}, expected 0{64}.*re-download"
    ):
        convert_torch_backbones.convert_mobilenet_v2(
            pth, str(tmp_path / "a.weights.h5"), "0" * 64
        )
    with pytest.raises(ValueError, match=r"sha256 .* expected b0353104"):
        convert_torch_backbones.main(
            [
                "mobilenetv2",
                pth,
                str(tmp_path / "a.weights.h5"),
                "--sha256",
                "published",
            ]
        )
    with pytest.raises(ValueError, match=r"must end in '\.weights\.h5'"):
        convert_torch_backbones.convert_mobilenet_v2(pth, str(tmp_path / "a.h5"))
    classifier = mobilenet_v2_classifier()
    prefix = convert_torch_backbones.mobilenet_v2_torch_prefix
    missing = {k: v for k, v in state.items() if k != "features.5.conv.1.0.weight"}
    with pytest.raises(ValueError, match=r"no key 'features\.5\.conv\.1\.0\.weight'"):
        convert_torch_backbones.state_dict_to_model(missing, classifier, prefix)
    extra = dict(state, **{"features.19.0.weight": np.zeros((4, 4, 1, 1), "float32")})
    with pytest.raises(ValueError, match="no place for"):
        convert_torch_backbones.state_dict_to_model(extra, classifier, prefix)
    wrong = dict(state, **{"features.0.0.weight": np.zeros((16, 3, 3, 3), "float32")})
    with pytest.raises(
        ValueError, match=r"'features\.0\.0\.weight' has shape \(16, 3, 3, 3\)"
    ):
        convert_torch_backbones.state_dict_to_model(wrong, classifier, prefix)


def test_a_file_of_another_backbone_is_refused(converted):
    _, _, output = converted
    with pytest.raises(ValueError, match="holds weights of backbone 'mobilenetv2'"):
        build_backbone("efficientnetlite0", weights=output)
