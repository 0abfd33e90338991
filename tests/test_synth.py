"""bridge.core.data.synth: the built-in synthetic set (layout, determinism, safety, signal)."""

import csv
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import assert_one_line_error, run_module
from PIL import Image
from scipy.stats import spearmanr

from bridge.core.data import synth
from bridge.core.data.ratings import read_rated_cases
from bridge.core.data.readers import is_synthetic
from bridge.core.data.synth import SynthConfig, ensure_synthetic, generate, read_manifest

SMALL = SynthConfig(seed=3, per_class=6, size=48, cases=8, raters=5, views_per_lesion=2)
ISIC_HEADER = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
META_HEADER = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
TRUTH_HEADER = [
    "case",
    "color_deviation",
    "texture_deviation",
    "color_category",
    "texture_category",
]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "set", SMALL)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_config_same_bytes(small, tmp_path):
    again = generate(tmp_path / "again", SMALL)
    first, second = files_of(small), files_of(again)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    other = files_of(generate(tmp_path / "other", SynthConfig(**{**SMALL.as_dict(), "seed": 4})))
    image = "isic2019/ISIC_2019_Training_Input/SYN_0000001.jpg"
    assert other[image] != first[image]


def test_layout(small):
    n_images = 3 * SMALL.per_class
    names = set(files_of(small))
    expected = {
        "SYNTHETIC",
        "manifest.json",
        "isic2019/ISIC_2019_Training_GroundTruth.csv",
        "isic2019/ISIC_2019_Training_Metadata.csv",
        "rated/ratings.csv",
        "rated/truth.csv",
        *(f"isic2019/ISIC_2019_Training_Input/SYN_{i:07d}.jpg" for i in range(1, n_images + 1)),
        *(f"rated/CASE{i:03d}/{k}.jpg" for i in range(1, SMALL.cases + 1) for k in range(3)),
        *(f"rated/CASE{i:03d}/0.mask.png" for i in range(1, SMALL.cases + 1)),
    }
    assert names == expected
    assert not [p for p in small.parent.iterdir() if p.name.startswith(".")]  # no temp folders


def test_marker_and_manifest(small):
    marker = (small / "SYNTHETIC").read_text()
    assert "SYNTHETIC DATA made by dermsim" in marker
    assert "per_class=6" in marker and "seed=3" in marker
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["synthetic"] is True
    assert manifest["generator"] == "dermsim.synth"
    assert manifest["version"] == synth.VERSION == 3
    assert manifest["config"] == {
        "seed": 3,
        "per_class": 6,
        "size": 48,
        "cases": 8,
        "raters": 5,
        "views_per_lesion": 2,
        "cases_per_patient": 3,
    }
    assert manifest["counts"]["patients"] == 3  # 3 + 3 + 2 cases
    assert manifest["counts"]["images"] == 18
    assert manifest["counts"]["lesions"] == 9
    assert manifest["counts"]["per_class"] == {"MEL": 6, "NV": 6, "BCC": 6}
    assert read_manifest(small) == manifest
    image = small / "isic2019" / "ISIC_2019_Training_Input" / "SYN_0000001.jpg"
    assert is_synthetic(image.parent)
    assert not is_synthetic(small.parent)


def test_ground_truth_is_one_hot(small):
    header, rows = read_csv(small / "isic2019" / "ISIC_2019_Training_GroundTruth.csv")
    assert header == ISIC_HEADER
    assert [r["image"] for r in rows] == sorted(r["image"] for r in rows)
    classes = Counter()
    for row in rows:
        values = [row[c] for c in ISIC_HEADER[1:]]
        assert set(values) <= {"1.0", "0.0"} and values.count("1.0") == 1, row
        classes[ISIC_HEADER[1 + values.index("1.0")]] += 1
    assert classes == {"MEL": 6, "NV": 6, "BCC": 6}


def test_every_image_decodes_to_size(small):
    images = sorted(small.rglob("*.jpg"))
    assert len(images) == 18 + 3 * SMALL.cases
    for path in images:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB", path
            assert image.size == (SMALL.size, SMALL.size), path


