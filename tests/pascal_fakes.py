"""Tiny fake PASCAL VOC 2012 (+ SBD aug) and PASCAL Context trees (helpers, no tests here).

The trees have the layouts of the real downloads (`VOCdevkit/VOC2012`,
`VOCdevkit/VOC2010`), with images of a few different small sizes, as the
real ones differ in size too. VOC `SegmentationClass` masks are palette
("P") PNGs carrying the VOC colormap, with a 255 border; `SegmentationClassAug`
masks are single-channel ("L") PNGs; Context masks are "L" PNGs of 0..59.
"""

import os

import numpy as np
from PIL import Image

from keras_sanet.data import voc_colormap

# (height, width) of the fake images, cycled over.
SIZES = ((12, 16), (16, 12), (10, 14))

VOC_TRAIN = ("2007_000032", "2007_000039")
VOC_VAL = ("2007_000033", "2007_000042")
SBD_ONLY = ("2008_000002", "2008_000003", "2008_000007")
CONTEXT_TRAIN = ("2008_000002", "2008_000003", "2008_000007")
CONTEXT_VAL = ("2008_000008", "2008_000009")


def _size(index):
    return SIZES[index % len(SIZES)]


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _write(path, array, palette=None, quality=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if palette is not None:
        # A palette PNG: the stored values are indices into `palette`.
        height, width = array.shape
        image = Image.frombytes("P", (width, height), np.ascontiguousarray(array).tobytes())
        image.putpalette([c for colour in palette for c in colour])
    else:
        image = Image.fromarray(array)
    image.save(path, **({} if quality is None else {"quality": quality}))


def _voc_mask(height, width, seed, border=True):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 21, size=(height, width)).astype(np.uint8)
    if border:
        mask[0, :] = 255  # VOC's ignored object borders
    return mask


def write_list(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_voc_tree(root, with_aug=True, aug_list=None, sbd_covers_train=True):
    """`root/VOCdevkit/VOC2012` with train/val/trainval lists, and SBD's SegmentationClassAug.

    Args:
        root: the folder to create `VOCdevkit` in.
        with_aug: write `SegmentationClassAug/` (SBD masks of `SBD_ONLY`, of
            the VOC train images when `sbd_covers_train`, and of one val image).
        aug_list: None (no list: the reader derives it), `"mmseg"` (stems in
            `ImageSets/Segmentation/trainaug.txt`) or `"deeplab"` (two-path
            lines in `ImageSets/SegmentationAug/train_aug.txt`).

    Returns:
        `(year_dir, masks)`: `masks[(folder, stem)]` is the raw id array of
        every mask written, `folder` being "SegmentationClass" or
        "SegmentationClassAug".
    """
    year = os.path.join(root, "VOCdevkit", "VOC2012")
    palette = voc_colormap(256)
    masks = {}
    stems = VOC_TRAIN + VOC_VAL + SBD_ONLY
    for index, stem in enumerate(stems):
        height, width = _size(index)
        _write(os.path.join(year, "JPEGImages", stem + ".jpg"), _image(height, width, index),
               quality=95)
        if stem in VOC_TRAIN + VOC_VAL:
            mask = _voc_mask(height, width, seed=100 + index)
            masks[("SegmentationClass", stem)] = mask
            _write(os.path.join(year, "SegmentationClass", stem + ".png"), mask, palette=palette)
        sbd = stem in SBD_ONLY or (sbd_covers_train and stem in VOC_TRAIN) or stem == VOC_VAL[0]
        if with_aug and sbd:
            # SBD's own labels: no border, different ids, so a test can tell which was read.
            mask = _voc_mask(height, width, seed=200 + index, border=False)
            masks[("SegmentationClassAug", stem)] = mask
            _write(os.path.join(year, "SegmentationClassAug", stem + ".png"), mask)
    sets = os.path.join(year, "ImageSets", "Segmentation")
    write_list(os.path.join(sets, "train.txt"), VOC_TRAIN)
    write_list(os.path.join(sets, "val.txt"), VOC_VAL)
    write_list(os.path.join(sets, "trainval.txt"), VOC_TRAIN + VOC_VAL)
    if aug_list == "mmseg":
        write_list(os.path.join(sets, "trainaug.txt"), VOC_TRAIN + SBD_ONLY)
    elif aug_list == "deeplab":
        write_list(
            os.path.join(year, "ImageSets", "SegmentationAug", "train_aug.txt"),
            [f"/JPEGImages/{s}.jpg /SegmentationClassAug/{s}.png" for s in SBD_ONLY],
        )
    return year, masks


def make_context_tree(root):
    """`root/VOCdevkit/VOC2010` as the Detail API conversion writes it.

    Returns:
        `(year_dir, masks)`: `masks[stem]` is the raw 0..59 array (0 = background).
    """
    year = os.path.join(root, "VOCdevkit", "VOC2010")
    masks = {}
    for index, stem in enumerate(CONTEXT_TRAIN + CONTEXT_VAL):
        height, width = _size(index)
        rng = np.random.default_rng(300 + index)
        mask = rng.integers(0, 60, size=(height, width)).astype(np.uint8)
        mask[:2, :3] = 0  # a background patch in every mask
        mask[-1, -1] = 59  # the last class, wood
        masks[stem] = mask
        _write(os.path.join(year, "JPEGImages", stem + ".jpg"), _image(height, width, index),
               quality=95)
        _write(os.path.join(year, "SegmentationClassContext", stem + ".png"), mask)
    sets = os.path.join(year, "ImageSets", "SegmentationContext")
    write_list(os.path.join(sets, "train.txt"), CONTEXT_TRAIN)
    write_list(os.path.join(sets, "val.txt"), CONTEXT_VAL)
    return year, masks
