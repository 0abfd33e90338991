"""The data readers (classification, ratings, tables), and one-line errors naming file and row."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from PIL import Image

from bridge.core.data.image import Box
from bridge.core.data.ratings import Rating, read_rated_cases, read_region_pairs
from bridge.core.data.readers import (
    ClassificationSet,
    Sample,
    is_synthetic,
    read_class_folders,
    read_ham10000,
    read_isic2019,
    read_isic2020,
)

ISIC2019_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"


def _jpeg(path: Path, color: tuple[int, int, int] = (200, 120, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def _at(path: Path, where: str) -> str:
    """Regex for the start of an error message: file, then line/row."""
    return rf"^{re.escape(str(path))}: {where}: "


def _one_hot(image: str, label: str) -> str:
    classes = ISIC2019_HEADER.split(",")[1:]
    return ",".join([image] + ["1.0" if c == label else "0.0" for c in classes])


# ------------------------------------------------------------------ ISIC 2019


def _isic2019(tmp_path: Path, rows: list[str], images: list[str] | None = None) -> Path:
    csv_path = _write(
        tmp_path / "ISIC_2019_Training_GroundTruth.csv",
        "\n".join([ISIC2019_HEADER, *rows]) + "\n",
        encoding="utf-8-sig",  # with a byte-order mark
    )
    for name in images or []:
        _jpeg(tmp_path / "ISIC_2019_Training_Input" / name)
    return csv_path


def test_isic2019(tmp_path: Path) -> None:
    rows = [_one_hot("ISIC_1", "MEL"), _one_hot("ISIC_2", "NV"), _one_hot("ISIC_3", "NV")]
    gt = _isic2019(tmp_path, rows, ["ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.png"])
    meta = _write(
        tmp_path / "meta.csv",
        "image,age_approx,anatom_site_general,lesion_id,sex\n"
        "ISIC_1,55,head/neck,L1,male\nISIC_2,40,,L1,female\nISIC_3,,,,\n",
    )
    data = read_isic2019(gt, metadata_csv=meta)
    assert data.name == "isic2019" and data.group_by == "lesion_id" and not data.synthetic
    assert data.classes == ("MEL", "NV")  # column order, classes without images dropped
    assert [s.label for s in data.samples] == ["MEL", "NV", "NV"]
    assert [s.group for s in data.samples] == ["L1", "L1", None]
    image_dir = tmp_path / "ISIC_2019_Training_Input"
    assert data.samples[2] == Sample("ISIC_3", image_dir / "ISIC_3.png", "NV", None)

    plain = read_isic2019(gt)
    assert plain.group_by is None and all(s.group is None for s in plain.samples)


def test_isic2019_images_beside_csv(tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", f"{ISIC2019_HEADER}\n{_one_hot('ISIC_9', 'SCC')}\n")
    _jpeg(tmp_path / "ISIC_9.jpg")
    data = read_isic2019(gt)
    assert data.samples[0].path == tmp_path / "ISIC_9.jpg" and data.classes == ("SCC",)


def test_isic2019_missing_column(tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.csv", "image,MEL,NV\nISIC_1,1.0,0.0\n")
    with pytest.raises(ValueError, match=_at(gt, r"line 1 \(header\)") + "missing column.*BCC"):
        read_isic2019(gt)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "ISIC_2,1.0,1.0,0,0,0,0,0,0,0",
            r"image 'ISIC_2': one-hot has 2 ones \(MEL, NV\), expected exactly one",
        ),
        ("ISIC_2,0,0,0,0,0,0,0,0,0", "image 'ISIC_2': one-hot has 0 ones"),
        ("ISIC_2,x,0,0,0,0,0,0,0,1", "column MEL: expected 0 or 1, got 'x'"),
        ("ISIC_1,0,1.0,0,0,0,0,0,0,0", r"duplicate image 'ISIC_1' \(first at line 2\)"),
    ],
)
def test_isic2019_bad_rows(tmp_path: Path, bad: str, message: str) -> None:
    gt = _isic2019(tmp_path, [_one_hot("ISIC_1", "MEL"), bad], ["ISIC_1.jpg", "ISIC_2.jpg"])
    with pytest.raises(ValueError, match=_at(gt, "line 3") + message):
        read_isic2019(gt)


def test_isic2019_missing_image(tmp_path: Path) -> None:
    rows = [_one_hot(f"ISIC_{i}", "NV") for i in range(4)]
    gt = _isic2019(tmp_path, rows, ["ISIC_0.jpg", "ISIC_3.jpg"])
    with pytest.raises(ValueError, match=_at(gt, "line 3") + r"image 'ISIC_1'.*\(1 more images"):
        read_isic2019(gt)


def test_isic2019_metadata_id_not_in_ground_truth(tmp_path: Path) -> None:
    gt = _isic2019(tmp_path, [_one_hot("ISIC_1", "MEL")], ["ISIC_1.jpg"])
    meta = _write(tmp_path / "meta.csv", "image,lesion_id\nISIC_1,L1\n\nISIC_7,L2\n")
    with pytest.raises(ValueError, match=_at(meta, "line 4") + "image 'ISIC_7' is not in the"):
        read_isic2019(gt, metadata_csv=meta)


# ------------------------------------------------------------------ ISIC 2020, HAM10000

ISIC2020_HEADER = (
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
    "benign_malignant,target"
)


def test_isic2020(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "train.csv",
        f"{ISIC2020_HEADER}\n"
        "ISIC_a,IP_1,male,45.0,torso,nevus,benign,0\n"
        "ISIC_b,IP_1,male,45.0,torso,melanoma,malignant,1\n"
        "ISIC_c,IP_2,female,,,unknown,benign,0\n",
    )
    for name in "abc":
        _jpeg(tmp_path / "train" / f"ISIC_{name}.jpg")
    data = read_isic2020(csv_path)
    assert data.classes == ("benign", "malignant") and data.group_by == "patient_id"
    assert [(s.id, s.label, s.group) for s in data.samples] == [
        ("ISIC_a", "benign", "IP_1"),
        ("ISIC_b", "malignant", "IP_1"),
        ("ISIC_c", "benign", "IP_2"),
    ]
    assert data.samples[0].path == tmp_path / "train" / "ISIC_a.jpg"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("ISIC_b,IP_1,male,45,torso,nevus,unsure,0", "benign_malignant 'unsure': expected"),
        ("ISIC_b,IP_1,male,45,torso,nevus,benign,1", "target 1 contradicts"),
    ],
)
def test_isic2020_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    good = "ISIC_a,IP_1,male,45,torso,nevus,benign,0"
    csv_path = _write(tmp_path / "train.csv", f"{ISIC2020_HEADER}\n{good}\n{row}\n")
    with pytest.raises(ValueError, match=_at(csv_path, "line 3") + message):
        read_isic2020(csv_path)


def test_ham10000_searches_part_folders(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "HAM10000_metadata.csv",
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_10,nv,follow_up,50.0,male,back\n"
        "HAM_1,ISIC_11,nv,follow_up,50.0,male,back\n"
        "HAM_2,ISIC_12,bkl,histo,80.0,female,face\n",
    )
    _jpeg(tmp_path / "HAM10000_images_part_1" / "ISIC_10.jpg")
    _jpeg(tmp_path / "HAM10000_images_part_2" / "ISIC_11.jpg")
    _jpeg(tmp_path / "ISIC_12.jpg")
    data = read_ham10000(csv_path)
    assert data.classes == ("bkl", "nv") and data.group_by == "lesion_id"
    assert [s.group for s in data.samples] == ["HAM_1", "HAM_1", "HAM_2"]
    assert data.samples[1].path == tmp_path / "HAM10000_images_part_2" / "ISIC_11.jpg"


def test_ham10000_missing_column(tmp_path: Path) -> None:
    csv_path = _write(tmp_path / "HAM10000_metadata.csv", "lesion_id,image,dx\nL,I,nv\n")
    with pytest.raises(ValueError, match=_at(csv_path, r"line 1 \(header\)") + ".*image_id"):
        read_ham10000(csv_path)


# ------------------------------------------------------------------ class folders, subset


def test_class_folders(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG"):
        _jpeg(tmp_path / "nevus" / name)
    _jpeg(tmp_path / "melanoma" / "x.jpeg")
    _write(tmp_path / "melanoma" / "notes.txt", "not an image")
    data = read_class_folders(tmp_path)
    assert data.classes == ("melanoma", "nevus") and data.group_by is None
    assert [s.id for s in data.samples] == ["melanoma/x.jpeg", "nevus/a.PNG", "nevus/b.jpg"]
    assert [s.label for s in data.samples] == ["melanoma", "nevus", "nevus"]


def test_class_folders_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no class folders"):
        read_class_folders(tmp_path)
    _jpeg(tmp_path / "nevus" / "a.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty")) + ": .*no images"):
        read_class_folders(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_class_folders(tmp_path / "absent")


def _toy_set() -> ClassificationSet:
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 2
    samples = tuple(Sample(str(i), Path(f"{i}.jpg"), lab, None) for i, lab in enumerate(labels))
    return ClassificationSet("toy", samples, ("a", "b", "c"), None)


def test_subset() -> None:
    data = _toy_set()
    only = data.subset(classes=["c", "a"])
    assert only.classes == ("a", "c") and len(only.samples) == 8
    capped = data.subset(per_class_cap=2, seed=3)
    assert [s.label for s in capped.samples].count("a") == 2 and len(capped.samples) == 6
    ids = [int(s.id) for s in capped.samples]
    assert ids == sorted(ids)  # original order kept
    assert capped == data.subset(per_class_cap=2, seed=3)  # deterministic


def test_subset_unknown_class() -> None:
    with pytest.raises(ValueError, match=r"unknown class\(es\) zz; available: a, b, c"):
        _toy_set().subset(classes=["a", "zz"])


def test_synthetic_marker(tmp_path: Path) -> None:
    (tmp_path / "SYNTHETIC").write_text("")
    deep = tmp_path / "a" / "b" / "c"
    _jpeg(deep / "cls" / "x.jpg")
    assert read_class_folders(deep).synthetic  # marker 3 levels up
    assert not is_synthetic(deep / "cls" / "d")  # 5 levels up: too far


# ------------------------------------------------------------------ rated cases


def _cases(tmp_path: Path) -> Path:
    root = tmp_path / "cases"
    for case, extra in (("CASE001", []), ("CASE002", ["10.jpg"]), ("CASE003", [])):
        for name in ["0.jpg", "1.jpg", "2.jpg", *extra]:
            _jpeg(root / case / name)
    (root / "not_a_case").mkdir(exist_ok=True)
    return root


# (case, rater, aspect, score); B gives no texture for CASE002; nobody rates CASE003
LONG = [
    ("CASE001", "A", "color", 2),
    ("CASE001", "A", "texture", 3),
    ("CASE001", "B", "Colour", 1),
    ("CASE001", "B", "texture", 4),
    ("CASE002", "A", "color", 4),
    ("CASE002", "A", "texture", 4),
    ("CASE002", "B", "color", 3),
]


def _long_csv(path: Path, rows: list[tuple[str, str, str, object]] = LONG) -> Path:
    lines = ["case,rater,aspect,score", *(",".join(map(str, r)) for r in rows)]
    return _write(path, "\n".join(lines) + "\n")


def _wide_xlsx(path: Path, sheet: str | None = None) -> Path:
    book = openpyxl.Workbook()
    ws = book.active
    if sheet:
        ws.title = "notes"
        ws.append(["this sheet is not the ratings"])
        ws = book.create_sheet(sheet)
    ws.append(["Cases", "A_color", "A_texture", "B_COLOUR", "B_texture"])
    ws.append(["CASE001", 2, 3, 1, 4])
    ws.append(["CASE002", 4, 4.0, 3, None])  # empty cell: missing, not an error
    book.save(path)
    return path


def test_rated_cases_long_and_wide_agree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _cases(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bridge.core.data.ratings"):
        long = read_rated_cases(root, _long_csv(tmp_path / "long.csv"))
    assert "CASE003" in caplog.text  # a folder without ratings is only a warning
    wide = read_rated_cases(root, _wide_xlsx(tmp_path / "wide.xlsx"))
    assert long.ratings == wide.ratings
    assert long.raters == wide.raters == ("A", "B")
    assert long.aspects == ("color", "texture", "overall")
    assert [c.id for c in long.cases] == ["CASE001", "CASE002", "CASE003"]
    case2 = long.cases[1]
    assert case2.reference.name == "0.jpg"
    assert [p.name for p in case2.comparisons] == ["1.jpg", "2.jpg", "10.jpg"]
    assert not long.synthetic

    overall = {(r.item, r.rater): r.score for r in long.ratings if r.aspect == "overall"}
    assert overall == {("CASE001", "A"): 4.0, ("CASE001", "B"): 4.0, ("CASE002", "A"): 7.0}
    assert Rating("CASE001", "B", "color", 1.0) in long.ratings

    ids, table = long.scores("colour")
    assert ids == ["CASE001", "CASE002", "CASE003"] and table.shape == (3, 2)
    np.testing.assert_array_equal(table[:2], [[2, 1], [4, 3]])
    assert np.isnan(table[2]).all()
    assert math.isnan(long.scores("texture")[1][1, 1])


def test_rated_cases_explicit_overall_wins(tmp_path: Path) -> None:
    rows = [*LONG, ("CASE001", "A", "overall", 6)]
    data = read_rated_cases(_cases(tmp_path), _long_csv(tmp_path / "r.csv", rows))
    assert Rating("CASE001", "A", "overall", 6.0) in data.ratings


def test_rated_cases_named_sheet(tmp_path: Path) -> None:
    path = _wide_xlsx(tmp_path / "wide.xlsx", sheet="Ratings")
    data = read_rated_cases(_cases(tmp_path), path, sheet="Ratings")
    assert len(data.ratings) == 10
    with pytest.raises(ValueError, match=r"no sheet 'Other'; sheets: 'notes', 'Ratings'"):
        read_rated_cases(_cases(tmp_path), path, sheet="Other")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("CASE002", "B", "texture", "three"), "column 'score': score 'three' is not a number"),
        (("CASE009", "A", "color", 2), r"case 'CASE009' has no folder in "),
        (("CASE001", "A", "colour", 2), r"duplicate rating .* aspect color \(first at line 2\)"),
        (("CASE002", "B", "shape", 2), "aspect 'shape': expected"),
    ],
)
def test_rated_cases_bad_long_rows(tmp_path: Path, row: tuple, message: str) -> None:
    path = _long_csv(tmp_path / "r.csv", [*LONG, row])
    with pytest.raises(ValueError, match=_at(path, "line 9") + message):
        read_rated_cases(_cases(tmp_path), path)


def test_rated_cases_bad_wide_cell_names_sheet_row(tmp_path: Path) -> None:
    path = _wide_xlsx(tmp_path / "wide.xlsx")
    book = openpyxl.load_workbook(path)
    book.active["C3"] = "n/a"
    book.active.append(["CASE404", 1, 1, 1, 1])
    book.save(path)
    with pytest.raises(ValueError, match=_at(path, "sheet 'Sheet' row 3") + "column 'A_texture'"):
        read_rated_cases(_cases(tmp_path), path)


def test_rated_cases_empty_and_unrecognised(tmp_path: Path) -> None:
    root = _cases(tmp_path)
    empty = _write(tmp_path / "empty.csv", "case,rater,aspect,score\n")
    with pytest.raises(ValueError, match=re.escape(str(empty)) + ": no ratings"):
        read_rated_cases(root, empty)
    blank = _write(tmp_path / "blank.csv", "CASES,A_color,A_texture\nCASE001,,\n")
    with pytest.raises(ValueError, match=re.escape(str(blank)) + ": no ratings"):
        read_rated_cases(root, blank)
    odd = _write(tmp_path / "odd.csv", "id,who,value\nCASE001,A,2\n")
    with pytest.raises(ValueError, match=_at(odd, r"line 1 \(header\)") + "unrecognised header"):
        read_rated_cases(root, odd)
    bad_col = _write(tmp_path / "bad.csv", "CASES,A_color,A_shape\nCASE001,1,2\n")
    with pytest.raises(ValueError, match=_at(bad_col, r"line 1 \(header\)") + "column 'A_shape'"):
        read_rated_cases(root, bad_col)


def _groups(data) -> dict[str, str]:
    return {case.id: case.group for case in data.cases}


def test_rated_cases_without_group_column_are_their_own_groups(tmp_path: Path) -> None:
    data = read_rated_cases(_cases(tmp_path), _long_csv(tmp_path / "r.csv"))
    assert _groups(data) == {"CASE001": "CASE001", "CASE002": "CASE002", "CASE003": "CASE003"}


def test_rated_cases_wide_group_column(tmp_path: Path) -> None:
    root = _cases(tmp_path)
    path = _write(
        tmp_path / "wide.csv",
        "CASES,A_color,group,A_texture\nCASE001,2,P1,3\nCASE002,4,,4\nCASE003,1,P1,1\n",
    )
    data = read_rated_cases(root, path)
    assert data.raters == ("A",) and len(data.ratings) == 9  # GROUP is not a rater column
    assert _groups(data) == {"CASE001": "P1", "CASE002": "CASE002", "CASE003": "P1"}


def test_rated_cases_wide_xlsx_group_column(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.append(["CASES", "Group", "A_color", "A_texture"])
    book.active.append(["CASE001", "patient 7", 2, 3])
    book.active.append(["CASE002", 7, 4, 4])  # a number is read as its text
    book.save(tmp_path / "wide.xlsx")
    data = read_rated_cases(_cases(tmp_path), tmp_path / "wide.xlsx")
    assert _groups(data) == {"CASE001": "patient 7", "CASE002": "7", "CASE003": "CASE003"}


def test_rated_cases_long_group_column(tmp_path: Path) -> None:
    lines = ["case,rater,aspect,score,GROUP"]
    lines += [",".join(map(str, r)) + (",P1" if r[0] == "CASE001" else ",P2") for r in LONG]
    lines[2] = lines[2].removesuffix("P1")  # a row may leave the case's group empty
    data = read_rated_cases(_cases(tmp_path), _write(tmp_path / "r.csv", "\n".join(lines)))
    assert _groups(data) == {"CASE001": "P1", "CASE002": "P2", "CASE003": "CASE003"}


def test_rated_cases_long_case_in_two_groups(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "r.csv",
        "case,rater,aspect,score,group\n"
        "CASE001,A,color,2,P1\nCASE002,A,color,2,P2\nCASE001,B,color,3,P3\n",
    )
    message = r"case 'CASE001' is in group 'P3' here but in group 'P1' at line 2"
    with pytest.raises(ValueError, match=_at(path, "line 4") + message):
        read_rated_cases(_cases(tmp_path), path)


def test_rated_cases_folder_without_reference(tmp_path: Path) -> None:
    root = _cases(tmp_path)
    _jpeg(root / "CASE004" / "1.jpg")
    with pytest.raises(ValueError, match=re.escape(str(root / "CASE004")) + ": no reference"):
        read_rated_cases(root, _long_csv(tmp_path / "r.csv"))


# ------------------------------------------------------------------ region pairs


def test_region_pairs(tmp_path: Path) -> None:
    _jpeg(tmp_path / "img" / "a.jpg")
    _jpeg(tmp_path / "img" / "b.jpg")
    path = _write(
        tmp_path / "pairs.csv",
        "image_a,box_a,image_b,box_b,dr1,dr2_texture\n"
        'img/a.jpg,"1,2,3,4",img/b.jpg," 0, 0, 8, 8",2.5,\n'
        "img/a.jpg,,img/b.jpg,,,3\n",
    )
    data = read_region_pairs(path)
    assert [p.id for p in data.pairs] == ["pair1", "pair2"]
    first, second = data.pairs
    assert first.image_a == tmp_path / "img" / "a.jpg" and first.box_a == Box(1, 2, 3, 4)
    assert first.box_b == Box(0, 0, 8, 8)
    assert second.box_a is None and second.box_b is None
    assert data.raters == ("dr1", "dr2")
    assert data.ratings == (
        Rating("pair1", "dr1", "overall", 2.5),
        Rating("pair2", "dr2", "texture", 3.0),
    )


def test_region_pairs_without_raters_and_image_dir(tmp_path: Path) -> None:
    _jpeg(tmp_path / "elsewhere" / "a.jpg")
    path = _write(tmp_path / "pairs.csv", "id,image_a,box_a,image_b,box_b\np,a.jpg,,a.jpg,\n")
    data = read_region_pairs(path, image_dir=tmp_path / "elsewhere")
    assert data.pairs[0].id == "p" and data.raters == () and data.ratings == ()
    assert data.pairs[0].group == "p"  # no group column: its own group


def test_region_pairs_group_column(tmp_path: Path) -> None:
    _jpeg(tmp_path / "a.jpg")
    path = _write(
        tmp_path / "pairs.csv",
        "image_a,box_a,image_b,box_b,Group,dr1\n"
        "a.jpg,,a.jpg,,lesion 1,2\na.jpg,,a.jpg,,,3\na.jpg,,a.jpg,,lesion 1,4\n",
    )
    data = read_region_pairs(path)
    assert [p.group for p in data.pairs] == ["lesion 1", "pair2", "lesion 1"]
    assert data.raters == ("dr1",) and len(data.ratings) == 3


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('a.jpg,"1,2,3",a.jpg,,1', r"column box_a: box '1,2,3': expected 'x,y,w,h'"),
        ('a.jpg,,a.jpg,"0,0,0,5",1', r"column box_b: box '0,0,0,5': w and h must be >= 1"),
        ("a.jpg,,missing.jpg,,1", r"image_b 'missing.jpg': no such file"),
        ("a.jpg,,a.jpg,,good", r"column 'dr1': score 'good' is not a number"),
    ],
)
def test_region_pairs_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    _jpeg(tmp_path / "a.jpg")
    path = _write(
        tmp_path / "pairs.csv", f"image_a,box_a,image_b,box_b,dr1\na.jpg,,a.jpg,,1\n{row}\n"
    )
    with pytest.raises(ValueError, match=_at(path, "line 3") + message):
        read_region_pairs(path)


# ------------------------------------------------------------------ rated items


def test_rated_items_carry_the_groups(tmp_path: Path) -> None:
    from evaluation.items import RatedItems, load_rated, pick_raters

    root = _cases(tmp_path)
    path = _write(
        tmp_path / "wide.csv",
        "CASES,GROUP,A_color,A_texture,B_color\nCASE001,P1,2,3,1\nCASE002,,4,4,2\nCASE003,P1,1,1,\n",
    )
    items = load_rated(root, path)
    assert items.groups == ("P1", "CASE002", "P1") and items.n_groups == 2
    assert pick_raters(items, ["B"]).groups == items.groups
    _jpeg(tmp_path / "a.jpg")
    pairs = _write(
        tmp_path / "pairs.csv", "image_a,box_a,image_b,box_b,group,dr1\na.jpg,,a.jpg,,L1,2\n"
        "a.jpg,,a.jpg,,,3\na.jpg,,a.jpg,,L1,1\n",
    )  # fmt: skip
    items = load_rated(pairs=pairs)
    assert items.groups == ("L1", "pair2", "L1") and items.n_groups == 2
    image = (tmp_path / "a.jpg", None)
    plain = RatedItems(("x", "y"), (image,) * 2, ((image,),) * 2, {}, (), False, "two items")
    assert plain.groups == ("x", "y")  # no groups given: every item its own
    with pytest.raises(ValueError, match=r"^two items: 1 groups for 2 items; expected one group"):
        RatedItems(
            ("x", "y"), (image,) * 2, ((image,),) * 2, {}, (), False, "two items", {}, ("g",)
        )
