"""The host scheduler weighs hosts as Nova's filter scheduler does.

Each case gives hosts as Nova's ``HostState`` sees them, Nova's weigher multipliers,
and the ranking worked out by hand. The test checks the hand ranking against a
direct transcription of Nova's algorithm (below, citing the Nova files it follows,
openstack/nova at 00a030403f672b975364c855b7d25b40ef83e757, 33.0.0-373, the
2026.2 development branch), then runs the same hosts through
:class:`HostScheduler` and requires the same chosen host, the same full ranking and
the same weights.

Mapping of Nova's figures and options to the broker's (see docs/scheduler.md,
"Weighing as Nova does"):

* ``memory_mb`` / ``memory_mb_used`` (which includes ``reserved_host_memory_mb``)
  -> ``HostRow.ram_mb`` / ``ram_used_mb``; ``vcpus`` / ``vcpus_used`` likewise;
  ``num_instances`` -> ``instances``.
* ``ram_weight_multiplier`` -> ``RamWeigher``, ``cpu_weight_multiplier`` ->
  ``VcpuWeigher``; a negative one is also what the policy's ``"pack"`` does with a
  positive one.
* ``num_instances_weight_multiplier = m`` -> ``InstancesWeigher(-m)``: the broker
  scores minus the count, so its multiplier has the opposite sign; the weights are
  the same to the last bit. Under the policy's ``"pack"``, which negates it with
  the capacity weighers, ``InstancesWeigher(m)``.
* ``soft_(anti_)affinity_weight_multiplier`` -> ``Soft(Anti)AffinityWeigher``.
* Nova's ``host_subset_size = 1`` (its default), ``shuffle_best_same_weighed_hosts =
  False`` (its default), and Nova's host list in table order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from federator.scheduler import HostRequest, HostScheduler, HostTable
from federator.scheduler.request import SoftGroup, Weighing
from federator.scheduler.weighers import (
    HostWeigher,
    InstancesWeigher,
    RamWeigher,
    SoftAffinityWeigher,
    SoftAntiAffinityWeigher,
    VcpuWeigher,
)
from tests.unit.scheduler.factory import row

# --------------------------------------------------------------------------------------
# Nova, transcribed
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NovaHost:
    """The ``HostState`` fields Nova's weighers read (nova/scheduler/host_manager.py,
    ``HostState._update_from_compute_node``)."""

    host: str
    memory_mb: int
    memory_mb_used: int
    vcpus: int
    vcpus_used: int
    cpu_allocation_ratio: float = 1.0
    # Read by no weigher; set so a case can show the RAM weigher ignores it.
    ram_allocation_ratio: float = 1.0
    num_instances: int = 0
    # Instance uuids on the host (HostState.instances keys).
    instances: frozenset[str] = frozenset()

    @property
    def free_ram_mb(self) -> int:
        # nova/compute/resource_tracker.py, _update_usage:
        #   cn.free_ram_mb = cn.memory_mb - cn.memory_mb_used  (may be negative)
        return self.memory_mb - self.memory_mb_used


@dataclass(frozen=True)
class NovaGroup:
    """``RequestSpec.instance_group``: its policy and member uuids."""

    policy: str
    members: frozenset[str]


def nova_normalize(
    weight_list: Sequence[float], minval: float | None = None, maxval: float | None = None
) -> list[float]:
    """nova/weights.py, ``normalize``."""
    if not weight_list:
        return []
    if maxval is None:
        maxval = max(weight_list)
    if minval is None:
        minval = min(weight_list)
    maxval = float(maxval)
    minval = float(minval)
    if minval == maxval:
        return [0] * len(weight_list)
    range_ = maxval - minval
    return [(i - minval) / range_ for i in weight_list]


@dataclass(frozen=True)
class NovaWeigher:
    """A ``BaseHostWeigher``: its ``minval`` (``maxval`` is None for all of these),
    its configured multiplier and its ``_weigh_object``."""

    multiplier: float
    minval: float | None
    weigh_object: Callable[[NovaHost, NovaGroup | None], float]

    def weigh_objects(self, hosts: Sequence[NovaHost], group: NovaGroup | None) -> list[float]:
        """nova/weights.py, ``BaseWeigher.weigh_objects``."""
        weights = []
        for host in hosts:
            weight = self.weigh_object(host, group)
            if self.minval is not None:
                weight = max(weight, self.minval)
            weights.append(weight)
        return weights


def _ram(h: NovaHost, g: NovaGroup | None) -> float:
    # nova/scheduler/weights/ram.py, RAMWeigher (minval = 0)
    return h.free_ram_mb


def _cpu(h: NovaHost, g: NovaGroup | None) -> float:
    # nova/scheduler/weights/cpu.py, CPUWeigher (minval = 0)
    return h.vcpus * h.cpu_allocation_ratio - h.vcpus_used


def _num_instances(h: NovaHost, g: NovaGroup | None) -> float:
    # nova/scheduler/weights/num_instances.py, NumInstancesWeigher (no minval)
    return h.num_instances


def _soft(policy: str, sign: int) -> Callable[[NovaHost, NovaGroup | None], float]:
    # nova/scheduler/weights/affinity.py, _SoftAffinityWeigherBase._weigh_object, and
    # ServerGroupSoftAntiAffinityWeigher negating it (no minval)
    def weigh(h: NovaHost, g: NovaGroup | None) -> float:
        if g is None or g.policy != policy:
            return 0
        return sign * len(h.instances & g.members)

    return weigh


def nova_weighers(multipliers: dict[str, float]) -> list[NovaWeigher]:
    """Nova's weighers with the multipliers given (Nova's defaults for the rest:
    nova/conf/scheduler.py)."""
    m = {"ram": 1.0, "cpu": 1.0, "num_instances": 0.0, "soft_affinity": 1.0}
    m |= {"soft_anti_affinity": 1.0, **multipliers}
    return [
        NovaWeigher(m["ram"], 0, _ram),
        NovaWeigher(m["cpu"], 0, _cpu),
        NovaWeigher(m["num_instances"], None, _num_instances),
        NovaWeigher(m["soft_affinity"], None, _soft("soft-affinity", 1)),
        NovaWeigher(m["soft_anti_affinity"], None, _soft("soft-anti-affinity", -1)),
    ]


def nova_weighed_hosts(
    weighers: Sequence[NovaWeigher], hosts: Sequence[NovaHost], group: NovaGroup | None
) -> list[tuple[str, float]]:
    """nova/weights.py, ``BaseWeightHandler.get_weighed_objects``: (host, weight),
    sorted by weight, descending, Python's stable sort keeping the input order of ties."""
    totals = [0.0] * len(hosts)  # WeighedObject.weight, in input order
    if len(hosts) > 1:
        for weigher in weighers:
            weights = nova_normalize(weigher.weigh_objects(hosts, group), minval=weigher.minval)
            for i, weight in enumerate(weights):
                totals[i] += weigher.multiplier * weight
    ordered = sorted(zip(hosts, totals, strict=True), key=lambda x: x[1], reverse=True)
    return [(h.host, w) for h, w in ordered]


