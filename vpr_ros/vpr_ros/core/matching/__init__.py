"""Is it the same place? Verification of retrieval candidates by mutual nearest neighbours (MNN) of
dense local features (``verification``), and the exact, blocked MNN it runs on (``mnn_batched`` with
its error bounds, row pass and optional numba kernels). Imports only the core spine (errors, config,
types); knows nothing of geometry, the map store, text or the detector.
"""
