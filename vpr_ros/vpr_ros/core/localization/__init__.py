"""Global relocalisation in a loaded map, ROS-free: ``map_pose`` (composing a matched keyframe's map
pose with a measured relative pose, covariances, base <- camera frames) and ``relocalizer`` (the
stateful stage that turns a detector's StepResult into a Fix or a Refusal). May import the spine,
geometry, map data types (``map.map_poses``) and the detector's types; never models, io, nodes or cli.
"""
