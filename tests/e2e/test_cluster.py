"""Cluster mode (issue 16): three Mailflow nodes on loopback ports share one PostgreSQL (a throw-away
server from Debian's packages, started here) and hold a resource forest's session cap across the
cluster.

What must hold:
- forest NAMPR01 capped at 10 across three nodes, 60 concurrent senders spread over the nodes: exactly
  10 admitted, the other 50 refused with Exchange's `421 4.3.2`, never more than 10 sessions in the
  forest (each node's own count, sampled);
- all the load on one node: it grows into what the idle nodes do not use, within a few heartbeats;
- one node killed with SIGKILL: its part goes to the two left within the node timeout, and the cap
  still holds (10, not 10 plus the dead node's part);
- counters back to 0 when the senders leave; `mailflow cluster status` shows the dead node as gone;
- a clean stop removes the node at once, so the last node takes the whole forest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from mfutil import SMTPClient, run_cli, wait_for
from pgutil import Postgres, free_port

FOREST_TEXT = "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit"
NODE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def node_config(pg: Postgres, name: str, cap: int = 10) -> dict:
    return {
        "cluster": {"postgres": pg.url, "node": name, "node_timeout": f"{NODE_TIMEOUT:g}s"},
        "forests": [{"name": "NAMPR01", "region": "north-america", "tenants": ["contoso", "fabrikam"],
                     "max_connections": cap}],
    }


def forest_sessions(srv) -> int:
    """The node's own count of sessions in NAMPR01 (`mailflow limits --json`, rewritten every second)."""
    r = srv.cli("limits", "--json")
    assert r.returncode == 0, r.stderr
    return next(f["sessions"] for f in json.loads(r.stdout)["forests"] if f["name"] == "NAMPR01")


def seen_nodes(srv) -> int:
    """How many nodes the node itself last split NAMPR01 over (its `mailflow limits --json`)."""
    r = srv.cli("limits", "--json")
    assert r.returncode == 0, r.stderr
    share = next(f for f in json.loads(r.stdout)["forests"] if f["name"] == "NAMPR01").get("share")
    return share["nodes"] if share else 0


def cluster_status(srv) -> dict:
    r = srv.cli("cluster", "status", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


class Sender:
    """One client that opens a session, gets to RCPT in NAMPR01 and holds the session until released."""

    def __init__(self, port: int):
        self.port = port
        self.reply = ""
        self.client: SMTPClient | None = None

    def open(self) -> str:
        c = SMTPClient(self.port, timeout=20)
        for line in ("EHLO sender.test", "MAIL FROM:<x@example.net>", "RCPT TO:<alice@contoso.test>"):
            r = c.cmd(line)
            self.reply = f"{r.code} {r.text}"
            if r.code != 250:
                c.close()
                return self.reply
        self.client = c
        return self.reply

    @property
    def admitted(self) -> bool:
        return self.client is not None

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.send("QUIT\r\n")
            except OSError:
                pass
            self.client.close()
            self.client = None


def open_all(senders: list[Sender]) -> None:
    threads = [threading.Thread(target=s.open) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_a_forest_cap_holds_across_three_nodes_and_a_killed_nodes_part_is_taken_over(mailflow_server, postgres):
    nodes = [mailflow_server(node_config(postgres, n)) for n in ("node-a", "node-b", "node-c")]
    wait_for(lambda: sum(n["alive"] for n in cluster_status(nodes[0])["nodes"]) == 3, timeout=10,
             what="three nodes alive")
    # Each node splits the forest by what its own last heartbeat saw: a node that started first
    # saw fewer nodes until its next heartbeat (the documented tolerance while nodes join).
    wait_for(lambda: all(seen_nodes(n) == 3 for n in nodes), timeout=10, what="every node to see three nodes")
    # Each node publishes the address it listens on (the config says port 0).
    wait_for(lambda: {n["name"]: n["address"] for n in cluster_status(nodes[0])["nodes"]}
             == {n.config["cluster"]["node"]: f"127.0.0.1:{n.port}" for n in nodes}, timeout=5,
             what="each node's listening address")
    claims = cluster_status(nodes[0])["forests"][0]["claims"]
    assert sum(claims.values()) == 10 and len(claims) == 3, claims

    # 60 concurrent senders, spread over the nodes as a load balancer would.
    senders = [Sender(nodes[i % 3].port) for i in range(60)]
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], sum(forest_sessions(n) for n in nodes if n.running()))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    open_all(senders)
    admitted = [s for s in senders if s.admitted]
    refused = [s for s in senders if not s.admitted]
    assert len(admitted) == 10, [s.reply for s in senders]
    assert all(s.reply.startswith(FOREST_TEXT) for s in refused), {s.reply for s in refused}
    # Each node took at most its claim.
    by_node = {n.port: sum(1 for s in admitted if s.port == n.port) for n in nodes}
    assert all(by_node[n.port] <= claims[n.config["cluster"]["node"]] for n in nodes), (by_node, claims)
    wait_for(lambda: cluster_status(nodes[0])["forests"][0]["sessions"] == 10, timeout=5,
             what="the heartbeats to publish 10 sessions")

    # Kill the node holding the most: its part goes to the other two.
    victim = max(nodes, key=lambda n: by_node[n.port])
    victim.kill()
    killed_at = time.monotonic()
    survivors = [n for n in nodes if n is not victim]
    for s in admitted:
        if s.port == victim.port:
            s.close()
    held = sum(1 for s in admitted if s.port != victim.port)
    # New senders on the survivors, until the forest is full again.
    extra: list[Sender] = []
    while time.monotonic() - killed_at < NODE_TIMEOUT + 5:
        batch = [Sender(survivors[i % 2].port) for i in range(4)]
        open_all(batch)
        extra += [s for s in batch if s.admitted]
        if held + len(extra) >= 10:
            break
        time.sleep(0.2)
    took_over = time.monotonic() - killed_at
    assert held + len(extra) == 10, (held, len(extra))
    assert took_over < NODE_TIMEOUT + 3, took_over
    more = [Sender(survivors[i % 2].port) for i in range(10)]
    open_all(more)
    assert not any(s.admitted for s in more), "the cap is 10 with a node gone, not 10 plus its part"
    print(f"after SIGKILL: the two left took the dead node's part in {took_over:.1f} s (node timeout {NODE_TIMEOUT} s)")

    status = cluster_status(survivors[0])
    gone = {n["name"]: n["alive"] for n in status["nodes"]}
    assert gone[victim.config["cluster"]["node"]] is False, status
    r = survivors[0].cli("cluster", "status")
    assert r.returncode == 0 and "no (gone)" in r.stdout and "2 of 3 node(s) counting" in r.stdout, r.stdout

    # Everyone leaves: counters back to 0.
    for s in admitted + extra:
        s.close()
    wait_for(lambda: all(forest_sessions(n) == 0 for n in survivors), timeout=10, what="forest sessions back to 0")
    wait_for(lambda: cluster_status(survivors[0])["forests"][0]["sessions"] == 0, timeout=5,
             what="published sessions back to 0")
    sampling.set()
    sampler.join(5)
    assert peak[0] <= 10, f"{peak[0]} sessions in a forest capped at 10"

    # A clean stop leaves at once: the last node takes the whole forest.
    assert survivors[1].stop() == 0
    stopped_at = time.monotonic()
    wait_for(lambda: seen_nodes(survivors[0]) == 1, timeout=3, what="the last node to see itself alone")
    print(f"after a clean stop: the last node had the whole forest in {time.monotonic() - stopped_at:.1f} s")
    wait_for(lambda: cluster_status(survivors[0])["forests"][0]["claims"] == {survivors[0].config["cluster"]["node"]: 10},
             timeout=3, what="the last node to claim the whole forest")
    alone = [Sender(survivors[0].port) for _ in range(12)]
    open_all(alone)
    assert sum(s.admitted for s in alone) == 10
    for s in alone:
        s.close()


