"""onnxruntime sessions for dermsim's ONNX files: verified, on the best provider that loads.

`open_model("models/x.onnx")` reads the manifest beside the file, checks the file's
sha256 against it (a mismatch is refused), and opens a session on CUDA when the
CUDA provider really loads, else on CPU; `Model.provider` says which one runs.
numpy + onnxruntime only (no torch, no tensorflow).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.files import sha256_file
from bridge.core.metrics import METRICS

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "dermsim-onnx/1"
SCORER_KINDS = METRICS
KINDS = ("classifier", "features", *SCORER_KINDS)  # what an exported file computes (`all`)
MASKED_KINDS = tuple(f"{metric}_masked" for metric in METRICS)  # scorers with mask inputs
EXPORT_KINDS = (*KINDS, *MASKED_KINDS)  # every kind `bridge.export` writes
FP32 = "fp32"  # the exact export; `bridge.precision` derives reduced-precision copies of it


def metric_of(kind: str) -> str | None:
    """The metric a scorer kind computes (`lpips_masked` -> `lpips`); None for other kinds."""
    base = kind.removesuffix("_masked")
    return base if base in SCORER_KINDS else None


def is_masked(kind: str) -> bool:
    """Whether a kind takes `mask_a` / `mask_b` inputs beside its images."""
    return kind in MASKED_KINDS


# ----------------------------------------------------------------- naming


def model_filename(name: str, kind: str, origin: str, precision: str = FP32) -> str:
    """The file name of an export: `<name>-<kind>-<origin>.onnx`, `...-<origin>-int8.onnx`."""
    tail = "" if precision == FP32 else f"-{precision}"
    return f"{name}-{kind}-{origin}{tail}.onnx"


def precision_of(manifest: dict[str, Any]) -> str:
    """An export's precision: `fp32` (also for manifests older than the field), `int8`..."""
    return manifest.get("precision") or FP32


def model_name(onnx_path: str | os.PathLike, manifest: dict[str, Any]) -> str:
    """The `<name>` part of an export's file name (the stem when it was renamed)."""
    path = Path(onnx_path)
    kind, origin = manifest.get("kind"), manifest.get("origin")
    suffix = model_filename("", kind, origin, precision_of(manifest))
    return path.name[: -len(suffix)] if path.name.endswith(suffix) else path.stem


def heads_kind(manifest: dict[str, Any]) -> str | None:
    """A scorer's heads: `fitted` (to ratings), `published` or `uniform`; None without heads."""
    heads = manifest.get("heads")
    if not heads:
        return None
    if heads.get("fitted"):
        return "fitted"
    return "uniform" if heads.get("source") == "uniform" else "published"


def model_label(manifest: dict[str, Any]) -> str:
    """What tells one export from another, for tables and pages.

    Kind, backbone, who trained it (framework and run, or the weights file), the heads
    of a scorer, the exporter and a reduced precision, e.g. `LPIPS · vgg16 ·
    keras-trained (run demo) · fitted heads · keras export` (`... · keras export · int8`).
    """
    kind = manifest.get("kind", "?")
    metric = metric_of(kind)
    shown = (metric.upper() + (" masked" if is_masked(kind) else "")) if metric else kind
    parts = [shown, str(manifest.get("backbone", "?"))]
    run = manifest.get("training_run") or {}
    if run:
        parts.append(
            f"{run.get('framework', '?')}-trained (run {Path(run.get('dir', '?')).parent.name})"
        )
    else:
        weights = (manifest.get("source_weights") or {}).get("file")
        parts.append(f"weights {Path(weights).name}" if weights else "weights unknown")
    heads = heads_kind(manifest)
    if heads:
        parts.append(f"{heads} heads")
    parts.append(f"{manifest.get('origin', '?')} export")
    if precision_of(manifest) != FP32:
        parts.append(precision_of(manifest))
    return " · ".join(parts)


def manifest_path(onnx_path: str | os.PathLike) -> Path:
    """The manifest beside an ONNX file: `model.onnx` -> `model.json`."""
    return Path(onnx_path).with_suffix(".json")


