"""The gRPC platform: thin servicers over the pipeline's stages, the Studio gateway, and the one-process launcher.

    ldm3d serve all --port 50051 --checkpoint demo/tiny          # every service on one port (the default)
    ldm3d serve sampler --port 50052 --checkpoint demo/tiny      # one service alone
    ldm3d serve gateway --port 50051 --checkpoint demo/tiny \\
        --text-encoder-url localhost:50053 --sampler-url localhost:50052 --autoencoder-url localhost:50054

Layout: ``config`` (typed config from flags + env), ``status`` (typed errors <-> google.rpc.Status, the one mapping),
``interceptor`` (request ids, metrics, logs, error mapping), ``tensors`` (proto <-> numpy, written once),
``admission`` (the bounded sampling queue), ``models`` (which pipelines this process serves), ``stages`` (the
pipeline's stages made async), one module per servicer, ``downstream`` (how the gateway reaches the stages:
in-process or gRPC), ``app`` (building, running and gracefully stopping a server).
"""
