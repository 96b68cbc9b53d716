"""3x3 convolutions by Winograd's minimal filtering, F(2x2, 3x3) and F(4x4, 3x3),
in `keras.ops`.

F(m x m, 3x3) computes each m x m block of outputs from an (m + 2) x (m + 2)
tile of the input with (m + 2)^2 multiplies per input/output channel pair
instead of 9 m^2 (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016): `Y = A^T [(G g G^T) * (B^T d B)] A`. Summed over input
channels, the products are (m + 2)^2 matrix multiplies of the tiles against
the transformed kernel, at matmul speed: 16 for F(2x2, 3x3), 2.25x fewer
multiply-adds than the direct convolution; 36 for F(4x4, 3x3), 4x fewer. The
transforms are sums with small factors (up to 8, and 1/24 in the kernel's),
which cost F(4x4, 3x3) ~10x F(2x2, 3x3)'s float32 rounding. cuDNN and oneDNN
pick such algorithms for some shapes on their own; on the 2-core CPU's shapes
of SANet they did not (benchmarks/PROFILE.md sections 12 and 14).

A dilated kernel pairs output pixels `d` apart: the tile of outputs `i`,
`i + d`, ... reads the inputs `i - d, i, i + d, ...`, so the same transforms
apply to inputs taken every `d`-th pixel.
"""

import collections

import keras
import numpy as np
from keras import ops


def _kernel_transform_2d(kernel_transform):
    """`(n*n, 9)`: the 2D kernel transform G g G^T as one matrix on the flattened
    3x3 kernel, from the `(n, 3)` G."""
    n = len(kernel_transform)
    return np.einsum("ai,bj->abij", kernel_transform, kernel_transform).reshape(n * n, 9)


# F(2x2, 3x3): B^T d, A^T m and A g along one axis, written out as sums.
def _f2_transform_input(tiles):
    """B^T d along one axis, `tiles` the 4 slices d_0..d_3 of a tile."""
    d0, d1, d2, d3 = tiles
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _f2_transform_output(products):
    """A^T m along one axis, `products` the 4 slices m_0..m_3."""
    m0, m1, m2, m3 = products
    return [m0 + m1 + m2, m1 - m2 - m3]


def _f2_transform_output_gradient(gradients):
    """A g along one axis, the transpose of `_f2_transform_output`: the 4 slices
    of the products' gradient from the 2 slices of the outputs' gradient."""
    g0, g1 = gradients
    return [g0, g0 + g1, g0 - g1, -g1]


# F(4x4, 3x3) (Lavin and Gray's points 0, +-1, +-2): the same with 6x6 tiles.
# Shared sums keep each transform at ~2 ops per slice.
def _f4_transform_input(tiles):
    """B^T d along one axis, `tiles` the 6 slices d_0..d_5 of a tile."""
    d0, d1, d2, d3, d4, d5 = tiles
    a, b = d4 - 4 * d2, d3 - 4 * d1
    c, e = d4 - d2, 2 * (d3 - d1)
    return [4 * d0 - 5 * d2 + d4, a + b, a - b, c + e, c - e, 4 * d1 - 5 * d3 + d5]


def _f4_transform_output(products):
    """A^T m along one axis, `products` the 6 slices m_0..m_5."""
    m0, m1, m2, m3, m4, m5 = products
    a, b, c, e = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return [m0 + a + c, b + 2 * e, a + 4 * c, b + 8 * e + m5]


def _f4_transform_output_gradient(gradients):
    """A g along one axis, the transpose of `_f4_transform_output`."""
    g0, g1, g2, g3 = gradients
    even, odd = g0 + g2, g1 + g3
    even4, odd8 = g0 + 4 * g2, 2 * g1 + 8 * g3
    return [g0, even + odd, even - odd, even4 + odd8, even4 - odd8, g3]


def _transform_2d(transform, size):
    """The 2D transform of a tile (`transform` along both axes) as one matrix on
    the tile flattened row-major: the Kronecker product of the 1D matrix, read
    off `transform` applied to the unit vectors."""
    matrix = np.stack(transform(list(np.eye(size))), axis=0)
    return np.kron(matrix, matrix)


_Algorithm = collections.namedtuple("_Algorithm", [
    "outputs",  # m: output pixels per tile and axis; the tile is m + 2 inputs
    "transform_input", "transform_output", "transform_output_gradient",
    "kernel_transform_2d",  # (tile * tile, 9)
    "input_transform_2d",  # (tile * tile, tile * tile): B^T d B on a flattened tile
    "output_transform_2d",  # (m * m, tile * tile): A^T m A
])


