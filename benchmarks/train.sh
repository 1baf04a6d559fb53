#!/usr/bin/env bash
# Training figures: the commands behind benchmarks/results/train.md (2 CPU cores, no GPU).
# Run from the repository root; the logs land in benchmarks/logs/.
set -euo pipefail
export VGG_EDGE_WEIGHTS=${VGG_EDGE_WEIGHTS:-../shared/weights/vgg16_imagenet_notop.h5}
mkdir -p benchmarks/logs
# These runs predate the train-quality issue's defaults; OLD pins the defaults they ran under (later options win).
OLD=(--augment off --class-weights --no-calibrate --mixed-precision off --fine-tune-blocks 1 --fine-tune-epochs 10)
run() { local name=$1; shift; /usr/bin/time -v .venv/bin/vgg-edge train --out "runs/$name" "${OLD[@]}" "$@" > "benchmarks/logs/train-$name.log" 2>&1; }
# brain MRI: session 1's float32 one-block runs, then session 2's mixed-bfloat16 runs (the model of record: b2-bf16-flatten)
run brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --epochs 12 --fine-tune-epochs 10 --fine-tune-blocks 1
run brain-mri-128-augment --data ../shared/data/brain-mri --image-size 128 --augment online --epochs 4 --fine-tune-epochs 6 --fine-tune-blocks 1
run brain-mri-128-b2-bf16 --data ../shared/data/brain-mri --image-size 128 --epochs 12 --fine-tune-epochs 20 --fine-tune-blocks 2 --patience 4 --mixed-precision bfloat16
run brain-mri-128-b2-bf16-augment --data ../shared/data/brain-mri --image-size 128 --augment online --epochs 6 --fine-tune-epochs 20 --fine-tune-blocks 2 --patience 4 --mixed-precision bfloat16
run brain-mri-128-b2-bf16-flatten --data ../shared/data/brain-mri --image-size 128 --epochs 12 --fine-tune-epochs 20 --fine-tune-blocks 2 --patience 4 --pooling flatten --mixed-precision bfloat16
run brain-mri-128-b3-bf16 --data ../shared/data/brain-mri --image-size 128 --epochs 12 --fine-tune-epochs 12 --fine-tune-blocks 3 --fine-tune-lr 5e-5 --patience 4 --mixed-precision bfloat16
run mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 --epochs 12 --fine-tune-epochs 10 --fine-tune-blocks 2
run skin-lesion-128 --data ../shared/data/skin-lesion --image-size 128 --epochs 12 --fine-tune-epochs 3 --fine-tune-blocks 1
# train.md's tables (its prose is written by hand around them)
.venv/bin/python benchmarks/summarize_train.py runs/brain-mri-128-b2-bf16-flatten runs/mnist-digits-64 runs/skin-lesion-128
.venv/bin/python benchmarks/summarize_train.py runs/brain-mri-128 runs/brain-mri-128-augment runs/brain-mri-128-b2-bf16 runs/brain-mri-128-b2-bf16-augment runs/brain-mri-128-b3-bf16
