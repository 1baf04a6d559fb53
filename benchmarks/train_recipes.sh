#!/usr/bin/env bash
# The default recipe of the train-quality issue, and what it is compared with (2 CPU cores, no GPU).
# Every run is chosen on validation only; each test split is read once per run, at its end.
# Run from the repository root, one run at a time (the machine has 2 cores); logs in benchmarks/logs/.
# Then: benchmarks/summarize_train.py prints the tables of benchmarks/results/recipes.md.
set -euo pipefail
export VGG_EDGE_WEIGHTS=${VGG_EDGE_WEIGHTS:-../shared/weights/vgg16_imagenet_notop.h5}
mkdir -p benchmarks/logs
run() { local name=$1; shift; /usr/bin/time -v .venv/bin/vgg-edge train --out "runs/$name" "$@" > "benchmarks/logs/train-$name.log" 2>&1; }
case "${1:-all}" in
  brain-default|all) run default-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 ;;&
  skin-default|all) run default-skin-lesion-128 --data ../shared/data/skin-lesion --image-size 128 ;;&
  mnist-default|all) run default-mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 ;;&
  brain-noaug|all) run noaug-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --augment off ;;&
  brain-online|all) run online-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --augment online ;;&
  mnist-noflip|all) run noflip-mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 --no-flip ;;&
  # session 7: flips decided on the data (neither --flip nor --no-flip), and the 64 px brain source of the pruning benchmarks
  mnist-flipauto|all) run flipauto-mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 ;;&
  brain-default-64|all) run default-brain-mri-64 --data ../shared/data/brain-mri --image-size 64 ;;&
  # session 9: more cached views (K=8), the issue's own knob, on the set furthest from its target
  brain-views8|all) run views8-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --views 8 ;;&
  brain-smooth|all) run smooth-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --label-smoothing 0.1 ;;&
  mnist-views8|all) run views8-mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 --views 8 ;;&
  mnist-smooth|all) run smooth-mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 --label-smoothing 0.1 ;;&
  skin-smooth|all) run smooth-skin-lesion-128 --data ../shared/data/skin-lesion --image-size 128 --label-smoothing 0.1 ;;&
  # session 10: the default after label smoothing 0.1 became it and epochs are chosen on the calibrated val loss
  brain-default-s10|all) run default-s10-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 ;;&
  mnist-default-s10|all) run default-s10-mnist-digits-64 --data ../shared/data/mnist-digits --image-size 64 ;;&
  skin-default-s10|all) run default-s10-skin-lesion-128 --data ../shared/data/skin-lesion --image-size 128 ;;&
  # the same default with another seed (its own val split, carved from train; the same test folder): the run-to-run spread
  brain-default-s10-seed43|all) run default-s10-seed43-brain-mri-128 --data ../shared/data/brain-mri --image-size 128 --seed 43 ;;&
  *) ;;
esac
