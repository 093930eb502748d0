#!/usr/bin/env bash
# The Pi owner's path, walked for real in a Debian bookworm root of this machine's architecture
# (Raspberry Pi OS Bookworm is Debian bookworm): the README's Pi section, line by line.
#
# Steps (the root filesystem is cached under ROOT; the install inside is redone each run):
#   1. host: debootstrap + systemd-analyze (apt) when missing
#   2. rootfs: debootstrap minbase bookworm with python3, venv, pip, numpy, sudo, gpiozero;
#      python3-picamera2 and python3-lgpio are not in Debian, so fake packages (dpkg) stand in
#      (a picamera2 that finds no camera, simplejpeg, lgpio); the chroot trusts the host's CA
#      bundle (pip.conf cert) and resolv.conf
#   3. a login user `pi` (sudo without password), this working tree as ~pi/fastsam-edge, the
#      demo bundle (it has CLIP) as ~pi/fastsam-s-640x480 (the README's exported bundle), and
#      demo scenes as the inputs the README's segment commands name (image, folder, video)
#   4. the README's Pi commands, in order, each in a fresh login shell of `pi` (`su - pi`):
#      - `logout` is that fresh login (new groups apply);
#      - `fastsam-edge doctor` may only FAIL the camera checks (there is no camera);
#      - `sudo systemctl enable --now fastsam-edge` (no systemd in a chroot) becomes: the
#        installed unit passes `systemd-analyze verify` silently and `security` at exposure
#        <= 2.0, and its ExecStart runs as the service user with the installed config for one
#        frame (the demo source standing in for the camera);
#      - `journalctl -u fastsam-edge -f` becomes: pi is in systemd-journal (or adm);
#      - `ls /var/lib/fastsam-edge/results` must list that result, as pi, without sudo
#   5. upgrade: the installer again keeps the config and the results, adds a second venv
#   6. `--uninstall` removes unit, user, link and program but keeps config and results;
#      `--uninstall --purge` removes those too
#
# Needs root, a Debian mirror (DEBIAN_MIRROR, else the host's apt sources) and PyPI (the
# installer's pip). Minutes, CPU and network heavy: opt-in, not part of default CI;
# `FASTSAM_PI_WALK=1 pytest -m pi_walk` runs it as a test.
#
# Usage: sudo scripts/pi_walk.sh [--root DIR] [--out DIR] [--python PY]
#   --root DIR   rootfs cache (default: work/pi-walk-root)
#   --out DIR    walk.json + walk.log (default: work/pi-walk-out)
#   --python PY  host interpreter with the runtime and pytest installed (default: python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$REPO/work/pi-walk-root"
OUT="$REPO/work/pi-walk-out"
HOST_PY="python3"
APT_ETC="${APT_ETC:-/etc/apt}"

while (($#)); do
    case "$1" in
        --root) ROOT="$(realpath -m "$2")"; shift 2 ;;
        --out) OUT="$(realpath -m "$2")"; shift 2 ;;
        --python) HOST_PY="$2"; shift 2 ;;
        -h|--help) sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pi_walk: unknown argument: $1" >&2; exit 2 ;;
    esac
done

