"""Serving: a trained run's model exported as a self-contained artifact, scored on raw-id requests.

``ctl export RUN_DIR --out DIR`` writes the artifact (:mod:`ctl.serve.export`); ``ctl score ARTIFACT
requests.parquet --out FILE`` scores requests with it (:mod:`ctl.serve.requests`). Loading an
artifact (:mod:`ctl.serve.artifact`) reads only its own files: no Hydra config, no model class,
no training code; the ONNX runtime is imported only for an ONNX artifact (``pip install ctl[serve]``).
"""

#: request rows encoded and scored at a time (``ctl score --batch-rows``)
DEFAULT_BATCH_ROWS = 65536
