# Source me (bash): the ROS 2 environment of the pip-wheel install in this repo's .venv.
#
#   source scripts/ros_env.sh          # then: python -c 'import rclpy', cmake (rosidl builds), st4rtrack-play ...
#   ST4R_VENV=/path/to/venv source scripts/ros_env.sh
#
# The venv root is the ROS install prefix (share/<pkg>, lib/ sit there), so it goes on AMENT_PREFIX_PATH and
# CMAKE_PREFIX_PATH. LD_LIBRARY_PATH gets the venv's lib/ and the wheels' site-packages/ros_*.libs: non-Python
# programs (CMake-built code) need it, and with it plus _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 the wheels' start-up
# hook (ros_wheels_bootstrapper.pth) does not re-exec every Python process. st4rtrack_ros/ros/env.py computes the
# same variables for subprocesses; test/ros/test_ros_env_helpers.py checks that both agree.
# On a machine with a real ROS 2 install, source /opt/ros/<distro>/setup.bash instead of this file.

_st4r_here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
_st4r_venv="${ST4R_VENV:-$(cd "$_st4r_here/.." && pwd)/.venv}"
if [ ! -x "$_st4r_venv/bin/python" ]; then
  echo "ros_env.sh: no venv at $_st4r_venv (run scripts/setup_env.sh)" >&2
else
  # _st4r_prepend VAR DIR: put DIR first in the colon list VAR, once.
  _st4r_prepend() {
    local cur="${!1:-}"
    case ":$cur:" in
      *":$2:"*) ;;
      *) if [ -n "$cur" ]; then export "$1=$2:$cur"; else export "$1=$2"; fi ;;
    esac
  }
  _st4r_site="$(echo "$_st4r_venv"/lib/python3.*/site-packages)"
  export VIRTUAL_ENV="$_st4r_venv"
  _st4r_prepend PATH "$_st4r_venv/bin"
  _st4r_prepend AMENT_PREFIX_PATH "$_st4r_venv"
  _st4r_prepend CMAKE_PREFIX_PATH "$_st4r_venv"
  # Result order: venv/lib, then site-packages/ros_*.libs in byte order (as env.py), then what was there before.
  _st4r_libdirs() {
    local LC_ALL=C d
    for d in "$_st4r_site"/ros_*.libs; do
      if [ -d "$d" ]; then printf '%s\n' "$d"; fi
    done
  }
  _st4r_dirs=("$_st4r_venv/lib")
  while IFS= read -r _st4r_d; do _st4r_dirs+=("$_st4r_d"); done < <(_st4r_libdirs)
  for ((_st4r_i = ${#_st4r_dirs[@]} - 1; _st4r_i >= 0; _st4r_i--)); do
    _st4r_prepend LD_LIBRARY_PATH "${_st4r_dirs[_st4r_i]}"
  done
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export RMW_IMPLEMENTATION=rmw_fastrtps_cpp  # the only rmw the wheels bring
  unset -f _st4r_prepend _st4r_libdirs
  unset _st4r_site _st4r_d _st4r_dirs _st4r_i
fi
unset _st4r_here _st4r_venv
