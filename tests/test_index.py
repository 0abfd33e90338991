"""evaluation.index: archive embedding, resume after kill -9, incremental updates, search."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_module, tiny_state
from PIL import Image

K = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_exports):
    """A tiny synthetic archive, a ResNet feature extractor and a classifier (exports shared
    with other files), and an index of the archive, made once."""
    pytest.importorskip("torch")
    from bridge.core.data import synth
    from bridge.core.weights import write_state_dict

    root = tmp_path_factory.mktemp("index")
    data = synth.generate(
        root / "data", synth.SynthConfig(per_class=12, size=48, cases=4, cases_per_patient=2)
    )
    write_state_dict(tiny_state("resnet50_tiny"), root / "w.safetensors")  # a file, no image
    features = tiny_exports("resnet50_tiny", "torch", "features")
    classifier = tiny_exports("resnet50_tiny", "torch", "classifier")
    # another model: the same weights through the other exporter (another file and sha256)
    other_features = tiny_exports("resnet50_tiny", "keras", "features")
    full = root / "full"
    build(features, data, full)
    return {
        "root": root,
        "data": data,
        "features": features,
        "classifier": classifier,
        "other": other_features,
        "full": full,
    }


def build(model, data, out, **options):
    from evaluation.index import BuildOptions
    from evaluation.index import build as build_index

    return build_index(model, data, out, BuildOptions(prefer_gpu=False, **options))


def answers(index_dir, k=K):
    """Every indexed vector's k nearest ids and distances, by id (order-independent)."""
    from evaluation.index import Index

    index = Index(index_dir, prefer_gpu=False)
    hits = index.search(index.vectors, k)
    return {
        str(i): [(h.id, h.distance) for h in hs]
        for i, hs in zip(index.meta["id"], hits, strict=True)
    }


def assert_same_answers(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert [i for i, _ in a[key]] == [i for i, _ in b[key]], key
        np.testing.assert_allclose([d for _, d in a[key]], [d for _, d in b[key]], atol=1e-6)


def test_a_build_indexes_every_image_with_its_metadata(setup):
    from evaluation.archive import read_archive
    from evaluation.embedding import Embedder
    from evaluation.features import FeatureExtractor
    from evaluation.index import Index

    archive = read_archive(setup["data"])
    index = Index(setup["full"], prefer_gpu=False)
    assert len(index) == len(archive.items) == 36
    assert sorted(index.meta["id"]) == sorted(i.id for i in archive.items)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-6)
    manifest = index.manifest
    assert manifest["complete"] and manifest["count"] == 36
    assert manifest["embedding"]["tap"] == Embedder(setup["features"]).tap
    assert manifest["embedding"]["pooling"] == "gap"
    assert (
        manifest["model"]["sha256"]
        == json.loads(setup["features"].with_suffix(".json").read_text())["onnx_sha256"]
    )
    assert manifest["search"]["method"] == "exact"
    item = archive.items[3]
    row = list(index.meta["id"]).index(item.id)
    assert index.meta["label"][row] == item.label and index.meta["lesion_id"][row] == item.lesion_id
    # the distance is FeatureExtractor's `<tap>/gap` cosine distance
    a, b = archive.items[0], archive.items[1]
    extractor = FeatureExtractor(setup["features"], prefer_gpu=False)
    extractor.keep_size = False
    d = extractor.distances(extractor.prepare(a.path)[None], extractor.prepare(b.path)[None])
    tap = manifest["embedding"]["tap"]
    hits = index.query(a.path, k=36)
    found = next(h for h in hits if h.id == b.id)
    assert found.distance == pytest.approx(d[f"{tap}/gap"][0], abs=1e-6)
    assert hits[0].id == a.id and hits[0].distance == pytest.approx(0.0, abs=1e-6)


KILL_AFTER_SHARDS = """
import os, signal, sys
import evaluation.index as ix
calls = {"n": 0}
real = ix._write_shard
def dying(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] > %(after)d:
        if %(mid_write)s:
            real_save = ix._save_shard
            def half(path, columns):
                from bridge.core.files import atomic_path
                with atomic_path(path) as tmp:
                    tmp.write_bytes(b"PK half a shard")
                    os.kill(os.getpid(), signal.SIGKILL)
            ix._save_shard = half
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
ix._write_shard = dying
sys.argv = ["evaluation.index", *sys.argv[1:]]
ix.main()
"""