def nova_sorted_hosts(weighed: list[tuple[str, float]], host_subset_size: int = 1) -> list[str]:
    """nova/scheduler/manager.py, ``SchedulerManager._get_sorted_hosts`` with
    ``shuffle_best_same_weighed_hosts = False``: a random choice among the first
    ``host_subset_size`` hosts goes first, the rest keep their order."""
    hosts = [h for h, _ in weighed]
    subset = hosts[:host_subset_size] if host_subset_size < len(hosts) else hosts
    chosen = random.choice(subset)
    hosts.remove(chosen)
    return [chosen, *hosts]


# --------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------


def host(
    name: str,
    free_ram: int,
    free_vcpus: int,
    *,
    memory_mb: int = 16384,
    vcpus: int = 16,
    cpu_ratio: float = 1.0,
    ram_ratio: float = 1.0,
    num_instances: int = 0,
    members: int = 0,
) -> NovaHost:
    """A host with ``free_ram`` MB of physical RAM free and ``vcpus * cpu_ratio -
    free_vcpus`` vCPUs used, holding ``members`` members of the case's group."""
    return NovaHost(
        host=name,
        memory_mb=memory_mb,
        memory_mb_used=memory_mb - free_ram,
        vcpus=vcpus,
        vcpus_used=int(vcpus * cpu_ratio) - free_vcpus,
        cpu_allocation_ratio=cpu_ratio,
        ram_allocation_ratio=ram_ratio,
        num_instances=num_instances,
        instances=frozenset(f"{name}-m{k}" for k in range(members)),
    )


