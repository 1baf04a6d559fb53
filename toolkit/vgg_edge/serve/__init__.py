"""`vgg-edge serve`: an exported model as a long-running service on the device, with two front doors.

    modality / PACS --C-STORE--> DICOM SCP --+                      +--> results.jsonl (fsync'ed)
                                             +--> spool/ --> engine (micro-batches) --+
    application ---POST /v1/predict--> HTTP -+    (fsync'ed)                          +--> HTTP response

Modules: `config` (ServeConfig), `spool` (the durable spool and the results log: what makes it
crash-safe), `engine` (the bounded queue and the batching worker, Prometheus metrics), `dicom_scp`
(pynetdicom), `http_api` (FastAPI) and `service` (start, recover, run until SIGTERM/SIGINT, drain,
stop). Needs the `serve` extra: pip install 'vgg-edge[serve]' plus the artifact's runtime.
"""