@pytest.mark.parametrize("mid_write", [False, True], ids=["between-shards", "mid-shard-write"])
def test_a_build_killed_half_way_continues_and_answers_like_an_uninterrupted_one(
    setup, tmp_path, mid_write
):
    """kill -9 between shards or while one is written: the rerun embeds only what is missing."""
    from evaluation.index import Index

    out = tmp_path / "idx"
    args = [
        "build", "--model", str(setup["features"]), "--data", str(setup["data"]),
        "--out", str(out), "--shard-size", "4", "--batch", "4", "--cpu",
    ]  # fmt: skip
    script = KILL_AFTER_SHARDS % {"after": 3, "mid_write": mid_write}
    killed = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    held = sorted((out / "shards").glob("[0-9]*.npz"))
    assert len(held) == 3  # the fourth shard never landed, not even half of it
    assert len(list((out / "shards").glob(".tmp-*"))) == int(mid_write)
    with pytest.raises(FileNotFoundError, match="no index here"):
        Index(out)
    rerun = run_module("evaluation.index", *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "12 already embedded, 24 to embed" in rerun.stderr
    assert json.loads((out / "manifest.json").read_text())["count"] == 36
    assert not list(out.glob("shards/.tmp-*"))
    assert_same_answers(answers(out), answers(setup["full"]))


def copy_folder_archive(setup, dest):
    """The synthetic images as a plain image folder (ids are file names)."""
    from evaluation.archive import read_archive

    dest.mkdir()
    for item in read_archive(setup["data"]).items[:20]:
        shutil.copy(item.path, dest / item.path.name)
    return dest


def test_an_update_embeds_added_and_changed_files_and_drops_removed_ones(setup, tmp_path):
    folder = copy_folder_archive(setup, tmp_path / "photos")
    out = tmp_path / "idx"
    first = build(setup["features"], folder, out, shard_size=8)
    assert first["count"] == 20 and first["last_build"]["embedded"] == 20
    files = sorted(folder.iterdir())
    files[0].unlink()  # removed
    image = np.asarray(Image.open(files[1]))  # changed: new pixels, same name
    Image.fromarray(255 - image).save(files[1], quality=95)
    shutil.copy(files[2], folder / "new.jpg")  # added
    second = build(setup["features"], folder, out, shard_size=8)
    assert second["last_build"] == {"embedded": 2, "kept": 18, "removed": 1, "skipped": 0}
    assert second["count"] == 20
    fresh = build(setup["features"], folder, tmp_path / "fresh", shard_size=8)
    assert fresh["count"] == 20
    assert_same_answers(answers(out), answers(tmp_path / "fresh"))
    # nothing changed: nothing embedded, no file read again for its hash
    third = build(setup["features"], folder, out, shard_size=8)
    assert third["last_build"] == {"embedded": 0, "kept": 20, "removed": 0, "skipped": 0}


def test_a_search_gives_k_hits_and_breaks_ties_by_id(setup, tmp_path, monkeypatch):
    """Whatever the chunking and the order rows were written in: k hits, exact ties by id."""
    import evaluation.index as ix
    from evaluation.engines import EngineOptions

    folder = copy_folder_archive(setup, tmp_path / "photos")
    first = sorted(folder.iterdir())[0]
    for name in ("zz.jpg", "aa.jpg", "mm.jpg"):  # three copies of one image: equal distances
        shutil.copy(first, folder / name)
    one = EngineOptions(batch_size=1)  # each image alone: copies get bit-identical vectors
    build(setup["features"], folder, tmp_path / "idx", shard_size=5, engine=one)
    monkeypatch.setattr(ix, "_CHUNK", 4)  # many chunks: each keeps its own top k
    index = ix.Index(tmp_path / "idx", prefer_gpu=False)
    hits = index.query(first, k=3)
    assert [h.id for h in hits] == sorted(["aa.jpg", "mm.jpg", "zz.jpg", first.name])[:3]
    assert len(index.query(first, k=5, exclude={"aa.jpg"})) == 5
    assert all(h.distance >= 0 for h in hits)


def test_an_update_refreshes_the_metadata_of_kept_rows(setup, tmp_path):
    """A lesion id added to the table reaches the kept rows, without embedding again."""
    from evaluation.archive import read_archive
    from evaluation.index import Index

    items = read_archive(setup["data"]).items[:4]
    table = tmp_path / "list.csv"
    table.write_text("image,label\n" + "".join(f"{i.path},{i.label}\n" for i in items))
    build(setup["features"], table, tmp_path / "idx")
    table.write_text(
        "image,label,lesion_id\n"
        + "".join(f"{i.path},{i.label},L{n}\n" for n, i in enumerate(items))
    )
    second = build(setup["features"], table, tmp_path / "idx")
    assert second["last_build"]["embedded"] == 0 and second["last_build"]["kept"] == 4
    index = Index(tmp_path / "idx", prefer_gpu=False)
    assert sorted(index.meta["lesion_id"]) == ["L0", "L1", "L2", "L3"]
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["last_build"]["kept"] == 4


def test_undecodable_images_are_skipped_and_listed(setup, tmp_path):
    folder = copy_folder_archive(setup, tmp_path / "photos")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "idx"
    result = run_module(
        "evaluation.index", "build", "--model", str(setup["features"]), "--data", str(folder),
        "--out", str(out), "--cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 skipped: see" in result.stderr
    skipped = (out / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 2 and skipped[1].startswith("broken.jpg,")
    assert json.loads((out / "manifest.json").read_text())["count"] == 20


def test_an_image_list_gives_regions_and_groups(setup, tmp_path):
    from evaluation.archive import read_archive
    from evaluation.index import Index

    items = read_archive(setup["data"]).items[:6]
    table = tmp_path / "list.csv"
    rows = ["image,box,label,lesion_id,patient_id"]
    rows += [f'{i.path},"4,4,32,32",{i.label},{i.lesion_id},P{n % 2}' for n, i in enumerate(items)]
    rows.append(f"{items[0].path},,{items[0].label},{items[0].lesion_id},P0")  # the whole image too
    table.write_text("\n".join(rows) + "\n")
    build(setup["features"], table, tmp_path / "idx")
    index = Index(tmp_path / "idx", prefer_gpu=False)
    assert len(index) == 7
    assert set(index.meta["box"]) == {"4,4,32,32", ""}
    # the region query finds its own region first
    hits = index.query(items[2].path, "4,4,32,32", k=3)
    assert hits[0].id == f"{items[2].path}#4,4,32,32" and hits[0].distance < 1e-6
    # excluding a patient leaves out all of that patient's images
    hits = index.query(items[2].path, "4,4,32,32", k=7, exclude={"P0"})
    assert hits and all(h.patient_id == "P1" for h in hits)


def test_group_exclusion_leaves_out_the_querys_own_lesion(setup):
    from evaluation.archive import read_archive
    from evaluation.index import Index

    index = Index(setup["full"], prefer_gpu=False)
    item = read_archive(setup["data"]).items[0]
    own = index.group_of(item.path)
    assert item.id in own and item.lesion_id in own
    hits = index.query(item.path, k=36, exclude=own)
    assert hits and all(h.lesion_id != item.lesion_id for h in hits)
    same_lesion = sum(1 for i in read_archive(setup["data"]).items if i.lesion_id == item.lesion_id)
    assert len(hits) == 36 - same_lesion
    result = run_module(
        "evaluation.index", "query", str(setup["full"]), str(item.path), "-k", "3",
        "--exclude-group", "--json", "--cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [h["id"] for h in out["neighbours"]] == [h.id for h in hits[:3]]
    assert [h["distance"] for h in out["neighbours"]] == pytest.approx(
        [h.distance for h in hits[:3]], abs=1e-7
    )


def test_approximate_search_reaches_its_recall_and_stores_it(tmp_path):
    pytest.importorskip("faiss")
    from evaluation.index import _build_ann, _exact_top, faiss_module, recall_at_k

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, 32))
    vectors = centres[rng.integers(0, 60, 6000)] + 0.35 * rng.normal(size=(6000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    info = _build_ann(vectors, tmp_path / "ann.faiss")
    assert info["method"] == "approximate" and info["recall_at_16"] >= 0.95
    assert 1 <= info["nprobe"] < info["nlist"]  # it probes a fraction of the lists
    ann = faiss_module().read_index(str(tmp_path / "ann.faiss"))
    ann.nprobe = info["nprobe"]
    queries = (centres[:40] + 0.35 * rng.normal(size=(40, 32))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    held_out = recall_at_k(ann.search(queries, 16)[1], _exact_top(vectors, queries, 16))
    assert held_out >= 0.9


def test_an_approximate_index_answers_like_the_exact_one_on_a_small_archive(setup, tmp_path):
    pytest.importorskip("faiss")
    from evaluation.index import Index

    manifest = build(setup["features"], setup["data"], tmp_path / "idx", search="approximate")
    assert manifest["search"]["method"] == "approximate"
    assert manifest["search"]["recall_at_16"] >= 0.95
    approx = Index(tmp_path / "idx", prefer_gpu=False)
    exact = Index(tmp_path / "idx", search="exact", prefer_gpu=False)
    top_a = [h.id for h in approx.search(approx.vectors[:1], 5)[0]]
    top_e = [h.id for h in exact.search(exact.vectors[:1], 5)[0]]
    assert top_a == top_e


def test_user_mistakes_get_one_line(setup, tmp_path):
    features, full = str(setup["features"]), str(setup["full"])
    image = str(next((setup["data"] / "isic2019").rglob("*.jpg")))
    cases = [
        (["build", "--model", str(setup["classifier"]), "--data", str(setup["data"]),
          "--out", str(tmp_path / "a")], "is a classifier model"),
        (["build", "--model", features, "--data", str(tmp_path / "nothing"),
          "--out", str(tmp_path / "b")], "no such file or folder"),
        (["build", "--model", str(setup["other"]), "--data", str(setup["data"]), "--out", full],
         "holds an index of other settings"),
        (["query", full, image, "--model", str(setup["other"])], "is not the model"),
        (["query", full, image, "--region", "40,40,30,30"], "lies outside"),
        (["query", str(tmp_path), image], "no index here"),
        (["query", full, str(setup["root"] / "w.safetensors"), "--exclude-group"], "is not in"),
        (["build", "--model", features, "--data", str(setup["data"]), "--out",
          str(tmp_path / "c"), "--address", "localhost:1"], "--address is for --engine ray"),
    ]  # fmt: skip
    for args, fragment in cases:
        assert_one_line_error(run_module("evaluation.index", *args, "--cpu"), fragment)


def test_archives_of_every_format(setup, tmp_path):
    from evaluation.archive import read_archive

    isic = read_archive(setup["data"])
    assert isic.format == "isic2019" and isic.synthetic and len(isic.items) == 36
    assert all(i.lesion_id for i in isic.items)
    classes = tmp_path / "classes"
    for item in isic.items[:6]:
        (classes / item.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(item.path, classes / item.label / item.path.name)
    by_class = read_archive(classes)
    assert by_class.format == "folders" and {i.label for i in by_class.items} <= {
        "MEL",
        "NV",
        "BCC",
    }
    nested = tmp_path / "plain" / "2024"
    nested.mkdir(parents=True)
    shutil.copy(isic.items[0].path, nested / "a.jpg")
    shutil.copy(isic.items[1].path, nested.parent / "b.jpg")  # images at the top: no classes
    plain = read_archive(tmp_path / "plain")
    assert plain.format == "images" and [i.id for i in plain.items] == ["2024/a.jpg", "b.jpg"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,what\nx.jpg,1\n")
    with pytest.raises(ValueError, match="not an archive table"):
        read_archive(bad)
    listed = tmp_path / "list.csv"
    listed.write_text("image,box\nmissing.jpg,\n")
    with pytest.raises(ValueError, match="no such file"):
        read_archive(listed)


def test_pooling_and_taps(setup):
    from evaluation.embedding import Embedder, grid_taps, normalise, pool

    x = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4)
    np.testing.assert_allclose(pool(x, "gap"), [[5.5, 17.5]])
    np.testing.assert_allclose(pool(x, "max"), [[11, 23]])
    np.testing.assert_allclose(normalise(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0, 0]])
    embedder = Embedder(setup["features"], pooling="max", prefer_gpu=False)
    assert embedder.tap == grid_taps(embedder.model.manifest)[-1]
    with pytest.raises(ValueError, match="has no class token"):
        Embedder(setup["features"], pooling="cls", prefer_gpu=False)
    with pytest.raises(ValueError, match="no grid tap"):
        Embedder(setup["features"], tap="nope", prefer_gpu=False)


def test_index_module_imports_no_framework():
    code = textwrap.dedent(
        """
        import sys, evaluation.index, evaluation.embedding, evaluation.engines, evaluation.archive
        bad = [m for m in ("torch", "tensorflow", "keras", "ray", "faiss") if m in sys.modules]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_segmentation_masks_are_found_and_pooled_under(setup, tmp_path):
    """ISIC / HAM10000 segmentations (and masks beside images or in a list) reach the index."""
    from conftest import run_cli

    from bridge.core.data.masks import Outline
    from bridge.core.data.readers import read_class_folders, read_ham10000
    from evaluation.archive import read_archive
    from evaluation.embedding import Embedder, pool
    from evaluation.index import Index

    x = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4)
    weights = np.zeros((1, 1, 3, 4))
    weights[..., 0, :2] = 1  # two cells
    np.testing.assert_allclose(pool(x, "gap", weights), [[0.5, 12.5]])
    np.testing.assert_allclose(pool(x, "max", weights), [[1, 13]])
    # a HAM10000 layout: six images, four with the published segmentations
    ham = tmp_path / "ham"
    (ham / "HAM10000_segmentations_lesion_tschandl").mkdir(parents=True)
    sources = read_archive(setup["data"]).items[:6]
    rows = ["lesion_id,image_id,dx"]
    disc = np.zeros((48, 48), np.uint8)
    disc[np.hypot(*np.mgrid[-24:24, -24:24]) < 14] = 255
    for n, item in enumerate(sources):
        name = f"ISIC_{n:07d}"
        shutil.copy(item.path, ham / f"{name}.jpg")
        rows.append(f"HAM_{n // 2},{name},{item.label.lower()}")
        if n < 4:
            Image.fromarray(disc).save(
                ham / "HAM10000_segmentations_lesion_tschandl" / f"{name}_segmentation.png"
            )
    (ham / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    data = read_ham10000(ham / "HAM10000_metadata.csv")
    assert [s.mask is not None for s in data.samples] == [True] * 4 + [False] * 2
    archive = read_archive(ham)
    assert [i.mask for i in archive.items] == [s.mask for s in data.samples]
    manifest = build(setup["features"], ham, tmp_path / "idx", masks=True)
    assert manifest["embedding"]["under_masks"] == 4
    index = Index(tmp_path / "idx", prefer_gpu=False)
    embedder = Embedder(setup["features"], prefer_gpu=False)
    for item in archive.items:
        row = list(index.meta["id"]).index(item.id)
        region = item.region(masks=True)
        assert index.meta["box"][row] == ("" if item.mask is None else f"mask {item.mask}")
        np.testing.assert_allclose(index.vectors[row], embedder.embed(item.path, region), atol=1e-6)
    masked_row = list(index.meta["id"]).index(archive.items[0].id)
    plain = embedder.embed(archive.items[0].path)
    assert np.abs(index.vectors[masked_row] - plain).max() > 1e-3
    # the query pools under its mask too: the image finds itself at distance 0
    result = run_cli(
        "evaluation.index", "query", str(tmp_path / "idx"), str(archive.items[0].path),
        "--mask", str(archive.items[0].mask), "-k", "1", "--json", "--cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["region"] == str(archive.items[0].mask)
    hit = answer["neighbours"][0]
    assert hit["id"] == archive.items[0].id and hit["distance"] < 1e-5
    # without --masks, just the four masked rows are embedded again
    again = build(setup["features"], ham, tmp_path / "idx")
    assert again["last_build"] == {"embedded": 4, "kept": 2, "removed": 0, "skipped": 0}
    assert again["embedding"]["under_masks"] == 0
    # a mask beside an image in class folders is that image's mask, not an image
    (tmp_path / "classes" / "nv").mkdir(parents=True)
    shutil.copy(ham / "ISIC_0000000.jpg", tmp_path / "classes" / "nv" / "0.jpg")
    Image.fromarray(disc).save(tmp_path / "classes" / "nv" / "0.mask.png")
    (sample,) = read_class_folders(tmp_path / "classes").samples
    assert sample.mask == tmp_path / "classes" / "nv" / "0.mask.png"
    # an image list's mask column; a box and a mask on one row is refused
    listed = tmp_path / "list.csv"
    listed.write_text(f"image,mask\n{ham / 'ISIC_0000000.jpg'},{data.samples[0].mask}\n")
    assert read_archive(listed).items[0].region(masks=True) == Outline(file=data.samples[0].mask)
    listed.write_text(
        f'image,box,mask\n{ham / "ISIC_0000000.jpg"},"1,1,9,9",{data.samples[0].mask}\n'
    )
    with pytest.raises(ValueError, match="box and mask both given"):
        read_archive(listed)