def find_models(
    folder: str | os.PathLike, kinds: Sequence[str] = KINDS, strict: bool = False
) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """The exports in a folder: `*.onnx` files with a matching manifest, by name.

    A file whose manifest is missing, malformed or of another file (sha256) is left
    out with a warning, and named in the problems returned; files of other kinds are
    skipped silently.

    Args:
        folder: The models folder.
        kinds: The kinds wanted.
        strict: Raise on the first file that cannot be used instead.

    Returns:
        ([(onnx path, manifest)], [problem, ...]).

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: With `strict`, on the first unusable file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such models folder")
    found, problems = [], []
    for path in sorted(folder.glob("*.onnx")):
        try:
            manifest = read_manifest(path)
            if manifest.get("kind") not in kinds:
                continue  # another kind: not hashed, not reported
            verify(path, manifest)
        except (FileNotFoundError, ValueError) as err:
            if strict:
                raise ValueError(f"{err} (--strict)") from None
            problems.append(f"{path.name}: left out: {err}")
            log.warning("%s: left out: %s", path.name, err)
            continue
        found.append((path, manifest))
    return found, problems


# --------------------------------------------------------------- manifests


@dataclass
class Model:
    """An open ONNX model with its manifest.

    Attributes:
        path: The ONNX file.
        manifest: Its manifest (kind, metric, backbone, contract, provenance...).
        session: The onnxruntime session.
        provider: The execution provider actually used.
    """

    path: Path
    manifest: dict[str, Any]
    session: Any
    provider: str

    @property
    def kind(self) -> str:
        """`classifier`, `features`, `lpips` or `dists`."""
        return self.manifest["kind"]

    @property
    def precision(self) -> str:
        """`fp32` (the exact export) or a reduced precision (`int8`, `fp16`)."""
        return precision_of(self.manifest)

    @property
    def outputs(self) -> list[str]:
        """The graph's output names, in order."""
        return [o.name for o in self.session.get_outputs()]

    def run(self, *, outputs: Sequence[str] | None = None, **inputs) -> dict[str, Any]:
        """Run the model; returns {output name: array}.

        Args:
            outputs: The outputs to return (default: all). Only these are copied out;
                onnxruntime's inference builds still run the whole graph.
            **inputs: One array per graph input, by name.

        Raises:
            ValueError: If an output name is not one of the graph's.
        """
        names = self.outputs
        if outputs is not None:
            unknown = [name for name in outputs if name not in names]
            if unknown:
                raise ValueError(
                    f"{self.path.name}: no output {', '.join(map(repr, unknown))}; "
                    f"expected one of {', '.join(names)}"
                )
            names = list(outputs)
        return dict(zip(names, self.session.run(names, inputs), strict=True))


def read_manifest(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The manifest beside an ONNX file (`x.onnx` -> `x.json`).

    Raises:
        FileNotFoundError: If the ONNX file or its manifest is missing.
        ValueError: If the manifest is not a dermsim manifest.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    manifest_file = manifest_path(path)
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{manifest_file}: the manifest of {path.name} is missing")
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_file}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{manifest_file}: not a dermsim manifest (format {MANIFEST_FORMAT})")
    return manifest


_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime ns) -> sha256


def verify(onnx_path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Refuse an ONNX file whose sha256 differs from its manifest's.

    A file is hashed once per process while its inode, size and modification time stay
    the same (the comparison opens each scorer several times; hashing dominated).

    Raises:
        ValueError: Naming both checksums.
    """
    st = os.stat(onnx_path)
    key = (str(Path(onnx_path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key) or _DIGESTS.setdefault(key, sha256_file(onnx_path))
    if digest != manifest.get("onnx_sha256"):
        raise ValueError(
            f"{onnx_path}: sha256 {digest[:12]}... does not match its manifest "
            f"({str(manifest.get('onnx_sha256'))[:12]}...); the file was changed or replaced"
        )


def gpu_visible() -> bool:
    """True when an NVIDIA driver is visible (else the CUDA provider cannot load)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def providers(prefer_gpu: bool = True) -> list[str]:
    """Execution providers to try, best first.

    CUDA is tried when onnxruntime offers it and a GPU driver is visible; whether it
    really loaded is read back from the session (`Model.provider`).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    use_gpu = prefer_gpu and "CUDAExecutionProvider" in available and gpu_visible()
    return [*(["CUDAExecutionProvider"] if use_gpu else []), "CPUExecutionProvider"]


def open_model(
    onnx_path: str | os.PathLike, prefer_gpu: bool = True, threads: int | None = None
) -> Model:
    """Verify and open an ONNX model.

    Args:
        onnx_path: The `.onnx` file (its manifest lies beside it).
        prefer_gpu: Use CUDA when its provider loads.
        threads: Intra-op threads (default: onnxruntime's choice, one per core).

    Raises:
        FileNotFoundError: Missing file or manifest.
        ValueError: Checksum mismatch or an unreadable model.
    """
    import onnxruntime as ort

    path = Path(onnx_path)
    manifest = read_manifest(path)
    verify(path, manifest)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a CUDA provider that fails to load is reported below
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers(prefer_gpu))
    except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph types
        raise ValueError(
            f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0][:200]})"
        ) from None
    provider = session.get_providers()[0]
    if "CUDAExecutionProvider" in providers(prefer_gpu) and provider != "CUDAExecutionProvider":
        log.warning("the CUDA provider did not load; running %s on CPU", path.name)
    return Model(path, manifest, session, provider)
