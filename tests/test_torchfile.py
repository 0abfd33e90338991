"""bridge.core.torchfile reads torch's two checkpoint formats like torch.load, without torch."""

import importlib.util
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.torchfile import read_torch_file


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "float": torch.randn(3, 4, generator=g),
        "transposed": torch.randn(4, 2, generator=g).t(),  # not contiguous
        "slice": torch.arange(10.0)[2:7],  # a storage offset
        "double": torch.randn(2, dtype=torch.float64, generator=g),
        "half": torch.randn(5, generator=g).half(),
        "bfloat16": torch.randn(5, generator=g).to(torch.bfloat16),
        "long": torch.tensor(3),  # 0-d, like num_batches_tracked
        "int8": torch.tensor([-1, 2], dtype=torch.int8),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_what_torch_load_reads(tmp_path, legacy):
    tensors = _tensors()
    path = tmp_path / "ckpt.pth"
    checkpoint = {"state_dict": tensors, "epoch": 3, "names": ["a", "b"]}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    assert zipfile.is_zipfile(path) is not legacy
    got = read_torch_file(path)
    assert got["epoch"] == 3 and got["names"] == ["a", "b"]
    for name, tensor in tensors.items():
        ref = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert got["state_dict"][name].dtype == ref.dtype, name
        assert got["state_dict"][name].shape == ref.shape, name
        assert np.array_equal(got["state_dict"][name], ref), name


def test_shared_storage_and_parameters(tmp_path):
    base = torch.arange(12.0)
    state = {"whole": base, "view": base.view(3, 4)[1:], "param": torch.nn.Parameter(base[:3])}
    torch.save(state, tmp_path / "shared.pth")
    got = read_torch_file(tmp_path / "shared.pth")
    for name, tensor in state.items():
        assert np.array_equal(got[name], tensor.detach().numpy()), name


def test_the_published_lpips_heads_match_torch_load():
    spec = importlib.util.find_spec("lpips")  # located, not imported (it imports torchvision)
    if spec is None:
        pytest.skip("lpips is not installed")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "v0.1" / "vgg.pth"
    assert not zipfile.is_zipfile(path)  # the legacy format
    ref = torch.load(path, map_location="cpu", weights_only=True)
    got = read_torch_file(path)
    assert set(got) == set(ref)
    assert all(np.array_equal(got[k], ref[k].numpy()) for k in ref)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_code_in_the_pickle_is_refused(tmp_path, legacy):
    class Boom:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Boom()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match=r"evil.pth: unreadable torch weights file \(refusing"):
        read_torch_file(path)


@pytest.mark.parametrize("cut", [0.5, 0.97])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_damaged_files_are_refused(tmp_path, legacy, cut):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match=r"cut.pth: unreadable torch weights file"):
        read_torch_file(path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(pickle.dumps([1, 2]) * 3)
    with pytest.raises(ValueError, match=r"junk.pth: unreadable torch weights file"):
        read_torch_file(tmp_path / "junk.pth")


def test_untyped_storages_of_newer_dtypes(tmp_path):
    # uint16 goes through _rebuild_tensor_v3 and torch.storage.UntypedStorage (bytes)
    tensor = torch.tensor([[1, 2, 60000], [4, 5, 6]], dtype=torch.int32).to(torch.uint16)
    torch.save({"u16": tensor, "view": tensor.t()}, tmp_path / "u16.pth")
    got = read_torch_file(tmp_path / "u16.pth")
    assert got["u16"].dtype == np.uint16
    assert got["u16"].tolist() == [[1, 2, 60000], [4, 5, 6]]
    assert got["view"].tolist() == [[1, 4], [2, 5], [60000, 6]]


def _zip_with_pickle(path, data: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/byteorder", "little")


def test_malformed_pickles_name_the_file(tmp_path):
    # a storage class called like a function, and a tensor longer than its storage
    called = b"\x80\x02ctorch\nFloatStorage\n)R."
    _zip_with_pickle(tmp_path / "called.pth", called)
    with pytest.raises(ValueError, match=r"called.pth: unreadable torch weights file"):
        read_torch_file(tmp_path / "called.pth")
    path = tmp_path / "short.pth"
    torch.save({"w": torch.arange(6.0)}, path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    storage = next(n for n in files if n.endswith("/data/0"))
    files[storage] = files[storage][:8]  # two floats left of six
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=r"short.pth: unreadable .*past the end of its storage"):
        read_torch_file(path)