log() { printf '[pi-walk %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# shellcheck source=scripts/debian_mirror.sh
source "$REPO/scripts/debian_mirror.sh"

[[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"
MIRROR="$(debian_mirror)"
mkdir -p "$OUT"
exec > >(tee "$OUT/walk.log") 2>&1
STEPS="$OUT/steps.tsv"
: >"$STEPS"
step() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$STEPS"; log "step: $1 -> $2 ${3:-}"; }

# --- 1. host tools ------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-analyze >/dev/null || need+=(systemd)
if ((${#need[@]})); then
    log "installing ${need[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
        >"$OUT/apt.log" 2>&1 || die "apt-get install ${need[*]} failed, see $OUT/apt.log"
fi

# --- 2. rootfs ----------------------------------------------------------------------------------
if [[ ! -e "$ROOT/.fastsam-walk-rootfs-ok" ]]; then
    log "debootstrap bookworm ($(dpkg --print-architecture)) into $ROOT from $MIRROR (minutes)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python3-numpy,python3-gpiozero,ca-certificates,sudo \
        bookworm "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $OUT/debootstrap.log"
    touch "$ROOT/.fastsam-walk-rootfs-ok"
fi

cleanup() {
    for m in proc sys dev; do
        if mountpoint -q "$ROOT/$m"; then umount -R "$ROOT/$m" || umount -lR "$ROOT/$m" || true; fi
    done
}
trap cleanup EXIT
cleanup
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
if [[ -r /etc/ssl/certs/ca-certificates.crt ]]; then
    # the host's CA bundle (it may include a proxy's CA that pip's downloads need)
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOT/etc/pip.conf"
fi

in_root() { env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$ROOT" "$@"; }

# a clean slate: remove what a previous walk installed
in_root /bin/sh -c 'userdel -r pi 2>/dev/null; userdel fastsam-edge 2>/dev/null;
    groupdel fastsam-edge 2>/dev/null; rm -rf /opt/fastsam-edge /etc/fastsam-edge \
    /var/lib/fastsam-edge /etc/default/fastsam-edge /usr/local/bin/fastsam-edge \
    /etc/systemd/system/fastsam-edge.service \
    /etc/systemd/system/multi-user.target.wants/fastsam-edge.service; true'

# fake Raspberry Pi packages (not in Debian): what the installer's apt step asks for
fake_deb() {  # fake_deb PACKAGE FILE CONTENT [FILE CONTENT]...
    local pkg="$1" dir="$ROOT/tmp/fake-$1"
    shift
    rm -rf "$dir" && mkdir -p "$dir/DEBIAN"
    printf 'Package: %s\nVersion: 0.0+fastsam.fake\nArchitecture: all\nMaintainer: fastsam-edge walk <none@invalid>\nDepends: python3\nDescription: stand-in for the Raspberry Pi package (pi_walk.sh)\n' \
        "$pkg" >"$dir/DEBIAN/control"
    while (($#)); do
        mkdir -p "$dir/$(dirname "$1")"
        printf '%s\n' "$2" >"$dir/$1"
        shift 2
    done
    in_root dpkg-deb --build "/tmp/fake-$pkg" "/tmp/fake-$pkg.deb" >/dev/null
    in_root dpkg -i "/tmp/fake-$pkg.deb" >/dev/null
}
DIST=usr/lib/python3/dist-packages
fake_deb python3-picamera2 \
    "$DIST/picamera2/__init__.py" '"""Stand-in for picamera2 (pi_walk.sh): there is no camera."""


class Picamera2:
    @staticmethod
    def global_camera_info():
        return []

    def __init__(self, *args, **kwargs):
        raise RuntimeError("no camera in this chroot")' \
    "$DIST/simplejpeg/__init__.py" '"""Stand-in for simplejpeg (built against apt numpy)."""
import numpy  # noqa: F401'
fake_deb python3-lgpio "$DIST/lgpio.py" '"""Stand-in for lgpio (pi_walk.sh)."""'
step "rootfs + fake picamera2/lgpio" ok

# --- 3. the login user and their files ----------------------------------------------------------
in_root useradd --create-home --shell /bin/bash pi
printf 'pi ALL=(ALL) NOPASSWD:ALL\n' >"$ROOT/etc/sudoers.d/pi"
chmod 0440 "$ROOT/etc/sudoers.d/pi"
HOME_PI="$ROOT/home/pi"
mkdir -p "$HOME_PI/fastsam-edge"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$HOME_PI/fastsam-edge"
cp -r "$REPO/edge/demo/assets/demo-bundle" "$HOME_PI/fastsam-s-640x480"
# the inputs the README's segment commands name: an image, a folder of images, a video
(cd "$REPO" && PYTHONPATH="$REPO" "$HOST_PY" - "$HOME_PI/fastsam-edge" <<'EOF'
import shlex
import sys
from pathlib import Path

import cv2

from edge.demo.scenes import generate_scene
from tests.test_pi_path import readme_pi_commands

home = Path(sys.argv[1])
seeds = iter(range(1_000_123, 1_000_223))


def scene():
    return generate_scene(next(seeds), 640, 480).image


for line in readme_pi_commands():
    argv = shlex.split(line)
    if argv[:2] != ["fastsam-edge", "segment"]:
        continue
    src = home / argv[2]
    if src.exists():
        continue
    if argv[2].endswith("/"):
        src.mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(src / f"{i:03d}.jpg"), scene())
    elif src.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov"):
        writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
        frames = [scene() for _ in range(3)]
        for i in range(30):
            writer.write(frames[i // 10])
        writer.release()
    else:
        cv2.imwrite(str(src), scene())
    print(f"input for the README: {src.relative_to(home)}")
EOF
)
in_root chown -R pi:pi /home/pi
step "login user pi + checkout + bundle + photo" ok

as_pi() { in_root su - pi -c "cd ~/fastsam-edge && $1"; }

# --- 4. the README's Pi section ----------------------------------------------------------------
mapfile -t COMMANDS < <(cd "$REPO" && PYTHONPATH="$REPO" "$HOST_PY" -c \
    'from tests.test_pi_path import readme_pi_commands; print("\n".join(readme_pi_commands()))')
((${#COMMANDS[@]} > 3)) || die "no commands read from the README's Pi section"
EXPOSURE=""
for cmd in "${COMMANDS[@]}"; do
    log "README: $cmd"
    case "$cmd" in
        logout)
            step "$cmd" ok "each following command runs in a fresh login shell"
            ;;
        "sudo systemctl enable --now fastsam-edge"*)
            unit_dir="$OUT/unit"
            rm -rf "$unit_dir" && mkdir -p "$unit_dir"
            sed -E "s|^ExecStart=/|ExecStart=$ROOT/|" \
                "$ROOT/etc/systemd/system/fastsam-edge.service" >"$unit_dir/fastsam-edge.service"
            verify="$(cd "$unit_dir" && systemd-analyze verify --man=no fastsam-edge.service 2>&1)" \
                || die "systemd-analyze verify failed: $verify"
            [[ -z "$verify" ]] || die "systemd-analyze verify printed: $verify"
            security="$(cd "$unit_dir" && systemd-analyze security --offline=true --no-pager \
                fastsam-edge.service 2>&1 || true)"
            EXPOSURE="$(sed -nE 's/.*Overall exposure level for [^:]+: ([0-9.]+).*/\1/p' <<<"$security")"
            [[ -n "$EXPOSURE" ]] || die "no exposure level: $security"
            "$HOST_PY" -c "import sys; sys.exit(float('$EXPOSURE') > 2.0)" \
                || die "systemd-analyze security: exposure $EXPOSURE > 2.0"
            exec_start="$(sed -n 's/^ExecStart=//p' "$ROOT/etc/systemd/system/fastsam-edge.service")"
            # as the unit runs it: its user, groups, working directory and UMask=0027
            in_root /bin/sh -c "cd /var/lib/fastsam-edge && umask 0027 && setpriv --reuid=fastsam-edge \
                --regid=fastsam-edge --init-groups env -i PATH=/usr/bin:/bin \
                HOME=/var/lib/fastsam-edge $exec_start --max-frames 1 \
                --set 'source.kind=\"demo\"' --set http.port=0" \
                || die "ExecStart as fastsam-edge failed"
            step "$cmd" ok "verify silent, exposure $EXPOSURE, ExecStart as fastsam-edge: 1 frame"
            ;;
        "journalctl -u fastsam-edge"*)
            groups="$(in_root id -nG pi)"
            grep -qwE 'systemd-journal|adm' <<<"$groups" || die "pi is in neither systemd-journal nor adm: $groups"
            step "$cmd" ok "pi's groups: $groups"
            ;;
        "fastsam-edge doctor"*)
            rc=0
            doctor="$(as_pi "$cmd" 2>&1)" || rc=$?
            printf '%s\n' "$doctor"
            fails="$(grep -E '^FAIL' <<<"$doctor" | grep -vE '^FAIL +camera:' || true)"
            [[ $rc -le 1 && -z "$fails" ]] || die "doctor (rc $rc) failed beyond the camera: $fails"
            step "$cmd" ok "rc $rc; FAILs only: $(grep -cE '^FAIL' <<<"$doctor" || true) camera"
            ;;
        "ls /var/lib/fastsam-edge/results"*)
            listing="$(as_pi "$cmd")" || die "$cmd failed as pi"
            [[ -n "$listing" ]] || die "$cmd: no results"
            first="$(head -1 <<<"$listing")"
            as_pi "cat /var/lib/fastsam-edge/results/$first/result.json >/dev/null" \
                || die "pi cannot read the result without sudo"
            step "$cmd" ok "$listing"
            ;;
        *)
            as_pi "$cmd" || die "README command failed: $cmd"
            step "$cmd" ok
            ;;
    esac
done

# --- 5. upgrade: a second install keeps config and results ------------------------------------
config_sum="$(sha256sum "$ROOT/etc/fastsam-edge/config.toml" | cut -d' ' -f1)"
results_before="$(ls "$ROOT/var/lib/fastsam-edge/results" | sort)"
install_cmd="$(printf '%s\n' "${COMMANDS[@]}" | grep -m1 'install_pi.sh')"
as_pi "$install_cmd" || die "re-running the installer failed"
[[ "$(sha256sum "$ROOT/etc/fastsam-edge/config.toml" | cut -d' ' -f1)" == "$config_sum" ]] \
    || die "the upgrade changed the config"
[[ "$(ls "$ROOT/var/lib/fastsam-edge/results" | sort)" == "$results_before" ]] \
    || die "the upgrade changed the results"
venvs="$(ls "$ROOT/opt/fastsam-edge/venvs" | wc -l)"
[[ "$venvs" == 2 ]] || die "expected the new and the previous venv after the upgrade, got $venvs"
as_pi "fastsam-edge --help >/dev/null" || die "fastsam-edge not on PATH after the upgrade"
step "upgrade (installer again)" ok "config and results kept; venvs: $venvs"

# --- 6. uninstall, then purge ------------------------------------------------------------------
as_pi "sudo scripts/install_pi.sh --uninstall" || die "--uninstall failed"
[[ ! -e "$ROOT/etc/systemd/system/fastsam-edge.service" && ! -e "$ROOT/usr/local/bin/fastsam-edge" \
    && ! -e "$ROOT/opt/fastsam-edge" ]] || die "--uninstall left the unit, link or program"
! in_root id fastsam-edge >/dev/null 2>&1 || die "--uninstall left the user fastsam-edge"
! in_root getent group fastsam-edge >/dev/null || die "--uninstall left the group fastsam-edge"
[[ -e "$ROOT/etc/fastsam-edge/config.toml" && -n "$(ls "$ROOT/var/lib/fastsam-edge/results")" ]] \
    || die "--uninstall removed config or results"
as_pi "sudo scripts/install_pi.sh --uninstall --purge" || die "--uninstall --purge failed"
[[ ! -e "$ROOT/etc/fastsam-edge" && ! -e "$ROOT/var/lib/fastsam-edge" ]] \
    || die "--purge left config or state"
step "uninstall, purge" ok

"$HOST_PY" - "$STEPS" "$OUT/walk.json" "$EXPOSURE" <<'EOF'
import json, sys
steps = [dict(zip(("what", "status", "detail"), line.rstrip("\n").split("\t")))
         for line in open(sys.argv[1]) if line.strip()]
json.dump({"ok": all(s["status"] == "ok" for s in steps), "exposure": float(sys.argv[3]),
           "steps": steps}, open(sys.argv[2], "w"), indent=2)
EOF
log "done: $OUT/walk.json"
