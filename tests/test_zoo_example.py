"""The README's first command: the bundled zoo model segments the shipped CamVid frame."""

import json
import os

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from keras_sanet.cli import main

PRESET = "sanet_mobilenetv2_os16_camvid"
FRAME = os.path.join(REPO_ROOT, "examples", "camvid_0016E5_07959.png")
LABEL = os.path.join(REPO_ROOT, "examples", "camvid_0016E5_07959_label.png")
# Measured with `keras-sanet predict ... --label` when the preset was published (see
# weights/sanet_mobilenetv2_os16_camvid/metadata.json); a little slack for backend numerics.
MIN_FRAME_MIOU = 0.60  # measured 0.6316 under TensorFlow


def test_predict_on_the_shipped_frame_writes_overlay_and_scores_well(tmp_path):
    output = str(tmp_path / "out")
    code = main(["predict", FRAME, "--preset", PRESET, "--output", output, "--label", LABEL,
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
    assert scores["mean_iou"] >= MIN_FRAME_MIOU
