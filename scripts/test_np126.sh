#!/usr/bin/env bash
# The ROS-free core tests (vpr_ros/test/core, all of it: torch, FAISS, OpenCV, SciPy, numba, gtsam, evo,
# no ROS) in .venv-np126, i.e. with numpy 1.26.4 and the numpy-1 stack a ROS 2 distribution user installs
# (requirements/ros-distro*.txt). Run by `make test` after the main suite; same network namespace as
# scripts/test.sh. Extra arguments go to pytest. About 30 s on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VPR_ROS_NP126_VENV:-.venv-np126}
[ -x "$VENV/bin/python" ] || { echo "test_np126: no $VENV; run scripts/setup_np126.sh" >&2; exit 2; }
"$VENV/bin/python" -c 'import numpy, sys; sys.exit(numpy.__version__ >= "2")' \
  || { echo "test_np126: $VENV has numpy 2; rerun scripts/setup_np126.sh" >&2; exit 2; }

"$VENV/bin/python" -c 'import numpy, cv2, scipy; print(f"test_np126: numpy {numpy.__version__}, OpenCV {cv2.__version__}, SciPy {scipy.__version__}")'
exec env VPR_ROS_VENV="$VENV" bash scripts/test.sh --no-reqsets vpr_ros/test/core "$@"
