"""Kubernetes protobuf request bodies, as kubectl 1.32's typed commands sent them
(captured with ``kubectl -v=9``), read into Kubernetes JSON."""

from __future__ import annotations

import pytest

from services.apiserver.rest import codec, protobuf
from skiff.api.kinds import lookup

# kubectl create deployment web --image=nginx:1.27 --replicas=0 --port=8080 -n foo2
DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412c2010a230a0377656212001a04"
    "666f6f3222002a003200380042005a0a0a036170701203776562128c010800120c0a0a0a0361707012"
    "037765621a720a1c0a0012001a0022002a003200380042005a0a0a036170701203776562125212340a"
    "056e67696e78120a6e67696e783a312e32372a00320b0a00100018903f22002a0042006a0072008001"
    "00880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a"
    "00280038001a0c0800100018002000280038001a002200")
# kubectl create service nodeport np5 --tcp=81:http --node-port=30085 -n foo2
SERVICE = bytes.fromhex(
    "6b3873000a0d0a02763112075365727669636512710a230a036e703512001a04666f6f3222002a0032"
    "00380042005a0a0a0361707012036e703512460a200a0738312d6874747012035443501851220a0801"
    "10001a04687474702885eb01120a0a0361707012036e70351a0022084e6f6465506f72743a00420052"
    "005a00600068001a020a001a002200")
# kubectl create namespace ns-x
NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d657370616365121c0a140a046e732d7812001a0022002a003200"
    "3800420012001a020a001a002200")


def test_deployment_from_kubectl_create_deployment():
    doc = protobuf.decode(DEPLOYMENT)
    assert doc == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "foo2", "labels": {"app": "web"}},
        "spec": {"replicas": 0,  # a pointer: zero is kept
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{
                                  "name": "nginx", "image": "nginx:1.27",
                                  "ports": [{"containerPort": 8080}]}]}}}}
    assert codec.decode(doc, lookup("Deployment")).spec.replicas == 0


def test_service_with_a_named_target_port_and_node_port():
    doc = protobuf.decode(SERVICE)
    assert doc["spec"] == {"ports": [{"name": "81-http", "protocol": "TCP", "port": 81,
                                      "targetPort": "http", "nodePort": 30085}],
                           "selector": {"app": "np5"}, "type": "NodePort"}
    codec.decode(doc, lookup("Service"))


def test_namespace():
    assert protobuf.decode(NAMESPACE) == {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": "ns-x"}}


def test_refusals_name_the_problem():
    with pytest.raises(protobuf.ProtobufError, match="k8s"):
        protobuf.decode(b"{}")
    with pytest.raises(protobuf.ProtobufError, match="truncated"):
        protobuf.decode(NAMESPACE[:-5])


def test_unknown_field_with_a_value_is_refused():
    with pytest.raises(protobuf.ProtobufError, match="field 12 of PodSpec"):
        protobuf.message("PodSpec", bytes([0x60, 0x01]))
    assert protobuf.message("PodSpec", bytes([0x60, 0x00])) == {}  # empty: Go writes it
