#!/usr/bin/env bash
# Build vpr_ros_msgs with the real rosidl pipeline from the ROS 2 Jazzy PyPI wheels and install it
# into a Python venv prefix, so `from vpr_ros_msgs.msg import LoopClosure` works with no env vars.
#
# Usage: scripts/build_msgs.sh [VENV_PREFIX] [PACKAGE_DIR]
#   VENV_PREFIX  default .venv, relative to the repository root
#   PACKAGE_DIR  default vpr_ros_msgs; any ament_cmake interface package (the tests' stand-in peer
#                interfaces under vpr_ros/test/interfaces/ are built the same way)
#
# Idempotent: skips the build when the installed stamp matches the hash of the interface sources.
# Why each step exists (see docs/ros2.md, "CI without a ROS install"):
#  - the wheels' exported CMake targets hard-code the manylinux build interpreter
#    (/opt/python/cp311-cp311/...), so they are rewritten to this venv's Python and numpy headers;
#  - CMake must use the venv Python, which carries empy/lark/numpy for the rosidl generators;
#  - installing into the venv prefix puts the typesupport libs in $VENV/lib (added to
#    LD_LIBRARY_PATH by ros_wheels_bootstrapper) and the Python module in site-packages.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX_ARG=${1:-.venv}
case "$PREFIX_ARG" in
  /*) V=$PREFIX_ARG ;;
  *) V=$ROOT/$PREFIX_ARG ;;
esac
PKG_ARG=${2:-vpr_ros_msgs}
case "$PKG_ARG" in
  /*) PKG=$PKG_ARG ;;
  *) PKG=$ROOT/$PKG_ARG ;;
esac
NAME=$(basename "$PKG")
BUILD=$ROOT/build/$NAME
PY=$V/bin/python

if [ ! -x "$PY" ]; then
  echo "build_msgs: no Python at $PY; create the venv and install requirements/ros.txt first" >&2
  exit 2
fi
for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "build_msgs: '$tool' not found; install cmake and g++" >&2; exit 2; }
done

# Hash of everything that changes the generated code; the venv path is included so that a stamp
# copied along with another venv does not count.
HASH=$(cd "$PKG" && { echo "$V"; cat CMakeLists.txt package.xml; find $(ls -d msg srv 2>/dev/null) -type f \( -name '*.msg' -o -name '*.srv' \) | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done; } | sha256sum | cut -d' ' -f1)
STAMP=$V/share/$NAME/.vpr_ros_build_stamp
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -d "$SITE/$NAME" ]; then
  echo "build_msgs: $NAME up to date in $V"
  exit 0
fi

# Workaround: rewrite the manylinux interpreter paths baked into the wheels' CMake exports.
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
if [ ! -f "$PYINC/Python.h" ]; then
  echo "build_msgs: Python headers missing at $PYINC; install python3.11-dev (or use a pyenv Python)" >&2
  exit 2
fi
# grep exits 1 once everything is fixed; that is the idempotent case, not an error.
{ grep -rlE '/opt/python/cp311-cp311/(include|lib/python3.11/site-packages/numpy)' "$V"/share/*/cmake || true; } \
  | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"

echo "build_msgs: building $NAME into $V (build dir $BUILD)"
SECONDS=0
# A stale cache from another prefix/python would silently reuse the wrong interpreter.
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "^Python3_EXECUTABLE:[A-Z]*=$PY\$" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
mkdir -p "$(dirname "$BUILD")"
export VIRTUAL_ENV=$V PATH=$V/bin:$PATH AMENT_PREFIX_PATH=$V CMAKE_PREFIX_PATH=$V
cmake -S "$PKG" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" \
  -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF >"$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log" >&2; echo "build_msgs: cmake configure failed" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" >"$BUILD.build.log" 2>&1 \
  || { tail -50 "$BUILD.build.log" >&2; echo "build_msgs: build failed (full log: $BUILD.build.log)" >&2; exit 1; }
cmake --install "$BUILD" --prefix "$V" >/dev/null

if [ "$NAME" = vpr_ros_msgs ]; then
  CHECK='from vpr_ros_msgs.msg import LoopClosure; from vpr_ros_msgs.srv import MapIO; LoopClosure(); MapIO.Request()'
else
  CHECK="import importlib; importlib.import_module('$NAME')"
fi
"$PY" -c "$CHECK" || { echo "build_msgs: installed, but importing $NAME failed" >&2; exit 1; }
echo "$HASH" >"$STAMP"
echo "build_msgs: done in ${SECONDS}s"
