"""`keras-sanet ablation`: the shipped Table 2 file run end to end on a tiny fake Context tree.

Row 4 (the full SANet) is trained by the command: a SANet on a tiny test
backbone (four strided convs), one step of 32x32 crops. Row 1 (FCN) is a
finished run already on disk (a stand-in model: one conv), which the command
scores without training. Both are scored with a shortened protocol (scale 1
of a 14-pixel long side, flip, 8x8 sliding windows) on the two fake val
images.
"""

import json
import os

import keras
import pytest
from pascal_fakes import make_context_tree

from keras_sanet import cli
from keras_sanet.backbones import backbone_names
from keras_sanet.backbones.registry import BackboneSpec
from keras_sanet.backbones.registry import register_backbone
from keras_sanet.evaluation import ablation
from keras_sanet.evaluation.ablation import protocol_tag
from keras_sanet.evaluation.ablation import read_table
from keras_sanet.training.config import load_config
from tests.helpers import REPO_ROOT
from tests.helpers import backend

TABLE2 = os.path.join(REPO_ROOT, "configs", "paper", "tables", "table2_context59.toml")
TINY = "tiny_test_backbone"
HEADER = "| Model | Backbone | SA | Cat | Aux | PAcc | mIoU | PAcc (paper) | mIoU (paper) |"


def tiny_backbone(output_stride=8, weights=None, dtype=None, **kwargs):
    """C2..C5 at 1/4, 1/8, 1/8|16, 1/8|16|32 from four convs: a backbone for fast tests."""
    if weights is not None:
        raise ValueError("The tiny test backbone has no pretrained weights.")
    images = keras.Input((None, None, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0, dtype=dtype)(images)
    strides = (4, 2, 2 if output_stride >= 16 else 1, 2 if output_stride == 32 else 1)
    features = []
    for index, (channels, stride) in enumerate(zip((8, 8, 16, 16), strides)):
        x = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", activation="relu",
                                dtype=dtype, name=f"tiny_conv{index}")(x)
        features.append(x)
    return keras.Model(images, features, name="tiny_backbone")


if TINY not in backbone_names():
    register_backbone(BackboneSpec(TINY, tiny_backbone, (8, 8, 16, 16)))


@pytest.fixture(scope="module")
def context_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("context"))
    make_context_tree(root)
    return root


def tiny_overrides(root):
    return [
        f'data.root="{root}"',
        "data.crop_size=[32, 32]",
        'data.val_split=""',  # no validation inside fit: the command scores afterwards
        f'model.backbone="{TINY}"',
        'model.backbone_weights=""',
        "train.epochs=1",
        "train.steps_per_epoch=1",
        "train.batch_size=2",
        "train.jit_compile=false",
        "eval.scales=[1.0]",
        "eval.crop_size=[8, 8]",
        "eval.base_size=14",
    ]


def _argv(root, runs, output, *extra):
    argv = ["ablation", TABLE2, "--runs-dir", runs, "--output", output, "--no-progress",
            "--verbose", "0"]
    for override in tiny_overrides(root):
        argv += ["--set", override]
    return argv + list(extra)


def finished_run(config_path, root, runs):
    """A run folder as `keras-sanet train` leaves it (model.keras, config.json, history.json)."""
    config = load_config(config_path, tiny_overrides(root))
    run_dir = os.path.join(runs, os.path.splitext(os.path.basename(config_path))[0])
    config.train.output_dir = run_dir
    os.makedirs(run_dir)
    # Any model mapping images to 59-class logits stands in for the trained FCN.
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255.0),
         keras.layers.Conv2D(59, 3, padding="same")]
    )
    model.save(os.path.join(run_dir, "model.keras"))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f)
    with open(os.path.join(run_dir, "history.json"), "w") as f:
        json.dump({"epochs": 1}, f)
    return run_dir


