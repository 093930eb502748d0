#!/usr/bin/env bash
# The project's test command (README, CI): builds three fresh virtual environments under
# .ci-venvs/ and runs the test suite in each.
#
#   runtime  pip install -e ".[test]"              (current runtime deps, no torch)
#            pytest -m "not export"; fails on any skipped test; edge must import without torch
#   pi       the same under scripts/constraints-pi.txt (Raspberry Pi OS Bookworm stack:
#            Python 3.11, numpy 1.24, opencv-python-headless 4.11, a pinned onnxruntime)
#   export   torch==2.14.1 torchvision==0.29.1 first (served from local disk by pip's config),
#            then pip install -e ".[export,dev,test]"; the whole suite, YOLO_OFFLINE=1
# Debian packages the tests need (mosquitto) are apt-installed first when missing (as root).
#
# Usage: scripts/test.sh [--only runtime|pi|export]... [--reuse] [-- PYTEST_ARGS...]
#   --only NAME  run only that env (repeatable, or comma-separated)
#   --reuse      keep an existing venv instead of re-creating it (pip install still runs)
#   PYTHON=...   interpreter for the venvs (default: python3.11)
# Install logs: .ci-venvs/NAME.install.log; JUnit reports: .ci-venvs/NAME.junit.xml
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
VENVS="$ROOT/.ci-venvs"
ALL_ENVS=(runtime pi export)
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
PI_CONSTRAINTS="$ROOT/scripts/constraints-pi.txt"
export YOLO_OFFLINE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

ONLY=()
REUSE=0
PYTEST_ARGS=()
while (($#)); do
    case "$1" in
        --only) [[ $# -ge 2 ]] || { usage >&2; exit 2; }
                IFS=, read -r -a _names <<<"$2"; ONLY+=("${_names[@]}"); shift 2 ;;
        --only=*) IFS=, read -r -a _names <<<"${1#--only=}"; ONLY+=("${_names[@]}"); shift ;;
        --reuse) REUSE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "test.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if ((${#ONLY[@]} == 0)); then
    ENVS=("${ALL_ENVS[@]}")
else
    ENVS=()
    for name in "${ONLY[@]}"; do
        case " ${ALL_ENVS[*]} " in
            *" $name "*) ENVS+=("$name") ;;
            *) echo "test.sh: --only: unknown env '$name' (one of: ${ALL_ENVS[*]})" >&2; exit 2 ;;
        esac
    done
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "test.sh: $PYTHON not found (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
mkdir -p "$VENVS"

# Debian packages the tests need (CI runs this as root on a fresh machine with apt reachable).
# Idempotent: apt is only touched when the program is missing.
apt_need() {  # apt_need PROGRAM PACKAGE: install PACKAGE unless PROGRAM is on PATH or in sbin
    local prog="$1" pkg="$2" log="$VENVS/apt.log"
    command -v "$prog" >/dev/null 2>&1 && return 0
    [[ -x "/usr/sbin/$prog" || -x "/sbin/$prog" ]] && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: $prog is missing (apt package $pkg) and this is not root with apt-get;" \
            "the tests that need it will fail" >&2
        return 0
    fi
    echo "+ apt-get install -y $pkg (tests need $prog; log: ${log#"$ROOT"/})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$pkg" >>"$log" 2>&1 \
        || { apt-get update >>"$log" 2>&1 && apt-get install -y --no-install-recommends "$pkg" >>"$log" 2>&1; } \
        || { echo "test.sh: apt-get install $pkg failed; see $log" >&2; tail -n 20 "$log" >&2; }
}
apt_need mosquitto mosquitto   # tests/test_service_mqtt_broker.py: a real MQTT broker
apt_need chromium chromium                # tests/test_service_browser.py: the page in a real browser
apt_need chromedriver chromium-driver      #   (driven by Selenium through this system driver)
apt_need qemu-x86_64-static qemu-user-static  # tests/test_cpu.py, test_quantize.py: int8 on an emulated AVX2 CPU

# Counts from a pytest JUnit XML: "passed failed errors skipped xfailed"; real skips
# (not xfails) are listed on stderr. With argv[2] == "not-export", a collection-time skip of a
# module whose module-level `pytestmark` has `mark.export` (e.g. a module-level
# importorskip("ultralytics")) is not counted: -m "not export" deselects all of its tests anyway.
JUNIT_COUNTS='
import ast, sys, xml.etree.ElementTree as ET
from pathlib import Path

