"""dermsim's ground floor: framework-neutral building blocks every package stands on.

Nothing under `bridge.core` imports torch, tensorflow or keras, nor anything from
`evaluation`, `torch_models`, `tf_models` or the tools at `bridge`'s top level
(`tests/test_layers.py` checks every import). See `docs/architecture.md`.
"""
