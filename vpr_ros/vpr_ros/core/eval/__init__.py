"""Evaluation: ground truth for loop closures, loop-closure and retrieval metrics, trajectory errors
(ATE). Imports only core.errors; used by the command line and the tests, never by the detector.
"""
