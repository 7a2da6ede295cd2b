"""The faults a drill injects, each a real one: a signal to a real process, a real switchover, a real restart.

Servers are killed and started again through the runner's control socket (``shardpay.ha.control``), so that
``make run-ha`` still owns and stops everything; a postmaster is killed directly (Patroni, its parent, is
what must cope); shardpay's own processes are killed by pid and restarted by the supervisor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from shardpay.ha import control, servers
from shardpay.ha.layout import NODES, REDIS_MASTER, Cluster, Topology
from shardpay.ha.procs import read_pid


class FaultError(RuntimeError):
    """The fault could not be injected as asked (no such cluster, no standby to kill, ...)."""


@dataclass(frozen=True)
class Context:
    topology: Topology
    shard: int  # the shard a shard fault hits


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    expect: str  # what the drill is to show
    inject: Callable[[Context], Awaitable[dict[str, Any]]]
    # True once the component is whole again (redundancy back), polled after the injection with its details.
    restored: Callable[[Context, dict[str, Any]], Awaitable[bool]]
    shard_fault: bool = False  # errors are allowed only on requests that touch Context.shard
    needs: str = ""  # what the topology must have: "redis", "rabbitmq", "etcd"


def _cluster(ctx: Context) -> Cluster:
    try:
        return ctx.topology.cluster(f"shard{ctx.shard}")
    except KeyError:
        raise FaultError(f"shard {ctx.shard} is not a Patroni cluster in {ctx.topology.root}") from None


async def _member(cluster: Cluster, role: str) -> str:
    for _ in range(100):
        found = [name for name, r in servers.roles(await servers.cluster_state(cluster)).items() if r == role]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise FaultError(f"cluster {cluster.name} has no {role}")


def _kill_postmaster(ctx: Context, member: str) -> int:
    pid = read_pid(ctx.topology.path("data", "pg", member, "postmaster.pid"))
    if pid is None:
        raise FaultError(f"{member} has no running postmaster")
    os.kill(pid, signal.SIGKILL)
    return pid


async def _rejoined(ctx: Context, detail: dict[str, Any]) -> bool:
    """A leader and a synchronous standby again, the killed member among them with a new postmaster."""
    cluster = _cluster(ctx)
    members = servers.roles(await servers.cluster_state(cluster))
    if not {"leader", "sync_standby"} <= set(members.values()) or detail["killed"] not in members:
        return False
    return read_pid(ctx.topology.path("data", "pg", detail["killed"], "postmaster.pid")) not in (None, detail["pid"])


async def _switched(ctx: Context, detail: dict[str, Any]) -> bool:
    members = servers.roles(await servers.cluster_state(_cluster(ctx)))
    return members.get(detail["to"]) == "leader" and members.get(detail["from"]) == "sync_standby"


async def primary_kill(ctx: Context) -> dict[str, Any]:
    cluster = _cluster(ctx)
    leader = await _member(cluster, "leader")
    return {"cluster": cluster.name, "killed": leader, "pid": _kill_postmaster(ctx, leader), "signal": "SIGKILL"}


async def primary_stop(ctx: Context) -> dict[str, Any]:
    cluster = _cluster(ctx)
    leader, candidate = await _member(cluster, "leader"), await _member(cluster, "sync_standby")
    node = leader.rsplit("-", 1)[1]
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"http://127.0.0.1:{cluster.rest_port(node)}/switchover",
                                 json={"leader": leader, "candidate": candidate})  # fmt: skip
    if answer.status_code != 200:
        raise FaultError(f"switchover {leader} -> {candidate} refused: {answer.status_code} {answer.text}")
    return {"cluster": cluster.name, "from": leader, "to": candidate, "patroni": answer.text.strip()}


async def standby_kill(ctx: Context) -> dict[str, Any]:
    cluster = _cluster(ctx)
    standby = await _member(cluster, "sync_standby")
    return {"cluster": cluster.name, "killed": standby, "pid": _kill_postmaster(ctx, standby), "signal": "SIGKILL"}


async def _server(ctx: Context, op: str, name: str, **extra: Any) -> dict[str, Any]:
    answer = await control.call(ctx.topology.control_socket, op=op, name=name, **extra)
    if not answer.get("ok"):
        raise FaultError(f"{op} {name}: {answer.get('error', answer)}")
    return answer


async def _restart(ctx: Context, name: str) -> dict[str, Any]:
    await _server(ctx, "stop", name)
    stopped = time.monotonic()
    started = await _server(ctx, "start", name)
    return {"server": name, "down_for_s": round(time.monotonic() - stopped, 2), "pid": started.get("pid")}


async def _running(ctx: Context, *names: str) -> bool:
    status = await control.call(ctx.topology.control_socket, op="status")
    return all(status["servers"][name]["running"] for name in names)


def _child_kill(name: str) -> Callable[[Context], Awaitable[dict[str, Any]]]:
    async def inject(ctx: Context) -> dict[str, Any]:
        pid = read_pid(ctx.topology.path("run", "children", f"{name}.pid"))
        if pid is None:
            raise FaultError(f"{name} is not running (no live pid in run/children/{name}.pid)")
        os.kill(pid, signal.SIGKILL)
        return {"child": name, "pid": pid, "signal": "SIGKILL"}

    return inject


def _child_back(name: str) -> Callable[[Context, dict[str, Any]], Awaitable[bool]]:
    async def restored(ctx: Context, detail: dict[str, Any]) -> bool:
        return read_pid(ctx.topology.path("run", "children", f"{name}.pid")) not in (None, detail["pid"])

    return restored


async def _redis_master_port(ctx: Context) -> int | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=ctx.topology.sentinel_port, socket_timeout=1, socket_connect_timeout=1)
    try:
        address = await client.execute_command("SENTINEL", "get-master-addr-by-name", REDIS_MASTER)  # type: ignore[no-untyped-call]
    except (OSError, aioredis.RedisError):
        return None
    finally:
        await client.aclose()
    return int(address[1]) if address else None


async def redis_primary_kill(ctx: Context) -> dict[str, Any]:
    port = await _redis_master_port(ctx)
    node = next((n for n in NODES if ctx.topology.redis_port(n) == port), None)
    if node is None:
        raise FaultError(f"Sentinel names no known Redis primary (port {port})")
    killed = await _server(ctx, "signal", f"redis-{node}", signal=int(signal.SIGKILL))
    # Sentinel promotes the replica; the killed server is started again (as systemd would) and Sentinel
    # makes it a replica of the new primary.
    for _ in range(150):
        if await _redis_master_port(ctx) not in (None, port):
            break
        await asyncio.sleep(0.2)
    promoted = await _redis_master_port(ctx)
    await _server(ctx, "start", f"redis-{node}")
    return {"killed": f"redis-{node}", "pid": killed.get("pid"), "new_primary_port": promoted}


async def _redis_whole(ctx: Context, detail: dict[str, Any]) -> bool:
    import redis.asyncio as aioredis

    port = await _redis_master_port(ctx)
    if port is None:
        return False
    client = aioredis.Redis(port=port, socket_timeout=1)
    try:
        info = await client.info("replication")
    except (OSError, aioredis.RedisError):
        return False
    finally:
        await client.aclose()
    return int(info.get("connected_slaves", 0)) >= 1


async def etcd_kill(ctx: Context) -> dict[str, Any]:
    leaders = {c.name: await _member(c, "leader") for c in ctx.topology.clusters}
    killed = await _server(ctx, "signal", "etcd", signal=int(signal.SIGKILL))
    # Longer than the leader key's ttl (12 s) plus a loop: without failsafe mode every primary would have
    # demoted itself by now.
    await asyncio.sleep(16)
    # Asked of each node itself (GET /cluster reads etcd, which is down): 200 on /primary only on a primary.
    kept = {name: await _is_primary(ctx.topology.cluster(name), leader) for name, leader in leaders.items()}
    await _server(ctx, "start", "etcd")
    return {"killed": "etcd", "pid": killed.get("pid"), "etcd_down_s": 16, "primaries": leaders,
            "still_primary_after_16s": kept, "primaries_kept": all(kept.values())}  # fmt: skip


async def _is_primary(cluster: Cluster, member: str) -> bool:
    node = member.rsplit("-", 1)[1]
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"http://127.0.0.1:{cluster.rest_port(node)}/primary")).status_code == 200
    except httpx.HTTPError:
        return False


async def whole(ctx: Context, detail: dict[str, Any] | None = None) -> bool:
    """Every cluster with its leader and synchronous standby, every server of the runner running."""
    status = await control.call(ctx.topology.control_socket, op="status")
    if not all(server["running"] for server in status["servers"].values()):
        return False
    return all([await servers.cluster_ready(c)() for c in ctx.topology.clusters])


async def _restart_haproxy(ctx: Context) -> dict[str, Any]:
    return await _restart(ctx, "haproxy")


async def _restart_rabbitmq(ctx: Context) -> dict[str, Any]:
    return await _restart(ctx, "rabbitmq")


def _catalogue() -> dict[str, Fault]:
    shard = [
        Fault("shard-primary-kill", "SIGKILL the shard primary's postmaster",
              "Patroni promotes the synchronous standby; writes to the shard back within 15 s, no error on "
              "other shards, the old primary rejoins as a standby (pg_rewind)", primary_kill, _rejoined, True),
        Fault("shard-primary-stop", "a planned switchover to the synchronous standby (Patroni's REST API)",
              "writes to the shard pause for the switchover only; no error on other shards", primary_stop,
              _switched, True),
        Fault("standby-kill", "SIGKILL the synchronous standby's postmaster",
              "synchronous writes go on: Patroni drops the standby from synchronous_standby_names (not strict) "
              "until it has caught up again, and never promotes it meanwhile", standby_kill, _rejoined, True),
    ]  # fmt: skip
    servers_ = [
        Fault("gateway-kill", "SIGKILL one gateway instance behind HAProxy",
              "HAProxy sends everything to the other instance; nothing a client would not retry (503 at most)",
              _child_kill("gateway-1"), _child_back("gateway-1")),
        Fault("haproxy-restart", "stop HAProxy (every connection through it cut) and start it again",
              "clients and pools reconnect by themselves; 503 or a refused connection while it is down",
              _restart_haproxy, lambda ctx, _: _running(ctx, "haproxy")),
        Fault("redis-primary-kill", "SIGKILL the Redis primary (Sentinel promotes the replica)",
              "requests go on with idempotency on PostgreSQL while Redis fails over; no error",
              redis_primary_kill, _redis_whole, needs="redis"),
        Fault("rabbit-restart", "stop the RabbitMQ node and start it again",
              "money keeps moving; events wait in the outbox and are all delivered after", _restart_rabbitmq,
              lambda ctx, _: _running(ctx, "rabbitmq"), needs="rabbitmq"),
        Fault("etcd-kill", "SIGKILL etcd for 16 s (longer than Patroni's ttl)",
              "every primary stays primary (failsafe mode) and writes go on", etcd_kill, whole),
    ]  # fmt: skip
    workers = [
        Fault(f"{name}-kill", f"SIGKILL the {name} process (the supervisor restarts it)",
              "nothing is lost or applied twice; its work resumes once it is back", _child_kill(name),
              _child_back(name))
        for name in ("relay", "notifications", "analytics", "recovery", "executor")
    ]  # fmt: skip
    return {fault.name: fault for fault in (*shard, *servers_, *workers)}


FAULTS = _catalogue()
