"""Deployment runtime: backends behind one runner interface, tiled inference, and the batch scanner.

- ``runtime.runners``: ``BaseRunner``, ``Backend`` and one module per backend (torch, ONNX Runtime,
  TensorRT, Triton), each three graphs (whole, tile, score) with the I/O of ``export.contract``;
  ``runtime.backends`` is the registry that ``--backend`` and its ``auto`` default read (README.md:
  adding a backend).
- ``runtime.tiling`` and ``runtime.predictor``: ``Predictor.predict`` returns the reference's
  ``TruForResult`` whatever the backend, running large images as blended tiles.
- ``python -m runtime.scan``: many images to ``results.jsonl`` (plus maps, overlays and thumbnails), resumable;
  ``runtime.decision`` is the forged decision each row records with its threshold.
- ``python -m runtime.report``: a scan folder to one offline ``report.html``.
- ``python -m runtime.calibrate``: a threshold for a false-alarm rate, from the user's pristine images.
"""
