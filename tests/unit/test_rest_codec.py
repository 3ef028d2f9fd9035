"""The REST edge's JSON codec: Kubernetes JSON -> protobuf -> the same JSON, per kind."""

from __future__ import annotations

import copy

import pytest

from services.apiserver.rest import codec
from skiff.api.kinds import KINDS, lookup

META = {"name": "x", "namespace": "ns", "uid": "u-1", "resourceVersion": "12",
        "generation": 3, "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {"a": "1", "b": "2"}, "annotations": {"note": "hi"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                             "uid": "u-0", "controller": True,
                             "blockOwnerDeletion": True}],
        "finalizers": ["f"]}
CLUSTER_META = {k: v for k, v in META.items() if k != "namespace"}
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1",
                                     "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}

SAMPLES = {
    "Namespace": {"metadata": CLUSTER_META, "spec": {"finalizers": ["kubernetes"]},
                  "status": {"phase": "Active"}},
    "Pod": {"metadata": META, "spec": {
        "containers": [{"name": "c", "image": "busybox", "command": ["sh"],
                        "ports": [{"containerPort": 8080, "name": "http",
                                   "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "b"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 5}}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 0,
        "nodeName": "n1", "priority": 0, "enableServiceLinks": False,
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.0.5",
                   "podIPs": [{"ip": "10.244.0.5"}], "qosClass": "Burstable",
                   "startTime": "2024-05-01T10:00:01Z",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2024-05-01T10:00:02Z"}],
                   "containerStatuses": [{"name": "c", "ready": False, "restartCount": 0,
                                          "image": "busybox", "imageID": "",
                                          "lastState": {},
                                          "state": {"terminated": {"exitCode": 0,
                                                                   "reason": "Completed"}},
                                          "started": False}]}},
    "Node": {"metadata": CLUSTER_META, "spec": {"podCIDR": "10.244.1.0/24",
                                                "podCIDRs": ["10.244.1.0/24"],
                                                "taints": [{"key": "k", "effect": "NoSchedule"}]},
             "status": {"capacity": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                        "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b",
                                     "kernelVersion": "6", "osImage": "Debian",
                                     "containerRuntimeVersion": "docker://27",
                                     "kubeletVersion": "v1.32.0-skiff",
                                     "kubeProxyVersion": "", "operatingSystem": "linux",
                                     "architecture": "amd64"},
                        "conditions": [{"type": "Ready", "status": "True"}]}},
    "Service": {"metadata": META, "spec": {
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                   "nodePort": 30080},
                  {"port": 443, "targetPort": "https"}],
        "selector": {"app": "web"}, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "type": "NodePort", "sessionAffinity": "None"},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.112.0.1"}]}}},
    "Endpoints": {"metadata": META, "subsets": [{
        "addresses": [{"ip": "10.244.0.5", "nodeName": "n1",
                       "targetRef": {"kind": "Pod", "name": "p", "namespace": "ns"}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]}]},
    "ReplicationController": {"metadata": META, "spec": {
        "replicas": 0, "selector": {"app": "web"}, "template": TEMPLATE},
        "status": {"replicas": 0, "observedGeneration": 2}},
    "ReplicaSet": {"metadata": META, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"},
                                    "matchExpressions": [{"key": "tier", "operator": "In",
                                                          "values": ["a"]}]},
        "template": TEMPLATE},
        "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}},
    "Deployment": {"metadata": META, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE,
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                   "conditions": [{"type": "Available", "status": "True",
                                   "reason": "MinimumReplicasAvailable",
                                   "lastUpdateTime": "2024-05-01T10:00:00Z"}]}},
    "Event": {"metadata": META, "involvedObject": {"kind": "Pod", "name": "p",
                                                   "namespace": "ns"},
              "reason": "Started", "message": "m", "source": {"component": "kubelet"},
              "count": 2, "type": "Normal", "firstTimestamp": "2024-05-01T10:00:00Z"},
    "Lease": {"metadata": META, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                                         "renewTime": "2024-05-01T10:00:00.123456Z",
                                         "leaseTransitions": 0}},
    "ConfigMap": {"metadata": META, "data": {"a.conf": "x=1"},
                  "binaryData": {"blob": "AAEC"}, "immutable": True},
    "Secret": {"metadata": META, "type": "kubernetes.io/tls",
               "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}},
    "ServiceAccount": {"metadata": META, "secrets": [{"name": "token"}],
                       "imagePullSecrets": [{"name": "registry"}],
                       "automountServiceAccountToken": False},
}


def test_every_kind_has_a_sample():
    assert {k.kind for k in KINDS} == set(SAMPLES)


@pytest.mark.parametrize("kind_name", sorted(SAMPLES))
def test_round_trip_is_kubernetes_json(kind_name):
    kind = lookup(kind_name)
    doc = {"apiVersion": kind.api_version, "kind": kind.kind, **copy.deepcopy(SAMPLES[kind_name])}
    obj = codec.decode(doc, kind)
    assert codec.encode(obj, kind) == doc
    assert list(codec.encode(obj, kind))[:2] == ["apiVersion", "kind"]


def test_kind_and_api_version_default_from_the_path():
    kind = lookup("Pod")
    obj = codec.decode({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
                       kind)
    assert obj.metadata.name == "p"
    assert codec.encode(obj, kind)["kind"] == "Pod"


def test_unknown_field_is_named():
    with pytest.raises(codec.DecodeError, match=r'unknown field "spec.containers\[0\].imagee"'):
        codec.decode({"metadata": {"name": "p"},
                      "spec": {"containers": [{"name": "c", "imagee": "x"}]}}, lookup("Pod"))


def test_wrong_type_and_wrong_kind_are_named():
    with pytest.raises(codec.DecodeError, match=r"spec\.replicas: expected an integer"):
        codec.decode({"metadata": {"name": "d"}, "spec": {"replicas": "two"}},
                     lookup("Deployment"))
    with pytest.raises(codec.DecodeError, match="kind"):
        codec.decode({"kind": "Service", "metadata": {"name": "d"}}, lookup("Pod"))
    with pytest.raises(codec.DecodeError):
        codec.decode(["not", "an", "object"], lookup("Pod"))


def test_fields_kubernetes_always_writes_are_present():
    kind = lookup("Pod")
    obj = codec.decode({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
                        "status": {"containerStatuses": [{"name": "c"}]}}, kind)
    status = codec.encode(obj, kind)["status"]["containerStatuses"][0]
    assert status == {"name": "c", "ready": False, "restartCount": 0, "image": "",
                      "imageID": "", "state": {}, "lastState": {}}


def test_a_list_keeps_empty_items_and_metadata():
    kind = lookup("Pod")
    empty = kind.list_message()
    empty.metadata.resource_version = "7"
    assert codec.encode_list(empty, kind) == {"apiVersion": "v1", "kind": "PodList",
                                              "metadata": {"resourceVersion": "7"},
                                              "items": []}
    empty.metadata.continue_token = "abc"
    empty.metadata.remaining_item_count = 5
    assert codec.encode_list(empty, kind)["metadata"] == {
        "resourceVersion": "7", "continue": "abc", "remainingItemCount": 5}


def test_structs_kubernetes_always_writes_are_present_even_empty():
    kind = lookup("ReplicaSet")
    obj = codec.decode({"metadata": {"name": "r"}}, kind)
    body = codec.encode(obj, kind)
    assert body["status"] == {"replicas": 0}
    assert body["spec"] == {"template": {"metadata": {}, "spec": {"containers": []}}}
    node = codec.encode(codec.decode({"metadata": {"name": "n"}}, lookup("Node")),
                        lookup("Node"))
    assert node["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 0}}
    assert node["status"]["nodeInfo"]["kubeletVersion"] == ""
    endpoints = codec.encode(codec.decode({"metadata": {"name": "e"}}, lookup("Endpoints")),
                             lookup("Endpoints"))
    assert endpoints == {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"}}


def test_json_bytes_equal_the_documents_and_lists_join_them():
    import json

    kind = lookup("Pod")
    result = kind.list_message()
    result.metadata.resource_version = "9"
    for i in range(3):
        obj = codec.decode({"metadata": {"name": f"p{i}", "resourceVersion": str(i + 1)},
                            "spec": {"containers": [{"name": "c"}]}}, kind)
        result.items.append(obj)
    assert json.loads(codec.encode_list_json(result, kind)) == codec.encode_list(result, kind)
    first = result.items[0]
    assert codec.encode_json(first, kind) is codec.encode_json(first, kind)  # cached
    empty = kind.list_message()
    assert json.loads(codec.encode_list_json(empty, kind))["items"] == []
