"""Regenerate every ``*_pb2.py`` (and ``.pyi``) from the ``.proto`` files under ``mycel/``.

Run with ``make proto``. Each ``foo.proto`` produces ``foo_pb2.py`` next to it; the generated modules
are committed so that installing mycel needs no protobuf compiler.
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    protos = sorted((ROOT / "mycel").rglob("*.proto"))
    for proto in protos:
        args = [
            "protoc",
            f"-I{proto.parent}",
            f"--python_out={proto.parent}",
            f"--pyi_out={proto.parent}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
        print(f"generated {proto.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
