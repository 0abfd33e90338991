"""bridge.core.data.image: decoding every mode, the guards, crop, resize and fit."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bridge.core.data.image import (
    MAX_PIXELS,
    RESIZE_POLICIES,
    Box,
    crop,
    decode_image,
    decode_image_bytes,
    fit,
    model_input,
    parse_box,
    resize,
)

RED = (255, 0, 0)


def _check(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.shape == (*shape, 3)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    assert out.min() >= 0.0 and out.max() <= 1.0


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _insert_png_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """Insert a chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + _png_chunk(kind, data) + png[33:]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_rotates_clockwise(tmp_path: Path, suffix: str) -> None:
    pixels = np.zeros((4, 8, 3), np.uint8)  # stored 8 wide, 4 high
    pixels[:2, :2] = RED  # top-left corner of the stored image
    path = tmp_path / f"rot{suffix}"
    options = {"quality": 100} if suffix == ".jpg" else {}
    Image.fromarray(pixels).save(path, exif=_exif(6), **options)
    out = decode_image(path)
    _check(out, (8, 4))  # displayed 4 wide, 8 high
    # orientation 6: rotate 90 degrees clockwise, stored top-left -> displayed top-right
    np.testing.assert_allclose(out[0, -1], (1, 0, 0), atol=0.05)
    np.testing.assert_allclose(out[0, 0], (0, 0, 0), atol=0.05)


def test_grayscale_l(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "l.png")
    out = decode_image(tmp_path / "l.png")
    _check(out, (3, 4))
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray.astype(np.float32) / np.float32(255))


def test_bilevel_mode_1(tmp_path: Path) -> None:
    im = Image.new("1", (3, 2), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "b.png")
    out = decode_image(tmp_path / "b.png")
    assert out[0, 1].tolist() == [1, 1, 1] and out[0, 0].tolist() == [0, 0, 0]


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, *RED] + [0] * (3 * 254))
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    out = decode_image(tmp_path / "p.png")
    _check(out, (1, 2))
    assert out[0, 0].tolist() == [1, 1, 1]  # transparent -> white
    assert out[0, 1].tolist() == [1, 0, 0]


