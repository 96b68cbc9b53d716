"""keras_sanet.layers.winograd: F(2x2, 3x3) and F(4x4, 3x3) equal the direct 3x3
convolution."""

import keras
import numpy as np
import pytest

from keras_sanet.layers import Conv2D
from keras_sanet.layers.winograd import winograd_conv3x3
from tests.helpers import assert_gradients_match
from tests.helpers import random_features
from tests.helpers import to_numpy
from tests.helpers import twin_layers
from tests.helpers import winograd_at_any_size

# (input shape, dilation rate): whole tiles, sizes padded to whole tiles,
# an image smaller than one tile, dilations (even rows and columns apart).
CASES = {
    "8x8": ((2, 8, 8, 5), (1, 1)),
    "odd_7x5": ((1, 7, 5, 3), (1, 1)),
    "1x1_image": ((1, 1, 1, 4), (1, 1)),
    "dilated_2_odd_9x13": ((2, 9, 13, 3), (2, 2)),
    "dilated_4_16x12": ((1, 16, 12, 4), (4, 4)),
    "dilated_4_3x2_image": ((1, 3, 2, 3), (4, 4)),
    "dilated_1_3": ((1, 5, 11, 3), (1, 3)),
}
# float32 rounding of the transforms, as a fraction of the largest output or
# gradient: F(4x4, 3x3)'s transforms multiply by up to 8 and divide by 24.
TOLERANCE = {2: 1e-5, 4: 5e-5}
# The tile transforms as sums slice by slice, or as one matmul each.
TRANSFORMS = {"sums": False, "matmuls": True}


@pytest.mark.parametrize("transforms", TRANSFORMS)
@pytest.mark.parametrize("output_size", TOLERANCE)
@pytest.mark.parametrize("case", CASES)
def test_matches_direct_convolution(case, output_size, transforms):
    shape, rates = CASES[case]
    x = random_features(shape)
    kernel = random_features((3, 3, shape[-1], 6), seed=1)
    expected = to_numpy(keras.ops.conv(x, kernel, padding="same", dilation_rate=rates))
    outputs = to_numpy(winograd_conv3x3(keras.ops.convert_to_tensor(x),
                                        keras.ops.convert_to_tensor(kernel), rates,
                                        output_size, TRANSFORMS[transforms]))
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=0,
                               atol=TOLERANCE[output_size] * np.abs(expected).max())


def test_int_dilation_rate_is_both_axes():
    x, kernel = random_features((1, 6, 6, 2)), random_features((3, 3, 2, 2), seed=1)
    np.testing.assert_array_equal(to_numpy(winograd_conv3x3(x, kernel, 2)),
                                  to_numpy(winograd_conv3x3(x, kernel, (2, 2))))


def test_unknown_output_size_names_the_choices():
    x, kernel = random_features((1, 6, 6, 2)), random_features((3, 3, 2, 2), seed=1)
    with pytest.raises(ValueError, match=r"output_size must be one of \[2, 4\].*got 3"):
        winograd_conv3x3(x, kernel, output_size=3)


@pytest.mark.parametrize("transforms", TRANSFORMS)
@pytest.mark.parametrize("output_size", TOLERANCE)
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_direct_convolution(case, output_size, transforms):
    # The gradients are written out, not autodiff's: each tiling above is checked
    # in the backward pass too (padding to whole tiles, crops, dilations).
    shape, rates = CASES[case]
    ours, reference, x = twin_layers(Conv2D, keras.layers.Conv2D, shape, dict(
        filters=6, kernel_size=3, padding="same", dilation_rate=rates, use_bias=False))
    winograd_at_any_size(ours)
    ours.winograd_output_size = output_size
    ours.winograd_transforms_as_matmuls = TRANSFORMS[transforms]
    assert ours.runs_winograd(x)
    assert_gradients_match(ours, reference, x, atol=TOLERANCE[output_size],
                           atol_of_largest=True)
