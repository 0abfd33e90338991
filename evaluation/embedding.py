"""Image embeddings for retrieval: one pooled, L2-normalised vector per image or region.

An `Embedder` is a `FeatureExtractor` (a `features` ONNX export) that keeps one tap
and pools it into a vector:

* `gap` (the default): the channel means over the tap's grid;
* `max`: the channel maxima over the grid;
* `cls`: a ViT tap's class token (`<tap>_cls`).

The default tap is the extractor's deepest grid tap (the last one its manifest lists).
Vectors are L2-normalised in float64 and stored as float32, so the distance between
two images is `1 - v_a . v_b` (the cosine distance, in [0, 2]): for `gap` it is the
same number as `FeatureExtractor`'s `<tap>/gap` distance. Every image is fitted to one
size (the extractor's native size unless told) by the project's one input chain, so
that an archive's vectors are comparable whatever the sizes of its files.

`EmbedJob` is the picklable description of that work which the engines (local, Ray)
open once per worker.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.core.data.image import DEFAULT_POLICY
from bridge.core.data.masks import Outline, RegionMask, area_average, parse_region_cell
from evaluation.features import CLS_SUFFIX, EPS, FeatureExtractor
from evaluation.inputs import Region

POOLINGS = ("gap", "max", "cls")
"""How a tap becomes one vector (module docstring)."""
DEFAULT_POOLING = "gap"


def grid_taps(manifest: dict) -> list[str]:
    """A features manifest's grid taps, shallow to deep (class-token outputs left out)."""
    taps = list(manifest["taps"])
    return [t for t in taps if not (t.endswith(CLS_SUFFIX) and t[: -len(CLS_SUFFIX)] in taps)]


def poolings_of(manifest: dict) -> list[tuple[str, str]]:
    """Every (tap, pooling) an extractor offers.

    Each grid tap by `gap` and by `max`, and a ViT tap's class token (`cls`).
    """
    taps = list(manifest["taps"])
    out = []
    for tap in grid_taps(manifest):
        out += [(tap, "gap"), (tap, "max")]
        if tap + CLS_SUFFIX in taps:
            out.append((tap, "cls"))
    return out


