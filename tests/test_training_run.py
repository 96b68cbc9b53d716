"""`keras-sanet train` end to end on a fake folder dataset: artefacts, resume, distribution.

Every run here is a SANet(resnet18, output stride 32) on 32x32 crops of six
40x48 fake pairs, batch 2, a few steps per epoch.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest

from keras_sanet import cli
from keras_sanet.training.config import load_config
from keras_sanet.training.epoch_log import read_log
from keras_sanet.training.precise_batch_norm import batch_norm_layers
from keras_sanet.training.precise_batch_norm import recalibrate_batch_norm
from keras_sanet.training.trainer import build_precise_bn_images
from keras_sanet.training.trainer import pad_batch_for_replicas
from keras_sanet.training.trainer import train
from tests.helpers import REPO_ROOT
from tests.helpers import backend
from tests.helpers import run_python
from tests.helpers import to_numpy
from tests.test_data_fakes import encoded_image
from tests.test_data_fakes import random_mask
from tests.test_data_fakes import write_png

STEPS = 2
LEARNING_RATE = 0.001


def write_dataset(root, train_pairs=6, val_pairs=2):
    for split, count in (("train", train_pairs), ("val", val_pairs)):
        for index in range(count):
            mask = random_mask(3, seed=10 * index + (split == "val"), height=40, width=48)
            write_png(os.path.join(root, split, "images", f"{index:02d}.png"), encoded_image(mask))
            write_png(os.path.join(root, split, "masks", f"{index:02d}.png"), mask)


def write_config(
    path, data_root, output_dir, epochs=2, steps=STEPS, crop_size=(32, 32), extra_data="",
    extra_model="",
):
    text = f"""
    [data]
    dataset = "folder"
    train_images = "{data_root}/train/images"
    train_masks = "{data_root}/train/masks"
    val_images = "{data_root}/val/images"
    val_masks = "{data_root}/val/masks"
    num_classes = 3
    crop_size = [{crop_size[0]}, {crop_size[1]}]
    {extra_data}

    [model]
    backbone = "resnet18"
    output_stride = 32
    {extra_model}

    [train]
    batch_size = 2
    epochs = {epochs}
    steps_per_epoch = {steps}
    learning_rate = {LEARNING_RATE}
    output_dir = "{output_dir}"
    """
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return str(path)


def h5_arrays(path):
    """Every array of a `.weights.h5` file (model and optimizer state) by its path."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: arrays.__setitem__(name, item[()])
            if isinstance(item, h5py.Dataset)
            else None
        )
    return arrays


