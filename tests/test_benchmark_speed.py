"""benchmarks/speed.py: a --toy run on this backend, the FLOP counter, the goal verdicts."""

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.helpers import CAMVID_ROOT
from tests.helpers import REPO_ROOT
from tests.helpers import backend

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import speed  # noqa: E402
from flops import count_flops  # noqa: E402
from flops import flops_by_layer  # noqa: E402


def _one_layer(input_shape, layer):
    return keras.Sequential([keras.Input(input_shape), layer])


# (model input without the batch, layer, hand count for one image: 2 x multiply-adds)
LAYER_CASES = {
    "conv_same": ((8, 8, 3), keras.layers.Conv2D(8, 3, padding="same"), 2 * 8 * 8 * 8 * 3 * 3 * 3),
    "conv_strided_valid": ((9, 9, 4), keras.layers.Conv2D(8, 3, strides=2), 2 * 4 * 4 * 8 * 3 * 3 * 4),
    "conv_dilated": ((8, 8, 4), keras.layers.Conv2D(2, 3, padding="same", dilation_rate=2),
                     2 * 8 * 8 * 2 * 3 * 3 * 4),
    "conv_grouped": ((8, 8, 4), keras.layers.Conv2D(8, 1, groups=2), 2 * 8 * 8 * 8 * 2),
    "depthwise": ((8, 8, 3), keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
                  2 * 8 * 8 * 6 * 3 * 3),
    "separable": ((8, 8, 3), keras.layers.SeparableConv2D(8, 3, padding="same"),
                  2 * (8 * 8 * 3 * 3 * 3 + 8 * 8 * 3 * 8)),
    "transpose": ((4, 4, 3), keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
                  2 * 4 * 4 * 3 * 4 * 3 * 3),
    "dense_vector": ((7,), keras.layers.Dense(5), 2 * 7 * 5),
    "dense_per_pixel": ((4, 4, 6), keras.layers.Dense(5), 2 * 4 * 4 * 6 * 5),
    "not_counted": ((4, 4, 6), keras.layers.BatchNormalization(), 0),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_flops_of_one_layer_match_a_hand_count(case):
    input_shape, layer, expected = LAYER_CASES[case]
    model = _one_layer(input_shape, layer)
    assert count_flops(model, (1, *input_shape)) == expected
    assert count_flops(model, (3, *input_shape)) == 3 * expected  # per batch


class _Block(keras.layers.Layer):
    """A subclassed layer holding a conv in a list and calling it twice."""

    def __init__(self):
        super().__init__()
        self.convs = [keras.layers.Conv2D(4, 1)]

    def call(self, x):
        return self.convs[0](self.convs[0](x))


def test_flops_of_a_nested_model_count_every_call():
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU()(x)
    x = _Block()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    inner = keras.Model(inputs, outputs)
    model = keras.Sequential([keras.Input((6, 6, 4)), inner])

    stem = 2 * 6 * 6 * 4 * 3 * 3 * 4
    pointwise = 2 * 6 * 6 * 4 * 4
    head = 2 * 4 * 3
    records = flops_by_layer(model, (1, 6, 6, 4))
    assert [flops for _, flops in records] == [stem, pointwise, pointwise, head]
    assert count_flops(model, (1, 6, 6, 4)) == stem + 2 * pointwise + head
    # The wrappers are gone afterwards: the model runs as before.
    assert tuple(model(keras.ops.zeros((2, 6, 6, 4))).shape) == (2, 3)


def _fake_row(model, images_per_second, train_s, output_stride, **extra):
    batch = 1
    return {
        "backend": "tensorflow", "model": model, "batch": batch, "input_size": [64, 64],
        "output_stride": output_stride, "matmul_peak_gflops": 100.0, "peak_rss_mb": 1.0,
        "infer": {"images_per_second": images_per_second, "median_s": batch / images_per_second},
        "train": {"images_per_second": batch / train_s, "median_s": train_s},
    } | extra


@pytest.mark.parametrize("fast", [True, False])
def test_goal_verdicts_follow_the_measured_numbers(fast):
    # SANet at OS8: 2 GFLOPs/image; 45 images/s is 90 % of the 100 GFLOP/s peak, 10 is 20 %.
    os8_rate = 45.0 if fast else 10.0
    rows = [
        _fake_row(speed.SANET_OS8, os8_rate, (3.0 if fast else 4.0) / os8_rate, 8,
                  flops_per_image=2e9),
        _fake_row(speed.SANET_AT_PEER_OS, 13.0 if fast else 9.0, 1.0, 32, flops_per_image=1e9),
        _fake_row(speed.PEER, 10.0, 1.0, 32, flops_per_image=1e9),
    ]
    speed.derive(rows, [{"crop": [64, 64], "images_per_second": 20.0}])
    assert rows[0]["fraction_of_matmul_peak"] == pytest.approx(0.9 if fast else 0.2)
    assert rows[1]["vs_peer"] == pytest.approx(1.3 if fast else 0.9)
    assert rows[2]["pipeline_over_train"] == pytest.approx(20.0)
    verdicts = [line.split(":")[1].split(";")[0].strip() for line in speed.goals(rows)]
    assert verdicts == ["**met**"] * 3 if fast else ["**not met**"] * 3


# JAX compiles every initializer and both steps of each child: minutes of CPU, the slow set.
@(pytest.mark.slow if backend() == "jax" else lambda test: test)
def test_speed_toy_run_prints_a_table_and_writes_json(tmp_path):
    # Two models keep it short: SANet at the peer's output stride and the peer (ratio (b)).
    models = [speed.SANET_AT_PEER_OS, speed.PEER]
    path = tmp_path / "speed.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, speed.__file__, "--toy", "--backends", backend(),
         "--models", ",".join(models), "--json", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| backend | model |" in proc.stdout and "Goals" in proc.stdout, proc.stdout
    assert "speed: " in proc.stderr  # progress lines

    report = json.loads(path.read_text())
    rows = report["rows"]
    assert [(r["backend"], r["model"]) for r in rows] == [(backend(), m) for m in models]
    for row in rows:
        assert "error" not in row, row.get("log_tail")
        assert row["infer"]["images_per_second"] > 0
        assert row["train"]["median_s"] > 0 and row["train_over_infer"] > 0
        assert row["flops_per_image"] > 0 and row["gflops_per_second"] > 0
        assert row["matmul_peak_gflops"] > 0 and row["fraction_of_matmul_peak"] > 0
        assert row["peak_rss_mb"] > 0
    assert rows[0]["output_stride"] == rows[1]["output_stride"] == speed.PEER_OUTPUT_STRIDE
    assert rows[0]["vs_peer"] > 0
    (pipeline,) = report["input_pipeline"]
    if os.path.isdir(CAMVID_ROOT):
        assert pipeline["images_per_second"] > 0 and rows[0]["pipeline_over_train"] > 0
    else:
        assert "skipped" in pipeline
    assert len(report["goals"]) == 3
