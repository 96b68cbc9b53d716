"""Attention maps of SA heads for chosen points (the paper's Figure 6).

For a point of the image and an SA head, Figure 6 of Zhong et al. (CVPR 2020)
shows two maps at the head's feature resolution:

- the attention map: the L2 distance between the attention branch's feature
  vector (X_attn) at the point and at every other position;
- the main-channel map: the main branch's (X_res) channel that is most
  activated at the point.

```python
from keras_sanet.attention_maps import point_attention_maps

maps = point_attention_maps(model, image, points=[(385, 215), (240, 320)], heads=(1, 4))
maps.distance[(1, 0)]      # head 1, first point: (h1, w1) L2 distances
maps.main[(4, 1)]          # head 4, second point: its most activated main channel
```
"""

import dataclasses
import numbers

import keras
import numpy as np
from keras import ops

NUM_HEADS = 4


def attention_distance_map(attention, position):
    """L2 distance from the feature vector at `position` to every other position.

    Args:
        attention: `(height, width, channels)` or `(batch, height, width,
            channels)` feature map (the SA module's attention branch).
        position: `(row, column)` in the feature map's own grid.

    Returns:
        A float32 tensor `(height, width)` (or `(batch, height, width)`):
        `||attention[y, x] - attention[row, column]||_2`, zero at `position`.

    Example:
    >>> attention = np.array([[[0., 0.], [3., 4.]]])  # 1 x 2 positions, 2 channels
    >>> attention_distance_map(attention, (0, 0))
    [[0.0, 5.0]]
    """
    attention = ops.cast(ops.convert_to_tensor(attention), "float32")
    if len(attention.shape) not in (3, 4):
        raise ValueError(
            "attention must be a (height, width, channels) or (batch, height, width, "
            f"channels) feature map; got shape {tuple(attention.shape)}."
        )
    row, column = _check_position(position, attention.shape[-3:-1])
    reference = attention[..., row : row + 1, column : column + 1, :]
    return ops.sqrt(ops.sum(ops.square(attention - reference), axis=-1))


def most_activated_channel(main, position):
    """The channel of `main` with the highest activation at `position`.

    Args:
        main: `(height, width, channels)` feature map (the SA module's main
            branch).
        position: `(row, column)` in the feature map's grid.

    Returns:
        `(channel, feature_map)`: the channel index (an int) and that
        channel's `(height, width)` map as a float32 NumPy array.

    Example:
    >>> main = np.zeros((2, 2, 3), "float32"); main[1, 0, 2] = 1.0
    >>> most_activated_channel(main, (1, 0))[0]
    2
    """
    main = np.asarray(keras.ops.convert_to_numpy(main), dtype=np.float32)
    if main.ndim != 3:
        raise ValueError(
            f"main must be a (height, width, channels) feature map; got shape {main.shape}."
        )
    row, column = _check_position(position, main.shape[:2])
    channel = int(np.argmax(main[row, column]))
    return channel, main[:, :, channel]


def feature_position(point, image_size, feature_size):
    """The feature-grid cell `(row, column)` that holds image pixel `point = (x, y)`.

    The feature map covers the image evenly (what resizing it to the image's
    size does): pixel centre `x + 0.5` lies in column `floor((x + 0.5) *
    feature_width / image_width)`.

    Args:
        point: `(x, y)` pixel coordinates in the image.
        image_size: `(height, width)` of the image.
        feature_size: `(height, width)` of the feature map.

    Example:
    >>> feature_position((479, 0), (360, 480), (23, 30))
    (0, 29)
    """
    x, y = point
    (image_height, image_width), (feature_height, feature_width) = image_size, feature_size
    row = min(int((y + 0.5) * feature_height / image_height), feature_height - 1)
    column = min(int((x + 0.5) * feature_width / image_width), feature_width - 1)
    return row, column


def check_points(points, image_size):
    """Checks `(x, y)` pixel points against an image of `image_size = (height, width)`.

    Returns the points as a tuple of `(int, int)`; raises a ValueError naming
    the point and the valid range otherwise.
    """
    height, width = image_size
    checked = []
    if not points:
        raise ValueError("Give at least one point (x, y) in pixels, e.g. --points 240,300.")
    for point in points:
        if (
            not isinstance(point, (tuple, list))
            or len(point) != 2
            or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in point
            )
        ):
            raise ValueError(
                f"A point must be two integer pixel coordinates (x, y); got {point!r}."
            )
        x, y = int(point[0]), int(point[1])
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(
                f"Point x={x}, y={y} is outside the image, which is {width} pixels wide "
                f"and {height} high: pick x in 0..{width - 1} and y in 0..{height - 1} "
                "(x counts from the left, y from the top)."
            )
        checked.append((x, y))
    return tuple(checked)


