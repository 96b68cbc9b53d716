"""Checking a `.weights.h5` file against a model before loading it."""

import os
import tempfile

import h5py


def h5_variable_shapes(path):
    """Maps each variable path in a Keras `.weights.h5` file to its shape."""
    shapes = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            shapes[name] = tuple(obj.shape)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return shapes


def weights_mismatch(model, path):
    """Returns a sentence describing how `path` differs from `model`, or `None`.

    The model's own layout is obtained by saving it to a temporary file, so the
    comparison follows exactly the paths Keras will use when loading.
    """
    try:
        file_shapes = h5_variable_shapes(path)
    except OSError as error:
        return f"it is not a readable Keras weights file ({error})"
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "reference.weights.h5")
        model.save_weights(reference)
        model_shapes = h5_variable_shapes(reference)
    # Optimizer slots differ legitimately (a compiled vs an uncompiled model).
    file_shapes = {k: v for k, v in file_shapes.items() if not k.startswith("optimizer")}
    model_shapes = {k: v for k, v in model_shapes.items() if not k.startswith("optimizer")}
    for name, shape in model_shapes.items():
        if name in file_shapes and file_shapes[name] != shape:
            return (
                f"variable {name!r} has shape {file_shapes[name]} in the file but "
                f"{shape} in the model"
            )
    missing = sorted(set(model_shapes) - set(file_shapes))
    if missing:
        return f"the file has no values for {len(missing)} variable(s) of the model, e.g. {missing[0]!r}"
    extra = sorted(set(file_shapes) - set(model_shapes))
    if extra:
        return f"the file holds {len(extra)} variable(s) the model lacks, e.g. {extra[0]!r}"
    return None


def classes_in_weights_file(path):
    """The number of classes a SANet weights file was saved with, if it can tell."""
    shapes = h5_variable_shapes(path)
    for name, shape in shapes.items():
        if name.startswith("heads/") and "classifier" in name and name.endswith("vars/1"):
            return shape[0]
    return None
