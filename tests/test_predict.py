"""`keras-sanet predict`: masks and overlays for image files, label scoring, errors."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import to_numpy
from PIL import Image

from keras_sanet import SANet
from keras_sanet import cli
from keras_sanet.evaluation import predict_logits
from keras_sanet.evaluation.evaluate import summarize_confusion_matrix
from keras_sanet.evaluation.inference import inference_protocol
from keras_sanet.prediction import command
from keras_sanet.visualization import colorize
from keras_sanet.visualization import overlay

CLASS_NAMES = ["sky", "road", "car"]
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
SIZES = {"a": (32, 48), "b": (40, 36)}  # (height, width): any size works
PROTOCOL_KEYS = ("scales", "flip", "size_multiple", "dtype_policy")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny preset, a .keras copy and a folder of images (PNG and JPEG)."""
    keras.utils.set_random_seed(2)
    root = tmp_path_factory.mktemp("predict")
    model = SANet(backbone="resnet18", output_stride=32, num_classes=3)
    preset = root / "preset"
    model.save_to_preset(
        str(preset),
        {"dataset": "toy", "class_names": CLASS_NAMES, "palette": PALETTE, "label_map": {"9": 255}},
    )
    keras_path = root / "model.keras"
    model.save(str(keras_path))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for stem, (height, width) in SIZES.items():
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        suffix = ".png" if stem == "a" else ".jpg"
        Image.fromarray(array).save(images / f"{stem}{suffix}")
        # What the command reads back (JPEG is lossy).
        arrays[stem] = np.asarray(Image.open(images / f"{stem}{suffix}").convert("RGB"))
    (images / "notes.txt").write_text("not an image\n")
    # predict pads each image up to multiples of 32 by default (--size-multiple 32).
    expected, exact = (
        {
            stem: np.argmax(
                to_numpy(predict_logits(model, array[None], size_multiple=multiple))[0], axis=-1
            )
            for stem, array in arrays.items()
        }
        for multiple in (32, 0)
    )
    return {
        "model": model, "preset": preset, "keras": keras_path, "images": images,
        "arrays": arrays, "expected": expected, "exact": exact,
    }


