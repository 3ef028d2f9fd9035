"""The kubelet: runs the pods bound to its node through Docker and reports on them.

What it watches: pods with ``spec.nodeName=<node>`` (one informer), every Service (an
informer read when a container is made, for its Service environment variables:
:mod:`~services.kubelet.envvars`), every ConfigMap and Secret (informers read for env
``valueFrom``/``envFrom``: :mod:`~services.kubelet.env_sources`; a change retries the
pods waiting with CreateContainerConfigError in its namespace), and Docker's event
stream of this node's containers (re-subscribed whenever it ends: dockerd restarted).
Each pod's resolv.conf (:mod:`~services.kubelet.dns`) is written into its directory
under ``--root-dir`` (:mod:`~services.kubelet.pod_dirs`) when its sandbox is made.
What it reconciles: for each pod, the containers Docker runs against the pod's spec
(``sync_pod``), through :class:`~services.kubelet.pod_workers.PodWorkers` (one worker
per pod, pods in parallel). Every ``sync_frequency`` seconds every pod the API or
Docker knows of is synced again (the relist), so nothing depends on an event arriving.

``sync_pod(uid)`` is level-triggered and reads top to bottom:

1. what runs: the pod's containers found in Docker by label (no local state: a
   restarted kubelet adopts what it finds instead of restarting pods);
2. the pod gone from the API (or never known): its containers are stopped and
   removed; the pod marked for deletion: graceful termination (SIGTERM, the grace
   period, SIGKILL), containers removed, then the deletion finished (Delete with grace
   0 and the uid precondition); the pod finished (Succeeded/Failed): nothing restarts;
3. otherwise plan with :func:`~services.kubelet.pod_actions.compute_pod_actions`
   (pure), act (sandbox, image pull policy and back-off, crash back-off, create and
   start), and post the status :func:`~services.kubelet.status.compute_pod_status`
   computes (pure) when it differs from the last one posted.

Beside the sync: probes (:mod:`~services.kubelet.probes`, whose results flip trigger a
pod sync), the kubelet API (:mod:`~services.kubelet.server`) and the container and
image garbage collectors, started by :meth:`Kubelet.node_services`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import aiodocker
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.kubelet import container_gc, dns, env_sources, envvars, metrics, server
from services.kubelet.backoff import Backoff
from services.kubelet.config import KubeletConfig
from services.kubelet.image_gc import ImageGCManager
from services.kubelet.images import ERR_IMAGE_PULL, ImageError, ImageManager
from services.kubelet.network_plugin import NetworkPlugin, make_plugin
from services.kubelet.node_status import (
    HostFigures,
    NodeStatusManager,
    allocatable,
    disk_figures,
    host_memory,
)
from services.kubelet.pod_actions import PodActions, compute_pod_actions
from services.kubelet.pod_dirs import PodDirs
from services.kubelet.pod_workers import PodWorkers
from services.kubelet.probe_results import ProbeManagerFactory, ProbeResults
from services.kubelet.probes import ProbeManager
from services.kubelet.runtime import (
    EXITED,
    ContainerRef,
    ContainerRuntime,
    DockerRuntime,
    PodContainers,
    RuntimeContainer,
)
from services.kubelet.status import (
    CRASH_LOOP_BACK_OFF,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Waiting,
    compute_pod_status,
)
from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client, retrying
from skiff.client.events import NORMAL, WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import NAMESPACE_INDEX
from skiff.kubelet.images import build_local_images
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("skiff.kubelet")

#: How the probe manager is made (tests of the sync loop alone may pass NoProbes).
PROBE_MANAGER_FACTORY: ProbeManagerFactory = ProbeManager
#: Kubernetes' floor on a kill's grace period (``minimumGracePeriodInSeconds``).
MIN_GRACE_SECONDS = 2
#: How long the pod informer gets to list before the kubelet gives up starting.
SYNC_TIMEOUT = 120.0
#: Pause between Docker event-stream subscriptions when it keeps failing.
EVENTS_RETRY = 1.0
#: How soon a pod whose image pull just failed is looked at again (ImagePullBackOff).
PULL_FAILURE_RECHECK = 1.0
_TERMINAL = (SUCCEEDED, FAILED)


def _now() -> float:
    return time.time()


def _only_status_changed(old: core_pb2.Pod, new: core_pb2.Pod) -> bool:
    """Whether ``new`` differs from ``old`` in its status and resource version alone."""
    if old.spec != new.spec:
        return False
    old_meta, new_meta = meta_pb2.ObjectMeta(), meta_pb2.ObjectMeta()
    old_meta.CopyFrom(old.metadata)
    new_meta.CopyFrom(new.metadata)
    old_meta.ClearField("resource_version")
    new_meta.ClearField("resource_version")
    return old_meta == new_meta


def _now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class Kubelet:
    """One node's kubelet (see the module)."""

    def __init__(self, config: KubeletConfig, client: Client, docker: aiodocker.Docker,
                 *, probe_manager: ProbeManagerFactory | None = None) -> None:
        self.config = config
        self.client = client
        self.docker = docker
        self.node = config.node_name
        self.network: NetworkPlugin = make_plugin(
            config.network_plugin, docker=docker, node=self.node, network=config.network,
            root_dir=Path(config.state_dir), cluster_cidr=config.cluster_cidr)
        self.runtime: ContainerRuntime = DockerRuntime(docker, node=self.node,
                                                       network=self.network)
        self.crash_backoff = Backoff(config.crash_backoff_initial, config.crash_backoff_max,
                                     config.crash_backoff_reset)
        self.images = ImageManager(
            docker, Backoff(config.image_pull_backoff_initial, config.image_pull_backoff_max,
                            config.crash_backoff_reset), clock=_now)
        self.recorder = EventRecorder(client, "kubelet", host=self.node)
        self.node_status = NodeStatusManager(client, config,
                                             runtime_version=self.runtime.version,
                                             figures=self.host_figures)
        self.factory = SharedInformerFactory(client)
        self.pods = self.factory.informer("pods", field_selector=f"spec.nodeName={self.node}")
        self._pod_handlers = self.pods.add_handler(self._on_add, self._on_update,
                                                   self._on_delete)
        #: Every Service, for the pods' Service environment variables (read when a
        #: container is created, as Kubernetes' kubelet reads its Service lister).
        self.services = self.factory.informer("services")
        #: ConfigMaps and Secrets, for env valueFrom/envFrom (read when a container is
        #: made; a change retries the pods waiting on one of their namespace).
        self.config_maps = self.factory.informer("configmaps")
        self.secrets = self.factory.informer("secrets")
        for informer in (self.config_maps, self.secrets):
            informer.add_handler(self._on_config, lambda old, new: self._on_config(new), None,
                                 name="kubelet-config")
        #: Pods with a container waiting on a missing ConfigMap/Secret: uid -> namespace.
        self._config_waiting: dict[str, str] = {}
        self.pod_dirs = PodDirs(config.state_dir)
        #: Nodes, for the routes to the other nodes' pods (the bridge plugin's).
        self._nodes_changed = asyncio.Event()
        self.nodes = None
        if self.network.plumbs_sandbox:
            self.nodes = self.factory.informer("nodes")
            self.nodes.add_handler(lambda n: self._nodes_changed.set(),
                                   lambda o, n: self._nodes_changed.set(),
                                   lambda n: self._nodes_changed.set())
        self.pod_cidr = config.pod_cidr
        #: Pods bound here by uid (kept by the handlers; the informer keys by name).
        self._by_uid: dict[str, core_pb2.Pod] = {}
        #: Grace periods of pods deleted from the API, for killing what they left.
        self._deleted_grace: dict[str, int] = {}
        #: The status last posted per pod: compared with, and the base of, the next one.
        self._statuses: dict[str, core_pb2.PodStatus] = {}
        self.workers = PodWorkers(self.sync_pod, max_parallel=config.max_parallel_pod_syncs)
        self.probes: ProbeResults = (probe_manager or PROBE_MANAGER_FACTORY)(
            docker, self.request_sync)
        self._log = log.bind(node=self.node)
        self._docker_root = "/"

    # ------------------------------------------------------------ handlers

    def _on_add(self, pod: core_pb2.Pod) -> None:
        self._by_uid[pod.metadata.uid] = pod
        self.workers.update(pod.metadata.uid)

    def _on_update(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if _only_status_changed(old, new):
            # Mostly this kubelet's own status write coming back. Like Kubernetes'
            # kubelet, do not sync on it: a sync now would replace a reason just
            # reported (ErrImagePull) before anyone could see it.
            self._by_uid[new.metadata.uid] = new
            return
        self._on_add(new)

    def _on_delete(self, pod: core_pb2.Pod) -> None:
        uid = pod.metadata.uid
        self._by_uid.pop(uid, None)
        md = pod.metadata
        self._deleted_grace[uid] = (md.deletion_grace_period_seconds
                                    if md.HasField("deletion_grace_period_seconds")
                                    else pod.spec.termination_grace_period_seconds)
        self.workers.update(uid)

    def _on_config(self, obj: Message) -> None:
        """A ConfigMap or Secret came or changed: retry the pods waiting in its namespace."""
        namespace = obj.metadata.namespace  # type: ignore[attr-defined]
        for uid, waiting_in in list(self._config_waiting.items()):
            if waiting_in == namespace:
                self.workers.update(uid)

    def _config_sources(self, container: core_pb2.Container) -> env_sources.Sources:
        """ConfigMaps and Secrets as the informers have them; the node's allocatable
        when the container reads a resource (what an unset limit reads as)."""
        reads_resources = any(v.value_from.HasField("resource_field_ref")
                               for v in container.env)
        return env_sources.Sources(
            config_map=lambda ns, name: cast(core_pb2.ConfigMap | None,
                                             self.config_maps.store.get(f"{ns}/{name}")),
            secret=lambda ns, name: cast(core_pb2.Secret | None,
                                         self.secrets.store.get(f"{ns}/{name}")),
            allocatable=allocatable(self.node_status.capacity(), self.config.system_reserved)
            if reads_resources else {})

    def request_sync(self, uid: str) -> None:
        """Sync the pod ``uid`` soon (what the probe manager calls when a result flips)."""
        self.workers.update(uid)

    def pod(self, uid: str) -> core_pb2.Pod | None:
        """The pod bound here with this uid, as last seen (for the kubelet API)."""
        return self._by_uid.get(uid)

    # ----------------------------------------------------------------- life

    async def start(self) -> None:
        """Images, the pod network, the Node; then the pod informer, synced."""
        if self.config.build_images:
            built = await build_local_images(self.docker)
            if built:
                self._log.info("built the local images", images=built)
        with contextlib.suppress(Exception):
            self._docker_root = (await self.runtime.info()).get("DockerRootDir") or "/"
        node = await retrying(self.node_status.register, deadline=SYNC_TIMEOUT)
        # The Node's podCIDR rules (the controller-manager's, or ours at registration).
        self.pod_cidr = node.spec.pod_cidr or self.config.pod_cidr
        if self.pod_cidr != self.config.pod_cidr:
            self._log.warning("the Node's podCIDR differs from --pod-cidr; using the Node's",
                              node_pod_cidr=self.pod_cidr, flag=self.config.pod_cidr)
        await self.network.startup(self.pod_cidr)
        # Adopt: what sandboxes that are gone held is released before any pod syncs.
        listed_at = _now()
        await self.network.reconcile(await self.runtime.running_sandboxes(),
                                     before=listed_at)
        await self.factory.start_all()
        if not await self._pod_handlers.wait_synced(SYNC_TIMEOUT):
            raise RuntimeError("the pod informer did not sync")
        # A container started before the Services are known would miss their variables.
        if not await self.services.wait_synced(SYNC_TIMEOUT):
            raise RuntimeError("the service informer did not sync")
        for informer in (self.config_maps, self.secrets):
            if not await informer.wait_synced(SYNC_TIMEOUT):
                raise RuntimeError(f"the {informer.name} informer did not sync")
        if not self.config.cluster_dns:
            self._log.warning("no --cluster-dns: ClusterFirst pods get the Default policy")
        self._log.info("started", pods=len(self._by_uid), pod_cidr=self.pod_cidr,
                       network_plugin=self.config.network_plugin)

    def node_services(self) -> list[Coroutine[Any, Any, None]]:
        """Long-running parts started with the kubelet besides its own loops: the
        kubelet API and the container and image garbage collectors."""
        images = ImageGCManager(self.docker, self.config.image_gc)
        return [
            self._serve_api(),
            container_gc.run(self.docker, self.node, self.config.container_gc,
                             self._active_pod_uids, period=self.config.container_gc_period),
            images.run(period=self.config.image_gc_period),
        ]

    def _active_pod_uids(self) -> set[str] | None:
        """The pods bound here, or None until the informer has listed them all (GC
        must not take "none known yet" for "none exist")."""
        return set(self._by_uid) if self._pod_handlers.has_synced else None

    def _lookup(self, namespace: str, name: str) -> core_pb2.Pod | None:
        return self.pods.store.get_by(namespace, name)

    async def _serve_api(self) -> None:
        api = await server.serve(self.docker, self.node, self._lookup,
                                 address=f"{self.config.address}:{self.config.port}")
        try:
            await asyncio.Event().wait()  # serves until cancelled
        finally:
            await api.stop()

    async def run(self) -> None:
        """Start, then run every loop until cancelled; containers keep running after."""
        await self.start()
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "node-lease": self.node_status.run_lease(),
            "node-status": self.node_status.run_status(),
            "relist": self.relist_loop(),
            "docker-events": self.docker_events_loop(),
        }
        if self.nodes is not None:
            loops["node-routes"] = self.routes_loop()
        for i, service in enumerate(self.node_services()):
            loops[f"node-service-{i}"] = service
        tasks = [spawn(coro, name=f"kubelet {name}") for name, coro in loops.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a loop that died takes the kubelet down: supervisor restarts
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.workers.stop()
            await self.probes.stop()
            await self.factory.stop_all()
            await self.recorder.flush(1.0)
            if self.config.network_cleanup_on_exit:
                await self.network.cleanup()

    # ----------------------------------------------------------- the loops

    async def relist(self) -> None:
        """Sync every pod the API or Docker knows of (adoption and orphan clean-up)."""
        listed_at = _now()
        uids = set(self._by_uid) | await self.runtime.pod_uids()
        for uid in uids:
            self.workers.update(uid)
        if self._pod_handlers.has_synced:
            await self._remove_orphan_dirs(uids)
        metrics.RUNNING_PODS.set(len(self._by_uid))
        # Sandboxes that died or were removed behind the kubelet's back (container GC,
        # docker rm) release their addresses here.
        await self.network.reconcile(await self.runtime.running_sandboxes(),
                                     before=listed_at)

    async def relist_loop(self) -> None:
        while True:
            try:
                await self.relist()
            except aiodocker.DockerError as e:
                self._log.warning("relist failed", error=str(e))
            except OSError as e:  # dockerd away
                self._log.warning("relist failed: docker unreachable", error=repr(e))
            self.crash_backoff.garbage_collect(_now())
            await asyncio.sleep(self.config.sync_frequency)

    async def routes_loop(self) -> None:
        """Routes to the other nodes' podCIDRs, kept from the Nodes informer; looked at
        again every ``sync_frequency`` too (a route someone removed comes back)."""
        assert self.nodes is not None
        while True:
            self._nodes_changed.clear()
            try:
                await self.network.sync_routes(self.nodes.store.list())
            except Exception as e:  # netlink refused one: logged, tried again
                self._log.warning("syncing the node routes failed", error=repr(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nodes_changed.wait(), self.config.sync_frequency)

    async def docker_events_loop(self) -> None:
        """Docker's container events -> pod syncs; re-subscribed when the stream ends."""
        while True:
            try:
                async for uid in self.runtime.events():
                    self.workers.update(uid)
                self._log.info("docker event stream ended; subscribing again")
            except (TimeoutError, aiodocker.DockerError, OSError) as e:
                self._log.warning("docker event stream failed", error=repr(e))
            except Exception as e:  # aiohttp's errors: the stream broke
                self._log.warning("docker event stream broke", error=repr(e))
            await asyncio.sleep(EVENTS_RETRY)
            # Events may have been missed while unsubscribed: look at everything.
            with contextlib.suppress(Exception):
                await self.relist()

    async def host_figures(self) -> HostFigures:
        _, memory_available = host_memory()
        try:
            available, total = disk_figures(self._docker_root)
        except OSError:
            available, total = disk_figures("/")
        try:
            await self.docker.system.info()
            up, error = True, ""
        except Exception as e:
            up, error = False, repr(e)
        return HostFigures(memory_available, available, total, up, error)

    # ------------------------------------------------------------ the sync

    async def sync_pod(self, uid: str) -> float | None:
        """Make what runs for pod ``uid`` match the pod (see the module); returns
        when to look again, if something is due (a back-off ending)."""
        started = time.monotonic()
        pod = self._by_uid.get(uid)
        observed = await self.runtime.pod(uid)
        if pod is None:
            if observed.all:
                await self._remove_orphan(uid, observed)
            await asyncio.to_thread(self.pod_dirs.remove, uid)
            self._forget(uid)
            return None
        if pod.metadata.HasField("deletion_timestamp"):
            await self._terminate(pod, observed)
            return None
        if pod.status.phase in _TERMINAL:
            # A finished pod never runs again; make sure nothing of it does.
            if observed.running:
                await self._kill(pod, observed.running, self._grace(pod))
            return None
        actions = compute_pod_actions(
            pod, observed, liveness_failed=lambda name: self.probes.liveness_failed(uid, name))
        waiting: dict[str, Waiting] = {}
        again: float | None = None
        if not actions.empty:
            waiting, again = await self._apply(pod, observed, actions)
            observed = await self.runtime.pod(uid)
        self.probes.update_pod(_with_pod_ip(pod, observed), _running_refs(pod, observed))
        status = compute_pod_status(
            pod, observed, waiting=waiting, previous=self._statuses.get(uid),
            ready=lambda name: self.probes.ready(uid, name),
            started=lambda name: self.probes.started(uid, name),
            host_ip=self.config.address, now=_now_ts())
        if status.phase in _TERMINAL and observed.running:
            # The containers are done: release the sandbox (and the pod's IP).
            await self._kill(pod, observed.running, self._grace(pod))
        await self._post_status(pod, status)
        if actions.start:
            metrics.SYNC_SECONDS.observe(time.monotonic() - started)
        return again

    async def _apply(self, pod: core_pb2.Pod, observed: PodContainers, actions: PodActions
                     ) -> tuple[dict[str, Waiting], float | None]:
        """Carry out a plan; returns waiting reasons and when to look again."""
        grace = self._grace(pod)
        if actions.kill_pod:
            await self._kill(pod, observed.running, grace)
        if actions.kill:
            by_id = {c.id: c for c in observed.all}
            await asyncio.gather(*(
                self._kill_one(pod, by_id[cid], grace, why) for cid, (_, why)
                in actions.kill.items()))
        sandbox = observed.sandbox
        sandbox_id = sandbox.id if sandbox is not None else ""
        if actions.create_sandbox:
            for old in observed.sandboxes:
                await self.runtime.remove(old.id)
            resolv_conf = await self._write_resolv_conf(pod, record=True)
            try:
                created = await self.runtime.create_sandbox(pod, attempt=actions.sandbox_attempt,
                                                            resolv_conf=resolv_conf)
            except aiodocker.DockerError as e:
                self.recorder.event(pod, WARNING, "FailedCreatePodSandBox",
                                    f"Failed to create pod sandbox: {e.message}")
                raise
            sandbox_id, pod_ip = created.id, created.ip
        else:
            pod_ip = sandbox.ip if sandbox is not None else ""
        env_pod = self._pod_for_env(pod, pod_ip)
        results = await asyncio.gather(*(
            self._start_container(env_pod, name, count, observed.latest(name), sandbox_id)
            for name, count in actions.start.items()))
        waiting: dict[str, Waiting] = {}
        again: float | None = None
        for name, (wait, after) in zip(actions.start, results, strict=True):
            if wait is not None:
                waiting[name] = wait
            if after is not None:
                again = after if again is None else min(again, after)
        return waiting, again

    async def _start_container(self, pod: core_pb2.Pod, name: str, restart_count: int,
                               latest: RuntimeContainer | None, sandbox_id: str
                               ) -> tuple[Waiting | None, float | None]:
        """Start one container unless its crash back-off or its image says wait."""
        uid = pod.metadata.uid
        container = next(c for c in pod.spec.containers if c.name == name)
        key = f"{uid}/{name}"
        now = _now()
        if latest is not None and latest.state == EXITED and latest.finished_at:
            if self.crash_backoff.in_backoff(key, now, since=latest.finished_at):
                remaining = self.crash_backoff.remaining(key, now, since=latest.finished_at)
                delay = self.crash_backoff.delay(key)
                self.recorder.event(pod, WARNING, "BackOff",
                                    "Back-off restarting failed container")
                return Waiting(CRASH_LOOP_BACK_OFF,
                               f"back-off {delay:g}s restarting failed container={name} "
                               f"pod={pod.metadata.name}_{pod.metadata.namespace}({uid})"
                               ), remaining + 0.05
            self.crash_backoff.next(key, latest.finished_at)
        try:
            await self.images.ensure(container.image, container.image_pull_policy,
                                     on_pulling=lambda: self.recorder.event(
                                         pod, NORMAL, "Pulling",
                                         f'Pulling image "{container.image}"'))
        except ImageError as e:
            return self._image_failed(pod, container, e)
        resolv_conf = str(self.pod_dirs.resolv_conf(uid))
        if not await asyncio.to_thread(os.path.exists, resolv_conf):
            # Written with the sandbox; gone only if the root dir was wiped since.
            resolv_conf = await self._write_resolv_conf(pod, record=False)
        try:
            env, container = self._container_config(pod, container)
        except env_sources.ConfigError as e:
            self._config_waiting[uid] = pod.metadata.namespace
            self.recorder.event(pod, WARNING, "Failed", f"Error: {e}")
            return Waiting(env_sources.CREATE_CONTAINER_CONFIG_ERROR, str(e)), (
                self.config.sync_frequency)
        try:
            cid = await self.runtime.create_container(pod, container, sandbox_id=sandbox_id,
                                                      restart_count=restart_count, env=env,
                                                      resolv_conf=resolv_conf)
        except aiodocker.DockerError as e:
            self.recorder.event(pod, WARNING, "Failed", f"Error: {e.message}")
            return Waiting("CreateContainerError", str(e.message)), self.config.sync_frequency
        self.recorder.event(pod, NORMAL, "Created", f"Created container {name}")
        try:
            await self.runtime.start(cid)
        except aiodocker.DockerError as e:
            self.recorder.event(pod, WARNING, "Failed", f"Error: {e.message}")
            delay = self.crash_backoff.next(key, _now())
            return Waiting("RunContainerError", str(e.message)), delay
        self.recorder.event(pod, NORMAL, "Started", f"Started container {name}")
        return None, None

    def _pod_for_env(self, pod: core_pb2.Pod, pod_ip: str) -> core_pb2.Pod:
        """``pod`` with the IPs fieldRefs read (status.podIP may not be posted yet)."""
        if (pod_ip or pod.status.pod_ip) == pod.status.pod_ip \
                and pod.status.host_ip == self.config.address:
            return pod
        copy = core_pb2.Pod()
        copy.CopyFrom(pod)
        copy.status.pod_ip = pod_ip or pod.status.pod_ip
        copy.status.host_ip = self.config.address
        return copy

    def _container_config(self, pod: core_pb2.Pod, container: core_pb2.Container
                          ) -> tuple[list[str], core_pb2.Container]:
        """The container's env and the container with $(VAR) expanded in command and
        args; ConfigError when a required ConfigMap, Secret or key is missing."""
        pairs = envvars.resolved_env(pod, container, self._services_of(pod),
                                     self._config_sources(container))
        self._config_waiting.pop(pod.metadata.uid, None)
        env = [f"{name}={value}" for name, value in pairs]
        command, args = env_sources.expand_command(container, pairs)
        if list(container.command) == command and list(container.args) == args:
            return env, container
        expanded = core_pb2.Container()
        expanded.CopyFrom(container)
        expanded.ClearField("command")
        expanded.ClearField("args")
        expanded.command.extend(command)
        expanded.args.extend(args)
        return env, expanded

    def _image_failed(self, pod: core_pb2.Pod, container: core_pb2.Container,
                      error: ImageError) -> tuple[Waiting, float]:
        image = container.image
        now = _now()
        remaining = self.images.backoff.remaining(image, now)
        if error.reason == ERR_IMAGE_PULL:
            self.recorder.event(pod, WARNING, "Failed",
                                f'Failed to pull image "{image}": {error.message}')
            again = min(PULL_FAILURE_RECHECK, remaining / 2) if remaining else (
                PULL_FAILURE_RECHECK)
        elif remaining:
            self.recorder.event(pod, NORMAL, "BackOff", f'Back-off pulling image "{image}"')
            again = remaining + 0.05
        else:
            again = self.config.sync_frequency  # ErrImageNeverPull: until the image appears
        self.recorder.event(pod, WARNING, "Failed", f"Error: {error.reason}")
        return Waiting(error.reason, error.message), again

    # ------------------------------------------------------ DNS and Services

    async def _write_resolv_conf(self, pod: core_pb2.Pod, *, record: bool) -> str:
        """Write the pod's resolv.conf (:mod:`~services.kubelet.dns`) into its directory;
        its path. With ``record``, what had to give (no cluster DNS, lists trimmed)
        becomes Warning Events on the pod, as when Kubernetes makes a sandbox."""
        host = await asyncio.to_thread(self._read_host_resolv_conf)
        settings = dns.DNSSettings(cluster_dns=self.config.cluster_dns,
                                   cluster_domain=self.config.cluster_domain, host=host)
        conf, warnings = dns.pod_resolv_conf(pod, settings)
        if record:
            for warning in warnings:
                self.recorder.event(pod, WARNING, warning.reason, warning.message)
        path = await asyncio.to_thread(self.pod_dirs.write_resolv_conf, pod.metadata.uid,
                                       conf.render())
        return str(path)

    def _read_host_resolv_conf(self) -> dns.ResolvConf | None:
        """The host's resolv.conf (``--resolv-conf``), read now: the host's may change.
        None without one; an unreadable one is logged and taken as none."""
        if not self.config.resolv_conf:
            return None
        try:
            with open(self.config.resolv_conf, encoding="utf-8") as f:
                return dns.parse_resolv_conf(f.read())
        except OSError as e:
            self._log.warning("cannot read --resolv-conf; pods get no host DNS",
                              path=self.config.resolv_conf, error=str(e))
            return None

    def _services_of(self, pod: core_pb2.Pod) -> list[core_pb2.Service]:
        """The Services that may give ``pod`` variables: its namespace's and default's."""
        store = self.services.store
        namespaces = {pod.metadata.namespace, envvars.MASTER_NAMESPACE}
        return [cast(core_pb2.Service, s) for ns in sorted(namespaces)
                for s in store.by_index(NAMESPACE_INDEX, ns)]

    async def _remove_orphan_dirs(self, known: set[str]) -> None:
        """Remove the directories of pods neither the API nor Docker knows of (left by a
        kubelet that stopped between removing a pod's containers and its directory)."""
        for uid in await asyncio.to_thread(self.pod_dirs.orphans, known):
            if uid in self._by_uid:
                continue  # bound here since ``known`` was taken
            self._log.info("removing the directory of a pod no longer here", pod_uid=uid)
            await asyncio.to_thread(self.pod_dirs.remove, uid)

    # ------------------------------------------------------------- stopping

    def _grace(self, pod: core_pb2.Pod) -> int:
        md = pod.metadata
        if md.HasField("deletion_grace_period_seconds"):
            return md.deletion_grace_period_seconds
        if pod.spec.HasField("termination_grace_period_seconds"):
            return pod.spec.termination_grace_period_seconds
        return 30

    async def _kill_one(self, pod: core_pb2.Pod | None, container: RuntimeContainer,
                        grace: float, why: str = "") -> None:
        """Stop one container: its stop signal, then SIGKILL after ``grace`` seconds."""
        if pod is not None and container.kind != "podsandbox":
            self.recorder.event(pod, NORMAL, "Killing",
                                f"Container {container.name} {why}" if why
                                else f"Stopping container {container.name}")
        await self.runtime.stop(container.id, max(grace, MIN_GRACE_SECONDS))

    async def _kill(self, pod: core_pb2.Pod | None, running: list[RuntimeContainer],
                    grace: float) -> None:
        """Stop the app containers together (each gets the grace period), then the
        sandboxes: the pod's network goes last, as in Kubernetes."""
        apps = [c for c in running if c.kind != "podsandbox"]
        sandboxes = [c for c in running if c.kind == "podsandbox"]
        await asyncio.gather(*(self._kill_one(pod, c, grace) for c in apps))
        await asyncio.gather(*(self._kill_one(pod, c, grace) for c in sandboxes))

    async def _terminate(self, pod: core_pb2.Pod, observed: PodContainers) -> None:
        """Graceful termination, then the end of the pod's deletion."""
        md = pod.metadata
        grace = self._grace(pod)
        if observed.running:
            self._log.info("terminating pod", pod=f"{md.namespace}/{md.name}", grace=grace)
            await self._kill(pod, observed.running, grace)
        await asyncio.gather(*(self.runtime.remove(c.id) for c in observed.all))
        self.probes.remove_pod(md.uid)
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.client.pods.delete(md.name, md.namespace, grace_period_seconds=0,
                                          uid=md.uid)
        self._log.info("pod deleted", pod=f"{md.namespace}/{md.name}")

    async def _remove_orphan(self, uid: str, observed: PodContainers) -> None:
        """Containers of a pod no longer bound here: stop and remove them."""
        grace = self._deleted_grace.get(uid, MIN_GRACE_SECONDS)
        some = observed.all[0]
        self._log.info("removing the containers of a pod no longer here", pod_uid=uid,
                       pod=f"{some.pod_namespace}/{some.pod_name}",
                       containers=len(observed.all))
        if observed.running:
            await self._kill(None, observed.running, grace)
        await asyncio.gather(*(self.runtime.remove(c.id) for c in observed.all))

    def _forget(self, uid: str) -> None:
        self._config_waiting.pop(uid, None)
        self.probes.remove_pod(uid)
        self.crash_backoff.forget_prefix(f"{uid}/")
        self._statuses.pop(uid, None)
        self._deleted_grace.pop(uid, None)
        self.workers.forget(uid)

    # -------------------------------------------------------------- status

    async def _post_status(self, pod: core_pb2.Pod, status: core_pb2.PodStatus) -> None:
        """UpdateStatus, only when the status differs from the last one posted."""
        uid = pod.metadata.uid
        last = self._statuses.get(uid, pod.status)
        if status == last:
            return
        updated = core_pb2.Pod(metadata=pod.metadata, spec=pod.spec, status=status)
        updated.metadata.ClearField("resource_version")
        try:
            await self.client.pods.update_status(updated)
        except errors.NotFound:
            return
        self._statuses[uid] = status
        if status.phase != last.phase:
            self._log.info("pod phase", pod=f"{pod.metadata.namespace}/{pod.metadata.name}",
                           phase=status.phase, pod_ip=status.pod_ip)
            if status.phase == RUNNING:
                metrics.observe_startup(pod)


def _with_pod_ip(pod: core_pb2.Pod, observed: PodContainers) -> core_pb2.Pod:
    """``pod`` with its sandbox's IP in its status: probes aim at the pod IP, and a pod
    just started has none posted yet (Docker's inspect knows no IP of a sandbox the
    bridge plugin plumbed, so the probes could not find it there)."""
    sandbox = observed.sandbox
    if sandbox is None or not sandbox.ip or pod.status.pod_ip == sandbox.ip:
        return pod
    copy = core_pb2.Pod()
    copy.CopyFrom(pod)
    copy.status.pod_ip = sandbox.ip
    return copy


def _running_refs(pod: core_pb2.Pod, observed: PodContainers) -> dict[str, ContainerRef]:
    refs = {}
    for container in pod.spec.containers:
        latest = observed.latest(container.name)
        if latest is not None and latest.running:
            refs[container.name] = ContainerRef(latest.id, latest.started_at)
    return refs