def test_views_of_a_lesion_share_its_id_and_class(small):
    header, meta = read_csv(small / "isic2019" / "ISIC_2019_Training_Metadata.csv")
    assert header == META_HEADER
    _, truth = read_csv(small / "isic2019" / "ISIC_2019_Training_GroundTruth.csv")
    label = {r["image"]: next(c for c in ISIC_HEADER[1:] if r[c] == "1.0") for r in truth}
    assert [r["image"] for r in meta] == [r["image"] for r in truth]
    groups = defaultdict(list)
    for row in meta:
        assert row["lesion_id"].startswith("SYNL_")
        groups[row["lesion_id"]].append(row)
    assert sorted(len(g) for g in groups.values()) == [2] * 9
    for rows in groups.values():
        assert len({label[r["image"]] for r in rows}) == 1
        assert len({(r["age_approx"], r["anatom_site_general"], r["sex"]) for r in rows}) == 1
    ages = {r["age_approx"] for r in meta} - {""}
    assert all(float(a) % 5 == 0 for a in ages)


def test_last_lesion_of_a_class_may_have_fewer_views(tmp_path):
    out = generate(tmp_path / "s", SynthConfig(per_class=5, views_per_lesion=2, size=16, cases=1))
    _, meta = read_csv(out / "isic2019" / "ISIC_2019_Training_Metadata.csv")
    assert len(meta) == 15
    assert sorted(Counter(r["lesion_id"] for r in meta).values()) == [1] * 3 + [2] * 6


def ratings_table(root: Path) -> tuple[list[str], np.ndarray]:
    """The rater columns of the wide ratings table (after CASES, GROUP) and their scores."""
    header, rows = read_csv(root / "rated" / "ratings.csv")
    scores = np.array([[float(r[h]) if r[h] else np.nan for h in header[2:]] for r in rows])
    return header[2:], scores


def test_ratings_wide_table(small):
    header, scores = ratings_table(small)
    raters = [f"R{j}" for j in range(1, 6)]
    assert header == [f"{r}_{a}" for r in raters for a in ("color", "texture")]
    names, rows = read_csv(small / "rated" / "ratings.csv")
    assert names[:2] == ["CASES", "GROUP"]
    assert [r["CASES"] for r in rows] == [f"CASE{i:03d}" for i in range(1, 9)]
    assert [r["GROUP"] for r in rows] == ["PAT001"] * 3 + ["PAT002"] * 3 + ["PAT003"] * 2
    present = scores[~np.isnan(scores)]
    assert set(np.unique(present)) <= {1.0, 2.0, 3.0, 4.0}
    missing = np.isnan(scores)
    assert missing[:, -2:].any() and not missing[:, :-2].any()  # only the last rater has gaps
    manifest = read_manifest(small)
    assert manifest["counts"]["missing_ratings"] == int(missing.sum())


def test_truth_agrees_with_mean_rating(small):
    header, rows = read_csv(small / "rated" / "truth.csv")
    assert header == TRUTH_HEADER
    assert [r["case"] for r in rows] == [f"CASE{i:03d}" for i in range(1, 9)]
    ratings_header, scores = ratings_table(small)
    for aspect in ("color", "texture"):
        deviation = np.array([float(r[f"{aspect}_deviation"]) for r in rows])
        category = np.array([int(r[f"{aspect}_category"]) for r in rows])
        assert ((deviation >= 0) & (deviation <= 1)).all()
        assert np.array_equal(category, synth.rating_category(deviation))
        columns = [i for i, h in enumerate(ratings_header) if h.endswith(f"_{aspect}")]
        mean = np.nanmean(scores[:, columns], axis=1)
        assert spearmanr(deviation, mean).statistic > 0.5, aspect


