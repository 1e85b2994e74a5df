"""What is the transform? Camera models, correspondences from MNN cells, keyframe keypoints and 3-D
points, the relative pose with its covariance, the detector's geometry step for an accepted loop
(``loop_pose``), the odometry gate and the offline pose graph. Imports the core spine and
matching's MNN pairs; knows nothing of the map store, text or the detector.
"""
