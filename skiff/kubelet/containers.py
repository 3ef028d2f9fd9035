"""A node's Docker containers and pod network, as the kubelet names them: what
``skiff down``, the chaos run and tests need to find and remove what a kubelet made.

A kubelet leaves its containers running when it stops, on purpose: the kubelet that
starts after it adopts them by their labels (:mod:`skiff.kubelet.labels`). When the node
itself goes away, :func:`remove_node` clears them.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

import aiodocker

from skiff.kubelet import labels


def network_name(node: str) -> str:
    """The Docker bridge network of ``node``'s pods (the kubelet's default)."""
    return f"skiff-{node}"


async def remove_container(docker: aiodocker.Docker, container_id: str) -> None:
    """Remove one container, running or not; one already gone (or going) is no error."""
    try:
        await docker.containers.container(container_id).delete(force=True, v=True)
    except aiodocker.DockerError as e:
        # 409: its removal is already in progress.
        if e.status not in (HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT):
            raise


async def remove_node(docker: aiodocker.Docker, node: str, *,
                      network: str | None = None) -> int:
    """Remove every container of ``node`` and its pod network (``network``, default
    :func:`network_name`). Returns how many containers were removed."""
    listed = await docker.containers.list(
        all=True, filters=json.dumps(labels.node_filter(node)))
    await asyncio.gather(*(remove_container(docker, c.id) for c in listed))
    try:
        await (await docker.networks.get(network or network_name(node))).delete()
    except aiodocker.DockerError as e:
        if e.status != HTTPStatus.NOT_FOUND:
            raise
    return len(listed)