def _algorithm(outputs, transform_input, transform_output, transform_output_gradient,
               kernel_transform):
    tile = outputs + 2
    return _Algorithm(outputs, transform_input, transform_output, transform_output_gradient,
                      _kernel_transform_2d(np.array(kernel_transform)),
                      _transform_2d(transform_input, tile),
                      _transform_2d(transform_output, tile))


ALGORITHMS = {
    2: _algorithm(2, _f2_transform_input, _f2_transform_output,
                  _f2_transform_output_gradient,
                  [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    4: _algorithm(4, _f4_transform_input, _f4_transform_output,
                  _f4_transform_output_gradient, [
                      [1 / 4, 0, 0],
                      [-1 / 6, -1 / 6, -1 / 6],
                      [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6],
                      [1 / 24, -1 / 12, 1 / 6],
                      [0, 0, 1],
                  ]),
}


def _tile_slices(padded, axis, size, rate, algorithm):
    """The m + 2 inputs of every tile along `axis` (1: rows, 3: columns after
    the rows were tiled), each with that axis split into (tiles, rate).

    Output pixels `o = m * rate * t + r` (r < rate), `o + rate`, ...,
    `o + (m - 1) * rate` share a tile whose inputs are `padded[o + j * rate]`,
    j = 0..m+1.
    """
    step = algorithm.outputs * rate
    slices = []
    # The batch may be unknown (TensorFlow's None): -1 in the reshape.
    shape = (-1,) + tuple(padded.shape[1:axis]) + (size // step, step) + tuple(
        padded.shape[axis + 1:])
    leading = (slice(None),) * axis
    for j in range(algorithm.outputs + 2):
        piece = ops.reshape(padded[leading + (slice(j * rate, j * rate + size),)], shape)
        slices.append(piece[leading + (slice(None), slice(0, rate))])
    return slices


def _tiled_sizes(height, width, rates, algorithm):
    """Height and width padded to whole tiles: m * rate output pixels per block."""
    return tuple(-(-size // (algorithm.outputs * rate)) * algorithm.outputs * rate
                 for size, rate in zip((height, width), rates))


def _matmul_2d(matrix, stacked):
    """`matrix @ stacked` over the first axis of the `(tile positions, tiles,
    channels)` `stacked`."""
    flat = ops.reshape(stacked, (stacked.shape[0], -1))
    product = ops.matmul(ops.convert_to_tensor(matrix, dtype=stacked.dtype), flat)
    return ops.reshape(product, (len(matrix), -1, stacked.shape[-1]))


def _input_tiles(inputs, rates, algorithm, as_matmuls=False):
    """B^T d B of every tile: `(tile * tile, tiles, in_channels)`, and the
    tiles' grid `(row tiles, row_rate, column tiles, column_rate)`.

    `as_matmuls`: the tiles gathered, then transformed by one matmul with the
    `(tile * tile, tile * tile)` matrix, instead of sums slice by slice."""
    row_rate, column_rate = rates
    _, height, width, in_channels = inputs.shape
    tiled_height, tiled_width = _tiled_sizes(height, width, rates, algorithm)
    # Before: the kernel's reach. After: its reach, the last tile's unused
    # inputs (slices of equal length) and the padding to whole tiles.
    m = algorithm.outputs
    padded = ops.pad(inputs, (
        (0, 0),
        (row_rate, m * row_rate + tiled_height - height),
        (column_rate, m * column_rate + tiled_width - width),
        (0, 0),
    ))
    transform = (lambda pieces: pieces) if as_matmuls else algorithm.transform_input
    rows = transform(_tile_slices(padded, 1, tiled_height, row_rate, algorithm))
    transformed = []
    for row in rows:  # each (batch, row tiles, row_rate, padded width, in)
        transformed += transform(_tile_slices(row, 3, tiled_width, column_rate, algorithm))
    # Each (batch, row tiles, row_rate, column tiles, column_rate, in).
    grid = tuple(transformed[0].shape[1:-1])
    tiles = ops.reshape(ops.stack(transformed), (len(transformed), -1, in_channels))
    if as_matmuls:
        tiles = _matmul_2d(algorithm.input_transform_2d, tiles)
    return tiles, grid


def _transform_kernel(kernel, algorithm):
    """G g G^T: `(tile * tile, in_channels, out_channels)` from the `(3, 3, in,
    out)` kernel."""
    in_channels, out_channels = kernel.shape[2:]
    transform = algorithm.kernel_transform_2d
    transformed = ops.matmul(
        ops.convert_to_tensor(transform, dtype=kernel.dtype),
        ops.reshape(kernel, (9, in_channels * out_channels)),
    )
    return ops.reshape(transformed, (len(transform), in_channels, out_channels))


def _outputs(products, grid, size, algorithm, as_matmuls=False):
    """A^T m A of the `(tile * tile, tiles, out)` products: the `(batch, height,
    width, out)` outputs (`as_matmuls`: one matmul, not sums slice by slice)."""
    out_channels = products.shape[-1]
    m, tile = algorithm.outputs, algorithm.outputs + 2
    if as_matmuls:
        blocks = ops.reshape(_matmul_2d(algorithm.output_transform_2d, products),
                             (m, m, -1) + grid + (out_channels,))
    else:
        products = ops.reshape(products, (tile, tile, -1) + grid + (out_channels,))
        blocks = ops.stack([
            ops.stack(algorithm.transform_output([row[k] for k in range(tile)]))
            for row in algorithm.transform_output([products[k] for k in range(tile)])
        ])
    # (m rows a, m columns b, batch, row tiles, row_rate, column tiles, column_rate,
    # out) -> (batch, row tiles, a, row_rate, column tiles, b, column_rate, out):
    # output row m * rate * t + a * rate + r.
    outputs = ops.transpose(blocks, (2, 3, 0, 4, 5, 1, 6, 7))
    tiled_height, tiled_width = m * grid[0] * grid[1], m * grid[2] * grid[3]
    outputs = ops.reshape(outputs, (-1, tiled_height, tiled_width, out_channels))
    if (tiled_height, tiled_width) != tuple(size):
        outputs = outputs[:, :size[0], :size[1], :]
    return outputs


def _products_gradient(upstream, grid, algorithm, as_matmuls=False):
    """The `(tile * tile, tiles, out)` products' gradient from the outputs'
    gradient (`_outputs` transposed: A g A^T per tile)."""
    _, height, width, out_channels = upstream.shape
    m = algorithm.outputs
    rows, row_rate, columns, column_rate = grid
    tiled_height, tiled_width = m * rows * row_rate, m * columns * column_rate
    upstream = ops.pad(upstream, ((0, 0), (0, tiled_height - height),
                                  (0, tiled_width - width), (0, 0)))
    upstream = ops.reshape(upstream, (-1, rows, m, row_rate, columns, m, column_rate,
                                      out_channels))
    # (a, b, batch, row tiles, row_rate, column tiles, column_rate, out)
    upstream = ops.transpose(upstream, (2, 5, 0, 1, 3, 4, 6, 7))
    if as_matmuls:
        return _matmul_2d(algorithm.output_transform_2d.T,
                          ops.reshape(upstream, (m * m, -1, out_channels)))
    rows_gradient = algorithm.transform_output_gradient([upstream[a] for a in range(m)])
    gradient = []
    for row in rows_gradient:
        gradient += algorithm.transform_output_gradient([row[b] for b in range(m)])
    return ops.reshape(ops.stack(gradient), (len(gradient), -1, out_channels))


def _convolve(inputs, kernel, rates, algorithm, as_matmuls):
    """The forward pass: `(outputs, input tiles, tile grid)`."""
    tiles, grid = _input_tiles(inputs, rates, algorithm, as_matmuls)
    products = ops.matmul(tiles, _transform_kernel(kernel, algorithm))
    return _outputs(products, grid, inputs.shape[1:3], algorithm, as_matmuls), tiles, grid


def winograd_conv3x3(inputs, kernel, dilation_rate=(1, 1), output_size=4,
                     transforms_as_matmuls=True):
    """A stride-1, "same"-padded 3x3 convolution of NHWC `inputs` by Winograd
    F(m x m, 3x3), m = `output_size`.

    Equal to `ops.conv(inputs, kernel, padding="same", dilation_rate=...)` up
    to float rounding, gradients included: in float32, ~2e-6 of the largest
    output for F(2x2, 3x3), ~2e-5 for F(4x4, 3x3), whose transforms multiply
    by up to 8 and divide by 24. Height and width must be numbers where it is traced; any size
    works (the input is padded to whole tiles and the output cropped).

    The gradients are written out rather than left to autodiff, whose
    gradients of the tiles' slices took TensorFlow 2-6x its own convolution's
    backward pass: the input's gradient is this convolution of the output's
    gradient with the kernel flipped and its channels swapped; the kernel's is
    the input tiles' matmuls against the products' gradient, transformed back
    (the tiles recomputed from the input rather than kept: 2.25-4x its memory).

    Args:
        inputs: `(batch, height, width, in_channels)` tensor.
        kernel: `(3, 3, in_channels, out_channels)` tensor.
        dilation_rate: int or (rows, columns).
        output_size: 2 for F(2x2, 3x3) (4x4 tiles, 16 matmuls, 2.25x fewer
            multiplies than the direct convolution) or 4 for F(4x4, 3x3) (6x6
            tiles, 36 matmuls, 4x fewer; larger transforms and rounding errors;
            the default, as `keras_sanet.layers.Conv2D`'s).
        transforms_as_matmuls: the tiles' transforms B^T d B and A^T m A (and
            the latter's transpose in the gradient) as one matmul each with
            the `(tile^2, tile^2)` or `(m^2, tile^2)` matrix on the gathered
            tiles, instead of sums slice by slice: fewer, larger ops, which
            XLA and TensorFlow ran faster. The dense matrices multiply by their
            zeros too: (tile^2 / out_channels + m^2 / in_channels) times the
            products' multiply-adds more (SANet-R50 OS8: +11 %). The default,
            as `Conv2D`'s.

    Returns:
        `(batch, height, width, out_channels)`.

    Example:
    >>> x = np.random.rand(1, 6, 7, 4).astype("float32")
    >>> w = np.random.rand(3, 3, 4, 5).astype("float32")
    >>> y = winograd_conv3x3(x, w)
    >>> bool(np.allclose(y, ops.conv(x, w, padding="same"), rtol=1e-4, atol=1e-4))
    True
    """
    if output_size not in ALGORITHMS:
        raise ValueError(
            f"Winograd's output_size must be one of {sorted(ALGORITHMS)} (F(2x2, 3x3) "
            f"or F(4x4, 3x3)); got {output_size!r}.")
    algorithm = ALGORITHMS[output_size]
    if isinstance(dilation_rate, int):
        dilation_rate = (dilation_rate, dilation_rate)
    rates = tuple(dilation_rate)

    @ops.custom_gradient
    def convolution(x, w):
        outputs, _, grid = _convolve(x, w, rates, algorithm, transforms_as_matmuls)

        def gradients(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass it positionally
                (upstream,) = args
            flipped = ops.transpose(ops.flip(ops.flip(w, axis=0), axis=1), (0, 1, 3, 2))
            input_gradient = _convolve(upstream, flipped, rates, algorithm,
                                       transforms_as_matmuls)[0]
            products_gradient = _products_gradient(upstream, grid, algorithm,
                                                   transforms_as_matmuls)
            # Recomputed, not kept from the forward pass: the tiles take 2.25x
            # (F(4x4, 3x3)) or 4x (F(2x2, 3x3)) the input's memory. With F(2x2,
            # 3x3), PyTorch's peak for SANet-R50's training step: +1.1 GB kept,
            # +0.25 GB recomputed, at 0-10 % of these layers' time.
            tiles = _input_tiles(x, rates, algorithm, transforms_as_matmuls)[0]
            # (tile * tile, in, out): per tile position, tiles^T @ products' gradient.
            transformed_gradient = ops.matmul(ops.transpose(tiles, (0, 2, 1)),
                                              products_gradient)
            in_channels, out_channels = w.shape[2:]
            kernel_gradient = ops.matmul(
                ops.convert_to_tensor(algorithm.kernel_transform_2d.T, dtype=w.dtype),
                ops.reshape(transformed_gradient, (-1, in_channels * out_channels)),
            )
            return input_gradient, ops.reshape(kernel_gradient, ops.shape(w))

        return outputs, gradients

    # Tensors, not variables (the cast reads one): TensorFlow's custom_gradient
    # would want a `variables` argument for a variable read inside, and
    # PyTorch's autograd Function tracks tensors only.
    kernel = ops.cast(kernel, keras.backend.standardize_dtype(kernel.dtype))
    return convolution(ops.convert_to_tensor(inputs), kernel)
