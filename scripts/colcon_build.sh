#!/usr/bin/env bash
# colcon build of vpr_ros_msgs + vpr_ros with the paths each ROS 2 set-up needs (docs/ros2.md, "Build").
#
#   (a) ROS 2 from apt:   source /opt/ros/<distro>/setup.bash; source ~/vpr_venv/bin/activate
#                         scripts/colcon_build.sh ~/ws [colcon build args...]
#       The venv (--system-site-packages, requirements/ros-distro*.txt) runs colcon and CMake, so the
#       node's entry points start the venv Python, which sees apt's rclpy and the pip stack.
#   (b) pip wheels:       scripts/colcon_build.sh --venv .venv ~/ws [colcon build args...]
#       No ROS install: the venv of scripts/setup.sh (requirements/ros.txt) is the underlay, i.e.
#       AMENT_PREFIX_PATH = CMAKE_PREFIX_PATH = the venv, and CMake runs the venv Python (rosidl's
#       generators need its empy/lark/numpy). scripts/build_msgs.sh runs first: it rewrites the
#       manylinux paths the wheels' CMake exports carry (docs/ros2_wheels.md).
#
# WORKSPACE is a colcon workspace whose src/ holds (a link to) this repository; without one, the
# repository itself is the source (--base-paths). Afterwards: `source WORKSPACE/install/setup.bash`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=
if [ "${1:-}" = --venv ]; then
  VENV=$(cd "${2:?--venv needs a directory}" && pwd); shift 2
fi
WS=${1:?usage: scripts/colcon_build.sh [--venv VENV] WORKSPACE [colcon build args...]}; shift
mkdir -p "$WS"; WS=$(cd "$WS" && pwd)
src=(--base-paths "$WS/src")
[ -d "$WS/src" ] || src=(--base-paths "$ROOT")

if [ -n "$VENV" ]; then
  bash "$ROOT/scripts/build_msgs.sh" "$VENV"   # the CMake-export fix-up (and vpr_ros_msgs in the venv)
  export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  unset PYTHONPATH COLCON_PREFIX_PATH
  PY=$VENV/bin/python
else
  if [ -z "${ROS_DISTRO:-}" ] || [ -z "${AMENT_PREFIX_PATH:-}" ]; then
    echo "colcon_build: no ROS environment; run 'source /opt/ros/<distro>/setup.bash' first, or give --venv" >&2
    exit 2
  fi
  PY=$(command -v python3)
  [ -n "${VIRTUAL_ENV:-}" ] || echo "colcon_build: no venv active; using $PY (see docs/ros2.md for the venv)" >&2
fi
"$PY" -c 'import colcon_core' 2>/dev/null \
  || { echo "colcon_build: $PY cannot import colcon (apt: python3-colcon-common-extensions; pip: requirements/ros.txt)" >&2; exit 2; }
if [ -z "$VENV" ] && ! "$PY" -c 'import numpy, sys; sys.exit(int(numpy.__version__.split(".")[0]) >= 2)'; then
  echo "colcon_build: numpy 2 next to a ROS distribution breaks its rclpy; use requirements/ros-distro.txt" >&2
  exit 2
fi
cd "$WS"
exec "$PY" -m colcon build "${src[@]}" --packages-select vpr_ros_msgs vpr_ros "$@" \
  --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
