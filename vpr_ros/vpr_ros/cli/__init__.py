"""The vpr-ros command line."""
