import json
import os
import re

import keras
import numpy as np
import pytest
from helpers import random_images
from helpers import to_numpy
from test_data_fakes import make_camvid_tree
from test_data_fakes import make_folder_tree

from keras_sanet import cli
from keras_sanet.data import CAMVID_INFO
from keras_sanet.data import camvid_dataset
from keras_sanet.data import folder_dataset
from keras_sanet.evaluation import evaluate_model
from keras_sanet.evaluation import format_table
from keras_sanet.evaluation import predict_logits
from keras_sanet.evaluation import summarize_confusion_matrix
from keras_sanet.metrics import MeanIoU
from keras_sanet.metrics import PixelAccuracy

NUM_CLASSES = 3
RESULT_KEYS = {
    "mean_iou", "pixel_accuracy", "per_class_iou", "confusion_matrix", "num_images",
    "num_pixels", "num_classes", "class_names", "ignore_index", "scales", "flip",
    "crop_size", "stride_ratio", "base_size", "size_multiple", "dtype_policy", "limit",
    "backend",
}


def toy_model(num_classes=NUM_CLASSES, seed=1):
    """A 3x3 conv on the fake images (channel 0 encodes the label): some right, some wrong."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(num_classes, 3, padding="same"),
        ]
    )


def np_confusion(masks, predictions, num_classes, ignore_index=255):
    labels = masks.reshape(-1).astype(np.int64)
    predictions = predictions.reshape(-1).astype(np.int64)
    valid = (labels < num_classes) & (labels != ignore_index)
    pairs = labels[valid] * num_classes + predictions[valid]
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def np_scores(cm):
    cm = cm.astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, np.diag(cm) / union, np.nan)
    return np.nanmean(iou), np.trace(cm) / cm.sum(), iou


def reference_confusion(model, dataset, num_classes, **protocol):
    """The split's confusion matrix, from eager model calls and NumPy counting."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for images, masks in dataset:
        images, masks = np.asarray(images), np.asarray(masks)
        if images.ndim == 3:
            images, masks = images[None], masks[None]
        logits = to_numpy(predict_logits(model, images, **protocol))
        cm += np_confusion(masks, logits.argmax(-1), num_classes)
    return cm


@pytest.fixture
def tree(tmp_path):
    # Five 12x16 pairs, labels 0..2 with a patch of ignore (255) in each mask.
    names = ("a", "b", "c", "d", "e")
    images_dir, masks_dir, _ = make_folder_tree(
        str(tmp_path / "data"), names=names, num_classes=NUM_CLASSES, void_id=255
    )
    return images_dir, masks_dir


def _dataset(tree, batch_size=2):
    return folder_dataset(*tree, num_classes=NUM_CLASSES, batch_size=batch_size, progress=False)


@pytest.mark.parametrize("batch_size", [None, 1, 2])
def test_scores_match_a_numpy_confusion_matrix(tree, batch_size):
    model = toy_model()
    ds = _dataset(tree, batch_size)
    results = evaluate_model(model, ds, NUM_CLASSES, progress=False, jit=False)
    expected_cm = reference_confusion(model, ds, NUM_CLASSES)
    np.testing.assert_array_equal(np.array(results["confusion_matrix"]), expected_cm)
    mean_iou, pixel_accuracy, iou = np_scores(expected_cm)
    assert 0 < pixel_accuracy < 1  # the toy model is neither perfect nor useless
    assert results["mean_iou"] == pytest.approx(mean_iou, abs=1e-12)
    assert results["pixel_accuracy"] == pytest.approx(pixel_accuracy, abs=1e-12)
    assert list(results["per_class_iou"]) == ["class_0", "class_1", "class_2"]
    np.testing.assert_allclose(list(results["per_class_iou"].values()), iou, atol=1e-12)
    assert results["num_images"] == 5
    # 5 masks of 12x16 with 4 ignored pixels each.
    assert results["num_pixels"] == 5 * (12 * 16 - 4) == expected_cm.sum()
    assert RESULT_KEYS <= set(results)
    json.dumps(results, allow_nan=False)  # JSON-ready


