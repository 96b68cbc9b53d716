"""`keras-sanet eval`: score a trained model on a split, optionally with the paper's protocol."""

import argparse
import dataclasses
import json
import os

from keras_sanet.data.dataset_info import IGNORE_INDEX
from keras_sanet.model_loading import add_model_arguments
from keras_sanet.model_loading import resolve_model_source

PAPER_SCALES = "0.5,0.75,1.0,1.25,1.5,1.75"
# The named datasets of keras_sanet.data.readers, then any folder of pairs.
DATASETS = ("camvid", "voc", "voc_aug", "context59", "context60", "folder")

_DESCRIPTION = """\
Evaluate a model on a split: per-class IoU, mIoU and pixel accuracy from one
confusion matrix over the whole split. Prints a Markdown table and writes the
results as JSON.

The model comes from exactly one of:
  --weights FILE.keras            a saved model (keras.saving.load_model, safe mode)
  --weights FILE.weights.h5 --config CONFIG
                                  weights only; CONFIG (the training TOML, or a run's
                                  config.json) gives the SANet arguments
  --run-dir RUN [--checkpoint final|best|last]
                                  a training output folder: RUN/model.keras (final),
                                  RUN/checkpoints/best.weights.h5 (best val mIoU) or
                                  last.weights.h5, with RUN/config.json giving the SANet
                                  arguments and the dataset defaults
  --preset NAME_OR_DIR            a zoo preset (SANet.from_preset); its metadata's
                                  dataset is the default dataset

The data defaults to the config's [data] section, else CamVid; the split and
the test protocol default to the config's [eval] section (the paper configs
carry the paper's protocol), else val, single scale, no flip, whole images.
Options given here win. The paper's test protocol is
  --scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip --crop-size H,W   (the training crop)
and on PASCAL also --base-size 520 (PyTorch-Encoding: scale s sets the long side
to 520*s). Context-59 scores 59 classes with background ignored, Context-60 counts
background as a 60th class; VOC scores 21 classes, its 255 borders ignored.
"""


def add_arguments(parser):
    """Adds the `keras-sanet eval` options to an argparse parser."""
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_model_arguments(
        parser, path_flags=("--weights",), run_dir=True, dataset=False, data_config=True,
        dtype=True,
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", choices=DATASETS, default=None,
        help="dataset reader (default: the config's, else camvid)",
    )
    data.add_argument(
        "--root",
        help="the named dataset's folder: CamVid's, VOCdevkit/VOC2012 (voc, voc_aug) or "
        "VOCdevkit/VOC2010 (context59, context60) (default: the config's data.root)",
    )
    data.add_argument(
        "--split", default=None, help="split to score (default: the config's eval.split, else val)"
    )
    data.add_argument("--images", help="folder of images (--dataset folder)")
    data.add_argument("--masks", help="folder of class-id masks (--dataset folder)")
    data.add_argument(
        "--num-classes", type=int, default=None,
        help="classes of a folder dataset (default: the config's, else the model's)",
    )
    data.add_argument(
        "--ignore-index", type=int, default=IGNORE_INDEX,
        help=f"mask value left out of the scores, folder data (default: {IGNORE_INDEX}; "
        "CamVid's is fixed)",
    )
    data.add_argument("--batch-size", type=int, default=1, help="images per batch (default 1)")
    data.add_argument("--limit", type=int, default=None, help="score only the first N images")

    protocol = parser.add_argument_group(
        "test protocol (defaults: the config's [eval] section, else single scale)"
    )
    protocol.add_argument(
        "--scales", default=None,
        help=f"comma-separated scale factors (default 1.0; the paper: {PAPER_SCALES})",
    )
    protocol.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None,
        help="also predict mirrored images (--no-flip: do not, whatever the config says)",
    )
    protocol.add_argument(
        "--crop-size", metavar="H,W", default=None,
        help="sliding-window size, e.g. 360,480 or 480 (default: whole images; 0: whole "
        "images whatever the config says)",
    )
    protocol.add_argument(
        "--base-size", type=int, default=None,
        help="long side at scale 1 (PyTorch-Encoding's PASCAL protocol: 520); default 0: "
        "scales multiply each image's own size",
    )
    protocol.add_argument(
        "--stride-ratio", type=float, default=None,
        help="window stride as a fraction of the crop (default 2/3)",
    )
    add_size_multiple_argument(protocol, default=0)

    output = parser.add_argument_group("output")
    output.add_argument(
        "--output", metavar="PATH",
        help="results JSON (default: next to the weights, "
        "<weights>.eval-<dataset>-<split>.json)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument(
        "--no-jit", action="store_true", help="call the model eagerly (slower; for debugging)"
    )


# -- parsing -------------------------------------------------------------------