def assert_same_state(path_a, path_b, rtol=1e-4, atol=1e-5):
    a, b = h5_arrays(path_a), h5_arrays(path_b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def expected_learning_rate(iterations, total_steps):
    return LEARNING_RATE * (1 - min(iterations, total_steps) / total_steps) ** 0.9


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fake_folder_data"))
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def reference_run(data_root, tmp_path_factory):
    """The uninterrupted run: the `train` command, in process, 2 epochs of 2 steps."""
    root = tmp_path_factory.mktemp("reference_run")
    out = str(root / "out")
    config = write_config(root / "run.toml", data_root, "unused")
    code = cli.main(["train", config, "--output-dir", out, "--verbose", "0"])
    assert code == 0
    return config, out


def test_train_command_writes_every_artefact(reference_run):
    config_path, out = reference_run
    for name in (
        "config.json",
        "log.csv",
        "history.json",
        "model.keras",
        "checkpoints/last.weights.h5",
        "checkpoints/best.weights.h5",
        "backup/latest.weights.h5",
        "backup/training_metadata.json",
    ):
        assert os.path.isfile(os.path.join(out, name)), name

    rows = read_log(os.path.join(out, "log.csv"))
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["iterations"] for row in rows] == [STEPS, 2 * STEPS]
    for row in rows:
        for metric in ("loss", "mean_iou", "pixel_accuracy", "val_loss", "val_mean_iou"):
            assert np.isfinite(row[metric]), (row["epoch"], metric)
        # Poly decay over epochs x steps: the rate of the next step.
        np.testing.assert_allclose(
            row["learning_rate"], expected_learning_rate(row["iterations"], 2 * STEPS), atol=1e-9
        )

    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert history["history"]["loss"] == [row["loss"] for row in rows]
    assert history["logged_epochs"] == [0, 1]
    assert (history["epochs"], history["steps_per_epoch"]) == (2, STEPS)
    assert history["iterations"] == 2 * STEPS
    assert history["replicas"] == 1
    assert history["resumed_from_epoch"] == 0
    assert history["class_names"] == ["class_0", "class_1", "class_2"]

    with open(os.path.join(out, "config.json")) as f:
        saved_config = json.load(f)
    expected = load_config(config_path, [f'train.output_dir="{out}"']).to_dict()
    assert saved_config == expected

    model = keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2 * STEPS
    assert model.optimizer.lr_multipliers == {"sanet_heads": 10.0}
    images = np.random.default_rng(0).uniform(0, 255, (1, 40, 48, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(model.predict(images, verbose=0))
    assert logits.shape == (1, 40, 48, 3)
    assert np.isfinite(logits).all()


def test_finished_run_started_again_does_nothing(reference_run, capsys):
    config_path, out = reference_run
    names = ("log.csv", "history.json", "model.keras", "checkpoints/last.weights.h5")
    before = {}
    for name in names:
        with open(os.path.join(out, name), "rb") as f:
            before[name] = (f.read(), os.path.getmtime(os.path.join(out, name)))
    capsys.readouterr()
    assert cli.main(["train", config_path, "--output-dir", out, "--verbose", "0"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    for name in names:
        with open(os.path.join(out, name), "rb") as f:
            assert (f.read(), os.path.getmtime(os.path.join(out, name))) == before[name], name


def moving_statistics(model):
    return {
        f"{layer.path}/{name}": to_numpy(getattr(layer, name))
        for layer in batch_norm_layers(model)
        for name in ("moving_mean", "moving_variance")
    }


def assert_statistics_are_precise(out, config):
    """The saved model's batch-norm statistics are those of a recalibration on its images."""
    model = keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    saved = moving_statistics(model)
    recalibrate_batch_norm(model, build_precise_bn_images(config), verbose=0)
    for name, value in moving_statistics(model).items():
        np.testing.assert_allclose(saved[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_precise_bn_recalibrates_before_each_validation_and_saves_it(data_root, tmp_path):
    out = str(tmp_path / "out")
    path = write_config(tmp_path / "run.toml", data_root, out, epochs=1, steps=1)
    config = load_config(path, ["train.precise_bn_images=4", "train.precise_bn_batch_size=2"])

    train(config, verbose=0)

    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    # One before the validation; none at the end (no training step since).
    assert history["precise_bn"] == {"images": 4, "batch_size": 2, "recalibrations": 1}
    assert_statistics_are_precise(out, config)


def test_finished_run_without_precise_bn_gets_it_when_started_again(reference_run, tmp_path, capsys):
    reference_config, reference_out = reference_run
    out = str(tmp_path / "out")
    shutil.copytree(reference_out, out)
    before = moving_statistics(
        keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    )
    overrides = [f'train.output_dir="{out}"', "train.precise_bn_images=4"]
    config = load_config(reference_config, overrides)

    train(config, verbose=0)

    with open(os.path.join(out, "history.json")) as f:
        precise = json.load(f)["precise_bn"]
    assert (precise["images"], precise["after_training"]) == (4, True)
    assert 0 <= precise["validation"]["mean_iou"] <= 1
    assert_statistics_are_precise(out, config)
    after = moving_statistics(
        keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    )
    assert any(not np.allclose(before[name], after[name]) for name in before)
    capsys.readouterr()
    train(config, verbose=0)
    assert "nothing to do" in capsys.readouterr().out


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Stands in for a kill: raises out of `fit` after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupted()


def test_interrupted_run_resumes_to_the_uninterrupted_result(reference_run, tmp_path):
    """Interrupted mid-epoch 1 and started again: the same state as the reference run."""
    reference_config, reference_out = reference_run
    out = str(tmp_path / "out")
    config = load_config(reference_config, [f'train.output_dir="{out}"'])

    with pytest.raises(Interrupted):
        train(config, verbose=0, callbacks=[InterruptAt(epoch=1, batch=0)])
    assert [row["epoch"] for row in read_log(os.path.join(out, "log.csv"))] == [0]
    assert not os.path.exists(os.path.join(out, "model.keras"))
    at_interruption = str(tmp_path / "backup_at_interruption.weights.h5")
    shutil.copy(os.path.join(out, "backup", "latest.weights.h5"), at_interruption)

    train(config, verbose=0)

    rows = read_log(os.path.join(out, "log.csv"))
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["iterations"] for row in rows] == [STEPS, 2 * STEPS]
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert history["resumed_from_epoch"] == 1
    assert history["iterations"] == 2 * STEPS
    assert len(history["history"]["loss"]) == 2

    final = os.path.join(out, "checkpoints", "last.weights.h5")
    changed = [
        name
        for name, value in h5_arrays(final).items()
        if not np.allclose(value, h5_arrays(at_interruption)[name])
    ]
    assert changed, "training did not continue after the interruption"

    # Same data order, dropout masks, schedule and optimizer state as without the interruption.
    reference_rows = read_log(os.path.join(reference_out, "log.csv"))
    for row, reference in zip(rows, reference_rows):
        np.testing.assert_allclose(row["loss"], reference["loss"], rtol=1e-4)
    assert_same_state(final, os.path.join(reference_out, "checkpoints", "last.weights.h5"))


@pytest.mark.parametrize("kind, needs", [("mirrored", "tensorflow"), ("data_parallel", "jax")])
def test_distribution_on_another_backend_is_a_clear_error(kind, needs, data_root, tmp_path, capsys):
    if backend() == needs:
        pytest.skip(f"distribution={kind!r} is valid under {needs}")
    out = str(tmp_path / "out")
    config_path = write_config(tmp_path / "run.toml", data_root, out)
    with pytest.raises(ValueError, match=f"needs KERAS_BACKEND={needs}"):
        train(load_config(config_path, [f'train.distribution="{kind}"']))
    capsys.readouterr()
    assert cli.main(["train", config_path, "--distribution", kind]) == 2
    assert f"needs KERAS_BACKEND={needs}" in capsys.readouterr().err
    assert not os.path.exists(out)  # refused before writing anything


@pytest.mark.parametrize("batch, replicas, padded", [(1, 2, 2), (3, 2, 4), (4, 2, 4), (5, 4, 8)])
def test_validation_batches_are_padded_with_ignored_pixels(batch, replicas, padded):
    images = np.random.default_rng(0).uniform(0, 255, (batch, 5, 6, 3)).astype("float32")
    masks = np.random.default_rng(1).integers(0, 3, (batch, 5, 6)).astype("uint8")
    got_images, got_masks = (
        np.asarray(t) for t in pad_batch_for_replicas(images, masks, replicas)
    )
    assert got_images.shape == (padded, 5, 6, 3) and got_masks.shape == (padded, 5, 6)
    assert got_masks.dtype == np.uint8
    np.testing.assert_array_equal(got_images[:batch], images)
    np.testing.assert_array_equal(got_masks[:batch], masks)
    assert (got_images[batch:] == 0).all() and (got_masks[batch:] == 255).all()


# The distributed runs happen in subprocesses (devices are set before the
# backend starts); each runs in the session of its own backend only, to save time.
DISTRIBUTED_RUN = """
import json, os
{setup}
import keras
import numpy as np
from keras_sanet.training.config import load_config
from keras_sanet.training.precise_batch_norm import batch_norm_layers
from keras_sanet.training.precise_batch_norm import recalibrate_batch_norm
from keras_sanet.training.trainer import build_precise_bn_images
from keras_sanet.training.trainer import pad_batch_for_replicas
from keras_sanet.training.trainer import train

def batch_norms(model):
    return [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]

def flat_weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()]).astype("float64")

class Probe(keras.callbacks.Callback):
    synchronized = None
    def on_train_begin(self, logs=None):
        self.initial = flat_weights(self.model)
    def on_train_batch_end(self, batch, logs=None):
        self.synchronized = [l.synchronized for l in batch_norms(self.model)]

result, updates = {{}}, {{}}
for kind in ("none", "{kind}"):
    out = os.path.join({root!r}, kind)
    probe = Probe()
    overrides = [f'train.distribution="{{kind}}"', f'train.output_dir="{{out}}"']
    config = load_config({config!r}, overrides)
    model = train(config, verbose=0, callbacks=[probe])
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    updates[kind] = flat_weights(model) - probe.initial
    result[kind] = {{
        "replicas": history["replicas"],
        "iterations": history["iterations"],
        "loss": history["history"]["loss"],
        "synchronized_during_fit": probe.synchronized,
        "synchronized_after_fit": [l.synchronized for l in batch_norms(model)],
        "initial_weights_sum": float(probe.initial.sum()),
    }}
single, distributed = updates["none"], updates["{kind}"]
result["update_norm_ratio"] = float(np.linalg.norm(distributed) / np.linalg.norm(single))
result["update_cosine"] = float(
    distributed @ single / (np.linalg.norm(distributed) * np.linalg.norm(single))
)
print("RESULT " + json.dumps(result))
"""


def _distributed_run(kind, keras_backend, setup, tmp_path, env=None):
    # One step on the same two whole images whatever the shuffle and crop
    # draws, without flip or dropout: one device and two replicas must make
    # the same update (up to rounding).
    data_root = str(tmp_path / "data")
    # Three val images: the last batch (one image) is padded to two.
    write_dataset(data_root, train_pairs=2, val_pairs=3)
    config_path = write_config(
        tmp_path / "run.toml", data_root, "unused", epochs=1, steps=1, crop_size=(40, 48),
        extra_data="scale_range = [1.0, 1.0]\nflip = false",
        extra_model="head_kwargs = {aux_dropout = 0.0}",
    )
    code = DISTRIBUTED_RUN.format(setup=setup, kind=kind, root=str(tmp_path), config=config_path)
    return run_python(code, keras_backend, env=env)


def _check_distributed(result, kind, tmp_path, expect_sync_bn):
    single, distributed = result["none"], result[kind]
    assert single["replicas"] == 1
    assert distributed["replicas"] == 2
    assert distributed["iterations"] == 1
    assert distributed["initial_weights_sum"] == single["initial_weights_sum"]
    # The loss is the mean over the global batch (not a sum over replicas), and
    # the update is the one-device update (replica gradients are not summed).
    # Random-init activations are large, so rounding differs by ~1e-3.
    np.testing.assert_allclose(distributed["loss"], single["loss"], rtol=2e-2)
    assert 0.9 < result["update_norm_ratio"] < 1.1
    assert result["update_cosine"] > 0.99
    assert distributed["synchronized_during_fit"]
    assert all(distributed["synchronized_during_fit"]) is expect_sync_bn
    assert not any(distributed["synchronized_after_fit"])
    with zipfile.ZipFile(os.path.join(tmp_path, kind, "model.keras")) as archive:
        saved_config = archive.read("config.json").decode()
    assert '"synchronized": true' not in saved_config


@pytest.mark.skipif(backend() != "tensorflow", reason="runs in the TensorFlow session only")
def test_mirrored_training_on_two_cpu_replicas(tmp_path):
    setup = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(\n"
        "    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)"
    )
    result = _distributed_run("mirrored", "tensorflow", setup, tmp_path)
    _check_distributed(result, "mirrored", tmp_path, expect_sync_bn=True)


@pytest.mark.skipif(backend() != "jax", reason="runs in the JAX session only")
def test_data_parallel_training_on_two_cpu_devices(tmp_path):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = _distributed_run("data_parallel", "jax", "", tmp_path, env=env)
    _check_distributed(result, "data_parallel", tmp_path, expect_sync_bn=False)


def _start_training(config_path, keras_backend, log_path):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = keras_backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "keras_sanet", "train", config_path, "--verbose", "2"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _finish(process, log_path, timeout=1200):
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if code != 0:
        with open(log_path, errors="replace") as f:
            raise AssertionError(f"training exited with {code}:\n{f.read()[-4000:]}")


def test_resume_after_sigkill_matches_the_uninterrupted_run(data_root, tmp_path):
    """The real thing: SIGKILL mid-epoch 2 of 3, start the same command again."""
    epochs, steps = 3, 8
    killed_out, reference_out = str(tmp_path / "killed"), str(tmp_path / "reference")
    killed_config = write_config(tmp_path / "killed.toml", data_root, killed_out, epochs, steps)
    reference_config = write_config(
        tmp_path / "reference.toml", data_root, reference_out, epochs, steps
    )
    log_path = str(tmp_path / "training.log")
    metadata = os.path.join(killed_out, "backup", "training_metadata.json")

    process = _start_training(killed_config, backend(), log_path)
    try:
        deadline = time.monotonic() + 1200
        while process.poll() is None and time.monotonic() < deadline:
            if os.path.exists(metadata):
                with open(metadata) as f:
                    if json.load(f)["epoch"] >= 1:
                        break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
        at_kill = str(tmp_path / "backup_at_kill.weights.h5")
        shutil.copy(os.path.join(killed_out, "backup", "latest.weights.h5"), at_kill)
        time.sleep(0.3)  # into epoch 2 (8 steps)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not os.path.exists(os.path.join(killed_out, "model.keras"))
    assert len(read_log(os.path.join(killed_out, "log.csv"))) in (1, 2)

    _finish(_start_training(killed_config, backend(), log_path), log_path)
    # The uninterrupted run, in process (same seed, same numerics, no interpreter start).
    train(load_config(reference_config), verbose=0)

    rows = read_log(os.path.join(killed_out, "log.csv"))
    assert [row["epoch"] for row in rows] == list(range(epochs))
    assert [row["iterations"] for row in rows] == [steps * (e + 1) for e in range(epochs)]
    with open(os.path.join(killed_out, "history.json")) as f:
        history = json.load(f)
    assert history["iterations"] == epochs * steps
    assert history["resumed_from_epoch"] in (1, 2)
    final = os.path.join(killed_out, "checkpoints", "last.weights.h5")
    assert any(
        not np.allclose(value, h5_arrays(at_kill)[name])
        for name, value in h5_arrays(final).items()
    ), "training did not continue after the kill"
    reference_rows = read_log(os.path.join(reference_out, "log.csv"))
    for row, reference in zip(rows, reference_rows):
        np.testing.assert_allclose(row["loss"], reference["loss"], rtol=1e-4)
    assert_same_state(final, os.path.join(reference_out, "checkpoints", "last.weights.h5"))
