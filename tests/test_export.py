"""Export (SavedModel, TFLite, ONNX): artifacts match Keras, clear errors, `keras-sanet export`."""

import keras
import numpy as np
import pytest
from helpers import BACKENDS
from helpers import backend
from helpers import random_images
from helpers import to_numpy
from PIL import Image

from keras_sanet import SANet
from keras_sanet import cli
from keras_sanet import export
from keras_sanet.export import FORMATS
from keras_sanet.export import SUPPORT
from keras_sanet.export import check_format
from keras_sanet.export import export_model
from keras_sanet.export import load_exported
from keras_sanet.export import max_abs_difference

ATOL = 1e-4
SIZE = (64, 64)
# 48x80 gives odd feature maps at stride 16 (3x5): the SA heads' ceil pooling pads.
OTHER_SIZE = (48, 80)
FILE_NAMES = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}


def _cheapest_format():
    """The quickest export of this backend: SavedModel (TensorFlow, JAX), else ONNX (torch)."""
    return "saved_model" if (backend(), "saved_model") in SUPPORT else "onnx"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny SANet, called once, its .keras file and a 64x64 PNG."""
    keras.utils.set_random_seed(4)
    root = tmp_path_factory.mktemp("export")
    model = SANet(backbone="resnet18", num_classes=3, output_stride=16)
    model(random_images(1, *SIZE))
    keras_path = root / "tiny.keras"
    model.save(str(keras_path))
    image = np.random.default_rng(1).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    image_path = root / "frame.png"
    Image.fromarray(image).save(image_path)
    return {"model": model, "keras": keras_path, "image": image_path}


def _input_size(format):
    """None where this backend keeps H, W free, else the fixed test size."""
    return None if SUPPORT[(backend(), format)] else SIZE


@pytest.mark.parametrize("format", FORMATS)
def test_export_loads_back_and_matches_keras(setup, tmp_path, format):
    model = setup["model"]
    path = str(tmp_path / FILE_NAMES[format])
    if (backend(), format) not in SUPPORT:
        # Not available here: the error names the backend that exports it.
        with pytest.raises(ValueError, match=r"cannot export .*KERAS_BACKEND=tensorflow"):
            export_model(model, path, format, input_size=SIZE)
        return
    input_size = _input_size(format)
    assert export_model(model, path, format, input_size=input_size) == path
    predict = load_exported(path, format)
    images = random_images(2, *SIZE, seed=5)
    logits = predict(images)
    assert isinstance(logits, np.ndarray) and logits.shape == (2, *SIZE, 3)
    np.testing.assert_allclose(logits, to_numpy(model.predict_on_batch(images)), atol=ATOL)
    other = random_images(1, *OTHER_SIZE, seed=6)
    if input_size is None:
        assert max_abs_difference(model, predict, other) <= ATOL
    else:
        with pytest.raises(ValueError, match="exported for 64x64 images"):
            predict(other)


def test_fixed_size_exports_need_input_size(setup, tmp_path):
    # (JAX exports nothing of fixed size.)
    fixed = [f for (b, f), dynamic in SUPPORT.items() if b == backend() and not dynamic]
    for format in fixed:
        with pytest.raises(ValueError, match=r"input_size=\(height, width\).*--input-size"):
            export_model(setup["model"], str(tmp_path / FILE_NAMES[format]), format)


def test_unknown_format_and_bad_arguments(setup, tmp_path):
    with pytest.raises(ValueError, match="saved_model, tflite, onnx"):
        export_model(setup["model"], str(tmp_path / "m.mlmodel"), "coreml")
    with pytest.raises(ValueError, match="saved_model, tflite, onnx"):
        load_exported(str(tmp_path), "coreml")
    with pytest.raises(ValueError, match="No exported model"):
        load_exported(str(tmp_path / "missing.onnx"), "onnx")
    with pytest.raises(ValueError, match=r"\.onnx file"):
        export_model(setup["model"], str(tmp_path / "model.bin"), "onnx", input_size=SIZE)
    with pytest.raises(ValueError, match="input_size must be"):
        export_model(setup["model"], str(tmp_path / "m.onnx"), "onnx", input_size=(64,))


@pytest.mark.parametrize("keras_backend", BACKENDS)
def test_every_backend_and_format_is_supported_or_names_the_fix(keras_backend):
    for format in FORMATS:
        if (keras_backend, format) in SUPPORT:
            assert check_format(format, keras_backend) in (True, False)
            continue
        with pytest.raises(ValueError, match=rf"The {keras_backend} backend cannot export"):
            check_format(format, keras_backend)
    # TensorFlow exports everything.
    assert all((("tensorflow", f) in SUPPORT) for f in FORMATS)


def test_missing_runtime_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"")
    real_find_spec = export.importlib.util.find_spec
    monkeypatch.setattr(
        export.importlib.util, "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match=r"onnxruntime.*keras-sanet\[export\]"):
        load_exported(str(tmp_path / "model.onnx"), "onnx")


# -- keras-sanet export ------------------------------------------------------------


def test_cli_exports_a_keras_file_and_checks_it(setup, tmp_path, capsys):
    format = _cheapest_format()
    output = tmp_path / FILE_NAMES[format]
    argv = ["export", "--weights", str(setup["keras"]), "--format", format,
            "--output", str(output), "--check", str(setup["image"])]
    if _input_size(format):
        argv += ["--input-size", "48", "48"]  # the 64x64 image is resized to it
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert output.exists()
    assert "parameters" in out and "Wrote" in out and " MB" in out
    assert f"max |Keras - {format}| logit difference" in out
    assert "OK: within --atol 0.0001" in out
    if _input_size(format):
        assert "resized to 48x48" in out


def test_cli_fails_above_atol(setup, tmp_path, monkeypatch, capsys):
    model = setup["model"]

    def fake_export(model, path, format, input_size=None):
        open(path, "wb").close()  # no slow conversion: the check is under test

    def off_by_a_little(path, format):
        return lambda images: to_numpy(model(images)) + 1e-3

    monkeypatch.setattr(export, "export_model", fake_export)
    monkeypatch.setattr(export, "load_exported", off_by_a_little)
    format = _cheapest_format()
    argv = ["export", "--weights", str(setup["keras"]), "--format", format,
            "--output", str(tmp_path / FILE_NAMES[format]), "--input-size", "32", "32"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "a random 32x32 image" in captured.out
    assert "differs from Keras by 0.001" in captured.err and "--atol 0.0001" in captured.err
    assert cli.main(argv + ["--atol", "0.01"]) == 0


def test_cli_errors_name_the_fix(setup, tmp_path, capsys):
    argv = ["export", "--weights", str(setup["keras"]), "--format", "tflite",
            "--output", str(tmp_path / "m.tflite")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    if backend() == "tensorflow":
        assert "needs a fixed image size: pass --input-size H W" in err
    else:
        assert "cannot export tflite" in err and "KERAS_BACKEND=tensorflow" in err
    assert cli.main(argv[:-1] + [str(tmp_path / "m.onnx")]) == 2
    assert "a tflite export is a .tflite file" in capsys.readouterr().err
    format = _cheapest_format()
    assert cli.main(argv[:1] + ["--format", format, "--output", FILE_NAMES[format]]) == 2
    assert "Give exactly one model" in capsys.readouterr().err


def test_exports_trace_plain_convolutions_and_keep_the_model_s_switches(setup):
    # Winograd stays out of artifacts (their runtimes pick their
    # own algorithms); the model in memory keeps what it had.
    model = setup["model"]
    layers = [layer for layer in model._flatten_layers() if hasattr(layer, "winograd")]
    assert any(layer.winograd_applies for layer in layers)
    before = [layer.winograd for layer in layers]
    for layer in layers:
        layer.winograd = True
    with export.plain_convolutions(model):
        assert not any(layer.winograd for layer in layers)
    assert all(layer.winograd for layer in layers)
    for layer, winograd in zip(layers, before):
        layer.winograd = winograd
