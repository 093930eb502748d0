cd /work/wt-27
PY=/work/main/.ci-venvs/export/bin/python
echo "load: $(uptime)"
for i in 1 2; do
  for v in before after; do
    for b in s640-mc2s0; do
      if [ $v = before ]; then out=$(PYTHONPATH=$PWD/work/before $PY work/text_before.py work/$b work/scene.png 0.5195 int8 2 3 1 2>/dev/null); else out=$(PYTHONPATH=$PWD $PY -m edge.bench.text work/$b work/scene.png 0.5195 int8 2 3 1 2>/dev/null); fi
      echo "$v $b $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["masks"], d["ms"], d["x_everything"], d["peak_rss_mib"])') | $(uptime | sed 's/.*average//')"
    done
  done
done
for v in before after; do
  b=s640-vitb32
  if [ $v = before ]; then out=$(PYTHONPATH=$PWD/work/before $PY work/text_before.py work/$b work/scene.png 0.5195 int8 2 3 1 2>/dev/null); else out=$(PYTHONPATH=$PWD $PY -m edge.bench.text work/$b work/scene.png 0.5195 int8 2 3 1 2>/dev/null); fi
  echo "$v $b $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["masks"], d["ms"], d["x_everything"], d["peak_rss_mib"])') | $(uptime | sed 's/.*average//')"
done
