"""Reading PyTorch state dicts (`.pth`) without torch and without running pickled code.

A `.pth` state dict is a pickle whose tensors point at raw storages. Two
layouts exist:

- the zip format (torch >= 1.6): `<root>/data.pkl` plus one file
  `<root>/data/<key>` per storage;
- the legacy format (torch < 1.6, still common for published weights): a
  stream of pickles (magic number, protocol version, system info, the state
  dict, the storage keys) followed by the raw bytes of each storage.

Both are read here with the standard library and NumPy. The unpickler only
resolves the handful of globals a state dict needs, mapped to local stand-ins,
and refuses everything else, so a malicious file cannot execute code.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

# torch's legacy-format magic number and protocol version (torch/serialization.py).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> NumPy dtype. bfloat16 has no NumPy dtype: its
# bits are read as uint16 and widened to float32.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stand-in for `torch.FloatStorage` and friends: only carries the dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage whose bytes are filled in once the file has been read that far."""

    def __init__(self, storage_type, numel):
        self.storage_type = storage_type
        self.numel = numel
        self.data = None  # flat NumPy array once loaded


class _StorageView:
    """A legacy-format view on part of a root storage (offset and length in elements)."""

    def __init__(self, root, offset, numel):
        self.root = root
        self.offset = offset
        self.numel = numel
        self.storage_type = root.storage_type


class _TensorRef:
    """What `_rebuild_tensor_v2` returns: a strided view description, materialised later."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage = storage
        self.storage_offset = int(storage_offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _codecs_encode(text, encoding="latin1"):
    # Protocol-2 pickles written by Python 3 encode `bytes` this way.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("Unexpected arguments to _codecs.encode.")
    return text.encode(encoding)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("_codecs", "encode"): _codecs_encode,
}
for _name in _STORAGE_DTYPES:
    _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a plain state dict; refuses everything else."""

    def __init__(self, file, path, persistent_load=None):
        super().__init__(file)
        self._path = path
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        key = (module, name)
        if key not in _ALLOWED_GLOBALS:
            raise ValueError(
                f"{self._path} needs the Python object {module}.{name}, which a "
                "plain PyTorch state dict never contains, so it is refused (it "
                "could run arbitrary code). Save only the weights, "
                "`torch.save(model.state_dict(), path)`, and pass that file."
            )
        return _ALLOWED_GLOBALS[key]

    def persistent_load(self, saved_id):
        if self._persistent_load is None:
            raise pickle.UnpicklingError("Unexpected persistent id in this pickle.")
        return self._persistent_load(saved_id)


