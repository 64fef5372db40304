"""Issue 10: what a hostile probe sent, byte for byte, and the reply or outcome each must get.

Duplicate recipients are delivered once; ENVID/ORCPT decoding to control characters, a signed SIZE
and an empty quoted local part are refused at the command; control characters in a Subject never
reach the terminal through `trace` or `queue show`; a quoted local part with spaces stays one
recipient in `queue list --json` and the API; a forged-looking local part stays one quoted field in
the text log; a client dripping bytes is closed at the request deadline.
"""

from __future__ import annotations

import json
import re
import socket
import time

from mfutil import SMTPClient, make_message, queue_id_of, wait_for, wait_for_delivery, all_delivered_files


def transaction(c: SMTPClient, mail: str) -> None:
    c.ehlo()
    r = c.cmd(mail)
    assert (r.code, r.enhanced) == (250, "2.1.0"), r


# -- item 4: duplicates -------------------------------------------------------------------------


def test_same_recipient_200_times_is_delivered_once(mailflow_server):
    srv = mailflow_server({"limits": {"recipients_per_message": 500}})
    rcpts = ["alice@contoso.test"] * 100 + ["ALICE@contoso.test", "Alice@CONTOSO.test", '"alice"@contoso.test'] * 33
    rcpts.append("bob@contoso.test")
    with SMTPClient(srv.port) as c:
        transaction(c, "MAIL FROM:<dup@example.net>")
        for rc in rcpts:
            r = c.cmd(f"RCPT TO:<{rc}>")
            # Every RCPT is accepted: a client is not told about duplicates.
            assert (r.code, r.enhanced) == (250, "2.1.5"), (rc, r)
        assert c.cmd("DATA").code == 354
        c.send(make_message("dup200") + b".\r\n")
        qid = queue_id_of(c.reply())
    wait_for_delivery(srv.data_dir, qid, count=2)
    srv.wait_queue_empty()
    files = [p for p in all_delivered_files(srv.data_dir) if p.name.startswith(qid)]
    assert sorted(p.parent.parent.name for p in files) == ["alice", "bob"], files
    rows = [m for m in srv.queue_json(include_done=True) if m["id"] == qid]
    assert rows and sorted(rows[0]["recipients"]) == ["alice@contoso.test", "bob@contoso.test"], rows


# -- item 5: control characters --------------------------------------------------------------


def test_envid_and_orcpt_decoding_to_control_characters_are_refused(server):
    cases = [
        ("MAIL FROM:<a@example.net> ENVID=x+0D+0AInjected", 501, "5.5.4"),
        ("MAIL FROM:<a@example.net> ENVID=+1B[2J+1B]0;pwned+07", 501, "5.5.4"),
        ("MAIL FROM:<a@example.net> ENVID=+7F", 501, "5.5.4"),
    ]
    with SMTPClient(server.port) as c:
        c.ehlo()
        for line, code, enhanced in cases:
            r = c.cmd(line)
            assert (r.code, r.enhanced) == (code, enhanced), (line, r)
        r = c.cmd("MAIL FROM:<a@example.net> ENVID=plain+2Bsafe")
        assert r.code == 250, r
        for orcpt in ("rfc822;a+0D+0AX-Injected:+20yes", "rfc822;+1B]0;title+07", "utf-8;+C2+9B2J"):
            r = c.cmd(f"RCPT TO:<alice@contoso.test> ORCPT={orcpt}")
            assert (r.code, r.enhanced) == (501, "5.5.4"), (orcpt, r)
        r = c.cmd("RCPT TO:<alice@contoso.test> ORCPT=rfc822;alice+40contoso.test")
        assert r.code == 250, r


def test_terminal_escapes_in_a_subject_are_shown_escaped(mailflow_server):
    srv = mailflow_server()
    subject = "Hi\x1b[2J\x1b]0;owned\x07 there\u202e"
    with SMTPClient(srv.port) as c:
        c.ehlo()
        # A header may carry ESC and BEL (RFC 5322 obs-text aside, it is what an attacker sends).
        message = make_message("esc", subject=subject)
        qid = c.send_message("evil@example.net", ["bob@contoso.test"], message)
    srv.wait_queue_empty()
    for args in (["trace", "--queue-id", qid, "--events"], ["queue", "show", qid]):
        r = srv.cli(*args)
        assert r.returncode == 0, r.stderr
        for ch in ("\x1b", "\x07", "\u202e"):
            assert ch not in r.stdout, (args, r.stdout)
        assert "\\x1b[2J" in r.stdout or "\\x1b[2J" in r.stdout.replace("…", ""), (args, r.stdout)
    # JSON output escapes by its encoder: the value survives intact.
    r = srv.cli("trace", "--queue-id", qid, "--json")
    assert "\x1b" not in r.stdout
    assert json.loads(r.stdout)[0]["subject"] == subject


# -- item 6: a quoted local part with spaces is one recipient ------------------------------------


