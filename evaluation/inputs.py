"""What the ONNX evaluators share: opening a model, preparing its inputs, checking batches.

`Scorer` (LPIPS / DISTS) and `FeatureExtractor` (backbone taps) both take RGB images
or regions; this base class holds the manifest checks, the decode → crop → fit → clip
chain (`bridge.core.data.image.model_input`) and the batch checks, so that every
evaluator feeds its model the same pixels. numpy, Pillow / OpenCV and onnxruntime only.

Size rule (what the reference packages do, so a default score matches `lpips` and
`DISTS_pytorch`): regions compared together (a pair, or a reference and its
comparison regions) are scored at their own size when they all share one, the model
takes any size and that size is at least `MIN_SIDE`; otherwise each is fitted to the
model's size (`size`, default its native one). An explicit `size` always fits. A
source image or region under `MIN_REGION` pixels on its shorter side is refused:
upscaling it would invent the detail being compared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bridge.core.data.image import (
    DEFAULT_POLICY,
    RESIZE_POLICIES,
    Box,
    RecentImages,
    box_text,
    crop,
    fit,
    model_input,
    parse_box,
)
from bridge.core.data.masks import Outline, RegionMask, fill_outside
from bridge.core.runtime import Model, open_model

Region = Box | str | RegionMask | Outline | None
"""Where to look in an image: a box (or its "x,y,w,h" text), a mask, an outline (a table's
polygon or mask file, resolved against its image), or None (all of it)."""


def command_region(
    image: str, box: str | None, mask: str | None, polygon: str | None, side: str = ""
) -> Box | RegionMask | None:
    """A command line's region of one image: a box, a mask file, a polygon, or None.

    Args:
        image: The image (a polygon is checked against its decoded size).
        box: `--region` text, `x,y,w,h`.
        mask: `--mask`: a mask image of the image's size.
        polygon: `--polygon`: `"x1,y1 x2,y2 ..."`.
        side: The flags' suffix (`a` for `--region-a`, ...), or "".

    Raises:
        ValueError: On more than one of them, or a bad box, mask or polygon.
    """
    from bridge.core.data.image import decode_image
    from bridge.core.data.masks import polygon_mask, read_mask

    suffix = f"-{side}" if side else ""
    if sum(bool(v) for v in (box, mask, polygon)) > 1:
        raise ValueError(f"give one of --region{suffix}, --mask{suffix}, --polygon{suffix}")
    if box:
        return parse_box(box)
    if mask:
        return read_mask(mask)
    if polygon:
        return polygon_mask(polygon, decode_image(image).shape)
    return None


def region_text(region: Region) -> str:
    """A region as a command prints it: `x,y,w,h`, its mask's source, or "" (all of it)."""
    if isinstance(region, RegionMask | Outline):
        return region.source
    return region if isinstance(region, str) else box_text(region)


def reference_items(reference, others: Sequence, box: Region = None, boxes=None) -> list[tuple]:
    """(image, region) items of one reference and its K comparison images, reference first.

    Raises:
        ValueError: On no comparison image, or a region count that differs from it.
    """
    boxes = list(boxes) if boxes is not None else [None] * len(others)
    if len(boxes) != len(others):
        raise ValueError(f"{len(others)} comparison images but {len(boxes)} regions")
    if not len(others):
        raise ValueError("no comparison images; expected at least one")
    return [(reference, box), *zip(others, boxes, strict=True)]


MIN_SIDE = 32
"""Smallest input side: five 2x poolings (VGG) / the ResNet stem need at least this."""

MIN_REGION = 16
"""Smallest shorter side of a source image or region (`min_region` overrides it)."""


