"""The framework-neutral batch stream: decode, augment, normalise, shuffle (numpy).

Both trainers consume the same `BatchStream`, so a torch run and a Keras run of one
config see identical batches. Everything random derives from `(seed, epoch)`:

* the order of an epoch from `default_rng([seed, epoch])`;
* each image's augmentation from `default_rng([seed, epoch, index])`, where `index`
  is the image's position in the split, so a batch does not depend on batch size,
  process count or on whether the run was resumed.

Batches are NHWC float32 (the image layout; Keras takes it as is, torch permutes it to
NCHW, which is channels-last in memory) plus int64 labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from bridge.core.config import AugmentConfig
from bridge.core.data.image import Box, crop, decode_image, model_input, resize
from bridge.core.data.readers import Sample


@dataclass(frozen=True)
class Batch:
    """One batch.

    Attributes:
        images: (N, H, W, 3) float32, normalised by the input contract.
        labels: (N,) int64 class indices.
        ids: Sample ids.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: tuple[str, ...]


class ImageCache:
    """Decodes each image once, fitted to the network size (kept in memory if asked)."""

    def __init__(self, size: int, policy: str, interpolation: str, keep: bool = True):
        self.size, self.policy, self.interpolation, self.keep = size, policy, interpolation, keep
        self._images: dict[str, np.ndarray] = {}

    def get(self, sample: Sample) -> np.ndarray:
        """Return the sample's image, size x size x 3 float32 RGB in [0, 1]."""
        image = self._images.get(sample.id)
        if image is None:
            image = model_input(
                decode_image(sample.path), self.size, self.policy, self.interpolation
            )
            if self.keep:
                self._images[sample.id] = image
        return image


class BatchStream:
    """Seeded batches of one split.

    Args:
        samples: The split's samples.
        classes: Class names; labels are indices into this.
        cache: Decoder / cache shared by the run's streams.
        mean: Normalisation mean (input contract).
        std: Normalisation standard deviation.
        batch_size: Images per batch.
        augment: Augmentation (None for validation / test).
        shuffle: Reshuffle every epoch.
        seed: Seed of order and augmentation.
        drop_last: Drop a last incomplete batch (training).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        cache: ImageCache,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        augment: AugmentConfig | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if not samples:
            raise ValueError("a batch stream needs at least one image")
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({s.label for s in samples} - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
        self.samples = tuple(samples)
        self.labels = np.array([index[s.label] for s in samples], dtype=np.int64)
        self.cache = cache
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)
        self.batch_size, self.augment, self.shuffle = batch_size, augment, shuffle
        self.seed, self.drop_last = seed, drop_last and len(samples) >= batch_size

    def __len__(self) -> int:
        n = len(self.samples) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch."""
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Yield the batches of `epoch`; the next batch is prepared in the background."""
        order = self.order(epoch)
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        chunks = chunks[: len(self)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._batch, chunks[0], epoch) if chunks else None
            for k in range(len(chunks)):
                batch = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(self._batch, chunks[k + 1], epoch)
                yield batch

    def _batch(self, indices: np.ndarray, epoch: int) -> Batch:
        images = [self.image(int(i), epoch) for i in indices]
        return Batch(
            np.stack(images),
            self.labels[indices],
            tuple(self.samples[int(i)].id for i in indices),
        )

    def image(self, index: int, epoch: int) -> np.ndarray:
        """The normalised (augmented, when training) image of sample `index` in `epoch`."""
        image = self.cache.get(self.samples[index])
        if self.augment is not None:
            image = augment(image, self.augment, np.random.default_rng([self.seed, epoch, index]))
        return (image - self.mean) / self.std


def augment(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop, rotation, flips and colour jitter of an HWC [0, 1] image."""
    h, w = image.shape[:2]
    if cfg.crop_scale != (1.0, 1.0):
        area = rng.uniform(*cfg.crop_scale) * h * w
        ratio = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
        cw = int(min(w, max(1, round(math.sqrt(area * ratio)))))
        ch = int(min(h, max(1, round(math.sqrt(area / ratio)))))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = resize(crop(image, Box(x, y, cw, ch)), (h, w))
    if cfg.rotation:
        angle = rng.uniform(-cfg.rotation, cfg.rotation)
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        image = cv2.warpAffine(
            image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
    if cfg.hflip and rng.random() < 0.5:
        image = image[:, ::-1]
    if cfg.vflip and rng.random() < 0.5:
        image = image[::-1]
    if cfg.color_jitter:
        j = cfg.color_jitter
        brightness, contrast, saturation = rng.uniform(1 - j, 1 + j, 3)
        image = image * brightness
        image = (image - image.mean()) * contrast + image.mean()
        gray = image @ np.array([0.299, 0.587, 0.114], np.float32)
        image = gray[..., None] + (image - gray[..., None]) * saturation
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def channel_stats(samples: Sequence[Sample], cache: ImageCache) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the (fitted) images."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for sample in samples:
        image = cache.get(sample).astype(np.float64)
        total += image.sum(axis=(0, 1))
        squares += (image**2).sum(axis=(0, 1))
        count += image.shape[0] * image.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()
