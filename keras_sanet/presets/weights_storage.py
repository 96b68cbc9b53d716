"""How a preset stores its weights: float32, float16, or int8 kernels with per-channel scales.

A Keras `.weights.h5` file holds one float32 array per variable. A preset
may store it smaller:

- `"float16"`: every float32 array that fits float16's range is stored in
  float16 (half the size); Keras' `load_weights` casts it back.
- `"int8"`: every kernel (a float32 array of rank 2 or more: convolutions,
  dense layers) of at least `min_kernel_size` weights is stored as int8 with
  one float32 scale per output channel (the last axis; the one before it for
  a depthwise kernel), the abs-max scheme of
  `keras.quantizers.abs_max_quantize`: `kernel ~= int8 * scale`,
  `scale = max|kernel| / 127` over the channel. Smaller kernels are stored
  in float16: they are few weights but sit early in the network (a ResNet's
  stem and first stages), where int8 rounding costs the most accuracy.
  Biases and batch-norm statistics stay float32. About a quarter of the
  size. Keras cannot read the int8 arrays as they are:
  `float32_weight_files` writes a float32 copy first.

The stored file is what users load, so a preset's mIoU is measured on it
(`keras-sanet eval --preset`): the zoo keeps a smaller storage only where
it moves the mIoU by at most 0.1 points (`tools/publish_preset.py`).
"""

import contextlib
import os
import shutil
import tempfile

import numpy as np

WEIGHTS_DTYPES = ("float32", "float16", "int8")
# int8 storage keeps kernels of fewer weights than this in float16: on a ResNet-50 that is
# the stem, layer1 and layer2 (3 % of the weights). On the zoo's SANet-ResNet-50 that took
# the stored model from 0.37 to 0.04 mIoU points below float32
# (benchmarks/camvid_training_run.md, third cycle).
INT8_MIN_KERNEL_SIZE = 2**18
# The HDF5 attribute carrying an int8 array's per-channel scales (float32, broadcastable).
INT8_SCALE_ATTR = "keras_sanet_int8_scale"


def int8_channel_axis(shape):
    """The axis with one scale per entry: the output channels of a Keras kernel.

    Conv and dense kernels end with the output channels; a depthwise kernel
    `(kh, kw, channels, 1)` ends with its multiplier, so its channels come
    one axis earlier.
    """
    return len(shape) - 2 if shape[-1] == 1 and len(shape) > 2 else len(shape) - 1


