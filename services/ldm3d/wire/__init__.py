"""The ``ldm3d.v1`` contract's Python side, imported by the client and the servers alike (never the other way).

    tensors   numpy <-> Tensor / Image / RGBD, durations, progress (every reader names the proto field it reads)
    status    typed errors (:mod:`ldm3d.errors`) <-> google.rpc.Status with field, resource and retry details
    ids       request ids: the ``x-request-id`` metadata key and new ids
    generate  GenerateParams <-> GenerateRequest / SampleRequest, GenerateResult message -> GenerateResult
    render    the renderer's enums (camera paths, mesh formats) <-> the library's names

Imports go ``client → wire``, ``servers → wire``, ``wire → pipeline/codec/errors/v1``; nothing here imports the
servers, grpc servicers or model runtimes.
"""
