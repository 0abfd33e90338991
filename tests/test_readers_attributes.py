"""The readers keep each image's sex, age and body site (`Sample.attributes`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from bridge.core.data.readers import (
    Attributes,
    Sample,
    read_class_folders,
    read_ham10000,
    read_isic2019,
    read_isic2020,
)

ISIC2019_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
ISIC2020_HEADER = (
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
    "benign_malignant,target"
)


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 120, 90)).save(path)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _isic2019(tmp_path: Path, n: int) -> Path:
    classes = ISIC2019_HEADER.split(",")[1:]
    rows = [
        ",".join([f"ISIC_{i}"] + ["1" if c == "NV" else "0" for c in classes]) for i in range(n)
    ]
    for i in range(n):
        _jpeg(tmp_path / "ISIC_2019_Training_Input" / f"ISIC_{i}.jpg")
    return _write(tmp_path / "gt.csv", "\n".join([ISIC2019_HEADER, *rows]) + "\n")


def test_isic2019_metadata_attributes(tmp_path: Path) -> None:
    gt = _isic2019(tmp_path, 4)
    meta = _write(
        tmp_path / "meta.csv",
        "image,age_approx,anatom_site_general,lesion_id,sex\n"
        "ISIC_0,55.0,head/neck,L1,male\n"
        "ISIC_1,40,Anterior Torso,L1,Female\n"
        "ISIC_2,,,,\n",
    )  # ISIC_3 has no metadata row
    data = read_isic2019(gt, metadata_csv=meta)
    assert [s.attributes for s in data.samples] == [
        Attributes("male", 55.0, "head/neck"),
        Attributes("female", 40.0, "anterior torso"),
        Attributes(),
        Attributes(),
    ]
    assert isinstance(data.samples[1].attributes.age, float)
    assert all(s.attributes == Attributes() for s in read_isic2019(gt).samples)


def test_isic2019_metadata_without_demographic_columns(tmp_path: Path) -> None:
    gt = _isic2019(tmp_path, 1)
    meta = _write(tmp_path / "meta.csv", "image,lesion_id\nISIC_0,L1\n")
    sample = read_isic2019(gt, metadata_csv=meta).samples[0]
    assert sample.group == "L1" and sample.attributes == Attributes()


def test_isic2020_attributes(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "train.csv",
        f"{ISIC2020_HEADER}\n"
        "ISIC_a,IP_1,male,45.0,torso,nevus,benign,0\n"
        "ISIC_b,IP_1,male,45.0,lower extremity,melanoma,malignant,1\n"
        "ISIC_c,IP_2,female,,,unknown,benign,0\n",
    )
    for name in "abc":
        _jpeg(tmp_path / "train" / f"ISIC_{name}.jpg")
    data = read_isic2020(csv_path)
    assert [s.attributes for s in data.samples] == [
        Attributes("male", 45.0, "torso"),
        Attributes("male", 45.0, "lower extremity"),
        Attributes("female", None, None),
    ]


def test_ham10000_attributes(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "HAM10000_metadata.csv",
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_10,nv,follow_up,50.0,male,back\n"
        "HAM_2,ISIC_11,bkl,histo,,unknown,unknown\n"
        "HAM_3,ISIC_12,mel,histo,5,female,face\n",
    )
    for name in ("ISIC_10", "ISIC_11", "ISIC_12"):
        _jpeg(tmp_path / f"{name}.jpg")
    data = read_ham10000(csv_path)
    assert [s.attributes for s in data.samples] == [
        Attributes("male", 50.0, "back"),
        Attributes(None, None, None),  # "unknown" is not recorded
        Attributes("female", 5.0, "face"),
    ]


@pytest.mark.parametrize("age", ["abc", "-5", "inf"])
def test_a_bad_age_names_the_file_line_and_value(tmp_path: Path, age: str) -> None:
    csv_path = _write(
        tmp_path / "HAM10000_metadata.csv",
        "lesion_id,image_id,dx,age,sex,localization\n"
        "HAM_1,ISIC_10,nv,50,male,back\n"
        f"HAM_2,ISIC_11,nv,{age},male,back\n",
    )
    for name in ("ISIC_10", "ISIC_11"):
        _jpeg(tmp_path / f"{name}.jpg")
    expected = rf"^{re.escape(str(csv_path))}: line 3: column 'age': age '{age}': expected a number"
    with pytest.raises(ValueError, match=expected):
        read_ham10000(csv_path)


def test_samples_without_attributes_stay_as_before(tmp_path: Path) -> None:
    _jpeg(tmp_path / "nevus" / "a.jpg")
    sample = read_class_folders(tmp_path).samples[0]
    assert sample.attributes == Attributes()
    assert sample == Sample("nevus/a.jpg", tmp_path / "nevus" / "a.jpg", "nevus", None)
