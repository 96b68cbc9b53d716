"""tools/publish_preset.py: how a zoo entry's files are laid out and scored."""

import importlib.util
import json
import os

import pytest
from helpers import REPO_ROOT

from keras_sanet import SANet
from keras_sanet.presets import verify_preset


def _publish_tool():
    path = os.path.join(REPO_ROOT, "tools", "publish_preset.py")
    spec = importlib.util.spec_from_file_location("publish_preset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publish = _publish_tool()
R50_SANET_PARAMETERS = 65_447_682  # the zoo's SANet-ResNet-50 at output stride 16


@pytest.mark.parametrize(
    "weights_dtype, expected",
    [("int8", None), ("float16", 0.18), ("float32", 0.09)],
)
def test_shard_size_keeps_every_stored_file_under_the_limit(weights_dtype, expected):
    size = publish.shard_size(R50_SANET_PARAMETERS, weights_dtype)
    if expected is None:  # 65 MB in int8: one file
        assert size is None
        return
    assert size == pytest.approx(expected)
    stored_shard = size * 2**30 * publish.BYTES_PER_WEIGHT[weights_dtype] / 4
    assert stored_shard < 100e6


def test_write_evaluation_changes_metadata_only(tmp_path):
    model = SANet(backbone="resnet18", output_stride=32, num_classes=3)
    folder = tmp_path / "preset"
    model.save_to_preset(str(folder), {"dataset": "toy", "class_names": ["a", "b", "c"]},
                         weights_dtype="int8")
    before = json.loads((folder / "metadata.json").read_text())
    evaluation = {"mean_iou": 0.5, "pixel_accuracy": 0.9, "preset": "toy"}
    publish.write_evaluation(str(folder), evaluation)
    after = json.loads((folder / "metadata.json").read_text())
    assert after["evaluation"] == evaluation
    assert {k: v for k, v in after.items() if k != "evaluation"} == {
        k: v for k, v in before.items() if k != "evaluation"
    }
    verify_preset(str(folder))  # the hashed files are those that were scored
