"""`mailflow health replay`: the detector on a virtual clock, through the real binary.

A small world (three forests in two regions, many clients) replays four hours of normal traffic,
then one forest refuses most inbound sessions with Exchange's 421 4.3.2 for half an hour: one
incident, found within two minutes of the onset, scoped to exactly that forest and region, restored
by itself after the fault ends. A bad line is refused with its line number.
"""

from __future__ import annotations

import datetime as dt
import json
import random

from mfutil import run_cli

FOREST_TEXT = ("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, "
               "closing transmission channel")
FORESTS = [("NAMPR01", "north-america", ["contoso", "fabrikam"]),
           ("NAMPR02", "north-america", ["adatum", "litware"]),
           ("EURPR01", "europe", ["tailspin", "wingtip"])]
T0 = dt.datetime(2026, 6, 8, tzinfo=dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def lines(minutes: int, fault_from: int, fault_to: int) -> list[str]:
    """JSON lines in time order (the replay format requires it)."""
    rng = random.Random(11)
    out = []
    for m in range(minutes):
        for i in range(12):
            for forest, region, tenants in FORESTS:
                t = T0 + dt.timedelta(minutes=m, seconds=i * 5)
                tenant = rng.choice(tenants)
                reply = "250 2.0.0 Ok: queued as 5XQKPVG483DHYM44"
                if forest == "NAMPR01" and fault_from <= m < fault_to and rng.random() < 0.8:
                    reply = FOREST_TEXT
                elif rng.random() < 0.01:
                    reply = f"550 5.1.1 <u{rng.randrange(999)}@{tenant}.test>: no such user"
                out.append(json.dumps({"time": iso(t), "kind": "smtp", "direction": "inbound", "forest": forest,
                                       "region": region, "tenant": tenant,
                                       "client_ip": f"198.51.100.{rng.randrange(200)}", "reply": reply}))
                out.append(json.dumps({"time": iso(t + dt.timedelta(milliseconds=500)), "kind": "smtp",
                                       "direction": "outbound", "forest": forest, "region": region, "tenant": tenant,
                                       "destination": rng.choice(["gmail.com", "outlook.com", "gmx.de"]),
                                       "reply": "250 2.0.0 OK", "latency_ms": 900}))
    return sorted(out, key=lambda line: json.loads(line)["time"])


def test_replay_finds_the_forest_incident_and_restores_it(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text("\n".join(lines(minutes=300, fault_from=240, fault_to=270)) + "\n")
    r = run_cli("health", "replay", str(path), "--json")
    assert r.returncode == 0, r.stderr
    issues = json.loads(r.stdout)
    assert len(issues) == 1, [i["title"] for i in issues]
    issue = issues[0]
    onset = T0 + dt.timedelta(minutes=240)
    detected = dt.datetime.fromisoformat(issue["detectedDateTime"].replace("Z", "+00:00"))
    assert (detected - onset).total_seconds() <= 120, issue["detectedDateTime"]
    assert issue["id"] == "MF1"
    assert issue["classification"] == "incident" and issue["origin"] == "mailflow"
    assert issue["scope"]["forests"] == ["NAMPR01"] and issue["scope"]["regions"] == ["north-america"]
    assert issue["signature"] == FOREST_TEXT
    assert issue["status"] == "serviceRestored" and issue["endDateTime"] is not None
    assert {"id", "title", "classification", "status", "origin", "signature", "startDateTime", "detectedDateTime",
            "endDateTime", "scope", "reports", "posts"} <= issue.keys()
    assert "Preliminary root cause:" in issue["posts"][0]["description"]
    # The table says the same.
    r = run_cli("health", "replay", str(path))
    assert r.returncode == 0 and "MF1" in r.stdout and "incident" in r.stdout and "1 issue(s)" in r.stdout


def test_replay_of_normal_traffic_opens_nothing(tmp_path):
    path = tmp_path / "normal.jsonl"
    path.write_text("\n".join(lines(minutes=240, fault_from=-1, fault_to=-1)) + "\n")
    r = run_cli("health", "replay", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_a_bad_line_is_refused_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = lines(minutes=1, fault_from=-1, fault_to=-1)
    path.write_text(good[0] + "\n" + '{"time": "2026-06-08T00:00:01Z", "kind": "smtp", "direction": "up"}\n')
    r = run_cli("health", "replay", str(path), "--json")
    assert r.returncode == 1
    assert "line 2:" in r.stderr + r.stdout and "direction" in r.stderr + r.stdout