@dataclass(frozen=True)
class Case:
    name: str
    hosts: list[NovaHost]
    multipliers: dict[str, float]
    expected: list[str]
    group: str | None = None
    # "pack": the broker gets the policy's pack with the RAM and vCPU multipliers
    # negated back to positive, the way a pack zone is configured.
    weighing: Weighing = "spread"
    note: str = field(default="", compare=False)


CASES = [
    Case(
        "all_equal_hosts_keep_their_order",
        [host(n, 6144, 6, num_instances=1) for n in ("a", "b", "c")],
        {"num_instances": -1.0},
        ["a", "b", "c"],
        note="equal non-zero free figures all normalise to 1.0 against minval 0",
    ),
    Case(
        "ties_keep_host_order",
        [host("x", 4096, 4), host("y", 8192, 8), host("z", 8192, 8), host("w", 4096, 4)],
        {},
        ["y", "z", "x", "w"],
    ),
    Case(
        "minval_zero_decides_mixed_weighers",
        # ram 1.0 / 0.9, cpu 10/12 / 1.0: x 1.833, y 1.9. Min-max over the two
        # would score both 1.0 and tie.
        [host("x", 10000, 10), host("y", 9000, 12)],
        {},
        ["y", "x"],
    ),
    Case(
        "ram_weigher_reads_physical_free_ram",
        # ratio 1.5: schedulable free would be 8192 and 10240, physical 4096 and 2048
        [
            host("a", 4096, 8, memory_mb=8192, ram_ratio=1.5),
            host("b", 2048, 8, memory_mb=16384, ram_ratio=1.5),
        ],
        {"cpu": 0.0},
        ["a", "b"],
    ),
    Case(
        "overcommitted_ram_scores_zero_spread",
        [
            host("c", -2048, 8, memory_mb=8192, ram_ratio=1.5),
            host("d", 0, 8, memory_mb=8192, ram_ratio=1.5),
            host("e", 1024, 8, memory_mb=8192, ram_ratio=1.5),
        ],
        {"cpu": 0.0},
        ["e", "c", "d"],
    ),
    Case(
        "overcommitted_ram_scores_zero_negative_multiplier",
        [
            host("c", -2048, 8, memory_mb=8192, ram_ratio=1.5),
            host("d", 0, 8, memory_mb=8192, ram_ratio=1.5),
            host("e", 1024, 8, memory_mb=8192, ram_ratio=1.5),
        ],
        {"ram": -1.0, "cpu": 0.0},
        ["c", "d", "e"],
    ),
    Case(
        "cpu_weigher_does_not_round_the_ratio",
        # 3 vCPUs at 1.5 leave 4.5 free, more than 4 at 1.0; rounded down both are 4
        [host("h", 4096, 4, vcpus=4), host("g", 4096, 4, vcpus=3, cpu_ratio=1.5)],
        {},
        ["g", "h"],
    ),
    Case(
        "negative_multipliers_pack",
        # ram 1/3, 1, 2/3 and cpu 1/3, 1, 1/6, both times -1
        [host("p", 2048, 2), host("q", 6144, 6), host("r", 4096, 1)],
        {"ram": -1.0, "cpu": -1.0},
        ["p", "r", "q"],
    ),
    Case(
        "pack_by_policy",
        [host("p", 2048, 2), host("q", 6144, 6), host("r", 4096, 1)],
        {"ram": -1.0, "cpu": -1.0},
        ["p", "r", "q"],
        weighing="pack",
    ),
    Case(
        "fewer_instances_preferred",
        # ram 1, 0.75, 1; instances 4, 0, 2 -> 1, 0, 0.5 times -1
        [
            host("a", 8192, 8, memory_mb=8192, num_instances=4),
            host("b", 6144, 8, memory_mb=8192, num_instances=0),
            host("c", 8192, 8, memory_mb=8192, num_instances=2),
        ],
        {"cpu": 0.0, "num_instances": -1.0},
        ["b", "c", "a"],
    ),
    Case(
        "busier_hosts_preferred",
        [
            host("a", 8192, 8, memory_mb=8192, num_instances=4),
            host("b", 6144, 8, memory_mb=8192, num_instances=0),
            host("c", 8192, 8, memory_mb=8192, num_instances=2),
        ],
        {"cpu": 0.0, "num_instances": 2.0},
        ["a", "c", "b"],
    ),
    Case(
        "soft_anti_affinity_ties_with_ram",
        # ram 1, 0.5, 1; members 2, 0, 1 -> -2, 0, -1 -> 0, 1, 0.5: b and c tie at 1.5
        [
            host("a", 8192, 8, memory_mb=8192, members=2),
            host("b", 4096, 8, memory_mb=8192, members=0),
            host("c", 8192, 8, memory_mb=8192, members=1),
        ],
        {"cpu": 0.0},
        ["b", "c", "a"],
        group="soft-anti-affinity",
    ),
    Case(
        "soft_anti_affinity_heavy_multiplier_wins",
        [host("a", 8192, 8, memory_mb=8192, members=1), host("b", 1024, 8, memory_mb=8192)],
        {"cpu": 0.0, "soft_anti_affinity": 10.0},
        ["b", "a"],
        group="soft-anti-affinity",
    ),
    Case(
        "soft_anti_affinity_light_multiplier_loses",
        # a 1.0, b 0.125 + 0.5
        [host("a", 8192, 8, memory_mb=8192, members=1), host("b", 1024, 8, memory_mb=8192)],
        {"cpu": 0.0, "soft_anti_affinity": 0.5},
        ["a", "b"],
        group="soft-anti-affinity",
    ),
    Case(
        "soft_affinity",
        # ram 1, 0.5, 1; members 0, 3, 1 -> 0, 1, 1/3
        [
            host("a", 8192, 8, memory_mb=8192, members=0),
            host("b", 4096, 8, memory_mb=8192, members=3),
            host("c", 8192, 8, memory_mb=8192, members=1),
        ],
        {"cpu": 0.0},
        ["b", "c", "a"],
        group="soft-affinity",
    ),
    Case(
        "soft_affinity_weigher_ignores_an_anti_affinity_group",
        [host("a", 8192, 8, memory_mb=8192), host("b", 4096, 8, memory_mb=8192, members=3)],
        {"cpu": 0.0, "soft_anti_affinity": 0.0, "soft_affinity": 5.0},
        ["a", "b"],
        group="soft-anti-affinity",
    ),
    Case(
        "all_weighers_mixed",
        # ram 2/3, 1, 1/2; cpu 14/16, 4/16, 16/16 (x2); instances 3, 5, 1 -> 0.5, 1, 0
        # (x -0.5); members 1, 0, 2 -> 0.5, 1, 0: a 2.667, b 2.0, c 2.5
        [
            host("a", 8192, 14, vcpus=8, cpu_ratio=2.0, num_instances=3, members=1),
            host("b", 12288, 4, vcpus=8, cpu_ratio=2.0, num_instances=5, members=0),
            host("c", 6144, 16, memory_mb=8192, vcpus=4, cpu_ratio=4.0, num_instances=1, members=2),
        ],
        {"cpu": 2.0, "num_instances": -0.5},
        ["a", "c", "b"],
        group="soft-anti-affinity",
    ),
    Case("single_host", [host("only", 1024, 1)], {}, ["only"]),
]


