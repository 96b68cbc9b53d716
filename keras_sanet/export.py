"""Export a SANet for deployment: TensorFlow SavedModel, TFLite (LiteRT) and ONNX.

The export goes through Keras 3's own machinery (`model.export(...)`), which
traces the inference call (`training=False`: the logits at the input size,
batch norm on its moving statistics). Every artifact takes float32 RGB images
in 0..255, `(batch, height, width, 3)`, and returns the logits
`(batch, height, width, num_classes)`: the ImageNet preprocessing is inside.

What each Keras backend can export (Keras 3.15):

| format        | tensorflow        | jax                      | torch          |
| ------------- | ----------------- | ------------------------ | -------------- |
| `saved_model` | any H, W          | any H, W (jax2tf)        | no (torch_xla) |
| `tflite`      | fixed H, W        | no                       | no             |
| `onnx`        | any H, W (tf2onnx)| no (jax2onnx)            | fixed H, W,    |
|               |                   |                          | batch 1        |

A fixed-size export takes `input_size=(height, width)`; the artifact then
accepts only that size. The batch size is free, except in torch's ONNX
export, whose artifact `load_exported` runs one image at a time. A preset or
a `.keras` file loads on every backend, so any format can be had on one.
"""

import contextlib
import importlib.util
import os

import numpy as np

FORMATS = ("saved_model", "tflite", "onnx")
# format -> the file name ending it needs (a SavedModel is a folder).
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
# Our format names -> Keras' `model.export(format=...)` names.
KERAS_FORMATS = {"saved_model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
# (backend, format) -> True: height and width stay dynamic; False: a fixed
# input_size is needed. Pairs not listed cannot be exported on that backend.
SUPPORT = {
    ("tensorflow", "saved_model"): True,
    # With free H, W the converter leaves the SA heads' convolutions as Flex
    # (select TensorFlow) ops, which LiteRT's interpreter cannot run.
    ("tensorflow", "tflite"): False,
    ("tensorflow", "onnx"): True,
    ("jax", "saved_model"): True,
    # Keras takes torch's dynamo ONNX exporter for static shapes only; for free
    # axes it falls back to TorchScript, which lacks aten::ravel.
    ("torch", "onnx"): False,
}
# Exports whose batch size is fixed at 1 too (see above); load_exported runs
# them one image at a time.
SINGLE_IMAGE = {("torch", "onnx")}
# (backend, format) -> modules the export needs beyond the backend itself.
EXPORT_MODULES = {
    ("tensorflow", "onnx"): ("tf2onnx", "onnx"),
    ("jax", "saved_model"): ("tensorflow",),
    ("torch", "onnx"): ("onnx", "onnxscript"),
}
# format -> modules that load_exported needs.
# (TFLite: ai_edge_litert or tensorflow, see _litert_interpreter.)
LOAD_MODULES = {"saved_model": ("tensorflow",), "tflite": (), "onnx": ("onnxruntime",)}
_INSTALL_HINT = 'pip install "keras-sanet[export]"'
_WHY_NOT = {
    ("jax", "tflite"): "Keras' LiteRT export runs on TensorFlow and PyTorch only",
    # Checked with jax2onnx 0.17.1 and onnxruntime 1.32.
    ("jax", "onnx"): "Keras exports through jax2onnx, which writes the backbone's max "
    "pooling as a 4-D MaxPool that onnxruntime rejects, and traces sizes only as constants",
    ("torch", "saved_model"): "Keras' SavedModel export on torch goes through torch_xla, "
    "which has no build for this torch",
    ("torch", "tflite"): "Keras' LiteRT export on torch needs litert-torch, which pulls "
    "transformers and torchao and downgrades typing-extensions",
}


def _backend():
    import keras

    return keras.backend.backend()


def _check_known_format(format):
    if format not in FORMATS:
        raise ValueError(
            f"Unknown export format {format!r}; use one of {', '.join(FORMATS)}."
        )


def check_format(format, backend=None):
    """Checks that `format` can be exported on `backend`; returns whether H, W stay dynamic.

    Args:
        format: one of `FORMATS`.
        backend: a Keras backend name; default: the current one.

    Returns:
        True when the artifact takes any height and width, False when the
        export needs a fixed `input_size`.

    Raises:
        ValueError: an unknown format, or one this backend cannot export (the
            message names the backend to use).

    Example:
    >>> check_format("saved_model", "tensorflow")
    True
    """
    backend = backend or _backend()
    _check_known_format(format)
    if (backend, format) not in SUPPORT:
        able = [b for (b, f) in SUPPORT if f == format]
        why = _WHY_NOT.get((backend, format), f"Keras cannot export {format} on {backend}")
        raise ValueError(
            f"The {backend} backend cannot export {format} ({why}). Export on the "
            f"{' or '.join(able)} backend instead, e.g. KERAS_BACKEND={able[0]} "
            "keras-sanet export ...: presets and .keras files load on every backend."
        )
    return SUPPORT[(backend, format)]


def _require(modules, what):
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(
            f"{what} needs the Python package(s) {', '.join(missing)}, which are not "
            f"installed. Install the export extra: {_INSTALL_HINT}."
        )


def _check_input_size(input_size):
    if input_size is None:
        return None
    if (
        not isinstance(input_size, (list, tuple))
        or len(input_size) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in input_size)
    ):
        raise ValueError(
            f"input_size must be (height, width) in pixels, e.g. (360, 480); got "
            f"{input_size!r}."
        )
    return tuple(int(s) for s in input_size)


