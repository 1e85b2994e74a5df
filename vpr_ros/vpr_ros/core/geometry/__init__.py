"""What is the transform? Camera models, correspondences from MNN cells, keyframe keypoints and 3-D
points, the relative pose with its covariance, the detector's geometry step for an accepted loop
(``loop_pose``), the odometry gate, the offline pose graph, and the conversions the backend bridges
need (``backend_edges``: frames, information order; ``backend_nodes``: stamp -> backend node). Imports the core spine and
matching's MNN pairs; knows nothing of the map store, text or the detector.
"""
