"""Triton Python-backend model that serves one of our ONNX files with ONNX Runtime (CPU tritonserver only).

The CPU tritonserver bundled by nvidia-pytriton has the Python backend and no onnxruntime backend, so
``ldm3d.repository.triton_cpu`` builds a second repository from ours in which every version folder holds this file
as ``model.py`` next to links to the very same ``model.onnx`` (and manifest). On GPU the official Triton image
serves our committed ``config.pbtxt`` (platform onnxruntime_onnx) directly and this file is not used.

``initialize`` checks every file against the version's manifest (a corrupted or truncated file fails the load,
it is never served) and builds one ONNX Runtime session; ``execute`` returns exactly one response per request:
requests whose shapes agree are run as one batch (Triton's dynamic batcher groups concurrent U-Net steps), and a
failing request gets a ``TritonError`` while the others still succeed.
"""

import hashlib
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.version = args["model_version"]
        folder = os.path.join(args["model_repository"], self.version)
        manifest_path = os.path.join(folder, "manifest.json")
        if not os.path.isfile(manifest_path):
            raise RuntimeError(f"model {self.name!r} version {self.version}: {manifest_path} missing")
        with open(manifest_path) as f:
            manifest = json.load(f)
        for rel, want in manifest.get("files", {}).items():
            path = os.path.join(folder, rel)
            if not os.path.isfile(path):
                raise RuntimeError(f"model {self.name!r} version {self.version}: {path} is missing")
            if os.path.getsize(path) != want["bytes"] or _sha256(path) != want["sha256"]:
                raise RuntimeError(
                    f"model {self.name!r} version {self.version}: {path} does not match its manifest (corrupted or "
                    "truncated); not loaded")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        # no busy-waiting pool threads between calls: beside other instances and the sampler on a few CPU cores they
        # take the cores the working threads need (the embedded runtime does the same)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if int(params.get("intra_op_thread_count", 0) or 0) > 0:
            opts.intra_op_num_threads = int(params["intra_op_thread_count"])
        if int(params.get("inter_op_thread_count", 0) or 0) > 0:
            opts.inter_op_num_threads = int(params["inter_op_thread_count"])
        self.session = ort.InferenceSession(os.path.join(folder, "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0

    def _run(self, feeds):
        return self.session.run(self.outputs, feeds)

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}  # requests with the same non-batch shapes run as one batch
        for i, request in enumerate(requests):
            try:
                feed = {}
                for name in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:
                        raise ValueError(f"input {name!r} is missing")
                    feed[name] = tensor.as_numpy()
                key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in feed.items()) if self.batching else (i,)
                groups.setdefault(key, []).append((i, feed))
            except Exception as exc:  # noqa: BLE001 - reported to that request only
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        for members in groups.values():
            try:
                if len(members) == 1:
                    outs = [self._run(members[0][1])]
                else:
                    sizes = [next(iter(f.values())).shape[0] for _, f in members]
                    joined = {n: np.concatenate([f[n] for _, f in members]) for n in self.inputs}
                    split = np.cumsum(sizes)[:-1]
                    outs = list(zip(*[np.split(o, split) for o in self._run(joined)]))
                for (i, _), out in zip(members, outs):
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.outputs, out)])
            except Exception as exc:  # noqa: BLE001 - ORT rejected the inputs: an error for each of them
                for i, _ in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"model {self.name!r} version {self.version}: {exc}"))
        return responses

    def finalize(self):
        self.session = None
