"""benchmarks/speed.py: a --toy run on this backend, FLOP counts, variants, goal verdicts."""

import json
import mmap
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


class TrainingOnlyHead(keras.Model):
    """A main conv and batch norm, and a second conv only in training (like SANet's
    auxiliary head)."""

    def __init__(self):
        super().__init__()
        self.main = keras.layers.Conv2D(4, 3, padding="same")
        self.norm = keras.layers.BatchNormalization()
        self.aux = keras.layers.Conv2D(2, 1)

    def call(self, x, training=False):
        x = self.norm(self.main(x), training=training)
        return x + keras.ops.sum(self.aux(x)) if training else x


def test_flops_of_the_training_forward_pass_count_training_only_layers():
    model = TrainingOnlyHead()
    main = 2 * 6 * 6 * 4 * 3 * 3 * 3
    aux = 2 * 6 * 6 * 2 * 4
    assert count_flops(model, (1, 6, 6, 3)) == main
    model.norm.moving_mean.assign(keras.ops.ones((4,)))  # a batch's mean (0 on zeros) would move it
    moving_mean = keras.ops.convert_to_numpy(model.norm.moving_mean).copy()
    assert count_flops(model, (1, 6, 6, 3), training=True) == main + aux
    # Counting changed no weight: the batch statistics never reached the moving mean.
    assert (keras.ops.convert_to_numpy(model.norm.moving_mean) == moving_mean).all()


def test_winograd_flops_count_the_convolutions_winograd_takes():
    from flops import winograd_flops

    from keras_sanet.layers import Conv2D

    inputs = keras.Input((32, 32, 256))
    x = Conv2D(256, 3, padding="same", dilation_rate=2)(inputs)  # taken
    x = Conv2D(128, 3, padding="same")(x)  # 128 filters: too few
    x = Conv2D(256, 3, strides=2, padding="same")(x)  # strided: not
    x = Conv2D(256, 3, padding="same")(x)  # 16x16 pixels: too few
    x = keras.layers.Conv2D(256, 3, padding="same")(x)  # Keras' own: not
    model = keras.Model(inputs, Conv2D(2, 1)(x))  # a matmul: not
    taken = 2 * 32 * 32 * 256 * 9 * 256
    assert winograd_flops(model, (1, 32, 32, 256)) == taken
    assert count_flops(model, (1, 32, 32, 256)) == taken + 2 * 9 * (
        32 * 32 * 128 * 256 + 16 * 16 * 256 * 128 + 2 * 16 * 16 * 256 * 256) + 2 * 16 * 16 * 2 * 256


@pytest.mark.parametrize("output_sizes", [(4, 4), (2, 4), (2, 2)])
def test_winograd_executed_flops_follow_each_layers_tile_size(output_sizes):
    from flops import winograd_calls
    from flops import winograd_executed_flops

    from keras_sanet.layers import Conv2D

    inputs = keras.Input((32, 32, 256))
    first, second = Conv2D(256, 3, padding="same"), Conv2D(256, 3, padding="same")
    model = keras.Model(inputs, second(first(inputs)))
    first.winograd_output_size, second.winograd_output_size = output_sizes
    direct = 2 * 32 * 32 * 256 * 9 * 256
    assert winograd_calls(model, (1, 32, 32, 256)) == [(m, direct) for m in output_sizes]
    # F(2x2, 3x3): 16 multiplies per 2x2 outputs (4/9 of 36); F(4x4, 3x3): 36 per 4x4 (1/4).
    share = {2: 4 / 9, 4: 1 / 4}
    assert winograd_executed_flops(model, (1, 32, 32, 256)) == pytest.approx(
        sum(share[m] * direct for m in output_sizes))


@pytest.mark.parametrize("output_size, fraction", [(2, 16 / 36), (4, 36 / 144)])
def test_winograd_multiplies_per_direct_convolution_multiply(output_size, fraction):
    from flops import winograd_multiply_fraction

    assert winograd_multiply_fraction(output_size) == pytest.approx(fraction)


