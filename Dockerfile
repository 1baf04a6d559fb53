# vgg-edge with every runtime and converter. Build online once; the image then runs offline.
#   docker build -t vgg-edge .
#   docker run --rm -v "$PWD/data:/data" -v "$PWD/runs:/app/runs" vgg-edge train --data /data --out runs/mri
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=3
WORKDIR /app
COPY pyproject.toml README.md ./
COPY toolkit ./toolkit
RUN pip install ".[full]"

# ImageNet VGG16 weights into the Keras cache, where `--weights imagenet` looks before downloading.
# Offline builds skip this; then mount a weights file and set VGG_EDGE_WEIGHTS.
RUN python -c "from vgg_edge.weights import keras_download; print(keras_download())" \
    || echo "offline build: no ImageNet weights baked in; run with -e VGG_EDGE_WEIGHTS=/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"

ENTRYPOINT ["vgg-edge"]
CMD ["--help"]
