"""The paper's runs as shipped configs: recipe, ablation switches, targets, tables, new keys."""

import glob
import os

import pytest

from keras_sanet.evaluation.ablation import read_table
from keras_sanet.training.config import load_config
from keras_sanet.training.trainer import resolve_distribution
from tests.helpers import REPO_ROOT
from tests.helpers import backend

PAPER_DIR = os.path.join(REPO_ROOT, "configs", "paper")
PAPER_CONFIGS = sorted(glob.glob(os.path.join(PAPER_DIR, "*.toml")))
TABLES = sorted(glob.glob(os.path.join(PAPER_DIR, "tables", "*.toml")))
PAPER_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def _config(name, overrides=()):
    return load_config(os.path.join(PAPER_DIR, name + ".toml"), overrides)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=os.path.basename)
def test_every_paper_config_follows_the_recipe(path):
    config = load_config(path)
    d, m, t, e, p = config.data, config.model, config.train, config.eval, config.paper
    name = os.path.splitext(os.path.basename(path))[0]
    assert d.dataset in ("context59", "context60", "voc_aug", "voc")
    assert (d.crop_size, d.base_size, d.scale_range, d.flip) == ([480, 480], 520, [0.5, 2.0], True)
    assert d.val_pad_size == [512, 512]  # PASCAL images are at most 500x500
    assert (m.output_stride, m.backbone_weights, m.alpha, m.beta) == (8, "imagenet", 0.2, 0.8)
    assert (t.batch_size, t.reference_batch_size) == (16, 16)
    assert (t.momentum, t.weight_decay, t.poly_power, t.head_lr_multiplier) == (
        0.9, 1e-4, 0.9, 10.0
    )
    assert t.distribution == "auto" and t.output_dir == f"runs/paper/{name}"
    finetune = name.endswith("_finetune")
    assert t.learning_rate == (0.0001 if finetune else 0.001)
    assert t.epochs == (50 if finetune else 20 if "_20ep_" in name else 80)
    # The paper's test protocol.
    assert (e.scales, e.flip, e.crop_size, e.base_size) == (PAPER_SCALES, True, [480, 480], 520)
    assert e.stride_ratio == pytest.approx(2 / 3)
    # Every config states the figure it aims at, also in its header comment.
    assert p.figure and p.model and p.backbone and p.note
    with open(path) as f:
        header = f.read().split("[paper]")[0]
    assert p.figure.split(",")[0] in header


def test_learning_rate_scales_with_the_batch():
    config = _config("context59_sanet_resnet50", ["train.batch_size=8"])
    assert config.train.effective_learning_rate() == pytest.approx(0.0005)
    config = _config("context59_sanet_resnet50", ["train.batch_size=32"])
    assert config.train.effective_learning_rate() == pytest.approx(0.002)
    config = _config("context59_sanet_resnet50", ["train.reference_batch_size=0"])
    assert config.train.effective_learning_rate() == pytest.approx(0.001)


def test_table2_rows_switch_the_paper_components():
    table = read_table(os.path.join(PAPER_DIR, "tables", "table2_context59.toml"))
    rows = [load_config(row) for row in table.rows]
    switches = [
        (r.model.attention, r.model.categorical_head, r.model.auxiliary_head, r.model.backbone)
        for r in rows
    ]
    assert switches == [
        ("none", False, False, "resnet50"),
        ("sa", False, False, "resnet50"),
        ("sa", True, False, "resnet50"),
        ("sa", True, True, "resnet50"),
        ("sa", True, True, "resnet101"),
        ("sa", True, True, "efficientnetb7"),
    ]
    assert [(r.paper.pixel_accuracy, r.paper.mean_iou) for r in rows] == [
        (74.5, 43.2), (77.2, 49.2), (79.0, 50.7), (79.3, 51.9), (80.6, 53.0), (81.6, 55.3)
    ]
    assert all(r.data.dataset == "context59" and r.train.epochs == 80 for r in rows)
    assert table.columns == ("model", "backbone", "sa", "cat", "aux", "pixel_accuracy", "mean_iou")


