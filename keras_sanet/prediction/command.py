"""`keras-sanet predict`: colour masks and overlays for image files, optionally scored."""

import argparse
import json
import os

import numpy as np

from keras_sanet.data.dataset_info import IGNORE_INDEX
from keras_sanet.evaluation.command import add_size_multiple_argument
from keras_sanet.model_loading import add_model_arguments
from keras_sanet.model_loading import class_names_and_palette
from keras_sanet.model_loading import load_model_for_command

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_DESCRIPTION = """\
Segment images (PNG or JPEG, any size) and write, per image, <stem>_mask.png (the
colour mask; a palette PNG whose pixel values are the class ids) and
<stem>_overlay.png (the mask blended over the photo, with a legend of the classes
present). INPUTS are image files and/or folders of them.

The model comes from exactly one of:
  --preset NAME_OR_DIR      a zoo preset (keras_sanet.list_presets(), a preset folder,
                            hf://..., a URL); class names and colours come with it
  --model FILE.keras        a saved model; add --dataset camvid for CamVid's class
                            names and colours (else: "class <id>", VOC colours)

With --label MASK (one input image) or --labels DIR (DIR/<stem>.png per image) the
prediction is scored against the label masks (class ids; the dataset's label map,
e.g. CamVid's void 11 -> ignored, is applied): per-image and overall mIoU and
pixel accuracy are printed and written to OUTPUT/scores.json, with the protocol
(scales, flip, size_multiple, dtype_policy) under the keys keras-sanet eval uses.
"""


def add_arguments(parser):
    """Adds the `keras-sanet predict` options to an argparse parser."""
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    add_model_arguments(parser, path_flags=("--model",), weights_files=False, dtype=True)
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument(
        "--scales", default="1.0",
        help="comma-separated scale factors averaged per image (default 1.0; the paper: "
        "0.5,0.75,1.0,1.25,1.5,1.75)",
    )
    parser.add_argument("--flip", action="store_true", help="also predict mirrored images")
    add_size_multiple_argument(parser, default=32)
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the colours in the overlay"
    )
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--label", metavar="MASK", help="label mask of the single input image")
    labels.add_argument("--labels", metavar="DIR", help="folder of label masks named <stem>.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-jit", action="store_true", help="call the model eagerly (slower; for debugging)"
    )


# -- inputs --------------------------------------------------------------------


def _is_image(path):
    return path.lower().endswith(IMAGE_SUFFIXES)


