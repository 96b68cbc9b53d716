"""Scores a published preset with test-time flip: `evaluation_flip` in its metadata.json.

    python tools/score_preset_flip.py sanet_resnet50_os16_camvid
    python tools/score_preset_flip.py path/to/preset_folder --root ../shared/data/camvid

Runs `keras-sanet eval --preset FOLDER --flip` on CamVid val, on the folder's stored
files as users load them, and writes the scores and the protocol into the folder's
metadata.json under `evaluation_flip`, as `publish_preset.py --flip` does when
publishing (one function, `publish_preset.score_flip`). Only metadata.json changes:
it lists the sha256 of the weight files and config.json and is not hashed itself,
so the preset still passes its integrity check and loads.
"""

import argparse
import os
import sys
import tempfile

from publish_preset import CAMVID_ROOT
from publish_preset import score_flip


def preset_folder(name_or_folder):
    """The local folder of a preset: the folder itself, or a bundled preset's in weights/."""
    from keras_sanet.presets import METADATA_FILE
    from keras_sanet.presets.registry import bundled_preset

    if os.path.isdir(name_or_folder):
        folder = name_or_folder
    else:
        found = bundled_preset(name_or_folder)
        if found is None:
            sys.exit(
                f"{name_or_folder!r} is neither a preset folder nor a bundled preset name; "
                "pass the folder saved by save_preset, or a name of keras_sanet.list_presets()."
            )
        folder = found[0]
        if folder is None:
            sys.exit(
                f"The bundled preset {name_or_folder!r} has no local folder (only a url): "
                "download it, then pass its folder."
            )
    if not os.path.isfile(os.path.join(folder, METADATA_FILE)):
        sys.exit(f"{folder!r} has no {METADATA_FILE}: pass a preset folder (save_preset).")
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", metavar="NAME_OR_FOLDER", help="bundled preset name or folder")
    parser.add_argument("--root", default=CAMVID_ROOT, help="CamVid folder")
    parser.add_argument(
        "--output", metavar="PATH",
        help="also keep eval's full JSON here (default: only metadata.json gets the scores)",
    )
    args = parser.parse_args(argv)

    folder = preset_folder(args.preset)
    with tempfile.TemporaryDirectory() as scratch:
        record = score_flip(folder, args.root, args.output or os.path.join(scratch, "eval.json"))
    print(
        f"{folder}: with test-time flip mIoU {100 * record['mean_iou']:.2f}%, pixel accuracy "
        f"{100 * record['pixel_accuracy']:.2f}%, written to its metadata.json "
        "(evaluation_flip)"
    )


if __name__ == "__main__":
    main()
