"""The gRPC platform: thin servicers over the pipeline's stages, the Studio gateway, and the one-process launcher.

    ldm3d serve all --port 50051 --checkpoint demo/tiny          # every service on one port (the default)
    ldm3d serve sampler --port 50052 --checkpoint demo/tiny      # one service alone
    ldm3d serve gateway --port 50051 --checkpoint demo/tiny \\
        --text-encoder-url localhost:50053 --sampler-url localhost:50052 --autoencoder-url localhost:50054

Layout: ``config`` (typed config from flags + env), ``interceptor`` (request ids, metrics, logs, error mapping through
:mod:`ldm3d.wire.status`), ``admission`` (bounded queues), ``jobs`` (a blocking job in a worker thread, streaming
progress, cancelled between steps), ``models`` (which pipelines this process serves), ``stages`` (the pipeline's
stages made async), one module per servicer (each only translates: proto → library call → proto, with the
conversions of :mod:`ldm3d.wire`), ``downstream`` (how the gateway reaches the stages: in-process or gRPC), ``app``
(building, running and gracefully stopping a server). The client never imports this package.
"""