def test_rated_cases_come_in_patients_sharing_their_skin(tmp_path):
    """Several cases per patient (the GROUP column), and a patient's normal skin is alike."""
    out = generate(tmp_path / "s", SynthConfig(per_class=1, size=32, cases=24, raters=2))
    data = read_rated_cases(out / "rated", out / "rated" / "ratings.csv")
    by_patient = defaultdict(list)
    for case in data.cases:
        by_patient[case.group].append(case)
    assert len(by_patient) == 8 and {len(v) for v in by_patient.values()} == {3}
    assert read_manifest(out)["counts"]["patients"] == 8

    def skin(case):  # mean colour of the normal-skin regions
        return np.mean(
            [np.asarray(Image.open(p), np.float32).mean((0, 1)) for p in case.comparisons], 0
        )

    colour = {c.id: skin(c) for c in data.cases}
    within, between = [], []
    for a in data.cases:
        for b in data.cases:
            if a.id < b.id:
                gap = np.linalg.norm(colour[a.id] - colour[b.id])
                (within if a.group == b.group else between).append(gap)
    assert np.median(within) < 0.5 * np.median(between)
    # one case per patient: every case its own group
    one_each = SynthConfig(per_class=1, size=16, cases=4, raters=2, cases_per_patient=1)
    single = generate(tmp_path / "one", one_each)
    rows = read_csv(single / "rated" / "ratings.csv")[1]
    assert len({r["GROUP"] for r in rows}) == 4


def test_an_older_set_is_regenerated_with_its_config(tmp_path):
    tiny = SynthConfig(seed=2, per_class=1, size=16, cases=4, raters=2)
    out = generate(tmp_path / "s", tiny)
    assert synth.current(out) == out  # this version: used as it is
    manifest = read_manifest(out)
    old = {**manifest, "version": 1, "config": {**manifest["config"], "cases": 5}}
    del old["config"]["cases_per_patient"]  # version 1 did not know it
    (out / "manifest.json").write_text(json.dumps(old))
    (out / "rated" / "ratings.csv").write_text("CASES,R1_color\n")
    assert synth.current(out) == out
    assert read_manifest(out)["version"] == synth.VERSION
    assert read_manifest(out)["config"] == {**tiny.as_dict(), "cases": 5}
    assert read_csv(out / "rated" / "ratings.csv")[0][:2] == ["CASES", "GROUP"]


def test_lesion_region_shows_the_true_deviation(tmp_path):
    """Colour shift and texture change are in the pixels, each tracking its own truth."""
    out = generate(tmp_path / "s", SynthConfig(per_class=1, size=48, cases=16, raters=2))
    _, rows = read_csv(out / "rated" / "truth.csv")
    colour, texture = [], []
    for row in rows:
        labs = []
        for k in range(3):
            rgb = np.asarray(Image.open(out / "rated" / row["case"] / f"{k}.jpg"), np.float32)
            labs.append(cv2.cvtColor(rgb / 255, cv2.COLOR_RGB2Lab)[12:36, 12:36])
        means = [lab.reshape(-1, 3).mean(0) for lab in labs]
        colour.append(np.linalg.norm(means[0] - (means[1] + means[2]) / 2))
        detail = [(lab[..., 0] - cv2.GaussianBlur(lab[..., 0], (0, 0), 2)).std() for lab in labs]
        texture.append(detail[0] - (detail[1] + detail[2]) / 2)
    colour_truth = [float(r["color_deviation"]) for r in rows]
    texture_truth = [float(r["texture_deviation"]) for r in rows]
    assert spearmanr(colour, colour_truth).statistic > 0.7
    assert spearmanr(texture, texture_truth).statistic > 0.7


def image_features(image: np.ndarray) -> list[float]:
    """Mean colour, contrast, redness, darkness and asymmetry of the central lesion."""
    rgb = image.astype(np.float64) / 255
    n = rgb.shape[0]
    yy, xx = np.mgrid[:n, :n]
    radius = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) / (n / 2)
    centre = radius < 0.5
    lum = rgb.mean(2)
    dark = lum < 0.85 * np.median(lum[(radius > 0.8) & (radius < 1.0)])
    asymmetry = np.abs(dark ^ dark[::-1, ::-1]).sum() / max(2 * dark.sum(), 1)
    redness = (rgb[..., 0] - rgb[..., 1])[centre].mean()
    return [*rgb[centre].mean(0), lum[centre].std(), redness, dark.mean(), asymmetry]


