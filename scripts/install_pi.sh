#!/usr/bin/env bash
# Install (or upgrade, or remove) fastsam-edge as a service on a Raspberry Pi (64-bit OS).
#
#   sudo scripts/install_pi.sh [--bundle DIR] [--text] [--mqtt] [--no-apt] [--src PATH|SPEC]
#                              [--dry-run]
#   sudo scripts/install_pi.sh --uninstall [--purge]
#
# Steps (each is safe to repeat; a re-run with a new checkout or bundle is the upgrade):
#   1. apt: python3-venv, python3-picamera2, python3-gpiozero, python3-lgpio, python3-numpy
#      (camera and GPIO come from apt: pip cannot provide libcamera, and PyPI's lgpio/gpiozero
#      break on a Pi 5)
#   2. a NEW venv with --system-site-packages (it sees apt's picamera2) under
#      /opt/fastsam-edge/venvs/, filled by pip with constraints: numpy pinned to the system's
#      (apt's picamera2/simplejpeg are built against it), onnxruntime and opencv-python-headless
#      pinned as in scripts/constraints-pi.txt; the text extra (ftfy, regex) when the bundle
#      has CLIP or --text is given. Only when it installs and imports is the link
#      /opt/fastsam-edge/venv switched to it (atomically): a failed upgrade leaves the previous
#      venv in place. The previous venv is kept for a rollback, older ones are removed.
#   3. /usr/local/bin/fastsam-edge -> /opt/fastsam-edge/venv/bin/fastsam-edge
#   4. --bundle DIR: copied to /var/lib/fastsam-edge/models/NAME (NAME = the directory's name;
#      replaced atomically, readable by the service and its group)
#   5. first install only: fastsam-edge configure writes /etc/fastsam-edge/config.toml with the
#      bundle (or the demo bundle), the Pi camera and an interval trigger; an existing config is
#      kept (switch bundles with: sudo fastsam-edge configure --bundle ... --force)
#   6. fastsam-edge install-service: user fastsam-edge (groups video, gpio), the invoking user
#      ($SUDO_USER) in the groups fastsam-edge (config, models, results readable without sudo)
#      and systemd-journal (journalctl -u fastsam-edge), /var/lib/fastsam-edge, the systemd
#      unit with MemoryMax= from the bundle's measured peak memory, enabled at boot
#   7. a running service is restarted (upgrade); fastsam-edge doctor
#
#   --bundle DIR  model bundle (fastsam-export output) to install and configure
#   --text        install the text extra even if the bundle has no CLIP
#   --mqtt        also install paho-mqtt (for [mqtt] enabled = true)
#   --no-apt      skip the apt step
#   --src         what to pip install (default: the checkout this script lives in; a folder
#                 is built from a temporary copy, so it gets no root-owned build files)
#   --dry-run     print the commands instead of running them (works on any machine)
#   --uninstall   stop and remove the service, its user, the link and /opt/fastsam-edge;
#                 config, models and results are kept unless --purge is given too
# Environment (tests): FASTSAM_EDGE_PREFIX replaces /opt/fastsam-edge (no root needed to
# build venvs there), SYSTEM_PYTHON the system interpreter (default /usr/bin/python3).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PI_CONSTRAINTS="$(dirname "${BASH_SOURCE[0]}")/constraints-pi.txt"
PREFIX="${FASTSAM_EDGE_PREFIX:-/opt/fastsam-edge}"
SYSTEM_PYTHON="${SYSTEM_PYTHON:-/usr/bin/python3}"
VENV="$PREFIX/venv"
LINK=/usr/local/bin/fastsam-edge
MODELS=/var/lib/fastsam-edge/models
CONFIG=/etc/fastsam-edge/config.toml
SERVICE_GROUP=fastsam-edge
BUNDLE=""
TEXT=0
MQTT=0
APT=1
DRY=0
UNINSTALL=0
PURGE=0

usage() { sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --bundle) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; BUNDLE="$2"; shift 2 ;;
        --text) TEXT=1; shift ;;
        --mqtt) MQTT=1; shift ;;
        --no-apt) APT=0; shift ;;
        --src) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; SRC="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install_pi.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