def add_size_multiple_argument(parser, default):
    """Adds `--size-multiple N` (`keras-sanet predict` and `eval`); see `parse_size_multiple`."""
    parser.add_argument(
        "--size-multiple", metavar="N", default=str(default),
        help="mirror-pad whole images at the bottom and right up to multiples of N pixels "
        "(logits cropped back), so all sizes in one bucket share one compiled model; "
        f"slightly changes the context at those edges (default {default}; 0: exact sizes)",
    )


def parse_size_multiple(text):
    """`"32"` -> 32, `"0"` -> 0 (exact sizes); a ValueError naming the expected form otherwise."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"--size-multiple {text!r} must be a whole number >= 0: e.g. 32 pads each image "
            "up to multiples of 32 pixels, 0 keeps the exact sizes."
        )
    return value


def parse_scales(text):
    """`"0.5,1.0"` -> `(0.5, 1.0)`; a ValueError naming the expected form otherwise."""
    try:
        scales = tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(
            f"--scales {text!r} must be comma-separated positive numbers, e.g. 1.0 or "
            f"{PAPER_SCALES}."
        )
    return scales


def parse_crop_size(text):
    """`"360,480"` -> `(360, 480)`, `"512"` -> `(512, 512)`, `None` or `"0"` -> `None`."""
    if text is None or str(text).strip() == "0":
        return None
    try:
        sides = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1:
        raise ValueError(
            f"--crop-size {text!r} must be HEIGHT,WIDTH (or one size for a square), "
            "e.g. 360,480."
        )
    return sides


# -- the data --------------------------------------------------------------------


def _int_label_map(label_map):
    try:
        return {int(raw): int(new) for raw, new in (label_map or {}).items()} or None
    except (TypeError, ValueError):
        raise ValueError(
            f"The config's data.label_map {label_map!r} must map integer ids to integer "
            'ids, e.g. {"0" = 255}.'
        ) from None


def _build_dataset(args, data_config, model_num_classes, metadata):
    """Returns `(name, tf_dataset, num_classes, class_names, ignore_index, num_images)`."""
    from keras_sanet.data import folder_pairs, named_dataset_info, named_pairs
    from keras_sanet.data import segmentation_dataset

    preset_dataset = metadata.get("dataset")
    dataset = (
        args.dataset
        or (data_config.dataset if data_config else None)
        or (preset_dataset if preset_dataset in DATASETS else None)
        or "camvid"
    )
    progress = not args.no_progress
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be >= 1.")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit} must be >= 1 (images to score).")

    if dataset != "folder":
        info = named_dataset_info(dataset)
        root = args.root
        if not root and data_config is not None and data_config.dataset == dataset:
            root = data_config.root
        if not root and dataset == "camvid" and data_config is not None:
            root = data_config.root
        if not root:
            raise ValueError(
                f"No {dataset} folder: pass --root (see keras-sanet eval --help for the folder "
                "each dataset expects)."
            )
        if args.num_classes not in (None, info.num_classes):
            raise ValueError(
                f"--num-classes {args.num_classes} does not match {dataset}'s "
                f"{info.num_classes} classes; leave it out."
            )
        if args.split not in info.splits:
            raise ValueError(
                f"--split {args.split!r} is not a split of {dataset}; use one of "
                f"{', '.join(info.splits)}."
            )
        pairs = named_pairs(dataset, root, args.split)
        num_classes, class_names = info.num_classes, list(info.class_names)
        # Palette PNGs (VOC) are read as indices by Pillow either way.
        reader_kwargs = {"dataset_info": info}
        ignore_index = info.ignore_index
    else:
        images, masks = args.images, args.masks
        if data_config is not None and data_config.dataset == "folder":
            split_dirs = {
                "train": (data_config.train_images, data_config.train_masks),
                "val": (data_config.val_images, data_config.val_masks),
            }.get(args.split, ("", ""))
            images, masks = images or split_dirs[0] or None, masks or split_dirs[1] or None
        if not images or not masks:
            raise ValueError(
                "--dataset folder needs --images DIR and --masks DIR (or a config whose "
                f"[data] names the {args.split} folders)."
            )
        num_classes = args.num_classes
        if num_classes is None and data_config is not None and data_config.num_classes > 0:
            num_classes = data_config.num_classes
        if num_classes is None:
            num_classes = model_num_classes
        if num_classes is None:
            raise ValueError(
                "The number of classes is unknown: pass --num-classes N (the classes of the "
                "masks, without the ignore index)."
            )
        pairs = folder_pairs(images, masks)
        class_names = metadata.get("class_names")
        if class_names is not None and len(class_names) != num_classes:
            class_names = None
        label_map = _int_label_map(data_config.label_map) if data_config else None
        ignore_index = args.ignore_index
        reader_kwargs = {
            "num_classes": num_classes,
            "label_map": label_map,
            "ignore_index": args.ignore_index,
        }
    if args.limit is not None:
        # Read (and scan) only what is scored.
        pairs = pairs[: args.limit]
    ds = segmentation_dataset(
        pairs,
        augment=False,
        shuffle=False,
        batch_size=args.batch_size,
        progress=progress,
        **reader_kwargs,
    )
    return dataset, ds, num_classes, class_names, ignore_index, len(pairs)


def resolve_protocol(args, eval_config=None):
    """The split and test protocol: the command line, else the config's [eval], else defaults.

    Returns:
        A dict with `split`, `scales`, `flip`, `crop_size`, `base_size`
        (`None` for own-size scaling) and `stride_ratio`.
    """
    from keras_sanet.training.config import EvalConfig

    e = eval_config or EvalConfig()
    scales = parse_scales(args.scales) if args.scales is not None else tuple(
        float(v) for v in e.scales
    )
    if args.crop_size is not None:
        crop_size = parse_crop_size(args.crop_size)
    else:
        crop_size = tuple(e.crop_size) or None
    base_size = e.base_size if args.base_size is None else args.base_size
    if base_size < 0:
        raise ValueError(f"--base-size {base_size} must be >= 0 (0: each image's own size).")
    stride_ratio = e.stride_ratio if args.stride_ratio is None else args.stride_ratio
    if not 0 < stride_ratio <= 1:
        raise ValueError(f"--stride-ratio {stride_ratio} must be in (0, 1]; the paper uses 2/3.")
    return {
        "split": args.split or e.split,
        "scales": scales,
        "flip": e.flip if args.flip is None else bool(args.flip),
        "crop_size": crop_size,
        "base_size": base_size or None,
        "stride_ratio": float(stride_ratio),
    }


def _default_output(args, weights_path, dataset):
    suffix = f".eval-{dataset}-{args.split}.json"
    if weights_path is None:  # a preset
        return os.path.basename(os.path.normpath(args.preset)) + suffix
    for ending in (".weights.h5", ".keras"):
        if weights_path.endswith(ending):
            return weights_path[: -len(ending)] + suffix
    return weights_path + suffix


# -- the command -----------------------------------------------------------------


def run(args):
    """Runs `keras-sanet eval` with parsed arguments; returns the exit status 0.

    Problems (missing files, mismatched classes, bad options) raise ValueErrors
    naming the fix; `keras_sanet.cli` prints them without a traceback.
    """
    from keras_sanet.evaluation.evaluate import evaluate_model, format_table

    source = resolve_model_source(args)
    # Parse the protocol options before any loading, so typos fail fast.
    if args.scales is not None:
        parse_scales(args.scales)
    parse_crop_size(args.crop_size)
    size_multiple = parse_size_multiple(args.size_multiple)

    config = source.config
    data_config = config.data if config else None
    protocol = resolve_protocol(args, config.eval if config else None)
    args.split = protocol["split"]

    if source.from_weights_file:
        model, metadata = None, {}  # built below, once the dataset fixes num_classes
    else:
        model, metadata = source.load()
    model_num_classes = getattr(model, "num_classes", None)
    dataset_name, ds, num_classes, class_names, ignore_index, num_images = _build_dataset(
        args, data_config, model_num_classes, metadata
    )
    if model is None:
        model, _ = source.load(num_classes)
    elif model_num_classes is not None and model_num_classes != num_classes:
        raise ValueError(
            f"The model predicts {model_num_classes} classes but the {dataset_name} data "
            f"has {num_classes}. Evaluate the model on the dataset it was trained for "
            "(or pass the matching --num-classes for a folder dataset)."
        )

    results = evaluate_model(
        model,
        ds,
        num_classes,
        class_names=class_names,
        ignore_index=ignore_index,
        scales=protocol["scales"],
        flip=protocol["flip"],
        crop_size=protocol["crop_size"],
        stride_ratio=protocol["stride_ratio"],
        base_size=protocol["base_size"],
        size_multiple=size_multiple,
        progress=not args.no_progress,
        limit=args.limit,
        jit=not args.no_jit,
        total_images=num_images,
    )
    results.update(
        {
            "dataset": dataset_name,
            "split": args.split,
            "weights": source.path,
            "preset": args.preset,
        }
    )
    if config is not None and (config.paper.figure or config.paper.mean_iou):
        results["paper"] = dataclasses.asdict(config.paper)
    output = args.output or _default_output(args, source.path, dataset_name)
    output_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(output_dir, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    print(format_table(results))
    print(
        f"\n{dataset_name} {args.split}: {results['num_images']} images, "
        f"mIoU {100 * results['mean_iou']:.2f}%, "
        f"pixel accuracy {100 * results['pixel_accuracy']:.2f}%"
    )
    print(f"Results written to {output}")
    return 0
