"""Evaluation: ground truth for loop closures, loop-closure and retrieval metrics, trajectory errors
(ATE), and the loops' colour code (``loop_class``: correct / suspect / rejected, shared by the
report, the plots and the RViz markers). Imports only the spine (errors, types, config); used by
the command line, the nodes' markers and the tests, never by the detector.
"""
