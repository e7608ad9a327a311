"""Build hook: generates the gRPC stubs of hgrn2.v1 from the repository's proto/ at build time.

The .proto files are read from ``proto/`` beside this file when present (an sdist carries them
there) or else from ``../../proto`` (a checkout of hgrn2-serve). They are copied under
``hgrn2_client/_proto/`` before protoc runs so that the generated modules import each other as
``hgrn2_client._proto.*`` instead of a top-level ``hgrn2`` package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PROTOS = ("hgrn2/v1/inference.proto", "hgrn2/v1/sessions.proto")


def proto_root() -> Path:
    """The folder holding hgrn2/v1/*.proto: the sdist's copy, else the repository's."""
    for root in (HERE / "proto", HERE.parent.parent / "proto"):
        if all((root / p).is_file() for p in PROTOS):
            return root
    raise RuntimeError(f"hgrn2-client: {PROTOS} not found under {HERE}/proto or ../../proto")


def generate_stubs(out_dir: Path) -> None:
    """Runs grpc_tools.protoc on the protos, writing hgrn2_client/_proto/*_pb2*.py under out_dir."""
    from grpc_tools import protoc  # a build requirement, imported only when building

    root = proto_root()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "hgrn2_client" / "_proto"
        staged.mkdir(parents=True)
        for p in PROTOS:
            shutil.copy(root / p, staged / Path(p).name)
        include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
        target = out_dir / "hgrn2_client" / "_proto"
        target.mkdir(parents=True, exist_ok=True)
        for p in PROTOS:
            args = [
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"-I{include}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                f"hgrn2_client/_proto/{Path(p).name}",
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"hgrn2-client: protoc failed on {p}")
        (target / "__init__.py").write_text('"""Generated gRPC stubs of hgrn2.v1 (do not edit)."""\n')


class BuildPyWithStubs(build_py):
    """build_py that also writes the generated stubs into the build tree (and, editable, the source)."""

    def run(self) -> None:
        super().run()
        generate_stubs(Path(self.build_lib))
        if self.editable_mode:
            generate_stubs(HERE)


class SdistWithProtos(sdist):
    """sdist that carries the .proto files, so that the sdist builds without the repository."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = proto_root()
        for p in PROTOS:
            dest = Path(base_dir) / "proto" / p
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / p, dest)


def runtime_requirements() -> list[str]:
    """grpcio and protobuf no older than the generator: newer stubs check the runtime's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tools = version("grpcio-tools")
        return [f"grpcio>={tools}", f"grpcio-health-checking>={tools}", f"protobuf>={version('protobuf')}"]
    except PackageNotFoundError:  # a metadata-only step without the build requirements
        return ["grpcio>=1.51", "grpcio-health-checking>=1.51", "protobuf>=4.21"]


setup(
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos},
    install_requires=runtime_requirements(),
)
