"""Figure 6's attention maps: distance math, point mapping, the toy-model maps, errors."""

import keras
import numpy as np
import pytest
from helpers import random_features
from helpers import random_images
from helpers import to_numpy

from keras_sanet import SANet
from keras_sanet.attention_figure import apply_colormap
from keras_sanet.attention_figure import attention_figure
from keras_sanet.attention_figure import normalize_map
from keras_sanet.attention_maps import attention_distance_map
from keras_sanet.attention_maps import check_heads
from keras_sanet.attention_maps import check_points
from keras_sanet.attention_maps import feature_position
from keras_sanet.attention_maps import most_activated_channel
from keras_sanet.attention_maps import PointAttentionMaps
from keras_sanet.attention_maps import point_attention_maps

IMAGE_SIZE = (48, 64)  # (height, width)
POINTS = ((0, 0), (63, 47), (20, 30))


def numpy_distance(features, row, column):
    """The reference: Euclidean distance of every feature vector from one of them."""
    return np.linalg.norm(features - features[..., row, column, :][..., None, None, :], axis=-1)


@pytest.fixture(scope="module")
def toy_model():
    return SANet(backbone="resnet18", num_classes=3, output_stride=16)


@pytest.fixture(scope="module")
def toy_reference(toy_model):
    """The toy model's image, prediction and `[(main, attention)]` per head, the slow way:
    `SANetHeads.head_branches` called eagerly on the backbone's features."""
    image = random_images(height=IMAGE_SIZE[0], width=IMAGE_SIZE[1], seed=5)[0]
    batch = image[None]
    # The full call first: it builds the model (SANet.build builds the heads).
    prediction = np.argmax(to_numpy(toy_model(batch))[0], axis=-1)
    branches = toy_model.heads.head_branches(toy_model.backbone(batch))
    # The SA module's own identity: output = attention * main + attention.
    for output, main, attention in branches:
        np.testing.assert_allclose(
            to_numpy(output), to_numpy(attention * main + attention), rtol=1e-5, atol=1e-5
        )
    return image, prediction, [(to_numpy(m)[0], to_numpy(a)[0]) for _, m, a in branches]


@pytest.mark.parametrize(
    "shape,position",
    [((5, 7, 3), (0, 0)), ((5, 7, 3), (4, 6)), ((2, 6, 4, 8), (3, 1)), ((1, 1, 2), (0, 0))],
)
def test_distance_map_matches_numpy(shape, position):
    features = random_features(shape, seed=sum(shape))
    distance = to_numpy(attention_distance_map(features, position))
    expected = numpy_distance(features, *position)
    assert distance.shape == shape[:-1]
    np.testing.assert_allclose(distance, expected, rtol=1e-5, atol=1e-5)
    assert np.all(distance[..., position[0], position[1]] == 0)


