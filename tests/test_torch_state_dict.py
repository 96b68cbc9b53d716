"""read_torch_state_dict: torch-free reading of .pth files, and refusing anything else."""

import collections
import os
import pickle

import numpy as np
import pytest

from keras_sanet.backbones.torch_state_dict import read_torch_state_dict

torch = pytest.importorskip("torch")

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return str(path)


def _strided_state():
    generator = torch.Generator().manual_seed(0)
    big = torch.randn(6, 8, generator=generator)
    return collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3, generator=generator)),
            ("transposed", big.t()),  # non-contiguous view
            ("every_other_column", big[:, ::2]),  # strided view
            ("rows_1_to_3", big[1:3]),  # view with a storage offset
            ("same_storage", big),  # shares its storage with the views above
            ("bn.num_batches_tracked", torch.tensor(7, dtype=torch.int64)),
            ("half", torch.randn(5, generator=generator).half()),
            ("ints", torch.arange(-3, 3, dtype=torch.int32)),
            ("mask", torch.tensor([True, False, True])),
            ("empty", torch.zeros(0, 3)),
        ]
    )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reads_strided_views_and_dtypes_exactly(tmp_path, fmt):
    state = _strided_state()
    result = read_torch_state_dict(_save(state, tmp_path / "state.pth", fmt))
    assert list(result) == list(state)
    for key, tensor in state.items():
        expected = tensor.numpy()
        assert result[key].dtype == expected.dtype, key
        assert result[key].shape == expected.shape, key
        np.testing.assert_array_equal(result[key], expected, err_msg=key)
    assert result["bn.num_batches_tracked"].dtype == np.int64
    assert int(result["bn.num_batches_tracked"]) == 7


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reads_module_state_dict_and_parameters(tmp_path, fmt):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    module[1].running_var.uniform_(0.5, 2.0)
    state = module.state_dict()  # an OrderedDict carrying `_metadata`
    result = read_torch_state_dict(_save(state, tmp_path / "module.pth", fmt))
    assert sorted(result) == sorted(state)
    for key, tensor in state.items():
        np.testing.assert_array_equal(result[key], tensor.numpy())
    # Parameters pickled as such (not via state_dict()) come back as arrays too.
    params = {"weight": module[0].weight}
    result = read_torch_state_dict(_save(params, tmp_path / "params.pth", fmt))
    np.testing.assert_array_equal(result["weight"], module[0].weight.detach().numpy())


def test_bfloat16_is_widened_to_float32(tmp_path):
    values = torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16)
    result = read_torch_state_dict(_save({"x": values}, tmp_path / "bf16.pth", "zip"))
    assert result["x"].dtype == np.float32
    np.testing.assert_array_equal(result["x"], values.float().numpy())


class _Exploit:
    """Pickles to a call of os.mkdir: reading it must not create the folder."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_refuses_arbitrary_globals_without_running_them(tmp_path, fmt):
    target = str(tmp_path / "created_by_pickle")
    path = _save(
        {"w": torch.ones(2), "evil": _Exploit(target)}, tmp_path / "evil.pth", fmt
    )
    with pytest.raises(ValueError, match="refused.*state_dict"):
        read_torch_state_dict(path)
    assert not os.path.exists(target)


def test_refuses_a_plain_pickle(tmp_path):
    target = str(tmp_path / "created_by_pickle")
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps(_Exploit(target)))
    with pytest.raises(ValueError, match="refused"):
        read_torch_state_dict(str(path))
    assert not os.path.exists(target)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_bare_tensor_is_not_a_state_dict(tmp_path, fmt):
    path = _save(torch.ones(3), tmp_path / "tensor.pth", fmt)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        read_torch_state_dict(path)


def test_a_checkpoint_without_top_level_tensors_names_the_fix(tmp_path):
    path = _save(
        {"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "ckpt.pth", "zip"
    )
    with pytest.raises(ValueError, match=r"checkpoint\['state_dict'\]"):
        read_torch_state_dict(path)


def test_garbage_and_truncated_files_raise_value_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file at all")
    with pytest.raises(ValueError, match="torch.save"):
        read_torch_state_dict(str(garbage))
    path = _save({"w": torch.ones(100)}, tmp_path / "full.pth", "legacy")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(path, "rb").read()[:-40])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_state_dict(str(truncated))