# --------------------------------------------------------------------------------------
# The broker, given the same hosts
# --------------------------------------------------------------------------------------


def broker_table(hosts: Sequence[NovaHost]) -> HostTable:
    return HostTable.from_rows(
        row(
            h.host,
            i,
            ram_mb=h.memory_mb,
            ram_used_mb=h.memory_mb_used,
            vcpus=h.vcpus,
            vcpus_used=h.vcpus_used,
            cpu_ratio=h.cpu_allocation_ratio,
            ram_ratio=h.ram_allocation_ratio,
            instances=h.num_instances,
        )
        for i, h in enumerate(hosts)
    )


def broker_weighers(multipliers: dict[str, float], weighing: Weighing) -> list[HostWeigher]:
    ram, cpu, num, soft, soft_anti = (w.multiplier for w in nova_weighers(multipliers))
    # the broker scores minus the instance count: its multiplier is Nova's negated
    instances = -num
    if weighing == "pack":
        # the policy's pack negates the free-capacity multipliers itself
        ram, cpu, instances = -ram, -cpu, -instances
    return [
        RamWeigher(ram),
        VcpuWeigher(cpu),
        InstancesWeigher(instances),
        SoftAffinityWeigher(soft),
        SoftAntiAffinityWeigher(soft_anti),
    ]