def test_a_busy_node_grows_into_what_idle_nodes_do_not_use(mailflow_server, postgres):
    """Everything through one node (a load balancer that sticks): the cap is still the forest's 10
    for the cluster, not a third of it; the idle nodes keep room for one new session each."""
    nodes = [mailflow_server(node_config(postgres, n)) for n in ("busy-a", "idle-b", "idle-c")]
    wait_for(lambda: all(seen_nodes(n) == 3 for n in nodes), timeout=15, what="every node to see three nodes")
    held: list[Sender] = []
    start = time.monotonic()
    while time.monotonic() - start < 10 and len(held) < 8:
        batch = [Sender(nodes[0].port) for _ in range(4)]
        open_all(batch)
        held += [s for s in batch if s.admitted]
        assert sum(forest_sessions(n) for n in nodes) <= 10
        time.sleep(0.3)
    took = time.monotonic() - start
    assert len(held) == 8, f"the busy node holds {len(held)} after {took:.1f} s"
    print(f"all load on one node: it held 8 of 10 after {took:.1f} s (heartbeat 1 s)")
    # The idle nodes can still take a session each at once, and then the forest is full.
    late = [Sender(nodes[1].port), Sender(nodes[2].port)]
    open_all(late)
    assert all(s.admitted for s in late), [s.reply for s in late]
    more = [Sender(n.port) for n in nodes for _ in range(2)]
    open_all(more)
    assert not any(s.admitted for s in more), [s.reply for s in more]
    for s in held + late:
        s.close()


def test_a_node_without_its_database_keeps_serving(mailflow_server, postgres, tmp_path):
    """The database unreachable at start (a port nobody listens on): the node starts, takes mail with
    the whole forest as its part, and says why in its log."""
    cfg = node_config(postgres, "node-lonely")
    cfg["cluster"]["postgres"] = f"postgres://mailflow@127.0.0.1:{free_port()}/postgres"
    srv = mailflow_server(cfg)
    s = Sender(srv.port)
    assert s.open().startswith("250"), s.reply
    s.close()
    assert "cluster database unreachable" in srv.stderr()
    r = srv.cli("cluster", "status")
    assert r.returncode == 1 and "cannot read the cluster database" in r.stderr, r.stdout + r.stderr
    assert ":***@" not in r.stderr and "postgres://mailflow@127.0.0.1" in r.stderr


