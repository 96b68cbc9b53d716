"""tools/publish_preset.py and tools/score_preset_flip.py: a zoo entry's files and scores."""

import json
import os
import sys

import keras
import pytest
from helpers import REPO_ROOT
from test_data_fakes import make_camvid_tree

from keras_sanet import SANet
from keras_sanet import cli
from keras_sanet.data import CAMVID_INFO
from keras_sanet.data import camvid_dataset
from keras_sanet.evaluation import evaluate_model
from keras_sanet.presets import load_preset
from keras_sanet.presets import verify_preset

# The tools import each other by name, as when run as scripts from tools/.
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import publish_preset as publish  # noqa: E402
import score_preset_flip  # noqa: E402

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


# -- test-time flip scores (evaluation_flip) ---------------------------------------------


@pytest.fixture(scope="module")
def camvid_model(tmp_path_factory):
    """A tiny 11-class SANet, a fake CamVid (3 val frames of 12x16) and its scores with flip."""
    keras.utils.set_random_seed(7)
    camvid = str(tmp_path_factory.mktemp("camvid"))
    make_camvid_tree(camvid, counts=(("train", 1), ("val", 3)))
    model = SANet(backbone="resnet18", output_stride=32, num_classes=CAMVID_INFO.num_classes)
    scores = {
        flip: evaluate_model(
            model, camvid_dataset(camvid, "val", batch_size=1, progress=False),
            CAMVID_INFO.num_classes, class_names=CAMVID_INFO.class_names, flip=flip,
            progress=False,
        )
        for flip in (False, True)
    }
    # Else a score could not tell whether the flip was used.
    assert scores[True]["confusion_matrix"] != scores[False]["confusion_matrix"]
    return model, camvid, scores


def _eval_calls(monkeypatch):
    """The argument lists `keras-sanet eval` runs with, from now on (it still runs)."""
    calls = []
    main = cli.main

    def recording_main(argv):
        calls.append(list(argv))
        return main(argv)

    monkeypatch.setattr(cli, "main", recording_main)
    return calls


def _files(folder):
    return {
        name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
        if name != "metadata.json"
    }


def _check_flip_record(record, folder, camvid, expected):
    assert record["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-12)
    assert record["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
    assert record["per_class_iou"] == pytest.approx(expected["per_class_iou"], abs=1e-12)
    assert list(record["per_class_iou"]) == list(CAMVID_INFO.class_names)
    assert record["flip"] is True and record["scales"] == [1.0]
    assert (record["dataset"], record["split"], record["num_images"]) == ("camvid", "val", 3)
    # Paths relative to the working directory: no machine's absolute folders in metadata.
    assert record["command"] == (
        f"keras-sanet eval --preset {os.path.relpath(folder)} --dataset camvid "
        f"--root {os.path.relpath(camvid)} --split val --flip"
    )


def test_score_preset_flip_scores_the_stored_folder_and_changes_only_its_metadata(
    camvid_model, tmp_path, monkeypatch
):
    model, camvid, scores = camvid_model
    folder = tmp_path / "tiny_camvid"
    model.save_to_preset(str(folder), {"dataset": "camvid"})
    files = _files(folder)
    before = json.loads((folder / "metadata.json").read_text())
    calls = _eval_calls(monkeypatch)
    output = tmp_path / "flip.json"

    score_preset_flip.main([str(folder), "--root", camvid, "--output", str(output)])

    assert len(calls) == 1
    argv = calls[0]
    assert argv[argv.index("--preset") + 1] == str(folder) and "--flip" in argv
    # eval scored the stored files with flip: the in-memory model's flipped confusion matrix.
    assert json.loads(output.read_text())["confusion_matrix"] == scores[True]["confusion_matrix"]
    after = json.loads((folder / "metadata.json").read_text())
    _check_flip_record(after["evaluation_flip"], folder, camvid, scores[True])
    assert {k: v for k, v in after.items() if k != "evaluation_flip"} == before
    assert _files(folder) == files
    # metadata.json is not hashed: the preset passes its sha256 checks and loads.
    verify_preset(str(folder))
    loaded, metadata = load_preset(str(folder))
    assert metadata["evaluation_flip"] == after["evaluation_flip"]
    assert loaded.count_params() == model.count_params()


def test_score_preset_flip_refuses_what_is_not_a_local_preset(tmp_path):
    with pytest.raises(SystemExit, match="neither a preset folder nor a bundled preset name"):
        score_preset_flip.main(["no_such_preset"])
    with pytest.raises(SystemExit, match="has no metadata.json"):
        score_preset_flip.main([str(tmp_path)])


def test_publish_with_flip_scores_the_stored_folder(camvid_model, tmp_path, monkeypatch):
    model, camvid, scores = camvid_model
    run = tmp_path / "run"
    run.mkdir()
    model.save(str(run / "model.keras"))
    (run / "config.json").write_text(json.dumps({"data": {"crop_size": [12, 16]}}))
    # A single-scale eval newer than model.keras is reused: only the flip is evaluated.
    single = dict(scores[False], dataset="camvid", split="val")
    (run / "eval-val.json").write_text(json.dumps(single))
    model_time = os.path.getmtime(run / "model.keras")
    os.utime(run / "eval-val.json", (model_time + 10, model_time + 10))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "manifest.json").write_text(json.dumps({"format_version": 1, "presets": {}}))
    monkeypatch.setenv("KERAS_SANET_WEIGHTS", str(weights))  # the printed zoo table
    calls = _eval_calls(monkeypatch)

    publish.main(
        ["--run-dir", str(run), "--name", "tiny_camvid", "--training-command", "none",
         "--description", "tiny", "--root", camvid, "--weights-dir", str(weights),
         "--weights-dtype", "float32", "--flip"]
    )

    folder = weights / "tiny_camvid"
    assert len(calls) == 1
    argv = calls[0]
    assert argv[argv.index("--preset") + 1] == str(folder) and "--flip" in argv
    metadata = verify_preset(str(folder))
    _check_flip_record(metadata["evaluation_flip"], folder, camvid, scores[True])
    # The single-scale figures stay the zoo's.
    assert metadata["evaluation"]["mean_iou"] == scores[False]["mean_iou"]
    assert metadata["evaluation"]["flip"] is False
    flip_json = json.loads((run / "eval-preset-flip.json").read_text())
    assert flip_json["confusion_matrix"] == scores[True]["confusion_matrix"]
