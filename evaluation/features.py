"""Cosine distances between backbone taps of an exported ONNX feature extractor.

A `features` export (`python -m bridge.export --kind features`) maps an `image`
batch (NCHW float32 in [0, 1]) to one NCHW output per tap; a ViT adds a class
token `<tap>_cls` (N, C) beside each grid tap of patch tokens. Each grid tap is
compared three ways (`TAP_MODES`), a ViT tap two more (`VIT_TAP_MODES`):

* `flat`: 1 - cos of the flattened maps (layout and content),
* `gap`: 1 - cos of the channel means over the grid (content, no layout),
* `position`: 1 - the mean over grid positions of the cos of the channel vectors,
* `cls`: 1 - cos of the class tokens,
* `tokens`: 1 - cos of all tokens, class token included, flattened.

Distances lie in [0, 2]; 0 means the same direction. numpy and onnxruntime only.

    extractor = FeatureExtractor("models/resnet50-features-torch.onnx")
    d = extractor.distances_many("lesion.png", ["a.png", "b.png"], box=Box(10, 20, 64, 64))
    d["layer3/gap"]  # (2,) distances
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bridge.core.data.masks import area_average
from evaluation.inputs import ImageModel, Region, reference_items

TAP_MODES = ("flat", "gap", "position")
"""Distances of every grid tap (N, C, h, w)."""
VIT_TAP_MODES = ("cls", "tokens")
"""Further distances of a tap with a `<tap>_cls` class-token companion (ViT)."""
CLS_SUFFIX = "_cls"
"""Suffix of a ViT tap's class-token output."""
EPS = 1e-12
"""Vectors with a smaller norm count as zero in the cosine."""


