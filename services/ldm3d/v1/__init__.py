"""Generated gRPC code of the ``ldm3d.v1`` API (from ``protos/ldm3d/v1``). Do not edit: run
``python scripts/gen_protos.py`` after changing a .proto; ``tests/servers/test_protos.py`` checks it is current."""