def check_heads(heads):
    """Checks SA head numbers (1..4); returns them as a tuple of ints, duplicates removed."""
    heads = tuple(heads)
    if not heads or not all(
        isinstance(h, numbers.Integral) and not isinstance(h, bool) and 1 <= h <= NUM_HEADS
        for h in heads
    ):
        raise ValueError(
            f"heads must be SA head numbers from 1 (on C2, low level) to {NUM_HEADS} (on "
            f"C5, high level); got {heads!r}. The paper's Figure 6 shows heads 1 and 4."
        )
    return tuple(dict.fromkeys(int(h) for h in heads))


def _check_position(position, size):
    row, column = (int(v) for v in position)
    height, width = (int(v) for v in size)
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(
            f"position (row={row}, column={column}) is outside the {height}x{width} "
            "feature map; map image pixels with feature_position()."
        )
    return row, column


def branch_probe(model):
    """A functional model: images -> `[logits, main_1, attention_1, ..., main_4, attention_4]`.

    It shares `model`'s layers and weights, and runs in inference mode: the
    logits are `model(images)`; `main_i` and `attention_i` are SA head i's
    branches (X_res and the upsampled X_attn, `SANetHeads.head_branches`).
    Being a plain Keras model, `predict_on_batch` compiles it in one piece
    (on JAX much faster than running the layers op by op).

    Example:

    ```python
    logits, main_1, attention_1, *rest = branch_probe(model).predict_on_batch(images)
    ```
    """
    images = keras.Input((None, None, 3))
    logits = model(images, training=False)
    branches = model.heads.head_branches(model.backbone(images, training=False))
    outputs = [logits]
    for _, main, attention in branches:
        outputs += [main, attention]
    return keras.Model(images, outputs, name=f"{model.name}_branch_probe")


@dataclasses.dataclass(frozen=True)
class PointAttentionMaps:
    """What `point_attention_maps` computed; maps keyed by `(head, point_index)`.

    Attributes:
        points: the `(x, y)` pixel points.
        heads: the SA head numbers (1..4).
        prediction: `(height, width)` predicted class ids of the image.
        distance: `(head, k)` -> `(h, w)` L2 distances of the attention
            branch's features from point k's, at the head's resolution.
        main: `(head, k)` -> `(h, w)` the main branch's channel most activated
            at point k.
        main_channel: `(head, k)` -> the index of that channel.
        feature_points: `(head, k)` -> point k's `(row, column)` in the head's
            feature grid.
    """

    points: tuple
    heads: tuple
    prediction: np.ndarray
    distance: dict
    main: dict
    main_channel: dict
    feature_points: dict


def point_attention_maps(model, image, points, heads=(1, 4)):
    """Figure 6's maps of a SANet for one image and a few points.

    Runs the model once (`branch_probe`: the logits and every SA head's
    branches, inference mode) and computes, for every point and chosen head, the
    attention L2-distance map and the most activated main-channel map. The
    prediction is the model's own (argmax of its logits).

    Args:
        model: a `keras_sanet.SANet` with `attention="sa"`.
        image: `(height, width, 3)` RGB image, 0..255.
        points: `(x, y)` pixel coordinates in `image`.
        heads: SA head numbers, 1 (low level) .. 4 (high level).

    Returns:
        A `PointAttentionMaps`.

    Example:

    ```python
    model = keras_sanet.SANet.from_preset("sanet_mobilenetv2_os16_camvid")
    maps = point_attention_maps(model, image, [(385, 215)], heads=(1, 4))
    maps.distance[(4, 0)].shape   # head 4's feature grid, e.g. (23, 30)
    ```
    """
    if getattr(model, "attention", None) != "sa":
        raise ValueError(
            "Attention maps need a SANet with SA heads (attention='sa'); this model has "
            f"attention={getattr(model, 'attention', None)!r}. Use a SANet preset or "
            "model trained with attention='sa'."
        )
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image must be one RGB image (height, width, 3); got shape {image.shape}."
        )
    heads = check_heads(heads)
    points = check_points(points, image.shape[:2])
    probe, batch = branch_probe(model), image[None].astype("float32")
    if keras.backend.backend() == "jax":
        # Eager JAX compiles every op on first use; one jit of the whole probe is faster.
        outputs = probe.predict_on_batch(batch)
    else:
        # Tracing a graph for one image costs more than running it eagerly.
        outputs = probe(batch, training=False)
    outputs = [np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32) for t in outputs]
    prediction = np.argmax(outputs[0][0], axis=-1)

    distance, main_maps, main_channel, feature_points = {}, {}, {}, {}
    for head in heads:
        main, attention = outputs[2 * head - 1][0], outputs[2 * head][0]
        for index, point in enumerate(points):
            position = feature_position(point, image.shape[:2], main.shape[:2])
            key = (head, index)
            feature_points[key] = position
            distance[key] = keras.ops.convert_to_numpy(
                attention_distance_map(attention, position)
            )
            main_channel[key], main_maps[key] = most_activated_channel(main, position)
    return PointAttentionMaps(
        points=points,
        heads=heads,
        prediction=prediction,
        distance=distance,
        main=main_maps,
        main_channel=main_channel,
        feature_points=feature_points,
    )
