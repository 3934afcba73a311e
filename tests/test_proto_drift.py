"""The committed gRPC stubs are what `make proto` generates from the committed .proto files."""

from __future__ import annotations

from telescope.proto.build import GENERATED_SUFFIXES, PACKAGE_DIR, PROTO_ROOT, generate


def test_stubs_match_the_proto_sources(tmp_path):
    fresh = {f.name: f.read_text() for f in generate(tmp_path)}
    committed = {
        f.name: f.read_text() for f in (PROTO_ROOT / PACKAGE_DIR).iterdir() if f.name.endswith(GENERATED_SUFFIXES)
    }
    assert sorted(fresh) == sorted(committed), "stub files differ from the .proto sources: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated stubs {stale}: run `make proto` and commit the result"


def test_stubs_import_inside_the_telescope_package():
    from telescope.proto.telescope.v1 import collections_pb2_grpc, embed_pb2_grpc, points_pb2_grpc, search_pb2_grpc

    names = [m.__name__ for m in (collections_pb2_grpc, embed_pb2_grpc, points_pb2_grpc, search_pb2_grpc)]
    assert all(n.startswith("telescope.proto.telescope.v1.") for n in names)