def test_ablation_scores_finished_runs_in_the_paper_layout(context_root, tmp_path, capsys):
    runs, output = str(tmp_path / "runs"), str(tmp_path / "table2.md")
    table = read_table(TABLE2)
    for index in (0, 3):  # rows 1 (FCN) and 4 (full SANet) are finished; the others are not
        finished_run(table.rows[index], context_root, runs)
    assert cli.main(_argv(context_root, runs, output, "--no-train")) == 0
    printed = capsys.readouterr().out
    assert "training " not in printed and printed.count("scoring ") == 2
    assert "| **mIoU** |" not in printed  # the per-class tables stay in the JSON files
    with open(output) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("**Table 2: ablation study of SANets on PASCAL Context")
    assert lines[2] == HEADER
    assert lines[3] == "| --- | --- | :---: | :---: | :---: | ---: | ---: | ---: | ---: |"
    rows = [line.split(" | ") for line in lines[4:10]]
    assert len(rows) == 6
    with open(os.path.splitext(output)[0] + ".json") as f:
        rows_json = json.load(f)["rows"]
    assert [r["status"] for r in rows_json] == ["scored", "not trained", "not trained",
                                                "scored", "not trained", "not trained"]
    # Row 1: FCN, no SA/Cat/Aux; row 4: SANet with all three; the paper's figures beside ours.
    tag = protocol_tag(rows_json[0]["protocol"])
    for index, label, marks, paper in ((0, "| FCN", ["", "", ""], ["74.5", "43.2 |"]),
                                       (3, "| SANet", ["✓", "✓", "✓"], ["79.3", "51.9 |"])):
        row = rows_json[index]
        eval_json = os.path.join(row["run_dir"], f"model.eval-context59-val-{tag}.json")
        assert row["eval_json"] == eval_json
        with open(eval_json) as f:
            results = json.load(f)
        assert results["num_classes"] == 59 and results["num_images"] == 2
        assert (results["scales"], results["flip"], results["crop_size"], results["base_size"]) == (
            [1.0], True, [8, 8], 14
        )
        cells = rows[index]
        assert cells[0] == label and cells[1] == TINY
        assert [c.strip() for c in cells[2:5]] == marks
        assert cells[5] == f"{100 * results['pixel_accuracy']:.1f}"
        assert cells[6] == f"{100 * results['mean_iou']:.1f}"
        assert cells[7:] == paper
    assert rows[1][5:] == ["-", "-", "77.2", "49.2 |"]
    assert rows[5][:2] == ["| SANet", TINY] and rows[5][5:7] == ["-", "-"]
    assert any(line.startswith("Not scored yet") for line in lines)
    assert any("context59 val, scales 1 of a 14-pixel long side, flip, sliding window 8x8" in line
               for line in lines)

    # Again: the scores are reused, nothing is redone...
    again = str(tmp_path / "again.md")
    assert cli.main(_argv(context_root, runs, again, "--no-train")) == 0
    assert "scoring " not in capsys.readouterr().out
    with open(again) as f:
        assert f.read().splitlines()[:10] == lines[:10]
    # ...unless the model changed after it was scored, or the protocol differs.
    model_path = os.path.join(rows_json[0]["run_dir"], "model.keras")
    later = os.path.getmtime(rows_json[0]["eval_json"]) + 10
    os.utime(model_path, (later, later))
    assert cli.main(_argv(context_root, runs, again, "--no-train", "--rows", "1")) == 0
    assert capsys.readouterr().out.count("scoring ") == 1
    assert cli.main(_argv(context_root, runs, again, "--no-train", "--rows", "4",
                          "--set", "eval.flip=false")) == 0
    assert capsys.readouterr().out.count("scoring ") == 1


# Compiling a SANet's train step takes minutes under JAX on a small CPU: there this test is
# in the slow set (the trainer itself is covered on every backend by test_training_run).
@pytest.mark.parametrize(
    "row", [pytest.param("context59_sanet_resnet50", marks=[pytest.mark.slow]
                         if backend() == "jax" else [])]
)
def test_ablation_trains_a_missing_row(context_root, tmp_path, capsys, row):
    runs, output = str(tmp_path / "runs"), str(tmp_path / "table2.md")
    assert cli.main(_argv(context_root, runs, output, "--rows", row)) == 0
    printed = capsys.readouterr().out
    assert printed.count("training ") == 1 and printed.count("scoring ") == 1
    run_dir = os.path.join(runs, row)
    for name in ("model.keras", "history.json", "config.json"):
        assert os.path.isfile(os.path.join(run_dir, name))
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    assert history["iterations"] == 1 and history["distribution"] == "none"
    with open(output) as f:
        cells = f.read().splitlines()[7].split(" | ")  # row 4
    assert cells[:2] == ["| SANet", TINY] and [c.strip() for c in cells[2:5]] == ["✓"] * 3
    assert cells[5] != "-" and cells[6] != "-"


def test_table_file_errors_name_the_fix(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('title = "x"\nlayout = "table9"\nrows = ["a.toml"]\n')
    assert cli.main(["ablation", str(bad)]) == 2
    assert "layout = one of ['table2', 'table3', 'table4']" in capsys.readouterr().err
    bad.write_text('layout = "table2"\nrows = ["missing.toml"]\n')
    assert cli.main(["ablation", str(bad)]) == 2
    assert "row config(s) not found" in capsys.readouterr().err
    assert cli.main(["ablation", TABLE2, "--rows", "9", "--no-train"]) == 2
    assert "--rows '9' is neither a row number (1..6)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, reused",
    [
        ({}, True),
        ({"size_multiple": 0, "dtype_policy": "float32"}, True),
        ({"size_multiple": 32}, False),
        ({"dtype_policy": "mixed_bfloat16"}, False),
    ],
    ids=["old_json", "exact", "padded", "mixed_precision"],
)
def test_only_exact_protocol_scores_are_reused(tmp_path, extra, reused):
    model_path = str(tmp_path / "model.keras")
    protocol = {"scales": [1.0], "flip": False, "stride_ratio": 2 / 3}
    results = {"mean_iou": 0.5, "weights": model_path, "limit": None,
               "scales": [1.0], "flip": False, "stride_ratio": 2 / 3, **extra}
    assert ablation._matches(results, protocol, None, model_path) is reused
