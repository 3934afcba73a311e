"""Regenerate the Python stubs of the gRPC API from ``proto/telescope/v1/*.proto``: ``make proto``.

grpcio-tools' ``protoc`` writes imports as the ``.proto`` package says (``from telescope.v1 import ...``); the
stubs live inside the ``telescope.proto`` package, so those imports are rewritten to
``from telescope.proto.telescope.v1 import ...``. ``tests/test_proto_drift.py`` regenerates into a temporary
folder and fails when the committed stubs differ.

Run: ``python -m telescope.proto.build`` (writes beside the ``.proto`` files) or ``generate(out_dir)``.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = Path("telescope") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_IMPORT = re.compile(r"^from telescope\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    """The ``.proto`` sources, relative to the proto root."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every source into ``out_dir`` (same layout as the sources); returns the files written."""
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    (out_dir / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto shipped with grpcio-tools
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = sorted(f for f in (out_dir / PACKAGE_DIR).iterdir() if f.name.endswith(GENERATED_SUFFIXES))
    for file in written:
        file.write_text(_IMPORT.sub("from telescope.proto.telescope.v1 import ", file.read_text()))
    return written


def main() -> None:
    """Regenerate in place: stale stubs are replaced, stubs of removed sources deleted."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {f.name: f for f in generate(Path(tmp))}
        target = PROTO_ROOT / PACKAGE_DIR
        for old in target.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES) and old.name not in fresh:
                old.unlink()
        for name, file in fresh.items():
            shutil.copyfile(file, target / name)
    print(f"generated {len(fresh)} files in {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
