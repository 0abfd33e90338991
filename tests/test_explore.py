"""evaluation.explore (+ explore_app, explore_http): the region explorer, its CLI, its page."""

import csv
import dataclasses
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, copy_export, run_module
from PIL import Image

from bridge.core.data.image import box_text, decode_image
from bridge.core.data.masks import polygon_mask
from bridge.core.data.ratings import read_region_pairs
from bridge.core.data.synth import SynthConfig, generate
from evaluation.archive import ArchiveItem, read_archive
from evaluation.explore_app import (
    Explorer,
    find_indexes,
    find_scorers,
    load_indexes,
    load_scorers,
)
from evaluation.explore_http import make_server
from evaluation.index import BuildOptions, Index, build
from evaluation.score import Scorer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's; .ci/run installs it
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT = ROOT / "docs" / "explorer.png"
UPLOAD_CAP = 400_000  # bytes, small so that the oversize case is cheap
PIXEL_CAP = 1_000_000


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_exports):
    """Tiny VGG16 scorers: LPIPS and DISTS from both origins, a masked LPIPS; files to ignore.

    The scorers are sorted as the explorer orders them (metric, origin, file name), so
    `models[1]` lines up with a comparison's results.
    """
    root = tmp_path_factory.mktemp("explore-models")
    out = root / "models"
    paths = [
        copy_export(tiny_exports("vgg16_tiny", origin, kind), out)
        for kind in ("lpips", "dists")
        for origin in ("torch", "keras")
    ]
    paths.append(copy_export(tiny_exports("vgg16_tiny", "torch", "lpips_masked"), out))
    # a classifier manifest and a file without one: both left out of the explorer
    shutil.copy(paths[0], out / "x-classifier-torch.onnx")
    manifest = json.loads(paths[0].with_suffix(".json").read_text())
    (out / "x-classifier-torch.json").write_text(json.dumps({**manifest, "kind": "classifier"}))
    shutil.copy(paths[0], out / "orphan.onnx")
    return out, sorted(paths)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of images: a synthetic lesion, rated cases, an EXIF-rotated JPEG, traps."""
    root = tmp_path_factory.mktemp("explore-images")
    synth = generate(
        root / "synthetic", SynthConfig(per_class=1, cases=1, size=192, views_per_lesion=1)
    )
    folder = root / "images"
    shutil.copytree(synth / "rated" / "CASE001", folder / "cases" / "CASE001")
    truth = (synth / "isic2019" / "ISIC_2019_Training_GroundTruth.csv").read_text().splitlines()
    melanoma = next(row.split(",")[0] for row in truth[1:] if row.split(",")[1] == "1.0")
    lesion = synth / "isic2019" / "ISIC_2019_Training_Input" / f"{melanoma}.jpg"
    shutil.copy(lesion, folder / "lesion.jpg")
    # stored 192 wide x 128 high, shown (and scored) 128 wide x 192 high: EXIF orientation 6
    stored = np.asarray(Image.open(lesion))[32:160]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "rotated.jpg", quality=95, exif=exif)
    (folder / "fake.jpg").write_text("not an image, whatever its name says\n")
    Image.fromarray(stored).save(folder / ".hidden.png")
    (root / "secret.png").write_bytes(b"SECRET-CONTENT")
    (folder / "link.png").symlink_to(root / "secret.png")
    return folder


@pytest.fixture(scope="module")
def indexes(images, tmp_path_factory, tiny_exports):
    """A folder of archive indexes: `tiny` (synthetic lesions and lesion.jpg), two unusable.

    `tiny` is embedded by a features export of the scorers' tiny VGG16; `unfinished`
    is a build that did not finish, `moved` names a model file that is gone.
    """
    root = tmp_path_factory.mktemp("explore-index")
    features = copy_export(tiny_exports("vgg16_tiny", "torch", "features"), root / "model")
    synth = generate(
        root / "archive", SynthConfig(per_class=4, cases=1, size=64, views_per_lesion=2)
    )
    archive = read_archive(synth)
    changing = root / "changing.png"  # a row whose file a test rewrites (and restores)
    Image.open(images / "cases" / "CASE001" / "0.jpg").save(changing)
    extra = (
        ArchiveItem("lesion.jpg", images / "lesion.jpg", None, "MEL", "IL_QUERY"),
        ArchiveItem("changing.png", changing, None, "NV", "IL_CHANGING"),
    )
    archive = dataclasses.replace(archive, items=(*archive.items, *extra))
    folder = root / "indexes"
    build(features, archive, folder / "tiny", BuildOptions(prefer_gpu=False))
    for name, edit in (
        ("unfinished", lambda m: {**m, "complete": False}),
        ("moved", lambda m: {**m, "model": {**m["model"], "file": str(root / "gone.onnx")}}),
    ):
        shutil.copytree(folder / "tiny", folder / name)
        manifest = folder / name / "manifest.json"
        manifest.write_text(json.dumps(edit(json.loads(manifest.read_text()))))
    return folder


@pytest.fixture(scope="module")
def server(models, images, indexes, tmp_path_factory):
    """The explorer on 127.0.0.1, a free port, in a thread; `tiny` is its one usable index."""
    scorers = load_scorers(find_scorers(models[0]), prefer_gpu=False)
    uploads = tmp_path_factory.mktemp("explore-uploads")
    opened, problems = load_indexes(find_indexes([indexes]), prefer_gpu=False)
    app = Explorer(
        scorers, images, uploads, UPLOAD_CAP, PIXEL_CAP, synthetic_images=True,
        indexes=opened, index_problems=problems,
    )  # fmt: skip
    httpd = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def call(server, method, path, body=None, headers=None):
    """One raw HTTP request (no client-side path normalisation); (status, headers, body)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post_json(server, path, payload):
    data = json.dumps(payload).encode()
    status, _, body = call(server, "POST", path, data, {"Content-Type": "application/json"})
    return status, json.loads(body)


