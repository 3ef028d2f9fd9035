"""A pod's resolv.conf, from its ``dnsPolicy`` and ``dnsConfig`` (pure).

Kubernetes' kubelet (``pkg/kubelet/network/dns``), reduced to what Skiff runs:

- ``ClusterFirst`` (the default): the cluster DNS servers (``--cluster-dns``), the
  search path ``<ns>.svc.<domain> svc.<domain> <domain>`` followed by the host's, and
  ``options ndots:5``. A kubelet without ``--cluster-dns`` cannot do that: the pod gets
  ``Default`` instead, with a ``MissingClusterDNS`` warning. A pod on the host's network
  gets ``Default`` too, unless it asks for ``ClusterFirstWithHostNet``.
- ``Default``: the host's resolv.conf (``--resolv-conf``) as it is: its nameservers,
  its last search line, its options. Without a host file (``--resolv-conf ""``), the
  local resolver: ``nameserver 127.0.0.1`` and the root as the only search domain.
- ``None``: nothing but the pod's ``dnsConfig``.

The pod's ``dnsConfig`` is then merged in: nameservers and searches appended and
de-duplicated (first occurrence kept), options merged by name, the pod's value winning.
Last, the lists are trimmed to what a resolver reads, with a ``DNSConfigForming``
warning each: at most :data:`MAX_NAMESERVERS` nameservers, :data:`MAX_SEARCH_PATHS`
search paths, none longer than :data:`MAX_SEARCH_PATH_CHARS`, and the search line at
most :data:`MAX_SEARCH_LIST_CHARS` characters. These are the current kubelet's limits
(those of the expanded DNS configuration, GA in Kubernetes 1.28), the same the
apiserver validates a ``dnsConfig`` against; the older 6 paths / 256 characters are gone.

The kubelet writes the result into the pod's directory and bind-mounts it over
``/etc/resolv.conf`` in the sandbox and in every app container (see ``pod_dirs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from skiff.api.addresses import CLUSTER_DOMAIN
from skiff.api.v1 import core_pb2

CLUSTER_FIRST = "ClusterFirst"
CLUSTER_FIRST_WITH_HOST_NET = "ClusterFirstWithHostNet"
DEFAULT = "Default"
NONE = "None"
#: The options a ClusterFirst pod starts from (Kubernetes' ``defaultDNSOptions``).
CLUSTER_OPTIONS = ("ndots:5",)
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_LIST_CHARS = 2048
#: Longer search paths make some resolvers (glibc 2.28) abort: they are dropped.
MAX_SEARCH_PATH_CHARS = 253
#: The Event reasons Kubernetes' kubelet records for these.
DNS_CONFIG_FORMING = "DNSConfigForming"
MISSING_CLUSTER_DNS = "MissingClusterDNS"


@dataclass(frozen=True)
class ResolvConf:
    """The three things a resolv.conf says; options as ``name`` or ``name:value``."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def render(self) -> str:
        """The file's text: nameserver lines, then one search and one options line."""
        lines = [f"nameserver {server}" for server in self.nameservers]
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "".join(f"{line}\n" for line in lines)


#: What Default means without a host resolv.conf: only the local resolver, and the root
#: as the one search domain (so that nothing is looked up in the host's domains).
NO_HOST_RESOLV_CONF = ResolvConf(("127.0.0.1",), (".",))


@dataclass(frozen=True)
class DNSSettings:
    """The kubelet's DNS flags: ``--cluster-dns``, ``--cluster-domain``, and the host's
    resolv.conf (already read; None when ``--resolv-conf`` is empty)."""

    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = CLUSTER_DOMAIN
    host: ResolvConf | None = None


@dataclass(frozen=True)
class DNSWarning:
    """Something to record as a Warning Event on the pod."""

    reason: str
    message: str


