"""dermsim bridge: the framework-neutral core and everything that crosses frameworks.

`bridge.core.spec` (architectures, taps, input contracts) and `bridge.core.weights` (weight
files) import neither torch nor tensorflow. `bridge.port` and the command-line tools
import a framework only when a call needs it.
"""
