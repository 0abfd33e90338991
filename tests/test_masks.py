"""Free-form regions: masks and polygons, masked ONNX scorers from both origins, the scorer."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from conftest import (
    TINY_CLASSES,
    assert_one_line_error,
    copy_export,
    run_cli,
    run_module,
    tiny_state,
)
from PIL import Image

from bridge.core.data.masks import (
    check_weights,
    fill_outside,
    parse_polygon,
    polygon_mask,
    read_mask,
)
from bridge.core.metrics import uniform_heads
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
def exported(tiny_exports):
    """Masked tiny-VGG16 LPIPS and DISTS scorers from both origins (shared with other
    files), the native twins, and the weights' folder."""
    import torch_models
    from torch_models.metrics import DISTS, LPIPS

    files = {
        (kind, origin): tiny_exports("vgg16_tiny", origin, f"{kind}_masked")
        for kind in ("lpips", "dists")
        for origin in ("torch", "keras")
    }
    backbone = torch_models.create_model(
        "vgg16_tiny", TINY_CLASSES, weights=tiny_state("vgg16_tiny")
    )
    native = {
        "lpips": LPIPS(backbone, uniform_heads("lpips", "vgg16_tiny").weights),
        "dists": DISTS(backbone, *uniform_heads("dists", "vgg16_tiny").weights),
    }
    return files, native


def _inputs(n=2, size=(40, 56), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (n, 3, *size)).astype(np.float32)
    b = rng.uniform(0, 1, (n, 3, *size)).astype(np.float32)
    masks = rng.uniform(0, 1, (2, n, 1, *size)).astype(np.float32)
    masks[:, :, :, :5] = 0  # a border outside both
    return a, b, masks[0], masks[1]


def test_masked_onnx_equals_native_and_all_ones_equal_unmasked(exported):
    files, native = exported
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


def test_scorer_regions_as_masks_polygons_and_fill(exported, tiny_exports, tmp_path):
    files, _ = exported
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
    path = tiny_exports("vgg16_tiny", "torch", "lpips")
    with pytest.raises(ValueError, match="fill needs a masked scorer"):
        Scorer(path, prefer_gpu=False, fill=True)
    with pytest.raises(ValueError, match="masks and polygons need a masked scorer"):
        Scorer(path, prefer_gpu=False).score(tmp_path / "a.png", tmp_path / "b.png", polygon)


def test_score_cli_with_polygons_and_masks(exported, tmp_path):
    files, _ = exported
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

    files, _ = exported
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


def test_the_comparison_scores_masked_scorers_under_the_case_masks(exported, masked_set, tmp_path):
    from evaluation.catalog import discover
    from evaluation.item_scores import score_items
    from evaluation.items import load_rated
    from evaluation.options import Options

    files, _ = exported
    for path in files.values():
        copy_export(path, tmp_path / "models")
    entries, _ = discover(tmp_path / "models")
    assert {e.kind for e in entries} == {"lpips_masked", "dists_masked"}
    items = load_rated(masked_set / "rated")
    assert len(items.masks) == len(items.ids)
    scores = score_items(entries, items, Options(prefer_gpu=False))
    masked = [n for n in scores.columns if n.startswith("lpips_masked")]
    assert masked and scores.info[masked[0]]["family"] == "lpips_masked"
    # against the same scorer with the masks left out (all ones: the plain metric)
    unmasked = score_items(entries, dataclasses.replace(items, masks={}), Options(prefer_gpu=False))
    assert not np.allclose(scores.columns[masked[0]], unmasked.columns[masked[0]])


# ------------------------------------------------------------------ feature extractors


