#!/usr/bin/env bash
# Trains every preset in configs/ for one epoch on the real data and evaluates on test, so
# `hybridmednet train --config configs/<name>.yaml` is known to work end to end for each.
# Usage: bash scripts/check_presets.sh [OUTPUT_DIR]   (run from the repository root)
set -euo pipefail
out=${1:-runs/preset_check}
for cfg in configs/*.yaml; do
  name=$(basename "$cfg" .yaml)
  start=$(date +%s)
  hybridmednet train --config "$cfg" --set train.epochs=1 --set output_dir="$out" --overwrite --quiet > /dev/null
  hybridmednet evaluate "$out/$name" --split test --n-bootstrap 200 > /dev/null
  python - "$out/$name" "$name" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
run, name, wall = sys.argv[1:]
m = json.load(open(f"{run}/metrics.json"))["test"]
d = json.load(open(f"{run}/data_summary.json"))
print(f"{name}: n={d['n']} leakage={d['leakage'].get('groups', {}).get('n_crossing', '-')} "
      f"test acc={m['metrics'].get('acc', float('nan')):.3f} auc={m['metrics'].get('auc', float('nan')):.3f} ({wall}s, 1 epoch)")
PY
done
