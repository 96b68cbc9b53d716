"""Drawing the paper's Figure 6: attention maps of SA heads for chosen points (Pillow only).

The maps come from `keras_sanet.attention_maps.point_attention_maps`; this
module lays them out as one labelled picture, reusing the colour masks and
legends of `keras_sanet.visualization`.

```python
from keras_sanet.attention_figure import attention_figure
from keras_sanet.attention_maps import point_attention_maps

maps = point_attention_maps(model, image, [(385, 215), (240, 320)], heads=(1, 4))
attention_figure(image, maps, palette, class_names).save("attention.png")
```
"""

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_sanet.visualization import _as_image
from keras_sanet.visualization import _legend_font
from keras_sanet.visualization import colorize
from keras_sanet.visualization import draw_legend

# Eight samples of matplotlib's viridis (R's `viridis(8)`), interpolated linearly.
VIRIDIS = np.array(
    [
        (68, 1, 84),
        (70, 51, 126),
        (54, 92, 141),
        (39, 127, 142),
        (31, 161, 135),
        (74, 193, 109),
        (159, 218, 58),
        (253, 231, 37),
    ],
    dtype=np.float32,
)
# Marker colours of points 1, 2, 3, ... (cycled): readable on viridis and on photos.
POINT_COLOURS = (
    (255, 40, 40),
    (0, 200, 255),
    (255, 0, 255),
    (255, 150, 0),
    (0, 255, 120),
    (255, 255, 255),
)
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_GAP = 6  # pixels between panels
_TITLE_PADDING = 3


def apply_colormap(values, colormap=VIRIDIS):
    """Colours values in [0, 1] with a colormap table (linear interpolation).

    Args:
        values: array of any shape; clipped to [0, 1], NaN drawn as 0.
        colormap: `(n, 3)` RGB table (n >= 2), from value 0 to value 1.

    Returns:
        A uint8 array of `values.shape + (3,)`.

    Example:
    >>> apply_colormap(np.array([0.0, 1.0]))
    array([[ 68,   1,  84],
           [253, 231,  37]], dtype=uint8)
    """
    table = np.asarray(colormap, dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 3 or len(table) < 2:
        raise ValueError(
            f"colormap must be an (n, 3) RGB table with n >= 2; got shape {table.shape}."
        )
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    position = values * (len(table) - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), len(table) - 2)
    weight = (position - lower)[..., None]
    rgb = (1.0 - weight) * table[lower] + weight * table[lower + 1]
    return np.round(rgb).astype(np.uint8)


def normalize_map(values, invert=False):
    """Scales a map to [0, 1] (min -> 0, max -> 1; a constant map -> 0).

    With `invert=True` the minimum maps to 1: for distances, so that the
    positions nearest the point are the brightest.
    """
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return 1.0 - scaled if invert else scaled


def _resize_map(values, size):
    """Bilinear resize of a float map to `size = (width, height)` (Figure 6 scales all maps)."""
    picture = Image.fromarray(np.asarray(values, dtype=np.float32))  # mode "F"
    return np.asarray(picture.resize(size, Image.BILINEAR))


def _draw_marker(picture, centre, colour, label=None):
    draw = ImageDraw.Draw(picture)
    x, y = centre
    radius = max(4, picture.width // 60)
    draw.ellipse(
        (x - radius, y - radius, x + radius, y + radius),
        fill=colour,
        outline=(255, 255, 255),
        width=2,
    )
    draw.ellipse(
        (x - radius - 2, y - radius - 2, x + radius + 2, y + radius + 2), outline=(0, 0, 0)
    )
    if label is not None:
        font = _legend_font()
        position = (x + radius + 3, y - radius - 3)
        draw.text(position, label, fill=(255, 255, 255), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))


