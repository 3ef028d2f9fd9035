"""``skiff images build``: build the images every Skiff cluster needs, locally.

No image registry is assumed: ``skiff/pause`` (every pod's sandbox) and
``skiff/busybox`` (a small image for examples and tests) are built through the local
Docker engine from the host's static busybox (Debian's ``busybox-static``). A starting
kubelet builds them too when they are missing; this command (re)builds them on demand.

The recipe lives with the kubelet (``services.kubelet.images``), which owns these
images; this command is the operator's way in and imports it only when run, as
``skiff up`` starts the services by module name.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib


async def build(*, force: bool = False, docker_host: str | None = None) -> list[str]:
    """Build the local images (all of them with ``force``, else the missing ones);
    the tags built. ``skiff up`` calls it before any kubelet starts."""
    import aiodocker

    images = importlib.import_module("services.kubelet.images")
    docker = aiodocker.Docker(url=docker_host)
    try:
        return await images.build_local_images(docker, force=force)  # type: ignore[no-any-return]
    finally:
        await docker.close()


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``images build`` to the ``skiff`` command's subcommands."""
    images = commands.add_parser("images", help="the cluster's local images")
    actions = images.add_subparsers(dest="images_command", required=True)
    build = actions.add_parser("build", help="build skiff/pause and skiff/busybox from the "
                                             "host's busybox")
    build.add_argument("--missing-only", dest="force", action="store_false",
                       help="only build images that are not there yet (default: rebuild)")
    build.add_argument("--docker-host", default=None,
                       help="Docker's API address (default $DOCKER_HOST or the local socket)")


def run(args: argparse.Namespace) -> int:
    """Run ``skiff images ...``; the exit status."""
    try:
        built = asyncio.run(build(force=args.force, docker_host=args.docker_host))
    except Exception as e:  # a CLI reports what went wrong instead of a traceback
        print(f"skiff images build: {e}")
        return 1
    print("built: " + ", ".join(built) if built else "all images are present")
    return 0
