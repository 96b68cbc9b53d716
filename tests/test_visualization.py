"""Colour masks, overlays with a legend, and the PNG files of a prediction."""

import numpy as np
import pytest
from PIL import Image

from keras_sanet.visualization import colorize
from keras_sanet.visualization import default_palette
from keras_sanet.visualization import draw_legend
from keras_sanet.visualization import overlay
from keras_sanet.visualization import save_mask_png
from keras_sanet.visualization import save_prediction

PALETTE = [(10, 20, 30), (200, 0, 0), (0, 250, 5)]
NAMES = ["sky", "car", "road"]


def small_mask(height=32, width=48):
    mask = np.zeros((height, width), np.int32)
    mask[:, width // 2 :] = 2
    mask[:4, :4] = 255
    return mask


def small_image(height=32, width=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_default_palette_is_pascal_vocs():
    assert default_palette(8) == [
        (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0),
        (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    ]
    assert default_palette(21)[20] == (0, 64, 128)  # VOC's "tvmonitor"
    assert len(set(default_palette(256))) == 256


@pytest.mark.parametrize("ignore_color", [(0, 0, 0), (255, 255, 255)])
def test_colorize_paints_each_class_and_the_ignored_pixels(ignore_color):
    mask = small_mask()
    rgb = colorize(mask, PALETTE, ignore_color=ignore_color)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    expected = np.asarray(PALETTE, np.uint8)[np.where(mask == 255, 0, mask)]
    expected[mask == 255] = ignore_color
    np.testing.assert_array_equal(rgb, expected)
    np.testing.assert_array_equal(rgb[10, 30], PALETTE[2])
    np.testing.assert_array_equal(rgb[0, 0], ignore_color)


def test_colorize_accepts_a_custom_ignore_index_and_a_trailing_channel():
    mask = np.array([[0, 7], [1, 7]], np.uint8)[..., None]
    rgb = colorize(mask, PALETTE, ignore_index=7, ignore_color=(1, 2, 3))
    np.testing.assert_array_equal(rgb[:, 1], [[1, 2, 3], [1, 2, 3]])
    np.testing.assert_array_equal(rgb[1, 0], PALETTE[1])


@pytest.mark.parametrize(
    "mask,palette,match",
    [
        (np.array([[0, 3]]), PALETTE, "holds the value 3"),
        (np.array([[0, -1]]), PALETTE, "holds the value -1"),
        (np.zeros((2, 2), np.float32), PALETTE, "integer class ids"),
        (np.zeros((2, 2), np.int32), [(1, 2)], r"\(R, G, B\)"),
        (np.zeros((2, 2), np.int32), [(1, 2, 300)], "0..255"),
    ],
)
def test_colorize_errors_name_the_problem(mask, palette, match):
    with pytest.raises(ValueError, match=match):
        colorize(mask, palette)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_overlay_blends_colours_and_leaves_ignored_pixels(alpha):
    image, mask = small_image(), small_mask()
    picture = overlay(image, mask, PALETTE, alpha=alpha, legend=False)
    assert picture.size == (48, 32) and picture.mode == "RGB"
    got = np.asarray(picture).astype(np.int32)
    colours = np.asarray(PALETTE, np.float64)[np.where(mask == 255, 0, mask)]
    expected = np.round((1 - alpha) * image + alpha * colours)
    expected[mask == 255] = image[mask == 255]
    np.testing.assert_array_equal(got, expected.astype(np.int32))


def test_overlay_legend_lists_the_classes_present_beside_the_image():
    image, mask = small_image(), small_mask()
    picture = overlay(image, mask, PALETTE, alpha=0.5, class_names=NAMES)
    plain = overlay(image, mask, PALETTE, alpha=0.5, legend=False)
    width, height = picture.size
    assert width > 48 and height >= 32
    pixels = np.asarray(picture)
    # The blended photo sits unchanged at the top left.
    np.testing.assert_array_equal(pixels[:32, :48], np.asarray(plain))
    panel = pixels[:, 48:].reshape(-1, 3)
    colours = {tuple(int(c) for c in p) for p in panel}
    assert tuple(PALETTE[0]) in colours and tuple(PALETTE[2]) in colours  # present
    assert tuple(PALETTE[1]) not in colours  # "car" is absent from the mask
    assert panel.min() == 0  # black text and swatch outlines were drawn
    # The legend holds exactly the entries of the classes present.
    expected = draw_legend([("sky", PALETTE[0]), ("road", PALETTE[2])])
    np.testing.assert_array_equal(pixels[: expected.height, 48:], np.asarray(expected))


def test_overlay_legend_grows_the_canvas_for_short_images():
    mask = np.arange(3).repeat(2)[None, :].astype(np.int32)  # 1 x 6, all classes
    picture = overlay(np.zeros((1, 6, 3), np.uint8), mask, PALETTE, class_names=NAMES)
    legend = draw_legend(list(zip(NAMES, PALETTE)))
    assert picture.size == (6 + legend.width, legend.height)


def test_overlay_accepts_pil_images_and_checks_sizes_and_names():
    image = Image.fromarray(small_image())
    assert overlay(image, small_mask(), PALETTE, legend=False).size == (48, 32)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, small_mask(16, 48), PALETTE)
    with pytest.raises(ValueError, match="one name per class"):
        overlay(image, small_mask(), PALETTE, class_names=["sky"])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, small_mask(), PALETTE, alpha=1.5)


def test_save_prediction_writes_an_indexed_mask_and_an_overlay(tmp_path):
    image, mask = small_image(), small_mask()
    paths = save_prediction(image, mask, PALETTE, str(tmp_path / "out"), "frame", NAMES)
    assert paths == {
        "mask": str(tmp_path / "out" / "frame_mask.png"),
        "overlay": str(tmp_path / "out" / "frame_overlay.png"),
    }
    with Image.open(paths["mask"]) as saved:
        assert saved.mode == "P" and saved.size == (48, 32)
        np.testing.assert_array_equal(np.asarray(saved), mask)  # the class ids
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), colorize(mask, PALETTE))
    with Image.open(paths["overlay"]) as saved:
        expected = overlay(image, mask, PALETTE, class_names=NAMES)
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), np.asarray(expected))


def test_masks_with_more_classes_than_a_png_palette_are_saved_as_rgb(tmp_path):
    palette = default_palette(300)
    mask = np.array([[0, 299], [256, 1]], np.int32)
    path = save_mask_png(mask, palette, str(tmp_path / "m.png"), ignore_index=1000)
    with Image.open(path) as saved:
        assert saved.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(saved), colorize(mask, palette, ignore_index=1000))
