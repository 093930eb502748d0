cd /tmp/segcwd
PY=/work/main/.ci-venvs/export/bin/python
W=/work/wt-27
run() { # label pythonpath bundle extra...
  local label=$1 pp=$2 b=$3; shift 3
  PYTHONPATH=$pp /usr/bin/time -f "%M" -o /tmp/m27b $PY -m edge.cli segment $W/work/scene.png --bundle $W/$b --precision int8 --threads 2 --conf 0.5195 --text "a red circle" "$@" > /tmp/out27b 2>&1 || tail -2 /tmp/out27b
  echo "$label $(( $(cat /tmp/m27b) / 1024 )) $(grep -o 'load_clip.*' /tmp/out27b | head -1)"
}
echo "load: $(uptime)"
run "mc2s0 before default-flags(fp32 CLIP)" $W/work/before work/s640-mc2s0
for i in 1 2 3 4 5; do
  run "mc2s0 before clip-int8" $W/work/before work/s640-mc2s0 --clip-precision int8
  run "mc2s0 after" $W work/s640-mc2s0
  run "vitb32 before clip-int8" $W/work/before work/s640-vitb32 --clip-precision int8
  run "vitb32 after" $W work/s640-vitb32
done
echo "load: $(uptime)"
