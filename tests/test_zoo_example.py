"""The README's first command: the bundled zoo model segments the shipped CamVid frame."""

import json
import os

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from keras_sanet.cli import main

FRAME = os.path.join(REPO_ROOT, "examples", "camvid_0016E5_07959.png")
LABEL = os.path.join(REPO_ROOT, "examples", "camvid_0016E5_07959_label.png")


# The frame's mIoU measured with `keras-sanet predict ... --label` under TensorFlow (default
# --size-multiple 32 padding): 0.6242, 0.7037 for the 50-epoch SANet-ResNet-50 and 0.7245 for
# its 50-epoch FCN twin; a little slack for backend numerics. The ResNet-50 presets (69 MB and
# 42 MB, 65M and 39M parameters) are in the slow set.
@pytest.mark.parametrize(
    "preset, min_frame_miou",
    [
        ("sanet_mobilenetv2_os16_camvid", 0.60),
        pytest.param("sanet_resnet50_os16_camvid", 0.68, marks=pytest.mark.slow),
        pytest.param("fcn_resnet50_os16_camvid", 0.70, marks=pytest.mark.slow),
    ],
)
def test_predict_on_the_shipped_frame_writes_overlay_and_scores_well(
    tmp_path, preset, min_frame_miou
):
    output = str(tmp_path / "out")
    code = main(["predict", FRAME, "--preset", preset, "--output", output, "--label", LABEL,
                 "--no-progress"])
    assert code == 0
    overlay = Image.open(os.path.join(output, "camvid_0016E5_07959_overlay.png"))
    mask = Image.open(os.path.join(output, "camvid_0016E5_07959_mask.png"))
    assert mask.size == (480, 360)
    assert overlay.size[0] >= 480 and overlay.size[1] >= 360
    ids = np.asarray(mask)
    assert set(np.unique(ids)) <= set(range(11))
    with open(os.path.join(output, "scores.json")) as f:
        scores = json.load(f)
    assert scores["mean_iou"] >= min_frame_miou


def test_every_bundled_preset_passes_its_sha256_check():
    """What from_preset checks first, for every preset in weights/manifest.json (cheap)."""
    from keras_sanet.presets import preset_names, verify_preset
    from keras_sanet.presets.registry import bundled_preset

    names = preset_names()
    assert {"sanet_mobilenetv2_os16_camvid", "sanet_resnet50_os16_camvid",
            "fcn_resnet50_os16_camvid"} <= set(names)
    for name in names:
        folder, _ = bundled_preset(name)
        assert folder is not None, f"{name}: its folder is missing from weights/"
        verify_preset(folder, source=name)
