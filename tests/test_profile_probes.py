"""benchmarks/profile_inference.py: the train_split probe runs at a toy size."""

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
