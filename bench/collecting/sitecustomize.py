"""For the benchmark only, on a cold start's ``PYTHONPATH``: garbage collection stays on while the handler
sets up (``handler.boot`` turns it off in Lambda until ``boot.ready()``), to measure what that saves."""

import gc

gc.disable = lambda: None
