"""One-off scan of image/mask pairs, so bad data never silently trains garbage.

`validate_pairs` opens every mask with Pillow (and every image's header)
and raises a ValueError that names the file and the fix for: an unreadable
file, an image format `tf.io` cannot decode, a lossy (JPEG) or colour mask,
a mask whose size differs from its image, and a label value that is neither
a class id nor the ignore index after `label_map`. Verdicts are cached in
memory per (file list, modification times, label settings), so building the
same dataset twice scans once.
"""

import dataclasses
import os

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from keras_sanet.data.dataset_info import IGNORE_INDEX
from keras_sanet.data.label_map import describe_label_map, label_lookup_table

# What tf.io.decode_image reads; anything else must be converted first.
# ("MPO" is how Pillow names some camera JPEGs; tf.io reads them as JPEG.)
TF_IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF")
# Single-channel class ids. "P" (palette, VOC style) stores ids as palette indices.
MASK_MODES = ("L", "P")

_CACHE = {}

_MODE_FIXES = {
    "RGB": "it stores colours, not class ids; map each colour to its class id (see "
    "DatasetInfo.palette) and save an 8-bit grayscale (mode 'L') PNG",
    "RGBA": "it stores colours, not class ids; map each colour to its class id and save an "
    "8-bit grayscale (mode 'L') PNG",
    "LA": "drop the alpha channel and save an 8-bit grayscale (mode 'L') PNG",
    "1": "save it as an 8-bit grayscale (mode 'L') PNG with ids 0 and 1",
    "I;16": "class ids must fit 0..255; save an 8-bit grayscale (mode 'L') PNG",
    "I": "class ids must fit 0..255; save an 8-bit grayscale (mode 'L') PNG",
}


@dataclasses.dataclass(frozen=True, eq=False)
class ValidationReport:
    """What the scan learned about a list of pairs.

    Attributes:
        num_pairs: number of pairs scanned.
        image_sizes: `(height, width)` of every image, in pair order.
        mask_modes: the Pillow modes of the masks (`"L"` and/or `"P"`).
        label_counts: int64 array of 256 entries, pixel count of every mask
            value after `label_map` (index `ignore_index` counts ignored pixels).
    """

    num_pairs: int
    image_sizes: tuple
    mask_modes: frozenset
    label_counts: np.ndarray = dataclasses.field(repr=False)