say() { echo "install_pi.sh: $*"; }
die() { echo "install_pi.sh: error: $*" >&2; exit 1; }
run() {  # print, then run unless --dry-run
    echo "+ $*"
    if ((DRY == 0)); then "$@"; fi
}

if ((PURGE && !UNINSTALL)); then die "--purge goes with --uninstall"; fi
if ((DRY == 0)) && [[ "$(id -u)" != 0 && -z "${FASTSAM_EDGE_PREFIX:-}" ]]; then
    die "run it with sudo: sudo $0 $*  (or --dry-run to see the plan)"
fi
LOGIN_USER="${SUDO_USER:-}"
[[ "$LOGIN_USER" == root ]] && LOGIN_USER=""

# ---- uninstall -------------------------------------------------------------------------------
if ((UNINSTALL)); then
    UARGS=(install-service --uninstall)
    ((PURGE)) && UARGS+=(--purge)
    if [[ -x "$VENV/bin/fastsam-edge" ]] || ((DRY)); then
        run "$VENV/bin/fastsam-edge" "${UARGS[@]}"
    else  # the program is gone already: remove what install-service made by hand
        say "no $VENV: removing the service files directly"
        run systemctl disable --now fastsam-edge 2>/dev/null || true
        run rm -f /etc/systemd/system/fastsam-edge.service \
            /etc/systemd/system/multi-user.target.wants/fastsam-edge.service \
            /var/lib/fastsam-edge/install.json
        if id fastsam-edge >/dev/null 2>&1; then run userdel fastsam-edge || true; fi
        if getent group "$SERVICE_GROUP" >/dev/null; then run groupdel "$SERVICE_GROUP" || true; fi
        ((PURGE)) && run rm -rf /etc/fastsam-edge /etc/default/fastsam-edge /var/lib/fastsam-edge
    fi
    if [[ -L "$LINK" || -e "$LINK" ]]; then run rm -f "$LINK"; fi
    run rm -rf "$PREFIX"
    if ((PURGE)); then
        say "removed the service, its user, $LINK, $PREFIX, config, models and results"
    else
        say "removed the service, its user, $LINK and $PREFIX; kept /etc/fastsam-edge and" \
            "/var/lib/fastsam-edge (--uninstall --purge removes them)"
    fi
    exit 0
fi

# the *userland* must be 64-bit: Raspberry Pi OS (32-bit) boots a 64-bit kernel by default, so
# `uname -m` says aarch64 there, and pip would fail much later (no 32-bit ARM onnxruntime wheels)
if command -v dpkg >/dev/null 2>&1; then
    arch="$(dpkg --print-architecture)"
else  # not Debian: the system Python's pointer size
    arch="$("$SYSTEM_PYTHON" -c 'import struct; print("arm64" if struct.calcsize("P") == 8 else "32-bit")' 2>/dev/null || echo unknown)"
fi
if [[ "$arch" != "arm64" && "$arch" != "amd64" ]]; then
    msg="this system's userland is $arch (kernel: $(uname -m)); fastsam-edge needs a 64-bit OS (onnxruntime has no 32-bit ARM wheels): install Raspberry Pi OS (64-bit), e.g. with Raspberry Pi Imager, and run this again"
    if ((DRY)); then echo "warning: $msg" >&2; else die "$msg"; fi
fi

# ---- the bundle (checked before anything is changed) ---------------------------------------
BUNDLE_NAME=""
BUNDLE_HAS_CLIP=0
if [[ -n "$BUNDLE" ]]; then
    BUNDLE="$(realpath -m "$BUNDLE")"
    [[ -f "$BUNDLE/bundle.json" ]] || die "--bundle $BUNDLE: no bundle.json (a fastsam-export output directory?)"
    BUNDLE_NAME="$(basename "$BUNDLE")"
    if python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("clip") else 1)' \
        "$BUNDLE/bundle.json"; then
        BUNDLE_HAS_CLIP=1
    fi