def test_classes_differ_in_simple_features(tmp_path):
    out = generate(tmp_path / "s", SynthConfig(per_class=30, size=48, cases=1))
    _, truth = read_csv(out / "isic2019" / "ISIC_2019_Training_GroundTruth.csv")
    _, meta = read_csv(out / "isic2019" / "ISIC_2019_Training_Metadata.csv")
    folder = out / "isic2019" / "ISIC_2019_Training_Input"
    x = np.array(
        [image_features(np.asarray(Image.open(folder / f"{r['image']}.jpg"))) for r in truth]
    )
    y = np.array([[r[c] for c in ("MEL", "NV", "BCC")].index("1.0") for r in truth])
    lesions = np.array([r["lesion_id"] for r in meta])
    test = np.isin(lesions, np.unique(lesions)[::2])  # grouped split: no lesion on both sides
    mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-9
    z = (x - mu) / sd
    centroids = np.stack([z[~test & (y == c)].mean(0) for c in range(3)])
    predicted = np.argmin(((z[test, None] - centroids) ** 2).sum(-1), axis=1)
    assert (predicted == y[test]).mean() > 0.5  # chance is 1/3


def test_refuses_a_folder_that_is_not_synthetic(tmp_path):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "mine.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match=r"photos: exists and is not a dermsim synthetic set"):
        generate(user, SMALL)
    with pytest.raises(ValueError, match="not a dermsim synthetic set"):
        ensure_synthetic(user, SMALL)
    assert [p.name for p in user.iterdir()] == ["mine.jpg"]
    (user / "manifest.json").write_text('{"synthetic": false}')
    with pytest.raises(ValueError, match="not a dermsim synthetic set"):
        generate(user, SMALL)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"file.txt: exists and is not a folder"):
        generate(a_file, SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "photos"]


def test_empty_folder_and_earlier_set_are_replaced(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    tiny = SynthConfig(per_class=1, size=16, cases=1, raters=1)
    generate(out, tiny)
    assert read_manifest(out)["config"]["seed"] == 0
    generate(out, SynthConfig(**{**tiny.as_dict(), "seed": 9}))
    assert read_manifest(out)["config"]["seed"] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_rated", fail)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "s", SynthConfig(per_class=1, size=16, cases=1))
    assert list(tmp_path.iterdir()) == []


def test_ensure_synthetic_reuses_a_matching_set(tmp_path):
    tiny = SynthConfig(per_class=2, size=16, cases=2, raters=2)
    out = ensure_synthetic(tmp_path / "s", tiny)
    stamps = {p: os.stat(p).st_mtime_ns for p in out.rglob("*")}
    os.utime(out / "manifest.json", ns=(1, 1))  # an old file is not regenerated either
    stamps[out / "manifest.json"] = 1
    assert ensure_synthetic(out, tiny) == out
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("*")} == stamps
    bigger = SynthConfig(**{**tiny.as_dict(), "cases": 3})
    ensure_synthetic(out, bigger)
    assert read_manifest(out)["config"] == bigger.as_dict()
    assert (out / "rated" / "CASE003" / "0.jpg").is_file()


@pytest.mark.parametrize(
    ("field", "value"),
    [("per_class", 0), ("size", 8), ("cases", 0), ("raters", 0), ("seed", -1), ("size", 4.0)],
)
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        SynthConfig(**{field: value})


def test_cli(tmp_path):
    out = tmp_path / "cli"
    args = ["--per-class", "2", "--size", "16", "--cases", "2", "--raters", "2"]
    result = run_module("bridge.core.data.synth", "--out", str(out), "--seed", "5", *args)
    assert result.returncode == 0, result.stderr
    assert read_manifest(out)["config"]["seed"] == 5
    assert "wrote synthetic set" in result.stderr
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    result = run_module("bridge.core.data.synth", "--out", str(user), *args)
    assert_one_line_error(result, "user: exists and is not a dermsim synthetic set")
    result = run_module("bridge.core.data.synth", "--out", str(out), "--size", "4")
    assert_one_line_error(result, "size must be in [16, 4096], got 4")
