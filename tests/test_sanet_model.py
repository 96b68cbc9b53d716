"""The SANet model: outputs, switches, dtype policies, save/load, errors."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import other_backends
from helpers import random_images
from helpers import run_python
from helpers import to_numpy

import keras_sanet
from keras_sanet import SANet

TINY = dict(backbone="resnet18", output_stride=32)


def tiny_sanet(num_classes=3, **kwargs):
    return SANet(num_classes=num_classes, **{**TINY, **kwargs})


@pytest.mark.parametrize("size", [(32, 32), (37, 45), (33, 64)])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_inference_returns_logits_at_input_size(size, output_stride):
    model = tiny_sanet(num_classes=4, output_stride=output_stride)
    logits = model.predict(random_images(2, *size), verbose=0)
    assert logits.shape == (2, *size, 4)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize(
    "categorical_head,auxiliary_head", [(True, True), (True, False), (False, True), (False, False)]
)
def test_training_outputs_follow_the_head_switches(categorical_head, auxiliary_head):
    model = tiny_sanet(
        num_classes=5, categorical_head=categorical_head, auxiliary_head=auxiliary_head
    )
    outputs = model(random_images(2, 40, 36), training=True)
    expected = {"logits"}
    if categorical_head:
        expected.add("se_logits")
        assert tuple(outputs["se_logits"].shape) == (2, 5)
    if auxiliary_head:
        expected.add("aux_logits")
        assert tuple(outputs["aux_logits"].shape) == (2, 40, 36, 5)
    assert set(outputs) == expected
    assert tuple(outputs["logits"].shape) == (2, 40, 36, 5)
    # Inference never runs the training-only auxiliary head and returns a tensor.
    assert tuple(model(random_images(1, 40, 36)).shape) == (1, 40, 36, 5)


@pytest.mark.parametrize("attention", ["sa", "se", "none"])
def test_ablation_variants_build_and_differ_in_parameters(attention):
    model = tiny_sanet(attention=attention)
    assert model.predict(random_images(1, 32, 32), verbose=0).shape == (1, 32, 32, 3)
    counts = {}
    for variant in ("sa", "se", "none"):
        variant_model = tiny_sanet(attention=variant)
        variant_model.build((None, None, None, 3))
        counts[variant] = variant_model.count_params()
    # SA adds an attention branch, SE adds two small dense layers per head.
    assert counts["sa"] > counts["se"] > counts["none"]


def test_predict_matches_call_and_is_deterministic():
    model = tiny_sanet()
    images = random_images(2, 32, 48)
    a = model.predict(images, verbose=0)
    b = to_numpy(model(images, training=False))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("attention", ["sa", "se", "none"])
def test_every_layer_is_built_by_build(attention):
    # Keras' JAX trainer runs a whole eager forward pass before every
    # predict / predict_on_batch while any layer is unbuilt (the training-only
    # auxiliary dropout was): benchmarks/PROFILE.md.
    model = tiny_sanet(attention=attention)
    model.build((None, 32, 32, 3))
    unbuilt = [layer.name for layer in model._flatten_layers() if not layer.built]
    assert unbuilt == []


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="Keras runs PyTorch eagerly: call runs each time"
)
def test_predict_on_batch_does_not_run_call_again_once_compiled():
    model = tiny_sanet()
    model.build((None, 32, 32, 3))
    calls = []
    call = model.call

    def counting_call(*args, **kwargs):
        calls.append(1)
        return call(*args, **kwargs)

    model.call = counting_call
    images = random_images(1, 32, 32)
    first = model.predict_on_batch(images)  # traces (and compiles) once
    calls.clear()
    second = model.predict_on_batch(images)
    assert calls == []  # no eager pass, no retrace
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_and_returns_float32(policy):
    model = tiny_sanet(dtype=policy)
    assert model.dtype_policy.name == policy
    logits = model.predict(random_images(1, 32, 32), verbose=0)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    compute_dtypes = {layer.compute_dtype for layer in model.backbone.layers if layer.weights}
    assert compute_dtypes == {policy.split("_")[1]}


def test_fit_lowers_the_loss_on_a_fixed_batch():
    model = tiny_sanet(num_classes=3)
    images = random_images(2, 32, 32)
    masks = np.zeros((2, 32, 32), "uint8")
    masks[:, :, 16:] = 1
    masks[:, :4] = 255
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images, masks, epochs=6, batch_size=2, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    results = model.evaluate(images, masks, verbose=0, return_dict=True)
    assert set(results) == {"loss", "mean_iou", "pixel_accuracy"}


def test_keras_file_round_trip_with_safe_mode(tmp_path):
    model = tiny_sanet(num_classes=4, attention="sa", head_kwargs={"sa_pool_type": "max"})
    model.compile()
    images = random_images(1, 36, 44)
    expected = model.predict(images, verbose=0)
    path = str(tmp_path / "sanet.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, SANet)
    assert restored.get_config() == model.get_config()
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)
    # Compiled state travels too: the restored model evaluates with SANet's defaults.
    masks = np.zeros((1, 36, 44), "uint8")
    assert set(restored.evaluate(images, masks, verbose=0, return_dict=True)) == {
        "loss",
        "mean_iou",
        "pixel_accuracy",
    }


def test_weights_saved_here_load_under_the_other_backends(tmp_path):
    model = tiny_sanet(num_classes=3)
    images = random_images(2, 32, 40, seed=3)
    expected = model.predict(images, verbose=0)
    weights = str(tmp_path / "w.weights.h5")
    model.save_weights(weights)
    np.save(tmp_path / "images.npy", images)
    code = f"""
        import json, numpy as np, keras_sanet
        model = keras_sanet.SANet(num_classes=3, backbone="resnet18", output_stride=32)
        model.load_weights({weights!r})
        logits = model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0)
        np.save({str(tmp_path / "out.npy")!r}, logits)
        print("RESULT " + json.dumps({{"ok": True}}))
    """
    for backend in other_backends():
        run_python(code, backend)
        got = np.load(tmp_path / "out.npy")
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"under {backend}")
        os.remove(tmp_path / "out.npy")


def test_keras_file_saved_here_loads_under_another_backend(tmp_path):
    model = tiny_sanet(num_classes=2)
    images = random_images(1, 32, 32, seed=5)
    expected = model.predict(images, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    backend = other_backends()[0]
    result = run_python(
        f"""
        import json, keras, numpy as np, keras_sanet
        model = keras.saving.load_model({path!r}, safe_mode=True)
        logits = model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0)
        print("RESULT " + json.dumps(logits.tolist()))
        """,
        backend,
    )
    np.testing.assert_allclose(np.array(result), expected, atol=1e-4)


def test_mismatched_weights_file_names_the_variable_and_num_classes(tmp_path):
    source = tiny_sanet(num_classes=5)
    source.build((None, None, None, 3))
    path = str(tmp_path / "five.weights.h5")
    source.save_weights(path)
    with pytest.raises(ValueError, match=r"num_classes=5.*num_classes=7") as info:
        tiny_sanet(num_classes=7).load_weights(path)
    assert "in the file but" in str(info.value)
    with pytest.raises(ValueError, match="does not match this SANet"):
        tiny_sanet(num_classes=5, attention="none").load_weights(path)
    with pytest.raises(ValueError, match="does not exist"):
        tiny_sanet().load_weights(str(tmp_path / "missing.weights.h5"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backbone": "resnet5"}, r"Unknown backbone 'resnet5'.*resnet18"),
        ({"output_stride": 4}, r"output_stride=4 is not supported"),
        ({"num_classes": 0}, r"num_classes must be an integer >= 1"),
        ({"num_classes": 2.5}, r"num_classes must be an integer >= 1"),
        ({"attention": "cbam"}, r"attention='cbam'"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs, match):
    arguments = {**TINY, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        SANet(**arguments)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((32, 32, 3), r"\(batch, height, width, 3\), got an input of rank 3"),
        ((1, 32, 32, 1), r"3 channels.*got 1"),
        ((1, 32, 32, 4), r"3 channels.*got 4"),
    ],
)
def test_bad_images_name_the_fix(shape, match):
    model = tiny_sanet()
    with pytest.raises(ValueError, match=match):
        model(np.zeros(shape, "float32"))


def test_unknown_backbone_lists_every_valid_name():
    with pytest.raises(ValueError) as info:
        SANet(backbone="vgg16", num_classes=3)
    for name in keras_sanet.backbone_names():
        assert name in str(info.value)


def test_config_round_trip_builds_the_same_architecture():
    model = tiny_sanet(num_classes=6, se_mode="loss", auxiliary_head=False)
    config = model.get_config()
    json.dumps(config)
    clone = SANet.from_config(config)
    model.build((None, None, None, 3))
    clone.build((None, None, None, 3))
    assert clone.count_params() == model.count_params()
    assert clone.get_config() == config
    assert config["backbone_weights"] is None


def test_head_branches_before_the_first_call_keep_the_model_usable():
    # The attention-map command probes the heads' branches; building the heads
    # that way first must not break the model's own build afterwards.
    model = SANet(backbone="resnet18", num_classes=3, output_stride=32)
    images = random_images(1, 64, 64)
    branches = model.heads.head_branches(model.backbone(images))
    assert len(branches) == 4
    weights_before = [to_numpy(w) for w in model.heads.weights]
    assert tuple(model(images).shape) == (1, 64, 64, 3)
    for before, after in zip(weights_before, model.heads.weights):
        np.testing.assert_array_equal(before, to_numpy(after))
