"""`vgg-edge export`: a trained run to TFLite, ONNX or OpenVINO at fp32/fp16/dynamic/int8, published
only when the exported model, run in its own edge runtime, matches the Keras model on the run's
recorded test split (see `pipeline` for the flow, `parity` for the gate).
"""

from .base import PRECISIONS
from .pipeline import ExportJob, ExportResult, default_out, export_many, export_run, rejected_name

__all__ = ["PRECISIONS", "ExportJob", "ExportResult", "default_out", "export_many", "export_run", "rejected_name"]
