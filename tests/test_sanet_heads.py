"""SANetHeads: switches, wiring math, dtypes, serialization, errors."""

import keras
import numpy as np
import pytest

from keras_sanet.layers import SANetHeads
from tests.helpers import random_features
from tests.helpers import to_numpy
from tests.test_resize import numpy_bilinear

NUM_CLASSES = 3
CHANNELS = (8, 8, 16, 16)


def make_features(c2_size=(12, 10), c5_size=(6, 5), batch=2, seed=0):
    """[C2, C3, C4, C5]: C2 at 1/4, the rest at 1/8 (output stride 8)."""
    sizes = [c2_size] + [c5_size] * 3
    return [
        random_features((batch,) + size + (channels,), seed=seed + index)
        for index, (size, channels) in enumerate(zip(sizes, CHANNELS))
    ]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("se_mode", ["gate", "loss"])
@pytest.mark.parametrize("auxiliary_head", [True, False])
@pytest.mark.parametrize("categorical_head", [True, False])
@pytest.mark.parametrize("attention", ["sa", "se", "none"])
def test_output_keys_and_shapes(attention, categorical_head, auxiliary_head, se_mode):
    heads = SANetHeads(
        NUM_CLASSES,
        attention=attention,
        categorical_head=categorical_head,
        auxiliary_head=auxiliary_head,
        se_mode=se_mode,
    )
    features = make_features()
    for training in (False, True):
        outputs = heads(features, training=training)
        expected = {"logits": (2, 12, 10, NUM_CLASSES)}
        if categorical_head:
            expected["se_logits"] = (2, NUM_CLASSES)
        if auxiliary_head and training:
            expected["aux_logits"] = (2, 6, 5, NUM_CLASSES)
        assert {k: tuple(v.shape) for k, v in outputs.items()} == expected
        assert all(
            keras.backend.standardize_dtype(v.dtype) == "float32"
            for v in outputs.values()
        )
    # The aux head exists (and has weights) only when asked for.
    assert hasattr(heads, "aux_classifier") == auxiliary_head
    assert hasattr(heads, "se_head_logits") == categorical_head


@pytest.mark.parametrize(
    "c2_size,c5_size", [((15, 17), (8, 9)), ((5, 5), (3, 3)), ((8, 8), (2, 2))]
)
def test_odd_sizes(c2_size, c5_size):
    heads = SANetHeads(NUM_CLASSES, sa_pool_size=2)
    outputs = heads(make_features(c2_size, c5_size, batch=1), training=True)
    assert tuple(outputs["logits"].shape) == (1,) + c2_size + (NUM_CLASSES,)
    assert tuple(outputs["aux_logits"].shape) == (1,) + c5_size + (NUM_CLASSES,)
    paper = SANetHeads(
        NUM_CLASSES,
        sa_pool_type="max",
        sa_pool_size=8,
        sa_convs_per_branch=1,
        sa_attention_activation="sigmoid",
    )
    outputs = paper(make_features(c2_size, c5_size, batch=1))
    assert tuple(outputs["logits"].shape) == (1,) + c2_size + (NUM_CLASSES,)


def test_merged_logits_are_the_sum_of_resized_head_maps():
    heads = SANetHeads(
        NUM_CLASSES, attention="none", categorical_head=False, auxiliary_head=False
    )
    features = make_features(c2_size=(12, 10), c5_size=(5, 4))
    merged = to_numpy(heads(features)["logits"])
    class_maps = [to_numpy(m) for m in heads.head_logits(features)]
    expected = class_maps[0] + sum(numpy_bilinear(m, (12, 10)) for m in class_maps[1:])
    np.testing.assert_allclose(merged, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["sa", "se", "none"])
