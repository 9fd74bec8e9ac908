"""Imported once by the scan's forkserver (`hashsvc.scan._pool_context`), never by hand.

The forkserver's preload can only import modules, so this one's import does the work:
it loads the numba kernels of a file check, and every pool worker forked afterwards
inherits them instead of loading them itself. `warm_kernels` never raises (an exception
other than ImportError here would kill the forkserver, and with it the pool).
"""

from hashsvc.scan import warm_kernels

warm_kernels()