def export_model(model, path, format, input_size=None):
    """Writes `model`'s inference pass as a SavedModel folder, `.tflite` or `.onnx` file.

    Args:
        model: a SANet (or any Keras model taking NHWC float32 images).
        path: the folder (`saved_model`) or file (`.tflite`, `.onnx`) to write.
        format: `"saved_model"`, `"tflite"` or `"onnx"`.
        input_size: `(height, width)` to fix the spatial size, or None to
            keep it free. Formats that need a fixed size on this backend
            (see `SUPPORT`) require it.

    Returns:
        `path`.

    Raises:
        ValueError: unknown format, a format this backend cannot export (the
            message names the backend to use), a missing `input_size`, or a
            missing export package.

    Example:
    >>> model = SANet(backbone="resnet18", num_classes=3, output_stride=16)
    >>> export_model(model, "out/model.onnx", "onnx")  # TensorFlow backend
    'out/model.onnx'
    """
    import keras

    backend = _backend()
    suffix = SUFFIXES.get(format)
    if suffix and not str(path).endswith(suffix):
        raise ValueError(
            f"{format} exports are {suffix} files; got the path {path!r}. End the path "
            f"with {suffix}, e.g. out/model{suffix}."
        )
    input_size = _check_input_size(input_size)
    dynamic = check_format(format, backend)
    if input_size is None and not dynamic:
        raise ValueError(
            f"Exporting {format} on the {backend} backend needs a fixed input size: pass "
            "input_size=(height, width) (keras-sanet export --input-size H W); the "
            "artifact then takes only images of that size."
        )
    _require(EXPORT_MODULES.get((backend, format), ()), f"Exporting {format} on {backend}")
    if not model.built:
        model.build((None, None, None, 3))
    height, width = input_size or (None, None)
    batch = 1 if (backend, format) in SINGLE_IMAGE else None
    signature = [keras.InputSpec(shape=(batch, height, width, 3), dtype="float32")]
    kwargs = {}
    if backend == "jax" and format == "saved_model":
        # The serving graph needs no gradient; tracing one fails on the
        # symbolic paddings of free H, W.
        kwargs["jax2tf_kwargs"] = {"with_gradient": False}
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with plain_convolutions(model):
        model.export(
            str(path), format=KERAS_FORMATS[format], input_signature=signature,
            verbose=False, **kwargs,
        )
    return path


@contextlib.contextmanager
def plain_convolutions(model):
    """Within it, `model`'s keras_sanet Conv2D layers trace plain convolutions.

    Their Winograd convolutions (on CPUs, keras_sanet.layers.Conv2D) stay
    out of exported graphs: TensorFlow's graph optimiser, LiteRT and
    onnxruntime pick their own convolution algorithms for the machine that
    runs the artifact, and converters know convolutions better than dozens
    of matmuls between slices.
    """
    layers = [layer for layer in model._flatten_layers() if hasattr(layer, "winograd")]
    saved = [layer.winograd for layer in layers]
    for layer in layers:
        layer.winograd = False
    try:
        yield
    finally:
        for layer, winograd in zip(layers, saved):
            layer.winograd = winograd


