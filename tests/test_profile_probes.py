"""benchmarks/profile_inference.py: the train_split and layers probes run at a toy size."""

import os
import sys

from tests.helpers import REPO_ROOT
from tests.helpers import backend

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import profile_inference  # noqa: E402


def test_train_split_probe_reports_every_part_or_says_why_not(capsys):
    profile_inference.main(
        ["--probes", "train_split", "--size", "32", "--output-stride", "32", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    if backend() != "tensorflow":
        assert "TensorFlow only" in out and "skipped" in out
        return
    for head in ("with", "without"):
        assert f"{head} the auxiliary head: GFLOPs inference" in out
    for part in ("inference", "training forward + loss", "forward + gradients",
                 "train_on_batch"):
        assert out.count(f"  {part}: ") == 2, out
    # Without the auxiliary head the training forward pass counts the inference's FLOPs.
    without = out.split("without the auxiliary head")[1].splitlines()[0]
    assert without.endswith("(1.00x)"), without


def test_layers_probe_times_every_leaf_layer_and_counts_the_model_s_flops(capsys):
    import keras

    import keras_sanet
    from flops import count_flops

    summary = profile_inference.main(
        ["--probes", "layers", "--size", "32", "--output-stride", "32", "--repeats", "1",
         "--top", "3"]
    )["layers"]
    out = capsys.readouterr().out
    by_class = summary["by_class"]
    for name in ("Conv2D", "BatchNormalization", "Activation", "Add"):
        assert by_class[name]["calls"] > 0 and by_class[name]["seconds"] > 0, by_class
    # The convolutions and dense layers timed alone are all the model's counted FLOPs.
    model = keras_sanet.SANet(backbone="resnet18", num_classes=21, output_stride=32)
    model.build((None, 32, 32, 3))
    assert summary["flops"] == count_flops(model, (1, 32, 32, 3))
    assert summary["flops"] == sum(entry["flops"] for entry in by_class.values())
    assert summary["whole_s"] > 0 and summary["matmul_gflops"] > 0
    assert f"{keras.backend.backend()}: SANet resnet18 OS32 32x32" in out
    assert "| Conv2D |" in out and "the 3 slowest calls:" in out