def collect_images(inputs):
    """Image paths from files and folders (a folder's PNG/JPEG files, sorted)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, name)
                for name in os.listdir(item)
                if _is_image(name) and os.path.isfile(os.path.join(item, name))
            )
            if not found:
                raise ValueError(
                    f"The folder {item!r} holds no PNG or JPEG image "
                    f"({', '.join(IMAGE_SUFFIXES)}). Pass a folder of images, or the "
                    "image files themselves."
                )
            paths.extend(found)
        elif os.path.isfile(item):
            if not _is_image(item):
                raise ValueError(
                    f"{item!r} is not a PNG or JPEG file ({', '.join(IMAGE_SUFFIXES)}). "
                    "Convert it, or leave it out."
                )
            paths.append(item)
        else:
            raise ValueError(f"Input {item!r} does not exist. Check the path.")
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems and os.path.abspath(stems[stem]) != os.path.abspath(path):
            raise ValueError(
                f"{stems[stem]!r} and {path!r} would both be written as {stem}_mask.png. "
                "Predict them into different --output folders, or rename one."
            )
        stems[stem] = path
    return list(dict.fromkeys(paths))


def read_image(path):
    """An RGB image file as a `(height, width, 3)` uint8 array; ValueError if unreadable."""
    from PIL import Image
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(
            f"Cannot read the image {path!r} ({error}). Re-save it as PNG or JPEG, or "
            "leave it out."
        ) from error


def read_label(path, size, label_map, num_classes, ignore_index):
    """A class-id label mask, remapped by `label_map`, checked against `size` and the classes."""
    from PIL import Image
    from PIL import UnidentifiedImageError

    if not os.path.isfile(path):
        raise ValueError(f"Label mask {path!r} does not exist. Check --label / --labels.")
    try:
        with Image.open(path) as image:
            label = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"Cannot read the label mask {path!r} ({error}).") from error
    if label.ndim != 2:
        raise ValueError(
            f"Label mask {path!r} has shape {label.shape}; it must be one channel of class "
            "ids (8-bit grayscale or palette PNG), not a colour image."
        )
    if label.shape != tuple(size):
        raise ValueError(
            f"Label mask {path!r} is {label.shape[1]}x{label.shape[0]} but its image is "
            f"{size[1]}x{size[0]}. Pass the label of this image."
        )
    label = label.astype(np.int64)
    if label_map:
        remapped = label.copy()
        for raw, new in label_map.items():
            remapped[label == int(raw)] = int(new)
        label = remapped
    invalid = (label != ignore_index) & ((label < 0) | (label >= num_classes))
    if invalid.any():
        raise ValueError(
            f"Label mask {path!r} holds the value {int(label[invalid][0])}, which is neither "
            f"a class id (0..{num_classes - 1}) nor the ignore index {ignore_index}. Pass "
            "--dataset NAME (with --model) so its label map applies, or fix the mask."
        )
    return label


def _label_paths(args, images):
    if args.label:
        if len(images) != 1:
            raise ValueError(
                f"--label scores one image, but {len(images)} were given. Use --labels DIR "
                "(DIR/<stem>.png for each image)."
            )
        return [args.label]
    if args.labels:
        if not os.path.isdir(args.labels):
            raise ValueError(f"--labels {args.labels!r} is not a folder. Check the path.")
        paths = []
        for image in images:
            stem = os.path.splitext(os.path.basename(image))[0]
            path = os.path.join(args.labels, stem + ".png")
            if not os.path.isfile(path):
                raise ValueError(
                    f"No label mask for {image!r}: expected {path!r}. Name each label "
                    "<stem>.png after its image."
                )
            paths.append(path)
        return paths
    return [None] * len(images)


# -- the command -----------------------------------------------------------------


def run(args):
    """Runs `keras-sanet predict` with parsed arguments; returns the exit status 0."""
    from tqdm.auto import tqdm

    from keras_sanet.evaluation.command import parse_scales
    from keras_sanet.evaluation.command import parse_size_multiple
    from keras_sanet.evaluation.evaluate import summarize_confusion_matrix
    from keras_sanet.evaluation.inference import inference_protocol
    from keras_sanet.evaluation.inference import predict_logits
    from keras_sanet.visualization import save_prediction

    scales = parse_scales(args.scales)
    size_multiple = parse_size_multiple(args.size_multiple)
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha {args.alpha} must be in [0, 1].")
    images = collect_images(args.inputs)
    labels = _label_paths(args, images)
    model, metadata = load_model_for_command(args)
    class_names, palette = class_names_and_palette(model, metadata)
    ignore_index = int(metadata.get("ignore_index", IGNORE_INDEX))
    label_map = metadata.get("label_map") or {}
    num_classes = len(class_names)
    predictor = model if args.no_jit else model.predict_on_batch

    import keras

    total = np.zeros((num_classes, num_classes), np.int64)
    scores = []
    progress = tqdm(images, desc="predict", unit="image", disable=args.no_progress)
    for image_path, label_path in zip(progress, labels):
        image = read_image(image_path)
        logits = predict_logits(
            predictor, image[None].astype("float32"), scales=scales, flip=args.flip,
            size_multiple=size_multiple,
        )
        mask = np.argmax(keras.ops.convert_to_numpy(logits)[0], axis=-1).astype(np.uint8)
        stem = os.path.splitext(os.path.basename(image_path))[0]
        save_prediction(
            image, mask, palette, args.output, stem, class_names=class_names, alpha=args.alpha
        )
        if label_path is None:
            continue
        label = read_label(label_path, image.shape[:2], label_map, num_classes, ignore_index)
        valid = label != ignore_index
        matrix = np.bincount(
            label[valid] * num_classes + mask[valid].astype(np.int64),
            minlength=num_classes * num_classes,
        ).reshape(num_classes, num_classes)
        total += matrix
        mean_iou, pixel_accuracy, _ = summarize_confusion_matrix(matrix)
        scores.append(
            {"image": image_path, "label": label_path, "mean_iou": mean_iou,
             "pixel_accuracy": pixel_accuracy}
        )
        tqdm.write(
            f"{stem}: mIoU {100 * mean_iou:.2f}%, pixel accuracy {100 * pixel_accuracy:.2f}%"
        )

    print(f"Wrote {len(images)} mask(s) and overlay(s) to {args.output}")
    if scores:
        mean_iou, pixel_accuracy, per_class = summarize_confusion_matrix(total)
        summary = {
            "num_images": len(scores),
            "mean_iou": mean_iou,
            "pixel_accuracy": pixel_accuracy,
            "per_class_iou": {
                name: (None if np.isnan(iou) else float(iou))
                for name, iou in zip(class_names, per_class)
            },
            # The keys of keras-sanet eval's JSON: scores of one protocol compare.
            **inference_protocol(model, scales, args.flip, size_multiple),
            "images": scores,
        }
        with open(os.path.join(args.output, "scores.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        print(
            f"{len(scores)} labelled image(s): mIoU {100 * mean_iou:.2f}%, "
            f"pixel accuracy {100 * pixel_accuracy:.2f}%"
        )
    return 0
