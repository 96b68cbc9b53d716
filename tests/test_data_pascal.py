"""PASCAL VOC 2012 (+ SBD aug) and PASCAL Context readers, on tiny fake trees of real layouts."""

import os
import shutil

import numpy as np
import pytest
from pascal_fakes import CONTEXT_TRAIN
from pascal_fakes import CONTEXT_VAL
from pascal_fakes import SBD_ONLY
from pascal_fakes import VOC_TRAIN
from pascal_fakes import VOC_VAL
from pascal_fakes import make_context_tree
from pascal_fakes import make_voc_tree
from pascal_fakes import write_list
from PIL import Image

from keras_sanet.data import CONTEXT59_INFO
from keras_sanet.data import CONTEXT60_INFO
from keras_sanet.data import NAMED_DATASETS
from keras_sanet.data import VOC_AUG_INFO
from keras_sanet.data import VOC_INFO
from keras_sanet.data import context_dataset
from keras_sanet.data import context_pairs
from keras_sanet.data import dataset_names
from keras_sanet.data import get_dataset_info
from keras_sanet.data import named_dataset
from keras_sanet.data import named_dataset_info
from keras_sanet.data import named_pairs
from keras_sanet.data import voc_colormap
from keras_sanet.data import voc_dataset
from keras_sanet.data import voc_pairs

# -- class lists and palettes ---------------------------------------------------------------


def test_voc_classes_and_the_bit_interleaved_palette():
    assert VOC_INFO.num_classes == 21 and VOC_INFO.ignore_index == 255
    assert VOC_INFO.class_names[:3] == ("background", "aeroplane", "bicycle")
    assert VOC_INFO.class_names[11] == "diningtable"
    assert VOC_INFO.class_names[15] == "person" and VOC_INFO.class_names[-1] == "tvmonitor"
    assert VOC_INFO.palette == voc_colormap(21)
    # Colours every VOC tool agrees on, and the 255 border's.
    assert VOC_INFO.palette[1] == (128, 0, 0) and VOC_INFO.palette[15] == (192, 128, 128)
    assert VOC_INFO.palette[20] == (0, 64, 128)
    assert voc_colormap(256)[255] == (224, 224, 192)
    assert VOC_INFO.label_map == {}
    assert VOC_AUG_INFO.class_names == VOC_INFO.class_names
    assert VOC_AUG_INFO.palette == VOC_INFO.palette


def test_context_classes_and_the_59_60_conventions():
    assert CONTEXT60_INFO.num_classes == 60 and CONTEXT59_INFO.num_classes == 59
    names = CONTEXT60_INFO.class_names
    assert names[:6] == ("background", "aeroplane", "bag", "bed", "bedclothes", "bench")
    assert names[-5:] == ("tvmonitor", "wall", "water", "window", "wood")
    # Alphabetical after background: the order of the Detail API ids.
    assert list(names[1:]) == sorted(names[1:]) and len(set(names)) == 60
    assert CONTEXT59_INFO.class_names == names[1:]
    assert CONTEXT60_INFO.palette[:2] == ((120, 120, 120), (180, 120, 120))
    assert CONTEXT60_INFO.palette[-1] == (31, 0, 255)
    assert CONTEXT59_INFO.palette == CONTEXT60_INFO.palette[1:]
    # 59: background (0) ignored, k -> k - 1. 60: values as stored.
    assert CONTEXT59_INFO.label_map[0] == 255
    assert all(CONTEXT59_INFO.label_map[k] == k - 1 for k in range(1, 60))
    assert CONTEXT60_INFO.label_map == {}


def test_registered_names_serve_presets_and_readers():
    for name in ("voc", "voc_aug", "context59", "context60"):
        assert name in dataset_names() and name in NAMED_DATASETS
        assert get_dataset_info(name) is named_dataset_info(name)


# -- PASCAL VOC -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    year, masks = make_voc_tree(root)
    return root, year, masks


def test_voc_palette_masks_are_read_as_indices(voc_tree):
    root, year, masks = voc_tree
    path = os.path.join(year, "SegmentationClass", VOC_VAL[0] + ".png")
    assert Image.open(path).mode == "P"  # the premise: a palette PNG, as VOC ships them
    for decoder in ("pillow", "auto"):
        ds = voc_dataset(root, "val", progress=False, mask_decoder=decoder)
        labels = [mask for _, mask in ds.as_numpy_iterator()]
        for stem, mask in zip(VOC_VAL, labels):
            np.testing.assert_array_equal(mask, masks[("SegmentationClass", stem)])
        assert labels[0][0].tolist() == [255] * labels[0].shape[1]  # the border, ignored


