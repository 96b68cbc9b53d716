"""Tiny fake image/mask trees for the data tests (helpers, no tests here).

Images encode their mask and pixel position, so a test can tell after any
crop or flip whether image and mask still line up:
channel 0 = 10 * mask id (void/ignore ids are written as 250),
channel 1 = 10 * column, channel 2 = 10 * row.
"""

import os

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 12, 16


def encoded_image(mask):
    height, width = mask.shape
    rows, cols = np.mgrid[0:height, 0:width]
    ids = np.where(mask < 25, mask.astype(np.int64) * 10, 250)
    return np.stack([ids, cols * 10, rows * 10], axis=-1).astype(np.uint8)


def random_mask(num_classes=3, seed=0, height=HEIGHT, width=WIDTH, void_id=None):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, num_classes, size=(height, width)).astype(np.uint8)
    if void_id is not None:
        mask[0, :4] = void_id  # a known void patch
    return mask


def write_png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def make_folder_tree(root, names=("a", "b", "c"), num_classes=3, image_ext=".png", void_id=None):
    """images/ and masks/ under `root`; returns (images_dir, masks_dir, {name: mask})."""
    images_dir, masks_dir = os.path.join(root, "images"), os.path.join(root, "masks")
    masks = {}
    for index, name in enumerate(names):
        mask = random_mask(num_classes, seed=index, void_id=void_id)
        masks[name] = mask
        image = encoded_image(mask)
        os.makedirs(images_dir, exist_ok=True)
        Image.fromarray(image).save(os.path.join(images_dir, name + image_ext), quality=100)
        write_png(os.path.join(masks_dir, name + ".png"), mask)
    return images_dir, masks_dir, masks


def make_camvid_tree(root, counts=(("train", 3), ("val", 2)), with_lists=True):
    """A CamVid layout with ids 0..11 (11 = void) and SegNet-style list files."""
    masks = {}
    for split_number, (split, count) in enumerate(counts):
        lines = []
        for index in range(count):
            name = f"0001TP_{split}_{index:03d}.png"
            mask = random_mask(11, seed=100 * split_number + index, void_id=11)
            masks[(split, name)] = mask
            write_png(os.path.join(root, split, name), encoded_image(mask))
            write_png(os.path.join(root, f"{split}annot", name), mask)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        if with_lists:
            with open(os.path.join(root, f"{split}.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    return masks