def test_scores_equal_the_streaming_metrics_over_the_split(tree):
    model = toy_model()
    ds = _dataset(tree, batch_size=2)
    results = evaluate_model(model, ds, NUM_CLASSES, progress=False, jit=False)
    mean_iou, pixel_accuracy = MeanIoU(NUM_CLASSES), PixelAccuracy(NUM_CLASSES)
    for images, masks in ds:
        logits = model(np.asarray(images))
        mean_iou.update_state(np.asarray(masks), logits)
        pixel_accuracy.update_state(np.asarray(masks), logits)
    assert results["mean_iou"] == pytest.approx(float(mean_iou.result()), abs=1e-6)
    assert results["pixel_accuracy"] == pytest.approx(float(pixel_accuracy.result()), abs=1e-6)
    np.testing.assert_array_equal(results["confusion_matrix"], mean_iou.confusion_matrix())


def test_compiled_predictions_give_the_same_matrix(tree):
    model = toy_model()
    ds = _dataset(tree, batch_size=2)
    eager = evaluate_model(model, ds, NUM_CLASSES, progress=False, jit=False)
    compiled = evaluate_model(model, ds, NUM_CLASSES, progress=False, jit=True)
    assert compiled["confusion_matrix"] == eager["confusion_matrix"]


def test_test_protocol_is_passed_through(tree):
    model = toy_model()
    ds = _dataset(tree, batch_size=1)
    protocol = {"scales": (0.75, 1.0, 1.5), "flip": True, "crop_size": (8, 12)}
    results = evaluate_model(model, ds, NUM_CLASSES, progress=False, jit=False, **protocol)
    expected_cm = reference_confusion(model, ds, NUM_CLASSES, **protocol)
    np.testing.assert_array_equal(results["confusion_matrix"], expected_cm)
    assert results["scales"] == [0.75, 1.0, 1.5]
    assert results["flip"] is True and results["crop_size"] == [8, 12]
    # keras-sanet predict's scores.json records the same keys (inference_protocol).
    assert {key: results[key] for key in ("scales", "flip", "size_multiple", "dtype_policy")} == {
        "scales": [0.75, 1.0, 1.5], "flip": True, "size_multiple": 0, "dtype_policy": "float32"
    }
    # A plain callable has no dtype policy to record.
    plain = evaluate_model(lambda x: model(x), ds, NUM_CLASSES, progress=False, limit=1)
    assert plain["dtype_policy"] is None


@pytest.mark.parametrize("limit, batch_size", [(1, 1), (3, 2), (9, 2)])
def test_limit_scores_the_first_images(tree, limit, batch_size):
    model = toy_model()
    results = evaluate_model(
        model, _dataset(tree, batch_size), NUM_CLASSES, progress=False, jit=False, limit=limit
    )
    assert results["num_images"] == min(limit, 5)
    first = _dataset(tree, 1).take(min(limit, 5))
    np.testing.assert_array_equal(
        results["confusion_matrix"], reference_confusion(model, first, NUM_CLASSES)
    )


def test_class_names_and_absent_classes():
    # Labels use classes 0 and 1 only, the model always predicts 0: class 2 is
    # absent from both, so it has no IoU and the mean skips it.
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1, bias_initializer="zeros",
                                                          kernel_initializer="zeros")]
    )
    model.layers[-1].set_weights([np.zeros((1, 1, 3, 3)), np.array([1.0, 0.0, 0.0])])
    images = random_images(1, 4, 4)
    masks = np.array([[[0, 0, 1, 1]] * 4], dtype="uint8")
    results = evaluate_model(
        model, [(images, masks)], 3, class_names=["sky", "road", "car"], progress=False,
        jit=False,
    )
    assert results["per_class_iou"] == {"sky": 0.5, "road": 0.0, "car": None}
    assert results["mean_iou"] == pytest.approx(0.25)
    assert results["pixel_accuracy"] == pytest.approx(0.5)
    assert format_table(results) == "\n".join(
        [
            "| Class | IoU (%) |",
            "| --- | ---: |",
            "| sky | 50.00 |",
            "| road | 0.00 |",
            "| car | n/a |",
            "| **mIoU** | **25.00** |",
            "| **Pixel accuracy** | **50.00** |",
        ]
    )