def _wrap(text, font, width):
    """Splits `text` into lines no wider than `width` pixels (a long word keeps its line)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = []
    for paragraph in text.split("\n"):
        indent = paragraph[: len(paragraph) - len(paragraph.lstrip())]
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else indent + word
            if line and measure.textlength(candidate, font=font) > width:
                lines.append(line)
                candidate = indent + word
            line = candidate
        lines.append(line)
    return lines


def _text_block(text, width):
    """White panel `width` wide holding `text`, wrapped to fit."""
    font = _legend_font()
    lines = _wrap(text, font, width)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = measure.textbbox((0, 0), "Ag", font=font)[3] + _TITLE_PADDING
    block = Image.new("RGB", (width, line_height * len(lines) + _TITLE_PADDING), _BACKGROUND)
    draw = ImageDraw.Draw(block)
    for index, line in enumerate(lines):
        draw.text((0, _TITLE_PADDING + index * line_height), line, fill=_TEXT, font=font)
    return block


def _titled(picture, title):
    """The picture below its title (wrapped to the picture's width), on a white panel."""
    heading = _text_block(title, picture.width)
    panel = Image.new("RGB", (picture.width, heading.height + picture.height), _BACKGROUND)
    panel.paste(heading, (0, 0))
    panel.paste(picture, (0, heading.height))
    return panel


def _colour_key(width):
    """A horizontal viridis bar above what dark and bright mean."""
    bar_height = 16
    bar = apply_colormap(np.tile(np.linspace(0.0, 1.0, width)[None], (bar_height, 1)))
    text = _text_block(
        "Each map is scaled to its own range.\n"
        "attention: L2 distance from the point; bright = near (similar), dark = far.\n"
        "main channel: activation; bright = high, dark = low.",
        width,
    )
    panel = Image.new("RGB", (width, bar_height + 4 + text.height), _BACKGROUND)
    panel.paste(Image.fromarray(bar), (0, 0))
    panel.paste(text, (0, bar_height + 4))
    return panel


def _row(panels):
    width = sum(p.width for p in panels) + _GAP * (len(panels) - 1)
    height = max(p.height for p in panels)
    strip = Image.new("RGB", (width, height), _BACKGROUND)
    left = 0
    for panel in panels:
        strip.paste(panel, (left, 0))
        left += panel.width + _GAP
    return strip


def _stack(rows):
    width = max(r.width for r in rows)
    height = sum(r.height for r in rows) + _GAP * (len(rows) - 1)
    canvas = Image.new("RGB", (width + 2 * _GAP, height + 2 * _GAP), _BACKGROUND)
    top = _GAP
    for row in rows:
        canvas.paste(row, (_GAP, top))
        top += row.height + _GAP
    return canvas


def attention_figure(image, maps, palette, class_names=None, panel_width=320):
    """Lays out the paper's Figure 6 for one image: one labelled PNG-ready picture.

    First row: the image with the numbered points, the colour prediction, its
    class legend and the colour key. Then one row per point; for each SA
    head, two panels: the attention branch's L2-distance map from the point
    (bright = near) and the main branch's channel most activated at the
    point, each scaled to the image's size (as in the paper) with the point
    marked. Every map is normalised to its own range.

    Args:
        image: the RGB image the maps were computed for, `(height, width, 3)`.
        maps: a `keras_sanet.attention_maps.PointAttentionMaps`.
        palette: one `(R, G, B)` colour per class.
        class_names: names for the legend (default: `"class <id>"`).
        panel_width: width of every picture panel in pixels (the height
            follows the image's aspect ratio).

    Returns:
        A PIL RGB image.

    Example:

    ```python
    maps = point_attention_maps(model, image, [(385, 215)], heads=(1, 4))
    attention_figure(image, maps, CAMVID_INFO.palette, CAMVID_INFO.class_names)
    ```
    """
    image = _as_image(image)
    height, width = image.shape[:2]
    if maps.prediction.shape != (height, width):
        raise ValueError(
            f"The maps were computed for a {maps.prediction.shape[1]}x"
            f"{maps.prediction.shape[0]} image, not this {width}x{height} one; pass the "
            "image given to point_attention_maps."
        )
    if int(panel_width) < 16:
        raise ValueError(f"panel_width={panel_width!r} is too small; use at least 16 pixels.")
    panel_width = int(panel_width)
    panel_height = max(1, round(height * panel_width / width))
    size = (panel_width, panel_height)
    scale_x, scale_y = panel_width / width, panel_height / height

    def centre(point):
        return ((point[0] + 0.5) * scale_x, (point[1] + 0.5) * scale_y)

    photo = Image.fromarray(image).resize(size, Image.BILINEAR)
    for index, point in enumerate(maps.points):
        colour = POINT_COLOURS[index % len(POINT_COLOURS)]
        _draw_marker(photo, centre(point), colour, label=str(index + 1))
    prediction = maps.prediction.astype(np.int64)
    painted = Image.fromarray(colorize(prediction, palette)).resize(size, Image.NEAREST)
    if class_names is None:
        class_names = [f"class {i}" for i in range(len(palette))]
    present = [int(c) for c in np.unique(prediction)]
    legend = draw_legend([(str(class_names[c]), tuple(palette[c])) for c in present])
    rows = [
        _row(
            [
                _titled(photo, "image and points"),
                _titled(painted, "prediction"),
                _titled(legend, "classes"),
                _titled(_colour_key(panel_width), "colour scale"),
            ]
        )
    ]

    for index, point in enumerate(maps.points):
        colour = POINT_COLOURS[index % len(POINT_COLOURS)]
        panels = []
        for head in maps.heads:
            key = (head, index)
            distance = apply_colormap(
                _resize_map(normalize_map(maps.distance[key], invert=True), size)
            )
            main = apply_colormap(_resize_map(normalize_map(maps.main[key]), size))
            for picture, title in (
                (distance, f"point {index + 1} {point}, head {head}: attention"),
                (main, f"head {head}: most activated main channel ({maps.main_channel[key]})"),
            ):
                picture = Image.fromarray(picture)
                _draw_marker(picture, centre(point), colour)
                panels.append(_titled(picture, title))
        rows.append(_row(panels))
    return _stack(rows)
