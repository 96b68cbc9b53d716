"""`keras-sanet attention`: the paper's Figure 6 (SA-head attention maps) for an image."""

import argparse
import os

from keras_sanet.attention_maps import NUM_HEADS
from keras_sanet.model_loading import add_model_arguments
from keras_sanet.model_loading import class_names_and_palette
from keras_sanet.model_loading import load_model_for_command

_DESCRIPTION = """\
Draw the attention maps of a trained SANet's SA heads for chosen points of an image,
as in Figure 6 of the paper: for each point and each head, the L2 distance between
the attention branch's feature vector at the point and at every other position
(bright = near), and the main branch's channel most activated at the point; with the
image and the colour prediction. Writes one PNG.

Points are pixel coordinates of the input image, x from the left and y from the top:
  --points 385,215 240,320 250,40

The model comes from exactly one of:
  --preset NAME_OR_DIR            a zoo preset; class names and colours come with it
  --weights FILE.keras            a saved model (alias: --model)
  --weights FILE.weights.h5 --config CONFIG
                                  weights only; CONFIG (the training TOML, or a run's
                                  config.json) gives the SANet arguments
Add --dataset NAME (e.g. camvid) for the class names and colours of a --weights model.

Example (the README's picture):
  keras-sanet attention examples/camvid_0016E5_07959.png \\
      --preset sanet_mobilenetv2_os16_camvid --points 385,215 240,320 250,40 \\
      --output docs/camvid_0016E5_07959_attention.png
"""


def add_arguments(parser):
    """Adds the `keras-sanet attention` options to an argparse parser."""
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("image", metavar="IMAGE", help="a PNG or JPEG image")
    parser.add_argument(
        "--points", nargs="+", required=True, metavar="X,Y",
        help="pixel coordinates of the points, x from the left and y from the top",
    )
    parser.add_argument(
        "--heads", nargs="+", type=int, default=[1, 4], metavar="N",
        help=f"SA heads to draw, 1 (low level) .. {NUM_HEADS} (high level); default: 1 4 "
        "(the paper's Figure 6)",
    )
    add_model_arguments(parser, dtype=True)
    parser.add_argument(
        "--output", required=True, metavar="PATH",
        help="the PNG to write, or a folder (then FOLDER/<image stem>_attention.png)",
    )
    parser.add_argument(
        "--panel-width", type=int, default=320, metavar="PIXELS",
        help="width of each picture in the grid (default 320)",
    )


def parse_points(texts):
    """`["385,215", "10,20"]` -> `((385, 215), (10, 20))`; ValueError naming the bad one."""
    points = []
    for text in texts:
        parts = str(text).split(",")
        try:
            point = tuple(int(part.strip()) for part in parts)
        except ValueError:
            point = ()
        if len(point) != 2:
            raise ValueError(
                f"--points {text!r} is not a point: write each point as X,Y in whole "
                "pixels, x from the left and y from the top, e.g. --points 385,215 240,320."
            )
        points.append(point)
    return tuple(points)


def _output_path(output, image_path):
    if os.path.isdir(output) or output.endswith(os.sep):
        stem = os.path.splitext(os.path.basename(image_path))[0]
        return os.path.join(output, f"{stem}_attention.png")
    if not output.lower().endswith(".png"):
        raise ValueError(
            f"--output {output!r} must be a .png file or an existing folder; e.g. "
            "--output attention.png."
        )
    return output


def run(args):
    """Runs `keras-sanet attention` with parsed arguments; returns the exit status 0."""
    from keras_sanet.attention_figure import attention_figure
    from keras_sanet.attention_maps import check_heads
    from keras_sanet.attention_maps import check_points
    from keras_sanet.attention_maps import point_attention_maps
    from keras_sanet.prediction.command import read_image

    points = parse_points(args.points)
    heads = check_heads(args.heads)
    if args.panel_width < 16:
        raise ValueError(f"--panel-width {args.panel_width} is too small; use at least 16.")
    if not os.path.isfile(args.image):
        raise ValueError(f"Image {args.image!r} does not exist. Check the path.")
    output = _output_path(args.output, args.image)
    image = read_image(args.image)
    # Check the points before the (slow) model load.
    points = check_points(points, image.shape[:2])
    model, metadata = load_model_for_command(args)
    class_names, palette = class_names_and_palette(model, metadata)
    maps = point_attention_maps(model, image, points, heads=heads)
    picture = attention_figure(
        image, maps, palette, class_names=class_names, panel_width=args.panel_width
    )
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    picture.save(output)
    for (head, index), channel in sorted(maps.main_channel.items()):
        x, y = maps.points[index]
        row, column = maps.feature_points[(head, index)]
        print(
            f"point {index + 1} ({x},{y}) head {head}: feature cell (row {row}, column "
            f"{column}) of {maps.distance[(head, index)].shape[0]}x"
            f"{maps.distance[(head, index)].shape[1]}, most activated main channel {channel}"
        )
    print(f"Wrote {output}")
    return 0