def test_summarize_confusion_matrix():
    mean_iou, pixel_accuracy, iou = summarize_confusion_matrix(np.array([[3, 1], [0, 4]]))
    np.testing.assert_allclose(iou, [0.75, 0.8])
    assert mean_iou == pytest.approx(0.775) and pixel_accuracy == pytest.approx(0.875)
    assert summarize_confusion_matrix(np.zeros((2, 2), int))[:2] == (0.0, 0.0)


def test_labels_outside_the_classes_are_refused():
    masks = np.full((1, 4, 4), 7, dtype="uint8")
    with pytest.raises(ValueError, match=r"label\(s\) \[7\].*num_classes"):
        evaluate_model(toy_model(), [(random_images(1, 4, 4), masks)], 3, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"class_names": ["a", "b"]}, "class names"),
        ({"limit": 0}, "limit"),
        ({"crop_size": (4, 4, 4)}, "crop_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"num_classes": 3, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_model(toy_model(), [], **arguments)


def test_empty_dataset():
    with pytest.raises(ValueError, match="no images"):
        evaluate_model(toy_model(), [], 3, progress=False)


# -- the `keras-sanet eval` command -------------------------------------------------


@pytest.fixture
def camvid(tmp_path):
    root = str(tmp_path / "camvid")
    make_camvid_tree(root, counts=(("train", 1), ("val", 3)))
    return root


def _saved_toy(tmp_path, num_classes):
    path = str(tmp_path / "run" / "model.keras")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model = toy_model(num_classes)
    model.save(path)
    return model, path


def test_eval_command_on_camvid_writes_json_next_to_the_weights(tmp_path, camvid, capsys):
    model, path = _saved_toy(tmp_path, CAMVID_INFO.num_classes)
    code = cli.main(["eval", "--weights", path, "--root", camvid, "--no-progress"])
    assert code == 0
    output = str(tmp_path / "run" / "model.eval-camvid-val.json")
    with open(output) as f:
        results = json.load(f)
    assert RESULT_KEYS | {"dataset", "split", "weights", "preset"} <= set(results)
    assert results["num_images"] == 3 and results["dataset"] == "camvid"
    assert results["dtype_policy"] == "float32" and results["size_multiple"] == 0
    assert list(results["per_class_iou"]) == list(CAMVID_INFO.class_names)
    # The same numbers as an in-process evaluation (void 11 mapped to ignore).
    val = camvid_dataset(camvid, "val", batch_size=1, progress=False)
    expected_cm = reference_confusion(model, val, CAMVID_INFO.num_classes)
    np.testing.assert_array_equal(results["confusion_matrix"], expected_cm)
    printed = capsys.readouterr().out
    assert "| **mIoU** |" in printed and "Results written to" in printed
    assert f"mIoU {100 * results['mean_iou']:.2f}%" in printed


def test_eval_command_on_a_folder_with_the_paper_protocol(tmp_path, tree, capsys):
    model, path = _saved_toy(tmp_path, NUM_CLASSES)
    output = str(tmp_path / "out" / "results.json")
    code = cli.main(
        [
            "eval", "--weights", path, "--dataset", "folder", "--images", tree[0],
            "--masks", tree[1], "--num-classes", "3", "--scales", "0.5,1.0,1.5", "--flip",
            "--crop-size", "8,12", "--stride-ratio", "0.5", "--limit", "2", "--batch-size", "1",
            "--size-multiple", "8", "--output", output, "--no-progress",
        ]
    )
    assert code == 0
    with open(output) as f:
        results = json.load(f)
    assert results["num_images"] == 2 and results["limit"] == 2
    assert results["scales"] == [0.5, 1.0, 1.5] and results["flip"] is True
    assert results["crop_size"] == [8, 12] and results["stride_ratio"] == 0.5
    assert results["size_multiple"] == 8  # pads the 6x8 whole images of scale 0.5 to 8x8
    first_two = _dataset(tree, 1).take(2)
    expected_cm = reference_confusion(
        model, first_two, NUM_CLASSES, scales=(0.5, 1.0, 1.5), flip=True, crop_size=(8, 12),
        stride_ratio=0.5, size_multiple=8,
    )
    np.testing.assert_array_equal(results["confusion_matrix"], expected_cm)


def test_eval_command_run_dir_uses_model_and_config(tmp_path, tree):
    # A run folder as the trainer leaves it: config.json (folder data) + model.keras.
    _, path = _saved_toy(tmp_path, NUM_CLASSES)
    run_dir = os.path.dirname(path)
    config = {
        "data": {"dataset": "folder", "train_images": tree[0], "train_masks": tree[1],
                 "val_images": tree[0], "val_masks": tree[1], "num_classes": NUM_CLASSES},
        "model": {"backbone": "resnet18"},
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f)
    assert cli.main(["eval", "--run-dir", run_dir, "--no-progress"]) == 0
    with open(os.path.join(run_dir, "model.eval-folder-val.json")) as f:
        results = json.load(f)
    assert results["num_images"] == 5 and results["num_classes"] == NUM_CLASSES


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "exactly one model source"),
        (["--weights", "a.keras", "--preset", "x"], "exactly one model source"),
        (["--weights", "model.h5"], ".keras model file or a .weights.h5"),
        (["--weights", "model.weights.h5"], "--config"),
        (["--weights", "missing.keras"], "does not exist"),
        (["--run-dir", "missing_run"], "does not exist"),
        (["--weights", "a.keras", "--checkpoint", "best"], "--run-dir"),
        (["--weights", "a.keras", "--scales", "1,-2"], "--scales"),
        (["--weights", "a.keras", "--crop-size", "10,x"], "--crop-size"),
        (["--weights", "a.keras", "--stride-ratio", "0"], "--stride-ratio"),
        (["--weights", "a.keras", "--dtype", "float8"],
         "--dtype 'float8' is not a floating-point Keras dtype policy; use one of float32"),
        (["--weights", "a.keras", "--size-multiple", "-1"], "--size-multiple '-1' must be a whole"),
        (["--weights", "a.keras", "--size-multiple", "x"], "--size-multiple 'x' must be a whole"),
    ],
)
def test_eval_command_errors_name_the_fix(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-sanet eval: error:") and match in error


def test_eval_command_dtype_refuses_a_model_that_cannot_follow_it(tmp_path, camvid, capsys):
    _, path = _saved_toy(tmp_path, CAMVID_INFO.num_classes)
    argv = ["eval", "--weights", path, "--root", camvid, "--dtype", "mixed_bfloat16"]
    assert cli.main(argv) == 2
    assert 'keras.config.set_dtype_policy("mixed_bfloat16")' in capsys.readouterr().err


def test_eval_command_run_dir_without_the_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.weights.h5").write_bytes(b"")
    assert cli.main(["eval", "--run-dir", str(run_dir)]) == 2
    assert "use --checkpoint best" in capsys.readouterr().err


def test_eval_command_class_count_mismatch(tmp_path, camvid, capsys):
    _, path = _saved_toy(tmp_path, 5)
    assert cli.main(["eval", "--weights", path, "--root", camvid, "--no-progress"]) == 2
    # A model without a `num_classes` attribute is checked on its first output.
    assert re.search(r"predicts 5 classes but .*11", capsys.readouterr().err)


def test_eval_command_unknown_preset(capsys):
    from keras_sanet import SANet

    assert cli.main(["eval", "--preset", "no_such_preset"]) == 2
    error = capsys.readouterr().err
    if hasattr(SANet, "from_preset"):
        assert "Unknown preset 'no_such_preset'" in error
    else:
        assert "Presets are not available yet" in error


# -- a real SANet (slow: builds a ResNet-18) ------------------------------------------


def _tiny_sanet(num_classes):
    from keras_sanet import SANet

    return SANet(backbone="resnet18", num_classes=num_classes, output_stride=32)


@pytest.mark.slow
def test_eval_command_with_a_saved_sanet(tmp_path, camvid):
    model = _tiny_sanet(CAMVID_INFO.num_classes)
    images = random_images(1, 12, 16)
    # One pass of predict_logits is the model's own call, on the real model too.
    np.testing.assert_array_equal(to_numpy(predict_logits(model, images)), to_numpy(model(images)))
    path = str(tmp_path / "sanet.keras")
    model.save(path)
    output = str(tmp_path / "sanet.json")
    protocol = ["--scales", "1.0,1.5", "--flip", "--crop-size", "12,12"]
    argv = ["eval", "--weights", path, "--root", camvid, "--output", output, "--no-progress",
            "--no-jit", *protocol]
    assert cli.main(argv) == 0
    with open(output) as f:
        results = json.load(f)
    assert results["num_images"] == 3 and 0 <= results["mean_iou"] <= 1
    val = camvid_dataset(camvid, "val", batch_size=1, progress=False)
    expected = evaluate_model(
        model, val, CAMVID_INFO.num_classes, scales=(1.0, 1.5), flip=True, crop_size=12,
        progress=False, jit=False,
    )
    assert results["confusion_matrix"] == expected["confusion_matrix"]

    # The same model as a zoo preset folder: its metadata names the dataset.
    if hasattr(model, "save_to_preset"):
        preset = str(tmp_path / "my_preset")
        model.save_to_preset(preset, {"dataset": "camvid"})
        argv = ["eval", "--preset", preset, "--root", camvid, "--output", output,
                "--no-progress", "--no-jit", *protocol]
        assert cli.main(argv) == 0
        with open(output) as f:
            from_preset = json.load(f)
        assert from_preset["confusion_matrix"] == expected["confusion_matrix"]
        assert from_preset["dataset"] == "camvid" and from_preset["preset"] == preset
        assert cli.main(argv + ["--dtype", "mixed_bfloat16"]) == 0
        with open(output) as f:
            assert json.load(f)["dtype_policy"] == "mixed_bfloat16"


@pytest.mark.slow
def test_eval_command_with_weights_and_config(tmp_path, camvid):
    from keras_sanet.training.config import load_config

    model = _tiny_sanet(CAMVID_INFO.num_classes)
    model(random_images(1, 32, 32))
    weights = str(tmp_path / "sanet.weights.h5")
    model.save_weights(weights)
    config = tmp_path / "train.toml"
    config.write_text(
        f'[data]\ndataset = "camvid"\nroot = "{camvid}"\n\n'
        '[model]\nbackbone = "resnet18"\noutput_stride = 32\n'
    )
    val = camvid_dataset(camvid, "val", batch_size=1, progress=False)
    expected = evaluate_model(model, val, CAMVID_INFO.num_classes, progress=False, jit=False)

    argv = ["eval", "--weights", weights, "--config", str(config), "--no-progress", "--no-jit"]
    assert cli.main(argv) == 0
    with open(str(tmp_path / "sanet.eval-camvid-val.json")) as f:
        assert json.load(f)["confusion_matrix"] == expected["confusion_matrix"]

    # The same weights as a training run leaves them: config.json + checkpoints/.
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with open(run_dir / "config.json", "w") as f:
        json.dump(load_config(str(config)).to_dict(), f)
    os.replace(weights, run_dir / "checkpoints" / "best.weights.h5")
    argv = ["eval", "--run-dir", str(run_dir), "--checkpoint", "best", "--no-progress", "--no-jit"]
    assert cli.main(argv) == 0
    with open(run_dir / "checkpoints" / "best.eval-camvid-val.json") as f:
        assert json.load(f)["confusion_matrix"] == expected["confusion_matrix"]
