#!/usr/bin/env bash
# Training figures: the commands behind benchmarks/results/train.md (2 CPU cores, no GPU).
# Run from the repository root; the logs land in benchmarks/logs/.
set -euo pipefail
export VGG_EDGE_WEIGHTS=${VGG_EDGE_WEIGHTS:-../shared/weights/vgg16_imagenet_notop.h5}
mkdir -p benchmarks/logs
run() { local name=$1; shift; /usr/bin/time -v .venv/bin/vgg-edge train --out "runs/$name" "$@" > "benchmarks/logs/train-$name.log" 2>&1; }
run brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --epochs 12 --fine-tune-epochs 10 --fine-tune-blocks 1
run mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 --epochs 12 --fine-tune-epochs 10 --fine-tune-blocks 2
run skin-lesion-128 --data ../shared/data/skin-lesion --image-size 128 --epochs 12 --fine-tune-epochs 3 --fine-tune-blocks 1
.venv/bin/python benchmarks/summarize_train.py runs/brain-mri-128 runs/mnist-digits-64 runs/skin-lesion-128 > benchmarks/results/train.md
