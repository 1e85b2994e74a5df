"""Other robots' keyframes (decentralised and central fleet modes, docs/fleet.md): the wire encoding
of keyframe batches and local features, the memory bound for fetched features and the byte budget
per second. Imports only the core spine; the ROS side is nodes/fleet.py and nodes/central_node.py.
"""
