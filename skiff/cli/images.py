"""``skiff images build``: build the images every Skiff cluster needs, locally.

No image registry is assumed: ``skiff/pause`` (every pod's sandbox) and
``skiff/busybox`` (a small image for examples and tests) are built through the local
Docker engine from Debian's busybox, tagged with Skiff's version and ``latest``
(:mod:`skiff.kubelet.images` has the recipe). A starting kubelet builds them too when
they are missing or stale; this command (re)builds them on demand.
"""

from __future__ import annotations

import argparse
import asyncio


async def build(*, force: bool = False, docker_host: str | None = None) -> list[str]:
    """Build the local images (all of them with ``force``, else the missing or stale
    ones); the tags built. ``skiff up`` calls it before any kubelet starts."""
    # Imported here: aiodocker (and aiohttp) cost ~0.2 s, which other commands skip.
    import aiodocker

    from skiff.kubelet.images import build_local_images

    docker = aiodocker.Docker(url=docker_host)
    try:
        return await build_local_images(docker, force=force)
    finally:
        await docker.close()


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``images build`` to the ``skiff`` command's subcommands."""
    parser = commands.add_parser("images", help="the cluster's local images")
    actions = parser.add_subparsers(dest="images_command", required=True)
    build = actions.add_parser("build", help="build skiff/pause and skiff/busybox from "
                                             "Debian's busybox")
    build.add_argument("--missing-only", dest="force", action="store_false",
                       help="only build images that are missing or stale (default: rebuild)")
    build.add_argument("--docker-host", default=None,
                       help="Docker's API address (default $DOCKER_HOST or the local socket)")


def run(args: argparse.Namespace) -> int:
    """Run ``skiff images ...``; the exit status."""
    try:
        built = asyncio.run(build(force=args.force, docker_host=args.docker_host))
    except Exception as e:  # a CLI reports what went wrong instead of a traceback
        print(f"skiff images build: {e}")
        return 1
    print("built: " + ", ".join(built) if built else "all images are present and current")
    return 0
