"""The exported models a comparison uses: one file per trained model and kind.

`bridge.core.runtime.find_models` finds the ONNX files whose manifests check out;
`discover` keeps, per trained model and kind, the file exported from the framework
that trained it, as an `Entry` that knows its backbone, framework and training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.data.image import DEFAULT_POLICY
from bridge.core.runtime import EXPORT_KINDS, FP32, find_models, model_name, precision_of

DEMO_COMMAND = "tox -e demo"


@dataclass(frozen=True)
class Entry:
    """One usable exported model.

    Attributes:
        path: Its ONNX file.
        manifest: Its manifest.
        model: The trained model it comes from: `<run>-<arch>-<framework>` or the
            weights' stem (the file name without `-<kind>-<origin>.onnx`).
        framework: The framework that trained it (the export origin when unknown).
        others: Files of the same model and kind from the other origin (unused).
    """

    path: Path
    manifest: dict[str, Any]
    model: str
    framework: str
    others: tuple[Path, ...] = ()

    @property
    def kind(self) -> str:
        """classifier, features, lpips or dists."""
        return self.manifest["kind"]

    @property
    def backbone(self) -> str:
        """The architecture."""
        return self.manifest["backbone"]

    @property
    def precision(self) -> str:
        """`fp32`, or the reduced precision of a `bridge.precision` copy (`int8`, `fp16`)."""
        return precision_of(self.manifest)

    @property
    def label(self) -> str:
        """`vgg16 torch`: backbone and training framework (`vgg16 torch int8` when reduced)."""
        reduced = "" if self.precision == FP32 else f" {self.precision}"
        return f"{self.backbone} {self.framework}{reduced}"

    @property
    def run(self) -> dict[str, Any]:
        """The manifest's record of the training run ({} when there is none)."""
        return self.manifest.get("training_run") or {}

    @property
    def heads(self) -> dict[str, Any]:
        """The manifest's record of the metric heads ({} when there is none)."""
        return self.manifest.get("heads") or {}

    @property
    def policy(self) -> str:
        """The resize policy the model was trained with."""
        return self.run.get("resize_policy", DEFAULT_POLICY)


def discover(folder: Path, strict: bool = False) -> tuple[list[Entry], list[str]]:
    """Usable models in `folder` and the problems found with the others.

    Per trained model, kind and precision, the file exported from the framework that
    trained it is used (the other origin's file gives the same numbers within the export
    gate). A reduced-precision copy (`bridge.precision`) is a model of its own, labelled.

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: With `strict`, on the first model that cannot be used.
    """
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such model folder; run `{DEMO_COMMAND}` (or python -m bridge.export "
            "--run runs/<name> --kind all --out models/<name>) first"
        )
    found: dict[tuple[str, str], list[Entry]] = {}
    models, problems = find_models(folder, EXPORT_KINDS, strict=strict)
    for path, manifest in models:
        model = model_name(path, manifest)
        run = manifest.get("training_run") or {}
        entry = Entry(path, manifest, model, run.get("framework") or manifest["origin"])
        found.setdefault((model, manifest["kind"], precision_of(manifest)), []).append(entry)
    entries = []
    for group in found.values():
        native = [e for e in group if e.manifest["origin"] == e.framework] or group
        chosen = native[0]
        others = tuple(e.path for e in group if e is not chosen)
        entries.append(Entry(chosen.path, chosen.manifest, chosen.model, chosen.framework, others))
    return entries, problems
