"""dermsim evaluation: scoring, statistics, baselines and reports on onnxruntime.

This package depends on numpy, Pillow / OpenCV and onnxruntime only; it never imports
torch or tensorflow (tests/test_spec.py checks that).
"""


def __getattr__(name: str):
    # `evaluation.Scorer` / `evaluation.Index` without importing onnxruntime on `import evaluation`
    if name == "Scorer":
        from evaluation.score import Scorer

        return Scorer
    if name == "Index":
        from evaluation.index import Index

        return Index
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")


__all__ = ["Index", "Scorer"]
