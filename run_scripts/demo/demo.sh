#!/usr/bin/env bash
# The CPU demo behind `make demo`: a miniature π-Tuning pipeline on generated grounding data.
# QUICK=1 runs every stage at toy size (a smoke test, not a result).
set -euo pipefail
cd "$(dirname "$0")/../.."
for stage in grounding petl pi_tuning xmodal; do
  echo "== demo stage: $stage"
  bash "run_scripts/demo/$stage.sh"
done