def export_module(dotted):
    path = Path(*dotted.split(".")).with_suffix(".py")
    if not path.is_file():
        return False
    src = path.read_text()
    for node in ast.parse(src).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
                return "mark.export" in (ast.get_source_segment(src, node.value) or "")
    return False

not_export = len(sys.argv) > 2 and sys.argv[2] == "not-export"
counts = dict(passed=0, failed=0, errors=0, skipped=0, xfailed=0)
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    kids = {c.tag: c for c in tc}
    name = tc.get("classname", "") + "::" + tc.get("name", "")
    if "failure" in kids:
        counts["failed"] += 1
    elif "error" in kids:
        counts["errors"] += 1
    elif "skipped" in kids:
        sk = kids["skipped"]
        why = (sk.text or sk.get("message", "")).strip()
        if sk.get("type") == "pytest.xfail":
            counts["xfailed"] += 1
        elif not_export and not tc.get("classname") and export_module(tc.get("name", "")):
            mod = tc.get("name")
            print(f"  not counted: collection skip of export module {mod}: {why}", file=sys.stderr)
        else:
            counts["skipped"] += 1
            print(f"  skipped: {name}: {why}", file=sys.stderr)
    else:
        counts["passed"] += 1
print(*counts.values())
'

# Torch-free runtime: every edge module imports without torch, and torch is not installed.
NO_TORCH_CHECK='
import importlib, importlib.util, pkgutil, sys
import edge
mods = sorted("edge." + m.name for m in pkgutil.iter_modules(edge.__path__))
for name in mods:
    importlib.import_module(name)
assert "torch" not in sys.modules, "importing edge pulled in torch"
assert importlib.util.find_spec("torch") is None, "torch is installed in a runtime env"
print(f"torch-free: import edge + {len(mods)} submodules without torch; torch not installed")
'

VERSIONS='
import sys, importlib.metadata as md
print("python", sys.version.split()[0])
for dist in ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "pycocotools",
             "pytest", "torch", "torchvision", "ultralytics", "onnx"):
    try:
        print(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        pass
import numpy, cv2, onnxruntime
print(f"imported: numpy {numpy.__version__}, cv2 {cv2.__version__}, onnxruntime {onnxruntime.__version__}")
'

declare -A STATUS NOTE PASSED FAILED SKIPPED T_INSTALL T_TEST

pip_install() {  # pip_install ENV ARGS... (output appended to the env's install log)
    local env="$1"; shift
    local log="$VENVS/$env.install.log" t0=$SECONDS
    echo "+ pip install $*" | tee -a "$log"
    if ! "$VENVS/$env/bin/python" -m pip install --no-input --progress-bar off "$@" >>"$log" 2>&1; then
        echo "pip install $* failed after $((SECONDS - t0))s; last lines of $log:" >&2
        tail -n 40 "$log" >&2
        return 1
    fi
    echo "  done in $((SECONDS - t0))s"
}

install_env() {  # install_env ENV
    local env="$1" venv="$VENVS/$1"
    : >"$VENVS/$env.install.log"
    if ((REUSE)) && [[ -x "$venv/bin/python" ]]; then
        echo "reusing $venv"
    else
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv" || return 1
    fi
    case "$env" in
        runtime) pip_install "$env" -e ".[test]" ;;
        pi)      pip_install "$env" -c "$PI_CONSTRAINTS" -e ".[test]" ;;
        export)  pip_install "$env" "${TORCH_PINS[@]}" &&
                 pip_install "$env" "${TORCH_PINS[@]}" -e ".[export,dev,test]" ;;
    esac
}

check_env() {  # check_env ENV: environment sanity before the tests
    local env="$1" py="$VENVS/$1/bin/python"
    "$py" -c "$VERSIONS" || return 1
    "$py" -m pip check || return 1
    case "$env" in
        runtime) "$py" -c "$NO_TORCH_CHECK" || return 1 ;;
        pi)      "$py" -c "$NO_TORCH_CHECK" || return 1
                 "$py" -c 'import numpy; v = numpy.__version__