def test_palette_without_transparency(tmp_path: Path) -> None:
    Image.new("RGB", (3, 3), (0, 0, 255)).convert("P").save(tmp_path / "p.gif")
    out = decode_image(tmp_path / "p.gif")
    np.testing.assert_array_equal(out, np.broadcast_to(np.float32([0, 0, 1]), (3, 3, 3)))


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 0, 102], [0, 0, 255, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    _check(out, (1, 3))
    np.testing.assert_allclose(out[0, 0], (1, 1, 1), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [1 - 102 / 255] * 3, atol=1e-6)
    np.testing.assert_allclose(out[0, 2], (0, 0, 1), atol=1e-6)


def test_la_composited_over_white(tmp_path: Path) -> None:
    la = np.array([[[0, 0], [100, 255]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = decode_image(tmp_path / "la.png")
    np.testing.assert_allclose(out[0, 0], (1, 1, 1), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [100 / 255] * 3, atol=1e-6)


def test_cmyk(tmp_path: Path) -> None:
    im = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (255, 0, 0, 0))  # pure cyan
    im.save(tmp_path / "c.tif")
    out = decode_image(tmp_path / "c.tif")
    _check(out, (1, 2))
    assert out[0, 0].tolist() == [1, 1, 1]
    assert out[0, 1].tolist() == [0, 1, 1]


def test_16bit_grayscale_keeps_precision(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 1001], [255, 256, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = decode_image(tmp_path / "g16.png")
    _check(out, (2, 3))
    expected = values.astype(np.float32) / np.float32(65535)
    np.testing.assert_array_equal(out[:, :, 1], expected)
    assert out[0, 1, 0] == np.float32(1000) / np.float32(65535)
    assert out[0, 1, 0] != out[0, 2, 0]  # 1000 and 1001 stay distinct


def test_32bit_int_and_float_modes(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1000, 65535]], np.int32), "I").save(tmp_path / "i.tif")
    out = decode_image(tmp_path / "i.tif")
    np.testing.assert_array_equal(out[0, :, 2], np.float32([0, 1000, 65535]) / np.float32(65535))
    Image.fromarray(np.array([[0, 0.5, 1]], np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(decode_image(tmp_path / "f.tif")[0, :, 0], [0, 0.5, 1])
    Image.fromarray(np.array([[0, 2.0]], np.float32)).save(tmp_path / "f2.tif")
    with pytest.raises(ValueError, match=r"f2\.tif: mode F values outside \[0, 1\]"):
        decode_image(tmp_path / "f2.tif")


def _bgr16() -> np.ndarray:
    bgr = np.zeros((2, 3, 3), np.uint16)
    bgr[..., 0] = 1000  # blue
    bgr[..., 1] = 30001  # green
    bgr[..., 2] = 65535  # red
    bgr[1, 2] = (1, 2, 3)
    return bgr


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_keeps_precision_and_channel_order(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rgb16{suffix}"
    assert cv2.imwrite(str(path), _bgr16())
    # Pillow 13 opens this as 8-bit "RGB" (precision lost): the decoder must not use that.
    assert Image.open(path).mode == "RGB"
    out = decode_image(path)
    _check(out, (2, 3))
    scale = np.float32(65535)
    np.testing.assert_array_equal(out[0, 0], np.float32([65535, 30001, 1000]) / scale)
    np.testing.assert_array_equal(out[1, 2], np.float32([3, 2, 1]) / scale)


def test_16bit_rgba_composited_over_white(tmp_path: Path) -> None:
    bgra = np.zeros((1, 2, 4), np.uint16)
    bgra[0, 0] = (0, 0, 1000, 0)  # transparent
    bgra[0, 1] = (0, 0, 1000, 65535)  # opaque, red = 1000
    assert cv2.imwrite(str(tmp_path / "rgba16.png"), bgra)
    out = decode_image(tmp_path / "rgba16.png")
    np.testing.assert_array_equal(out[0, 0], (1, 1, 1))
    np.testing.assert_array_equal(out[0, 1], np.float32([1000, 0, 0]) / np.float32(65535))


def test_16bit_rgb_exif_orientation(tmp_path: Path) -> None:
    bgr = np.zeros((2, 4, 3), np.uint16)
    bgr[0, 0] = (0, 0, 65535)  # stored top-left is red
    ok, encoded = cv2.imencode(".png", bgr)
    assert ok
    png = _insert_png_chunk(encoded.tobytes(), b"eXIf", _exif(6).tobytes()[6:])
    (tmp_path / "rot16.png").write_bytes(png)
    out = decode_image(tmp_path / "rot16.png")
    _check(out, (4, 2))
    assert out[0, -1].tolist() == [1, 0, 0]


def test_decode_bytes_matches_file(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    from_file = decode_image(tmp_path / "x.png")
    from_bytes = decode_image_bytes((tmp_path / "x.png").read_bytes(), name="x.png")
    np.testing.assert_array_equal(from_file, from_bytes)
    np.testing.assert_array_equal(from_file, rgb.astype(np.float32) / np.float32(255))
    cv2.imwrite(str(tmp_path / "y.png"), _bgr16())
    np.testing.assert_array_equal(
        decode_image(tmp_path / "y.png"), decode_image_bytes((tmp_path / "y.png").read_bytes())
    )


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_raises(tmp_path: Path, suffix: str) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.(jpg|png): unreadable image \(.*[Tt]runcated"):
        decode_image(path)
    with pytest.raises(ValueError, match=r"^upload\.bin: unreadable image"):
        decode_image_bytes(path.read_bytes(), name="upload.bin")


def test_truncated_16bit_png_raises(tmp_path: Path) -> None:
    ok, encoded = cv2.imencode(".png", np.full((32, 32, 3), 12345, np.uint16))
    assert ok
    data = encoded.tobytes()
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut16\.png: unreadable image"):
        decode_image(tmp_path / "cut16.png")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image\n")
    with pytest.raises(ValueError, match=r"notes\.jpg: unreadable image \("):
        decode_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.png: no such image file"):
        decode_image(tmp_path / "nothere.png")


def test_pixel_guard_checked_before_decoding(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png: 4x4 pixels exceeds the limit of 10 "):
        decode_image(tmp_path / "small.png", max_pixels=10)
    assert decode_image(tmp_path / "small.png", max_pixels=16).shape == (4, 4, 3)
    # a header claiming 20000x20000 with no pixel data: refused by the header alone
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    with pytest.raises(ValueError, match=rf"bomb: 20000x20000 pixels .* limit of {MAX_PIXELS} "):
        decode_image_bytes(bomb, name="bomb")
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own setting is restored


# ------------------------------------------------------------------ regions


def test_parse_box() -> None:
    assert parse_box("1,2,3,4") == Box(1, 2, 3, 4)
    assert parse_box(" 10 , 0,  5 ,6 ") == Box(x=10, y=0, w=5, h=6)


@pytest.mark.parametrize(
    "text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1.5,2,3,4", "-1,0,3,3", "0,0,0,3", "0,0,3,-2"]
)
def test_parse_box_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=f"box {text!r}"):
        parse_box(text)


def test_crop() -> None:
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    np.testing.assert_array_equal(crop(image, None), image)
    part = crop(image, Box(1, 2, 3, 2))
    np.testing.assert_array_equal(part, image[2:4, 1:4])
    assert part.flags.c_contiguous
    np.testing.assert_array_equal(crop(image, Box(0, 0, 6, 4)), image)


@pytest.mark.parametrize("box", [Box(4, 0, 3, 1), Box(0, 3, 1, 2), Box(0, 0, 7, 4)])
def test_crop_outside(box: Box) -> None:
    image = np.zeros((4, 6, 3), np.float32)
    expected = f"box (x, y, w, h) = ({box.x}, {box.y}, {box.w}, {box.h}) lies outside the 6x4 image"
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        crop(image, box)


# ------------------------------------------------------------------ resizing


def test_resize_identity_is_a_copy() -> None:
    image = np.random.default_rng(2).random((3, 5, 3), dtype=np.float32)
    out = resize(image, (3, 5))
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_resize_constant_stays_constant() -> None:
    out = resize(np.full((2, 2, 3), 0.25, np.float32), (4, 4))
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_resize_nearest_upsampling() -> None:
    image = np.arange(4, dtype=np.float32).reshape(2, 2, 1) * np.float32([1, 10, 100])
    out = resize(image, (4, 4), "nearest")
    expected = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(out, expected)


def test_resize_area_and_non_square() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1).repeat(3, axis=2)
    out = resize(image, (2, 2), "area")
    np.testing.assert_allclose(out[:, :, 0], [[2.5, 4.5], [10.5, 12.5]], atol=1e-5)
    assert resize(image, (3, 7), "bicubic").shape == (3, 7, 3)
    assert resize(image[:, :, 0], (2, 8)).shape == (2, 8)


def test_resize_rejects() -> None:
    image = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        resize(image, (4, 4), "lanczos")
    with pytest.raises(ValueError, match="must be positive"):
        resize(image, (0, 4))


def test_fit_policies() -> None:
    # 20 high, 30 wide; columns carry their index so crops can be located
    image = np.broadcast_to(np.arange(30, dtype=np.float32)[None, :, None], (20, 30, 3)).copy()
    for policy in RESIZE_POLICIES:
        assert fit(image, 10, policy).shape == (10, 10, 3)

    stretched = fit(image, 10, "stretch")
    np.testing.assert_array_equal(stretched, resize(image, (10, 10)))

    cropped = fit(image, 10, "shorter_center_crop")  # -> 10x15, columns 2..11 kept
    np.testing.assert_array_equal(cropped, resize(image, (10, 15))[:, 2:12])

    ones = np.ones((20, 30, 3), np.float32)
    padded = fit(ones, 10, "pad")  # -> 7x10 (6.67 rounded), rows 1..7, 1 row above, 2 below
    assert np.all(padded[0] == 0) and np.all(padded[8:] == 0)
    np.testing.assert_allclose(padded[1:8], 1.0, atol=1e-6)

    tall = fit(np.ones((30, 20, 3), np.float32), 10, "pad")  # -> 10x7, columns 1..7
    assert np.all(tall[:, 0] == 0) and np.all(tall[:, 8:] == 0)
    np.testing.assert_allclose(tall[:, 1:8], 1.0, atol=1e-6)
    assert fit(np.ones((30, 20, 3), np.float32), 10, "shorter_center_crop").shape == (10, 10, 3)


def test_fit_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown resize policy 'squash'"):
        fit(np.zeros((4, 4, 3), np.float32), 2, "squash")


def test_model_input_crops_fits_and_clips_bicubic_overshoot() -> None:
    image = np.zeros((40, 60, 3), np.float32)
    image[:, 30:] = 1.0  # a sharp edge: bicubic over- and undershoots beside it
    raw = fit(crop(image, Box(10, 0, 40, 40)), 64, "stretch", "bicubic")
    assert raw.min() < 0.0 and raw.max() > 1.0
    out = model_input(image, 64, "stretch", "bicubic", Box(10, 0, 40, 40))
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.clip(raw, 0.0, 1.0))
    np.testing.assert_array_equal(
        model_input(image, 32), fit(image, 32)
    )  # bilinear stays inside [0, 1]: nothing to clip
    with pytest.raises(ValueError, match="lies outside the 60x40 image"):
        model_input(image, 32, box=Box(50, 0, 20, 20))


def test_recent_images_keeps_the_last_few_and_sees_rewrites(tmp_path: Path) -> None:
    import os

    from bridge.core.data.image import RecentImages

    paths = []
    for k in range(4):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(np.full((8, 8, 3), 50 * k, np.uint8)).save(paths[-1])
    recent = RecentImages(keep=2)
    first = recent.get(paths[0])
    assert recent.get(paths[0]) is first  # kept, not decoded again
    recent.get(paths[1])
    recent.get(paths[0])  # now the most recent
    recent.get(paths[2])
    assert recent.paths == [str(paths[0]), str(paths[2])]
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(10**18, 10**18))  # a rewrite, whatever the clock's resolution
    assert recent.get(paths[0]).min() == 1.0
    with pytest.raises(FileNotFoundError, match=r"missing\.png: no such image file"):
        recent.get(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="keep must be >= 1"):
        RecentImages(keep=0)