def cli_distance(model, image, other, box_a, box_b):
    args = [str(model), str(image), str(other), "--json", "--cpu"]
    args += ["--region-a", box_a] if box_a else []
    args += ["--region-b", box_b] if box_b else []
    result = run_module("evaluation.score", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["distance"]


# ------------------------------------------------------------------ server


def test_scorers_found_and_listing(server, models, images):
    assert find_scorers(models[0]) == models[1]  # the classifier and the orphan are left out
    status, _, body = call(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and len(info["scorers"]) == 5
    assert sorted((s["metric"], s["origin"]) for s in info["scorers"]) == sorted(
        [(m, o) for m in ("lpips", "dists") for o in ("torch", "keras")] + [("lpips", "torch")]
    )
    assert info["synthetic_images"] is True and info["max_upload_bytes"] == UPLOAD_CAP
    names = [i["name"] for i in json.loads(call(server, "GET", "/api/images")[2])["images"]]
    assert names == [
        "cases/CASE001/0.jpg", "cases/CASE001/1.jpg", "cases/CASE001/2.jpg",
        "fake.jpg", "lesion.jpg", "rotated.jpg",
    ]  # fmt: skip
    status, headers, page = call(server, "GET", "/")
    assert status == 200 and b"dermsim region explorer" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for name in ("explore.js", "explore.css"):
        assert call(server, "GET", f"/static/{name}")[0] == 200
    static = b"".join(call(server, "GET", f"/static/{n}")[2] for n in ("explore.js", "explore.css"))
    assert b"http://" not in static + page and b"https://" not in static + page  # offline


def test_page_numbers_equal_the_score_cli(server, models, images):
    lesion = images / "lesion.jpg"
    box_a, box_b = "60,50,64,60", "12,70,48,52"
    status, result = post_json(
        server,
        "/api/compare",
        {"image_a": "lesion.jpg", "box_a": box_a, "image_b": "lesion.jpg", "box_b": box_b},
    )
    assert status == 200, result
    assert [r["metric"] for r in result["results"]] == ["dists"] * 2 + ["lpips"] * 3
    assert [r["masked"] for r in result["results"]] == [False] * 4 + [True]
    assert all(r["region"] is None for r in result["results"])  # no outline drawn
    for row, path in zip(result["results"], models[1], strict=True):
        assert row["scorer"] == path.stem and row["error"] is None
        expected = cli_distance(path, lesion, lesion, box_a, box_b)
        assert row["distance"] == pytest.approx(expected, abs=1e-6)
    # crops as fed (regions of two sizes: fitted to 32 px) and one heat map per LPIPS scorer
    assert [(c["size"], c["fitted"]) for c in result["crops"]] == [([32, 32], True)]
    labels = {r["label"] for r in result["results"]}
    assert len(labels) == 5 and all(" export" in label for label in labels)
    crop = Image.open(io.BytesIO(_data(result["crops"][0]["a"])))
    assert crop.size == (32, 32)
    assert len(result["maps"]) == 3 and all(m["max"] > 0 for m in result["maps"])
    assert Image.open(io.BytesIO(_data(result["maps"][0]["image"]))).size == (32, 32)


# the lesion of lesion.jpg, roughly (source pixels), and a smaller outline on normal skin
OUTLINE_A = "62,52 120,50 128,96 104,122 66,112"
OUTLINE_B = "10,88 48,84 52,130 14,136"


def _expected(path, image, region_a, region_b, other=None):
    """`Scorer.score` of two regions; an outline ("x1,y1 ...") under its mask (masked
    scorers) or by its bounding box (the others), as the explorer scores it."""
    scorer = Scorer(path, prefer_gpu=False)
    other = other or image

    def region(where, file):
        if where and " " in where:
            mask = polygon_mask(where, decode_image(file).shape)
            return mask if scorer.masked else mask.box
        return where or None

    return scorer.score(image, other, region(region_a, image), region(region_b, other))


def test_outlines_are_masks_to_masked_scorers_and_boxes_to_the_others(server, models, images):
    lesion = images / "lesion.jpg"
    mask_a = polygon_mask(OUTLINE_A, decode_image(lesion).shape)
    request = {"image_a": "lesion.jpg", "polygon_a": OUTLINE_A, "image_b": "lesion.jpg"}
    cases = [({**request, "box_b": "12,70,48,52"}, "12,70,48,52"),
             ({**request, "polygon_b": OUTLINE_B}, OUTLINE_B)]  # fmt: skip
    for body, region_b in cases:
        status, result = post_json(server, "/api/compare", body)
        assert status == 200, result
        assert result["box_a"] == "" and result["polygon_a"] == OUTLINE_A
        assert result["outline_box_a"] == box_text(mask_a.box)
        for row, path in zip(result["results"], models[1], strict=True):
            assert row["scorer"] == path.stem and row["error"] is None, row
            assert row["region"] == ("outline" if row["masked"] else "bounding box")
            expected = _expected(path, lesion, OUTLINE_A, region_b)
            assert row["distance"] == pytest.approx(expected, abs=1e-6), row["scorer"]
        assert [r["masked"] for r in result["results"]].count(True) == 1
    # the outline changes what a masked scorer sees, not what the others see
    by_box = post_json(server, "/api/compare", {
        **request, "polygon_a": "", "box_a": box_text(mask_a.box), "polygon_b": OUTLINE_B,
    })[1]  # fmt: skip
    masked = [r["masked"] for r in by_box["results"]]
    pairs = list(zip(result["results"], by_box["results"], masked, strict=True))
    assert all(
        o["distance"] == pytest.approx(b["distance"], abs=1e-6) for o, b, m in pairs if not m
    )
    assert all(o["distance"] != pytest.approx(b["distance"], abs=1e-4) for o, b, m in pairs if m)
    # the crops as shown: dimmed outside the outline, as they are inside it
    crop = result["crops"][0]
    assert crop["outline"] is True and by_box["crops"][0]["outline"] is True
    dimmed = np.asarray(Image.open(io.BytesIO(_data(crop["a"]))), np.float32)
    plain = np.asarray(Image.open(io.BytesIO(_data(by_box["crops"][0]["a"]))), np.float32)
    assert dimmed.shape == plain.shape and (dimmed <= plain + 1).all()
    assert dimmed.mean() < 0.95 * plain.mean() and np.isclose(dimmed, plain, atol=1).mean() > 0.5
    # the history keeps the outlines (the comparison before the one by box)
    outlined, boxed = json.loads(call(server, "GET", "/api/history")[2])["history"][-2:]
    assert (outlined["box_a"], outlined["polygon_a"]) == ("", OUTLINE_A)
    assert (outlined["box_b"], outlined["polygon_b"]) == ("", OUTLINE_B)
    assert (boxed["box_a"], boxed["polygon_a"]) == (box_text(mask_a.box), "")


def test_find_similar_pools_under_an_outline(server, indexes, images):
    from bridge.core.data.masks import Outline
    from evaluation.index import Index

    request = {"index": "tiny", "image": "lesion.jpg", "polygon": OUTLINE_A, "k": 4}
    status, outlined = post_json(server, "/api/similar", request)
    assert status == 200, outlined
    assert outlined["polygon"] == OUTLINE_A and outlined["box"] == "62,50,67,73"
    # the neighbours of Index.query under the same outline (python -m evaluation.index
    # query ... --polygon), not those of its bounding box
    index = Index(indexes / "tiny", prefer_gpu=False)
    expected = index.query(images / "lesion.jpg", Outline.of_polygon(OUTLINE_A), k=4)
    assert [n["id"] for n in outlined["neighbours"]] == [h.id for h in expected]
    assert [n["distance"] for n in outlined["neighbours"]] == pytest.approx(
        [h.distance for h in expected], abs=1e-6
    )
    boxed = post_json(server, "/api/similar", {**request, "polygon": "", "box": outlined["box"]})
    assert [n["distance"] for n in boxed[1]["neighbours"]] != pytest.approx(
        [n["distance"] for n in outlined["neighbours"]], abs=1e-6
    )
    both = post_json(server, "/api/similar", {**request, "box": "1,1,20,20"})
    assert both[0] == 400 and "not both" in both[1]["error"]


def _data(url):
    import base64

    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.split(",", 1)[1])


def test_exif_orientation_is_respected(server, models, images):
    status, headers, png = call(server, "GET", "/api/image/rotated.jpg")
    assert status == 200 and headers["Content-Type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(png)))
    decoded = decode_image(images / "rotated.jpg")
    assert shown.shape == decoded.shape == (192, 128, 3)  # turned upright
    assert np.array_equal(shown, np.rint(decoded * 255).astype(np.uint8))
    # a region that fits only the upright image (y + h = 180 > 128 stored rows)
    box = "20,120,100,60"
    status, result = post_json(
        server,
        "/api/compare",
        {"image_a": "rotated.jpg", "box_a": box, "image_b": "cases/CASE001/1.jpg", "box_b": ""},
    )
    assert status == 200, result
    rotated, case = images / "rotated.jpg", images / "cases" / "CASE001" / "1.jpg"
    lpips_torch = next(p for p in models[1] if p.stem.endswith("lpips-torch"))
    by_id = {r["scorer"]: r["distance"] for r in result["results"]}
    assert by_id[lpips_torch.stem] == pytest.approx(
        cli_distance(lpips_torch, rotated, case, box, None), abs=1e-6
    )
    for path in models[1]:
        direct = Scorer(path, prefer_gpu=False).score(rotated, case, box_a=box)
        assert by_id[path.stem] == pytest.approx(direct, abs=1e-6)


@pytest.mark.parametrize(
    "request_, status, message",
    [
        ({"box_a": "150,100,50,30"}, 400, "lies outside the 192x192 image"),
        ({"box_a": "0,0,0,10"}, 400, "w and h must be >= 1"),
        ({"box_b": "10,10,4,30"}, 400, "draw at least 8x8"),
        ({"box_a": [1, 2, 3]}, 400, "expected 'x,y,w,h'"),
        ({"image_b": ""}, 400, "image_b: expected the name"),
        ({"image_a": "nope.jpg"}, 404, "no image 'nope.jpg'"),
        ({"image_a": "fake.jpg"}, 400, "unreadable image"),
        ({"polygon_a": "10,10 50,10"}, 400, "outline A: polygon '10,10 50,10': 2 point(s)"),
        ({"polygon_b": "10,10 60,12 300,40"}, 400, "point 300,40 lies outside the 192x192"),
        ({"polygon_a": "10,10 x 30,40"}, 400, "polygon point 'x': expected x,y"),
        ({"polygon_a": [[10, 10], [50, 10], [30, 40]]}, 400, "outline A: expected 'x1,y1"),
        ({"polygon_b": "10,10 14,10 12,14"}, 400, "outline B spans 5x5 px; draw at least 8x8"),
        ({"polygon_a": " ".join(["1,1"] * 2001)}, 400, "2001 points; expected at most 2000"),
        (
            {"box_a": "10,10,40,40", "polygon_a": "10,10 50,10 30,40"},
            400,
            "region A: give box_a (a box) or polygon_a (an outline), not both",
        ),
    ],
)
def test_bad_comparisons_get_a_message(server, request_, status, message):
    payload = {"image_a": "lesion.jpg", "box_a": "", "image_b": "lesion.jpg", "box_b": ""}
    got, body = post_json(server, "/api/compare", {**payload, **request_})
    assert got == status and message in body["error"], body
    assert "\n" not in body["error"] and len(body["error"]) <= 500


def test_nothing_outside_the_given_folders_is_served(server, images):
    secret = images.parent / "secret.png"
    paths = [
        "/api/image/../secret.png",
        "/api/image/..%2Fsecret.png",
        "/api/image/%2e%2e%2fsecret.png",
        "/api/image/cases%2F..%2F..%2Fsecret.png",
        "/api/image/" + quote(str(secret), safe=""),
        "/api/image/" + quote(str(secret)),
        "/api/image//etc/passwd",
        "/api/image/link.png",  # a symlink out of the folder is not listed
        "/api/image/.hidden.png",
        "/static/../explore.py",
        "/static/%2e%2e/explore.py",
        "/static/..%2Fscore.py",
        "/static/" + quote(str(Path(__file__).resolve()), safe=""),
        "/../../etc/passwd",
    ]
    for path in paths:
        status, _, body = call(server, "GET", path)
        assert status in (400, 404), path
        assert b"SECRET" not in body and b"import" not in body, path
    status, body = post_json(
        server, "/api/compare", {"image_a": "../secret.png", "box_a": "", "image_b": "lesion.jpg"}
    )
    assert status == 404 and "no image" in body["error"]
    # a page on another host name (DNS rebinding) and a cross-origin POST are refused
    assert call(server, "GET", "/api/info", headers={"Host": "evil.example"})[0] == 403
    status, _, _ = call(
        server, "POST", "/api/history/clear", b"{}",
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 403


def test_uploads_are_capped_and_checked(server):
    def upload(data, name):
        path = f"/api/upload?name={quote(name)}"
        status, _, body = call(server, "POST", path, data, {"Content-Type": "image/jpeg"})
        return status, json.loads(body)

    status, body = upload(b"hello, I am a text file\n", "notes.jpg")
    assert status == 400 and "notes.jpg: unreadable image" in body["error"]
    status, body = upload(os.urandom(UPLOAD_CAP + 1), "big.jpg")
    assert status == 413 and f"exceeds the upload limit of {UPLOAD_CAP} bytes" in body["error"]
    out = io.BytesIO()
    Image.new("RGB", (1250, 1000), (200, 150, 120)).save(out, "PNG")  # small file, many pixels
    status, body = upload(out.getvalue(), "huge.png")
    assert status == 400 and f"exceeds the limit of {PIXEL_CAP}" in body["error"]
    assert upload(b"", "empty.png")[0] == 400

    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray((rng.uniform(0, 1, (60, 90, 3)) * 255).astype(np.uint8)).save(out, "PNG")
    status, body = upload(out.getvalue(), "../../my photo.png")
    assert status == 200, body
    assert body["name"].startswith("upload:") and (body["width"], body["height"]) == (90, 60)
    assert body["label"] == "my photo.png (upload)"  # the client's path is dropped
    listed = json.loads(call(server, "GET", "/api/images")[2])["images"]
    assert body["name"] in [i["name"] for i in listed]
    status, result = post_json(
        server,
        "/api/compare",
        {"image_a": body["name"], "box_a": "", "image_b": body["name"], "box_b": ""},
    )
    assert status == 200 and all(abs(r["distance"]) <= 1e-6 for r in result["results"])


def test_history_csv_round_trips_through_score_pairs(server, models, images, tmp_path):
    assert call(server, "POST", "/api/history/clear", b"{}")[0] == 200
    requests = [
        {"image_a": "lesion.jpg", "box_a": "60,50,64,60", "box_b": "12,70,48,52"},
        {"image_a": "cases/CASE001/0.jpg", "box_a": "", "box_b": "20,120,100,60"},
        {"image_a": "lesion.jpg", "polygon_a": OUTLINE_A, "box_b": "12,70,48,52"},
        {"image_a": "rotated.jpg", "box_a": "", "polygon_b": OUTLINE_B},
    ]
    images_b = ["lesion.jpg", "rotated.jpg", "lesion.jpg", "lesion.jpg"]
    for request, image_b in zip(requests, images_b, strict=True):
        assert post_json(server, "/api/compare", {**request, "image_b": image_b})[0] == 200
    history = json.loads(call(server, "GET", "/api/history")[2])["history"]
    assert [h["id"] for h in history] == ["cmp1", "cmp2", "cmp3", "cmp4"]
    status, headers, body = call(server, "GET", "/api/history.csv")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    table = tmp_path / "explorer-history.csv"
    table.write_bytes(body)
    reader = csv.DictReader(io.StringIO(body.decode()))
    assert reader.fieldnames[:7] == [
        "id", "image_a", "box_a", "image_b", "box_b", "polygon_a", "polygon_b"
    ]  # fmt: skip
    rows = list(reader)
    assert rows[0]["box_a"] == "60,50,64,60" and rows[1]["box_a"] == ""
    assert '"60,50,64,60"' in body.decode()  # boxes quoted
    assert [(r["box_a"], r["polygon_a"]) for r in rows[2:]] == [("", OUTLINE_A), ("", "")]
    assert [(r["box_b"], r["polygon_b"]) for r in rows[2:]] == [
        ("12,70,48,52", ""),
        ("", OUTLINE_B),
    ]
    assert all(not r["polygon_a"] and not r["polygon_b"] for r in rows[:2])
    pairs = read_region_pairs(table)  # the project's reader takes it as it is
    assert [p.id for p in pairs.pairs] == ["cmp1", "cmp2", "cmp3", "cmp4"]
    assert pairs.pairs[1].image_b == (images / "rotated.jpg").resolve()
    # a box scorer sees the outlines' bounding boxes, a masked scorer the outlines
    for kind in ("lpips", "lpips_masked"):
        model = next(p for p in models[1] if p.stem.endswith(f"-{kind}-torch"))
        out = tmp_path / f"{model.stem}.csv"
        args = ("--pairs", str(table), "--out", str(out), "--cpu")
        result = run_module("evaluation.score", str(model), *args)
        assert result.returncode == 0, result.stderr
        rescored = list(csv.DictReader(out.open()))
        for row, again in zip(rows, rescored, strict=True):
            assert again["id"] == row["id"]
            assert float(again["lpips"]) == pytest.approx(float(row[model.stem]), abs=1e-6)
    assert post_json(server, "/api/history/clear", {})[1] == {"history": []}


# ------------------------------------------------------------------ find similar


def test_find_similar_equals_the_index_query_cli(server, indexes, images):
    lesion, box = images / "lesion.jpg", "60,50,64,60"
    request = {"index": "tiny", "image": "lesion.jpg", "box": box, "k": 5}
    status, result = post_json(server, "/api/similar", request)
    assert status == 200, result
    args = [str(indexes / "tiny"), str(lesion), "--region", box, "-k", "5", "--json", "--cpu"]
    cli = run_module("evaluation.index", "query", *args)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)["neighbours"]
    assert [n["id"] for n in result["neighbours"]] == [n["id"] for n in expected]
    for got, want in zip(result["neighbours"], expected, strict=True):
        assert got["distance"] == pytest.approx(want["distance"], abs=1e-6)
        assert {k: got[k] for k in ("rank", "label", "lesion_id", "box")} == {
            k: want[k] for k in ("rank", "label", "lesion_id", "box")
        }
        assert "path" not in got and got["image"] == f"index:tiny/{got['id']}"
    assert result["box"] == box and result["search"] == "exact" and result["excluded"] == []
    assert result["query"]["size"] == [32, 32]

    # the whole image: itself first; its own lesion left out: Index.query's answer
    index = Index(indexes / "tiny", prefer_gpu=False)
    whole = post_json(server, "/api/similar", {**request, "box": "", "k": 64})[1]
    assert len(whole["neighbours"]) == len(index) == whole["count"]
    assert whole["neighbours"][0]["id"] == "lesion.jpg"
    assert whole["neighbours"][0]["distance"] == pytest.approx(0, abs=1e-5)
    group = index.group_of(lesion)
    status, own = post_json(server, "/api/similar", {**request, "box": "", "exclude_own": True})
    assert status == 200 and own["excluded"] == sorted(group) == ["IL_QUERY", "lesion.jpg"]
    want = index.query(lesion, None, 5, group)
    assert [n["id"] for n in own["neighbours"]] == [h.id for h in want]
    for got, hit in zip(own["neighbours"], want, strict=True):
        assert got["distance"] == pytest.approx(hit.distance, abs=1e-6)

    def group_of(image):
        status, _, body = call(server, "GET", f"/api/similar/group?index=tiny&image={image}")
        assert status == 200
        return json.loads(body)

    assert group_of("lesion.jpg")["group"] == ["IL_QUERY", "lesion.jpg"]
    assert group_of("rotated.jpg") == {
        "index": "tiny", "image": "rotated.jpg", "in_index": False, "group": []
    }  # fmt: skip


@pytest.mark.parametrize(
    "request_, status, message",
    [
        ({"index": "nope"}, 404, "no index 'nope' (open: tiny)"),
        ({"index": "moved"}, 404, "no index 'moved'"),  # left out: not open
        ({"index": None}, 400, "index: expected the name"),
        ({"image": "../secret.png"}, 404, "no image '../secret.png'"),
        ({"image": "fake.jpg"}, 400, "unreadable image"),
        ({"box": "150,150,60,60"}, 400, "lies outside the 192x192 image"),
        ({"box": "10,10,4,4"}, 400, "draw at least 8x8"),
        ({"k": 0}, 400, "k: expected 1 to 64"),
        ({"k": 2.5}, 400, "k: expected a whole number"),
        ({"k": "8"}, 400, "k: expected a whole number"),
        ({"exclude_own": "yes"}, 400, "exclude_own: expected true or false"),
        ({"image": "rotated.jpg", "exclude_own": True}, 400, "is not in index 'tiny'"),
    ],
)
def test_bad_similar_requests_get_a_message(server, request_, status, message):
    payload = {"index": "tiny", "image": "lesion.jpg", "box": "", "k": 4}
    got, body = post_json(server, "/api/similar", {**payload, **request_})
    assert got == status and message in body["error"], body


def test_thumbnails_only_of_index_rows(server, indexes, images):
    status, headers, body = call(server, "GET", "/api/thumb?index=tiny&id=lesion.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg", body[:200]
    thumb = Image.open(io.BytesIO(body))
    assert thumb.format == "JPEG" and thumb.size == (128, 128)  # 192 px, made smaller
    expected = Image.fromarray(np.rint(decode_image(images / "lesion.jpg") * 255).astype(np.uint8))
    expected = np.asarray(expected.resize((128, 128), Image.Resampling.LANCZOS), np.float32)
    assert np.abs(np.asarray(thumb, np.float32) - expected).mean() < 4  # the image, in JPEG
    index = Index(indexes / "tiny", prefer_gpu=False)
    small = next(str(i) for i in index.meta["id"] if str(i).startswith("SYN_"))
    status, _, body = call(server, "GET", f"/api/thumb?index=tiny&id={small}")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (64, 64)  # never enlarged

    secret = images.parent / "secret.png"
    refused = {
        "/api/thumb?index=tiny&id=" + quote(str(secret), safe=""): 404,
        "/api/thumb?index=tiny&id=..%2Fsecret.png": 404,
        "/api/thumb?index=tiny&id=link.png": 404,
        "/api/thumb?index=tiny&path=" + quote(str(secret), safe=""): 400,
        "/api/thumb?index=tiny": 400,
        "/api/thumb?index=tiny&id=lesion.jpg&id=rotated.jpg": 400,
        "/api/thumb?index=nope&id=lesion.jpg": 404,
        "/api/thumb?index=unfinished&id=lesion.jpg": 404,
        "/api/thumb/../../secret.png": 404,
        "/api/image/" + quote("index:tiny/../secret.png", safe=""): 404,
        "/api/image/" + quote(f"index:tiny/{secret}", safe=""): 404,
        "/api/image/" + quote("index:nope/lesion.jpg", safe=""): 404,
    }
    for path, expected_status in refused.items():
        status, headers, body = call(server, "GET", path)
        assert status == expected_status, (path, status, body)
        assert headers["Content-Type"] == "application/json" and "error" in json.loads(body)
        assert b"SECRET" not in body

    # a row's file changed since the build: no thumbnail of other pixels than indexed
    changing = Path(str(index.meta["path"][list(index.meta["id"]).index("changing.png")]))
    original = changing.read_bytes()
    try:
        Image.new("RGB", (40, 40), (0, 255, 0)).save(changing)
        status, _, body = call(server, "GET", "/api/thumb?index=tiny&id=changing.png")
        assert status == 400 and "changed since index 'tiny' was built" in json.loads(body)["error"]
    finally:
        changing.write_bytes(original)
    assert call(server, "GET", "/api/thumb?index=tiny&id=changing.png")[0] == 200

    # an index row is an image the page may load as B, and compare with
    status, _, png = call(server, "GET", "/api/image/" + quote(f"index:tiny/{small}", safe=""))
    assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 64)
    request = {"image_a": "lesion.jpg", "box_a": "", "image_b": f"index:tiny/{small}", "box_b": ""}
    status, result = post_json(server, "/api/compare", request)
    assert status == 200 and all(r["error"] is None for r in result["results"]), result


def test_unusable_indexes_are_reported(server, indexes, tmp_path, monkeypatch):
    from evaluation.explore_app import default_indexes

    info = json.loads(call(server, "GET", "/api/info")[2])
    index = Index(indexes / "tiny", prefer_gpu=False)
    assert [(i["id"], i["label"]) for i in info["indexes"]] == [
        ("tiny", f"vgg16_tiny-features-torch · vgg16_tiny · {len(index)} images · relu5_3/gap")
    ]
    assert info["indexes"][0]["synthetic"] is True and info["default_k"] == 8
    problems = sorted(info["index_problems"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("moved: left out:") and "gone.onnx" in problems[0]
    assert problems[1].startswith("unfinished: left out: the index build did not finish")

    tiny = indexes / "tiny"
    assert find_indexes([tiny, indexes]) == [tiny, indexes / "moved", indexes / "unfinished"]
    with pytest.raises(FileNotFoundError, match="no such index folder"):
        find_indexes([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match=r"not an index folder .* and holds none"):
        find_indexes([tmp_path])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tiny").symlink_to(tiny)
    opened, problems = load_indexes([tiny, tmp_path / "other" / "tiny"], prefer_gpu=False)
    assert [i.name for i in opened] == ["tiny", "tiny-2"] and problems == []
    # no --index: the index folders under index/ of the current folder, if any
    monkeypatch.chdir(tmp_path)
    assert default_indexes() == []
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "tiny").symlink_to(tiny)
    assert default_indexes() == [Path("index") / "tiny"]


# ------------------------------------------------------------------ CLI


def test_cli_without_scorers_says_what_to_run(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_module("evaluation.explore", "--models", str(tmp_path / "empty"))
    assert_one_line_error(result, "no LPIPS or DISTS scorers", "python -m bridge.export")
    result = run_module("evaluation.explore", "--models", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "no such models folder", "--kind lpips,dists")
    args = ("--models", str(tmp_path / "empty"), "--index", str(tmp_path / "empty"))
    result = run_module("evaluation.explore", *args)
    assert_one_line_error(result, "not an index folder", "python -m evaluation.index build")


def test_default_models_folder_is_where_the_demo_exports(models, tmp_path, monkeypatch):
    """No --models: models/ if it has scorers, else models/demo; a parent names its children."""
    from evaluation.explore_app import default_models_dir

    monkeypatch.chdir(tmp_path)
    assert default_models_dir() == Path("models")  # nothing anywhere: the plain default
    demo = tmp_path / "models" / "demo"
    demo.mkdir(parents=True)
    for path in models[1][:1]:
        for f in (path, path.with_suffix(".json")):
            (demo / f.name).symlink_to(f)
    assert default_models_dir() == Path("models") / "demo"
    with pytest.raises(ValueError, match=r"models/demo holds some; pass --models models/demo"):
        find_scorers(Path("models"))


def test_cli_serves_on_a_free_loopback_port(models, images, indexes, caplog):
    process = subprocess.Popen(
        [sys.executable, "-m", "evaluation.explore", "--models", str(models[0]),
         "--images", str(images), "--index", str(indexes), "--port", "0", "--cpu"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, process.stderr.read() if process.poll() else line
        url = line.split()[3]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        assert len(info["scorers"]) == 5 and [i["id"] for i in info["indexes"]] == ["tiny"]
        assert len(info["index_problems"]) == 2  # reported, not fatal
        conn.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log
    uploads = Path(log.split("uploads go to ", 1)[1].split(" (removed on exit)")[0])
    assert uploads.name.startswith("dermsim-uploads-") and not uploads.exists()
    # binding elsewhere is allowed, with a warning
    scorers = load_scorers(find_scorers(models[0])[:1], prefer_gpu=False)
    app = Explorer(scorers, images, images.parent / "uploads-warn")
    with caplog.at_level("WARNING", logger="evaluation.explore_http"):
        make_server(app, "0.0.0.0", 0).server_close()
    assert "reachable from other machines" in caplog.text


def test_explorer_imports_neither_torch_nor_tensorflow():
    code = (
        "import sys, evaluation.explore\n"
        "loaded = sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ------------------------------------------------------------------ browser


def _browser():
    """Playwright and Debian's chromium, or a skip (a failure under CI) naming what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -c constraints.txt playwright)"
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(f"{missing}; set CI=1 to make this a failure")
    return sync_playwright


def _save_screenshot(page, tmp_path):
    """Always take the screenshot; write docs/explorer.png when DERMSIM_UPDATE_SCREENSHOTS=1."""
    raw = tmp_path / "explorer.png"
    page.screenshot(path=str(raw), full_page=True)
    assert raw.stat().st_size > 0
    if os.environ.get("DERMSIM_UPDATE_SCREENSHOTS") == "1":
        image = Image.open(raw).convert("RGB")
        image = image.quantize(
            colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        SCREENSHOT.parent.mkdir(exist_ok=True)
        image.save(SCREENSHOT, optimize=True)
        assert SCREENSHOT.stat().st_size < 300_000


def test_page_in_a_real_browser(server, models, images, indexes, tmp_path):
    sync_playwright = _browser()
    assert call(server, "POST", "/api/history/clear", b"{}")[0] == 200
    started = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 860})
        problems = []
        page.on("pageerror", lambda err: problems.append(str(err)))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
        page.on("request", lambda r: r.url.startswith(server.url) or problems.append(r.url))
        sent = []  # the comparisons the page asked for
        page.on("request", lambda r: r.url.endswith("/api/compare") and sent.append(r.post_data))
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='true']")
        assert "5 scorers loaded" in page.inner_text("#summary")

        page.select_option("#image-a", "lesion.jpg")
        page.wait_for_selector("#img-a[data-loaded='lesion.jpg']")
        canvas = page.locator("#canvas-a").bounding_box()
        scale = canvas["width"] / 192  # screen pixels per source pixel at "fit"
        assert scale > 1.5

        def drag(x0, y0, x1, y1):  # source pixels -> a mouse drag on the canvas
            page.mouse.move(canvas["x"] + x0 * scale, canvas["y"] + y0 * scale)
            page.mouse.down()
            page.mouse.move(canvas["x"] + x1 * scale, canvas["y"] + y1 * scale, steps=5)
            page.mouse.up()

        drag(58, 46, 130, 118)  # A over the lesion
        drag(8, 84, 52, 140)  # B on normal skin

        def boxes():
            values = {
                k: int(page.input_value(f"#{k}"))
                for s in "ab"
                for k in (f"{s}-x", f"{s}-y", f"{s}-w", f"{s}-h")
            }
            return tuple(",".join(str(values[f"{s}-{k}"]) for k in "xywh") for s in "ab")

        box_a, box_b = boxes()
        for box, expected in ((box_a, (58, 46, 72, 72)), (box_b, (8, 84, 44, 56))):
            assert np.abs(np.array(box.split(","), int) - expected).max() <= 1, box
        # zoom 200%: the numbers stay in source pixels; a drag of 20 screen px moves B by 10
        page.select_option("#zoom", "2")
        canvas = page.locator("#canvas-a").bounding_box()
        assert canvas["width"] == pytest.approx(384, abs=1)
        scale = 2
        drag(30, 112, 40, 112)
        assert boxes()[0] == box_a
        moved = np.array(boxes()[1].split(","), int) - np.array(box_b.split(","), int)
        assert list(moved) == [10, 0, 0, 0]
        box_b = boxes()[1]
        page.select_option("#zoom", "fit")

        page.click("#compare")
        page.wait_for_selector("[data-testid=result-row] >> nth=4")
        lesion = images / "lesion.jpg"
        rows = page.locator("[data-testid=result-row]")
        assert rows.count() == 5
        for i in range(5):
            row = rows.nth(i)
            path = next(p for p in models[1] if p.stem == row.get_attribute("data-scorer"))
            expected = Scorer(path, prefer_gpu=False).score(lesion, lesion, box_a, box_b)
            cell = row.locator("[data-testid=distance]")
            assert float(cell.get_attribute("data-value")) == pytest.approx(expected, abs=1e-6)
            assert float(cell.inner_text()) == pytest.approx(expected, abs=6e-7)  # as shown
        assert page.locator("[data-testid=heat-map]").count() == 3
        assert page.locator("[data-testid=crop-a]").count() == 1
        assert page.locator("[data-testid=history-row]").count() == 1

        # find similar: region A in the index; thumbnails shown, distances of Index.query
        assert page.input_value("#index") == "tiny"
        page.wait_for_selector("#exclude-own:not([disabled])")  # lesion.jpg is in the index
        assert page.is_checked("#exclude-own")
        page.fill("#k", "6")
        page.click("#find-similar")
        page.wait_for_selector("[data-testid=neighbour] >> nth=5")
        page.wait_for_function(  # a function, not an expression: the page's CSP forbids eval
            "() => [...document.querySelectorAll('[data-testid=neighbour-thumb]')]"
            ".every((i) => i.complete)"
        )
        widths = page.eval_on_selector_all(
            "[data-testid=neighbour-thumb]", "images => images.map(i => i.naturalWidth)"
        )
        assert len(widths) == 6 and min(widths) > 0
        index = Index(indexes / "tiny", prefer_gpu=False)
        expected = index.query(lesion, box_a, 6, index.group_of(lesion))
        shown = page.locator("[data-testid=neighbour]")
        ids = [shown.nth(i).get_attribute("data-id") for i in range(shown.count())]
        assert ids == [h.id for h in expected] and "lesion.jpg" not in ids
        cells = page.locator("[data-testid=neighbour-distance]")
        for i, hit in enumerate(expected):
            assert float(cells.nth(i).get_attribute("data-value")) == pytest.approx(
                hit.distance, abs=1e-6
            )
            assert float(cells.nth(i).inner_text()) == pytest.approx(hit.distance, abs=6e-7)
        # a neighbour clicked: image B (two-image mode), region A kept
        shown.nth(0).locator("button").click()
        page.wait_for_selector(f"#img-b[data-loaded='index:tiny/{ids[0]}']")
        assert page.is_checked("#mode-two") and page.is_checked("#whole-b")
        assert ",".join(page.input_value(f"#a-{k}") for k in "xywh") == box_a

        # two images, whole: the same numbers as the API
        page.check("#mode-two")
        page.select_option("#image-b", "cases/CASE001/2.jpg")
        page.wait_for_selector("#img-b[data-loaded='cases/CASE001/2.jpg']")
        page.check("#whole-a")
        page.check("#whole-b")
        page.click("#compare")
        page.wait_for_selector("[data-testid=history-row] >> nth=1")
        shown = float(page.locator("[data-testid=distance]").first.get_attribute("data-value"))
        first = models[1][0]
        expected = Scorer(first, prefer_gpu=False).score(lesion, images / "cases/CASE001/2.jpg")
        assert shown == pytest.approx(expected, abs=1e-6)

        # outlines: a polygon on A by clicks, a free-hand outline on B by a drag
        def click(x, y):
            page.mouse.click(canvas["x"] + x * scale, canvas["y"] + y * scale)

        canvas = page.locator("#canvas-a").bounding_box()
        scale = canvas["width"] / 192
        page.keyboard.press("p")  # the polygon tool
        assert page.is_checked("#tool-polygon")
        click(30, 30)
        assert page.get_attribute("#a-outline", "data-points") == "1"
        page.keyboard.press("Escape")  # an unfinished outline cancelled
        assert page.locator("#a-outline").is_hidden()
        for x, y in ((62, 52), (120, 50), (128, 96), (104, 122), (66, 112), (30, 160)):
            click(x, y)
        page.keyboard.press("Backspace")  # the last point was a slip
        click(62, 52)  # the first point closes the outline
        assert page.get_attribute("#a-outline", "data-closed") == "true"
        assert page.get_attribute("#a-outline", "data-points") == "5"
        drag(128, 96, 134, 100)  # a vertex moved

        def bounds_a():  # the outline's bounding box, shown in the inputs
            return ",".join(page.input_value(f"#a-{k}") for k in "xywh")

        bounds = bounds_a()
        page.keyboard.press("+")  # zoom in from "fit": the next level up, 400 %
        assert page.input_value("#zoom") == "4"
        canvas, scale = page.locator("#canvas-a").bounding_box(), 4
        assert canvas["width"] == pytest.approx(768, abs=1) and bounds_a() == bounds
        drag(62, 52, 60, 50)  # a vertex moved at 400 %: 8 screen px are 2 source px
        page.select_option("#zoom", "fit")

        page.check("#tool-freehand")  # free-hand on B: one stroke around a circle
        canvas = page.locator("#canvas-b").bounding_box()
        scale = canvas["width"] / 192
        angles = np.linspace(0, 2 * np.pi, 60)
        circle = [(96 + 36 * np.cos(t), 96 + 30 * np.sin(t)) for t in angles]
        page.mouse.move(canvas["x"] + circle[0][0] * scale, canvas["y"] + circle[0][1] * scale)
        page.mouse.down()
        for x, y in circle[1:]:
            page.mouse.move(canvas["x"] + x * scale, canvas["y"] + y * scale, steps=2)
        page.mouse.up()
        assert page.get_attribute("#b-outline", "data-closed") == "true"
        assert 8 <= int(page.get_attribute("#b-outline", "data-points")) <= 40  # simplified

        page.click("#compare")
        page.wait_for_selector("[data-testid=history-row] >> nth=2")
        request = json.loads(sent[-1])
        assert "box_a" not in request and "box_b" not in request
        points = [tuple(map(float, p.split(","))) for p in request["polygon_a"].split()]
        assert len(points) == 5 and points[0] == (60, 50)
        assert (
            np.abs(np.subtract(points[1:], [(120, 50), (134, 100), (104, 122), (66, 112)])).max()
            <= 1
        )
        case = images / "cases/CASE001/2.jpg"
        rows = page.locator("[data-testid=result-row]")
        assert rows.count() == 5
        for i in range(5):
            row = rows.nth(i)
            path = next(p for p in models[1] if p.stem == row.get_attribute("data-scorer"))
            masked = "masked" in path.stem
            region = row.locator("[data-testid=region]")
            assert region.inner_text() == ("outline" if masked else "bounding box")
            expected = _expected(path, lesion, request["polygon_a"], request["polygon_b"], case)
            cell = row.locator("[data-testid=distance]")
            assert float(cell.get_attribute("data-value")) == pytest.approx(expected, abs=1e-6)
            assert float(cell.inner_text()) == pytest.approx(expected, abs=6e-7)
        masked = next(p for p in models[1] if "masked" in p.stem)
        shown = page.locator(f"[data-scorer='{masked.stem}'] [data-testid=distance]")
        args = ("--polygon-a", request["polygon_a"], "--polygon-b", request["polygon_b"])
        cli = run_module(
            "evaluation.score", str(masked), str(lesion), str(case), *args, "--json", "--cpu"
        )
        assert cli.returncode == 0, cli.stderr
        assert float(shown.get_attribute("data-value")) == pytest.approx(
            json.loads(cli.stdout)["distance"], abs=1e-6
        )
        assert "dimmed outside the outline" in page.inner_text("#crops")
        assert "outline (5 points" in page.inner_text("#history")
        last = list(
            csv.DictReader(io.StringIO(call(server, "GET", "/api/history.csv")[2].decode()))
        )[-1]
        assert (last["box_a"], last["polygon_a"]) == ("", request["polygon_a"])
        assert (last["box_b"], last["polygon_b"]) == ("", request["polygon_b"])
        page.wait_for_timeout(100)
        _save_screenshot(page, tmp_path)

        # a text file named .jpg: the page shows the decoder's message
        fake = tmp_path / "notes.jpg"
        fake.write_text("these are notes, not a photograph\n")
        assert page.locator("#error").is_hidden()
        page.set_input_files("#upload-a", str(fake))
        page.wait_for_selector("#error:not([hidden])")
        message = page.inner_text("#error-text")
        assert "Upload failed" in message and "notes.jpg: unreadable image" in message
        browser.close()
    assert not problems, problems  # no script error, nothing requested from elsewhere
    print(f"browser test: {time.perf_counter() - started:.1f} s")