class ImageModel:
    """An exported ONNX model fed RGB images in [0, 1] fitted to one size.

    Subclasses set `KINDS` (the manifest kinds they accept) and `NEEDS` (what the
    user should pass instead, for the error message).

    Args:
        model: Path of the `.onnx` file (its manifest lies beside it), or an open `Model`.
        size: Side regions are fitted to. Default: the model's native size, and
            regions compared together keep their own size when they share one (the
            module's size rule); given, every region is fitted to it.
        policy: Resize policy: `shorter_center_crop` (default), `stretch` or `pad`.
        prefer_gpu: Use the CUDA provider when it loads (when `model` is a path).
        min_region: Smallest shorter side of a source image or region, in pixels.

    Raises:
        ValueError: If the model is of another kind, or the size does not suit it.
    """

    KINDS: tuple[str, ...] = ()
    NEEDS = ""

    def __init__(
        self,
        model: str | os.PathLike | Model,
        size: int | None = None,
        policy: str = DEFAULT_POLICY,
        prefer_gpu: bool = True,
        min_region: int = MIN_REGION,
    ):
        self.model: Model = (
            model if isinstance(model, Model) else open_model(model, prefer_gpu=prefer_gpu)
        )
        manifest = self.model.manifest
        if manifest["kind"] not in self.KINDS:
            raise ValueError(f"{self.model.path}: is a {manifest['kind']} model; {self.NEEDS}")
        contract = manifest["input_contract"]
        self.native_size = int(contract["native_size"])
        self.size = size or self.native_size
        self.keep_size = size is None and bool(manifest["dynamic_size"])
        if min_region < 1:
            raise ValueError(f"min_region must be >= 1 pixel, got {min_region}")
        self.min_region = min_region
        if not manifest["dynamic_size"] and self.size != self.native_size:
            raise ValueError(
                f"{self.model.path}: takes {self.native_size}x{self.native_size} inputs only, "
                f"not {self.size}"
            )
        if self.size < MIN_SIDE:
            raise ValueError(
                f"size {self.size} is too small for {manifest['backbone']}; expected >= {MIN_SIDE}"
            )
        if policy not in RESIZE_POLICIES:
            raise ValueError(
                f"unknown resize policy {policy!r}; expected one of {', '.join(RESIZE_POLICIES)}"
            )
        self.policy = policy
        self.interpolation = contract.get("interpolation", "bilinear")
        self._recent = RecentImages(keep=8)

    @property
    def backbone(self) -> str:
        """The backbone's registry name (`resnet50`, `vit_b16`, ...)."""
        return self.model.manifest["backbone"]

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider in use."""
        return self.model.provider

    def region(self, image: str | os.PathLike | np.ndarray, box: Box | str | None = None):
        """Decode (or take) an HWC [0, 1] image and crop its region, unfitted: (H, W, 3).

        Decoded files are kept (the last eight): tables reuse images row after row.

        Raises:
            ValueError: On a bad image or region, or one under `min_region` pixels on
                its shorter side.
        """
        if isinstance(box, str):
            box = parse_box(box)
        pixels = (
            np.asarray(image, np.float32)
            if isinstance(image, np.ndarray)
            else self._recent.get(image)
        )
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 image, got shape {pixels.shape}")
        if not np.isfinite(pixels).all():
            raise ValueError("the image holds NaN or infinite pixels")
        region = crop(pixels, box)
        h, w = region.shape[:2]
        if min(h, w) < self.min_region:
            what = "the image" if isinstance(image, np.ndarray) else str(image)
            where = f"region {box_text(box)} of {what}" if box is not None else what
            raise ValueError(
                f"{where} is {w}x{h} px; expected at least {self.min_region} px on its "
                "shorter side (min_region / --min-region lowers the limit)"
            )
        return region

    def masked_region(
        self, image: str | os.PathLike | np.ndarray, where: Region, fill: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A region and its mask, unfitted: (H, W, 3) and (H, W), or no mask for a box.

        A `RegionMask` (or an `Outline`, resolved against the image) crops the image to
        its bounding box and comes along cropped alike; with `fill`, pixels outside it
        take the region's mean colour (`fill_outside`).

        Raises:
            ValueError: As `region`, or on a mask of another size than its image, or
                an outline that does not fit it (naming the image).
        """
        if not isinstance(where, RegionMask | Outline):
            return self.region(image, where), None
        pixels = image if isinstance(image, np.ndarray) else self._recent.get(image)
        name = "the image" if isinstance(image, np.ndarray) else str(image)
        if isinstance(where, Outline):
            try:
                where = where.mask(np.shape(pixels), name)
            except ValueError as err:
                raise ValueError(f"{name}: {err}" if name not in str(err) else str(err)) from None
        where.check_image(np.shape(pixels), name)
        region = self.region(pixels, where.box)
        mask = where.crop()
        return (fill_outside(region, mask) if fill else region), mask

    def fitted_mask(self, mask: np.ndarray, source: str = "a mask") -> np.ndarray:
        """A cropped mask through the same fit as its region: (1, S, S) float32 in [0, 1].

        Raises:
            ValueError: If nothing of the mask is left after the fit (a centre crop can
                cut a thin lesion out).
        """
        out = np.clip(fit(mask[:, :, None], self.size, self.policy, self.interpolation), 0, 1)
        if not out.any():
            raise ValueError(
                f"{source}: nothing of the mask is left after fitting to {self.size} px "
                f"({self.policy}); try --policy pad"
            )
        return out.transpose(2, 0, 1).astype(np.float32)

    def prepare_masked_group(
        self, items: Sequence[tuple], fill: bool = False
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Regions compared together with their masks, under the size rule.

        Args:
            items: (image, region) pairs; a region is a box, a `RegionMask` or None.
            fill: Fill outside each mask with its region's mean colour.

        Returns:
            The batch (N, 3, H, W), the masks (N, 1, H, W; all ones for a box) and
            whether the regions were fitted.
        """
        pairs = [self.masked_region(image, where, fill) for image, where in items]
        regions = [r for r, _ in pairs]
        shapes = {r.shape[:2] for r in regions}
        if self.keep_size and len(shapes) == 1 and min(next(iter(shapes))) >= MIN_SIDE:
            batch = np.stack([np.clip(r, 0.0, 1.0).transpose(2, 0, 1) for r in regions])
            masks = [np.ones(r.shape[:2], np.float32) if m is None else m for r, m in pairs]
            return np.ascontiguousarray(batch, np.float32), np.stack(masks)[:, None], False
        batch = np.stack([self.fitted(r) for r in regions])
        masks = [
            np.ones((1, *batch.shape[2:]), np.float32)
            if m is None
            else self.fitted_mask(m, where.source)
            for (_, m), (_, where) in zip(pairs, items, strict=True)
        ]
        return batch, np.stack(masks), True

    def fitted(self, region: np.ndarray) -> np.ndarray:
        """A cropped region fitted to `size` and clipped: (3, S, S) float32."""
        out = model_input(region, self.size, self.policy, self.interpolation)
        return out.transpose(2, 0, 1).copy()

    def prepare(
        self, image: str | os.PathLike | np.ndarray, box: Box | str | None = None
    ) -> np.ndarray:
        """One image or region on its own, fitted to `size`: (3, S, S) float32."""
        return self.fitted(self.region(image, box))

    def prepare_group(self, items: Sequence[tuple]) -> tuple[np.ndarray, bool]:
        """Regions compared together, under the size rule: (N, 3, H, W) and whether fitted.

        Args:
            items: (image, box) pairs; a box may be None (the whole image).

        Returns:
            The batch, at the regions' own size when they share one and `keep_size`
            allows it (False), else fitted to `size` (True).
        """
        batch, _, fitted = self.prepare_masked_group(items)
        return batch, fitted

    def prepare_many(
        self,
        reference,
        others: Sequence,
        box: Box | str | None = None,
        boxes: Sequence | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One reference (1, 3, H, W) and K comparison images (K, 3, H, W), prepared.

        Under the size rule: at their own size when all K + 1 share one.

        Args:
            reference: Image path or HWC array.
            others: Image paths or arrays.
            box: Region of the reference.
            boxes: One region (or None) per comparison image.

        Raises:
            ValueError: On no comparison image, or a region count that differs from it.
        """
        batch, _ = self.prepare_group(reference_items(reference, others, box, boxes))
        return batch[:1], batch[1:]

    def check_batch(self, batch: np.ndarray, name: str = "the batch") -> np.ndarray:
        """A prepared batch (N, 3, H, W) in [0, 1] as float32; one (3, H, W) image is N = 1.

        Raises:
            ValueError: On a wrong shape (a fixed-size model takes its native size
                only), a side below `MIN_SIDE`, NaN / inf, or values outside [0, 1].
        """
        x = np.asarray(batch, np.float32)
        x = x[None] if x.ndim == 3 else x
        if x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
            raise ValueError(f"expected a prepared (N, 3, H, W) batch, got shape {x.shape}")
        native = self.native_size
        if not self.model.manifest["dynamic_size"] and x.shape[2:] != (native, native):
            raise ValueError(
                f"{self.model.path.name}: takes {native}x{native} inputs only, "
                f"not {x.shape[2]}x{x.shape[3]}"
            )
        if min(x.shape[2:]) < MIN_SIDE:
            raise ValueError(
                f"images of {x.shape[2]}x{x.shape[3]} are too small; expected >= {MIN_SIDE}"
            )
        if not np.isfinite(x).all():
            raise ValueError(f"{name} holds NaN or infinite pixels")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name} has values outside [0, 1] ({x.min():.3g} .. {x.max():.3g})")
        return np.ascontiguousarray(x)

    def check_pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two prepared batches of the same shape, or one reference and a batch.

        Raises:
            ValueError: On mismatched shapes, or as `check_batch`.
        """
        a, b = self.check_batch(a, "image_a"), self.check_batch(b, "image_b")
        if a.shape[1:] != b.shape[1:] or a.shape[0] not in (1, b.shape[0]):
            raise ValueError(
                "image batches must have the same (N, 3, H, W) shape, or the first hold one "
                f"reference; got {a.shape} and {b.shape}"
            )
        return a, b
