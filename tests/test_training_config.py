"""The TOML training config: overrides, defaults and the errors users see."""

import os

import pytest

from keras_sanet.training.config import Config
from keras_sanet.training.config import config_from_dict
from keras_sanet.training.config import load_config
from tests.helpers import REPO_ROOT

FOLDER_CONFIG = """
[data]
dataset = "folder"
train_images = "imgs"
train_masks = "masks"
num_classes = 3
crop_size = [32, 48]

[model]
backbone = "resnet18"
output_stride = 32

[train]
batch_size = 2
epochs = 3
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(FOLDER_CONFIG)
    return str(path)


def test_load_config_reads_the_file_and_keeps_defaults(config_file):
    config = load_config(config_file)
    assert config.data.dataset == "folder"
    assert config.data.crop_size == [32, 48]
    assert config.model.output_stride == 32
    assert (config.train.batch_size, config.train.epochs) == (2, 3)
    assert config.train.learning_rate == pytest.approx(0.01)  # a default
    assert config.train.head_lr_multiplier == pytest.approx(10.0)
    assert config.train.exact_resume is True


def test_overrides_are_parsed_as_toml(config_file):
    config = load_config(
        config_file,
        [
            "train.epochs=5",
            "train.learning_rate=2e-3",
            "train.jit_compile=false",
            'train.distribution="none"',
            "train.output_dir=/tmp/somewhere",  # not TOML: kept as a string
            "data.crop_size=[64, 96]",
            'data.label_map={"0" = 255}',
            "model.auxiliary_head=false",
        ],
    )
    assert config.train.epochs == 5
    assert config.train.learning_rate == pytest.approx(2e-3)
    assert config.train.jit_compile is False
    assert config.train.output_dir == "/tmp/somewhere"
    assert config.data.crop_size == [64, 96]
    assert config.data.label_map == {"0": 255}
    assert config.model.auxiliary_head is False


def test_override_of_a_section_missing_from_the_file(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text('[data]\ndataset = "camvid"\n')
    config = load_config(str(path), ["train.epochs=2", "model.backbone=\"resnet34\""])
    assert config.train.epochs == 2
    assert config.model.backbone == "resnet34"


def test_shipped_camvid_config_loads():
    config = load_config(os.path.join(REPO_ROOT, "configs", "camvid_resnet18_os16.toml"))
    assert config.data.dataset == "camvid"
    assert (config.model.backbone, config.model.output_stride) == ("resnet18", 16)
    assert config.train.head_lr_multiplier == pytest.approx(10.0)


# configs/paper/tables/ holds ablation tables (lists of configs), not training configs.
TABLES_DIR = os.path.join("configs", "paper", "tables")
SHIPPED_CONFIGS = sorted(
    os.path.relpath(os.path.join(folder, name), REPO_ROOT)
    for folder, _, names in os.walk(os.path.join(REPO_ROOT, "configs"))
    for name in names
    if name.endswith(".toml")
    and os.path.relpath(folder, REPO_ROOT) != TABLES_DIR
)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS)
def test_every_shipped_config_loads_with_a_known_backbone(path):
    from keras_sanet import backbone_names

    config = load_config(os.path.join(REPO_ROOT, path))
    assert config.model.backbone in backbone_names()
    assert config.train.epochs >= 1 and config.train.batch_size >= 1
    assert config_from_dict(config.to_dict()) == config


def test_config_dict_round_trip(config_file):
    config = load_config(config_file, ["train.epochs=7"])
    assert config_from_dict(config.to_dict()) == config
    assert isinstance(config, Config)


def test_unknown_section_names_the_valid_ones(config_file):
    valid = r"\[data\], \[model\], \[train\], \[eval\] and \[paper\]"
    with pytest.raises(ValueError, match=r"unknown section \[optim\].*" + valid):
        load_config(config_file, ["optim.lr=0.1"])


def test_unknown_key_names_the_valid_keys(config_file):
    with pytest.raises(ValueError) as info:
        load_config(config_file, ["train.epoch=2"])
    message = str(info.value)
    assert "['epoch']" in message and "[train]" in message
    assert "Valid keys" in message and "'epochs'" in message and "'learning_rate'" in message


@pytest.mark.parametrize("value", ['"horovod"', '"MIRRORED"', "1"])
def test_bad_distribution_value(config_file, value):
    with pytest.raises(ValueError, match="distribution"):
        load_config(config_file, [f"train.distribution={value}"])


def test_bad_distribution_value_lists_the_choices(config_file):
    with pytest.raises(ValueError, match="'none', 'mirrored', 'data_parallel'"):
        load_config(config_file, ['train.distribution="horovod"'])


def test_folder_dataset_needs_num_classes(tmp_path):
    path = tmp_path / "no_classes.toml"
    path.write_text(FOLDER_CONFIG.replace("num_classes = 3\n", ""))
    with pytest.raises(ValueError, match="needs data.num_classes"):
        load_config(str(path))


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("train.validate_every=0", "train.validate_every must be >= 1"),
        ("train.steps_per_epoch=-1", "steps_per_epoch must be >= 0"),
        ("train.learning_rate=0", "learning_rate and train.head_lr_multiplier must be > 0"),
        ("train.epochs=many", "train.epochs = 'many' must be of type int"),
        ("train.epochs=2.5", "train.epochs = 2.5 must be of type int"),
        ("train.exact_resume=1", "must be of type bool"),
        ('train.jit_compile="xla"', "jit_compile"),
        ('data.dataset="coco"', "use one of 'camvid', 'voc', 'voc_aug', 'context59', "
         "'context60', 'folder'"),
        ("data.crop_size=[32]", r"crop_size must be \[height, width\]"),
        ("data.crop_size=[32, 0]", r"crop_size must be \[height, width\]"),
        ('data.train_masks=""', "needs data.train_images and data.train_masks"),
        ('data.val_images="val"', "set both data.val_images and data.val_masks"),
    ],
)
def test_invalid_values_name_the_key_and_the_fix(config_file, override, match):
    with pytest.raises(ValueError, match=match):
        load_config(config_file, [override])


def test_malformed_override(config_file):
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(config_file, ["epochs=2"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(config_file, ["train.epochs"])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_config(str(tmp_path / "nope.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nepochs = 2\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(str(broken))