@pytest.mark.parametrize("runs_winograd", [True, False])
def test_executed_flops_take_out_what_winograd_saves(runs_winograd):
    # 2 GFLOPs counted, 0.8 of them Winograd-shaped: run as Winograd F(4x4, 3x3),
    # 1/4 of those 0.8 execute, 1.4 GFLOPs in all; 80 % of peak counted is 56 % executed.
    row = _fake_row(speed.SANET_OS8, 40.0, 0.1, 8, flops_per_image=2e9,
                    winograd_flops_per_image=0.8e9, winograd_executed_flops_per_image=0.2e9,
                    winograd_output_sizes=[4], winograd=runs_winograd)
    row["infer"] |= {"seconds": [0.025], "peak_gflops_beside": [100.0]}
    speed.derive([row], [])
    assert row["fraction_of_matmul_peak_paired"] == pytest.approx(0.8)
    executed = 1.4e9 if runs_winograd else 2e9
    assert row["executed_flops_per_image"] == pytest.approx(executed)
    assert row["executed_fraction_of_peak"] == pytest.approx(0.8 * executed / 2e9)
    (line,) = [g for g in speed.goals([row]) if g.startswith("(a)")]
    assert "best 80.0%" in line  # judged on counted FLOPs, the executed figure beside
    assert ("30% fewer" in line and "56.0% of peak" in line) is runs_winograd
    assert ("(Winograd F(4x4, 3x3) on its" in line) is runs_winograd
    table = speed.markdown([row], [], toy=False)
    assert "| executed GFLOPs/image | % peak paired, executed |" in table
    assert ("| 1.4 | 56.0 |" if runs_winograd else "| 2 | 80.0 |") in table
    assert ("winograd_output_size: 1/4 for F(4x4, 3x3);" in table) is runs_winograd


def _fake_row(model, images_per_second, train_s, output_stride, **extra):
    """A measured row as a child reports it (default variant unless `extra` says otherwise)."""
    batch = 1
    return {
        "backend": "tensorflow", "model": model, "variant": "default", "batch": batch,
        "input_size": [64, 64], "output_stride": output_stride, "peak_dtype": "float32",
        "matmul_peak_gflops": 100.0, "peak_rss_mb": 1.0,
        "infer": {"images_per_second": images_per_second, "median_s": batch / images_per_second},
        "train": {"images_per_second": batch / train_s, "median_s": train_s},
    } | extra


def _bfloat16_row(model, images_per_second, train_s, output_stride, **extra):
    """A mixed_bfloat16 row: its bfloat16 matmul peak (400) differs from float32's (100)."""
    return _fake_row(
        model, images_per_second, train_s, output_stride, variant="mixed_bfloat16",
        peak_dtype="bfloat16", matmul_bfloat16_peak_gflops=400.0, **extra,
    )


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


def test_train_over_infer_per_flop_divides_out_the_training_only_forward_work():
    # Training forward 2.5 GFLOPs against 2 for inference; step 4.5x one inference.
    rows = [
        _fake_row(speed.SANET_OS8, 10.0, 0.45, 8, flops_per_image=2e9,
                  train_flops_per_image=2.5e9),
    ]
    speed.derive(rows, [])
    (row,) = rows
    assert row["train_over_infer"] == pytest.approx(4.5)
    assert row["train_forward_flops_ratio"] == pytest.approx(1.25)
    assert row["train_over_infer_per_flop"] == pytest.approx(3.6)
    (line,) = [goal for goal in speed.goals(rows) if goal.startswith("(c)")]
    # Judged on the plain ratio; the per-FLOP figure is context.
    assert "**not met**" in line and "1.25x" in line and "3.60x" in line
    assert "| 4.50 | 3.60 |" in speed.markdown(rows, [], toy=False)


