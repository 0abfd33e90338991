"""Free-form regions: masks and polygons, masked ONNX scorers from both origins, the scorer."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_module
from PIL import Image

from bridge.core.data.masks import (
    check_weights,
    fill_outside,
    parse_polygon,
    polygon_mask,
    read_mask,
)
from bridge.core.metrics import uniform_heads
from bridge.core.weights import random_state_dict, write_state_dict
from evaluation.score import Scorer

# ------------------------------------------------------------------ masks and polygons


def test_polygons_and_mask_files(tmp_path):
    region = polygon_mask("2,2 10,2 10,8 2,8", (20, 30, 3))
    assert region.weights.shape == (20, 30) and region.box == (2, 2, 9, 7)
    assert region.crop().shape == (7, 9) and region.crop().all()
    assert parse_polygon(" 1.5,2  3,4e0 5,6 ") == ((1.5, 2.0), (3.0, 4.0), (5.0, 6.0))
    for text, fragment in (
        ("1,1 2,2", "2 point(s); expected at least 3"),
        ("1,1 2,x 3,3", "polygon point '2,x'"),
    ):
        with pytest.raises(ValueError, match=re.escape(fragment)):
            parse_polygon(text)
    with pytest.raises(ValueError, match=r"polygon point 40,3 lies outside the 30x20 image"):
        polygon_mask("1,1 40,3 5,9", (20, 30))
    grey = np.zeros((20, 30), np.uint8)
    grey[5:15, 5:25] = 255
    grey[5, 5] = 128  # a soft edge: a weight, accepted as it is
    Image.fromarray(grey).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.box == (5, 5, 20, 10) and 0.4 < mask.weights[5, 5] < 0.6
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(ValueError, match=r"empty\.png: empty mask"):
        read_mask(tmp_path / "empty.png")
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match=r"colour\.png: a colour image; expected a grey-level"):
        read_mask(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="x: mask weights must lie in"):
        check_weights(np.full((4, 4), 1.5), "x")
    region = np.random.default_rng(0).uniform(0, 1, (6, 6, 3)).astype(np.float32)
    inside = np.zeros((6, 6), np.float32)
    inside[1:4, 1:4] = 1
    filled = fill_outside(region, inside)
    assert np.array_equal(filled[1:4, 1:4], region[1:4, 1:4])
    assert np.allclose(filled[0, 0], region[1:4, 1:4].reshape(-1, 3).mean(axis=0))


# ------------------------------------------------------------------ ONNX scorers


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Masked tiny-VGG16 LPIPS and DISTS scorers from both origins, and the native twins."""
    import torch_models
    from bridge.export import export, source_from_weights
    from torch_models.metrics import DISTS, LPIPS

    root = tmp_path_factory.mktemp("masked")
    state = random_state_dict("vgg16_tiny", 4, seed=3)
    weights = write_state_dict(state, root / "w.safetensors")
    source = source_from_weights("vgg16_tiny", weights)
    files = {
        (kind, origin): export(source, f"{kind}_masked", origin, root / "models")
        for kind in ("lpips", "dists")
        for origin in ("torch", "keras")
    }
    backbone = torch_models.create_model("vgg16_tiny", 4, weights=state)
    native = {
        "lpips": LPIPS(backbone, uniform_heads("lpips", "vgg16_tiny").weights),
        "dists": DISTS(backbone, *uniform_heads("dists", "vgg16_tiny").weights),
    }
    return files, native, root


def _inputs(n=2, size=(40, 56), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (n, 3, *size)).astype(np.float32)
    b = rng.uniform(0, 1, (n, 3, *size)).astype(np.float32)
    masks = rng.uniform(0, 1, (2, n, 1, *size)).astype(np.float32)
    masks[:, :, :, :5] = 0  # a border outside both
    return a, b, masks[0], masks[1]


