import os

import numpy as np
import pytest
from PIL import Image
from test_data_fakes import make_folder_tree
from test_data_fakes import random_mask
from test_data_fakes import write_png

from keras_sanet.data import CAMVID_INFO
from keras_sanet.data import folder_dataset
from keras_sanet.data import folder_pairs
from keras_sanet.data import segmentation_dataset

NAMES = tuple("abcdef")


@pytest.fixture
def pairs(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path), names=NAMES)
    return folder_pairs(images_dir, masks_dir)


def _as_arrays(ds):
    images, masks = zip(*ds.as_numpy_iterator())
    return np.stack(images), np.stack(masks)


def _first_ids(images):
    """Which fake file each unaugmented image is (its mask id code is random per file)."""
    return [tuple(image[0, :6, 0].astype(int)) for image in images]


def _train(pairs, seed, **kwargs):
    return segmentation_dataset(
        pairs, num_classes=3, augment=True, crop_size=(8, 8), shuffle=True, seed=seed,
        progress=False, **kwargs,
    )  # fmt: skip


def test_same_seed_same_stream_each_epoch_differs(pairs):
    first, again, other = _train(pairs, 1), _train(pairs, 1), _train(pairs, 2)
    epoch_1, epoch_1_again = _as_arrays(first), _as_arrays(again)
    for a, b in zip(epoch_1, epoch_1_again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(epoch_1[0], _as_arrays(other)[0])
    # A second pass over the same dataset reshuffles and re-augments, reproducibly.
    epoch_2, epoch_2_again = _as_arrays(first), _as_arrays(again)
    assert not np.array_equal(epoch_1[0], epoch_2[0])
    np.testing.assert_array_equal(epoch_2[0], epoch_2_again[0])


def test_shuffle_permutes_the_files(pairs):
    plain = _first_ids(_as_arrays(segmentation_dataset(pairs, 3, progress=False))[0])
    shuffled = _first_ids(
        _as_arrays(segmentation_dataset(pairs, 3, shuffle=True, seed=0, progress=False))[0]
    )
    assert sorted(plain) == sorted(shuffled) and plain != shuffled


@pytest.mark.parametrize("cache", [True, "file"])
def test_cache_gives_the_same_elements(pairs, tmp_path, cache):
    cache = str(tmp_path / "cache") if cache == "file" else cache
    reference, cached = _train(pairs, 5), _train(pairs, 5, cache=cache)
    for _ in range(2):  # the second epoch reads the cache
        for a, b in zip(_as_arrays(reference), _as_arrays(cached)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "batch_size, drop_remainder, sizes", [(4, False, [4, 2]), (4, True, [4]), (3, False, [3, 3])]
)
def test_batching(pairs, batch_size, drop_remainder, sizes):
    ds = _train(pairs, 0, batch_size=batch_size, drop_remainder=drop_remainder)
    batches = list(ds.as_numpy_iterator())
    assert [images.shape[0] for images, _ in batches] == sizes
    for images, masks in batches:
        assert images.shape[1:] == (8, 8, 3) and masks.shape[1:] == (8, 8)
    if drop_remainder:
        assert ds.element_spec[0].shape.as_list() == [4, 8, 8, 3]


@pytest.mark.parametrize("repeat, count", [(False, 6), (2, 12)])
def test_repeat(pairs, repeat, count):
    assert len(list(_train(pairs, 0, repeat=repeat).as_numpy_iterator())) == count


def test_repeat_forever(pairs):
    ds = _train(pairs, 0, repeat=True, batch_size=4)
    assert len(list(ds.take(5).as_numpy_iterator())) == 5


def test_eval_keeps_native_size_and_values(pairs):
    ds = segmentation_dataset(
        pairs, 3, batch_size=2, progress=False, num_parallel_calls=None, prefetch=0
    )
    images, masks = next(iter(ds.as_numpy_iterator()))
    assert images.shape == (2, 12, 16, 3) and masks.shape == (2, 12, 16)
    for image, mask, (image_path, mask_path) in zip(images, masks, pairs):
        np.testing.assert_array_equal(image, np.asarray(Image.open(image_path), np.float32))
        np.testing.assert_array_equal(mask, np.asarray(Image.open(mask_path)))


def test_eval_size_resizes_mask_nearest(pairs):
    ds = segmentation_dataset(pairs, 3, eval_size=(24, 32), progress=False)
    _, mask = next(iter(ds.as_numpy_iterator()))
    original = np.asarray(Image.open(pairs[0][1]))
    np.testing.assert_array_equal(mask, np.kron(original, np.ones((2, 2), np.uint8)))
    assert ds.element_spec[0].shape.as_list() == [24, 32, 3]


def test_eval_batches_of_mixed_sizes_are_refused(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path), names=("a", "b"))
    Image.new("RGB", (20, 12)).save(os.path.join(images_dir, "b.png"))
    write_png(os.path.join(masks_dir, "b.png"), random_mask(3, height=12, width=20))
    match = r"different sizes with batch_size=2: .*a\.png' is 16x12 .*b\.png' is 20x12.*batch_size=1"
    with pytest.raises(ValueError, match=match):
        folder_dataset(images_dir, masks_dir, num_classes=3, batch_size=2, progress=False)
    assert folder_dataset(images_dir, masks_dir, num_classes=3, batch_size=1, progress=False)


def test_augment_needs_crop_size(pairs):
    with pytest.raises(ValueError, match="augment=True needs crop_size="):
        segmentation_dataset(pairs, 3, augment=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size=0 must be a positive int"),
        ({"repeat": 0}, "repeat=0 must be False"),
        ({"seed": "1"}, "seed='1' must be an int"),
        ({"image_pad_value": (1, 2)}, "image_pad_value=.* must be one value or an \\(R, G, B\\)"),
        ({"mask_decoder": "cv2"}, "mask_decoder='cv2' is not one of auto, tf, pillow"),
        ({"augment": True, "crop_size": 8, "base_size": -1}, "base_size=-1 must be a positive"),
    ],
)
def test_bad_options(pairs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        segmentation_dataset(pairs, 3, **kwargs)


def test_dataset_info_supplies_classes_and_refuses_a_mismatch(pairs):
    match = "num_classes=3 does not match dataset 'camvid', which has 11"
    with pytest.raises(ValueError, match=match):
        segmentation_dataset(pairs, 3, dataset_info=CAMVID_INFO)
    ds = segmentation_dataset(pairs, dataset_info=CAMVID_INFO, progress=False)
    assert len(list(ds.as_numpy_iterator())) == 6


def test_feeds_model_fit_on_the_current_backend(pairs):
    import keras

    ds = _train(pairs, 0, batch_size=3, repeat=True)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1)])
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
    )
    history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