def broker_request(hosts: Sequence[NovaHost], group: str | None, weighing: Weighing) -> HostRequest:
    soft: SoftGroup | None = None
    if group == "soft-affinity":
        soft = "soft-affinity"
    elif group == "soft-anti-affinity":
        soft = "soft-anti-affinity"
    counts = {h.host: len(h.instances) for h in hosts if h.instances}
    return HostRequest(
        zone="z1",
        vcpus=0,
        ram_mb=0,
        disk_gb=0,
        weighing=weighing,
        soft_group=soft,
        group_counts=counts if soft else {},
    )


def nova_group(hosts: Sequence[NovaHost], group: str | None) -> NovaGroup | None:
    if group is None:
        return None
    return NovaGroup(group, frozenset().union(*(h.instances for h in hosts)))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broker_ranks_hosts_as_nova(case: Case) -> None:
    group = nova_group(case.hosts, case.group)
    weighed = nova_weighed_hosts(nova_weighers(case.multipliers), case.hosts, group)
    # The transcription agrees with the hand-worked answer...
    assert nova_sorted_hosts(weighed) == case.expected
    # ...and the broker with both.
    table = broker_table(case.hosts)
    req = broker_request(case.hosts, case.group, case.weighing)
    sched = HostScheduler(filters=[], weighers=broker_weighers(case.multipliers, case.weighing))
    assert sched.select(table, req, limit=len(case.hosts)) == case.expected
    assert sched.select(table, req, limit=1) == case.expected[:1]
    got = {v.host: v.weight for v in sched.explain(table, req)}
    assert got == dict(weighed)


def test_nova_subset_size_one_always_takes_the_best() -> None:
    """Nova's random choice among ``host_subset_size`` hosts is no choice at size 1,
    which is what the broker's deterministic order reproduces."""
    weighed = [("a", 2.0), ("b", 2.0), ("c", 1.0)]
    assert {nova_sorted_hosts(weighed)[0] for _ in range(50)} == {"a"}
    assert {nova_sorted_hosts(weighed, host_subset_size=2)[0] for _ in range(200)} == {"a", "b"}


def _random_host(rng: random.Random, name: str) -> NovaHost:
    memory = rng.choice([4096, 8192, 16384])
    vcpus = rng.choice([2, 3, 4, 8])
    ratio = rng.choice([1.0, 1.5, 4.0])
    return NovaHost(
        host=name,
        memory_mb=memory,
        # coarse steps make ties common; a few hosts use more than their physical RAM
        memory_mb_used=rng.randrange(0, memory + 4096, 2048),
        vcpus=vcpus,
        vcpus_used=rng.randint(0, int(vcpus * ratio) + 2),
        cpu_allocation_ratio=ratio,
        ram_allocation_ratio=rng.choice([1.0, 1.5]),
        num_instances=rng.randint(0, 4),
        instances=frozenset(f"{name}-m{k}" for k in range(rng.choice([0, 0, 1, 2]))),
    )


@pytest.mark.parametrize("seed", range(60))
def test_random_hosts_rank_as_nova(seed: int) -> None:
    rng = random.Random(seed)
    hosts = [_random_host(rng, f"h{i}") for i in range(rng.randint(2, 12))]
    choices = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    multipliers = {
        k: rng.choice(choices)
        for k in ("ram", "cpu", "num_instances", "soft_affinity", "soft_anti_affinity")
    }
    group = rng.choice([None, "soft-affinity", "soft-anti-affinity"])
    weighing: Weighing = rng.choice(["spread", "pack"])
    weighed = nova_weighed_hosts(nova_weighers(multipliers), hosts, nova_group(hosts, group))
    table = broker_table(hosts)
    req = broker_request(hosts, group, weighing)
    sched = HostScheduler(filters=[], weighers=broker_weighers(multipliers, weighing))
    assert sched.select(table, req, limit=len(hosts)) == nova_sorted_hosts(weighed), multipliers
    # exactly: a rounding difference would break Nova's ties differently
    got = {v.host: v.weight for v in sched.explain(table, req)}
    assert got == dict(weighed)