def test_masked_onnx_equals_native_and_all_ones_equal_unmasked(exported):
    files, native, _ = exported
    a, b, ma, mb = _inputs()
    ones = np.ones_like(ma)
    for (kind, origin), path in files.items():
        scorer = Scorer(path, prefer_gpu=False)
        manifest = scorer.model.manifest
        assert manifest["kind"] == f"{kind}_masked" and manifest["masked"] is True
        assert manifest["inputs"] == ["image_a", "image_b", "mask_a", "mask_b"]
        assert manifest["parity"]["max_error"] <= manifest["parity"]["bound"]
        with torch.no_grad():
            t = [torch.from_numpy(x) for x in (a, b, ma, mb)]
            expected = native[kind].masked(*t).numpy()
            plain = native[kind](t[0], t[1]).numpy()
        got = scorer.score_arrays(a, b, ma, mb)
        assert np.abs(got - expected).max() <= 1e-5, (kind, origin)
        assert np.abs(scorer.score_arrays(a, b, ones, ones) - plain).max() <= 1e-5
        assert np.abs(scorer.score_arrays(a, b) - plain).max() <= 1e-5  # masks default to ones
        if kind == "lpips":
            spatial = scorer.distance_map(a, b, ma, mb)
            with torch.no_grad():
                full = native["lpips"].spatial(t[0], t[1]).numpy()
            assert np.abs(spatial - full * ma * mb).max() <= 1e-4


