"""Shared test helpers: small inputs, backend subprocesses, tolerances."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
CAMVID_ROOT = os.path.join(SHARED_DATA, "camvid")


def backend():
    return keras.backend.backend()


def other_backends():
    return [b for b in BACKENDS if b != backend()]


def random_images(batch=1, height=32, width=32, seed=0):
    """Float32 RGB images in 0..255, the input every model of ours takes."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch, height, width, 3)).astype("float32")


def random_features(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def run_python(code, keras_backend, env=None, timeout=900):
    """Runs `code` in a fresh interpreter under `keras_backend`.

    The code may print one JSON line starting with `RESULT ` which is returned
    parsed; a non-zero exit fails with the child's output.
    """
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["KERAS_BACKEND"] = keras_backend
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    child_env["PYTHONPATH"] = REPO_ROOT + os.pathsep + child_env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess under {keras_backend} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def twin_layers(ours_class, reference_class, shape, kwargs):
    """`(ours, reference, x)`: two layers built on `x` of `shape` with the same
    (non-trivial, not initializer-default) weights, to compare a subclass with Keras'."""
    ours, reference = ours_class(**kwargs), reference_class(**kwargs)
    x = random_features(shape)
    ours(x), reference(x)
    rng = np.random.default_rng(1)
    weights = [w + rng.standard_normal(w.shape).astype("float32") for w in ours.get_weights()]
    ours.set_weights(weights)
    reference.set_weights(weights)
    return ours, reference, x


def winograd_at_any_size(layer):
    """Winograd on for a `keras_sanet.layers.Conv2D`, whatever the (tiny) test
    sizes: the default depends on the machine and skips small convolutions; the
    algorithm is right everywhere."""
    layer.winograd = True
    layer.winograd_min_pixels = layer.winograd_min_channels = 0


def layer_gradients(layer, x, cotangent):
    """d sum(layer(x) * cotangent) / d(trainable variables, x), flattened and
    concatenated, on the current backend."""
    if backend() == "jax":
        import jax

        def loss(variables, x):
            outputs, _ = layer.stateless_call(variables, [], x)
            return keras.ops.sum(outputs * cotangent)

        grads = jax.grad(loss, argnums=(0, 1))([v.value for v in layer.trainable_variables], x)
        flat = list(grads[0]) + [grads[1]]
    elif backend() == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * cotangent)
        grad_x, grad_vars = tape.gradient(loss, [x, layer.trainable_variables])
        flat = list(grad_vars) + [grad_x]
    else:
        import torch

        x = torch.tensor(x, requires_grad=True)
        loss = (layer(x) * torch.tensor(cotangent)).sum()
        params = [v.value for v in layer.trainable_variables]
        grads = torch.autograd.grad(loss, params + [x])
        flat = list(grads)
    return np.concatenate([to_numpy(g).ravel() for g in flat])


def assert_layer_matches(ours, reference, x):
    """`ours(x)` equals `reference(x)` (float32 rounding) and so does the output shape
    `ours` computes."""
    expected = to_numpy(reference(x))
    np.testing.assert_allclose(to_numpy(ours(x)), expected, rtol=1e-5, atol=1e-5)
    assert ours.compute_output_shape(x.shape) == tuple(expected.shape)


def assert_gradients_match(ours, reference, x, rtol=1e-4, atol=1e-4, atol_of_largest=False):
    """`layer_gradients` of both layers agree for one random cotangent; with
    `atol_of_largest`, `atol` is a fraction of the largest expected gradient."""
    cotangent = random_features(reference.compute_output_shape(x.shape), seed=2)
    expected = layer_gradients(reference, x, cotangent).astype("float32")
    if atol_of_largest:
        atol = atol * np.abs(expected).max()
    np.testing.assert_allclose(layer_gradients(ours, x, cotangent).astype("float32"), expected,
                               rtol=rtol, atol=atol)


def assert_weights_files_interchange(ours, reference, x, directory):
    """Two functional models, ours built from our layer subclass and reference from
    Keras' layer: each reads the other's `.weights.h5` (Keras 3 keys a functional
    model's layers by class name) and then computes the same outputs."""
    for source, target in ((reference, ours), (ours, reference)):
        path = os.path.join(directory, f"{source.name}_{id(source)}.weights.h5")
        source.save_weights(path)
        target.load_weights(path)
        np.testing.assert_allclose(to_numpy(target(x)), to_numpy(source(x)), rtol=1e-5,
                                   atol=1e-5)


def assert_reloads_with_safe_mode(model, layer_class, x, directory):
    """`model` saved as `.keras` loads with `safe_mode=True`, its last layer still a
    `layer_class`, and computes the same outputs."""
    path = os.path.join(directory, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[-1], layer_class)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6)
