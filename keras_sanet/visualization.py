"""Drawing predictions: colour masks, overlays with a legend, PNG files (Pillow only).

```python
from keras_sanet import visualization
from keras_sanet.data.dataset_info import CAMVID_INFO

classes = logits.argmax(-1)[0]  # (H, W) class ids
picture = visualization.overlay(image, classes, CAMVID_INFO.palette,
                                class_names=CAMVID_INFO.class_names)
picture.save("overlay.png")
```
"""

import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

IGNORE_INDEX = 255
# Legend layout, in pixels.
_LEGEND_PADDING = 6
_LEGEND_GAP = 4
_LEGEND_BACKGROUND = (255, 255, 255)
_LEGEND_TEXT = (0, 0, 0)


def default_palette(num_classes):
    """PASCAL VOC's colour map: `num_classes` distinct `(R, G, B)` colours.

    For models whose dataset ships no palette. Class 0 is black, as in VOC.

    Example:
    >>> default_palette(3)
    [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    """
    palette = []
    for index in range(num_classes):
        red = green = blue = 0
        value = index
        # VOC spreads the bits of the class id over the high bits of R, G, B.
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.append((red, green, blue))
    return palette


def _as_palette(palette):
    colours = np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) == 0:
        raise ValueError(
            f"palette must be a list of (R, G, B) colours, one per class; got an array "
            f"of shape {colours.shape}. Pass e.g. DatasetInfo.palette or "
            "keras_sanet.visualization.default_palette(num_classes)."
        )
    if colours.min() < 0 or colours.max() > 255:
        raise ValueError("palette colours must be integers in 0..255; rescale the palette.")
    return colours.astype(np.uint8)


def _as_mask(mask):
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"mask must be a (height, width) array of integer class ids; got dtype "
            f"{mask.dtype} and shape {mask.shape}. Take `logits.argmax(-1)` of one image."
        )
    return mask


def _as_image(image):
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image must be an RGB array (height, width, 3) or a PIL image; got shape "
            f"{image.shape}. Convert grayscale/RGBA images with Image.convert('RGB')."
        )
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image


def colorize(mask, palette, ignore_index=IGNORE_INDEX, ignore_color=(0, 0, 0)):
    """Paints a class-id mask with the palette's colours.

    Args:
        mask: `(height, width)` integer class ids.
        palette: one `(R, G, B)` colour per class id.
        ignore_index: mask value drawn with `ignore_color` (not a class).
        ignore_color: colour of ignored pixels.

    Returns:
        A `(height, width, 3)` uint8 NumPy array.

    Raises:
        ValueError: a mask value is neither a class id nor `ignore_index`.

    Example:
    >>> colorize(np.array([[0, 1], [255, 1]]), [(10, 20, 30), (200, 0, 0)])[1, 1]
    array([200,   0,   0], dtype=uint8)
    """
    mask = _as_mask(mask)
    colours = _as_palette(palette)
    ignored = mask == ignore_index
    invalid = ~ignored & ((mask < 0) | (mask >= len(colours)))
    if invalid.any():
        value = int(mask[invalid][0])
        raise ValueError(
            f"mask holds the value {value}, but the palette has {len(colours)} colours "
            f"(ids 0..{len(colours) - 1}) and ignore_index is {ignore_index}. Pass a "
            "palette with one colour per class, or remap the mask's ids first."
        )
    rgb = colours[np.where(ignored, 0, mask)]
    rgb[ignored] = np.asarray(ignore_color, np.uint8)
    return rgb


def _legend_font():
    try:
        # Pillow >= 10.1 ships a scalable default font.
        return ImageFont.load_default(size=12)
    except TypeError:
        return ImageFont.load_default()


