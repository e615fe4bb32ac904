#!/usr/bin/env bash
# Smoke plumes (issue 18): the commands behind benchmarks/smoke.md. Run from the repository root
# in the project's virtual environment with the flow extra (pip install -e ".[flow]"); the first
# command simulates and caches the quick data (PhiFlow, about 1.5 min on 2 CPU cores).
# Every command resumes where it stopped with --resume.
set -euo pipefail
OUT=${OUT:-runs/benchmarks/smoke}
JOBS=${JOBS:-2}
# Quick preset: 32x32 plumes, 170 steps, 2 simulations per inflow edge (6 train, 2 held out),
# 15 epochs, batch 16, Adam 1e-3, weight decay 4e-4, lr x0.95 per epoch; test at the best
# validation epoch. The three networks have 34k (CNN, C4 group CNN) and 68k (relaxed group
# CNN: 2 filter banks) parameters.
equirelax compare smoke --model smoke-gcnn --strategies strict,cr,ace-resilient,rpp,recm \
    --seeds 3 --jobs "$JOBS" --model-option hidden=16 --out "$OUT/gcnn" --resume --quiet
equirelax compare smoke --model smoke-rgcnn --strategies free \
    --seeds 3 --jobs "$JOBS" --model-option hidden=16 --out "$OUT/rgcnn" --resume --quiet
equirelax compare smoke --model smoke-cnn --strategies strict \
    --seeds 3 --jobs "$JOBS" --model-option hidden=32 --out "$OUT/cnn" --resume --quiet
