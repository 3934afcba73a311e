#!/usr/bin/env bash
# telescope bench serve with the machine's CPUs contended: one busy-loop process pinned to each CPU runs for the
# whole benchmark, as another tenant's work would (the server and the clients then get about half of each core).
# The report (JSON and .md, default docs/results/bench_serve_contended.json) says so in its "contention" field.
#   bash tools/bench-serve-contended.sh [OUT.json] [extra telescope bench serve flags]
set -euo pipefail
out=${1:-docs/results/bench_serve_contended.json}
shift || true
telescope=${TELESCOPE:-.venv/bin/telescope}
python=${PYTHON:-.venv/bin/python}
hogs=()
cleanup() { for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for cpu in $("$python" -c "import os; print(' '.join(map(str, sorted(os.sched_getaffinity(0)))))"); do
  taskset -c "$cpu" "$python" -c "while True: pass" &
  hogs+=($!)
done
"$telescope" bench serve --clients 16 --queries vector --search-processes 0,1 --out "$out" "$@"
cleanup
"$python" - "$out" "${#hogs[@]}" <<'PY'
import json, sys
from pathlib import Path
out, hogs = Path(sys.argv[1]), int(sys.argv[2])
note = f"{hogs} busy-loop processes, one pinned to each CPU, ran through the whole benchmark (tools/bench-serve-contended.sh)"
report = json.loads(out.read_text())
report["contention"] = note
out.write_text(json.dumps(report, indent=2) + "\n")
md = out.with_suffix(".md")
lines = md.read_text().split("\n")
lines[3:3] = ["", f"**Contended:** {note}."]
md.write_text("\n".join(lines))
PY