@pytest.mark.parametrize("value,message", [
    ("mysql://u@h/db", "is not a postgres:// URL"),
    ("postgres://u@h/db?sslmode=verify-full", "sslmode must be disable or require"),
])
def test_a_bad_cluster_database_url_is_refused_by_name(tmp_path, value, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cluster:\n  postgres: '{value}'\n")
    r = run_cli("config", "check", str(cfg))
    assert r.returncode == 1 and f"cluster.postgres: {message}" in r.stderr, r.stdout + r.stderr


def send_one(port: int) -> str:
    """One whole transaction to alice@contoso.test (NAMPR01); the first reply that is not 250 or 354,
    or the reply to the dot."""
    with SMTPClient(port, timeout=20) as c:
        for line in ("EHLO sender.test", "MAIL FROM:<x@example.net>", "RCPT TO:<alice@contoso.test>", "DATA"):
            r = c.cmd(line)
            if r.code not in (250, 354):
                return f"{r.code} {r.text}"
        r = c.cmd("Subject: rate\r\n\r\nhi\r\n.")
        return f"{r.code} {r.text}"


def test_a_forest_message_rate_is_split_across_the_nodes(mailflow_server, postgres):
    """max_messages_per_minute 6 over three nodes: 2 a minute each, 6 for the cluster."""
    cfg = [node_config(postgres, n) for n in ("rate-a", "rate-b", "rate-c")]
    for c in cfg:
        c["forests"][0]["max_messages_per_minute"] = 6
    nodes = [mailflow_server(c) for c in cfg]
    # Exactly three: nodes of the tests before stay alive in the table for the node timeout.
    wait_for(lambda: all(seen_nodes(n) == 3 for n in nodes), timeout=15, what="every node to see three nodes")
    replies = [send_one(n.port) for n in nodes for _ in range(3)]
    accepted = [r for r in replies if r.startswith("250")]
    refused = [r for r in replies if not r.startswith("250")]
    assert len(accepted) == 6, "\n".join(replies)
    assert all(r.startswith("451 4.7.1 Resource forest NAMPR01 is receiving too many messages") for r in refused), refused


def test_a_database_restart_does_not_stop_mail_and_heartbeats_resume(mailflow_server):
    """PostgreSQL stopped under two nodes: both keep serving with their last part (2 of a cap of 4
    each), say so once, and pick the heartbeats up again when it is back."""
    pg = Postgres().start()
    try:
        nodes = [mailflow_server(node_config(pg, n, cap=4)) for n in ("pg-a", "pg-b")]
        wait_for(lambda: all(seen_nodes(n) == 2 for n in nodes), timeout=10, what="both nodes to see two nodes")
        pg.run("pg_ctl", "-D", str(pg.data), "-m", "fast", "-w", "stop")
        wait_for(lambda: all("cluster database unreachable" in n.stderr() for n in nodes), timeout=10,
                 what="both nodes to notice")
        senders = [Sender(nodes[i % 2].port) for i in range(6)]
        open_all(senders)
        assert sum(s.admitted for s in senders) == 4, [s.reply for s in senders]
        assert all(seen_nodes(n) == 2 for n in nodes), "each node kept its last part"
        for s in senders:
            s.close()
        pg.run("pg_ctl", "-D", str(pg.data), "-l", str(pg.root / "log"), "-w", "-t", "60", "-o",
               f"-p {pg.port} -k {pg.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        wait_for(lambda: sum(n["alive"] for n in cluster_status(nodes[0])["nodes"]) == 2, timeout=15,
                 what="heartbeats after the restart")
        assert all(n.running() for n in nodes)
    finally:
        pg.stop()


def test_a_stopped_database_process_holds_neither_mail_nor_shutdown(mailflow_server):
    """PostgreSQL frozen (SIGSTOP on the postmaster and its backends: a hung server, no reset): each
    heartbeat gives up at its bound, the nodes keep serving with their claims, and a node still stops
    cleanly and quickly."""
    pg = Postgres().start()
    frozen: list[int] = []
    try:
        nodes = [mailflow_server(node_config(pg, n, cap=4)) for n in ("stall-a", "stall-b")]
        wait_for(lambda: all(seen_nodes(n) == 2 for n in nodes), timeout=10, what="both nodes to see two nodes")
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        frozen = [postmaster] + [int(p) for p in children]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: all("cluster database unreachable" in n.stderr() for n in nodes), timeout=15,
                 what="both nodes to give up on the frozen database")
        senders = [Sender(nodes[i % 2].port) for i in range(6)]
        open_all(senders)
        assert sum(s.admitted for s in senders) == 4, [s.reply for s in senders]
        for s in senders:
            s.close()
        t0 = time.monotonic()
        assert nodes[0].stop(timeout=30) == 0
        took = time.monotonic() - t0
        assert took < 10, f"stopping took {took:.1f} s with the database frozen"
        print(f"a node stopped in {took:.1f} s with its database frozen")
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        pg.stop()