@pytest.mark.parametrize(
    "argv, variants",
    [
        ([], ["default"]),  # unchanged behaviour without the flag
        (["--variants", "mixed_bfloat16"], ["mixed_bfloat16"]),
        (["--variants", "default, jit_compile,mixed_bfloat16"],
         ["default", "jit_compile", "mixed_bfloat16"]),
    ],
)
def test_variants_flag_parses_a_comma_separated_list(argv, variants):
    assert speed.parse_args(["--toy", *argv]).variants == variants


@pytest.mark.parametrize("text", ["fast", "default,float16", ","])
def test_an_unknown_variant_is_refused_naming_the_valid_ones(text, capsys):
    with pytest.raises(SystemExit) as error:
        speed.parse_args(["--variants", text])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert "--variants" in message
    assert "choose from default, jit_compile, mixed_bfloat16, cpu_malloc" in message


@pytest.mark.parametrize(
    "variant, backend, reason_names",
    [
        ("jit_compile", "jax", "always jit-compiles"),
        ("jit_compile", "torch", "torch.compile"),
        ("jit_compile", "tensorflow", None),
        ("mixed_bfloat16", "jax", None),
        ("mixed_bfloat16", "torch", None),
        ("default", "jax", None),
        ("cpu_malloc", "torch", None if speed.cpu_malloc.uses_glibc() else "glibc"),
    ],
)
def test_variant_skip_reasons(variant, backend, reason_names):
    reason = speed.variant_skip_reason(variant, backend)
    if reason_names is None:
        assert reason is None
    else:
        assert reason_names in reason


@pytest.mark.parametrize("variant, tunables", [("default", False), ("cpu_malloc", True)])
def test_a_variants_children_start_with_its_malloc_tunables(variant, tunables):
    job = {"variant": variant, "model": speed.SANET_OS8}
    env = speed.child_environment(job, "jax", environ={"PATH": "/usr/bin"})
    assert env["KERAS_BACKEND"] == "jax"
    assert env["PATH"] == "/usr/bin"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == speed.REPO_ROOT
    assert ("GLIBC_TUNABLES" in env) is tunables
    if tunables:
        assert env["GLIBC_TUNABLES"] == speed.cpu_malloc.tunables_value()
    # A pipeline job has no variant: the environment as it is.
    assert "GLIBC_TUNABLES" not in speed.child_environment({"kind": "pipeline"}, "tensorflow",
                                                           environ={})


def test_plan_runs_every_variant_in_its_own_jobs_and_keeps_the_skipped_ones():
    models = [speed.SANET_AT_PEER_OS, speed.PEER]
    args = speed.parse_args([
        "--toy", "--backends", "jax,tensorflow", "--variants", "jit_compile,mixed_bfloat16",
        "--models", ",".join(models), "--batch-sizes", "1,2",
    ])
    jobs = speed.plan_jobs(args)
    assert [(j["backend"], j["variant"], j["model"], j["batch"]) for j in jobs] == [
        (backend_name, variant, model, batch)
        for backend_name in ("jax", "tensorflow")
        for variant in ("jit_compile", "mixed_bfloat16")
        for model in models
        for batch in (1, 2)
    ]
    for job in jobs:
        expected = speed.variant_skip_reason(job["variant"], job["backend"])
        assert job.get("skipped") == expected
    # FLOPs once per model, in a job that runs, under TensorFlow.
    counted = [(j["backend"], j["model"]) for j in jobs if j["count_flops"]]
    assert counted == [("tensorflow", model) for model in models]
    assert not any(j["count_flops"] and "skipped" in j for j in jobs)