fi
if ((BUNDLE_HAS_CLIP)) && ((TEXT == 0)); then
    say "the bundle has CLIP: installing the text extra (ftfy, regex) for text prompts"
    TEXT=1
fi

# ---- 1. system packages ----------------------------------------------------------------------
if ((APT)); then
    run apt-get update
    run apt-get install -y --no-install-recommends python3-venv python3-pip \
        python3-picamera2 python3-gpiozero python3-lgpio python3-numpy
fi

# ---- 2. a new venv beside the current one ---------------------------------------------------
SYS_NUMPY="$("$SYSTEM_PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
if [[ -z "$SYS_NUMPY" ]]; then
    if ((DRY)); then
        SYS_NUMPY="1.24.2"
        echo "note: no system numpy here; the plan below assumes Bookworm's $SYS_NUMPY"
    else
        die "python3-numpy is not installed (apt step skipped?)"
    fi
fi
CONSTRAINTS="$PREFIX/constraints.txt"
CONSTRAINT_TEXT="# written by scripts/install_pi.sh: keep apt's numpy (picamera2's ABI)
numpy==$SYS_NUMPY"
if [[ "$SYS_NUMPY" == 1.* ]]; then
    CONSTRAINT_TEXT+="
# opencv-python-headless 4.12+ requires numpy>=2
opencv-python-headless<4.12"
fi
CONSTRAINT_TEXT+="
# the versions tested in the pi env (scripts/constraints-pi.txt)
$(grep -E '^(onnxruntime|opencv-python-headless|ftfy|regex)==' "$PI_CONSTRAINTS")"
echo "+ write $CONSTRAINTS:"
printf '%s\n' "$CONSTRAINT_TEXT" | sed 's/^/    /'

EXTRAS=""
((TEXT)) && EXTRAS="[text]"
# a checkout is built from a temporary copy: pip builds as root, and in the clone itself it would
# leave root-owned build/ and *.egg-info behind for the user
BUILD_SRC="$SRC"
if [[ -d "$SRC" ]]; then
    BUILD_TMP="$(mktemp -d "${TMPDIR:-/tmp}/fastsam-edge-src.XXXXXX")"
    trap 'rm -rf "$BUILD_TMP"' EXIT
    BUILD_SRC="$BUILD_TMP/fastsam-edge"
    echo "+ copy $SRC to $BUILD_SRC (without .git, venvs, build/, *.egg-info)"
    if ((DRY == 0)); then
        mkdir "$BUILD_SRC"
        tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./.ci-venvs --exclude=./build \
            --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$BUILD_SRC" -xf -
    fi
fi
PKGS=("$BUILD_SRC$EXTRAS")
((MQTT)) && PKGS+=(paho-mqtt)
STAMP="$(date -u +%Y%m%dT%H%M%SZ)-$$"
NEW="$PREFIX/venvs/$STAMP"
OLD="$(readlink -f "$VENV" 2>/dev/null || true)"

if ((DRY == 0)); then
    mkdir -p "$PREFIX/venvs"
    printf '%s\n' "$CONSTRAINT_TEXT" > "$CONSTRAINTS"
fi
cleanup_new() { if ((DRY == 0)) && [[ -d "$NEW" ]]; then rm -rf "$NEW"; fi; }
fail_upgrade() {
    cleanup_new
    if [[ -n "$OLD" && -d "$OLD" ]]; then
        die "$1; the previous install ($OLD) is untouched"
    fi
    die "$1"
}
run "$SYSTEM_PYTHON" -m venv --system-site-packages "$NEW" || fail_upgrade "creating the venv failed"
run "$NEW/bin/python" -m pip install --no-input --upgrade --constraint "$CONSTRAINTS" "${PKGS[@]}" \
    || fail_upgrade "pip install failed"
# the new venv must import the runtime with apt's numpy before it replaces the current one
run "$NEW/bin/python" -c "import numpy, cv2, onnxruntime, edge; assert numpy.__version__ == '$SYS_NUMPY', numpy.__version__" \
    || fail_upgrade "the new venv does not import the runtime"
run "$NEW/bin/fastsam-edge" --help >/dev/null || fail_upgrade "the new fastsam-edge does not start"