@pytest.mark.parametrize("level", ["year", "devkit", "parent"])
def test_voc_root_may_be_the_year_the_devkit_or_its_parent(voc_tree, level):
    root, year, _ = voc_tree
    given = {"year": year, "devkit": os.path.dirname(year), "parent": root}[level]
    pairs = voc_pairs(given, "val")
    assert pairs == [
        (os.path.join(year, "JPEGImages", s + ".jpg"),
         os.path.join(year, "SegmentationClass", s + ".png"))
        for s in VOC_VAL
    ]
    assert len(voc_pairs(given, "trainval")) == len(VOC_TRAIN + VOC_VAL)


def test_voc_aug_without_a_list_is_sbd_plus_train_minus_val(voc_tree):
    root, year, _ = voc_tree
    pairs = voc_pairs(root, "train", augmented=True)
    stems = [os.path.splitext(os.path.basename(image))[0] for image, _ in pairs]
    # VOC val's SBD mask (VOC_VAL[0]) is left out; sorted like mmsegmentation's set difference.
    assert stems == sorted(VOC_TRAIN + SBD_ONLY)
    folders = {s: os.path.basename(os.path.dirname(m)) for s, (_, m) in zip(stems, pairs)}
    # VOC's own (finer) masks for VOC train images, SBD's for the rest.
    assert all(folders[s] == "SegmentationClass" for s in VOC_TRAIN)
    assert all(folders[s] == "SegmentationClassAug" for s in SBD_ONLY)
    trainval = voc_pairs(root, "trainval", augmented=True)
    assert len(trainval) == len(VOC_TRAIN + SBD_ONLY + VOC_VAL)
    assert voc_pairs(root, "val", augmented=True) == voc_pairs(root, "val")


@pytest.mark.parametrize("style", ["mmseg", "deeplab"])
def test_voc_aug_follows_its_list_file(tmp_path, style):
    year, masks = make_voc_tree(str(tmp_path), aug_list=style)
    pairs = voc_pairs(str(tmp_path), "train", augmented=True)
    stems = [os.path.splitext(os.path.basename(image))[0] for image, _ in pairs]
    assert stems == list(VOC_TRAIN + SBD_ONLY if style == "mmseg" else SBD_ONLY)
    ds = voc_dataset(str(tmp_path), "train", augmented=True, augment=False, shuffle=False,
                     progress=False)
    for stem, (_, label) in zip(stems, ds.as_numpy_iterator()):
        folder = "SegmentationClass" if stem in VOC_TRAIN else "SegmentationClassAug"
        np.testing.assert_array_equal(label, masks[(folder, stem)])


def test_voc_aug_training_batches(voc_tree):
    root, _, _ = voc_tree
    ds = named_dataset("voc_aug", root, "train", crop_size=8, batch_size=3, seed=0,
                       progress=False)
    images, labels = next(iter(ds.as_numpy_iterator()))
    assert images.shape == (3, 8, 8, 3) and labels.shape == (3, 8, 8)
    assert set(np.unique(labels)) <= set(range(21)) | {255}


def test_eval_pad_size_batches_images_of_different_sizes(voc_tree):
    root, _, masks = voc_tree
    ds = voc_dataset(root, "val", batch_size=2, eval_pad_size=(16, 20), progress=False)
    images, labels = next(iter(ds.as_numpy_iterator()))
    assert images.shape == (2, 16, 20, 3) and labels.shape == (2, 16, 20)
    for index, stem in enumerate(VOC_VAL):
        raw = masks[("SegmentationClass", stem)]
        height, width = raw.shape
        np.testing.assert_array_equal(labels[index, :height, :width], raw)
        assert (labels[index, height:] == 255).all() and (labels[index, :, width:] == 255).all()
        assert (images[index, height:] == 0).all()
    with pytest.raises(ValueError, match="eval_pad_size=.* to pad every pair"):
        voc_dataset(root, "val", batch_size=2, progress=False)


# -- PASCAL Context -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("context"))
    year, masks = make_context_tree(root)
    return root, year, masks


@pytest.mark.parametrize("num_classes", [59, 60])
def test_context_59_ignores_background_and_60_counts_it(context_tree, num_classes):
    root, _, masks = context_tree
    name = f"context{num_classes}"
    ds = named_dataset(name, root, "val", progress=False)
    labels = [label for _, label in ds.as_numpy_iterator()]
    assert len(labels) == len(CONTEXT_VAL)
    for stem, label in zip(CONTEXT_VAL, labels):
        raw = masks[stem]
        expected = raw if num_classes == 60 else np.where(raw == 0, 255, raw.astype(int) - 1)
        np.testing.assert_array_equal(label, expected)
        assert label[-1, -1] == num_classes - 1  # wood, the last class
    same = context_dataset(root, "val", num_classes=num_classes, progress=False)
    for (_, a), b in zip(same.as_numpy_iterator(), labels):
        np.testing.assert_array_equal(a, b)


