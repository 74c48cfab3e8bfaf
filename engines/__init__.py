"""TensorRT engines built from the exported ONNX graphs, the cache that refuses stale ones, and CUDA.

``engines.build`` builds them, ``engines.artifacts.load_engine`` opens them checked, ``engines.triton``
packages them for a Triton server and ``engines.cuda`` holds the CUDA resources the runtime's TensorRT
runner uses. Everything here imports without TensorRT or cuda-python: they load on first use
(``engines.importer.lazy_import``) and fail then with the reason and the install command.
"""
