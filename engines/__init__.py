"""TensorRT engines built from the exported ONNX graphs, and the cache that refuses stale ones.

Everything here imports without TensorRT: the TensorRT modules load on first use
(``engines.importer.lazy_import``) and fail then with the reason and the install command.
"""
