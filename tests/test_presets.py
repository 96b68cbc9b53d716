"""Presets: the folder format, integrity checks, num_classes changes, the registry."""

import json
import os
import pathlib
import shutil
import tarfile
import tempfile

import keras
import numpy as np
import pytest
from helpers import BACKENDS
from helpers import backend
from helpers import random_images
from helpers import run_python
from helpers import to_numpy

import keras_sanet
from keras_sanet import SANet
from keras_sanet.presets import download
from keras_sanet.presets import format_table
from keras_sanet.presets import load_preset
from keras_sanet.presets import save_preset
from keras_sanet.presets import sha256_file
from keras_sanet.presets import verify_preset
from keras_sanet.presets.preset_format import classifier_layers
from keras_sanet.presets.weights_storage import INT8_SCALE_ATTR
from keras_sanet.presets.weights_storage import dequantize_int8
from keras_sanet.presets.weights_storage import int8_channel_axis
from keras_sanet.presets.weights_storage import quantize_int8

PRESET_NAME = "sanet_tiny_toy"
CLASS_NAMES = ["sky", "road", "car"]
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
EVALUATION = {
    "mean_iou": 0.4321,
    "pixel_accuracy": 0.8765,
    "per_class_iou": [0.5, 0.4, 0.3963],
    "dataset": "toy",
    "split": "val",
    "num_images": 2,
}
METADATA = {
    "dataset": "toy",
    "class_names": CLASS_NAMES,
    "palette": PALETTE,
    "label_map": {"9": 255},
    "input_size": (32, 48),
    "training_command": "keras-sanet train configs/toy.toml",
    "evaluation": EVALUATION,
    "data_license": "toy data: public domain",
    "description": "a tiny test preset",
}