def exported_size(path):
    """Bytes on disk of an exported file, or of every file in a SavedModel folder.

    Example:
    >>> exported_size("out/model.onnx")
    23715845
    """
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _checked_images(images, fixed_shape, path):
    """Float32 `(N, H, W, 3)` images; a ValueError if the export takes another H, W."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"The exported model takes a batch of RGB images (batch, height, width, 3); "
            f"got shape {images.shape}."
        )
    for axis, name in ((1, "height"), (2, "width")):
        want = fixed_shape[axis] if fixed_shape is not None else None
        if want is not None and want > 0 and images.shape[axis] != want:
            raise ValueError(
                f"{path} was exported for {fixed_shape[1]}x{fixed_shape[2]} images "
                f"(height x width) but got {images.shape[1]}x{images.shape[2]}. Resize "
                "the images, or export again with that --input-size."
            )
    return images


def _load_saved_model(path):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    (input_name, spec), = serve.structured_input_signature[1].items()

    def predict(images):
        images = _checked_images(images, tuple(spec.shape), path)
        outputs = serve(**{input_name: tf.constant(images)})
        (logits,) = outputs.values()
        return logits.numpy()

    return predict


def _litert_interpreter(path):
    # LiteRT's own interpreter where installed; tf.lite.Interpreter is its
    # deprecated copy inside TensorFlow.
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter
    else:
        _require(("tensorflow",), "Loading a tflite export without ai-edge-litert")
        from tensorflow.lite.python.interpreter import Interpreter
    return Interpreter(model_path=path)


def _load_tflite(path):
    interpreter = _litert_interpreter(path)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    shape = tuple(runner.get_input_details()[input_name]["shape_signature"])

    def predict(images):
        images = _checked_images(images, shape, path)
        # The runner resizes the (free) batch axis to the images given.
        (logits,) = runner(**{input_name: images}).values()
        return np.asarray(logits)

    return predict


def _load_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    # Free axes are names (str) or None in onnxruntime's shapes.
    shape = tuple(s if isinstance(s, int) else None for s in model_input.shape)

    def run(images):
        return session.run(None, {model_input.name: images})[0]

    def predict(images):
        images = _checked_images(images, shape, path)
        if shape[0] == 1 and len(images) != 1:
            return np.concatenate([run(image[None]) for image in images])
        return run(images)

    return predict


_LOADERS = {"saved_model": _load_saved_model, "tflite": _load_tflite, "onnx": _load_onnx}


def load_exported(path, format):
    """Loads an exported SANet as a NumPy predictor, on the format's own runtime.

    SavedModel: `tf.saved_model.load` and its `serving_default` signature;
    TFLite: the LiteRT interpreter (`ai_edge_litert`, else `tf.lite`); ONNX:
    onnxruntime on the CPU. No Keras and no keras-sanet code runs.

    Args:
        path: what `export_model` wrote.
        format: `"saved_model"`, `"tflite"` or `"onnx"`.

    Returns:
        A callable `images -> logits`: float32 RGB `(N, H, W, 3)` in 0..255
        to a float32 `np.ndarray` `(N, H, W, num_classes)`.

    Raises:
        ValueError: unknown format, missing file or runtime package.

    Example:
    >>> predict = load_exported("out/model.onnx", "onnx")
    >>> predict(np.zeros((1, 360, 480, 3), "float32")).shape
    (1, 360, 480, 11)
    """
    _check_known_format(format)
    if not os.path.exists(path):
        raise ValueError(f"No exported model at {path!r}; check the path.")
    _require(LOAD_MODULES[format], f"Loading a {format} export")
    return _LOADERS[format](str(path))


def max_abs_difference(model, predict, images):
    """The largest `|Keras logits - exported logits|` over `images`.

    Args:
        model: the Keras model that was exported.
        predict: what `load_exported` returned.
        images: float32 RGB `(N, H, W, 3)` in 0..255.

    Example:
    >>> max_abs_difference(model, load_exported("m.onnx", "onnx"), images)
    3.3e-06
    """
    import keras

    expected = keras.ops.convert_to_numpy(model(images, training=False))
    actual = predict(images)
    if actual.shape != expected.shape:
        raise ValueError(
            f"The exported model returns shape {actual.shape}, Keras {expected.shape}: "
            "it was not exported from this model. Export this model again, or compare "
            "the artifact with the model it came from."
        )
    return float(np.max(np.abs(actual.astype(np.float64) - expected)))
