#!/usr/bin/env bash
# iPET variants on held-out training rows (never the test set); each prints its stage table.
#   bench/tuning/run.sh CONFIG [VARIANT ...]     (variants: defaults balance-gold top soft; default: all)
# Variants share the run directory, so the zero-shot and PET stages (identical) are computed once.
set -u
cd "$(dirname "$0")/../.."
config=$1; shift
variants=("${@:-defaults balance-gold top soft}")
out=bench/tuning/runs/$(basename "$config" .yaml)
mkdir -p "$out"
declare -A SETS=([defaults]="" [balance-gold]="--set ipet.balance=gold" [top]="--set ipet.selection=top"
                 [soft]="--set ipet.soft_labels=true")
for name in ${variants[@]}; do
  echo "== $name ${SETS[$name]} ($(date -u +%T))"
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e s wall" ipet run "$config" --run-dir "$out/run" ${SETS[$name]} > "$out/$name.log" 2>&1
  sed -n '/| stage |/,/^$/p' "$out/run/summary.md"; tail -1 "$out/$name.log"
done
