#!/usr/bin/env bash
# Install fastsam-edge as a service on a fresh Raspberry Pi (Raspberry Pi OS 64-bit).
#
#   sudo scripts/install_pi.sh [--src PATH|SPEC] [--venv DIR] [--mqtt] [--no-apt] [--start]
#                              [--dry-run]
#
# Steps (each is safe to repeat):
#   1. apt: python3-venv, python3-picamera2, python3-gpiozero, python3-lgpio (camera and GPIO
#      come from apt: pip cannot provide libcamera, and PyPI's lgpio/gpiozero break on a Pi 5)
#   2. a venv with --system-site-packages (so it sees apt's picamera2), at /opt/fastsam-edge/venv
#   3. pip install with a constraints file that pins numpy to the *system* version (apt's
#      picamera2/simplejpeg are built against it) and caps opencv-python-headless below 4.12
#      when that numpy is 1.x (4.12+ requires numpy 2)
#   4. fastsam-edge install-service: user fastsam-edge (groups video, gpio), /etc/fastsam-edge/
#      config.toml (kept if present), /var/lib/fastsam-edge, the systemd unit, enabled at boot
#   5. fastsam-edge doctor
#
#   --src      what to pip install (default: the checkout this script lives in)
#   --venv     virtual environment (default /opt/fastsam-edge/venv)
#   --mqtt     also install paho-mqtt (for [mqtt] enabled = true)
#   --no-apt   skip the apt step
#   --start    start (or restart) the service at the end
#   --dry-run  print the commands instead of running them (works on any machine)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV=/opt/fastsam-edge/venv
MQTT=0
APT=1
START=0
DRY=0

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --src) SRC="$2"; shift 2 ;;
        --venv) VENV="$2"; shift 2 ;;
        --mqtt) MQTT=1; shift ;;
        --no-apt) APT=0; shift ;;
        --start) START=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install_pi.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

run() {  # print, then run unless --dry-run
    echo "+ $*"
    if ((DRY == 0)); then "$@"; fi
}

arch="$(uname -m)"
if [[ "$arch" != "aarch64" && "$arch" != "x86_64" ]]; then
    msg="this is a $arch system: onnxruntime has no 32-bit ARM wheels; install Raspberry Pi OS (64-bit)"
    if ((DRY)); then echo "warning: $msg" >&2; else echo "install_pi.sh: $msg" >&2; exit 1; fi
fi
if ((DRY == 0)) && [[ "$(id -u)" != 0 ]]; then
    echo "install_pi.sh: run as root (sudo), or use --dry-run" >&2
    exit 1
fi

# 1. system packages
if ((APT)); then
    run apt-get update
    run apt-get install -y --no-install-recommends python3-venv python3-pip \
        python3-picamera2 python3-gpiozero python3-lgpio python3-numpy
fi

# 2. venv that sees apt's packages
if [[ ! -x "$VENV/bin/python" ]]; then
    run mkdir -p "$(dirname "$VENV")"
    run python3 -m venv --system-site-packages "$VENV"
else
    echo "venv $VENV exists"
fi

# 3. constraints: numpy exactly as apt has it; OpenCV that accepts that numpy
CONSTRAINTS="$(dirname "$VENV")/constraints.txt"
SYS_NUMPY="$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
if [[ -z "$SYS_NUMPY" ]]; then
    if ((DRY)); then
        SYS_NUMPY="1.24.2"
        echo "note: no system numpy here; the plan below assumes Bookworm's $SYS_NUMPY"
    else
        echo "install_pi.sh: python3-numpy is not installed (apt step skipped?)" >&2
        exit 1
    fi
fi
CONSTRAINT_TEXT="# written by scripts/install_pi.sh: keep apt's numpy (picamera2's ABI)
numpy==$SYS_NUMPY"
if [[ "$SYS_NUMPY" == 1.* ]]; then
    CONSTRAINT_TEXT+="
# opencv-python-headless 4.12+ requires numpy>=2
opencv-python-headless<4.12"
fi
echo "+ write $CONSTRAINTS:"
printf '%s\n' "$CONSTRAINT_TEXT" | sed 's/^/    /'
if ((DRY == 0)); then
    printf '%s\n' "$CONSTRAINT_TEXT" > "$CONSTRAINTS"
fi
EXTRA=()
((MQTT)) && EXTRA+=(paho-mqtt)
run "$VENV/bin/pip" install --upgrade --constraint "$CONSTRAINTS" "$SRC" "${EXTRA[@]}"

# 4. user, directories, config, unit (idempotent; never overwrites the config)
INSTALL_ARGS=(install-service --venv "$VENV")
((START)) && INSTALL_ARGS+=(--start)
run "$VENV/bin/fastsam-edge" "${INSTALL_ARGS[@]}"

# 5. preflight
run "$VENV/bin/fastsam-edge" doctor --config /etc/fastsam-edge/config.toml || true

cat <<EOF

Done. Next:
  - edit /etc/fastsam-edge/config.toml (model.bundle: copy an exported bundle to
    /var/lib/fastsam-edge/models/ and point to it; the demo bundle only knows demo scenes)
  - sudo systemctl restart fastsam-edge; journalctl -u fastsam-edge -f
  - curl -s localhost:8080/healthz; curl -s -X POST -H 'Content-Type: application/json' localhost:8080/trigger
EOF