def test_a_skipped_variant_is_a_row_with_its_reason_in_the_table_and_json(tmp_path, capsys):
    # Every job skipped: no child process runs, so this is quick on any backend.
    path = tmp_path / "speed.json"
    assert speed.main([
        "--toy", "--backends", "jax", "--variants", "jit_compile",
        "--models", speed.SANET_AT_PEER_OS, "--json", str(path),
    ]) == 0
    reason = speed.variant_skip_reason("jit_compile", "jax")
    table = capsys.readouterr().out
    assert f"| jit_compile | — |  | 1 |  | skipped: {reason} |" in table

    report = json.loads(path.read_text())
    (row,) = report["rows"]
    assert (row["backend"], row["variant"], row["skipped"]) == ("jax", "jit_compile", reason)
    assert report["variants"]["jit_compile"]["jit_compile"] is True


@pytest.mark.parametrize("field, value", [
    ("variant", "mixed_bfloat16"), ("backend", "jax"), ("batch", 8), ("input_size", [96, 96]),
])
def test_a_peer_differing_in_variant_backend_batch_or_input_is_not_paired(field, value):
    sanet = _fake_row(speed.SANET_AT_PEER_OS, 12.0, 1.0, 32)
    peer = _fake_row(speed.PEER, 10.0, 1.0, 32, **{field: value})
    speed.derive([sanet, peer], [])
    assert "vs_peer" not in sanet


def test_ratios_and_peak_fractions_pair_rows_of_their_own_variant():
    rows = [
        _fake_row(speed.SANET_AT_PEER_OS, 12.0, 1.0, 32, flops_per_image=2e9),
        _fake_row(speed.PEER, 10.0, 1.0, 32),
        _bfloat16_row(speed.SANET_AT_PEER_OS, 40.0, 0.1, 32),
        _bfloat16_row(speed.PEER, 20.0, 1.0, 32),
    ]
    speed.derive(rows, [])
    default, _, bfloat16, _ = rows
    assert default["vs_peer"] == pytest.approx(1.2)
    assert bfloat16["vs_peer"] == pytest.approx(2.0)
    assert bfloat16["train_over_infer"] == pytest.approx(4.0)
    # FLOPs are the model's, whatever the variant; each row is scored in its compute dtype.
    assert bfloat16["flops_per_image"] == 2e9
    assert default["fraction_of_matmul_peak"] == pytest.approx(24.0 / 100.0)
    assert bfloat16["scored_peak_gflops"] == 400.0
    assert bfloat16["fraction_of_matmul_peak"] == pytest.approx(80.0 / 400.0)
    assert bfloat16["matmul_peak_gflops"] == 100.0  # the float32 peak stays recorded


@pytest.mark.parametrize("with_training", [True, False])
def test_inference_and_training_are_timed_in_turn_with_a_peak_beside_each_inference(
    with_training
):
    events = []
    peaks = iter([100.0, 300.0, 200.0, 150.0, 120.0, 110.0])

    def peak():
        events.append("peak")
        return next(peaks)

    infer, trained, beside = speed._time_in_turn(
        lambda: events.append("infer"), (lambda: events.append("train")) if with_training
        else None, repeats=3, warmup=1, peak=peak)
    turn = ["peak", "infer", "peak"] + (["train"] if with_training else [])
    warmups = ["infer"] + (["train"] if with_training else [])
    assert events == warmups + turn * 3
    assert len(infer[1]) == 3 and infer[0] >= 0
    assert (trained is not None and len(trained[1]) == 3) == with_training
    # Minor page faults of each timed call beside its seconds.
    for timing in (infer, trained) if with_training else (infer,):
        assert len(timing[2]) == 3 and all(f >= 0 for f in timing[2])
    # Each inference against the better of the matmuls right before and right after it.
    assert beside == [300.0, 200.0, 120.0]