def test_area_average_is_adaptive_pooling_and_masked_taps_pool_under_masks():
    from bridge.core.data.masks import area_average
    from evaluation.features import tap_distances

    rng = np.random.default_rng(5)
    masks = rng.uniform(0, 1, (2, 1, 37, 53))
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(masks), (7, 5)).numpy()
    assert np.abs(area_average(masks, (7, 5)) - pooled).max() <= 1e-12
    # a ViT-like tap with its class token; one reference against three images
    a = {"t": rng.normal(size=(1, 6, 4, 4)), "t_cls": rng.normal(size=(1, 6))}
    b = {"t": rng.normal(size=(3, 6, 4, 4)), "t_cls": rng.normal(size=(3, 6))}
    taps = ["t", "t_cls"]
    plain = tap_distances(a, b, taps)
    ones = tap_distances(a, b, taps, np.ones((1, 1, 8, 8)), np.ones((3, 1, 8, 8)))
    assert plain.keys() == ones.keys()
    assert all(np.abs(plain[k] - ones[k]).max() <= 1e-12 for k in plain)
    # the left half of a, the top half of b: gap pools each under its own mask,
    # position and flat pair positions under the joint weight (the top-left quarter)
    left, top = np.zeros((1, 1, 8, 8)), np.zeros((3, 1, 8, 8))
    left[..., :, :4], top[..., :4, :] = 1, 1
    masked = tap_distances(a, b, taps, left, top)

    def cos(x, y, axis):
        return (x * y).sum(axis) / np.sqrt((x * x).sum(axis) * (y * y).sum(axis))

    ga, gb = a["t"][:, :, :, :2].mean(axis=(2, 3)), b["t"][:, :, :2, :].mean(axis=(2, 3))
    assert np.allclose(masked["t/gap"], 1 - cos(ga, gb, 1), atol=1e-12)
    qa, qb = a["t"][:, :, :2, :2], b["t"][:, :, :2, :2]
    assert np.allclose(masked["t/position"], 1 - cos(qa, qb, 1).mean(axis=(1, 2)), atol=1e-12)
    assert np.allclose(masked["t/flat"], 1 - cos(qa.reshape(1, -1), qb.reshape(3, -1), 1))
    assert np.array_equal(masked["t/cls"], plain["t/cls"])  # a class token has no position
    bottom = np.zeros((3, 1, 8, 8))
    bottom[..., 6:, 4:] = 1
    with pytest.raises(ValueError, match="share no weight"):
        tap_distances(a, b, taps, left, bottom)