def test_gate_scales_logits_by_sigmoid_of_se_logits(attention):
    gate = SANetHeads(NUM_CLASSES, attention=attention, se_mode="gate")
    features = make_features()
    gate_outputs = gate(features)
    config = gate.get_config()
    config.update(se_mode="loss", name="loss_heads")
    loss = SANetHeads.from_config(config)
    loss(features)
    loss.set_weights(gate.get_weights())
    loss_outputs = loss(features)

    se_logits = to_numpy(gate_outputs["se_logits"])
    np.testing.assert_allclose(
        se_logits, to_numpy(loss_outputs["se_logits"]), rtol=1e-6
    )
    np.testing.assert_allclose(
        to_numpy(gate_outputs["logits"]),
        to_numpy(loss_outputs["logits"]) * sigmoid(se_logits)[:, None, None, :],
        rtol=1e-5,
        atol=1e-6,
    )

    # SE head: GAP(C5) -> Dense -> ReLU -> Dense, against NumPy.
    w1, b1 = (to_numpy(v) for v in gate.se_head_hidden.weights)
    w2, b2 = (to_numpy(v) for v in gate.se_head_logits.weights)
    assert w1.shape == (16, 4)  # C5 // se_reduction
    hidden = np.maximum(features[-1].mean(axis=(1, 2)) @ w1 + b1, 0)
    np.testing.assert_allclose(se_logits, hidden @ w2 + b2, rtol=1e-5, atol=1e-5)