def check_num_classes(num_classes, ignore_index=IGNORE_INDEX):
    """Raises a ValueError unless `num_classes` is an int in 1..ignore_index."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(
            f"num_classes must be a positive integer, got {num_classes!r}; pass the number of "
            "classes the model predicts (e.g. 11 for CamVid)."
        )
    if not 1 <= num_classes <= ignore_index:
        raise ValueError(
            f"num_classes={num_classes} does not fit uint8 masks with ignore_index="
            f"{ignore_index}: class ids must be 0..{ignore_index - 1}. Pass 1..{ignore_index}."
        )


def _cache_key(pairs, num_classes, ignore_index, label_map):
    stamps = []
    for image, mask in pairs:
        for path in (image, mask):
            try:
                stat = os.stat(path)
                stamps.append((path, stat.st_mtime_ns, stat.st_size))
            except OSError:
                stamps.append((path, None, None))
    return (tuple(stamps), int(num_classes), int(ignore_index), describe_label_map(label_map))


def clear_validation_cache():
    """Forgets every cached verdict (the next `validate_pairs` rescans)."""
    _CACHE.clear()


def _open(path, what, partner):
    if not os.path.isfile(path):
        raise ValueError(
            f"The {what} {path!r} (paired with {partner!r}) does not exist; fix the pair list "
            "or restore the file."
        )
    try:
        return Image.open(path)
    except Exception as error:  # Pillow raises several types for broken files.
        raise ValueError(
            f"The {what} {path!r} cannot be read as an image ({error}); re-export it or "
            "remove the pair."
        ) from error


def _check_pair(image_path, mask_path, table, num_classes, ignore_index, label_map):
    with _open(image_path, "image", mask_path) as image:
        image_format, (image_w, image_h) = image.format, image.size
    if image_format not in TF_IMAGE_FORMATS:
        raise ValueError(
            f"The image {image_path!r} is {image_format}, which tf.io cannot decode; convert "
            f"it to PNG or JPEG ({', '.join(TF_IMAGE_FORMATS)} are read)."
        )
    with _open(mask_path, "mask", image_path) as mask:
        if mask.format != "PNG":
            lossy = ""
            if mask.format == "JPEG":
                lossy = " (lossy: JPEG changes class ids at every edge)"
            raise ValueError(
                f"The mask {mask_path!r} is {mask.format}{lossy}; masks must be PNG files "
                "of class ids. Re-export the masks as PNG from their source."
            )
        if mask.mode not in MASK_MODES:
            fix = _MODE_FIXES.get(mask.mode, "save an 8-bit grayscale (mode 'L') PNG of ids")
            raise ValueError(
                f"The mask {mask_path!r} has Pillow mode {mask.mode!r}, but masks must be "
                f"single-channel class ids (mode 'L' or 'P'): {fix}."
            )
        mode, (mask_w, mask_h) = mask.mode, mask.size
        if (mask_h, mask_w) != (image_h, image_w):
            raise ValueError(
                f"The mask {mask_path!r} is {mask_w}x{mask_h} (width x height) but its image "
                f"{image_path!r} is {image_w}x{image_h}. Masks must be pixel-aligned with their "
                "image: regenerate the mask at the image's size (nearest-neighbour if resized) "
                "or fix the pairing."
            )
        counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    present = np.flatnonzero(counts)
    mapped = table[present]
    bad = present[(mapped >= num_classes) & (mapped != ignore_index)]
    if bad.size:
        raw_values = ", ".join(str(v) for v in bad[:10])
        after = ""
        if label_map:
            after = f" (after label_map={describe_label_map(label_map)}: " + ", ".join(
                str(v) for v in table[bad[:10]]
            ) + ")"
        raise ValueError(
            f"The mask {mask_path!r} contains label value(s) {raw_values}{after}, which are "
            f"neither a class id (0..{num_classes - 1} for num_classes={num_classes}) nor the "
            f"ignore index {ignore_index}. Fix: map them with label_map (e.g. "
            f"label_map={{{int(bad[0])}: {ignore_index}}} to ignore them), raise num_classes if "
            "they are real classes, or correct the mask."
        )
    mapped_counts = np.zeros(256, np.int64)
    np.add.at(mapped_counts, table, counts)
    return (image_h, image_w), mode, mapped_counts


def validate_pairs(
    pairs,
    num_classes,
    ignore_index=IGNORE_INDEX,
    label_map=None,
    progress=True,
    use_cache=True,
):
    """Scans `(image_path, mask_path)` pairs and raises on anything unusable.

    Every mask is decoded with Pillow (images: header only). The verdict is
    cached in memory, keyed on the paths, their modification times and sizes,
    `num_classes`, `ignore_index` and `label_map`.

    Args:
        pairs: a list of `(image_path, mask_path)`.
        num_classes: number of classes; valid labels are `0..num_classes-1`
            and `ignore_index` (after `label_map`).
        ignore_index: the mask value losses skip (255).
        label_map: `{raw_id: training_id}` applied before the check.
        progress: show a tqdm progress bar over the files.
        use_cache: reuse a previous verdict for unchanged files.

    Returns:
        A `ValidationReport` (image sizes, mask modes, label pixel counts).

    Raises:
        ValueError: naming the file and the fix, for the first bad pair.

    Example:

    ```python
    report = validate_pairs(camvid_pairs(root, "val"), 11, label_map={11: 255})
    report.label_counts[:11]  # pixels per class
    ```
    """
    check_num_classes(num_classes, ignore_index)
    pairs = [(os.fspath(i), os.fspath(m)) for i, m in pairs]
    if not pairs:
        raise ValueError(
            "There are no image/mask pairs to check (the split or list is empty); point the "
            "reader at a folder or list file that has pairs."
        )
    table = label_lookup_table(label_map)
    key = _cache_key(pairs, num_classes, ignore_index, label_map) if use_cache else None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    sizes, modes = [], set()
    label_counts = np.zeros(256, np.int64)
    for image_path, mask_path in tqdm(
        pairs, desc="Checking image/mask pairs", unit="pair", disable=not progress, leave=False
    ):
        size, mode, counts = _check_pair(
            image_path, mask_path, table, num_classes, ignore_index, label_map
        )
        sizes.append(size)
        modes.add(mode)
        label_counts += counts
    report = ValidationReport(len(pairs), tuple(sizes), frozenset(modes), label_counts)
    if key is not None:
        _CACHE[key] = report
    return report
