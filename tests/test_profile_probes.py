"""benchmarks/profile_inference.py: the train_split, layers, backward, pointwise and
filter_gradient probes run at a toy size."""

import os
import sys

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import backend

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import profile_inference  # noqa: E402


def run_toy_probe(capsys, probe, *extra):
    """Runs one probe on the toy SANet (ResNet-18, OS32, 32x32): `(summary, printed)`."""
    summary = profile_inference.main(
        ["--probes", probe, "--size", "32", "--output-stride", "32", "--repeats", "1", *extra]
    )[probe]
    return summary, capsys.readouterr().out


def toy_sanet_flops(training=False):
    """FLOPs of the probes' toy SANet, as benchmarks/flops.py counts them."""
    import keras_sanet
    from flops import count_flops

    model = keras_sanet.SANet(backbone="resnet18", num_classes=21, output_stride=32)
    model.build((None, 32, 32, 3))
    return count_flops(model, (1, 32, 32, 3), training=training)


def test_train_split_probe_reports_every_part(capsys):
    summary, out = run_toy_probe(capsys, "train_split")
    for head in ("with", "without"):
        assert f"{head} the auxiliary head: GFLOPs inference" in out
    for part in ("inference", "training forward + loss", "forward + gradients",
                 "train_on_batch"):
        assert out.count(f"  {part}: ") == 2, out
    # Without the auxiliary head the training forward pass counts the inference's FLOPs.
    without = out.split("without the auxiliary head")[1].splitlines()[0]
    assert without.endswith("(1.00x)"), without
    for head in ("with", "without"):
        ratios = summary[head]
        assert ratios["inference"] == 1.0
        assert all(ratio > 0 for ratio in ratios.values()), ratios


def test_layers_probe_times_every_leaf_layer_and_counts_the_model_s_flops(capsys):
    import keras

    summary, out = run_toy_probe(capsys, "layers", "--top", "3")
    by_class = summary["by_class"]
    for name in ("Conv2D", "BatchNormalization", "Activation", "Add"):
        assert by_class[name]["calls"] > 0 and by_class[name]["seconds"] > 0, by_class
    # The convolutions and dense layers timed alone are all the model's counted FLOPs.
    assert summary["flops"] == toy_sanet_flops()
    assert summary["flops"] == sum(entry["flops"] for entry in by_class.values())
    assert summary["whole_s"] > 0 and summary["matmul_gflops"] > 0
    assert f"{keras.backend.backend()}: SANet resnet18 OS32 32x32" in out
    assert "| Conv2D |" in out and "the 3 slowest calls:" in out


def test_backward_probe_times_every_leaf_call_of_the_training_pass(capsys):
    import keras

    summary, out = run_toy_probe(capsys, "backward", "--top", "2")
    by_class = summary["by_class"]
    for name in ("Conv2D", "BatchNormalization", "Activation", "Add", "Dropout"):
        entry = by_class[name]
        assert entry["calls"] > 0 and entry["forward_s"] > 0 and entry["backward_s"] > 0
    # The training pass: the auxiliary head's convolutions are timed too.
    assert summary["flops"] == toy_sanet_flops(training=True) > toy_sanet_flops()
    assert f"{keras.backend.backend()}: SANet resnet18 OS32 32x32, batch 1, training pass" in out
    assert "| Conv2D |" in out and "the 2 slowest forward + backward calls:" in out


@pytest.mark.parametrize("probe, switch, what, off", [
    # ResNet-18's shortcut projections and every classifier are 1x1: some, not all.
    ("pointwise", "pointwise_as_matmul", "convolutions run as matmuls", False),
    # Its stride-1 3x3 convolutions and the heads' are some, not all (not the stem).
    ("filter_gradient", "filter_gradient_as_matmul",
     "convolutions take their kernel gradient as matmuls", False),
    # The same stride-1 3x3 convolutions (at this toy size too small to run it).
    ("winograd", "winograd", "convolutions are float32 stride-1 3x3", False),
    # Winograd's output tile, 2 against 4, on those convolutions.
    ("winograd_f4", "winograd_output_size", "convolutions are float32 stride-1 3x3", 2),
    # Winograd's tile transforms as sums against one matmul each.
    ("winograd_matmuls", "winograd_transforms_as_matmuls",
     "convolutions are float32 stride-1 3x3", False),
])
def test_switch_probes_time_both_paths_and_their_outputs_agree(capsys, probe, switch, what,
                                                               off):
    import keras

    summary, out = run_toy_probe(capsys, probe)
    assert set(summary) == {"inference", "training step"}
    assert all(ratio > 0 for ratio in summary.values())
    header = next(line for line in out.splitlines() if f"({switch})" in line)
    assert f"{keras.backend.backend()}: SANet resnet18 OS32 32x32 batch 1" in header
    switched, total = (int(n) for n in header.split(f" {what}")[0].split(", ")[-1]
                       .split(" of "))
    assert 0 < switched < total
    difference = float(header.split("max |difference| ")[1].split(" ")[0])
    largest = float(header.split("largest |logit| ")[1].rstrip(")"))
    assert difference <= 1e-5 * largest + 1e-5  # float32 rounding, not another model
    assert f"  inference: {switch}={off}" in out and f"  training step: {switch}={off}" in out


def test_depthwise_probe_switches_every_depthwise_convolution_of_mobilenet_v2(capsys):
    summary, out = run_toy_probe(capsys, "depthwise", "--backbone", "mobilenetv2")
    assert set(summary) == {"inference", "training step"}
    assert all(ratio > 0 for ratio in summary.values())
    assert ("17 of 17 depthwise convolutions run as multiply-adds "
            "(depthwise_as_multiply_adds)") in out
    assert "  inference: depthwise_as_multiply_adds=False" in out


# JAX compiles two forward and two backward passes per convolution: the slow set there.
@(pytest.mark.slow if backend() == "jax" else lambda test: test)
def test_winograd_layers_probe_times_each_convolution_it_takes_both_ways(capsys):
    # ResNet-18 at OS8 on 128x128: its dilated stages' 16x16 maps are too small;
    # at 256x256 their 32x32 maps of 256 and 512 channels take it.
    rows = profile_inference.main([
        "--probes", "winograd_layers", "--backbone", "resnet18", "--output-stride", "8",
        "--size", "256", "--repeats", "1", "--rounds", "1",
    ])["winograd_layers"]
    out = capsys.readouterr().out
    assert rows and f"{len(rows)} distinct convolutions Winograd takes" in out
    for row in rows:
        height, width, channels = row["input"][1:]
        assert height * width >= 32 * 32 and min(channels, row["filters"]) >= 256
        assert row["flops"] == 2 * height * width * channels * 9 * row["filters"]
        assert all(s > 0 for s in (*row["forward_s"], *row["backward_s"]))
    assert len({(tuple(r["input"]), r["filters"], tuple(r["dilation"])) for r in rows}) == len(rows)
    assert {tuple(r["dilation"]) for r in rows} >= {(2, 2), (4, 4)}  # the dilated stages
