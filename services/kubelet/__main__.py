"""``skiff-kubelet``: the node agent (flags -> config -> run).

Not leader-elected: one kubelet per node, its identity the node name. On SIGTERM the
kubelet stops its loops and leaves the containers running, so a new kubelet adopts
them (a kubelet upgrade restarts no pod).
"""

from __future__ import annotations

import aiodocker

from services.kubelet.config import KubeletConfig, parse_args
from services.kubelet.kubelet import Kubelet
from skiff import metrics
from skiff.client.client import Client
from skiff.daemon import run, until_stopped
from skiff.logging import configure


async def serve(config: KubeletConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    configure("kubelet", config.log_level, node=config.node_name)
    if config.metrics_url:
        metrics.serve(config.metrics_url)
    client = Client(config.servers)
    docker = aiodocker.Docker(url=config.docker_host)
    kubelet = Kubelet(config, client, docker)
    try:
        await until_stopped(kubelet.run(), what="kubelet")
    finally:
        await docker.close()
        await client.close()


def main(argv: list[str] | None = None) -> None:
    run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