def test_aux_head_math_and_training_only():
    heads = SANetHeads(NUM_CLASSES, aux_dropout=0.0)
    features = make_features()
    assert "aux_logits" not in heads(features)
    assert "aux_logits" not in heads(features, training=False)
    aux = to_numpy(heads(features, training=True)["aux_logits"])
    assert heads.aux_conv.filters == 4  # C5 // 4
    expected = heads.aux_classifier(heads.aux_conv(features[-1], training=True))
    np.testing.assert_allclose(aux, to_numpy(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "attention,head_channels,expected",
    [
        ("sa", None, [2, 2, 4, 4]),  # C_i // 4
        ("se", 5, [5] * 4),
        ("none", [1, 2, 3, 4], [1, 2, 3, 4]),
    ],
)
def test_head_channels(attention, head_channels, expected):
    heads = SANetHeads(NUM_CLASSES, attention=attention, head_channels=head_channels)
    heads(make_features())
    kernels = [tuple(c.kernel.shape) for c in heads.head_classifiers]
    assert kernels == [(1, 1, c, NUM_CLASSES) for c in expected]


def test_head_branches_for_attention_maps():
    heads = SANetHeads(NUM_CLASSES)
    features = make_features()
    branches = heads.head_branches(features)
    assert len(branches) == 4
    for (output, main, attention), feature, channels in zip(
        branches, features, [2, 2, 4, 4]
    ):
        shape = tuple(feature.shape[:3]) + (channels,)
        assert (
            tuple(output.shape) == tuple(main.shape) == tuple(attention.shape) == shape
        )
        np.testing.assert_allclose(
            to_numpy(output),
            to_numpy(attention) * to_numpy(main) + to_numpy(attention),
            rtol=1e-5,
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="Build SANetHeads\\(attention='sa'\\)"):
        SANetHeads(NUM_CLASSES, attention="se").head_branches(features)


def test_float32_outputs_under_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    heads = SANetHeads(NUM_CLASSES)
    outputs = heads(make_features(), training=True)
    assert heads.head_classifiers[0].compute_dtype == "bfloat16"
    assert set(outputs) == {"logits", "se_logits", "aux_logits"}
    for value in outputs.values():
        assert keras.backend.standardize_dtype(value.dtype) == "float32"


def test_get_config_round_trip():
    heads = SANetHeads(
        7,
        attention="se",
        categorical_head=False,
        auxiliary_head=True,
        se_mode="loss",
        head_channels=6,
        se_reduction=2,
        aux_dropout=0.2,
        sa_pool_type="max",
        sa_pool_size=(8, 4),
        sa_convs_per_branch=1,
        sa_attention_activation="sigmoid",
        sa_upsampling="bilinear",
        name="heads",
    )
    config = heads.get_config()
    assert SANetHeads.from_config(config).get_config() == config
    assert config["sa_pool_size"] == (8, 4) and config["head_channels"] == [6] * 4


def test_functional_model_saves_and_reloads_safely(tmp_path):
    inputs = [
        keras.Input((12, 10, CHANNELS[0])),
        *(keras.Input((6, 5, c)) for c in CHANNELS[1:]),
    ]
    heads = SANetHeads(NUM_CLASSES, sa_pool_type="max", sa_pool_size=3)
    model = keras.Model(inputs, heads(inputs))
    features = make_features(seed=3)
    model(features, training=True)  # builds the aux head's weights too
    path = str(tmp_path / "heads.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    expected = model(features)
    actual = reloaded(features)
    assert set(actual) == {"logits", "se_logits"}
    for key in expected:
        np.testing.assert_allclose(
            to_numpy(actual[key]), to_numpy(expected[key]), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("attention", ["sa", "se", "none"])
def test_unknown_spatial_dims(attention):
    inputs = [keras.Input((None, None, c)) for c in CHANNELS]
    model = keras.Model(inputs, SANetHeads(NUM_CLASSES, attention=attention)(inputs))
    assert tuple(model.output["logits"].shape) == (None, None, None, NUM_CLASSES)
    for c2_size, c5_size in [((12, 10), (6, 5)), ((7, 9), (4, 5))]:
        outputs = model(make_features(c2_size, c5_size, batch=1))
        assert tuple(outputs["logits"].shape) == (1,) + c2_size + (NUM_CLASSES,)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 0}, "`num_classes` must be a positive integer"),
        ({"num_classes": 2.5}, "`num_classes` must be a positive integer"),
        ({"num_classes": True}, "`num_classes` must be a positive integer"),
        ({"attention": "cbam"}, "Unknown attention 'cbam'; use 'sa'"),
        ({"se_mode": "both"}, "Unknown se_mode 'both'; use 'gate'"),
        ({"categorical_head": "yes"}, "`categorical_head` must be True or False"),
        ({"head_channels": 0}, "`head_channels` must be None"),
        ({"head_channels": [4, 4]}, "`head_channels` must be None"),
        ({"se_reduction": 0}, "`se_reduction` must be a positive integer"),
        ({"aux_dropout": 1.0}, r"`aux_dropout` must be a rate in \[0, 1\)"),
        ({"sa_pool_type": "median"}, "Unknown pool_type 'median'"),
        ({"sa_pool_size": -2}, "`pool_size` must be a positive int"),
        ({"sa_upsampling": "cubic"}, "Unknown upsampling 'cubic'"),
    ],
)
def test_argument_errors(kwargs, match):
    kwargs = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=match):
        SANetHeads(**kwargs)


@pytest.mark.parametrize(
    "features,match",
    [
        (lambda f: f[:3], r"a list of 4 NHWC tensors"),
        (lambda f: f[0], r"a list of 4 NHWC tensors"),
        (lambda f: [f[0][0]] + f[1:], r"feature 0 \(C2\) must be a rank-4"),
    ],
)
def test_feature_errors(features, match):
    with pytest.raises(ValueError, match=match):
        SANetHeads(NUM_CLASSES)(features(make_features()))


@pytest.mark.parametrize("attention", ["sa", "se", "none"])
def test_build_builds_every_sublayer_including_the_training_only_ones(attention):
    # An unbuilt sublayer (the aux dropout, used only in training) makes Keras'
    # JAX trainer run an eager forward pass before every predict call.
    heads = SANetHeads(NUM_CLASSES, attention=attention)
    heads.build([tuple(f.shape) for f in make_features()])
    unbuilt = [layer.name for layer in heads._flatten_layers() if not layer.built]
    assert unbuilt == []
