import os

import numpy as np
import pytest
from PIL import Image
from test_data_fakes import HEIGHT
from test_data_fakes import WIDTH
from test_data_fakes import encoded_image
from test_data_fakes import make_folder_tree
from test_data_fakes import random_mask
from test_data_fakes import write_png

from keras_sanet.data import folder_dataset
from keras_sanet.data import folder_pairs
from keras_sanet.data import read_list_file


def test_pairs_are_matched_by_stem_and_sorted(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path), names=("b", "a", "c"))
    pairs = folder_pairs(images_dir, masks_dir)
    assert [os.path.basename(i) for i, _ in pairs] == ["a.png", "b.png", "c.png"]
    assert all(os.path.basename(i) == os.path.basename(m) for i, m in pairs)
    assert all(os.path.dirname(m) == masks_dir for _, m in pairs)


def test_jpeg_images_and_mask_suffix(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path), image_ext=".jpg")
    for name in os.listdir(masks_dir):
        os.rename(os.path.join(masks_dir, name), os.path.join(masks_dir, name[:-4] + "_label.png"))
    pairs = folder_pairs(images_dir, masks_dir, mask_suffix="_label")
    assert [os.path.basename(m) for _, m in pairs] == ["a_label.png", "b_label.png", "c_label.png"]
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, mask_suffix="_label")
    image, _ = next(iter(ds))
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype.name == "float32"


def test_dataset_elements(tmp_path):
    images_dir, masks_dir, masks = make_folder_tree(str(tmp_path))
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, progress=False)
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == 3
    for (image, mask), name in zip(elements, ("a", "b", "c")):
        assert image.dtype == np.float32 and image.shape == (HEIGHT, WIDTH, 3)
        assert mask.dtype == np.uint8 and mask.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(mask, masks[name])
        np.testing.assert_array_equal(image, encoded_image(masks[name]).astype(np.float32))


def test_label_map_is_applied(tmp_path):
    images_dir, masks_dir, masks = make_folder_tree(str(tmp_path), void_id=7)
    ds = folder_dataset(images_dir, masks_dir, num_classes=3, label_map={7: 255, 2: 0})
    _, mask = next(iter(ds.as_numpy_iterator()))
    expected = masks["a"].copy()
    expected[expected == 2] = 0
    expected[expected == 7] = 255
    np.testing.assert_array_equal(mask, expected)
    assert mask[0, :4].tolist() == [255] * 4


def test_palette_masks_give_their_indices(tmp_path):
    images_dir, masks_dir, masks = make_folder_tree(str(tmp_path), names=("a",))
    palette = Image.fromarray(masks["a"], mode="P")
    # A palette where index i is not grey i: tf.io would return colours here.
    palette.putpalette([(i * 37) % 256 for i in range(768)])
    palette.save(os.path.join(masks_dir, "a.png"))
    _, mask = next(iter(folder_dataset(images_dir, masks_dir, num_classes=3).as_numpy_iterator()))
    np.testing.assert_array_equal(mask, masks["a"])


def test_list_file_of_paths_with_root_and_prefix(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path / "data"))
    list_file = tmp_path / "pairs.txt"
    list_file.write_text("# comment\n/old/place/images/b.png /old/place/masks/b.png\n\n"
                         "/old/place/images/a.png /old/place/masks/a.png\n")  # fmt: skip
    pairs = folder_pairs(list_file=str(list_file), root=str(tmp_path / "data"),
                         strip_prefix="/old/place/")  # fmt: skip
    assert pairs == [
        (os.path.join(images_dir, "b.png"), os.path.join(masks_dir, "b.png")),
        (os.path.join(images_dir, "a.png"), os.path.join(masks_dir, "a.png")),
    ]


def test_list_file_of_stems(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path))
    list_file = tmp_path / "val.txt"
    list_file.write_text("c\na\n")
    pairs = read_list_file(str(list_file), images_dir=images_dir, masks_dir=masks_dir)
    assert [os.path.basename(i) for i, _ in pairs] == ["c.png", "a.png"]


def test_image_without_mask_is_named(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path))
    os.remove(os.path.join(masks_dir, "b.png"))
    with pytest.raises(ValueError, match=r"1 image\(s\) in .*images.* have no mask .*: b\.png"):
        folder_pairs(images_dir, masks_dir)


def test_mask_without_image_is_named(tmp_path):
    images_dir, masks_dir, _ = make_folder_tree(str(tmp_path))
    write_png(os.path.join(masks_dir, "extra.png"), random_mask())
    with pytest.raises(ValueError, match=r"1 mask\(s\) in .*masks.* have no image .*: extra\.png"):
        folder_pairs(images_dir, masks_dir)


def test_empty_folder_names_folder_and_extensions(tmp_path):
    images_dir, masks_dir = tmp_path / "images", tmp_path / "masks"
    images_dir.mkdir()
    masks_dir.mkdir()
    (images_dir / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"No image files found in .*images.*\.png, \.jpg, \.jpeg"):
        folder_dataset(str(images_dir), str(masks_dir), num_classes=3)


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="images folder .*nowhere.* does not exist"):
        folder_pairs(str(tmp_path / "nowhere"), str(tmp_path))


def test_empty_list_file(tmp_path):
    list_file = tmp_path / "train.txt"
    list_file.write_text("\n# only a comment\n")
    with pytest.raises(ValueError, match="train.txt.* has no lines"):
        folder_pairs(list_file=str(list_file))


def test_list_file_naming_a_missing_file(tmp_path):
    make_folder_tree(str(tmp_path))
    list_file = tmp_path / "train.txt"
    list_file.write_text("/elsewhere/images/a.png /elsewhere/masks/a.png\n")
    with pytest.raises(ValueError, match="Line 1 .* does not exist. Pass `root=`.*`strip_prefix=`"):
        folder_pairs(list_file=str(list_file))


def test_list_file_with_three_fields(tmp_path):
    list_file = tmp_path / "train.txt"
    list_file.write_text("a b c\n")
    with pytest.raises(ValueError, match="Line 1 .* has 3 fields"):
        folder_pairs(list_file=str(list_file))


def test_duplicate_stems(tmp_path):
    images_dir, masks_dir, masks = make_folder_tree(str(tmp_path))
    Image.fromarray(encoded_image(masks["a"])).save(os.path.join(images_dir, "a.jpg"))
    with pytest.raises(ValueError, match="Two image files share the stem 'a'"):
        folder_pairs(images_dir, masks_dir)
