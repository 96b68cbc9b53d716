"""The commands' shared model loader: each command's flags, every source, metadata, errors."""

import argparse
import importlib
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from helpers import random_images
from helpers import to_numpy

from keras_sanet import SANet
from keras_sanet import cli
from keras_sanet.data import CAMVID_INFO
from keras_sanet.model_loading import class_names_and_palette
from keras_sanet.model_loading import load_model_for_command
from keras_sanet.model_loading import resolve_model_source
from keras_sanet.training.config import load_config
from keras_sanet.visualization import default_palette

CLASS_NAMES = ["sky", "road", "car"]
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
INPUT_SIZE = [32, 48]
# What each command needs besides its model flags.
REQUIRED = {
    "predict": ["x.png", "--output", "out"],
    "eval": [],
    "attention": ["x.png", "--points", "1,1", "--output", "out.png"],
    "export": ["--format", "onnx", "--output", "m.onnx"],
}


def _args(command, argv):
    parser = argparse.ArgumentParser()
    importlib.import_module(cli.COMMANDS[command][0]).add_arguments(parser)
    return parser.parse_args(REQUIRED[command] + argv)


def _toy(path, num_classes):
    """A one-conv model with `num_classes` outputs saved as .keras (no `num_classes`)."""
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(num_classes, 1)])
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny SANet as a preset, a .keras file, .weights.h5 + config, and a run folder."""
    keras.utils.set_random_seed(5)
    root = tmp_path_factory.mktemp("model_loading")
    model = SANet(backbone="resnet18", output_stride=32, num_classes=3)
    images = random_images(1, *INPUT_SIZE)
    logits = to_numpy(model(images))
    model.save_to_preset(
        str(root / "preset"),
        {"dataset": "toy", "class_names": CLASS_NAMES, "palette": PALETTE,
         "input_size": INPUT_SIZE},
    )
    model.save(str(root / "model.keras"))
    model.save_weights(str(root / "model.weights.h5"))
    (root / "train.toml").write_text(
        '[data]\ndataset = "folder"\nnum_classes = 3\ntrain_images = "images"\n'
        'train_masks = "masks"\n\n[model]\nbackbone = "resnet18"\noutput_stride = 32\n'
    )
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    with open(run / "config.json", "w") as f:
        json.dump(load_config(str(root / "train.toml")).to_dict(), f)
    shutil.copy(root / "model.weights.h5", run / "checkpoints" / "best.weights.h5")
    shutil.copy(root / "model.keras", run / "model.keras")
    return {
        "paths": {
            "preset": str(root / "preset"), "keras": str(root / "model.keras"),
            "weights": str(root / "model.weights.h5"), "config": str(root / "train.toml"),
            "run": str(run),
        },
        "images": images,
        "logits": logits,
    }


def _slow_on_jax(case):
    # JAX compiles every initialiser of a SANet it builds (about half a minute per model
    # on a 2-core CPU): there the fast run loads the preset only, as test_attention_command.
    if keras.backend.backend() == "jax":
        return pytest.param(*case, marks=pytest.mark.slow)
    return case


@pytest.mark.parametrize(
    "command,argv,metadata",
    [
        ("export", ["--preset", "{preset}"],
         {"class_names": CLASS_NAMES, "palette": PALETTE, "input_size": INPUT_SIZE}),
        _slow_on_jax(("predict", ["--model", "{keras}"], {})),
        _slow_on_jax(("attention", ["--weights", "{weights}", "--config", "{config}"], {})),
        _slow_on_jax(("eval", ["--run-dir", "{run}", "--checkpoint", "best"], {})),
    ],
)
def test_every_source_loads_the_same_model(saved, command, argv, metadata):
    args = _args(command, [arg.format(**saved["paths"]) for arg in argv])
    model, loaded = load_model_for_command(args)
    np.testing.assert_allclose(
        to_numpy(model(saved["images"])), saved["logits"], atol=1e-5
    )
    assert {key: loaded.get(key) for key in metadata} == metadata
    names, palette = class_names_and_palette(model, loaded)
    if metadata:
        assert (names, palette) == (CLASS_NAMES, PALETTE)
    else:
        assert loaded == {}
        assert names == ["class 0", "class 1", "class 2"] and palette == default_palette(3)


@pytest.mark.parametrize(
    "command,argv",
    [
        ("eval", ["--preset", "{preset}"]),  # SANet.from_preset(..., dtype=...)
        _slow_on_jax(("predict", ["--model", "{keras}"])),  # with_dtype_policy
    ],
)
def test_dtype_loads_the_model_under_the_policy(saved, command, argv):
    argv = [arg.format(**saved["paths"]) for arg in argv] + ["--dtype", "mixed_bfloat16"]
    model, _ = load_model_for_command(_args(command, argv))
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert {str(w.dtype) for w in model.weights} == {"float32"}
    logits = to_numpy(model(saved["images"]))
    assert logits.dtype == np.float32
    np.testing.assert_allclose(
        logits, saved["logits"], atol=0.05 * np.abs(saved["logits"]).max()
    )


@pytest.mark.parametrize("command", ["predict", "attention"])
def test_dataset_gives_class_names_colours_and_label_map(tmp_path, command):
    flag = "--model" if command == "predict" else "--weights"
    path = _toy(tmp_path / "toy.keras", CAMVID_INFO.num_classes)
    _, metadata = load_model_for_command(_args(command, [flag, path, "--dataset", "camvid"]))
    assert metadata["dataset"] == "camvid"
    assert metadata["class_names"] == list(CAMVID_INFO.class_names)
    assert metadata["palette"] == [list(colour) for colour in CAMVID_INFO.palette]
    assert metadata["label_map"] == {11: 255} and metadata["ignore_index"] == 255
    other = _toy(tmp_path / "three.keras", 3)
    with pytest.raises(ValueError, match="predicts 3 classes but camvid has 11. Pass the --dataset"):
        load_model_for_command(_args(command, [flag, other, "--dataset", "camvid"]))


@pytest.mark.parametrize(
    "command,has,lacks",
    [
        ("predict", ["--preset", "--model", "--dataset", "--dtype"],
         ["--weights", "--config", "--run-dir"]),
        ("eval", ["--preset", "--weights", "--config", "--run-dir", "--checkpoint", "--dtype"],
         ["--model"]),
        ("attention", ["--preset", "--weights", "--model", "--config", "--dataset", "--dtype"],
         ["--run-dir"]),
        ("export", ["--preset", "--weights", "--model", "--config"],
         ["--dataset", "--run-dir", "--dtype"]),
    ],
)
def test_each_command_keeps_its_flags(command, has, lacks):
    parser = argparse.ArgumentParser()
    importlib.import_module(cli.COMMANDS[command][0]).add_arguments(parser)
    options = set(parser._option_string_actions)
    assert set(has) <= options and not set(lacks) & options


@pytest.mark.parametrize(
    "command,argv,match",
    [
        ("predict", [], "exactly one model source: --preset NAME_OR_DIR or --model FILE.keras "
         "(got none)"),
        ("attention", ["--preset", "p", "--model", "m.keras"], "(got both --preset and --weights)"),
        ("eval", ["--weights", "a.keras", "--preset", "p", "--run-dir", "r"],
         "(got --preset, --weights and --run-dir)"),
        ("predict", ["--model", "m.weights.h5"], "must be a .keras file (model.save)"),
        ("export", ["--weights", "m.h5"], "must be a .keras model file or a .weights.h5 weights"),
        ("attention", ["--weights", "m.weights.h5"], "holds weights only; add --config"),
        ("eval", ["--weights", "m.weights.h5"], "holds weights only; add --config"),
        ("predict", ["--preset", "p", "--dataset", "camvid"], "--dataset goes with --model"),
        ("attention", ["--preset", "p", "--config", "c.toml"], "--dataset and --config go with"),
        ("export", ["--preset", "p", "--config", "c.toml"], "--config goes with --weights"),
        ("eval", ["--weights", "a.keras", "--checkpoint", "best"], "add --run-dir RUN"),
        ("eval", ["--run-dir", "{tmp}/missing"], "does not exist; check the path"),
        ("eval", ["--run-dir", "{tmp}"], "is it a keras-sanet training folder?"),
        ("predict", ["--model", "{tmp}/missing.keras"], "does not exist; check the path"),
        ("attention", ["--weights", "{tmp}/missing.weights.h5", "--config", "{config}"],
         "The weights file"),
        # --dtype is checked first: the message names the flag, the value and the choices.
        ("predict", ["--preset", "p", "--dtype", "float8"],
         "--dtype 'float8' is not a floating-point Keras dtype policy; use one of float32, "
         "mixed_bfloat16, mixed_float16, bfloat16, float16"),
        ("eval", ["--run-dir", "{tmp}/missing", "--dtype", "mixed_bf16"],
         "--dtype 'mixed_bf16' is not a floating-point Keras dtype policy; use one of"),
        ("attention", ["--preset", "p", "--dtype", "int32"],
         "--dtype 'int32' is not a floating-point Keras dtype policy; use one of"),
        ("eval", ["--preset", "p", "--dtype", "int8_from_float32"],
         "--dtype 'int8_from_float32' is not a floating-point Keras dtype policy"),
        ("predict", ["--preset", "p", "--dtype", ""],
         "--dtype '' is not a floating-point Keras dtype policy"),
    ],
)
def test_errors_name_the_problem_and_the_fix(saved, tmp_path, command, argv, match):
    argv = [arg.format(tmp=tmp_path, **saved["paths"]) for arg in argv]
    with pytest.raises(ValueError, match=re.escape(match)):
        load_model_for_command(_args(command, argv))


def test_eval_takes_a_config_with_a_preset_and_resolves_a_run_folder(saved):
    source = resolve_model_source(_args("eval", ["--preset", "p", "--config", "c.toml"]))
    assert (source.preset, source.path, source.config_path) == ("p", None, "c.toml")
    run = saved["paths"]["run"]
    source = resolve_model_source(_args("eval", ["--run-dir", run, "--checkpoint", "best"]))
    assert source.path == os.path.join(run, "checkpoints", "best.weights.h5")
    assert source.config_path == os.path.join(run, "config.json")
    assert source.from_weights_file and source.config.data.num_classes == 3
    source = resolve_model_source(_args("eval", ["--run-dir", run]))
    assert source.path == os.path.join(run, "model.keras") and not source.from_weights_file
