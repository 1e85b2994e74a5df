"""What is the transform? Camera models, correspondences from MNN cells, keyframe keypoints and 3-D
points, the relative pose with its covariance (one camera: refined from several starts, ``essential_refine``,
``essential_search``), the detector's geometry step for an accepted loop
(``loop_pose``), the odometry gate, the offline pose graph, the live pose graph (``live_pose_graph*``: iSAM2
or interval batch, keyframe by keyframe, for pose_graph_node), and the conversions the backend bridges
need (``backend_edges``: frames, information order; ``backend_nodes``: stamp -> backend node). Imports the core spine and
matching's MNN pairs; knows nothing of the map store, text or the detector.
"""