def tap_distances(
    feats_a: Mapping[str, np.ndarray],
    feats_b: Mapping[str, np.ndarray],
    taps: Sequence[str],
    masks_a: np.ndarray | None = None,
    masks_b: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Cosine distances between two batches of tap outputs, sample by sample.

    A class-token output `<tap>_cls` listed in `taps` beside its grid tap `<tap>`
    (as a ViT manifest's `taps` lists it) is not a tap of its own: it gives that
    tap's `cls` and `tokens` distances. The maths is float64; a zero vector is at
    distance 1 from any non-zero vector and 0 from another zero vector.

    Args:
        feats_a: {output name: array}; grid taps (Na, C, h, w), class tokens (Na, C).
            Na is N, or 1 for one reference compared with every sample of `feats_b`.
        feats_b: {output name: array} with N samples and the same per-sample shapes.
        taps: The grid taps to compare (a manifest's `taps`).
        masks_a: Weights (Na, 1, H, W) in [0, 1] over the input images of `feats_a`,
            or None (all ones). Given (with `masks_b`), each is brought to each tap's
            grid by area averaging and the distances are masked as the masked
            metrics are (docs/metrics.md): `gap` pools each image under its own
            mask; `flat` and `position` pair positions, so they weigh them by the
            joint weight m_a m_b; `cls` is unmasked (a ViT's class token has no
            position); `tokens` weighs its patch tokens jointly. All-ones masks give
            the unmasked distances.
        masks_b: The same for `feats_b` (N, 1, H, W).

    Returns:
        {"<tap>/<mode>": (N,) float64 distances}, tap by tap in `taps` order, modes in
        `TAP_MODES` (+ `VIT_TAP_MODES`) order.

    Raises:
        ValueError: On a missing output, a non-grid tap, mismatched shapes, one mask
            without the other, or masks with no common weight on a tap's grid.
    """
    names = list(taps)
    if not names:
        raise ValueError("no taps to compare; expected at least one tap name")
    if (masks_a is None) != (masks_b is None):
        raise ValueError("masks_a and masks_b: expected both or neither")
    out: dict[str, np.ndarray] = {}
    for tap in names:
        if tap.endswith(CLS_SUFFIX) and tap[: -len(CLS_SUFFIX)] in names:
            continue  # a class token, compared with its grid tap
        a, b = _pair(feats_a, feats_b, tap)
        if a.ndim != 4:
            raise ValueError(f"tap {tap!r}: expected an (N, C, h, w) grid, got shape {a.shape}")
        n = len(b)
        if masks_a is None:
            dot, norm_a, norm_b = _sums(a.reshape(len(a), -1), b.reshape(n, -1), axis=1)
            pooled_a, pooled_b = a.mean(axis=(2, 3)), b.mean(axis=(2, 3))
            per_position = _cos(*_sums(a, b, axis=1))  # (N, h, w)
            position = per_position.reshape(n, -1).mean(axis=1)
        else:
            own_a, own_b = (area_average(m, a.shape[2:]) for m in (masks_a, masks_b))
            joint = own_a * own_b  # (N, 1, h, w)
            total = joint.sum(axis=(1, 2, 3))
            if not (total > 0).all():
                raise ValueError(f"tap {tap!r}: the two masks share no weight on its grid")
            dot, norm_a, norm_b = (
                (joint * x * y).sum(axis=(1, 2, 3)) for x, y in ((a, b), (a, a), (b, b))
            )
            pooled_a = (a * own_a).sum(axis=(2, 3)) / own_a.sum(axis=(2, 3))
            pooled_b = (b * own_b).sum(axis=(2, 3)) / own_b.sum(axis=(2, 3))
            per_position = _cos(*_sums(a, b, axis=1))  # (N, h, w)
            position = (per_position * joint[:, 0]).sum(axis=(1, 2)) / total
        out[f"{tap}/flat"] = 1.0 - _cos(dot, norm_a, norm_b)
        out[f"{tap}/gap"] = 1.0 - _cos(*_sums(pooled_a, pooled_b, axis=1))
        out[f"{tap}/position"] = 1.0 - position
        cls = tap + CLS_SUFFIX
        if cls in feats_a or cls in feats_b:
            ca, cb = _pair(feats_a, feats_b, cls)
            if ca.ndim != 2:
                raise ValueError(f"class token {cls!r}: expected (N, C), got shape {ca.shape}")
            cls_dot, cls_a, cls_b = _sums(ca, cb, axis=1)
            out[f"{tap}/cls"] = 1.0 - _cos(cls_dot, cls_a, cls_b)
            out[f"{tap}/tokens"] = 1.0 - _cos(dot + cls_dot, norm_a + cls_a, norm_b + cls_b)
    return out


def _pair(
    feats_a: Mapping[str, np.ndarray], feats_b: Mapping[str, np.ndarray], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """One output of both batches as float64, checked to compare sample by sample."""
    for label, feats in (("feats_a", feats_a), ("feats_b", feats_b)):
        if name not in feats:
            raise ValueError(f"{label} has no output {name!r}; it has {', '.join(feats)}")
    a = np.asarray(feats_a[name], dtype=np.float64)
    b = np.asarray(feats_b[name], dtype=np.float64)
    if a.ndim < 2 or a.shape[1:] != b.shape[1:] or a.shape[0] not in (1, b.shape[0]):
        raise ValueError(
            f"output {name!r}: expected the same (N, ...) shapes, or one reference in feats_a; "
            f"got {a.shape} and {b.shape}"
        )
    return a, b


def _sums(a: np.ndarray, b: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dot product and squared norms along `axis`, summed alike (so a == b gives cos 1)."""
    return (a * b).sum(axis=axis), (a * a).sum(axis=axis), (b * b).sum(axis=axis)


def _cos(dot: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray) -> np.ndarray:
    """Cosine from a . b and the squared norms; 0 against one zero vector, 1 for two."""
    dot, sq_a, sq_b = np.broadcast_arrays(dot, sq_a, sq_b)
    zero_a, zero_b = sq_a <= EPS * EPS, sq_b <= EPS * EPS
    both = ~(zero_a | zero_b)
    cos = np.where(zero_a & zero_b, 1.0, 0.0)
    # sqrt(x * x) == x exactly in binary floating point: identical vectors give cos 1
    cos[both] = dot[both] / np.sqrt(sq_a[both] * sq_b[both])
    return np.clip(cos, -1.0, 1.0)


class FeatureExtractor(ImageModel):
    """A `features` ONNX export: images or regions in, tap outputs and distances out.

    Opened, sized and checked as `evaluation.inputs.ImageModel` (same arguments).

    Raises:
        ValueError: If the model is not a feature extractor, or the size does not suit it.
    """

    KINDS = ("features",)
    NEEDS = "feature distances need a features export (python -m bridge.export --kind features)"

    @property
    def taps(self) -> list[str]:
        """The manifest's taps: grid outputs, and a ViT's `<tap>_cls` class tokens."""
        return list(self.model.manifest["taps"])

    def features(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model for a prepared batch (N, 3, H, W) in [0, 1].

        A single (3, H, W) image is taken as a batch of one.

        Raises:
            ValueError: On a wrong shape (a fixed-size model takes its native size
                only), NaN / inf, or values outside [0, 1].
        """
        return self.model.run(image=self.check_batch(batch))

    def distances(
        self,
        a: np.ndarray,
        b: np.ndarray,
        masks_a: np.ndarray | None = None,
        masks_b: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Tap distances (`tap_distances`) of two prepared batches (N, 3, H, W).

        `a` may hold one image, compared with every image of `b`; masks (N, 1, H, W),
        given for both or neither, mask the distances as `tap_distances` says.

        Raises:
            ValueError: On mismatched shapes, or as `features` and `tap_distances`.
        """
        a, b = self.check_pair(a, b)
        return tap_distances(self.features(a), self.features(b), self.taps, masks_a, masks_b)

    def distances_many(
        self,
        reference,
        others: Sequence,
        box: Region = None,
        boxes: Sequence[Region] | None = None,
        masked: bool = False,
    ) -> dict[str, np.ndarray]:
        """Tap distances of one reference (a lesion region) to K comparison regions.

        Costs 1 + K backbone passes: the reference's features are computed once.

        Arguments as `ImageModel.prepare_many`; a region may also be a mask or an
        outline (`evaluation.inputs.Region`). Without `masked`, a mask or outline is
        its bounding box (as every unmasked metric sees it); with it, the features
        are pooled and compared under the masks (`tap_distances`; a box is all ones).

        Returns:
            {"<tap>/<mode>": (K,) float64 distances}.
        """
        if not masked:
            return self.distances(*self.prepare_many(reference, others, box, boxes))
        items = reference_items(reference, others, box, boxes)
        batch, masks, _ = self.prepare_masked_group(items)
        return self.distances(batch[:1], batch[1:], masks[:1], masks[1:])
