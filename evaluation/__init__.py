"""dermsim evaluation: scoring, statistics, baselines and reports on onnxruntime.

This package depends on numpy and onnxruntime only; it never imports torch or
tensorflow (tests/test_imports.py checks that).
"""
