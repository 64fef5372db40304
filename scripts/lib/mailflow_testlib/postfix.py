"""A throw-away Postfix instance: `postfix -c DIR` as root with its own main.cf, master.cf, queue, data
directory and log file under one folder, chroot off; the machine's /etc/postfix is only read.

As root, `postfix -c DIR` accepts a directory that the default main.cf does not list in
`alternate_config_directories` (that check applies to unprivileged callers only), so nothing outside
the folder is changed. Used by scripts/bench, scripts/bench-throttle and tests/e2e/test_postfix_peer.py.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .processes import free_port, log, pid_alive, tool, wait_port

# Every program Postfix's own master.cf starts, each with chroot off (the fifth column): the instance
# runs from a temporary folder that has none of the files a chroot jail needs. The smtpd listener line
# comes first and is written per instance.
MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_TOOLS = ("postfix", "postconf", "postqueue", "smtp-source", "smtp-sink")


class PostfixUnavailable(Exception):
    """Postfix cannot run here (not installed and not installable, or not root); the reason is the message."""


def ensure_postfix() -> None:
    """Installs Debian's postfix package (preseeded as "Local only", so it asks nothing) when one of its
    programs is missing; raises PostfixUnavailable when that cannot be done."""
    if all(tool(t) for t in POSTFIX_TOOLS):
        return
    if os.geteuid() != 0:
        raise PostfixUnavailable("postfix (with smtp-source, smtp-sink) is not installed and installing it needs root")
    log("installing postfix (apt-get), preseeded as 'Local only'")
    subprocess.run("echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections",
                   shell=True, check=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env)
        subprocess.run(install, check=True, env=env)
    if not all(tool(t) for t in POSTFIX_TOOLS):
        raise PostfixUnavailable("postfix installed, but smtp-source/smtp-sink/postqueue still not found")


def postfix_version() -> str:
    r = subprocess.run([tool("postconf") or "postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def relaying_to(port: int) -> dict[str, str]:
    """The benchmarks' instance: everything not delivered locally goes to `[127.0.0.1]:port` in clear
    text; nothing else differs from the defaults (concurrency and back-off are what is compared)."""
    return {
        "myhostname": "bench-postfix.test",
        "mydomain": "bench-postfix.test",
        "myorigin": "$myhostname",
        "relayhost": f"[127.0.0.1]:{port}",
        "smtp_tls_security_level": "none",
        "smtpd_tls_security_level": "none",
        "local_recipient_maps": "",
        "biff": "no",
    }


class PostfixInstance:
    """One instance under `root`: SMTP on `host:port` (a free port when not given), optionally delivering
    `maildir_domain` with virtual(8) into the Maildir `root/vmail/inbox/` owned by user postfix.

    `start(settings)` writes main.cf (the location and listener settings, then `settings`) and master.cf,
    runs `postfix check` and `postfix start` and waits until smtpd answers. Needs root: the master binds
    and its daemons drop to user postfix, which is why every parent of `root` must be traversable.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int | None = None, smtpd_maxproc: str = "-",
                 maildir_domain: str | None = None, comment: str = "a throw-away Postfix instance") -> None:
        self.root = Path(root)
        self.etc = self.root / "etc"
        self.spool = self.root / "spool"
        self.lib = self.root / "lib"
        self.logfile = self.root / "log" / "maillog"
        self.vmail = self.root / "vmail"
        self.host = host
        self.port = port or free_port(host)
        self.smtpd_maxproc = smtpd_maxproc
        self.maildir_domain = maildir_domain
        self.comment = comment
        self.started = False

    def main_cf(self, settings: dict[str, object]) -> str:
        cf: dict[str, object] = {
            "compatibility_level": "3.6",
            "queue_directory": self.spool,
            "data_directory": self.lib,
            "maillog_file": self.logfile,
            "maillog_file_prefixes": self.root,
            "myhostname": "postfix.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
        }
        if self.maildir_domain:
            cf.update({
                "virtual_mailbox_domains": self.maildir_domain,
                "virtual_mailbox_base": self.vmail,
                "virtual_mailbox_maps": "static:inbox/",
                "virtual_uid_maps": f"static:{pwd.getpwnam('postfix').pw_uid}",
                "virtual_gid_maps": f"static:{grp.getgrnam('postfix').gr_gid}",
                "virtual_minimum_uid": "1",
            })
        cf.update(settings)
        lines = [f"# {self.comment}: only location, listener and the settings below differ from the defaults."]
        lines += [f"{k} = {v}".rstrip() for k, v in cf.items()]
        return "\n".join(lines) + "\n"

    def master_cf(self) -> str:
        return (f"# {self.comment}: chroot off everywhere, SMTP on {self.host}:{self.port} only.\n"
                f"{self.host}:{self.port} inet n - n - {self.smtpd_maxproc} smtpd\n" + MASTER_SERVICES)

    def postfix(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        # `-c DIR` on every call: the machine's own instance (/etc/postfix) is never addressed.
        r = subprocess.run([tool("postfix") or "postfix", "-c", str(self.etc), *cmd], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError(f"postfix -c {self.etc} {' '.join(cmd)} failed ({r.returncode}): "
                               f"{r.stdout}{r.stderr}\n{self.log_tail()}")
        return r

    def log_tail(self, lines: int = 15) -> str:
        if not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])

    def start(self, settings: dict[str, object] | None = None) -> "PostfixInstance":
        if os.geteuid() != 0:
            raise PostfixUnavailable("a Postfix instance needs root (master binds, daemons drop to user postfix)")
        ensure_postfix()
        for d in (self.etc, self.spool, self.lib, self.logfile.parent):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root.parent, self.root):
            os.chmod(d, 0o755)
        shutil.chown(self.lib, user="postfix")
        if self.maildir_domain:
            self.vmail.mkdir(parents=True, exist_ok=True)
            shutil.chown(self.vmail, user="postfix", group="postfix")
        (self.etc / "main.cf").write_text(self.main_cf(settings or {}))
        (self.etc / "master.cf").write_text(self.master_cf())
        self.postfix("check")
        self.started = True  # from here on, stop() has something to stop
        self.postfix("start")
        if not wait_port(self.port, 30, host=self.host):
            raise RuntimeError(f"postfix smtpd did not listen on {self.host}:{self.port}\n{self.log_tail()}")
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def non_default_settings(self) -> list[str]:
        r = subprocess.run([tool("postconf") or "postconf", "-c", str(self.etc), "-n"], capture_output=True, text=True)
        return [l for l in r.stdout.splitlines() if l.strip()]

    def queue(self) -> list[dict] | None:
        """`postqueue -j`: one dict per queued message (after the stop it reads the queue directly);
        None if it failed."""
        r = subprocess.run([tool("postqueue") or "postqueue", "-c", str(self.etc), "-j"], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return None
        rows = []
        for line in r.stdout.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def delivered(self) -> list[Path]:
        """The messages in the Maildir's new/ folder (with `maildir_domain`)."""
        new = self.vmail / "inbox" / "new"
        return sorted(new.iterdir()) if new.exists() else []

    def stop(self) -> None:
        """`postfix stop`, then `postfix abort` and SIGKILL for a master that lingers."""
        if not self.started:
            return
        pid = self.master_pid()
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 20
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and pid_alive(pid):
            log(f"postfix master {pid} still running; postfix abort")
            self.postfix("abort", check=False)
            time.sleep(1)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.started = False
