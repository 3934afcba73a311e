"""telescope.proto.telescope: the `telescope` protobuf package (sources and generated stubs)."""