@pytest.mark.skipif(sys.platform == "win32", reason="page faults are read from getrusage")
def test_timed_calls_count_the_page_faults_of_fresh_memory():
    kept = []

    def touch_fresh_memory():
        # 32 MB mapped afresh and kept (malloc could hand back pages it already
        # has): every page written faults in.
        memory = mmap.mmap(-1, 32 * 1024 * 1024)
        for offset in range(0, len(memory), 4096):
            memory[offset] = 1
        kept.append(memory)

    _, seconds, faults = speed._time_calls(touch_fresh_memory, repeats=2, warmup=0)
    assert len(seconds) == len(faults) == 2
    # At least one fault per 2 MiB huge page of the 32 MB (16384 in 4 KiB pages).
    assert min(faults) >= 16


def test_train_over_infer_is_the_median_ratio_of_calls_timed_in_turn():
    row = _fake_row(speed.SANET_OS8, 1.0, 3.0, 8)
    row["infer"]["seconds"] = [1.0, 2.0, 1.0]
    row["train"]["seconds"] = [3.0, 4.0, 3.5]  # ratios 3, 2, 3.5
    speed.derive([row], [])
    assert row["train_over_infer"] == pytest.approx(3.0)


def test_paired_peak_fraction_scores_each_call_against_the_peak_beside_it():
    # 2 GFLOPs per image; calls of 0.02 s and 0.04 s (100 and 50 GFLOP/s) beside
    # peaks of 125 and 62.5: 80 % each, whatever the child's best peak (100).
    row = _fake_row(speed.SANET_OS8, 40.0, 0.1, 8, flops_per_image=2e9)
    row["infer"] |= {"seconds": [0.02, 0.04, 0.04], "peak_gflops_beside": [125.0, 62.5, 62.5]}
    speed.derive([row], [])
    assert row["fraction_of_matmul_peak_paired"] == pytest.approx(0.8)
    assert row["fraction_of_matmul_peak"] == pytest.approx(0.8)  # 80 of 100 GFLOP/s
    assert speed._peak_fraction(row) == row["fraction_of_matmul_peak_paired"]
    (line,) = [g for g in speed.goals([row]) if g.startswith("(a)")]
    assert "**not met**" in line and "best 80.0%" in line and "beside" in line
    table = speed.markdown([row], [], toy=False)
    assert "| % matmul peak | % peak paired |" in table and "| 80.0 | 80.0 |" in table
    # A bfloat16 row's paired figure is of the bfloat16 peak, and says so.
    bfloat16 = _bfloat16_row(speed.SANET_OS8, 40.0, 0.1, 8, flops_per_image=2e9)
    bfloat16["infer"] |= {"seconds": [0.025], "peak_gflops_beside": [200.0]}
    speed.derive([bfloat16], [])
    assert bfloat16["fraction_of_matmul_peak_paired"] == pytest.approx(0.4)  # 80 of 200
    assert "| 20.0 (bfloat16) | 40.0 (bfloat16) |" in speed.markdown([bfloat16], [], toy=False)


@pytest.mark.parametrize("higher_is_better, best", [(True, "b"), (False, "c")])
def test_best_variant_meets_the_goal_on_most_rows_then_has_the_best_median(
    higher_is_better, best
):
    values = {"a": [1.5, 0.5], "b": [1.3, 1.4], "c": [0.9, 0.8]}
    rows = [{"variant": v, "ratio": x} for v, xs in values.items() for x in xs]
    if higher_is_better:
        passes = lambda value: value >= 1.2  # noqa: E731  (b: 2 of 2, a: 1 of 2)
    else:
        passes = lambda value: value <= 1.6  # noqa: E731  (all; c has the lowest median)
    variant, variant_rows, verdicts = speed.best_variant(rows, "ratio", passes, higher_is_better)
    assert variant == best
    assert [r["ratio"] for r in variant_rows] == values[best]
    assert verdicts == (
        {"a": "**partly met** (1 of 2)", "b": "**met**", "c": "**not met**"}
        if higher_is_better else dict.fromkeys(values, "**met**")
    )


