#!/usr/bin/env bash
# Strict vs noise injection vs relaxed equivariance on the symmetry-breaking tasks
# (benchmarks/breaking.md). Quick presets, 3 seeds each; results in benchmarks/results/breaking/.
set -euo pipefail
out=benchmarks/results/breaking
for task in polygon bipartite set-decoding; do
  equirelax break "$task" --seeds 3 --quiet --out "$out/$task"
done
equirelax break polygon --seeds 3 --quiet --tie-break random --out "$out/polygon-random"
equirelax break polygon --seeds 3 --quiet --task-option jitter=0.05 --out "$out/polygon-jitter"
