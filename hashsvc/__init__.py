"""hashsvc: match uploads against trusted hash lists of known abusive media.

The package is a pure core (media, signals, hashing, hashlist, store, search, policy,
matcher) with thin adapters on top (api/, cli.py, scan.py). Importing the package is
cheap on purpose: heavy libraries (numba, faiss, fastapi) load only where used, so the
CLI starts fast.
"""

__version__ = "0.1.0"