def draw_legend(entries):
    """A white panel listing `(name, colour)` entries: a colour swatch and the name each.

    Example:
    >>> draw_legend([("road", (128, 64, 128)), ("sky", (128, 128, 128))]).mode
    'RGB'
    """
    font = _legend_font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), name, font=font) for name, _ in entries]
    line_height = max([box[3] for box in boxes] + [10]) + _LEGEND_GAP
    swatch = line_height - _LEGEND_GAP
    text_width = max([box[2] for box in boxes] + [0])
    width = 2 * _LEGEND_PADDING + swatch + _LEGEND_GAP + text_width
    height = 2 * _LEGEND_PADDING + line_height * len(entries) - _LEGEND_GAP
    panel = Image.new("RGB", (width, max(height, 1)), _LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for row, (name, colour) in enumerate(entries):
        top = _LEGEND_PADDING + row * line_height
        left = _LEGEND_PADDING
        draw.rectangle(
            (left, top, left + swatch - 1, top + swatch - 1),
            fill=tuple(int(c) for c in colour),
            outline=_LEGEND_TEXT,
        )
        draw.text((left + swatch + _LEGEND_GAP, top), name, fill=_LEGEND_TEXT, font=font)
    return panel


def overlay(
    image,
    mask,
    palette,
    alpha=0.5,
    class_names=None,
    legend=True,
    ignore_index=IGNORE_INDEX,
):
    """Blends the colour mask over the image, with a legend of the classes present.

    Pixel `(y, x)` becomes `(1 - alpha) * image + alpha * colour`; ignored
    pixels keep the image's colour. The legend (a swatch and the class name
    for each class present in `mask`, in id order) is a panel to the right of
    the image, so no pixel of the picture is hidden: the result is the blended
    image at the top left of a canvas `width + legend width` wide and
    `max(height, legend height)` high (white elsewhere). With `legend=False`
    the result has the image's size.

    Args:
        image: RGB image, `(height, width, 3)` array (0..255) or PIL image.
        mask: `(height, width)` integer class ids.
        palette: one `(R, G, B)` colour per class.
        alpha: opacity of the colour mask, in [0, 1].
        class_names: names for the legend (default: `"class <id>"`).
        legend: whether to add the legend panel.
        ignore_index: mask value left uncoloured.

    Returns:
        A PIL RGB image.

    Example:
    >>> picture = overlay(np.zeros((32, 48, 3), "uint8"), np.ones((32, 48), "int32"),
    ...                   [(0, 0, 0), (255, 0, 0)], class_names=["bg", "car"])
    >>> picture.size[1]  # (width, height) with the legend on the right
    32
    """
    image = _as_image(image)
    mask = _as_mask(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"image {image.shape[:2]} and mask {mask.shape} differ in size; resize the "
            "mask (nearest neighbour) to the image first."
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1] (0: image only, 1: mask only).")
    palette = _as_palette(palette)
    painted = colorize(mask, palette, ignore_index=ignore_index)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * painted.astype(np.float32)
    blended = np.where((mask == ignore_index)[..., None], image, np.round(blended))
    picture = Image.fromarray(blended.astype(np.uint8))
    if not legend:
        return picture
    if class_names is None:
        class_names = [f"class {i}" for i in range(len(palette))]
    if len(class_names) < len(palette):
        raise ValueError(
            f"class_names has {len(class_names)} names but the palette has "
            f"{len(palette)} colours; give one name per class."
        )
    present = [int(c) for c in np.unique(mask) if c != ignore_index]
    panel = draw_legend([(str(class_names[c]), tuple(palette[c])) for c in present])
    canvas = Image.new(
        "RGB",
        (picture.width + panel.width, max(picture.height, panel.height)),
        _LEGEND_BACKGROUND,
    )
    canvas.paste(picture, (0, 0))
    canvas.paste(panel, (picture.width, 0))
    return canvas


def save_mask_png(mask, palette, path, ignore_index=IGNORE_INDEX, ignore_color=(0, 0, 0)):
    """Writes the colour mask as a PNG.

    With at most 255 classes the PNG is palette-indexed (PASCAL VOC's
    format): viewers show the colours and `np.asarray(Image.open(path))`
    gives back the class ids (ignored pixels read as `ignore_index`). Larger
    palettes are written as plain RGB.
    """
    mask = _as_mask(mask)
    colours = _as_palette(palette)
    rgb = colorize(mask, colours, ignore_index=ignore_index, ignore_color=ignore_color)
    if len(colours) <= 255 and 0 <= ignore_index <= 255 and ignore_index >= len(colours):
        lookup = np.zeros((256, 3), np.uint8)
        lookup[: len(colours)] = colours
        lookup[ignore_index] = ignore_color
        # putpalette turns the 8-bit id image into a palette ("P") image.
        indexed = Image.fromarray(mask.astype(np.uint8))
        indexed.putpalette(lookup.reshape(-1).tolist())
        indexed.save(path)
    else:
        Image.fromarray(rgb).save(path)
    return path


def save_prediction(
    image,
    mask,
    palette,
    output_dir,
    stem,
    class_names=None,
    alpha=0.5,
    ignore_index=IGNORE_INDEX,
):
    """Writes `<stem>_mask.png` (colour mask) and `<stem>_overlay.png` (with legend).

    Args:
        image: the RGB image the mask was predicted for.
        mask: `(height, width)` predicted class ids.
        palette: one `(R, G, B)` colour per class.
        output_dir: folder to write to (created if missing).
        stem: file name prefix, usually the image's name without extension.
        class_names: names for the overlay's legend.
        alpha: opacity of the colours in the overlay.
        ignore_index: mask value left uncoloured.

    Returns:
        `{"mask": path, "overlay": path}`.

    Example:

    ```python
    paths = save_prediction(image, logits.argmax(-1)[0], CAMVID_INFO.palette,
                            "out", "0016E5_07959", CAMVID_INFO.class_names)
    ```
    """
    os.makedirs(output_dir, exist_ok=True)
    mask_path = os.path.join(output_dir, f"{stem}_mask.png")
    overlay_path = os.path.join(output_dir, f"{stem}_overlay.png")
    save_mask_png(mask, palette, mask_path, ignore_index=ignore_index)
    overlay(
        image, mask, palette, alpha=alpha, class_names=class_names, ignore_index=ignore_index
    ).save(overlay_path)
    return {"mask": mask_path, "overlay": overlay_path}