def tiny_sanet(num_classes=3):
    return SANet(backbone="resnet18", output_stride=32, num_classes=num_classes)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny SANet saved as `weights/<PRESET_NAME>`, its predictions, its weights."""
    keras.utils.set_random_seed(1)
    root = tmp_path_factory.mktemp("weights")
    model = tiny_sanet()
    images = random_images(2, 32, 48, seed=3)
    expected = to_numpy(model(images))
    folder = root / PRESET_NAME
    metadata = model.save_to_preset(str(folder), METADATA)
    weights = {v.path: to_numpy(v) for v in model.weights}
    return {
        "root": root,
        "folder": folder,
        "images": images,
        "expected": expected,
        "metadata": metadata,
        "weights": weights,
        "parameters": model.count_params(),
    }


def copy_preset(saved, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved["folder"], target)
    return target


# -- the format ------------------------------------------------------------------


def test_saved_folder_has_keras_hub_layout_and_complete_metadata(saved):
    folder = saved["folder"]
    assert sorted(os.listdir(folder)) == ["config.json", "metadata.json", "model.weights.h5"]
    config = json.loads((folder / "config.json").read_text())
    assert config["class_name"] == "SANet"
    assert config["registered_name"] == "keras_sanet>SANet"
    assert config["module"] == "keras_sanet.models.sanet"
    assert "build_config" not in config and "compile_config" not in config
    assert config["config"]["num_classes"] == 3 and config["config"]["backbone"] == "resnet18"

    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata == saved["metadata"]
    for name in ("config.json", "model.weights.h5"):
        assert metadata["files"][name] == {
            "sha256": sha256_file(folder / name),
            "size": os.path.getsize(folder / name),
        }
    assert set(metadata["files"]) == {"config.json", "model.weights.h5"}
    assert metadata["class_names"] == CLASS_NAMES and metadata["palette"] == PALETTE
    assert metadata["input_size"] == [32, 48]
    assert metadata["evaluation"] == EVALUATION
    assert metadata["label_map"] == {"9": 255} and metadata["ignore_index"] == 255
    assert metadata["training_command"] == "keras-sanet train configs/toy.toml"
    assert metadata["data_license"] == "toy data: public domain"
    assert metadata["parameter_count"] == saved["parameters"] > 10**6
    assert metadata["backbone"] == "resnet18" and metadata["num_classes"] == 3
    assert metadata["keras_sanet_version"] == keras_sanet.__version__
    assert metadata["saved_with_backend"] == backend()
    assert "0..255" in metadata["input_format"] and metadata["normalization"]
    assert metadata["name"] == PRESET_NAME and metadata["format_version"] == 1


def test_dataset_info_or_registered_name_fills_names_palette_and_label_map(tmp_path):
    from keras_sanet.data.dataset_info import CAMVID_INFO

    model = tiny_sanet(num_classes=11)
    for index, dataset in enumerate((CAMVID_INFO, "CamVid")):
        metadata = save_preset(model, str(tmp_path / f"p{index}"), {"dataset": dataset})
        assert metadata["dataset"] == "camvid"
        assert metadata["class_names"] == list(CAMVID_INFO.class_names)
        assert metadata["palette"] == [list(c) for c in CAMVID_INFO.palette]
        assert metadata["label_map"] == {"11": 255}
    # A registered name on a model with other classes is kept as a name only.
    metadata = save_preset(tiny_sanet(num_classes=3), str(tmp_path / "p3"), {"dataset": "camvid"})
    assert metadata["dataset"] == "camvid" and metadata["class_names"][0] == "class 0"


@pytest.mark.parametrize(
    "metadata,match",
    [
        ({"class_names": ["a", "b"]}, "has 2 names but the model predicts 3"),
        ({"palette": [[0, 0, 0]]}, "palette colours"),
        ({"input_size": (32,)}, "input_size"),
        ({"evaluation": {"mean_iou": 43.2, "pixel_accuracy": 0.9}}, "fraction in 0..1"),
        ({"evaluation": "missing.json"}, "does not exist"),
        ({"extra": object()}, "JSON values only"),
    ],
)
def test_save_preset_rejects_bad_metadata(tmp_path, metadata, match):
    model = tiny_sanet()
    with pytest.raises(ValueError, match=match):
        save_preset(model, str(tmp_path / "p"), metadata)
    assert not (tmp_path / "p" / "model.weights.h5").exists()


def test_save_preset_refuses_to_overwrite_and_reads_eval_json(saved, tmp_path):
    model = tiny_sanet()
    with pytest.raises(ValueError, match="already holds a preset.*overwrite=True"):
        save_preset(model, str(saved["folder"]), METADATA)
    eval_path = tmp_path / "model.eval-toy-val.json"
    eval_path.write_text(json.dumps(EVALUATION))
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "README.md").write_text("model card\n")
    metadata = save_preset(model, str(folder), {"evaluation": str(eval_path)})
    assert metadata["evaluation"] == EVALUATION
    # Files already in the folder are part of the preset and get hashed too.
    assert metadata["files"]["README.md"]["sha256"] == sha256_file(folder / "README.md")
    assert metadata["class_names"] == ["class 0", "class 1", "class 2"]
    save_preset(model, str(folder), {}, overwrite=True)


# -- loading ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["folder", "file_url"])
def test_from_preset_round_trip_predicts_like_the_original(saved, form):
    handle = str(saved["folder"]) if form == "folder" else saved["folder"].as_uri()
    num_classes = None if form == "folder" else 3  # the preset's own count loads everything
    model = SANet.from_preset(handle, num_classes=num_classes)
    assert isinstance(model, SANet) and model.num_classes == 3
    np.testing.assert_allclose(to_numpy(model(saved["images"])), saved["expected"], atol=1e-6)


def test_float16_storage_halves_the_file_and_loads_the_rounded_weights(saved, tmp_path):
    import h5py

    model = SANet.from_preset(str(saved["folder"]))
    folder = tmp_path / "half"
    metadata = model.save_to_preset(str(folder), METADATA, weights_dtype="float16")
    assert metadata["weights_dtype"] == "float16"
    assert saved["metadata"]["weights_dtype"] == "float32"
    half_size = (folder / "model.weights.h5").stat().st_size
    full_size = (saved["folder"] / "model.weights.h5").stat().st_size
    assert half_size < 0.6 * full_size
    with h5py.File(folder / "model.weights.h5", "r") as f:
        dtypes = set()
        f.visititems(lambda _, obj: dtypes.add(str(obj.dtype)) if hasattr(obj, "dtype") else None)
    assert dtypes == {"float16"}

    loaded = SANet.from_preset(str(folder))
    for variable in loaded.weights:
        assert variable.dtype == "float32"
        expected = saved["weights"][variable.path].astype("float16").astype("float32")
        np.testing.assert_array_equal(to_numpy(variable), expected, err_msg=variable.path)
    np.testing.assert_allclose(
        to_numpy(loaded(saved["images"])), saved["expected"], atol=2e-2, rtol=2e-2
    )


@pytest.fixture(scope="module")
def sharded(saved, tmp_path_factory):
    """The tiny preset saved again in float16 shards of at most 10.7 MB (float32 size)."""
    folder = tmp_path_factory.mktemp("sharded") / "preset"
    model = SANet.from_preset(str(saved["folder"]))
    metadata = model.save_to_preset(
        str(folder), METADATA, weights_dtype="float16", max_shard_size=0.01
    )
    return folder, metadata


def test_sharded_float16_preset_lists_every_shard_and_loads(saved, sharded):
    folder, metadata = sharded
    shards = sorted(name for name in os.listdir(folder) if name.startswith("model_"))
    assert len(shards) > 1
    assert sorted(os.listdir(folder)) == sorted(
        ["config.json", "metadata.json", "model.weights.json", *shards]
    )
    assert sorted(metadata["files"]) == sorted(["config.json", "model.weights.json", *shards])
    index = json.loads((folder / "model.weights.json").read_text())
    assert index["metadata"]["total_size"] == sum((folder / s).stat().st_size for s in shards)

    loaded = SANet.from_preset(str(folder))
    for variable in loaded.weights:
        expected = saved["weights"][variable.path].astype("float16").astype("float32")
        np.testing.assert_array_equal(to_numpy(variable), expected, err_msg=variable.path)


@pytest.mark.parametrize("damage", ["flipped_shard", "missing_shard", "unlisted_shard"])
def test_damaged_sharded_presets_fail_before_loading(sharded, tmp_path, damage):
    folder = tmp_path / "copy"
    shutil.copytree(sharded[0], folder)
    shard = sorted(folder.glob("model_*.weights.h5"))[-1]
    if damage == "flipped_shard":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x01
        shard.write_bytes(bytes(data))
        match = f"{shard.name} is damaged or was altered"
    elif damage == "missing_shard":
        shard.unlink()
        match = f"is missing {shard.name}"
    else:  # a shard that metadata.json does not hash, e.g. swapped in with its entry removed
        metadata = json.loads((folder / "metadata.json").read_text())
        del metadata["files"][shard.name]
        (folder / "metadata.json").write_text(json.dumps(metadata))
        match = f"names shards that metadata.json does not hash \\({shard.name}\\)"
    with pytest.raises(ValueError, match=match):
        SANet.from_preset(str(folder))


def test_float16_storage_keeps_out_of_range_arrays_in_float32(tmp_path):
    import h5py

    model = tiny_sanet()
    model.build((None, None, None, 3))
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        save_preset(model, str(tmp_path / "bad"), METADATA, weights_dtype="bfloat16")
    with pytest.raises(ValueError, match="'float32', 'float16', 'int8'"):
        save_preset(model, str(tmp_path / "bad"), METADATA, weights_dtype="uint8")
    # Like the moving variance of a batch norm fed raw 0..255 pixels (ResNet-50's first).
    kernel = model.heads.head_classifiers[0].weights[0]
    kernel.assign(np.full(kernel.shape, 1e6, "float32"))
    metadata = save_preset(model, str(tmp_path / "big"), METADATA, weights_dtype="float16")

    assert len(metadata["float32_arrays"]) == 1
    name, array = metadata["float32_arrays"][0].split(":")
    assert name == "model.weights.h5"
    with h5py.File(tmp_path / "big" / name, "r") as f:
        assert f[array].dtype == "float32"
        dtypes = set()
        f.visititems(lambda _, obj: dtypes.add(str(obj.dtype)) if hasattr(obj, "dtype") else None)
    assert dtypes == {"float16", "float32"}
    loaded = SANet.from_preset(str(tmp_path / "big"))
    np.testing.assert_array_equal(to_numpy(loaded.heads.head_classifiers[0].weights[0]), 1e6)


@pytest.mark.parametrize("max_shard_size", [None, 0.01], ids=["one_file", "sharded"])
def test_int8_storage_quarters_the_kernels_and_loads_them_dequantized(
    saved, tmp_path, max_shard_size
):
    import h5py

    model = SANet.from_preset(str(saved["folder"]))
    folder = tmp_path / "int8"
    metadata = model.save_to_preset(
        str(folder), METADATA, weights_dtype="int8", max_shard_size=max_shard_size,
        int8_min_kernel_size=0,
    )
    assert metadata["weights_dtype"] == "int8" and metadata["int8_min_kernel_size"] == 0
    assert "float16_arrays" not in metadata
    h5_files = sorted(folder.glob("*.h5"))
    assert len(h5_files) == (1 if max_shard_size is None else len(h5_files)) >= 1
    stored = sum(path.stat().st_size for path in h5_files)
    assert stored < 0.3 * (saved["folder"] / "model.weights.h5").stat().st_size
    dtypes = set()
    for path in h5_files:
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda _, obj: dtypes.add(str(obj.dtype)) if hasattr(obj, "dtype") else None
            )
    assert dtypes == {"int8", "float32"}
    assert len(metadata["int8_arrays"]) == sum(
        len(v.shape) >= 2 for v in model.weights
    )

    loaded = SANet.from_preset(str(folder))
    for variable in loaded.weights:
        assert variable.dtype == "float32"
        original = saved["weights"][variable.path]
        expected = original
        if original.ndim >= 2:
            expected = dequantize_int8(*quantize_int8(original))
            # Abs-max rounding: at most half a step (max|channel| / 254) from the original.
            axis = int8_channel_axis(original.shape)
            others = tuple(i for i in range(original.ndim) if i != axis)
            step = np.max(np.abs(original), axis=others, keepdims=True) / 127
            assert np.all(np.abs(expected - original) <= step / 2 + 1e-7), variable.path
        np.testing.assert_array_equal(to_numpy(variable), expected, err_msg=variable.path)
    np.testing.assert_allclose(
        to_numpy(loaded(saved["images"])), saved["expected"], atol=0.1, rtol=0.1
    )
    assert not any(name.startswith("keras_sanet_int8_") for name in os.listdir(tempfile.gettempdir()))


def test_int8_storage_is_read_from_the_files_not_from_the_metadata(saved, tmp_path):
    model = SANet.from_preset(str(saved["folder"]))
    folder = tmp_path / "int8"
    model.save_to_preset(str(folder), METADATA, weights_dtype="int8")
    expected = to_numpy(SANet.from_preset(str(folder))(saved["images"]))
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["weights_dtype"] = "float32"  # edited: must not load int8 values as weights
    (folder / "metadata.json").write_text(json.dumps(metadata))
    np.testing.assert_array_equal(
        to_numpy(SANet.from_preset(str(folder))(saved["images"])), expected
    )


def test_int8_array_without_its_scales_fails_with_nothing_loaded(saved, tmp_path):
    import h5py

    model = SANet.from_preset(str(saved["folder"]))
    folder = tmp_path / "int8"
    metadata = model.save_to_preset(
        str(folder), METADATA, weights_dtype="int8", int8_min_kernel_size=0
    )
    array = metadata["int8_arrays"][0].split(":")[1]
    with h5py.File(folder / "model.weights.h5", "a") as f:
        del f[array].attrs[INT8_SCALE_ATTR]
    # Re-hashed, as a careless re-export would: the file check passes, the scales are gone.
    metadata["files"]["model.weights.h5"]["sha256"] = sha256_file(folder / "model.weights.h5")
    metadata["files"]["model.weights.h5"]["size"] = (folder / "model.weights.h5").stat().st_size
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=f"{array} has no {INT8_SCALE_ATTR} attribute"):
        SANet.from_preset(str(folder))


def test_int8_storage_keeps_small_kernels_in_float16(saved, tmp_path):
    import h5py

    model = SANet.from_preset(str(saved["folder"]))
    threshold = 2**16  # splits the tiny ResNet-18 SANet's kernels into both groups
    folder = tmp_path / "int8_small_f16"
    metadata = model.save_to_preset(
        str(folder), METADATA, weights_dtype="int8", int8_min_kernel_size=threshold
    )
    assert metadata["int8_min_kernel_size"] == threshold
    kernels = [v for v in model.weights if len(v.shape) >= 2]
    small = {v.path for v in kernels if np.prod(v.shape) < threshold}
    assert 0 < len(small) < len(kernels)
    assert len(metadata["float16_arrays"]) == len(small)
    assert len(metadata["int8_arrays"]) == len(kernels) - len(small)
    with h5py.File(folder / "model.weights.h5", "r") as f:
        for key, dtype in (("float16_arrays", "float16"), ("int8_arrays", "int8")):
            for entry in metadata[key]:
                assert f[entry.split(":")[1]].dtype == dtype, entry

    loaded = SANet.from_preset(str(folder))
    for variable in loaded.weights:
        original = saved["weights"][variable.path]
        if variable.path in small:  # the float16 round trip, exactly
            expected = original.astype("float16").astype("float32")
        elif original.ndim >= 2:
            expected = dequantize_int8(*quantize_int8(original))
        else:
            expected = original
        np.testing.assert_array_equal(to_numpy(variable), expected, err_msg=variable.path)


@pytest.mark.parametrize(
    "shape, axis",
    [((3, 5), 1), ((3, 3, 4, 8), 3), ((3, 3, 6, 1), 2), ((1, 1, 4, 1), 2)],
    ids=["dense", "conv", "depthwise", "depthwise_1x1"],
)
def test_quantize_int8_scales_each_output_channel(shape, axis):
    values = np.random.default_rng(0).standard_normal(shape).astype("float32")
    values = values * np.arange(1, shape[axis] + 1).reshape(
        [-1 if i == axis else 1 for i in range(len(shape))]
    )
    assert int8_channel_axis(shape) == axis
    quantized, scale = quantize_int8(values)
    assert quantized.dtype == np.int8 and scale.dtype == np.float32
    assert scale.shape == tuple(n if i == axis else 1 for i, n in enumerate(shape))
    others = tuple(i for i in range(len(shape)) if i != axis)
    np.testing.assert_array_equal(np.max(np.abs(quantized), axis=others), 127)
    assert np.all(np.abs(dequantize_int8(quantized, scale) - values) <= scale / 2 + 1e-7)


def test_quantize_int8_keeps_a_zero_channel_at_zero():
    values = np.zeros((2, 3), "float32")
    values[:, 1] = [0.5, -1.0]
    quantized, scale = quantize_int8(values)
    np.testing.assert_array_equal(quantized[:, [0, 2]], 0)
    np.testing.assert_array_equal(scale[0, [0, 2]], 1.0)
    np.testing.assert_array_equal(quantized[:, 1], [64, -127])  # 63.5 rounds to even
    np.testing.assert_allclose(dequantize_int8(quantized, scale)[:, 1], [64 / 127, -1.0])


def test_load_preset_returns_the_metadata_and_passes_kwargs(saved):
    model, metadata = load_preset(saved["folder"], dtype="bfloat16")
    assert metadata == saved["metadata"]
    assert model.dtype_policy.name == "bfloat16"
    kernels = [v for v in model.weights if v.path.endswith("kernel")][:3]
    for variable in kernels:
        assert keras.backend.standardize_dtype(variable.dtype) == "bfloat16"
        np.testing.assert_allclose(
            to_numpy(keras.ops.cast(variable, "float32")),
            saved["weights"][variable.path],
            rtol=1e-2,
            atol=1e-6,
        )
    assert tuple(model(saved["images"]).shape) == (2, 32, 48, 3)


def test_num_classes_change_reinitialises_only_the_classifiers(saved, capsys):
    model = SANet.from_preset(str(saved["folder"]), num_classes=5)
    message = capsys.readouterr().out
    assert "predicts 3 classes, num_classes=5" in message
    classifier_names = [
        "head1_classifier", "head2_classifier", "head3_classifier", "head4_classifier",
        "se_head_logits", "aux_classifier",
    ]
    assert [layer.name for layer in classifier_layers(model)] == classifier_names
    assert ", ".join(classifier_names) in message
    classifier_ids = {id(v) for layer in classifier_layers(model) for v in layer.weights}
    original = saved["weights"]
    assert len(model.weights) == len(original)
    kept = 0
    for variable in model.weights:
        if id(variable) in classifier_ids:
            assert variable.shape[-1] == 5  # new classifiers, new shapes
            continue
        np.testing.assert_array_equal(to_numpy(variable), original[variable.path])
        kept += 1
    # Backbone, SA modules, SE hidden layer and aux conv all came from the preset.
    assert kept == len(original) - 2 * len(classifier_names)
    assert any("head1_sa" in path for path in original)
    assert model(saved["images"]).shape == (2, 32, 48, 5)


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "missing", "metadata_hash"])
def test_damaged_presets_fail_before_loading_with_the_fix(saved, tmp_path, damage):
    folder = copy_preset(saved, tmp_path)
    weights = folder / "model.weights.h5"
    expected = saved["metadata"]["files"]["model.weights.h5"]["sha256"]
    if damage == "flipped_byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
    elif damage == "missing":
        weights.unlink()
    else:
        metadata = json.loads((folder / "metadata.json").read_text())
        expected = "0" * 64
        metadata["files"]["model.weights.h5"]["sha256"] = expected
        (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError) as info:
        SANet.from_preset(str(folder))
    message = str(info.value)
    assert "model.weights.h5" in message and expected in message
    assert "Copy the preset folder again" in message
    if damage == "missing":
        assert "is missing model.weights.h5" in message
    else:
        actual = sha256_file(weights)
        assert f"sha256 {actual}, expected {expected}" in message
        assert "Nothing was loaded" in message
    if damage == "truncated":
        assert "truncated" in message


def test_config_of_another_class_is_refused(saved, tmp_path):
    folder = copy_preset(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(class_name="Functional", registered_name="Functional", module="keras")
    (folder / "config.json").write_text(json.dumps(config))
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["files"]["config.json"]["sha256"] = sha256_file(folder / "config.json")
    (folder / "metadata.json").write_text(json.dumps(metadata))
    verify_preset(str(folder))  # intact files, but not a SANet
    with pytest.raises(ValueError, match="describes 'Functional', not a keras_sanet SANet"):
        SANet.from_preset(str(folder))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m["files"].update({"../escape.txt": m["files"]["config.json"]}),
         "not a plain path inside"),
        (lambda m: m["files"].pop("config.json"), "lists no hash for config.json"),
        (lambda m: m.update(format_version=99), "Upgrade keras-sanet"),
        (lambda m: m.pop("files"), "no 'files' table"),
    ],
)
def test_malformed_metadata_is_refused(saved, tmp_path, edit, match):
    folder = copy_preset(saved, tmp_path)
    metadata = json.loads((folder / "metadata.json").read_text())
    edit(metadata)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=match):
        SANet.from_preset(str(folder))


def test_handle_errors_name_the_accepted_forms(saved, tmp_path):
    with pytest.raises(ValueError, match="Unknown preset 'no_such_preset'.*hf://"):
        SANet.from_preset("no_such_preset")
    with pytest.raises(ValueError, match="does not exist"):
        SANet.from_preset(str(tmp_path / "nowhere" / "preset"))
    with pytest.raises(ValueError, match="is a file, but a preset is a folder"):
        SANet.from_preset(str(saved["folder"] / "config.json"))
    with pytest.raises(ValueError, match="no metadata.json"):
        SANet.from_preset(str(tmp_path))
    with pytest.raises(ValueError, match="must be local"):
        SANet.from_preset("file://otherhost/preset")
    with pytest.raises(ValueError, match="Unknown SANet argument.*num_clases"):
        SANet.from_preset(str(saved["folder"]), num_clases=4)
    with pytest.raises(TypeError, match="preset must be"):
        SANet.from_preset(3)


def test_preset_saved_here_loads_under_another_backend(saved, tmp_path):
    # Each backend's run checks the next one, so the three runs cover a full cycle.
    other = BACKENDS[(BACKENDS.index(backend()) + 1) % len(BACKENDS)]
    np.save(tmp_path / "images.npy", saved["images"])
    result = run_python(
        f"""
        import json, keras, numpy as np
        from keras_sanet import SANet
        model = SANet.from_preset({saved["folder"].as_uri()!r})
        logits = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "images.npy")!r})))
        print("RESULT " + json.dumps(logits.tolist()))
        """,
        other,
    )
    np.testing.assert_allclose(np.array(result), saved["expected"], atol=1e-4)


# -- downloads (offline: file:// URLs through the download code) -----------------


def test_archive_url_is_downloaded_once_into_the_cache(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_SANET_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "preset.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(saved["folder"], arcname=PRESET_NAME)
    model = SANet.from_preset(archive.as_uri())
    np.testing.assert_allclose(to_numpy(model(saved["images"])), saved["expected"], atol=1e-6)
    archive.unlink()  # the second call is served from the cache
    resolved = download.resolve_preset(archive.as_uri())
    assert resolved.folder.startswith(str(tmp_path / "cache"))
    assert os.path.basename(resolved.folder) == PRESET_NAME
    assert "Delete the cached copy" in resolved.fix
    verify_preset(resolved.folder)


def test_folder_url_fetches_every_listed_file(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_SANET_CACHE", str(tmp_path / "cache"))
    # The http(s) folder code path, fed a file:// base URL (urllib serves both).
    resolved = download._fetch_url_folder(saved["folder"].as_uri())
    assert sorted(os.listdir(resolved.folder)) == sorted(os.listdir(saved["folder"]))
    assert verify_preset(resolved.folder) == saved["metadata"]
    # A damaged cached file is fetched again (its sha256 is known from metadata.json).
    cached = pathlib.Path(resolved.folder) / "model.weights.h5"
    cached.write_bytes(b"damaged")
    download._fetch_url_folder(saved["folder"].as_uri())
    verify_preset(resolved.folder)


def test_hub_cache_root_is_the_whole_hugging_face_repo_folder():
    path = os.path.join("/c", "hub", "models--org--name", "snapshots", "abc")
    assert download._hub_cache_root(path) == os.path.join("/c", "hub", "models--org--name")
    assert download._hub_cache_root("/c/kaggle/org/model/1") == "/c/kaggle/org/model/1"


# -- the registry ----------------------------------------------------------------


def write_manifest(root, presets):
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "presets": presets}))


def test_list_presets_reads_the_manifest_and_each_metadata(saved, monkeypatch):
    root = saved["root"]
    write_manifest(
        root,
        {
            PRESET_NAME: {"description": "tiny"},
            "sanet_remote": {
                "url": "hf://example/sanet_remote",
                "backbone": "resnet50",
                "dataset": "camvid",
                "mean_iou": 0.6,
            },
        },
    )
    monkeypatch.setenv("KERAS_SANET_WEIGHTS", str(root))
    rows = keras_sanet.list_presets()
    assert [row["name"] for row in rows] == ["sanet_remote", PRESET_NAME]
    assert rows[1] == {
        "name": PRESET_NAME,
        "backbone": "resnet18",
        "dataset": "toy",
        "input_size": (32, 48),
        "mean_iou": 0.4321,
        "pixel_accuracy": 0.8765,
        "evaluated_on": "toy val",
        "parameters": saved["metadata"]["parameter_count"],
        "available": "bundled",
        "description": "a tiny test preset",
    }
    assert rows[0]["available"] == "download" and rows[0]["mean_iou"] == 0.6
    table = format_table()
    lines = table.splitlines()
    assert lines[0].startswith("| preset | backbone | dataset | input (HxW) | mIoU %")
    params = f"{saved['metadata']['parameter_count'] / 1e6:.1f}M"
    row = f"| {PRESET_NAME} | resnet18 | toy | 32x48 | 43.21 | 87.65 | toy val | {params} |"
    assert lines[3] == row
    assert lines[2] == "| sanet_remote | resnet50 | camvid | - | 60.00 | - | - | - |"
    assert keras_sanet.presets.preset_names() == ["sanet_remote", PRESET_NAME]


def test_bundled_name_loads_from_the_weights_folder(saved, monkeypatch):
    write_manifest(saved["root"], {PRESET_NAME: {}, "gone": {}})
    monkeypatch.setenv("KERAS_SANET_WEIGHTS", str(saved["root"]))
    model = SANet.from_preset(PRESET_NAME)
    np.testing.assert_allclose(to_numpy(model(saved["images"])), saved["expected"], atol=1e-6)
    with pytest.raises(ValueError, match="'gone' has neither its folder.*nor a 'url'"):
        SANet.from_preset("gone")


def test_repository_manifest_is_valid(monkeypatch):
    monkeypatch.delenv("KERAS_SANET_WEIGHTS", raising=False)
    root = keras_sanet.presets.weights_root()
    assert os.path.isfile(os.path.join(root, "manifest.json"))
    for row in keras_sanet.list_presets():
        assert row["available"] in ("bundled", "download"), row


def test_a_trained_models_optimizer_state_stays_out_of_the_preset(tmp_path):
    import h5py

    model = tiny_sanet(num_classes=2)
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), jit_compile=False)
    images = random_images(1, 32, 32)
    model.fit(images, np.zeros((1, 32, 32), "int32"), epochs=1, verbose=0)
    assert model.optimizer.variables
    save_preset(model, str(tmp_path / "p"))
    with h5py.File(tmp_path / "p" / "model.weights.h5", "r") as f:
        assert "optimizer" not in f
    loaded = SANet.from_preset(str(tmp_path / "p"))
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(model(images)), atol=1e-6)
