"""Keyframe maps on disk: the snapshot store (``snapshot``), the live append-only map (``live_map``,
``live_map_dirs``), their SQLite tables (rows, geometry, text, loops, thumbnails), local-feature
segment files, integrity manifests and crash-safe directory replacement. Imports the core spine and
the data types of geometry (cameras) and text; knows nothing of the detector or the fleet.
"""
