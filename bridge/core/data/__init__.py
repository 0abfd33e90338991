"""Data, numpy only.

One image decoder, readers for every supported format, splits, the synthetic set and
the framework-neutral batch stream.
"""
