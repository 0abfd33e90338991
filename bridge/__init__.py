"""dermsim bridge: the ground floor (`bridge.core`) and the tools that cross frameworks.

`bridge.core` holds the framework-neutral building blocks every package stands on.
The modules at this level are the commands that drive both frameworks and the
evaluation harness: `bridge.export` (to ONNX), `bridge.port` (weights between the
twins), `bridge.parity` (the torch / Keras parity table), `bridge.demo` (the whole
pipeline) and `bridge.finetune_metric` (fitting LPIPS / DISTS heads to ratings, with
`bridge.fit_protocol` and `bridge.fit_record`). See docs/architecture.md.
"""