def test_distance_map_on_known_vectors():
    features = np.array([[[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]], "float32")
    np.testing.assert_allclose(to_numpy(attention_distance_map(features, (0, 1))), [[5, 0, 5]])


@pytest.mark.parametrize("position", [(0, 0), (2, 3), (4, 1)])
def test_most_activated_channel_is_the_argmax_at_the_point(position):
    main = random_features((5, 4, 6), seed=3)
    channel, feature_map = most_activated_channel(main, position)
    assert channel == int(np.argmax(main[position]))
    np.testing.assert_array_equal(feature_map, main[:, :, channel])


@pytest.mark.parametrize(
    "point,image_size,feature_size,expected",
    [
        ((0, 0), (360, 480), (90, 120), (0, 0)),
        ((479, 359), (360, 480), (90, 120), (89, 119)),
        ((479, 359), (360, 480), (23, 30), (22, 29)),  # odd grid (ceil of 360 / 16)
        ((240, 180), (360, 480), (23, 30), (11, 15)),
        ((7, 3), (8, 8), (2, 2), (0, 1)),
        ((4, 4), (8, 8), (2, 2), (1, 1)),
    ],
)
def test_feature_position_maps_pixels_onto_the_grid(point, image_size, feature_size, expected):
    assert feature_position(point, image_size, feature_size) == expected


def _slow_on_jax(test):
    # JAX compiles each random initialiser of a SANet it builds, and each op of the eager
    # reference, on first use: minutes on a 2-core CPU. The fast run checks these on TF
    # and torch; on JAX, test_attention_command.py still runs the maps end to end.
    return pytest.mark.slow(test) if keras.backend.backend() == "jax" else test


@_slow_on_jax
@pytest.mark.parametrize("heads", [(1, 4), (2,), (4, 3, 2, 1)])
def test_point_maps_of_a_toy_model_match_a_numpy_reference(toy_model, toy_reference, heads):
    image, prediction, branches = toy_reference
    maps = point_attention_maps(toy_model, image, POINTS, heads=heads)
    assert maps.heads == heads and maps.points == POINTS
    np.testing.assert_array_equal(maps.prediction, prediction)
    assert sorted(maps.distance) == sorted((h, k) for h in heads for k in range(len(POINTS)))
    for head in heads:
        main, attention = branches[head - 1]
        height, width = main.shape[:2]
        for index, (x, y) in enumerate(POINTS):
            # Pixel (x, y) of a 64-wide image lies in column x * width // 64 of the grid.
            row, column = y * height // IMAGE_SIZE[0], x * width // IMAGE_SIZE[1]
            key = (head, index)
            assert maps.feature_points[key] == (row, column)
            np.testing.assert_allclose(
                maps.distance[key], numpy_distance(attention, row, column), rtol=1e-4, atol=1e-4
            )
            channel = int(np.argmax(main[row, column]))
            assert maps.main_channel[key] == channel
            np.testing.assert_allclose(maps.main[key], main[:, :, channel], rtol=1e-5, atol=1e-5)


def _synthetic_maps(points, heads, seed=0):
    """PointAttentionMaps of random arrays at SANet-like grids (1/4 and 1/16 of 48x64)."""
    rng = np.random.default_rng(seed)
    grids = {1: (12, 16), 2: (6, 8), 3: (3, 4), 4: (3, 4)}
    keys = [(head, index) for head in heads for index in range(len(points))]
    return PointAttentionMaps(
        points=tuple(points),
        heads=tuple(heads),
        prediction=rng.integers(0, 3, IMAGE_SIZE),
        distance={key: rng.uniform(0, 5, grids[key[0]]) for key in keys},
        main={key: rng.uniform(0, 2, grids[key[0]]) for key in keys},
        main_channel={key: int(rng.integers(0, 8)) for key in keys},
        feature_points={key: (0, 0) for key in keys},
    )


@pytest.mark.parametrize("heads", [(1, 4), (2,), (1, 2, 3)])
def test_the_figure_lays_out_one_row_per_point(heads):
    image = random_images(height=IMAGE_SIZE[0], width=IMAGE_SIZE[1], seed=6)[0]
    maps = _synthetic_maps(POINTS[:2], heads)
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    narrow = attention_figure(image, maps, palette, panel_width=160)
    wide = attention_figure(image, maps, palette, panel_width=320)
    # Two map columns per head set the width (from 2 heads on; the first row has 4
    # panels): titles wrap to their panel.
    columns = max(2 * len(heads), 3)
    assert wide.width - narrow.width == columns * (320 - 160)
    # Panels are 3/4 as high as wide (the image's aspect); each point row grows by
    # the panel height at least (narrow panels wrap their titles onto more lines).
    assert wide.height - narrow.height >= 2 * (240 - 120)
    with pytest.raises(ValueError, match="pass the image given to point_attention_maps"):
        attention_figure(image[:40], maps, palette)


def test_colormap_and_normalisation():
    np.testing.assert_array_equal(
        apply_colormap(np.array([0.0, 1.0])), [[68, 1, 84], [253, 231, 37]]
    )
    ramp = apply_colormap(np.linspace(0, 1, 50)).astype(int)
    brightness = ramp.sum(-1)
    assert np.all(np.diff(brightness) >= 0)  # viridis brightens monotonically
    # Out-of-range values are clipped, NaN drawn as 0.
    np.testing.assert_array_equal(
        apply_colormap(np.array([-1.0, 2.0, np.nan])), apply_colormap(np.array([0.0, 1.0, 0.0]))
    )
    distance = np.array([[0.0, 2.0], [4.0, 1.0]])
    np.testing.assert_allclose(normalize_map(distance, invert=True), [[1, 0.5], [0, 0.75]])
    np.testing.assert_allclose(normalize_map(np.full((2, 2), 3.0)), 0)


@pytest.mark.parametrize(
    "points,match",
    [
        ([(64, 10)], "x=64, y=10 is outside the image, which is 64 pixels wide"),
        ([(3, 48)], "pick x in 0..63 and y in 0..47"),
        ([(-1, 0)], "outside the image"),
        ([(1, 2, 3)], "two integer pixel coordinates"),
        ([(1.5, 2)], "two integer pixel coordinates"),
        ([(True, 2)], "two integer pixel coordinates"),
        ([], "at least one point"),
    ],
)
def test_bad_points_are_refused(points, match):
    with pytest.raises(ValueError, match=match):
        check_points(points, IMAGE_SIZE)


@pytest.mark.parametrize("heads", [(0,), (5,), (), (1, True), ("1",)])
def test_bad_heads_are_refused(heads):
    with pytest.raises(ValueError, match="SA head numbers from 1"):
        check_heads(heads)


def test_heads_keep_their_order_without_duplicates():
    assert check_heads([4, 1, 4]) == (4, 1)


@pytest.mark.parametrize("position", [(5, 0), (0, 4), (-1, 0)])
def test_positions_outside_the_feature_map_are_refused(position):
    with pytest.raises(ValueError, match="outside the 5x4 feature map"):
        attention_distance_map(np.zeros((5, 4, 2), "float32"), position)
    with pytest.raises(ValueError, match="outside the 5x4 feature map"):
        most_activated_channel(np.zeros((5, 4, 2), "float32"), position)


@_slow_on_jax
def test_a_model_without_sa_heads_is_refused():
    model = SANet(backbone="resnet18", num_classes=3, output_stride=32, attention="none")
    with pytest.raises(ValueError, match="attention='none'. Use a SANet preset"):
        point_attention_maps(model, np.zeros((32, 32, 3), "float32"), [(1, 1)])