def quantize_int8(values):
    """Symmetric per-channel int8 quantization. Returns `(int8 array, float32 scales)`.

    The scales keep the kernel's rank (size 1 on all but the channel axis),
    so `quantized * scale` is the dequantized kernel. A channel of zeros gets
    scale 1 (its int8 values are zeros).

    Example:
    >>> q, scale = quantize_int8(np.array([[0.5, -2.0], [1.0, 1.0]], "float32"))
    >>> q
    array([[ 64, -127],
           [127,   64]], dtype=int8)
    """
    values = np.asarray(values, np.float32)
    axis = int8_channel_axis(values.shape)
    others = tuple(i for i in range(values.ndim) if i != axis)
    peak = np.max(np.abs(values), axis=others, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    return quantized, scale


def dequantize_int8(quantized, scale):
    """`quantized * scale` in float32 (the inverse of `quantize_int8`, up to rounding)."""
    return np.asarray(quantized, np.float32) * np.asarray(scale, np.float32)


def _rewrite_h5(path, convert):
    """Copies the HDF5 file at `path` through `convert(dataset, values) -> (values, attrs)`.

    h5py does not reclaim the space of changed datasets: a new file replaces
    the old one, atomically.
    """
    import h5py

    def copy(source, target):
        target.attrs.update(source.attrs)
        for name, item in source.items():
            if isinstance(item, h5py.Group):
                copy(item, target.create_group(name))
                continue
            values, attrs = convert(item, item[()])
            target.create_dataset(name, data=values)
            target[name].attrs.update(item.attrs)
            target[name].attrs.update(attrs)

    rewritten = path + ".storage.tmp"
    try:
        with h5py.File(path, "r") as source, h5py.File(rewritten, "w") as target:
            copy(source, target)
        os.replace(rewritten, path)
    finally:
        if os.path.exists(rewritten):
            os.remove(rewritten)


def _fits_float16(values):
    """Whether float16 holds every value (its largest finite value is 65504)."""
    return not np.any(np.abs(values) > np.finfo(np.float16).max)


def store_weights_as_float16(path):
    """Rewrites the float32 arrays of a Keras `.weights.h5` file as float16, where they fit.

    Arrays holding values beyond float16's range (65504; e.g. the moving
    variance of a batch norm fed raw 0..255 pixels) stay float32.

    Returns:
        The HDF5 paths of the arrays kept in float32.
    """
    kept = []

    def convert(item, values):
        if item.dtype != np.float32:
            return values, {}
        if not _fits_float16(values):
            kept.append(item.name)
            return values, {}
        return values.astype(np.float16), {}

    _rewrite_h5(path, convert)
    return kept


def store_weights_as_int8(path, min_kernel_size=INT8_MIN_KERNEL_SIZE):
    """Rewrites the float32 kernels of a Keras `.weights.h5` file as int8 with scales.

    Args:
        path: the `.weights.h5` file, rewritten in place.
        min_kernel_size: kernels with fewer weights are stored in float16
            instead (float32 where a value is beyond float16's range); 0
            quantizes every kernel.

    Returns:
        `(int8_arrays, float16_arrays)`: the HDF5 paths of the kernels stored
        in int8 and of the small kernels stored in float16.

    Example:
    >>> int8_arrays, float16_arrays = store_weights_as_int8("model.weights.h5")
    """
    quantized, halved = [], []

    def convert(item, values):
        if item.dtype != np.float32 or values.ndim < 2:
            return values, {}
        if values.size < min_kernel_size:
            if not _fits_float16(values):
                return values, {}
            halved.append(item.name)
            return values.astype(np.float16), {}
        quantized.append(item.name)
        values, scale = quantize_int8(values)
        return values, {INT8_SCALE_ATTR: scale}

    _rewrite_h5(path, convert)
    return quantized, halved


def _dequantize_file(path, source_name):
    def convert(item, values):
        if item.dtype != np.int8:
            return values, {}
        if INT8_SCALE_ATTR not in item.attrs:
            raise ValueError(
                f"Preset {source_name!r}: the int8 array {item.name} has no "
                f"{INT8_SCALE_ATTR} attribute, so it cannot be turned back into float32 "
                "weights. Nothing was loaded. Save the preset again with save_preset."
            )
        return dequantize_int8(values, item.attrs[INT8_SCALE_ATTR]), {}

    _rewrite_h5(path, convert)


def _holds_int8(path):
    """Whether a weights file holds int8 arrays (read from its layout, not from metadata)."""
    import h5py

    found = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and item.dtype == np.int8:
            found.append(name)
            return True  # stops the walk
        return None

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return bool(found)


@contextlib.contextmanager
def float32_weight_files(weights_path, file_names, source_name):
    """Yields a weights path that Keras' `load_weights` reads correctly.

    float32 and float16 files load as they are. Files holding int8 arrays
    (found in the files themselves, so an edited metadata.json cannot make
    int8 values load as weights) are dequantized into a temporary folder
    that is removed afterwards, and the copy's path is yielded. `file_names`
    are the weight files beside `weights_path`: the weights file, or the
    shard index and its shards.
    """
    folder = os.path.dirname(weights_path)
    h5_names = [name for name in file_names if name.endswith(".h5")]
    if not any(_holds_int8(os.path.join(folder, name)) for name in h5_names):
        yield weights_path
        return
    with tempfile.TemporaryDirectory(prefix="keras_sanet_int8_") as tmp:
        for name in file_names:
            shutil.copyfile(os.path.join(folder, name), os.path.join(tmp, name))
            if name in h5_names:
                _dequantize_file(os.path.join(tmp, name), source_name)
        yield os.path.join(tmp, os.path.basename(weights_path))