@pytest.mark.parametrize("fast_variant", ["default", "mixed_bfloat16"])
def test_goal_verdicts_name_the_best_variant(fast_variant):
    def rows_of(variant, fast):
        make = _bfloat16_row if variant == "mixed_bfloat16" else _fake_row
        # 2 GFLOPs/image: 90 % of float32's 100 GFLOP/s at 45 images/s, of bfloat16's 400 at 180.
        os8_rate = (180.0 if variant == "mixed_bfloat16" else 45.0) if fast else 5.0
        return [
            make(speed.SANET_OS8, os8_rate, (3.0 if fast else 4.0) / os8_rate, 8,
                 flops_per_image=2e9),
            make(speed.SANET_AT_PEER_OS, 13.0 if fast else 9.0, 1.0, 32, flops_per_image=1e9),
            make(speed.PEER, 10.0, 1.0, 32, flops_per_image=1e9),
        ]

    slow_variant = "default" if fast_variant == "mixed_bfloat16" else "mixed_bfloat16"
    rows = rows_of(slow_variant, fast=False) + rows_of(fast_variant, fast=True)
    speed.derive(rows, [])
    peak, peer, train = speed.goals(rows)
    for line in (peak, peer, train):
        assert line.split(":")[1].split(";")[0].strip() == "**met**", line
    peak_dtype = "bfloat16" if fast_variant == "mixed_bfloat16" else "float32"
    assert f"(tensorflow, {fast_variant}, batch 1:" in peak
    assert f"{peak_dtype} GFLOP/s" in peak
    for line in (peer, train):
        assert f"best variant {fast_variant}:" in line
        assert f"other variants: {slow_variant} **not met**" in line


def _table_cells(line):
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_table_has_variant_and_compute_dtype_columns_on_every_row():
    rows = [
        _fake_row(speed.SANET_AT_PEER_OS, 12.0, 1.0, 32, flops_per_image=2e9,
                  compute_dtypes={"Conv2D": ["float32"]}),
        _bfloat16_row(speed.SANET_AT_PEER_OS, 40.0, 0.1, 32, flops_per_image=2e9,
                      compute_dtypes={"Conv2D": ["bfloat16"], "Dense": ["bfloat16", "float32"]}),
        {"backend": "jax", "model": speed.SANET_AT_PEER_OS, "variant": "jit_compile",
         "batch": 1, "skipped": "JAX: always jitted"},
        {"backend": "torch", "model": speed.PEER, "variant": "default", "batch": 1,
         "error": "RuntimeError: out of memory"},
    ]
    speed.derive(rows, [])
    lines = [line for line in speed.markdown(rows, [], toy=False).splitlines()
             if line.startswith("|")]
    header = _table_cells(lines[0])
    assert header == list(speed.TABLE_HEADER)
    assert header[2:4] == ["variant", "compute dtype"]
    table = [dict(zip(header, _table_cells(line))) for line in lines[2:]]
    assert all(len(_table_cells(line)) == len(header) for line in lines[2:])
    assert [(r["variant"], r["compute dtype"]) for r in table] == [
        ("default", "float32"), ("mixed_bfloat16", "bfloat16/float32"),
        ("jit_compile", "—"), ("default", "—"),
    ]
    assert table[0]["% matmul peak"] == "24.0"
    assert table[1]["% matmul peak"] == "20.0 (bfloat16)"
    assert table[0]["% peak paired"] == table[1]["% peak paired"] == "—"  # none measured
    assert table[2]["images/s"] == "skipped: JAX: always jitted"
    assert table[3]["images/s"] == "failed: RuntimeError: out of memory"