def test_context_pairs_and_roots(context_tree):
    root, year, _ = context_tree
    for given in (root, os.path.dirname(year), year):
        assert named_pairs("context59", given, "train") == context_pairs(year, "train")
    assert [os.path.basename(i) for i, _ in context_pairs(root, "train")] == [
        s + ".jpg" for s in CONTEXT_TRAIN
    ]
    with pytest.raises(ValueError, match="num_classes=59 or num_classes=60"):
        context_dataset(root, "val", num_classes=61)


# -- wrong or incomplete trees: what is missing and where to get it ---------------------------


def _copy(tree_root, tmp_path):
    target = str(tmp_path / "copy")
    shutil.copytree(tree_root, target)
    return target


def test_missing_voc_folder_says_where_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist\. Get PASCAL VOC 2012 from "
                                         r"http://host\.robots\.ox\.ac\.uk"):
        voc_pairs(str(tmp_path / "nowhere"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a PASCAL VOC 2012 folder.*VOCdevkit/VOC2012"):
        voc_pairs(str(tmp_path / "empty"), "train")


@pytest.mark.parametrize(
    "remove, match",
    [
        ("SegmentationClass", r"has no SegmentationClass/ .*VOCtrainval_11-May-2012\.tar"),
        ("JPEGImages", r"has no JPEGImages/ .*VOCtrainval_11-May-2012\.tar"),
        ("ImageSets/Segmentation/val.txt",
         r"split 'val' needs the list ImageSets/Segmentation/val\.txt .*missing"),
    ],
)
def test_incomplete_voc_tree_names_the_missing_part(voc_tree, tmp_path, remove, match):
    root = _copy(voc_tree[0], tmp_path)
    path = os.path.join(root, "VOCdevkit", "VOC2012", remove)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(ValueError, match=match):
        voc_pairs(root, "val")


def test_missing_files_are_counted_and_named(voc_tree, tmp_path):
    root = _copy(voc_tree[0], tmp_path)
    os.remove(os.path.join(root, "VOCdevkit", "VOC2012", "JPEGImages", VOC_VAL[1] + ".jpg"))
    match = (rf"1 of the 2 images that ImageSets/Segmentation/val\.txt lists are missing from "
             rf"JPEGImages/ .*{VOC_VAL[1]}\.jpg\. The PASCAL VOC tree is incomplete")
    with pytest.raises(ValueError, match=match):
        voc_pairs(root, "val")


def test_voc_aug_without_sbd_says_how_to_make_it(voc_tree, tmp_path):
    root = _copy(voc_tree[0], tmp_path)
    shutil.rmtree(os.path.join(root, "VOCdevkit", "VOC2012", "SegmentationClassAug"))
    with pytest.raises(ValueError, match=r"has no SegmentationClassAug/ .*SBD .*voc_aug\.py"):
        voc_pairs(root, "train", augmented=True)
    # The plain VOC reader does not need it.
    assert len(voc_pairs(root, "train")) == len(VOC_TRAIN)


def test_voc_aug_list_naming_a_missing_mask(tmp_path):
    year, _ = make_voc_tree(str(tmp_path), aug_list="mmseg")
    write_list(os.path.join(year, "ImageSets", "Segmentation", "trainaug.txt"),
               list(VOC_TRAIN) + ["2011_999999"])
    with pytest.raises(ValueError, match=r"1 of the 3 images that .*trainaug\.txt lists"):
        voc_pairs(str(tmp_path), "train", augmented=True)


@pytest.mark.parametrize(
    "remove, match",
    [
        (None, r"does not exist\. PASCAL Context needs .*trainval_merged\.json.*Detail API"),
        ("SegmentationClassContext", r"has no SegmentationClassContext/ .*pascal_context\.py"),
        ("ImageSets/SegmentationContext/train.txt",
         r"ImageSets/SegmentationContext/train\.txt .*missing"),
    ],
)
def test_incomplete_context_tree(context_tree, tmp_path, remove, match):
    if remove is None:
        root = str(tmp_path / "nowhere")
    else:
        root = _copy(context_tree[0], tmp_path)
        path = os.path.join(root, "VOCdevkit", "VOC2010", remove)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(ValueError, match=match):
        context_pairs(root, "train")


def test_unknown_splits_and_class_counts(voc_tree, context_tree):
    with pytest.raises(ValueError, match="Unknown PASCAL VOC split 'test'.*server"):
        voc_pairs(voc_tree[0], "test")
    with pytest.raises(ValueError, match="Unknown PASCAL Context split 'test'"):
        context_pairs(context_tree[0], "test")
    with pytest.raises(ValueError, match="PASCAL VOC, which has 21 classes"):
        voc_dataset(voc_tree[0], "val", num_classes=20)
    with pytest.raises(ValueError, match="No reader for dataset 'ade20k'"):
        named_dataset("ade20k", voc_tree[0], "val")