assert v.startswith("1.24."), f"pi env: expected numpy 1.24.x, got {v}"' || return 1 ;;
        export)  "$py" -c 'import torch, torchvision, ultralytics, onnx
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, ultralytics {ultralytics.__version__}")' || return 1 ;;
    esac
}

run_tests() {  # run_tests ENV: pytest, then counts from its JUnit report
    local env="$1" py="$VENVS/$1/bin/python" junit="$VENVS/$1.junit.xml" rc=0
    local -a args=(tests --strict-markers -rfEs --junitxml="$junit")
    [[ "$env" == export ]] || args+=(-m "not export")
    rm -f "$junit"
    echo "+ pytest$(printf ' %q' "${args[@]}" "${PYTEST_ARGS[@]}")"
    "$py" -m pytest "${args[@]}" "${PYTEST_ARGS[@]}" || rc=$?
    if [[ ! -s "$junit" ]]; then
        NOTE[$env]="pytest exit $rc, no JUnit report"
        return 1
    fi
    local counts p f e s x
    counts="$("$py" -c "$JUNIT_COUNTS" "$junit" "$([[ $env == export ]] && echo all || echo not-export)")" || { NOTE[$env]="unreadable JUnit report"; return 1; }
    read -r p f e s x <<<"$counts"
    PASSED[$env]=$p; FAILED[$env]=$((f + e)); SKIPPED[$env]=$s
    if ((rc == 5)) || ((p + f + e + s + x == 0)); then
        NOTE[$env]="no tests collected"
        return 1
    fi
    if ((rc != 0)); then
        NOTE[$env]="pytest exit $rc"
        return 1
    fi
    if [[ "$env" != export ]] && ((s > 0)); then
        NOTE[$env]="$s skipped: every test must run in the $env env"
        echo "test.sh: $env: $s test(s) skipped; skips are failures here (list above)" >&2
        return 1
    fi
    ((x == 0)) || NOTE[$env]="$x xfailed"
    return 0
}

run_env() {
    local env="$1" t0
    echo
    echo "==================== env: $env ===================="
    PASSED[$env]=0; FAILED[$env]=0; SKIPPED[$env]=0; T_TEST[$env]=0; NOTE[$env]=""
    t0=$SECONDS
    if ! install_env "$env"; then
        T_INSTALL[$env]=$((SECONDS - t0)); STATUS[$env]=FAIL; NOTE[$env]="install failed"
        return 1
    fi
    T_INSTALL[$env]=$((SECONDS - t0))
    echo "$env: installed in ${T_INSTALL[$env]}s (log: ${VENVS#"$ROOT"/}/$env.install.log)"
    t0=$SECONDS
    if ! check_env "$env"; then
        T_TEST[$env]=$((SECONDS - t0)); STATUS[$env]=FAIL; NOTE[$env]="environment check failed"
        return 1
    fi
    if ! run_tests "$env"; then
        T_TEST[$env]=$((SECONDS - t0)); STATUS[$env]=FAIL
        return 1
    fi
    T_TEST[$env]=$((SECONDS - t0)); STATUS[$env]=PASS
}

T_ALL=$SECONDS
for env in "${ENVS[@]}"; do
    run_env "$env" || true
done

echo
echo "==================== summary ===================="
total_p=0 total_f=0 total_s=0 failed_envs=0
for env in "${ENVS[@]}"; do
    printf '%-8s %-4s %4d passed %3d failed %3d skipped   install %4ds  tests %4ds  %s\n' \
        "$env" "${STATUS[$env]}" "${PASSED[$env]}" "${FAILED[$env]}" "${SKIPPED[$env]}" \
        "${T_INSTALL[$env]}" "${T_TEST[$env]}" "${NOTE[$env]}"
    total_p=$((total_p + PASSED[$env])); total_f=$((total_f + FAILED[$env]))
    total_s=$((total_s + SKIPPED[$env]))
    [[ "${STATUS[$env]}" == PASS ]] || failed_envs=$((failed_envs + 1))
done
echo "total time $((SECONDS - T_ALL))s; $failed_envs of ${#ENVS[@]} env(s) failed"
echo "TOTAL: $total_p passed, $total_f failed, $total_s skipped"
((failed_envs == 0))
