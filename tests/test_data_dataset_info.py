import pytest

from keras_sanet.data import CAMVID_INFO
from keras_sanet.data import DatasetInfo
from keras_sanet.data import dataset_names
from keras_sanet.data import get_dataset_info
from keras_sanet.data import label_lookup_table


def test_camvid_info_matches_the_segnet_release():
    assert CAMVID_INFO.num_classes == 11
    assert CAMVID_INFO.class_names == (
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    )  # fmt: skip
    assert CAMVID_INFO.palette[0] == (128, 128, 128)
    assert CAMVID_INFO.palette[4] == (60, 40, 222)
    assert CAMVID_INFO.palette[10] == (0, 128, 192)
    assert CAMVID_INFO.ignore_index == 255
    assert CAMVID_INFO.label_map == {11: 255}


def test_dataset_info_is_hashable_and_compares_by_value():
    copy = DatasetInfo(**{f: getattr(CAMVID_INFO, f) for f in CAMVID_INFO.__dataclass_fields__})
    assert copy == CAMVID_INFO and hash(copy) == hash(CAMVID_INFO)
    assert {CAMVID_INFO: 1}[copy] == 1


@pytest.mark.parametrize("name", ["camvid", "CamVid", "CAMVID"])
def test_registry_lookup_is_case_insensitive(name):
    assert get_dataset_info(name) is CAMVID_INFO
    assert "camvid" in dataset_names()


@pytest.mark.parametrize("name", ["cityscapes", None, 3])
def test_unknown_dataset_lists_valid_names(name):
    with pytest.raises(ValueError, match=r"Unknown dataset .*Valid datasets: .*camvid"):
        get_dataset_info(name)


def test_palette_must_match_class_names():
    with pytest.raises(ValueError, match="2 class names but 1 palette"):
        DatasetInfo("x", ("a", "b"), ((0, 0, 0),))


def test_palette_colours_are_rgb_bytes():
    with pytest.raises(ValueError, match="not an \\(R, G, B\\) triple"):
        DatasetInfo("x", ("a",), ((0, 0, 300),))


def test_ignore_index_must_sit_above_the_classes():
    with pytest.raises(ValueError, match="ignore_index=1 .* must be in 2..255"):
        DatasetInfo("x", ("a", "b"), ((0, 0, 0), (1, 1, 1)), ignore_index=1)


def test_label_lookup_table():
    table = label_lookup_table({11: 255, 0: 3})
    assert table.dtype.name == "uint8"
    assert table[[0, 1, 10, 11, 255]].tolist() == [3, 1, 10, 255, 255]


@pytest.mark.parametrize("label_map", [{256: 0}, {1: -1}, {1.5: 0}])
def test_label_map_values_must_fit_uint8(label_map):
    with pytest.raises(ValueError, match="not an integer in 0..255"):
        label_lookup_table(label_map)


def test_label_map_must_be_a_dict():
    with pytest.raises(TypeError, match="must be a dict"):
        label_lookup_table([(11, 255)])