def _decode(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


def _check_storage_id(saved_id, path, length):
    if (
        not isinstance(saved_id, tuple)
        or len(saved_id) != length
        or _decode(saved_id[0]) != "storage"
        or not isinstance(saved_id[1], _StorageType)
    ):
        raise ValueError(
            f"{path} holds an object that is not a tensor storage "
            f"({saved_id!r:.80}). Only state dicts of tensors can be read: save "
            "`model.state_dict()`."
        )


def _materialise(ref, path, byteorder):
    storage = ref.storage
    if isinstance(storage, _StorageView):
        flat = storage.root.data[storage.offset:storage.offset + storage.numel]
    else:
        flat = storage.data
    if flat is None:
        raise ValueError(f"{path} is truncated: a tensor storage has no data.")
    dtype = storage.storage_type.dtype
    if byteorder == "big" and dtype.itemsize > 1:
        flat = flat.byteswap()
    numel = int(np.prod(ref.size, dtype=np.int64))
    if numel == 0:
        values = np.zeros(ref.size, dtype)
    else:
        last = ref.storage_offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if ref.storage_offset < 0 or last >= flat.size:
            raise ValueError(
                f"{path} is corrupt: a tensor of shape {ref.size} reaches past the "
                f"end of its storage ({flat.size} elements). Re-download the file."
            )
        values = np.lib.stride_tricks.as_strided(
            flat[ref.storage_offset:],
            shape=ref.size,
            strides=[s * dtype.itemsize for s in ref.stride],
            writeable=False,
        )
        values = np.array(values)  # own, contiguous copy
    if storage.storage_type.name == "BFloat16Storage":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _collect_tensors(result, path, byteorder):
    if not isinstance(result, dict):
        raise ValueError(
            f"{path} does not hold a state dict (found {type(result).__name__}). "
            "Save the weights with `torch.save(model.state_dict(), path)`."
        )
    tensors = {}
    for key, value in result.items():
        if isinstance(value, _TensorRef):
            tensors[str(key)] = _materialise(value, path, byteorder)
    if not tensors:
        raise ValueError(
            f"{path} holds a dict without tensors at its top level (keys: "
            f"{list(result)[:5]}). If it is a training checkpoint, save its model "
            "part alone: `torch.save(checkpoint['state_dict'], path)`."
        )
    return tensors


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(
                f"{path} is a zip file but not a PyTorch state dict (no single "
                "data.pkl inside). Pass a file written by `torch.save`."
            )
        root = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if root + "byteorder" in names:
            byteorder = archive.read(root + "byteorder").decode("ascii").strip()
        storages = {}

        def persistent_load(saved_id):
            _check_storage_id(saved_id, path, 5)
            _, storage_type, key, _location, numel = saved_id
            key = _decode(key)
            if key not in storages:
                storage = _Storage(storage_type, int(numel))
                member = f"{root}data/{key}"
                if member not in names:
                    raise ValueError(f"{path} is truncated: storage {member} is missing.")
                raw = archive.read(member)
                count = len(raw) // storage_type.dtype.itemsize
                storage.data = np.frombuffer(raw, storage_type.dtype, count)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as file:
            result = _RestrictedUnpickler(
                io.BytesIO(file.read()), path, persistent_load
            ).load()
    return _collect_tensors(result, path, byteorder)


def _read_legacy(path):
    with open(path, "rb") as file:
        try:
            magic = _RestrictedUnpickler(file, path).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(
                f"{path} is neither a zip nor a legacy PyTorch file ({error}). "
                "Pass a state dict written by `torch.save`, or re-download it."
            ) from None
        if magic != _LEGACY_MAGIC_NUMBER:
            raise ValueError(
                f"{path} is not a PyTorch state dict (wrong magic number). Very "
                "old tar-format files (torch < 0.4) are not supported: load and "
                "re-save them with a recent torch, `torch.save(torch.load(path), new_path)`."
            )
        version = _RestrictedUnpickler(file, path).load()
        if version != _LEGACY_PROTOCOL_VERSION:
            raise ValueError(
                f"{path} uses legacy protocol version {version}, not "
                f"{_LEGACY_PROTOCOL_VERSION}. Re-save it with a recent torch."
            )
        sys_info = _RestrictedUnpickler(file, path).load()
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        storages = {}

        def persistent_load(saved_id):
            _check_storage_id(saved_id, path, 6)
            _, storage_type, root_key, _location, numel, view = saved_id
            root_key = _decode(root_key)
            if root_key not in storages:
                storages[root_key] = _Storage(storage_type, int(numel))
            root = storages[root_key]
            if view is None:
                return root
            _view_key, offset, view_numel = view
            return _StorageView(root, int(offset), int(view_numel))

        result = _RestrictedUnpickler(file, path, persistent_load).load()
        keys = _RestrictedUnpickler(file, path).load()
        for key in keys:
            storage = storages[_decode(key)]
            header = file.read(8)
            if len(header) != 8:
                raise ValueError(f"{path} is truncated. Re-download the file.")
            (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", header)
            nbytes = numel * storage.storage_type.dtype.itemsize
            raw = file.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path} is truncated. Re-download the file.")
            storage.data = np.frombuffer(raw, storage.storage_type.dtype, numel)
    return _collect_tensors(result, path, byteorder)


def read_torch_state_dict(path):
    """Reads a PyTorch state dict into NumPy arrays, without torch.

    Handles the zip format of `torch.save` (torch >= 1.6) and the legacy
    stream format (`_use_new_zipfile_serialization=False`, most weights
    published before 2020). Only plain tensors in a (Ordered)dict are
    accepted; any other pickled object is refused, never executed.

    Args:
        path: the `.pth` / `.pt` file.

    Returns:
        A `dict` mapping each key of the state dict to a NumPy array in
        torch's own layout (e.g. conv kernels `(out, in, kh, kw)`), dtypes
        preserved (bfloat16 is widened to float32). Non-tensor values at
        the top level are skipped.

    Raises:
        ValueError: the file is not a state dict, is truncated, or needs
            Python objects beyond tensors.

    Example:
    >>> state = read_torch_state_dict("mobilenet_v2-b0353104.pth")
    >>> state["features.0.0.weight"].shape
    (32, 3, 3, 3)
    """
    path = str(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)
