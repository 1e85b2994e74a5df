"""Exceptions raised by vpr_ros. Each message says what was wrong and what to do."""

__all__ = ["VprError", "ConfigError", "ModelLoadError", "InputError", "StampOrderError", "MapStoreError",
           "BagError", "FleetError"]


class VprError(Exception):
    """Base class of every vpr_ros error."""


class ConfigError(VprError, ValueError):
    """A configuration key or value is invalid; the message names the key and the allowed values."""


class ModelLoadError(VprError):
    """A model, checkpoint or backend cannot be loaded."""


class InputError(VprError, ValueError):
    """An input frame, message or pose cannot be used (unknown encoding, empty image, NaN pose)."""


class StampOrderError(InputError):
    """A frame is older than the previous one (bag loop, clock jump): reset the detector to go on."""


class MapStoreError(VprError):
    """A saved map cannot be written or read."""


class BagError(VprError):
    """A rosbag2 file cannot be replayed (missing topic, unreadable storage)."""


class FleetError(VprError):
    """Another robot's keyframes or features cannot be used (other model, malformed batch)."""
