"""3x3 convolutions by Winograd's minimal filtering, F(2x2, 3x3), in `keras.ops`.

Each 2x2 block of outputs is computed from a 4x4 tile of the input with 16
multiplies per input/output channel pair instead of 36 (Lavin and Gray, "Fast
Algorithms for Convolutional Neural Networks", CVPR 2016):
`Y = A^T [(G g G^T) * (B^T d B)] A`. Summed over input channels, the 16
products are 16 matrix multiplies of the tiles against the transformed kernel,
2.25x fewer multiply-adds than the direct convolution, at matmul speed; the
transforms are additions and subtractions. cuDNN and oneDNN pick the same
algorithm for some shapes on their own; on the 2-core CPU's shapes of SANet
they did not (benchmarks/PROFILE.md section 12).

A dilated kernel pairs output pixels `d` apart: the tile of output `i` and
`i + d` reads the inputs `i - d, i, i + d, i + 2d`, so the same transforms
apply to inputs taken every `d`-th pixel.
"""

import keras
import numpy as np
from keras import ops

# Lavin and Gray's kernel transform G (B^T and A^T are written out as sums below).
_KERNEL_TRANSFORM = np.array(
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype="float32"
)
# (16, 9): the 2D kernel transform G g G^T as one matrix on the flattened 3x3 kernel.
_KERNEL_TRANSFORM_2D = np.einsum(
    "ai,bj->abij", _KERNEL_TRANSFORM, _KERNEL_TRANSFORM
).reshape(16, 9)


def _transform_input(tiles):
    """B^T d along one axis, `tiles` the 4 slices d_0..d_3 of a tile."""
    d0, d1, d2, d3 = tiles
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _transform_output(products):
    """A^T m along one axis, `products` the 4 slices m_0..m_3."""
    m0, m1, m2, m3 = products
    return [m0 + m1 + m2, m1 - m2 - m3]


def _transform_output_gradient(gradients):
    """A g along one axis, the transpose of `_transform_output`: the 4 slices of
    the products' gradient from the 2 slices of the outputs' gradient."""
    g0, g1 = gradients
    return [g0, g0 + g1, g0 - g1, -g1]


def _tile_slices(padded, axis, size, rate):
    """The 4 inputs of every tile along `axis` (1: rows, 3: columns after the
    rows were tiled), each with that axis split into (tiles, rate).

    Output pixels `o = 2 * rate * t + r` (r < rate) and `o + rate` share a tile
    whose inputs are `padded[o + j * rate]`, j = 0..3.
    """
    slices = []
    # The batch may be unknown (TensorFlow's None): -1 in the reshape.
    shape = (-1,) + tuple(padded.shape[1:axis]) + (size // (2 * rate), 2 * rate) + tuple(
        padded.shape[axis + 1:])
    leading = (slice(None),) * axis
    for j in range(4):
        piece = ops.reshape(padded[leading + (slice(j * rate, j * rate + size),)], shape)
        slices.append(piece[leading + (slice(None), slice(0, rate))])
    return slices


