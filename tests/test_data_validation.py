import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_data_fakes import encoded_image
from test_data_fakes import make_folder_tree
from test_data_fakes import random_mask
from test_data_fakes import write_png

from keras_sanet.data import clear_validation_cache
from keras_sanet.data import folder_dataset
from keras_sanet.data import folder_pairs
from keras_sanet.data import segmentation_dataset
from keras_sanet.data import validate_pairs


@pytest.fixture
def tree(tmp_path):
    clear_validation_cache()
    images_dir, masks_dir, masks = make_folder_tree(str(tmp_path))
    return images_dir, masks_dir, masks


def test_report_counts_labels_after_mapping(tree):
    images_dir, masks_dir, masks = tree
    pairs = folder_pairs(images_dir, masks_dir)
    report = validate_pairs(pairs, 3, label_map={2: 255}, progress=False)
    stacked = np.stack([masks[n] for n in "abc"])
    assert report.num_pairs == 3
    assert report.image_sizes == ((12, 16),) * 3
    assert report.mask_modes == {"L"}
    assert report.label_counts[:3].tolist() == [np.sum(stacked == 0), np.sum(stacked == 1), 0]
    assert report.label_counts[255] == np.sum(stacked == 2)


def test_label_out_of_range_names_file_and_fix(tree):
    images_dir, masks_dir, _ = tree
    bad = random_mask(3)
    bad[3, 3] = 7
    write_png(os.path.join(masks_dir, "b.png"), bad)
    with pytest.raises(
        ValueError,
        match=r"masks/b\.png' contains label value\(s\) 7, .*0\.\.2 for num_classes=3.*"
        r"label_map=\{7: 255\}",
    ):
        folder_dataset(images_dir, masks_dir, num_classes=3, progress=False)


def test_label_error_mentions_the_label_map(tree):
    images_dir, masks_dir, _ = tree
    with pytest.raises(ValueError, match=r"value\(s\) 1 \(after label_map=\{1: 9\}: 9\)"):
        folder_dataset(images_dir, masks_dir, num_classes=3, label_map={1: 9}, progress=False)


def test_size_mismatch_names_both_files_and_sizes(tree):
    images_dir, masks_dir, _ = tree
    write_png(os.path.join(masks_dir, "c.png"), random_mask(3, height=10, width=16))
    with pytest.raises(
        ValueError, match=r"mask .*masks/c\.png' is 16x10 .* image .*images/c\.png' is 16x12"
    ):
        folder_dataset(images_dir, masks_dir, num_classes=3, progress=False)


def test_colour_mask_is_rejected(tree):
    images_dir, masks_dir, masks = tree
    write_png(os.path.join(masks_dir, "a.png"), encoded_image(masks["a"]))
    with pytest.raises(ValueError, match=r"a\.png' has Pillow mode 'RGB'.*stores colours"):
        folder_dataset(images_dir, masks_dir, num_classes=3, progress=False)


def test_jpeg_mask_is_rejected(tree):
    images_dir, masks_dir, masks = tree
    jpeg = os.path.join(masks_dir, "a.jpg")
    Image.fromarray(masks["a"]).save(jpeg)
    pairs = [(os.path.join(images_dir, "a.png"), jpeg)]
    with pytest.raises(ValueError, match=r"a\.jpg' is JPEG \(lossy.*must be PNG"):
        validate_pairs(pairs, 3, progress=False)


def test_unreadable_image(tree):
    images_dir, masks_dir, _ = tree
    with open(os.path.join(images_dir, "a.png"), "wb") as f:
        f.write(b"not a png")
    with pytest.raises(ValueError, match=r"image .*a\.png' cannot be read"):
        validate_pairs(folder_pairs(images_dir, masks_dir), 3, progress=False)


def test_no_pairs():
    with pytest.raises(ValueError, match="no image/mask pairs"):
        validate_pairs([], 3)
    with pytest.raises(ValueError, match="no image/mask pairs"):
        segmentation_dataset([], num_classes=3)


@pytest.mark.parametrize(
    "num_classes, match", [(0, "Pass 1..255"), (256, "Pass 1..255"), (2.0, "positive integer")]
)
def test_bad_num_classes(num_classes, match):
    with pytest.raises(ValueError, match=match):
        validate_pairs([("a", "b")], num_classes)


def test_missing_num_classes(tree):
    images_dir, masks_dir, _ = tree
    with pytest.raises(ValueError, match="number of classes is unknown: pass num_classes="):
        folder_dataset(images_dir, masks_dir)


def test_verdict_is_cached_until_a_file_changes(tree):
    images_dir, masks_dir, _ = tree
    pairs = folder_pairs(images_dir, masks_dir)
    first = validate_pairs(pairs, 3, progress=False)
    assert validate_pairs(pairs, 3, progress=False) is first
    assert validate_pairs(pairs, 4, progress=False) is not first
    bad = random_mask(3)
    bad[0, 0] = 9
    mask_path = os.path.join(masks_dir, "a.png")
    write_png(mask_path, bad)
    stat = os.stat(mask_path)
    os.utime(mask_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="contains label value"):
        validate_pairs(pairs, 3, progress=False)


def test_guard_catches_a_mask_changed_after_the_scan(tree):
    images_dir, masks_dir, _ = tree
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, progress=False)
    bad = random_mask(3)
    bad[5, 5] = 200
    write_png(os.path.join(masks_dir, "a.png"), bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Invalid label in mask.*a\.png.*200"):
        list(ds.as_numpy_iterator())


def test_guard_without_scan_catches_labels_and_sizes(tree):
    images_dir, masks_dir, _ = tree
    bad = random_mask(3)
    bad[0, 0] = 3
    write_png(os.path.join(masks_dir, "b.png"), bad)
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, validate=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Invalid label in mask.*b\.png"):
        list(ds.as_numpy_iterator())
    write_png(os.path.join(masks_dir, "b.png"), random_mask(3, height=6))
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, validate=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Mask size differs.*b\.png"):
        list(ds.as_numpy_iterator())


def test_ignore_index_passes_the_guard(tree):
    images_dir, masks_dir, _ = tree
    mask = random_mask(3, void_id=255)
    write_png(os.path.join(masks_dir, "a.png"), mask)
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, progress=False)
    _, first = next(iter(ds.as_numpy_iterator()))
    np.testing.assert_array_equal(first, mask)
