"""Triton Python-backend stand-in for Triton's ONNX Runtime backend, used by the end-to-end test.

The only tritonserver that installs here (nvidia-pytriton's) has no ONNX Runtime backend, so the
test rewrites each generated config.pbtxt to ``backend: "python"`` and puts this file, as
``model.py``, beside the ``model.onnx`` it runs. Everything else in the configs (names, dims,
batching, parameters) is served as export.triton wrote it. Runs inside tritonserver, not pytest.
"""

import json
import os

import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # the test machine has 2 cores and the client runs beside the server
        self.session = onnxruntime.InferenceSession(
            os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            values = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return responses