def _tiled_sizes(height, width, rates):
    """Height and width padded to whole tiles: 2 * rate output pixels per block."""
    return tuple(-(-size // (2 * rate)) * 2 * rate
                 for size, rate in zip((height, width), rates))


def _input_tiles(inputs, rates):
    """B^T d B of every tile: `(16, tiles, in_channels)`, and the tiles' grid
    `(row tiles, row_rate, column tiles, column_rate)`."""
    row_rate, column_rate = rates
    _, height, width, in_channels = inputs.shape
    tiled_height, tiled_width = _tiled_sizes(height, width, rates)
    # Before: the kernel's reach. After: its reach, the last tile's unused
    # inputs (slices of equal length) and the padding to whole tiles.
    padded = ops.pad(inputs, (
        (0, 0),
        (row_rate, 2 * row_rate + tiled_height - height),
        (column_rate, 2 * column_rate + tiled_width - width),
        (0, 0),
    ))
    rows = _transform_input(_tile_slices(padded, 1, tiled_height, row_rate))
    transformed = []
    for row in rows:  # each (batch, row tiles, row_rate, padded width, in)
        transformed += _transform_input(_tile_slices(row, 3, tiled_width, column_rate))
    # Each (batch, row tiles, row_rate, column tiles, column_rate, in).
    grid = tuple(transformed[0].shape[1:-1])
    return ops.reshape(ops.stack(transformed), (16, -1, in_channels)), grid


def _transform_kernel(kernel):
    """G g G^T: `(16, in_channels, out_channels)` from the `(3, 3, in, out)` kernel."""
    in_channels, out_channels = kernel.shape[2:]
    transformed = ops.matmul(
        ops.convert_to_tensor(_KERNEL_TRANSFORM_2D, dtype=kernel.dtype),
        ops.reshape(kernel, (9, in_channels * out_channels)),
    )
    return ops.reshape(transformed, (16, in_channels, out_channels))


def _outputs(products, grid, size):
    """A^T m A of the `(16, tiles, out)` products: the `(batch, height, width, out)` outputs."""
    out_channels = products.shape[-1]
    products = ops.reshape(products, (4, 4, -1) + grid + (out_channels,))
    halves = [
        ops.stack(_transform_output([row[k] for k in range(4)]))
        for row in _transform_output([products[k] for k in range(4)])
    ]
    # (2 rows a, 2 columns b, batch, row tiles, row_rate, column tiles, column_rate, out)
    # -> (batch, row tiles, a, row_rate, column tiles, b, column_rate, out): output
    # row 2 * rate * t + a * rate + r.
    outputs = ops.transpose(ops.stack(halves), (2, 3, 0, 4, 5, 1, 6, 7))
    tiled_height, tiled_width = 2 * grid[0] * grid[1], 2 * grid[2] * grid[3]
    outputs = ops.reshape(outputs, (-1, tiled_height, tiled_width, out_channels))
    if (tiled_height, tiled_width) != tuple(size):
        outputs = outputs[:, :size[0], :size[1], :]
    return outputs


def _products_gradient(upstream, grid):
    """The `(16, tiles, out)` products' gradient from the outputs' gradient
    (`_outputs` transposed: A g A^T per tile)."""
    _, height, width, out_channels = upstream.shape
    rows, row_rate, columns, column_rate = grid
    tiled_height, tiled_width = 2 * rows * row_rate, 2 * columns * column_rate
    upstream = ops.pad(upstream, ((0, 0), (0, tiled_height - height),
                                  (0, tiled_width - width), (0, 0)))
    upstream = ops.reshape(upstream, (-1, rows, 2, row_rate, columns, 2, column_rate,
                                      out_channels))
    # (a, b, batch, row tiles, row_rate, column tiles, column_rate, out)
    upstream = ops.transpose(upstream, (2, 5, 0, 1, 3, 4, 6, 7))
    halves = _transform_output_gradient([upstream[0], upstream[1]])
    quarters = []
    for half in halves:
        quarters += _transform_output_gradient([half[0], half[1]])
    return ops.reshape(ops.stack(quarters), (16, -1, out_channels))


def _convolve(inputs, kernel, rates):
    """The forward pass: `(outputs, input tiles, tile grid)`."""
    tiles, grid = _input_tiles(inputs, rates)
    products = ops.matmul(tiles, _transform_kernel(kernel))
    return _outputs(products, grid, inputs.shape[1:3]), tiles, grid


def winograd_conv3x3(inputs, kernel, dilation_rate=(1, 1)):
    """A stride-1, "same"-padded 3x3 convolution of NHWC `inputs` by Winograd F(2x2, 3x3).

    Equal to `ops.conv(inputs, kernel, padding="same", dilation_rate=...)` up
    to float rounding (relative differences ~1e-6 in float32), gradients
    included. Height and width must be numbers where it is traced; any size
    works (the input is padded to whole tiles and the output cropped).

    The gradients are written out rather than left to autodiff, whose
    gradients of the tiles' slices took TensorFlow 2-6x its own convolution's
    backward pass: the input's gradient is this convolution of the output's
    gradient with the kernel flipped and its channels swapped; the kernel's is
    the input tiles' 16 matmuls against the products' gradient, transformed back
    (the tiles recomputed from the input rather than kept: 4x its memory).

    Args:
        inputs: `(batch, height, width, in_channels)` tensor.
        kernel: `(3, 3, in_channels, out_channels)` tensor.
        dilation_rate: int or (rows, columns).

    Returns:
        `(batch, height, width, out_channels)`.

    Example:
    >>> x = np.random.rand(1, 6, 7, 4).astype("float32")
    >>> w = np.random.rand(3, 3, 4, 5).astype("float32")
    >>> y = winograd_conv3x3(x, w)
    >>> bool(np.allclose(y, ops.conv(x, w, padding="same"), atol=1e-4))
    True
    """
    if isinstance(dilation_rate, int):
        dilation_rate = (dilation_rate, dilation_rate)
    rates = tuple(dilation_rate)

    @ops.custom_gradient
    def convolution(x, w):
        outputs, _, grid = _convolve(x, w, rates)

        def gradients(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass it positionally
                (upstream,) = args
            flipped = ops.transpose(ops.flip(ops.flip(w, axis=0), axis=1), (0, 1, 3, 2))
            input_gradient = _convolve(upstream, flipped, rates)[0]
            products_gradient = _products_gradient(upstream, grid)
            # Recomputed, not kept from the forward pass: the tiles take 4x the
            # input's memory (PyTorch's peak for SANet-R50's training step: +1.1
            # GB kept, +0.25 GB recomputed, at 0-10 % of these layers' time).
            tiles = _input_tiles(x, rates)[0]
            # (16, in, out): per tile position, tiles^T @ products' gradient.
            transformed_gradient = ops.matmul(ops.transpose(tiles, (0, 2, 1)),
                                              products_gradient)
            in_channels, out_channels = w.shape[2:]
            kernel_gradient = ops.matmul(
                ops.convert_to_tensor(_KERNEL_TRANSFORM_2D.T, dtype=w.dtype),
                ops.reshape(transformed_gradient, (16, in_channels * out_channels)),
            )
            return input_gradient, ops.reshape(kernel_gradient, ops.shape(w))

        return outputs, gradients

    # Tensors, not variables (the cast reads one): TensorFlow's custom_gradient
    # would want a `variables` argument for a variable read inside, and
    # PyTorch's autograd Function tracks tensors only.
    kernel = ops.cast(kernel, keras.backend.standardize_dtype(kernel.dtype))
    return convolution(ops.convert_to_tensor(inputs), kernel)
