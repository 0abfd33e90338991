"""bridge.core.spec: architectures as data, with the published parameter counts."""

import pytest

from bridge.core import spec
from bridge.core.spec import get_arch, layer_specs, param_count, state_dict_shapes

REFERENCE_PARAMS = {"vgg16": 138_357_544, "resnet50": 25_557_032, "vit_b16": 86_567_656}


@pytest.mark.parametrize("arch", spec.FULL_ARCHS)
def test_layout_parameter_counts_equal_the_references(arch):
    assert param_count(arch) == REFERENCE_PARAMS[arch] == get_arch(arch).reference_params


def test_head_size_changes_only_the_head():
    base = state_dict_shapes("resnet50")
    seven = state_dict_shapes("resnet50", 7)
    assert {k for k in base if base[k] != seven[k]} == {"fc.weight", "fc.bias"}
    assert seven["fc.weight"] == (7, 2048)


def test_taps_follow_the_reference_layers():
    vgg = get_arch("vgg16")
    assert [(t.name, t.layer) for t in vgg.taps] == [
        ("relu1_2", "features.3"),
        ("relu2_2", "features.8"),
        ("relu3_3", "features.15"),
        ("relu4_3", "features.22"),
        ("relu5_3", "features.29"),
    ]
    assert [t.channels for t in vgg.taps] == [64, 128, 256, 512, 512]
    resnet = get_arch("resnet50")
    assert [t.layer for t in resnet.taps] == [
        "relu",
        "layer1.2",
        "layer2.3",
        "layer3.5",
        "layer4.2",
    ]
    assert [t.channels for t in resnet.taps] == [64, 256, 512, 1024, 2048]
    vit = get_arch("vit_b16")
    assert vit.tap_names == (
        "block3", "block3_cls", "block6", "block6_cls",
        "block9", "block9_cls", "block12", "block12_cls",
    )  # fmt: skip


@pytest.mark.parametrize("tiny, full", list(zip(spec.TINY_ARCHS, spec.FULL_ARCHS, strict=True)))
def test_tiny_variants_share_the_code_path(tiny, full):
    t, f = get_arch(tiny), get_arch(full)
    assert t.family == f.family
    if t.family == "vit":
        assert all(tap.tokens and tap.name.startswith("block") for tap in t.taps)
    else:
        assert [tap.name for tap in t.taps] == [tap.name for tap in f.taps]
    kinds = {layer.kind for layer in layer_specs(t)}
    assert kinds == {layer.kind for layer in layer_specs(f)}
    assert param_count(t) < param_count(f) / 3


def test_input_contracts():
    assert get_arch("vgg16").contract.mean == (0.485, 0.456, 0.406)
    vit = get_arch("vit_b16").contract
    assert (vit.mean, vit.std, vit.native_size, vit.fixed_size) == (
        (0.5,) * 3,
        (0.5,) * 3,
        224,
        True,
    )
    assert get_arch("resnet50").contract.to_dict()["value_range"] == [0.0, 1.0]


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown arch 'vgg19'; expected one of: vgg16, resnet50"):
        get_arch("vgg19")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_head_size(bad):
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer"):
        get_arch("vgg16").resolve_num_classes(bad)