def test_table4_rows_vary_the_head_module_over_20_epochs():
    table = read_table(os.path.join(PAPER_DIR, "tables", "table4_context59.toml"))
    rows = [load_config(row) for row in table.rows]
    assert [(r.paper.model, r.model.attention, r.model.backbone) for r in rows] == [
        ("FCN50", "none", "resnet50"),
        ("FCN101", "none", "resnet101"),
        ("FCN50-SE", "se", "resnet50"),
        ("FCN101-SE", "se", "resnet101"),
        ("SANet50", "sa", "resnet50"),
        ("SANet101", "sa", "resnet101"),
    ]
    assert [(r.paper.pixel_accuracy, r.paper.mean_iou) for r in rows] == [
        (76.2, 44.9), (76.7, 45.6), (76.0, 44.6), (76.6, 45.7), (78.9, 49.0), (79.2, 50.1)
    ]
    assert all(r.train.epochs == 20 for r in rows)
    assert table.columns == ("model", "pixel_accuracy", "mean_iou")


def test_context60_and_voc_configs():
    for name, miou in (
        ("context60_sanet_resnet101", 52.1),
        ("context60_sanet_efficientnetb7", 54.4),
    ):
        config = _config(name)
        assert config.data.dataset == "context60" and config.paper.mean_iou == miou
    stage1 = _config("voc_aug_sanet_resnet101")
    assert (stage1.data.dataset, stage1.data.train_split, stage1.data.val_split) == (
        "voc_aug", "train", "val"
    )
    stage2 = _config("voc_trainval_sanet_resnet101_finetune")
    assert (stage2.data.dataset, stage2.data.train_split, stage2.data.val_split) == (
        "voc", "trainval", ""
    )
    assert stage2.train.init_weights == f"{stage1.train.output_dir}/model.keras"
    assert stage2.model == stage1.model  # the same network, fine-tuned
    assert stage2.paper.mean_iou == 83.2


@pytest.mark.parametrize("path", TABLES, ids=os.path.basename)
def test_tables_list_existing_configs(path):
    table = read_table(path)
    assert table.rows and all(os.path.isfile(row) for row in table.rows)
    assert table.output.startswith("runs/paper/") and table.title.startswith("Table")


@pytest.mark.parametrize(
    "override, match",
    [
        ("data.num_classes=21", "does not match 'context59', which has 59 classes"),
        ('data.train_split="test"', "data.train_split='test' is not a split of 'context59'"),
        ('data.val_split="trainval"', "data.val_split='trainval' is not a split"),
        ("data.val_pad_size=[512]", r"data.val_pad_size must be \[height, width\]"),
        ("train.reference_batch_size=-1", "reference_batch_size must be >= 0"),
        ("eval.scales=[]", "eval.scales must be a non-empty list"),
        ("eval.scales=[1.0, -0.5]", "eval.scales must be a non-empty list"),
        ("eval.crop_size=[480]", r"eval.crop_size must be \[height, width\]"),
        ("eval.base_size=-1", "eval.base_size must be >= 0"),
        ("eval.stride_ratio=1.5", r"eval.stride_ratio must be in \(0, 1\]"),
        ("paper.mean_iou=\"high\"", "paper.mean_iou = 'high' must be of type float"),
    ],
)
def test_new_config_keys_name_the_fix(override, match):
    with pytest.raises(ValueError, match=match):
        _config("context59_sanet_resnet50", [override])


def test_validation_can_be_switched_off():
    config = _config("context59_sanet_resnet50", ['data.val_split=""'])
    assert config.data.val_split == ""


@pytest.mark.parametrize("accelerators", [0, 1, 4])
def test_auto_distribution(monkeypatch, accelerators):
    from keras_sanet import devices

    monkeypatch.setattr(devices, "accelerator_count", lambda backend: accelerators)
    several = {"tensorflow": "mirrored", "jax": "data_parallel", "torch": "none"}[backend()]
    if accelerators > 1 and backend() == "torch":
        with pytest.warns(UserWarning, match="trains on one device"):
            assert resolve_distribution("auto") == "none"
    else:
        assert resolve_distribution("auto") == (several if accelerators > 1 else "none")
    assert resolve_distribution("mirrored") == "mirrored"