def pooled_taps(
    extractor: FeatureExtractor, batch: np.ndarray, pairs: Sequence[tuple[str, str]], step: int = 32
) -> dict[tuple[str, str], np.ndarray]:
    """{(tap, pooling): (N, C) float64} of prepared images, not normalised; one pass per `step`."""
    blocks: dict[tuple[str, str], list[np.ndarray]] = {pair: [] for pair in pairs}
    for start in range(0, len(batch), step):
        outputs = extractor.features(batch[start : start + step])
        for tap, pooling in pairs:
            name = tap + CLS_SUFFIX if pooling == "cls" else tap
            blocks[tap, pooling].append(pool(np.asarray(outputs[name], np.float64), pooling))
    return {pair: np.concatenate(parts) for pair, parts in blocks.items()}


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64, returned as float32; zero rows stay zero."""
    x = np.asarray(x, np.float64)
    norms = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return np.where(norms > EPS, x / np.maximum(norms, EPS), 0.0).astype(np.float32)


class Embedder(FeatureExtractor):
    """A feature extractor reduced to one L2-normalised vector per image.

    Args:
        model: The `features` .onnx file (or an open `Model`).
        tap: Grid tap to pool (default: the deepest, `grid_taps(manifest)[-1]`).
        pooling: `gap`, `max` or `cls` (`cls` needs a ViT tap with a class token).
        size: Side every image is fitted to (default: the model's native size).
        policy: Resize policy (default `shorter_center_crop`).
        prefer_gpu: Try the CUDA provider.

    Raises:
        ValueError: If the model is not a feature extractor, or the tap / pooling is
            not one it has.
    """

    def __init__(
        self,
        model,
        tap: str | None = None,
        pooling: str = DEFAULT_POOLING,
        size: int | None = None,
        policy: str = DEFAULT_POLICY,
        prefer_gpu: bool = True,
    ):
        super().__init__(model, size, policy, prefer_gpu=prefer_gpu)
        self.keep_size = False  # every image is fitted to `size`: one grid for the archive
        grid = grid_taps(self.model.manifest)
        self.tap = tap or grid[-1]
        if self.tap not in grid:
            raise ValueError(
                f"{self.model.path.name}: no grid tap {self.tap!r}; "
                f"expected one of {', '.join(grid)}"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        if pooling == "cls" and self.tap + CLS_SUFFIX not in self.model.manifest["taps"]:
            raise ValueError(
                f"{self.model.path.name}: tap {self.tap!r} has no class token; "
                "pooling 'cls' needs a ViT extractor"
            )
        self.pooling = pooling
        self._output = self.tap + CLS_SUFFIX if pooling == "cls" else self.tap

    @functools.cached_property
    def dim(self) -> int:
        """Length of the vectors (the tap's channel count)."""
        return int(self.embed_batch(np.zeros((1, 3, self.size, self.size), np.float32)).shape[1])

    def settings(self) -> dict:
        """What makes two embeddings comparable: tap, pooling, size and resize policy."""
        return {"tap": self.tap, "pooling": self.pooling, "size": self.size, "policy": self.policy}

    def embed_batch(self, batch: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """Vectors (N, D) float32, unit norm, of a prepared batch (N, 3, S, S) in [0, 1].

        Args:
            batch: The prepared images.
            masks: Weights (N, 1, S, S) in [0, 1] to pool under (`pool`), or None.
        """
        out = np.asarray(
            self.model.run(outputs=[self._output], image=self.check_batch(batch))[self._output],
            np.float64,
        )
        return normalise(pool(out, self.pooling, masks))

    def prepare_region(self, image, region: Region = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One image or region fitted to `size`: (3, S, S), and its mask (1, S, S) or None.

        A mask or outline (`evaluation.inputs.Region`) crops the image to its bounding
        box and comes along fitted alike; a box or None has no mask.
        """
        batch, masks, _ = self.prepare_masked_group([(image, region)])
        masked = isinstance(region, RegionMask | Outline)
        return batch[0], (masks[0] if masked else None)

    def embed(self, image, box: Region = None) -> np.ndarray:
        """The vector (D,) of one image file or HWC array, or a region of it.

        A mask or outline pools the tap under it (`pool`).
        """
        prepared, mask = self.prepare_region(image, box)
        return self.embed_batch(prepared[None], None if mask is None else mask[None])[0]


def pool(tap_output: np.ndarray, pooling: str, masks: np.ndarray | None = None) -> np.ndarray:
    """One vector per sample of a tap output: (N, C, h, w) grid or (N, C) class token.

    With masks (N, 1, H, W) over the input images, brought to the grid by area
    averaging: `gap` is the mean under each image's mask, `max` the maximum over the
    cells the mask touches; a class token (`cls`) has no position and is unmasked.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    if pooling == "cls":
        return tap_output
    if masks is None:
        return tap_output.mean(axis=(2, 3)) if pooling == "gap" else tap_output.max(axis=(2, 3))
    weights = area_average(masks, tap_output.shape[2:])
    if pooling == "gap":
        return (tap_output * weights).sum(axis=(2, 3)) / weights.sum(axis=(2, 3))
    return np.where(weights > 0, tap_output, -np.inf).max(axis=(2, 3))


@dataclass(frozen=True)
class EmbedJob:
    """Embedding work an engine runs: a model and its settings, opened once per worker.

    A worker maps a batch `{"path": (B,) str, "box": (B,) str}` (a region as
    `bridge.core.data.masks.region_cell` writes it: "" = whole image, a box, or a mask
    file to pool under) to `{"vector": (B, D) float32, "error": (B,) str}`; an image that cannot be
    decoded or cropped gets a zero vector and its reason in `error` ("" when fine).

    Attributes:
        model: The features .onnx file.
        tap: Grid tap.
        pooling: Pooling.
        size: Fitted side.
        policy: Resize policy.
        prefer_gpu: Try the CUDA provider.
        threads: Intra-op threads of each worker's session (None: onnxruntime's choice).
    """

    model: str
    tap: str
    pooling: str = DEFAULT_POOLING
    size: int | None = None
    policy: str = DEFAULT_POLICY
    prefer_gpu: bool = True
    threads: int | None = None

    def open(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A worker function holding its own open model."""
        from bridge.core.runtime import open_model

        model = open_model(self.model, prefer_gpu=self.prefer_gpu, threads=self.threads)
        embedder = Embedder(model, self.tap, self.pooling, self.size, self.policy)
        return lambda batch: embed_rows(embedder, batch["path"], batch["box"])


def embed_rows(embedder: Embedder, paths: Sequence[str], regions: Sequence[str]) -> dict:
    """Embed files (and regions) one batch at a time, recording per-image failures.

    A batch without masks is pooled as it always was; one with masks pools every
    image under its mask (all ones for a box: the same vector up to rounding).
    """
    prepared, masks, errors = [], [], []
    for path, cell in zip(paths, regions, strict=True):
        try:
            image, mask = embedder.prepare_region(os.fspath(path), parse_region_cell(cell))
            prepared.append(image)
            masks.append(mask)
            errors.append("")
        except (ValueError, OSError) as err:
            prepared.append(None)
            masks.append(None)
            errors.append(str(err).splitlines()[0] or type(err).__name__)
    vectors = np.zeros((len(prepared), embedder.dim), np.float32)
    good = [i for i, x in enumerate(prepared) if x is not None]
    if good:
        batch = np.stack([prepared[i] for i in good])
        weights = None
        if any(masks[i] is not None for i in good):
            ones = np.ones((1, *batch.shape[2:]), np.float32)
            weights = np.stack([ones if masks[i] is None else masks[i] for i in good])
        vectors[good] = embedder.embed_batch(batch, weights)
    return {"vector": vectors, "error": np.array(errors, dtype=object)}
