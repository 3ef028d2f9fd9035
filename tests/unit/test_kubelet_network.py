"""The pure decisions of the bridge pod network: link names within IFNAMSIZ, the
routes to other nodes, and which DOCKER-USER entries are Skiff's."""

from __future__ import annotations

from services.kubelet.network_plugin import NodeRoute, plan_node_routes
from skiff.kubelet import podnet


def test_bridge_names_fit_ifnamsiz_and_stay_apart():
    assert podnet.bridge_name("node-1") == "skb-node-1"
    long_a = podnet.bridge_name("a-very-long-node-name-1")
    long_b = podnet.bridge_name("a-very-long-node-name-2")
    assert len(long_a) <= 15 and len(long_b) <= 15 and long_a != long_b
    odd = podnet.bridge_name("Node_1")  # not a plain name: hashed
    assert odd.startswith("skb-") and len(odd) == 15


def test_veth_names_fit_and_follow_the_sandbox():
    host, peer = podnet.veth_names("f" * 64)
    assert len(host) == len(peer) == 15 and host.startswith("skv") and peer.startswith("skp")
    assert podnet.veth_names("f" * 64) == (host, peer)
    assert podnet.veth_names("e" * 64)[0] != host


CONNECTED = ["192.0.2.0/24", "10.244.0.0/24", "10.244.1.0/24"]


def test_routes_go_via_each_other_nodes_internal_ip():
    nodes = [NodeRoute("me", "10.244.0.0/24", "192.0.2.10"),
             NodeRoute("far", "10.244.7.0/24", "192.0.2.11"),
             NodeRoute("farther", "10.244.8.0/24", "192.0.2.12")]
    assert plan_node_routes(nodes, self_name="me", connected=CONNECTED) == {
        "10.244.7.0/24": "192.0.2.11", "10.244.8.0/24": "192.0.2.12"}


def test_routes_are_skipped_where_they_cannot_or_need_not_be():
    nodes = [
        NodeRoute("local-bridge", "10.244.1.0/24", "192.0.2.11"),  # connected already
        NodeRoute("loopback", "10.244.9.0/24", "127.0.1.2"),       # one machine
        NodeRoute("elsewhere", "10.244.10.0/24", "198.51.100.7"),  # not on our L2
        NodeRoute("no-cidr", "", "192.0.2.13"),
        NodeRoute("no-ip", "10.244.11.0/24", ""),
        NodeRoute("garbage", "10.244.12.0/99", "192.0.2.14"),
    ]
    assert plan_node_routes(nodes, self_name="me", connected=CONNECTED) == {}


def test_docker_user_rules_of_a_node_and_of_all():
    listing = "\n".join([
        "-N DOCKER-USER",
        '-A DOCKER-USER -s 10.244.1.0/24 -m comment --comment "skiff node n1" -j ACCEPT',
        '-A DOCKER-USER -d 10.244.1.0/24 -m comment --comment "skiff node n1" -j ACCEPT',
        '-A DOCKER-USER -s 10.244.2.0/24 -m comment --comment "skiff node n2" -j ACCEPT',
        "-A DOCKER-USER -s 10.1.0.0/16 -j ACCEPT",
        "-A DOCKER-USER -j RETURN",
    ])
    mine = podnet.docker_user_rules(listing, "n1")
    assert mine[0] == ["DOCKER-USER", "-s", "10.244.1.0/24", "-m", "comment", "--comment",
                       "skiff node n1", "-j", "ACCEPT"]
    assert len(mine) == 2
    assert len(podnet.docker_user_rules(listing, None)) == 3
