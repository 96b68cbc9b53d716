"""The paper's evaluation on PASCAL: Context-59 vs Context-60 counting, VOC's 21 classes, and
`keras-sanet eval` on the named datasets with the protocol of a run's config."""

import json
import os

import keras
import numpy as np
import pytest
from pascal_fakes import CONTEXT_VAL
from pascal_fakes import VOC_VAL
from pascal_fakes import make_context_tree
from pascal_fakes import make_voc_tree

from keras_sanet import cli
from keras_sanet.data import named_dataset
from keras_sanet.data import named_dataset_info
from keras_sanet.evaluation import evaluate_model


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pascal"))
    _, voc_masks = make_voc_tree(root)
    _, context_masks = make_context_tree(root)
    return root, voc_masks, context_masks


def hashing_model(num_classes):
    """A 'model' predicting class (red // 4) mod K at every pixel: a fixed, image-driven guess."""

    def predict(images):
        ids = keras.ops.mod(keras.ops.floor_divide(keras.ops.cast(images[..., 0], "int32"), 4),
                            num_classes)
        return keras.ops.one_hot(ids, num_classes)

    return predict


def np_confusion(labels, predictions, num_classes):
    valid = labels < num_classes  # drops 255
    pairs = labels[valid].astype(np.int64) * num_classes + predictions[valid]
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


@pytest.mark.parametrize("name", ["context59", "context60", "voc"])
def test_counting_follows_the_dataset_convention(pascal_root, name):
    root, voc_masks, context_masks = pascal_root
    info = named_dataset_info(name)
    k = info.num_classes
    ds = named_dataset(name, root, "val", batch_size=1, progress=False)
    results = evaluate_model(hashing_model(k), ds, k, class_names=info.class_names,
                             progress=False)
    # The reference applies the convention to the raw PNG values itself.
    expected = np.zeros((k, k), np.int64)
    stems = CONTEXT_VAL if name.startswith("context") else VOC_VAL
    for stem, (images, _) in zip(stems, ds.as_numpy_iterator()):
        predictions = (images[0, ..., 0].astype(np.int64) // 4) % k
        if name == "voc":
            labels = voc_masks[("SegmentationClass", stem)].astype(np.int64)  # 255 border
        elif name == "context60":
            labels = context_masks[stem].astype(np.int64)  # background is class 0
        else:
            raw = context_masks[stem].astype(np.int64)
            labels = np.where(raw == 0, 255, raw - 1)  # background ignored, k -> k - 1
        expected += np_confusion(labels, predictions, k)
    np.testing.assert_array_equal(results["confusion_matrix"], expected)
    assert list(results["per_class_iou"]) == list(info.class_names)
    if name.startswith("context"):
        background = sum(int((context_masks[s] == 0).sum()) for s in CONTEXT_VAL)
        total = sum(context_masks[s].size for s in CONTEXT_VAL)
        assert results["num_pixels"] == (total - background if name == "context59" else total)
        assert ("background" in results["per_class_iou"]) == (name == "context60")


def _toy(num_classes, path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255.0),
         keras.layers.Conv2D(num_classes, 3, padding="same")]
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
    return model


@pytest.mark.parametrize("name", ["voc", "context59", "context60"])
def test_eval_command_on_the_named_datasets(pascal_root, tmp_path, name):
    root = pascal_root[0]
    info = named_dataset_info(name)
    model = _toy(info.num_classes, str(tmp_path / "run" / "model.keras"))
    argv = ["eval", "--weights", str(tmp_path / "run" / "model.keras"), "--dataset", name,
            "--root", root, "--scales", "0.75,1.0", "--flip", "--crop-size", "8",
            "--base-size", "14", "--no-progress"]
    assert cli.main(argv) == 0
    with open(tmp_path / "run" / f"model.eval-{name}-val.json") as f:
        results = json.load(f)
    assert results["dataset"] == name and results["num_classes"] == info.num_classes
    assert results["class_names"] == list(info.class_names)
    assert results["base_size"] == 14 and results["crop_size"] == [8, 8]
    ds = named_dataset(name, root, "val", batch_size=1, progress=False)
    expected = evaluate_model(model, ds, info.num_classes, progress=False, scales=(0.75, 1.0),
                              flip=True, crop_size=8, base_size=14, jit=False)
    np.testing.assert_array_equal(results["confusion_matrix"], expected["confusion_matrix"])


def test_eval_run_dir_uses_the_configs_protocol_and_paper_figure(pascal_root, tmp_path):
    root = pascal_root[0]
    run_dir = tmp_path / "run"
    _toy(59, str(run_dir / "model.keras"))
    config = {
        "data": {"dataset": "context59", "root": root},
        "model": {"backbone": "resnet18"},
        "eval": {"split": "val", "scales": [0.5, 1.0], "flip": True, "crop_size": [8, 8],
                 "base_size": 14},
        "paper": {"figure": "Table 2, row 4", "pixel_accuracy": 79.3, "mean_iou": 51.9},
    }
    with open(run_dir / "config.json", "w") as f:
        json.dump(config, f)
    assert cli.main(["eval", "--run-dir", str(run_dir), "--no-progress"]) == 0
    with open(run_dir / "model.eval-context59-val.json") as f:
        results = json.load(f)
    assert results["scales"] == [0.5, 1.0] and results["flip"] is True
    assert results["crop_size"] == [8, 8] and results["base_size"] == 14
    assert results["paper"]["mean_iou"] == 51.9 and results["num_classes"] == 59
    # The command line wins over the config.
    output = str(tmp_path / "single.json")
    argv = ["eval", "--run-dir", str(run_dir), "--scales", "1.0", "--no-flip", "--crop-size",
            "0", "--base-size", "0", "--output", output, "--no-progress"]
    assert cli.main(argv) == 0
    with open(output) as f:
        single = json.load(f)
    assert single["scales"] == [1.0] and single["flip"] is False
    assert single["crop_size"] is None and single["base_size"] is None


def test_eval_command_names_the_missing_folder(tmp_path, capsys):
    path = str(tmp_path / "run" / "model.keras")
    _toy(21, path)
    argv = ["eval", "--weights", path, "--dataset", "voc", "--root", str(tmp_path / "VOC"),
            "--no-progress"]
    assert cli.main(argv) == 2
    assert "host.robots.ox.ac.uk" in capsys.readouterr().err
    assert cli.main(["eval", "--weights", path, "--dataset", "voc", "--no-progress"]) == 2
    assert "No voc folder: pass --root" in capsys.readouterr().err