def test_feature_extractor_under_outlines(tiny_exports, tmp_path):
    from bridge.core.data.masks import Outline
    from evaluation.features import FeatureExtractor

    rng = np.random.default_rng(6)
    for name in ("a.png", "b.png"):
        pixels = (rng.uniform(0, 1, (48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
    extractor = FeatureExtractor(tiny_exports("vgg16_tiny", "torch", "features"), prefer_gpu=False)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    outline = Outline.of_polygon("4,4 40,6 36,40 8,30")
    by_box = extractor.distances_many(a, [b], outline, [None])
    box = polygon_mask(outline.polygon, (48, 64)).box
    assert by_box.keys() == extractor.distances_many(a, [b], box, [None]).keys()
    assert all(
        np.array_equal(v, extractor.distances_many(a, [b], box, [None])[k])
        for k, v in by_box.items()
    )
    under = extractor.distances_many(a, [b], outline, [None], masked=True)
    assert any(not np.allclose(under[k], by_box[k]) for k in under if k.endswith("/gap"))
    whole = Outline.of_polygon("0,0 64,0 64,48 0,48")
    full = extractor.distances_many(a, [b], whole, [whole], masked=True)
    plain = extractor.distances_many(a, [b])
    assert all(np.abs(full[k] - plain[k]).max() <= 1e-6 for k in plain)


# ------------------------------------------------------------------ region-pair tables


def _outlined_table(folder):
    """Images, a mask file and a table with a polygon, a mask and plain boxes."""
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.uniform(0, 1, (60, 80, 3)) * 255).astype(np.uint8)).save(folder / name)
    weights = np.zeros((60, 80), np.uint8)
    weights[10:50, 20:70] = 255
    Image.fromarray(weights).save(folder / "b.mask.png")
    table = folder / "pairs.csv"
    table.write_text(
        "id,image_a,box_a,image_b,box_b,polygon_a,mask_b,r1\n"
        'p1,a.png,,b.png,"0,0,40,40","6,6 50,8 44,50 10,40",,2\n'
        'p2,a.png,"10,10,40,40",b.png,,,b.mask.png,3\n'
        'p3,a.png,"0,0,32,32",b.png,"8,8,32,32",,,1\n'
    )
    return table


def test_region_pair_tables_take_polygons_and_masks(tmp_path):
    from bridge.core.data.masks import Outline, parse_region_cell, region_cell
    from bridge.core.data.ratings import read_region_pairs

    data = read_region_pairs(_outlined_table(tmp_path))
    p1, p2, p3 = data.pairs
    assert p1.box_a is None and p1.region_a == Outline.of_polygon("6,6 50,8 44,50 10,40")
    assert p2.region_b == Outline(file=tmp_path / "b.mask.png") and p2.box_b is None
    assert not p3.has_outline and p1.has_outline and p2.has_outline
    for where in (p1.region_a, p2.region_b, p3.region_a, None):
        assert parse_region_cell(region_cell(where)) == where
    header = "id,image_a,box_a,image_b,box_b,polygon_a,mask_a\n"
    for row, fragment in (
        ('x,a.png,"1,1,20,20",b.png,,"1,1 9,1 9,9",', "box_a and polygon_a both given"),
        ("x,a.png,,b.png,,,b.mask.png", "b.mask.png"),  # fine: one region per side
        ('x,a.png,,b.png,,"1,1 9,1",', "column polygon_a"),
        ("x,a.png,,b.png,,,none.png", "mask_a 'none.png': no such file"),
    ):
        (tmp_path / "bad.csv").write_text(header + row + "\n")
        if fragment == "b.mask.png":
            assert read_region_pairs(tmp_path / "bad.csv").pairs[0].outline_a.file.name == fragment
            continue
        with pytest.raises(ValueError, match=re.escape(fragment)) as err:
            read_region_pairs(tmp_path / "bad.csv")
        assert "bad.csv" in str(err.value) and "\n" not in str(err.value)


def test_score_pairs_weighs_outlines_and_boxes_the_rest(exported, tiny_exports, tmp_path):
    from bridge.core.data.masks import region_box
    from bridge.core.data.ratings import read_region_pairs

    files, _ = exported
    table = _outlined_table(tmp_path)
    pairs = read_region_pairs(table).pairs
    for model, masked in (
        (files["lpips", "torch"], True),
        (tiny_exports("vgg16_tiny", "torch", "lpips"), False),
    ):
        out = tmp_path / f"out-{masked}.csv"
        result = run_cli(
            "evaluation.score", str(model), "--pairs", str(table), "--out", str(out), "--cpu"
        )
        assert result.returncode == 0, result.stderr
        lines = out.read_text().splitlines()
        assert lines[0] == "id,image_a,box_a,image_b,box_b,polygon_a,polygon_b,mask_a,mask_b,lpips"
        scorer = Scorer(model, prefer_gpu=False)
        for pair, line in zip(pairs, lines[1:], strict=True):
            regions = [pair.region_a, pair.region_b]
            if not masked:  # a scorer without mask inputs sees the bounding boxes
                regions = [region_box(r, (60, 80)) for r in regions]
            expected = scorer.score(pair.image_a, pair.image_b, *regions)
            assert float(line.rsplit(",", 1)[1]) == pytest.approx(expected, abs=1e-6), pair.id
        again = read_region_pairs(out).pairs  # the output is a region-pair table itself
        assert [(p.region_a, p.region_b) for p in again] == [
            (p.region_a, p.region_b) for p in pairs
        ]
    (tmp_path / "far.csv").write_text(
        'id,image_a,box_a,image_b,box_b,polygon_a\nx,a.png,,b.png,,"1,1 90,1 9,9"\n'
    )
    result = run_cli(
        "evaluation.score",
        str(files["lpips", "torch"]),
        "--pairs",
        str(tmp_path / "far.csv"),
        "--out",
        str(tmp_path / "far-out.csv"),
        "--cpu",
    )
    assert_one_line_error(result, "a.png", "polygon point 90,1 lies outside the 80x60 image")
    assert not (tmp_path / "far-out.csv").exists()


def test_the_comparison_puts_outlined_variants_beside_the_box_ones(
    exported, tiny_exports, tmp_path
):
    from evaluation.agreement import layer_choice
    from evaluation.catalog import discover
    from evaluation.item_scores import score_items
    from evaluation.items import load_rated
    from evaluation.options import Options

    files, _ = exported
    copy_export(files["dists", "torch"], tmp_path / "models")
    copy_export(tiny_exports("vgg16_tiny", "torch", "features"), tmp_path / "models")
    entries, _ = discover(tmp_path / "models")
    items = load_rated(pairs=_outlined_table(tmp_path))
    scores = score_items(entries, items, Options(prefer_gpu=False))
    families = {info["family"] for info in scores.info.values()}
    assert {"dists_masked", "layer", "layer_masked", "classical"} <= families
    masked = [n for n, i in scores.info.items() if i["family"] == "layer_masked"]
    assert all(" masked " in n for n in masked)
    assert not any(
        np.allclose(scores.columns[n], scores.columns[n.replace(" masked", "")])
        for n in masked
        if n.startswith("cos-gap")
    )
    assert "layer_masked" not in {scores.info[n]["family"] for n in scores.headline()}
    target = np.array([2.0, 3.0, 1.0])
    labels = [
        c["model"]
        for c in layer_choice(scores, target, np.ones(3, bool), Options(prefer_gpu=False))
    ]
    assert len(labels) == 2 and sum(label.endswith(" masked") for label in labels) == 1