def test_quoted_local_part_with_spaces_is_one_recipient(mailflow_server):
    srv = mailflow_server()
    token = srv.add_token("t")
    with SMTPClient(srv.port) as c:
        c.ehlo()
        # fabrikam.test is catch-all: the quoted mailbox is delivered locally.
        qid = c.send_message("a@example.net", ['"a b c"@fabrikam.test', "x@fabrikam.test"],
                             make_message("quoted", to="x@fabrikam.test"))
    expected = ['"a b c"@fabrikam.test', "x@fabrikam.test"]
    rows = wait_for(lambda: [m for m in srv.queue_json(include_done=True) if m["id"] == qid], what="queue row")
    assert rows[0]["recipients"] == expected, rows
    api = srv.api_json("GET", "/api/v1/queue?state=all", token)
    listed = api["messages"] if isinstance(api, dict) else api
    mine = [m for m in listed if m["id"] == qid]
    assert mine and mine[0]["recipients"] == expected, mine


# -- item 7: log fields cannot be forged ---------------------------------------------------------


def test_forged_fields_in_a_local_part_stay_one_quoted_log_value(mailflow_server):
    srv = mailflow_server()
    forged = '"x [Ingress] client=6.6.6.6 queue_id=FORGED"@fabrikam.test'  # fabrikam is catch-all
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qid = c.send_message("a@example.net", [forged], make_message("forged", to="x@fabrikam.test"))
    line = wait_for(lambda: [l for l in srv.stderr().splitlines() if f"queue_id={qid}" in l and "delivered" in l],
                    what="the delivery log line")[0]
    assert "queue_id=FORGED" not in line.replace('\\"', "").split('to="')[0], line
    # Parsed as logfmt, the line has exactly one client (none), one queue_id and one `to`.
    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line.split(" delivered ", 1)[1]))
    assert fields["queue_id"] == qid, line
    assert "client" not in fields, line
    assert fields["to"].startswith('"') and "client=6.6.6.6" in fields["to"], line


# -- item 8: no backscatter from an empty local part ---------------------------------------------


def test_empty_quoted_local_part_is_refused_at_rcpt(server):
    with SMTPClient(server.port) as c:
        transaction(c, "MAIL FROM:<a@example.net>")
        r = c.cmd('RCPT TO:<""@fabrikam.test>')
        assert (r.code, r.enhanced) == (553, "5.1.3"), r
        r = c.cmd("RCPT TO:<anyone@fabrikam.test>")
        assert r.code == 250, r


# -- item 9: SIZE syntax ----------------------------------------------------------------------


def test_signed_size_is_bad_syntax(server):
    with SMTPClient(server.port) as c:
        c.ehlo()
        for value in ("+5", "-5", " 5", "5k", "0x10"):
            r = c.cmd(f"MAIL FROM:<a@example.net> SIZE={value}")
            assert (r.code, r.enhanced) == (501, "5.5.4"), (value, r)
        r = c.cmd("MAIL FROM:<a@example.net> SIZE=+5")
        assert "Bad message size syntax" in r.text, r
        assert c.cmd("MAIL FROM:<a@example.net> SIZE=5").code == 250


# -- item 10: request deadlines ------------------------------------------------------------------


def drip(port: int, prefix: bytes, byte: bytes, every: float, limit: float) -> tuple[float, bytes]:
    """Sends `prefix`, then one byte every `every` seconds until the server closes or `limit` passes;
    returns (seconds from the first drip to the close, everything the server sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=limit + 5)
    got = s.recv(4096)
    s.sendall(prefix)
    time.sleep(0.3)
    s.setblocking(False)
    start = time.monotonic()
    closed_at = None
    while time.monotonic() - start < limit:
        try:
            s.sendall(byte)
        except OSError:
            closed_at = time.monotonic()
            break
        end = time.monotonic() + every
        while time.monotonic() < end:
            try:
                chunk = s.recv(4096)
                if not chunk:
                    closed_at = time.monotonic()
                    break
                got += chunk
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:
                closed_at = time.monotonic()
                break
        if closed_at:
            break
    s.close()
    return (closed_at - start if closed_at else float("inf")), got


def test_command_dripped_byte_by_byte_is_closed_at_the_command_deadline(mailflow_server):
    srv = mailflow_server({"timeouts": {"command": 3, "data": 3, "session": 3600}})
    elapsed, got = drip(srv.port, b"", b"E", every=0.5, limit=12)
    # An idle timer restarted by every byte would never fire; the deadline is 3 s for the line.
    assert elapsed < 6, (elapsed, got)
    assert b"421 4.4.2" in got, got


def test_body_dripped_below_the_minimum_rate_is_closed(mailflow_server):
    srv = mailflow_server({"timeouts": {"command": 300, "data": 3, "session": 3600}})
    prefix = b"EHLO c.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n"
    elapsed, got = drip(srv.port, prefix, b"x", every=0.5, limit=12)
    assert elapsed < 6, (elapsed, got)
    assert b"354 " in got and b"421 4.4.2" in got, got


def test_deadlines_can_be_turned_off_for_the_old_idle_timers(mailflow_server):
    srv = mailflow_server({"timeouts": {"command": 2, "data": 2, "session": 3600, "request_deadline": False}})
    elapsed, got = drip(srv.port, b"", b"E", every=0.5, limit=5)
    assert elapsed == float("inf"), (elapsed, got)
