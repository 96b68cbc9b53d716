"""`keras-sanet export`: a SANet as a SavedModel, TFLite or ONNX artifact, checked against Keras."""

import argparse
import os
import time

import numpy as np

from keras_sanet.export import FORMATS
from keras_sanet.export import SUFFIXES
from keras_sanet.model_loading import add_model_arguments
from keras_sanet.model_loading import load_model_for_command

DEFAULT_ATOL = 1e-4
# Size of the random check image when neither --input-size nor a preset gives one.
DEFAULT_CHECK_SIZE = (256, 256)
MB = 1024 * 1024

_DESCRIPTION = """\
Export a SANet for deployment, then check it: run Keras and the exported model on
the same image (--check IMAGE, else a fixed random one) and compare the logits.
Fails (exit status 2) when the largest difference is above --atol.

Formats (--format) and the Keras backend that exports them (KERAS_BACKEND):
  saved_model  a TensorFlow SavedModel folder (signature serving_default);
               tensorflow or jax; any image size
  tflite       a LiteRT/TFLite .tflite file; tensorflow; one fixed image size
  onnx         an .onnx file for onnxruntime; tensorflow (any image size) or
               torch (one fixed image size, one image per call)
A fixed-size export takes --input-size H W (default: the preset's input size);
the artifact then takes only images of that size. A preset or .keras file loads
on every backend: export on one that has the format. Every artifact takes
float32 RGB images in 0..255, (batch, height, width, 3), and returns the logits
(batch, height, width, classes). Needs: pip install "keras-sanet[export]".

The model comes from exactly one of:
  --preset NAME_OR_DIR            a zoo preset
  --weights FILE.keras            a saved model (alias: --model)
  --weights FILE.weights.h5 --config CONFIG
                                  weights only; CONFIG (the training TOML, or a run's
                                  config.json) gives the SANet arguments

Example:
  KERAS_BACKEND=tensorflow keras-sanet export --preset sanet_mobilenetv2_os16_camvid \\
      --format onnx --output out/model.onnx --check examples/camvid_0016E5_07959.png
"""


def add_arguments(parser):
    """Adds the `keras-sanet export` options to an argparse parser."""
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_model_arguments(parser, dataset=False)
    parser.add_argument("--format", required=True, choices=FORMATS, help="the artifact's format")
    parser.add_argument(
        "--output", required=True, metavar="PATH",
        help="the SavedModel folder, or the .tflite / .onnx file to write",
    )
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"),
        help="fix the image size (height width); needed by tflite, and by onnx on torch "
        "(default there: the preset's input size)",
    )
    parser.add_argument(
        "--check", metavar="IMAGE",
        help="check on this PNG/JPEG (resized to a fixed --input-size) instead of a "
        "random image",
    )
    parser.add_argument(
        "--atol", type=float, default=DEFAULT_ATOL,
        help=f"largest allowed |Keras - exported| logit difference (default {DEFAULT_ATOL:g})",
    )


def check_images(image_path, size):
    """The `(1, H, W, 3)` float32 check batch and what it is, for the report.

    Args:
        image_path: a PNG/JPEG file, or None for a fixed random image.
        size: `(height, width)` the export takes (the image is resized to it),
            or None to keep the image's own size.

    Example:
    >>> check_images(None, (64, 64))[0].shape
    (1, 64, 64, 3)
    """
    from PIL import Image

    from keras_sanet.prediction.command import read_image

    if image_path is None:
        size = size or DEFAULT_CHECK_SIZE
        rng = np.random.default_rng(0)
        image = rng.uniform(0, 255, (*size, 3)).astype(np.float32)
        return image[None], f"a random {size[0]}x{size[1]} image"
    image = read_image(image_path)
    what = f"{image_path} ({image.shape[0]}x{image.shape[1]})"
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
        what += f", resized to {size[0]}x{size[1]}"
    return image[None].astype(np.float32), what


def _validate(args):
    if args.atol < 0:
        raise ValueError(f"--atol {args.atol} must be >= 0.")
    if args.input_size is not None and min(args.input_size) < 1:
        raise ValueError(f"--input-size {args.input_size} must be two positive sizes, H W.")
    suffix = SUFFIXES.get(args.format)
    if suffix and not args.output.endswith(suffix):
        raise ValueError(
            f"--output {args.output!r}: a {args.format} export is a {suffix} file, e.g. "
            f"--output out/model{suffix}."
        )
    if args.check and not os.path.isfile(args.check):
        raise ValueError(f"--check image {args.check!r} does not exist. Check the path.")


def run(args):
    """Runs `keras-sanet export` with parsed arguments; returns 0 (ValueError on failure)."""
    import keras

    from keras_sanet.export import check_format
    from keras_sanet.export import export_model
    from keras_sanet.export import exported_size
    from keras_sanet.export import load_exported
    from keras_sanet.export import max_abs_difference

    _validate(args)
    backend = keras.backend.backend()
    # Before the (slow) model load: a format this backend cannot export fails now.
    dynamic = check_format(args.format, backend)
    model, metadata = load_model_for_command(args)
    # A preset's training crop; None for a file model.
    preset_size = tuple(metadata["input_size"]) if metadata.get("input_size") else None
    input_size = tuple(args.input_size) if args.input_size else None
    if input_size is None and not dynamic:
        if preset_size is None:
            raise ValueError(
                f"{args.format} on the {backend} backend needs a fixed image size: pass "
                "--input-size H W."
            )
        input_size = preset_size
        print(
            f"{args.format} on {backend} takes one image size: exporting for "
            f"{input_size[0]}x{input_size[1]} (the preset's input size; --input-size H W "
            "for another)."
        )
    size_text = f"{input_size[0]}x{input_size[1]}" if input_size else "any size"
    print(
        f"Keras model: {model.count_params():,} parameters "
        f"({model.count_params() * 4 / MB:.1f} MB as float32)"
    )
    print(f"Exporting {args.format} ({backend} backend, images {size_text}) to {args.output} ...")
    start = time.perf_counter()
    export_model(model, args.output, args.format, input_size=input_size)
    print(
        f"Wrote {args.output}: {exported_size(args.output) / MB:.1f} MB in "
        f"{time.perf_counter() - start:.0f} s"
    )

    images, what = check_images(args.check, input_size or (None if args.check else preset_size))
    predict = load_exported(args.output, args.format)
    difference = max_abs_difference(model, predict, images)
    print(f"Check on {what}: max |Keras - {args.format}| logit difference {difference:.3g}")
    if not difference <= args.atol:  # also catches NaN
        raise ValueError(
            f"the exported model differs from Keras by {difference:.3g} on {what}, more "
            f"than --atol {args.atol:g}. {args.output} was written but does not reproduce "
            "the Keras logits; do not deploy it."
        )
    print(f"OK: within --atol {args.atol:g}")
    return 0
