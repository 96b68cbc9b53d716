"""`keras-sanet attention`: the Figure 6 PNG end to end, model sources, errors."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_sanet import SANet
from keras_sanet import cli
from keras_sanet.attention_figure import attention_figure
from keras_sanet.attention_maps import point_attention_maps
from keras_sanet.prediction.attention_command import parse_points
from keras_sanet.visualization import default_palette

CLASS_NAMES = ["sky", "road", "car"]
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
HEIGHT, WIDTH = 40, 56
CAMVID_FRAME = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "examples", "camvid_0016E5_07959.png",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random preset, its .weights.h5 with a training config, and a PNG."""
    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("attention")
    model = SANet(backbone="resnet18", output_stride=32, num_classes=3)
    preset = root / "preset"
    model.save_to_preset(
        str(preset), {"dataset": "toy", "class_names": CLASS_NAMES, "palette": PALETTE}
    )
    weights = root / "toy.weights.h5"
    model.save_weights(str(weights))
    config = root / "toy.toml"
    config.write_text(
        '[data]\ndataset = "folder"\nnum_classes = 3\ntrain_images = "images"\n'
        'train_masks = "masks"\n\n[model]\nbackbone = "resnet18"\noutput_stride = 32\n'
    )
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image_path = root / "frame.png"
    Image.fromarray(image).save(image_path)
    return {
        "model": model, "preset": preset, "weights": weights,
        "config": config, "image": image, "image_path": image_path,
    }


def _slow_on_jax(test):
    # JAX compiles every random initialiser of a SANet it builds or loads (about half a
    # minute per model on a 2-core CPU): the fast run checks these on TF and torch; on
    # JAX it keeps the preset command end to end.
    return pytest.mark.slow(test) if keras.backend.backend() == "jax" else test


def _read_png(path):
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_the_command_writes_the_figure_of_the_preset(setup, tmp_path, capsys):
    output = tmp_path / "figure.png"
    status = cli.main(
        ["attention", str(setup["image_path"]), "--preset", str(setup["preset"]),
         "--points", "3,5", "50,30", "--output", str(output), "--panel-width", "112"]
    )
    assert status == 0
    maps = point_attention_maps(setup["model"], setup["image"], [(3, 5), (50, 30)], (1, 4))
    expected = attention_figure(setup["image"], maps, PALETTE, CLASS_NAMES, panel_width=112)
    np.testing.assert_array_equal(_read_png(output), np.asarray(expected))
    printed = capsys.readouterr().out
    assert "point 2 (50,30) head 4:" in printed and f"Wrote {output}" in printed


@_slow_on_jax
def test_weights_with_a_config_into_a_folder(setup, tmp_path):
    status = cli.main(
        ["attention", str(setup["image_path"]), "--weights", str(setup["weights"]),
         "--config", str(setup["config"]), "--points", "10,10", "--heads", "2", "3",
         "--output", str(tmp_path)]
    )
    assert status == 0
    maps = point_attention_maps(setup["model"], setup["image"], [(10, 10)], (2, 3))
    # A folder dataset has no class names: "class <id>" and VOC's colours.
    expected = attention_figure(setup["image"], maps, default_palette(3))
    np.testing.assert_array_equal(
        _read_png(tmp_path / "frame_attention.png"), np.asarray(expected)
    )


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--points", "56,10"], "x=56, y=10 is outside the image, which is 56 pixels wide"),
        (["--points", "3,40"], "pick x in 0..55 and y in 0..39"),
        (["--points", "3"], "'3' is not a point: write each point as X,Y"),
        (["--points", "3,x"], "'3,x' is not a point"),
        (["--points", "1,2,3"], "'1,2,3' is not a point"),
        (["--points", "1,1", "--heads", "5"], "SA head numbers from 1"),
        (["--points", "1,1", "--output", "{tmp}/a.jpg"], "must be a .png file"),
        (["--points", "1,1", "--image", "missing.png"], "Image 'missing.png' does not exist"),
        (["--points", "1,1", "--no-model"], "Give exactly one model"),
        (["--points", "1,1", "--weights", "{weights}"], "add --config"),
        (["--points", "1,1", "--config", "{config}"], "--dataset and --config go with --weights"),
    ],
)
def test_errors_name_the_problem_and_the_fix(setup, tmp_path, capsys, argv, match):
    argv = [arg.format(tmp=tmp_path, weights=setup["weights"], config=setup["config"])
            for arg in argv]
    image = str(setup["image_path"])
    if "--image" in argv:
        index = argv.index("--image")
        image = argv[index + 1]
        del argv[index : index + 2]
    model = ["--preset", str(setup["preset"])]
    if "--no-model" in argv:
        argv.remove("--no-model")
        model = []
    if "--weights" in argv:
        model = []
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out.png")]
    status = cli.main(["attention", image, *model, *argv])
    assert status == 2
    assert match in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out.png")


def test_parse_points():
    assert parse_points(["385,215", " 0, 7"]) == ((385, 215), (0, 7))


@_slow_on_jax
def test_the_zoo_model_groups_sky_with_sky_in_head_4():
    """The bundled CamVid model at a small input: head 4's attention features of two sky
    points are nearer each other than to a road point (Figure 6's pixel groups)."""
    with Image.open(CAMVID_FRAME) as frame:
        image = np.asarray(frame.convert("RGB").resize((160, 120), Image.BILINEAR))
    model = SANet.from_preset("sanet_mobilenetv2_os16_camvid")
    sky, other_sky, road = (83, 13), (73, 20), (80, 107)
    maps = point_attention_maps(model, image, [sky, other_sky, road], heads=(4,))
    assert [maps.prediction[y, x] for x, y in (sky, other_sky, road)] == [0, 0, 3]
    distance = maps.distance[(4, 0)]
    to_sky, to_road = (distance[maps.feature_points[(4, k)]] for k in (1, 2))
    assert to_sky < 0.5 * to_road