# atomic switch: a new symlink renamed over the old one (a pre-symlink venv directory is moved
# aside first, once)
if ((DRY == 0)) && [[ -d "$VENV" && ! -L "$VENV" ]]; then
    mv "$VENV" "$PREFIX/venvs/legacy-$STAMP"
fi
run ln -sfn "venvs/$STAMP" "$PREFIX/venv.new"
run mv -T "$PREFIX/venv.new" "$VENV"
# keep the new one and the previous one (rollback: ln -sfn venvs/OLD /opt/fastsam-edge/venv)
if ((DRY == 0)); then
    for d in "$PREFIX"/venvs/*; do
        [[ "$d" == "$NEW" || "$d" == "$OLD" ]] && continue
        rm -rf "$d"
    done
fi

# ---- 3. on PATH ------------------------------------------------------------------------------
run ln -sfn "$VENV/bin/fastsam-edge" "$LINK"

# ---- 4. the bundle ---------------------------------------------------------------------------
INSTALLED_BUNDLE=""
if [[ -n "$BUNDLE" ]]; then
    INSTALLED_BUNDLE="$MODELS/$BUNDLE_NAME"
    if [[ "$BUNDLE" == "$INSTALLED_BUNDLE" ]]; then
        say "bundle already at $INSTALLED_BUNDLE"
    else
        run mkdir -p "$MODELS"
        run rm -rf "$MODELS/.$BUNDLE_NAME.new" "$MODELS/.$BUNDLE_NAME.old"
        run cp -r "$BUNDLE" "$MODELS/.$BUNDLE_NAME.new"
        if [[ -e "$INSTALLED_BUNDLE" ]]; then run mv -T "$INSTALLED_BUNDLE" "$MODELS/.$BUNDLE_NAME.old"; fi
        run mv -T "$MODELS/.$BUNDLE_NAME.new" "$INSTALLED_BUNDLE"
        run rm -rf "$MODELS/.$BUNDLE_NAME.old"
    fi
fi

# ---- 5. first-run config ---------------------------------------------------------------------
if [[ -e "$CONFIG" ]]; then
    say "keeping $CONFIG"
    if [[ -n "$INSTALLED_BUNDLE" ]] && ! grep -q "\"$INSTALLED_BUNDLE\"" "$CONFIG"; then
        say "note: $CONFIG does not use $INSTALLED_BUNDLE; to switch:" \
            "sudo fastsam-edge configure --bundle $INSTALLED_BUNDLE --force"
    fi
else
    run "$VENV/bin/fastsam-edge" configure --config "$CONFIG" --bundle "${INSTALLED_BUNDLE:-demo}"
fi

# ---- 6. user, groups, directories, unit ------------------------------------------------------
IARGS=(install-service --venv "$VENV" --config "$CONFIG")
[[ -n "$LOGIN_USER" ]] && IARGS+=(--login-user "$LOGIN_USER")
run "$VENV/bin/fastsam-edge" "${IARGS[@]}"
if [[ -n "$INSTALLED_BUNDLE" ]]; then
    # root owns the model files, the service's group reads them
    run chown -R "root:$SERVICE_GROUP" "$INSTALLED_BUNDLE"
    run chmod -R u=rwX,g=rX,o= "$INSTALLED_BUNDLE"
fi

# ---- 7. restart a running service (upgrade), preflight ---------------------------------------
if [[ -d /run/systemd/system ]]; then
    run systemctl try-restart fastsam-edge
fi
run "$VENV/bin/fastsam-edge" doctor --config "$CONFIG" || true

cat <<EOF

Done. fastsam-edge is on PATH ($LINK). Next, as ${LOGIN_USER:-your login user}:
  - log out of every session (a desktop: log out of it, or reboot) so that the groups
    $SERVICE_GROUP and systemd-journal apply; or, in one terminal: newgrp $SERVICE_GROUP
  - fastsam-edge doctor
  - sudo systemctl enable --now fastsam-edge; journalctl -u fastsam-edge -f
  - results: /var/lib/fastsam-edge/results; config: $CONFIG
EOF