def test_scorer_regions_as_masks_polygons_and_fill(exported, tmp_path):
    files, _, root = exported
    rng = np.random.default_rng(2)
    image = (rng.uniform(0, 1, (60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    other = (rng.uniform(0, 1, (60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(other).save(tmp_path / "b.png")
    scorer = Scorer(files["lpips", "torch"], prefer_gpu=False)
    polygon = polygon_mask("10,10 50,12 48,40 12,44", (60, 80))
    whole = scorer.score(tmp_path / "a.png", tmp_path / "b.png")
    masked = scorer.score(tmp_path / "a.png", tmp_path / "b.png", polygon, None)
    assert masked != pytest.approx(whole)
    # a polygon covering the whole image is the whole image
    full = polygon_mask("0,0 80,0 80,60 0,60", (60, 80))
    assert scorer.score(tmp_path / "a.png", tmp_path / "b.png", full, full) == pytest.approx(
        whole, abs=1e-6
    )
    # the same outline as a mask file gives the same distance
    Image.fromarray((polygon.weights * 255).astype(np.uint8)).save(tmp_path / "a.mask.png")
    from_file = scorer.score(
        tmp_path / "a.png", tmp_path / "b.png", read_mask(tmp_path / "a.mask.png")
    )
    assert from_file == pytest.approx(masked, abs=1e-6)
    # fill: only the inside counts, so changing the outside moves nothing
    filler = Scorer(files["lpips", "torch"], prefer_gpu=False, fill=True)
    changed = image.copy()
    changed[:, 55:] = 255 - changed[:, 55:]  # outside the polygon's box only
    Image.fromarray(changed).save(tmp_path / "c.png")
    box_mask = polygon_mask("10,10 50,10 50,44 10,44", (60, 80))
    before = filler.score(tmp_path / "a.png", tmp_path / "b.png", box_mask, None)
    after = filler.score(tmp_path / "c.png", tmp_path / "b.png", box_mask, None)
    assert after == pytest.approx(before, abs=1e-6)
    # refusals
    with pytest.raises(ValueError, match=r"mask of 80x60 px for .* of 40x30 px"):
        small = Image.fromarray(image).resize((40, 30))
        small.save(tmp_path / "small.png")
        scorer.score(tmp_path / "small.png", tmp_path / "b.png", polygon)
    top = polygon_mask("0,0 79,0 79,5 0,5", (60, 80))
    bottom = polygon_mask("0,54 79,54 79,59 0,59", (60, 80))
    with pytest.raises(ValueError, match="do not overlap"):
        scorer.score_arrays(
            *_inputs(1, (60, 80))[:2], top.weights[None, None], bottom.weights[None, None]
        )
    from bridge.export import export, source_from_weights

    path = export(
        source_from_weights("vgg16_tiny", root / "w.safetensors"), "lpips", "torch", tmp_path
    )
    with pytest.raises(ValueError, match="fill needs a masked scorer"):
        Scorer(path, prefer_gpu=False, fill=True)
    with pytest.raises(ValueError, match="masks and polygons need a masked scorer"):
        Scorer(path, prefer_gpu=False).score(tmp_path / "a.png", tmp_path / "b.png", polygon)


def test_score_cli_with_polygons_and_masks(exported, tmp_path):
    files, _, _ = exported
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.uniform(0, 1, (48, 64, 3)) * 255).astype(np.uint8)).save(
            tmp_path / name
        )
    model = str(files["dists", "keras"])
    result = run_module(
        "evaluation.score", model, str(tmp_path / "a.png"), str(tmp_path / "b.png"),
        "--polygon-a", "5,5 40,6 38,40 6,38", "--json", "--cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["masked"] is True and out["region_a"] == "polygon 5,5 40,6 38,40 6,38"
    assert out["scorer"].startswith("DISTS masked")
    for args, fragments in (
        (["--region-a", "1,1,30,30", "--polygon-a", "1,1 9,1 9,9"], ["give one of --region-a"]),
        (["--polygon-a", "1,1 90,1 9,9"], ["polygon point 90,1 lies outside the 64x48 image"]),
        (["--polygon-b", "1,1 9,1"], ["expected at least 3"]),
        (["--mask-a", str(tmp_path / "none.png")], ["none.png"]),
    ):
        result = run_module(
            "evaluation.score", model, str(tmp_path / "a.png"), str(tmp_path / "b.png"), *args
        )
        assert_one_line_error(result, *fragments)


# ------------------------------------------------------------------ rated cases with masks


@pytest.fixture(scope="module")
def masked_set(tmp_path_factory):
    """A small synthetic set: its rated cases carry the lesion's outline (0.mask.png)."""
    from bridge.core.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("masked-set")
    return generate(
        root / "s", SynthConfig(per_class=1, cases=6, size=64, raters=2, views_per_lesion=1)
    )


def test_synthetic_cases_carry_lesion_masks_the_reader_finds(masked_set):
    from bridge.core.data.ratings import read_rated_cases

    data = read_rated_cases(masked_set / "rated", masked_set / "rated" / "ratings.csv")
    for case in data.cases:
        assert set(case.masks) == {case.reference}  # the lesion image only
        mask = read_mask(case.masks[case.reference])
        assert mask.weights.shape == (64, 64) and 0.2 < mask.weights.mean() < 0.95


def test_leakage_is_measured_and_fill_removes_it(exported, masked_set, tmp_path):
    from evaluation.leakage import leakage, main, masked_cases

    files, _, _ = exported
    cases = masked_cases(masked_set / "rated")[:3]
    for kind in ("lpips", "dists"):
        plain = leakage(Scorer(files[kind, "torch"], prefer_gpu=False), cases)
        assert 0 < plain["masked"] < plain["box"] and 0 < plain["ratio"] < 1
        filled = leakage(Scorer(files[kind, "torch"], prefer_gpu=False, fill=True), cases)
        assert filled["masked"] <= 1e-6 and filled["box"] == pytest.approx(plain["box"])
    out = tmp_path / "leakage.md"
    assert (
        main(
            [
                str(files["lpips", "keras"]),
                "--cases",
                str(masked_set / "rated"),
                "--out",
                str(out),
                "--cpu",
            ]
        )
        == 0
    )
    assert out.read_text().count("| lpips | vgg16_tiny |") == 2


def test_the_comparison_scores_masked_scorers_under_the_case_masks(exported, masked_set):
    from evaluation.catalog import discover
    from evaluation.item_scores import score_items
    from evaluation.items import load_rated
    from evaluation.options import Options

    _, _, root = exported
    entries, _ = discover(root / "models")
    assert {e.kind for e in entries} == {"lpips_masked", "dists_masked"}
    items = load_rated(masked_set / "rated")
    assert len(items.masks) == len(items.ids)
    scores = score_items(entries, items, Options(prefer_gpu=False))
    masked = [n for n in scores.columns if n.startswith("lpips_masked")]
    assert masked and scores.info[masked[0]]["family"] == "lpips_masked"
    # against the same scorer with the masks left out (all ones: the plain metric)
    unmasked = score_items(entries, dataclasses.replace(items, masks={}), Options(prefer_gpu=False))
    assert not np.allclose(scores.columns[masked[0]], unmasked.columns[masked[0]])
