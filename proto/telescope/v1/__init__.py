"""telescope.v1: the versioned gRPC API. The *_pb2*.py files are generated (`make proto`); do not edit them."""
