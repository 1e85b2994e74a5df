#!/usr/bin/env bash
# A second Python 3.11 environment, .venv-np126, with the ROS-distribution set (requirements/ros-distro*.txt:
# numpy 1.26.4 and the numpy-1 versions of OpenCV, SciPy, ...), so CI runs the ROS-free core tests against
# the numpy a ROS 2 distribution ships (scripts/test_np126.sh). No ROS wheels: those live in .venv only.
# Called by scripts/setup.sh; idempotent (a stamp of the requirement files and the checkout path).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VPR_ROS_NP126_VENV:-.venv-np126}
PY=${PYTHON:-python3.11}
PIP=(-m pip install -q --disable-pip-version-check)

stamp="$VENV/.vpr_ros_setup"
want=$(cat requirements/ros-distro*.txt requirements/ocr.txt requirements/text_embedding.txt requirements/gtsam.txt \
  requirements/test.txt "$0" | { cat; echo "$PWD"; } | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup_np126: $VENV up to date"
  exit 0
fi
SECONDS=0
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Same order and flags as docs/ros2.md gives a ROS user: torch first (CPU build), then the set, then the
# --no-deps wheels. Here torch comes from the machine's pip configuration (the CPU wheel of base.txt).
"$VENV/bin/python" "${PIP[@]}" -r requirements/ros-distro-torch.txt
"$VENV/bin/python" "${PIP[@]}" -r requirements/ros-distro.txt -r requirements/test.txt
"$VENV/bin/python" "${PIP[@]}" --no-deps -r requirements/ros-distro-nodeps.txt
# vpr_ros from the checkout without building it (what the editable compat install of .venv amounts to).
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/vpr_ros" >"$site/vpr_ros_checkout.pth"
"$VENV/bin/python" -c 'import numpy, cv2, vpr_ros; assert numpy.__version__.startswith("1."), numpy.__version__'
echo "$want" >"$stamp"
echo "setup_np126: $VENV ready in ${SECONDS}s"