def parse_resolv_conf(text: str) -> ResolvConf:
    """A resolv.conf's nameservers, search domains and options, as the resolver reads
    them: the last ``search`` (or ``domain``) line wins, the root domain ``.`` and
    trailing dots are dropped, a later option overrides an earlier one of its name."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0]
        fields = line.split()
        if not fields:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver" and values:
            nameservers.append(values[0])
        elif keyword in ("search", "domain"):
            searches = [s.rstrip(".") for s in values if s != "."]
        elif keyword == "options":
            for option in values:
                options[_option_name(option)] = option
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options.values()))


def dns_policy(pod: core_pb2.Pod, settings: DNSSettings) -> tuple[str, list[DNSWarning]]:
    """The policy the pod's resolv.conf is made by, after the fallbacks (see the module)."""
    policy = pod.spec.dns_policy or CLUSTER_FIRST
    if policy == CLUSTER_FIRST and pod.spec.host_network:
        return DEFAULT, []
    if policy in (CLUSTER_FIRST, CLUSTER_FIRST_WITH_HOST_NET) and not settings.cluster_dns:
        return DEFAULT, [DNSWarning(
            MISSING_CLUSTER_DNS,
            f"pod: {pod.metadata.name}_{pod.metadata.namespace}({pod.metadata.uid}). "
            f"kubelet does not have ClusterDNS IP configured and cannot create Pod using "
            f'"{policy}" policy. Falling back to "{DEFAULT}" policy.')]
    return policy, []


def pod_resolv_conf(pod: core_pb2.Pod, settings: DNSSettings
                    ) -> tuple[ResolvConf, list[DNSWarning]]:
    """The pod's resolv.conf and the warnings to record on the pod (see the module)."""
    policy, warnings = dns_policy(pod, settings)
    host = settings.host or ResolvConf()
    if policy == NONE:
        base = ResolvConf()
    elif policy == DEFAULT:
        base = settings.host or NO_HOST_RESOLV_CONF
    else:
        base = ResolvConf(settings.cluster_dns,
                          (*cluster_searches(pod.metadata.namespace, settings.cluster_domain),
                           *host.searches),
                          CLUSTER_OPTIONS)
    merged = merge_dns_config(base, pod.spec.dns_config) if pod.spec.HasField(
        "dns_config") else base
    return fit_limits(merged, warnings)


def cluster_searches(namespace: str, domain: str) -> tuple[str, ...]:
    """``<ns>.svc.<domain> svc.<domain> <domain>``; nothing without a cluster domain."""
    if not domain:
        return ()
    return (f"{namespace}.svc.{domain}", f"svc.{domain}", domain)


def merge_dns_config(base: ResolvConf, config: core_pb2.PodDNSConfig) -> ResolvConf:
    """``base`` with a pod's dnsConfig merged in (Kubernetes' ``appendDNSConfig``)."""
    options = {_option_name(o): o for o in base.options}
    for option in config.options:
        value = option.value if option.HasField("value") else ""
        options[option.name] = f"{option.name}:{value}" if value else option.name
    return ResolvConf(_dedup((*base.nameservers, *config.nameservers)),
                      _dedup((*base.searches, *config.searches)),
                      tuple(options.values()))


def fit_limits(conf: ResolvConf, warnings: Iterable[DNSWarning] = ()
               ) -> tuple[ResolvConf, list[DNSWarning]]:
    """``conf`` trimmed to the resolver's limits, with a warning for each list cut."""
    found = list(warnings)
    nameservers = conf.nameservers
    if len(nameservers) > MAX_NAMESERVERS:
        nameservers = nameservers[:MAX_NAMESERVERS]
        found.append(DNSWarning(
            DNS_CONFIG_FORMING, "Nameserver limits were exceeded, some nameservers have "
            f"been omitted, the applied nameserver line is: {' '.join(nameservers)}"))
    searches = list(conf.searches[:MAX_SEARCH_PATHS])
    cut = len(searches) < len(conf.searches)
    kept = [s for s in searches if len(s) <= MAX_SEARCH_PATH_CHARS]
    cut = cut or len(kept) < len(searches)
    # Drop from the end until the line (the paths and the spaces between) fits.
    while kept and len(" ".join(kept)) > MAX_SEARCH_LIST_CHARS:
        kept.pop()
        cut = True
    if cut:
        found.append(DNSWarning(
            DNS_CONFIG_FORMING, "Search Line limits were exceeded, some search paths have "
            f"been omitted, the applied search line is: {' '.join(kept)}"))
    return ResolvConf(nameservers, tuple(kept), conf.options), found


def _option_name(option: str) -> str:
    return option.split(":", 1)[0]


def _dedup(values: Iterable[str]) -> tuple[str, ...]:
    """``values`` without repeats, first occurrences kept in order."""
    return tuple(dict.fromkeys(values))