# JAX compiles every initializer and both steps of each child: minutes of CPU, the slow set.
@(pytest.mark.slow if backend() == "jax" else lambda test: test)
def test_speed_toy_run_prints_a_table_and_writes_json(tmp_path):
    # Two models keep it short: SANet at the peer's output stride and the peer (ratio (b)),
    # in the float32 default and under mixed_bfloat16.
    models = [speed.SANET_AT_PEER_OS, speed.PEER]
    variants = {"default": "float32", "mixed_bfloat16": "bfloat16"}  # -> compute dtype
    path = tmp_path / "speed.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, speed.__file__, "--toy", "--backends", backend(),
         "--models", ",".join(models), "--variants", ",".join(variants), "--json", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| backend | model | variant | compute dtype |" in proc.stdout, proc.stdout
    assert "Goals" in proc.stdout and "(bfloat16)" in proc.stdout, proc.stdout
    assert "speed: " in proc.stderr  # progress lines

    report = json.loads(path.read_text())
    rows = report["rows"]
    assert [(r["backend"], r["variant"], r["model"]) for r in rows] == [
        (backend(), variant, model) for variant in variants for model in models
    ]
    for row in rows:
        assert "error" not in row, row.get("log_tail")
        assert row["infer"]["images_per_second"] > 0
        assert row["train"]["median_s"] > 0 and row["train_over_infer"] > 0
        assert row["flops_per_image"] > 0 and row["gflops_per_second"] > 0
        assert row["train_flops_per_image"] >= row["flops_per_image"]
        assert row["train_over_infer_per_flop"] == pytest.approx(
            row["train_over_infer"] * row["flops_per_image"] / row["train_flops_per_image"])
        assert row["matmul_peak_gflops"] > 0 and row["fraction_of_matmul_peak"] > 0
        assert len(row["infer"]["peak_gflops_beside"]) == len(row["infer"]["seconds"])
        assert row["fraction_of_matmul_peak_paired"] > 0
        assert row["peak_rss_mb"] > 0
        # Winograd: float32 on a CPU (Conv2D's default; keras-hub's
        # DeepLabV3 has Keras' Conv2D), but no convolution of the toy size is
        # large enough to take it: the executed FLOPs are the counted ones.
        assert row["winograd"] is (row["variant"] == "default" and row["model"] != speed.PEER)
        assert row["executed_flops_per_image"] == row["flops_per_image"]
        # What the layers computed in, read from the built model, not the flag.
        compute_dtype = variants[row["variant"]]
        policy = "float32" if row["variant"] == "default" else "mixed_bfloat16"
        assert row["dtype_policy"] == policy
        assert "Conv2D" in row["compute_dtypes"]
        assert set().union(*row["compute_dtypes"].values()) == {compute_dtype}
        assert row["peak_dtype"] == compute_dtype
        assert row["fraction_of_matmul_peak"] == pytest.approx(
            row["gflops_per_second"] / row[f"{speed.matmul_key(compute_dtype)}_peak_gflops"])
    bfloat16_rows = [r for r in rows if r["variant"] == "mixed_bfloat16"]
    assert all(r["matmul_bfloat16_peak_gflops"] > 0 for r in bfloat16_rows)
    assert not any("matmul_bfloat16_peak_gflops" in r for r in rows if r not in bfloat16_rows)
    # FLOPs counted once per model (first variant) and shared by the other variant's row.
    assert [("count_flops_s" in r) for r in rows] == [True, True, False, False]
    assert rows[0]["flops_per_image"] == rows[2]["flops_per_image"]
    assert rows[0]["winograd_flops_per_image"] == 0
    # Each SANet row is compared with the peer of its own variant.
    for sanet, peer in (rows[0:2], rows[2:4]):
        assert sanet["output_stride"] == peer["output_stride"] == speed.PEER_OUTPUT_STRIDE
        assert sanet["vs_peer"] == pytest.approx(
            sanet["infer"]["images_per_second"] / peer["infer"]["images_per_second"])
    (pipeline,) = report["input_pipeline"]
    if os.path.isdir(CAMVID_ROOT):
        assert pipeline["images_per_second"] > 0 and rows[0]["pipeline_over_train"] > 0
    else:
        assert "skipped" in pipeline
    assert len(report["goals"]) == 3 and "best variant" in report["goals"][1]
