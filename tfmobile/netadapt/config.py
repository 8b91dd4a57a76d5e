"""NetAdapt's settings: the one place each is declared (the CLI's flags are made from it).

Light on purpose (no TensorFlow): ``pipelines.netadapt`` reads it before the slow imports.
"""
# The resources NetAdapt can drive down, their units, and those counted on the spec (nothing to
# convert or time).
KINDS = ("latency", "macs", "params", "peak_sram", "flash")
UNITS = {"latency": "ms", "macs": "MACs", "params": "params", "peak_sram": "bytes", "flash": "bytes"}
COUNTED = ("macs", "params")
