"""Imported once by the scan's forkserver (`hashsvc.scan.KERNEL_PRELOAD`), never by hand.

The forkserver's preload can only import modules, so this one's import does the work:
it imports what a pool worker runs (the scan, the matcher, the numba kernel modules) and
loads the numba kernels of a file check, and every pool worker forked afterwards
inherits them instead of loading them itself. `warm_kernels` never raises (an exception
other than ImportError here would kill the forkserver, and with it the pool).

The garbage collector is off meanwhile and what was made is then frozen (`gc.freeze`),
as the gc module's documentation advises for a process that forks: numba's typing and
dispatch objects live as long as the server, yet the collections that its imports and
warm-up triggered spent 0.20-0.24 s of the preload walking them (two full ones among
them) and freed ~58k objects (~0.6 MB, now kept). Frozen, they are walked neither by a
worker's collections nor when the server exits after the scan: its exit took 0.45-0.6 s
(now ~0.07 s), and until it is gone it holds the scan's stdout and stderr open, so a
caller reading those waited that long past the scan's own exit.
"""

import gc


def _preload() -> None:
    from hashsvc import matcher, pdq_fast, pdq_sampled, scan  # noqa: F401
    from hashsvc.search import kernels  # noqa: F401

    scan.warm_kernels()


gc.disable()
try:
    _preload()
finally:
    gc.freeze()
    gc.enable()
