# Two images from one file:
#   docker build -t vgg-edge .                         everything: train, export, bench (the last stage, the default)
#   docker build --target device -t vgg-edge-device .  the edge device: `vgg-edge serve` and `predict`, no TensorFlow
#
#   docker run --rm -v "$PWD/data:/data" -v "$PWD/runs:/app/runs" vgg-edge train --data /data --out runs/mri
#   docker run -d --name vgg-edge -v "$PWD/exported/mri/onnx-int8:/model:ro" -v vgg-edge-spool:/spool \
#       -p 127.0.0.1:11112:11112 -p 127.0.0.1:8080:8080 vgg-edge-device --allow-ae CT_SCANNER,PACS
#   (the spool volume keeps acknowledged images across restarts; stop with `docker stop`: SIGTERM drains the queue)

FROM python:3.11-slim AS device
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY toolkit ./toolkit
RUN pip install ".[onnx,openvino,tflite,serve]"
EXPOSE 11112 8080
# Inside the container it listens on every interface; publish the ports to the host's loopback or the modality network only.
ENTRYPOINT ["vgg-edge", "serve", "/model", "--out", "/spool", "--host", "0.0.0.0"]

FROM python:3.11-slim AS full
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