def test_predict_writes_masks_and_overlays_for_a_folder(setup, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(
        ["predict", str(setup["images"]), "--preset", str(setup["preset"]),
         "--output", str(out), "--no-progress"]
    )
    assert status == 0
    assert sorted(os.listdir(out)) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    assert "Wrote 2 mask(s) and overlay(s)" in capsys.readouterr().out
    for stem, (height, width) in SIZES.items():
        with Image.open(out / f"{stem}_mask.png") as mask_png:
            assert mask_png.size == (width, height)
            ids = np.asarray(mask_png)
            rgb = np.asarray(mask_png.convert("RGB"))
        np.testing.assert_array_equal(ids, setup["expected"][stem])
        np.testing.assert_array_equal(rgb, colorize(ids, PALETTE))
        with Image.open(out / f"{stem}_overlay.png") as overlay_png:
            picture = np.asarray(overlay_png.convert("RGB"))
        assert picture.shape[0] >= height and picture.shape[1] > width  # legend on the right
        expected = overlay(setup["arrays"][stem], ids, PALETTE, class_names=CLASS_NAMES)
        np.testing.assert_array_equal(picture, np.asarray(expected))


def test_predict_scores_against_a_label_with_the_label_map(setup, tmp_path, capsys):
    predicted = setup["expected"]["a"]
    label = predicted.astype(np.uint8).copy()
    label[:8] = (label[:8] + 1) % 3  # wrong rows
    label[-4:] = 9  # mapped to the ignore index by the preset's label_map
    label_path = tmp_path / "a_label.png"
    Image.fromarray(label).save(label_path)
    out = tmp_path / "out"
    status = cli.main(
        ["predict", str(setup["images"] / "a.png"), "--preset", str(setup["preset"]),
         "--output", str(out), "--label", str(label_path), "--no-progress", "--no-jit"]
    )
    assert status == 0
    valid = label != 9
    matrix = np.zeros((3, 3), np.int64)
    np.add.at(matrix, (label[valid].astype(int), predicted[valid]), 1)
    mean_iou, pixel_accuracy, _ = summarize_confusion_matrix(matrix)
    assert pixel_accuracy == pytest.approx((32 - 8 - 4) / (32 - 4))
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mean_iou"] == pytest.approx(mean_iou)
    assert scores["pixel_accuracy"] == pytest.approx(pixel_accuracy)
    assert scores["num_images"] == 1 and set(scores["per_class_iou"]) == set(CLASS_NAMES)
    # The defaults of the protocol, recorded as keras-sanet eval records them.
    assert {key: scores[key] for key in PROTOCOL_KEYS} == {
        "scales": [1.0], "flip": False, "size_multiple": 32, "dtype_policy": "float32"
    }
    assert f"mIoU {100 * mean_iou:.2f}%" in capsys.readouterr().out


def test_scores_record_the_protocol_they_were_measured_under(setup, tmp_path):
    # The label is the model's own prediction under this protocol: a perfect score
    # shows the protocol was applied, the JSON that it is recorded.
    protocol = {"scales": (0.75, 1.0), "flip": True}
    image = setup["arrays"]["a"][None].astype("float32")
    predicted = np.argmax(to_numpy(predict_logits(setup["model"], image, **protocol))[0], -1)
    label_path = tmp_path / "a_label.png"
    Image.fromarray(predicted.astype(np.uint8)).save(label_path)
    out = tmp_path / "out"
    status = cli.main(
        ["predict", str(setup["images"] / "a.png"), "--preset", str(setup["preset"]),
         "--output", str(out), "--label", str(label_path), "--scales", "0.75,1",
         "--flip", "--size-multiple", "0", "--dtype", "float32", "--no-progress", "--no-jit"]
    )
    assert status == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mean_iou"] == 1.0 and scores["pixel_accuracy"] == 1.0
    assert {key: scores[key] for key in PROTOCOL_KEYS} == {
        "scales": [0.75, 1.0], "flip": True, "size_multiple": 0, "dtype_policy": "float32"
    }
    # The same keys and values as the eval JSON's for this protocol.
    assert {key: scores[key] for key in PROTOCOL_KEYS} == inference_protocol(
        setup["model"], size_multiple=0, **protocol
    )


def test_predict_with_a_keras_model_and_labels_folder(setup, tmp_path):
    # --size-multiple 0: each image at its exact size, the model's own predictions.
    labels = tmp_path / "labels"
    labels.mkdir()
    for stem, mask in setup["exact"].items():
        Image.fromarray(mask.astype(np.uint8)).save(labels / f"{stem}.png")
    out = tmp_path / "out"
    status = cli.main(
        ["predict", str(setup["images"]), "--model", str(setup["keras"]),
         "--output", str(out), "--labels", str(labels), "--no-progress", "--size-multiple", "0"]
    )
    assert status == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mean_iou"] == 1.0 and scores["pixel_accuracy"] == 1.0
    assert set(scores["per_class_iou"]) <= {"class 0", "class 1", "class 2"}
    assert scores["size_multiple"] == 0 and scores["flip"] is False
    with Image.open(out / "a_mask.png") as mask_png:
        np.testing.assert_array_equal(np.asarray(mask_png), setup["exact"]["a"])


def test_a_model_for_another_dataset_is_refused(setup, tmp_path, capsys):
    status = cli.main(
        ["predict", str(setup["images"]), "--model", str(setup["keras"]), "--dataset",
         "camvid", "--output", str(tmp_path / "out")]
    )
    assert status == 2
    assert "predicts 3 classes but camvid has 11" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,match",
    [
        (["missing.png"], "Input 'missing.png' does not exist"),
        (["{empty}"], "holds no PNG or JPEG image"),
        (["{notes}"], "is not a PNG or JPEG file"),
        (["{images}"], "Give exactly one model"),
        (["{images}", "--preset", "p", "--model", "m.keras"], "got both"),
        (["{images}", "--preset", "p", "--label", "x.png"], "--label scores one image"),
        (["{images}", "--preset", "p", "--labels", "{empty}"], "No label mask for"),
        (["{images}", "--preset", "p", "--scales", "0,1"], "--scales"),
        (["{images}", "--preset", "p", "--size-multiple", "-32"],
         "--size-multiple '-32' must be a whole number >= 0"),
        (["{images}", "--preset", "p", "--dtype", "float8"],
         "--dtype 'float8' is not a floating-point Keras dtype policy; use one of float32"),
    ],
)
def test_input_errors_name_the_file_and_fix(setup, tmp_path, capsys, argv, match):
    empty = tmp_path / "empty"
    empty.mkdir()
    paths = {"empty": empty, "notes": setup["images"] / "notes.txt", "images": setup["images"]}
    argv = [arg.format(**paths) for arg in argv]
    status = cli.main(["predict", *argv, "--output", str(tmp_path / "out")])
    assert status == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreadable_image_and_label_errors(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"Cannot read the image .*broken.png.*Re-save it"):
        command.read_image(str(broken))
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="one channel of class ids"):
        command.read_label(str(rgb), (4, 6), {}, 3, 255)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((4, 6), 7, np.uint8)).save(gray)
    with pytest.raises(ValueError, match="is 6x4 but its image is 5x4"):
        command.read_label(str(gray), (4, 5), {}, 3, 255)
    with pytest.raises(ValueError, match="holds the value 7"):
        command.read_label(str(gray), (4, 6), {}, 3, 255)
    np.testing.assert_array_equal(command.read_label(str(gray), (4, 6), {"7": 255}, 3, 255), 255)


def test_same_stem_in_two_folders_is_refused(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / folder / "x.png")
    with pytest.raises(ValueError, match="would both be written as x_mask.png"):
        command.collect_images([str(tmp_path / "one"), str(tmp_path / "two")])
    # The same file named twice is predicted once.
    path = str(tmp_path / "one" / "x.png")
    assert command.collect_images([path, path]) == [path]
