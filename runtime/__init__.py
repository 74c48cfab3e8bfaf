"""Deployment runtime: backends behind one runner interface, tiled inference, and the batch scanner.

- ``runtime.runners``: ``BaseRunner`` and the torch / ONNX Runtime backends, each three graphs
  (whole, tile, score) with the export's I/O contract; ``runtime.backends`` is the table that
  ``--backend`` and its ``auto`` default read.
- ``runtime.tiling`` and ``runtime.predictor``: ``Predictor.predict`` returns the reference's
  ``TruForResult`` whatever the backend, running large images as blended tiles.
- ``python -m runtime.scan``: many images to ``results.jsonl`` (plus maps and overlays), resumable.
"""
