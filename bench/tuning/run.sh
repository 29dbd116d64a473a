#!/usr/bin/env bash
# iPET variants on held-out training rows (never the test set); each prints its stage table.
# Variants share the run directory, so the zero-shot and PET stages (identical) are computed once.
set -u
cd "$(dirname "$0")/../.."
config=${1:-bench/tuning/agnews-heldout.yaml}
out=bench/tuning/runs/$(basename "$config" .yaml)
mkdir -p "$out"
run() {  # name, overrides...
  local name=$1; shift
  echo "== $name $* ($(date -u +%T))"
  /usr/bin/time -f "%e s wall" ipet run "$config" --run-dir "$out/run" "$@" > "$out/$name.log" 2>&1
  sed -n '/| stage |/,/^$/p' "$out/run/summary.md"; tail -1 "$out/$name.log"
}
run defaults
run balance-gold --set ipet.balance=gold
run top --set ipet.selection=top
run soft --set ipet.soft_labels=true
