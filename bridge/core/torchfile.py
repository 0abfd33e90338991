"""Read torch checkpoint files (`.pth`, `.pt`, `.bin`) as numpy arrays, without torch.

torch writes two formats, and both are read here:

* the zip format (torch >= 1.6): a zip archive `<name>/data.pkl` whose pickle refers
  to tensor storages kept as raw little-endian files `<name>/data/<key>`;
* the legacy format (older torch; torchvision's ImageNet VGG16 file and the LPIPS
  heads in the lpips wheel use it): five pickles in a row (magic number, protocol,
  system info, the object, the storage keys), then every storage as an int64
  element count followed by its raw bytes.

The unpickler only rebuilds what a state dict holds: tensors, their storages, dtypes
and `collections.OrderedDict`. Any other global in the file is refused with a
`ValueError`, like `torch.load(weights_only=True)`, so no code from the file runs.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch's storage classes and dtypes by name -> numpy dtype (bfloat16 is widened below)
_DTYPES = {
    "Double": np.float64,
    "Float": np.float32,
    "Half": np.float16,
    "BFloat16": np.uint16,
    "Long": np.int64,
    "Int": np.int32,
    "Short": np.int16,
    "Char": np.int8,
    "Byte": np.uint8,
    "Bool": np.bool_,
    "UInt16": np.uint16,
    "UInt32": np.uint32,
    "UInt64": np.uint64,
    "Untyped": np.uint8,  # torch.storage.UntypedStorage: bytes, typed by the tensor
}
_TORCH_DTYPES = {
    "float64": "Double",
    "float32": "Float",
    "float16": "Half",
    "bfloat16": "BFloat16",
    "int64": "Long",
    "int32": "Int",
    "int16": "Short",
    "int8": "Char",
    "uint8": "Byte",
    "bool": "Bool",
    "uint16": "UInt16",
    "uint32": "UInt32",
    "uint64": "UInt64",
}


class _DType:
    """A torch dtype or storage class named in the pickle, standing for its numpy dtype."""

    def __init__(self, name: str):
        self.name = name
        self.numpy = np.dtype(_DTYPES[name])


class _Storage:
    """A flat run of elements; filled from the archive (zip) or the file's tail (legacy)."""

    def __init__(self, dtype: _DType, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None
        self.view: tuple[int, int] | None = None  # (offset, size) into a root storage
        self.root: _Storage | None = None

    def array(self) -> np.ndarray:
        if self.root is not None:
            offset, size = self.view
            return self.root.array()[offset : offset + size]
        if self.data is None:
            raise ValueError("a tensor's storage is missing from the file")
        return self.data


class _Tensor:
    """A tensor waiting for its storage: rebuilt into numpy once all storages are read."""

    def __init__(self, storage: _Storage, offset: int, size, stride, dtype: _DType | None = None):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        self.dtype = dtype or storage.dtype

    def numpy(self) -> np.ndarray:
        flat = self.storage.array()
        if self.dtype.numpy != flat.dtype:
            flat = flat.view(self.dtype.numpy)
        if 0 in self.size:
            out = np.zeros(self.size, flat.dtype)
        else:
            last = self.offset + sum(
                (n - 1) * s for n, s in zip(self.size, self.stride, strict=True)
            )
            if self.offset < 0 or last >= flat.size:
                raise ValueError("a tensor reaches past the end of its storage")
            item = flat.itemsize
            out = np.lib.stride_tricks.as_strided(
                flat[self.offset :], self.size, tuple(s * item for s in self.stride)
            ).copy()
        if self.dtype.name == "BFloat16":  # numpy has no bfloat16: widen exactly to float32
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, _grad, _hooks, dtype, *_):
    return _Tensor(storage, offset, size, stride, dtype)


def _rebuild_parameter(data, *_):
    return data


_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storage: Callable[[tuple], _Storage]):
        super().__init__(file, encoding="latin1")
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if (module, name) == ("torch.storage", "UntypedStorage"):
            return _DType("Untyped")
        if module == "torch":
            if name.endswith("Storage") and name[: -len("Storage")] in _DTYPES:
                return _DType(name[: -len("Storage")])
            if name in _TORCH_DTYPES:
                return _DType(_TORCH_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a state dict)")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        return self._storage(pid[1:])


def read_torch_file(path: str | os.PathLike) -> Any:
    """Load a torch checkpoint, with every tensor as a numpy array.

    Raises:
        ValueError: If the file is not a torch checkpoint, is damaged, or holds
            anything but tensors and plain Python values.
    """
    path = Path(path)
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # how torch.load tells the formats apart
    try:
        if zipped:
            obj = _read_zip(path)
        else:
            with open(path, "rb") as f:
                obj = _read_legacy(f)
        return _to_numpy(obj)
    except Exception as err:  # a damaged or hostile pickle can raise almost anything
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"{path}: unreadable torch weights file ({reason})") from None


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError("no data.pkl in the archive")
        prefix = pickles[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        if order in names and archive.read(order).strip() not in (b"little", b""):
            raise ValueError("big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}

        def storage(pid: tuple) -> _Storage:
            dtype, key, _location, numel = pid[:4]
            key = str(key)
            if key not in storages:
                raw = archive.read(f"{prefix}data/{key}")
                entry = _Storage(dtype, int(numel))
                entry.data = np.frombuffer(raw, dtype.numpy)  # read-only: tensors copy out
                storages[key] = entry
            return storages[key]

        return _Unpickler(io.BytesIO(archive.read(pickles[0])), storage).load()


def _read_legacy(f: BinaryIO) -> Any:
    def header() -> Any:
        return _Unpickler(f, _no_storage).load()

    if header() != _LEGACY_MAGIC:
        raise ValueError("not a torch checkpoint (no zip archive and no legacy magic number)")
    if header() != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy protocol version")
    header()  # system info: byte order and type sizes of the writer
    roots: dict[str, _Storage] = {}

    def storage(pid: tuple) -> _Storage:
        dtype, key, _location, numel, view = pid
        key = str(key)
        root = roots.setdefault(key, _Storage(dtype, int(numel)))
        if view is None:
            return root
        _view_key, offset, size = view
        part = _Storage(dtype, int(size))
        part.root, part.view = root, (int(offset), int(size))
        return part

    obj = _Unpickler(f, storage).load()
    for key in header():
        root = roots[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        if count != root.numel:
            raise ValueError(f"storage {key} holds {count} elements, expected {root.numel}")
        nbytes = count * root.dtype.numpy.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError("file ends inside a storage (truncated)")
        root.data = np.frombuffer(raw, root.dtype.numpy)  # read-only: tensors copy out
    return obj


def _no_storage(pid: tuple) -> _Storage:
    raise pickle.UnpicklingError("a tensor storage outside the object pickle")


def _to_numpy(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return type(obj)((k, _to_numpy(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj
