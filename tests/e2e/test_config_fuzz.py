"""Issue 15: config files fuzzed. `mailflow config check FILE` on mutated configs: random bytes, deep
nesting, huge scalars, anchor/alias bombs, wrong types, huge numbers, unicode, tabs, several
documents, tags, truncation, invalid UTF-8.

Every run must end in exit 0 (with an `OK` line) or exit 1 with exactly one line on stderr that
names the file: never a signal (a Swift trap is SIGTRAP/SIGILL), never a hang (10 s), never more
than `MAX_RSS_MB` of memory. CI runs a fixed number of seeded cases; `scripts/chaos --fuzz-minutes N`
runs the same generator for longer with a fresh seed and reports what it found.

Run: MAILFLOW_BIN=... python3 -m pytest tests/e2e/test_config_fuzz.py -q -p no:cacheprovider
(MAILFLOW_FUZZ_CASES and MAILFLOW_FUZZ_SEED change the size and seed of the CI run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mfutil import default_config, mailflow_bin, to_yaml

TIMEOUT = 10.0
MAX_RSS_MB = 512
CI_CASES = int(os.environ.get("MAILFLOW_FUZZ_CASES", "250"))
CI_SEED = int(os.environ.get("MAILFLOW_FUZZ_SEED", "15"))


# --------------------------------------------------------------------------------------------
# valid configs to start from


def base_configs() -> list[str]:
    """A few valid configs covering most sections (each passes `config check` unmutated)."""
    full = default_config()
    full["relay"] = {"trusted_networks": ["127.0.0.0/8", "::1/128"]}
    full["dns"] = {"servers": ["127.0.0.1:53"], "timeout": "2s", "attempts": 2}
    full["delivery"] = {"concurrency": 8, "retry_intervals": ["1m", "5m", "15m"], "expiry": "2d",
                        "mx_port": 25, "helo_name": "out.example.test", "delay_notice": "4h"}
    full["trace"] = {"retention": "7d"}
    full["health"] = {"enabled": True, "bucket": "10s", "window": "5m"}
    full["forests"] = [{"name": "f1", "tenants": ["contoso"], "max_connections": 100}]
    minimal = {"server": {"hostname": "mx.example.test", "smtp": ["127.0.0.1:2525"]}}
    flow = ('{server: {hostname: mx.example.test, smtp: ["127.0.0.1:0"]}, '
            'limits: {max_message_size: 10MB}, tenants: [{name: t, domains: [t.test], catch_all: true}]}\n')
    anchored = (
        "server:\n  hostname: mx.example.test\n  smtp: &listen\n    - 127.0.0.1:0\n"
        "timeouts: &t {command: 5m, data: 3m}\n"
        "tenants:\n  - name: a\n    domains: [a.test]\n    mailboxes: [alice, bob]\n"
        "  - name: b\n    domains:\n      - b.test\n    catch_all: yes\n")
    return [to_yaml(full), to_yaml(default_config()), to_yaml(minimal), flow, anchored, ""]


# --------------------------------------------------------------------------------------------
# mutations: each takes (rng, text) and returns bytes


def _lines(text: str) -> list[str]:
    return text.split("\n")


def m_bytes(rng: random.Random, text: str) -> bytes:
    """Random bytes flipped, inserted, deleted."""
    b = bytearray(text.encode())
    for _ in range(rng.randint(1, 12)):
        op = rng.random()
        pos = rng.randint(0, len(b))
        if op < 0.4 and b:
            b[min(pos, len(b) - 1)] = rng.randint(0, 255)
        elif op < 0.7:
            b[pos:pos] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 8)))
        elif b:
            del b[pos:pos + rng.randint(1, 16)]
    return bytes(b)


def m_yaml_chars(rng: random.Random, text: str) -> bytes:
    """YAML's own indicator characters dropped in at random."""
    chars = list(text)
    for _ in range(rng.randint(1, 10)):
        pos = rng.randint(0, len(chars))
        chars[pos:pos] = rng.choice(["[", "]", "{", "}", ":", ": ", "- ", "? ", "&a ", "*a", "!", "!!str ", "|",
                                     ">", "'", '"', "#", "%", "@", "`", ",", "\n", "\t", "  ", "---\n", "...\n",
                                     "<<: *a\n", "\\", "\r", "\r\n"])
    return "".join(chars).encode()


def m_deep(rng: random.Random, text: str) -> bytes:
    """Deep nesting: flow, block, mixed, with and without a section key in front."""
    depth = rng.choice([10, 63, 64, 65, 100, 1000, 5000, 20000])
    kind = rng.choice(["flow-seq", "flow-map", "block-seq", "block-map", "mixed", "indentless"])
    if kind == "flow-seq":
        body = "[" * depth + "1" + "]" * depth
    elif kind == "flow-map":
        body = "{a: " * depth + "1" + "}" * depth
    elif kind == "block-seq":
        body = "\n".join(" " * i + "-" for i in range(min(depth, 3000))) + " 1"
    elif kind == "block-map":
        body = "\n".join(" " * i + f"k{i}:" for i in range(min(depth, 3000))) + " 1"
    elif kind == "indentless":
        body = "\n".join(f"k{i}:\n- " for i in range(min(depth, 3000))) + "1"
    else:
        body = "".join(rng.choice(["[", "{a: ", "[b: "]) for _ in range(depth))
        if rng.random() < 0.5:
            body += "1"  # often unbalanced on purpose
    section = rng.choice(["", "server: ", "limits:\n  per_source: ", "tenants: "])
    where = rng.choice(["front", "end"])
    piece = section + body + "\n"
    return (piece + text if where == "front" else text + "\n" + piece).encode()


def m_huge_scalar(rng: random.Random, text: str) -> bytes:
    size = rng.choice([4096, 4097, 70_000, 1 << 20, (1 << 20) + 10, 3 << 20])
    filler = rng.choice(["x", "é", "😀", " ", "a\\n"]) * (size // 2 + 1)
    filler = filler[:size]
    style = rng.choice(["plain", "single", "double", "block", "key"])
    if style == "plain":
        line = f"server:\n  hostname: {filler}\n"
    elif style == "single":
        line = f"server:\n  hostname: '{filler}'\n"
    elif style == "double":
        line = f'server:\n  hostname: "{filler}"\n'
    elif style == "block":
        line = "server:\n  hostname: |\n    " + filler + "\n"
    else:
        line = f"{filler}: 1\n"
    return line.encode()


def m_alias_bomb(rng: random.Random, text: str) -> bytes:
    """Billion laughs, alias chains, recursive-looking merges."""
    width = rng.choice([2, 10, 20])
    levels = rng.choice([3, 9, 15, 30])
    kind = rng.choice(["laughs", "chain", "merge", "self", "undefined"])
    if kind == "laughs":
        out = "l0: &l0 [" + ", ".join(["lol"] * width) + "]\n"
        for i in range(1, levels):
            out += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n"
        out += f"tenants: *l{levels - 1}\n"
    elif kind == "chain":
        out = "a0: &a0 {x: 1}\n" + "".join(f"a{i}: &a{i} {{x: *a{i - 1}}}\n" for i in range(1, levels * 5))
    elif kind == "merge":
        out = "base: &b {hostname: mx.example.test}\n" + "".join(
            f"m{i}: &m{i}\n  <<: *{'b' if i == 0 else f'm{i - 1}'}\n  k{i}: v\n" for i in range(levels))
        out += f"server:\n  <<: *m{levels - 1}\n"
    elif kind == "self":
        out = "server: &s\n  hostname: *s\n"
    else:
        out = "server:\n  hostname: *nowhere\n"
    return (out if rng.random() < 0.6 else text + "\n" + out).encode()


WRONG_VALUES = [
    "[]", "{}", "[1, 2, 3]", "{a: b}", "null", "~", "", "true", "no", "0", "-1", "-0", "1e308", "-1e308", ".inf",
    "-.inf", ".nan", "NaN", "0x7fffffffffffffff", "9223372036854775807", "9223372036854775808",
    "-9223372036854775809", "99999999999999999999999999", "1" * 400, "0o777", "0b101", "1_000", "+5", "1.5",
    "2001-12-14t21:59:43.10-05:00", "!!binary aGVsbG8=", "!!int abc", "!!float 1", "!!map {}", "!!seq []",
    "!!python/object:os.system ls", "!custom x", "'quoted'", '"\\u0000"', '"\\x00\\x01"', '"a\\nb"', "|\n  x\n  y",
    "9999999999999999GB", "99999999999PB", "1e300s", "1e300d", "999999999999999999d", "-5m", "5y", "  5m  ",
    "18446744073709551616KB", "8589934592GB", "0.0000001s", "1e-300", "∞", "٣", "１０", "10 MB", "10mb",
    "127.0.0.1:99999", "127.0.0.1:-1", "[::1]:0", "256.0.0.1/8", "127.0.0.0/99", "0.0.0.0/0", "::/0",
    "http://[::1", "/dev/zero", "/proc/self/mem", "../../../../etc/shadow", "\u202eevil", "a\u0000b",
]


def m_wrong_types(rng: random.Random, text: str) -> bytes:
    """A value (or a whole section) replaced by one of another type or out of range."""
    lines = _lines(text)
    candidates = [i for i, l in enumerate(lines) if ":" in l]
    for _ in range(rng.randint(1, 4)):
        if not candidates:
            break
        i = rng.choice(candidates)
        key = lines[i].split(":", 1)[0]
        value = rng.choice(WRONG_VALUES)
        if "\n" in value:  # a block scalar: indent its lines under the key
            indent = len(key) - len(key.lstrip()) + 2
            value = value.replace("\n", "\n" + " " * indent)
        lines[i] = f"{key}: {value}"
    return "\n".join(lines).encode()


def m_sections(rng: random.Random, text: str) -> bytes:
    """Known keys with values of every wrong shape, appended as a section of its own."""
    sections = {
        "server": ["hostname", "smtp", "data", "log_level", "log_format"],
        "limits": ["max_message_size", "recipients_per_message", "max_errors_per_session", "tarpit", "greet_pause",
                   "per_source", "mailbox_messages_per_hour"],
        "timeouts": ["command", "data", "session", "shutdown_grace"],
        "delivery": ["concurrency", "retry_intervals", "expiry", "mx_port", "helo_name", "delay_notice"],
        "dns": ["servers", "timeout", "attempts"],
        "health": ["bucket", "window", "minimum_duration", "restore_after", "warm_up", "webhook"],
        "trace": ["retention", "prune_interval", "sample_interval"],
        "admin": ["listen", "session_lifetime"],
        "relay": ["trusted_networks", "allow_open_relay"],
        "submission": ["failure_window", "lockout"],
        "tenants": [], "forests": [],
    }
    name = rng.choice(list(sections))
    keys = sections[name]
    if not keys:
        item = rng.choice(["- {name: x, domains: " + rng.choice(WRONG_VALUES) + "}",
                           "- name: " + rng.choice(WRONG_VALUES), "- " + rng.choice(WRONG_VALUES),
                           "- {name: t, domains: [t.test], mailboxes: " + rng.choice(WRONG_VALUES) + "}",
                           "- {name: f, tenants: [nobody], max_connections: " + rng.choice(WRONG_VALUES) + "}"])
        section = f"{name}:\n  {item}\n"
    else:
        values = [rng.choice(WRONG_VALUES).replace("\n", "\n    ") for _ in keys]
        body = "".join(f"  {k}: {v}\n" for k, v in zip(rng.sample(keys, rng.randint(1, len(keys))), values))
        section = f"{name}:\n{body}"
    kept = "\n".join(l for l in _lines(text) if not l.startswith(name + ":"))  # avoid a duplicate key
    return (kept + "\n" + section if rng.random() < 0.5 else section).encode()


UNICODE = ["é", "ß", "İ", "ǅ", "ﬀ", "😀", "👩‍👩‍👧", "\u200b", "\u200d", "\u202e", "\u2028", "\u2029", "\u0085",
           "\ufeff", "\ufffe", "\uffff", "\U0010ffff", "\u0301", "ℌ", "Ω", "ｍｘ", "١٢٣", "\x7f", "\x00", "\x1b[31m",
           "\x0c", "\x0b"]


def m_unicode(rng: random.Random, text: str) -> bytes:
    chars = list(text)
    for _ in range(rng.randint(1, 12)):
        pos = rng.randint(0, len(chars))
        chars[pos:pos] = rng.choice(UNICODE)
    out = "".join(chars)
    if rng.random() < 0.2:
        out = "\ufeff" + out  # a BOM
    return out.encode("utf-8", "surrogatepass")


def m_tabs(rng: random.Random, text: str) -> bytes:
    """Indentation with tabs (YAML forbids them there), tabs around values, CR line ends."""
    lines = _lines(text)
    out = []
    for l in lines:
        r = rng.random()
        stripped = l.lstrip(" ")
        n = len(l) - len(stripped)
        if n and r < 0.3:
            l = "\t" * (n // 2) + stripped
        elif r < 0.4:
            l = l.replace(": ", ":\t", 1)
        elif r < 0.45:
            l = l + "\t"
        out.append(l)
    sep = rng.choice(["\n", "\n", "\r\n", "\r"])
    return sep.join(out).encode()


def m_documents(rng: random.Random, text: str) -> bytes:
    """Several documents, directives, document end markers."""
    return rng.choice([
        "---\n" + text + "\n---\n" + text,
        "%YAML 1.1\n---\n" + text,
        "%YAML 9.9\n---\n" + text,
        "%TAG ! tag:example.com,2000:\n---\n" + text,
        text + "\n...\n" + text,
        "--- !!map\n" + text,
        "--- |\n  " + text.replace("\n", "\n  "),
        "---\n...\n---\n",
    ]).encode()


def m_truncate(rng: random.Random, text: str) -> bytes:
    b = text.encode()
    return b[: rng.randint(0, max(len(b) - 1, 0))]


def m_invalid_utf8(rng: random.Random, text: str) -> bytes:
    b = bytearray(text.encode())
    bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80"])
    pos = rng.randint(0, len(b))
    b[pos:pos] = bad
    return bytes(b)


def m_duplicates(rng: random.Random, text: str) -> bytes:
    lines = [l for l in _lines(text) if l.strip()]
    if not lines:
        return b"a: 1\na: 2\n"
    l = rng.choice(lines)
    return (text + "\n" + l + "\n").encode()


def m_keys(rng: random.Random, text: str) -> bytes:
    """Complex keys, non-string keys, empty keys, very many keys."""
    return rng.choice([
        "? [a, b]\n: c\n" + text,
        "? {a: b}\n: c\n" + text,
        "1: x\n" + text,
        "null: x\n" + text,
        ": x\n" + text,
        "'': x\n" + text,
        "server:\n  " + "\n  ".join(f"k{i}: {i}" for i in range(rng.choice([10, 5000, 40000]))) + "\n",
        "tenants:\n" + "".join(f"  - {{name: t{i}, domains: [t{i}.test]}}\n" for i in range(rng.choice([2, 3000]))),
    ]).encode()


MUTATORS = [m_bytes, m_yaml_chars, m_deep, m_huge_scalar, m_alias_bomb, m_wrong_types, m_sections, m_unicode,
            m_tabs, m_documents, m_truncate, m_invalid_utf8, m_duplicates, m_keys]


def generate(rng: random.Random) -> tuple[str, bytes]:
    """(mutator names, file bytes): one to three mutations stacked on a base config."""
    text = rng.choice(base_configs())
    names = []
    data = text.encode()
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        m = rng.choice(MUTATORS)
        names.append(m.__name__[2:])
        data = m(rng, data.decode("utf-8", "replace"))
    return "+".join(names), data


# --------------------------------------------------------------------------------------------
# running `config check`


@dataclass
class Outcome:
    exit: int | None  # None: killed after the timeout
    signal: int | None
    stdout: str
    stderr: str
    seconds: float
    rss_mb: float


@dataclass
class FuzzReport:
    cases: int = 0
    ok: int = 0
    refused: int = 0
    slowest: float = 0.0
    max_rss_mb: float = 0.0
    by_mutator: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, Path]] = field(default_factory=list)  # (mutators, problem, saved file)


def run_check(binary: str, path: Path, timeout: float = TIMEOUT) -> Outcome:
    """`BINARY config check PATH`, with its peak RSS (wait4) and a hard timeout."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([binary, "config", "check", str(path)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, cwd=path.parent)
        status = rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.send_signal(signal.SIGKILL)
                _, status, rusage = os.wait4(proc.pid, 0)
                status = None
                break
            time.sleep(0.005)
        proc.returncode = 0  # reaped by wait4: keep Popen from waiting again
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    if status is None:
        return Outcome(None, None, stdout, stderr, seconds, rusage.ru_maxrss / 1024)
    if os.WIFSIGNALED(status):
        return Outcome(None, os.WTERMSIG(status), stdout, stderr, seconds, rusage.ru_maxrss / 1024)
    return Outcome(os.WEXITSTATUS(status), None, stdout, stderr, seconds, rusage.ru_maxrss / 1024)


def problem_with(o: Outcome, path: Path) -> str | None:
    """What is wrong with an outcome of `config check`, or None if it is one of the two clean ends."""
    if o.signal is not None:
        return f"killed by signal {o.signal} ({signal.Signals(o.signal).name}): {o.stderr[-500:]!r}"
    if o.exit is None:
        return f"no answer in {TIMEOUT:g} s (a hang)"
    if o.rss_mb > MAX_RSS_MB:
        return f"used {o.rss_mb:.0f} MB of memory (more than {MAX_RSS_MB})"
    if o.exit == 0:
        if not o.stdout.startswith(f"{path}: OK"):
            return f"exit 0 without the OK line: {o.stdout[:300]!r}"
        return None
    if o.exit != 1:
        return f"exit {o.exit} (expected 0 or 1): {o.stderr[-300:]!r}"
    lines = o.stderr.rstrip("\n").split("\n")
    if len(lines) != 1 or not lines[0].strip():
        return f"{len(lines)} lines on stderr (expected exactly one): {o.stderr[:600]!r}"
    if not lines[0].removeprefix("Error: ").startswith(f"{path}: "):
        return f"the error line does not name the file: {lines[0][:300]!r}"
    if len(lines[0]) > 600:
        return f"the error line is {len(lines[0])} characters long: {lines[0][:200]!r}…"
    if o.stdout:
        return f"an error, and something on stdout too: {o.stdout[:200]!r}"
    return None


def fuzz(binary: str, workdir: Path, seed: int, cases: int | None = None, seconds: float | None = None,
         keep: Path | None = None) -> FuzzReport:
    """Runs generated configs through `config check` until `cases` are done or `seconds` have passed;
    a failing input is saved under `keep` (default `workdir/failures`)."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    keep = keep or workdir / "failures"
    report = FuzzReport()
    deadline = time.monotonic() + seconds if seconds else None
    path = workdir / "config.yaml"
    while (cases is None or report.cases < cases) and (deadline is None or time.monotonic() < deadline):
        names, data = generate(rng)
        path.write_bytes(data)
        o = run_check(binary, path)
        report.cases += 1
        for n in names.split("+"):
            report.by_mutator[n] = report.by_mutator.get(n, 0) + 1
        report.slowest = max(report.slowest, o.seconds)
        report.max_rss_mb = max(report.max_rss_mb, o.rss_mb)
        problem = problem_with(o, path)
        if problem:
            keep.mkdir(parents=True, exist_ok=True)
            saved = keep / f"case{report.cases}-{names}.yaml"
            saved.write_bytes(data)
            report.failures.append((names, problem, saved))
        elif o.exit == 0:
            report.ok += 1
        else:
            report.refused += 1
    return report


# --------------------------------------------------------------------------------------------
# tests


def test_base_configs_are_valid(tmp_path):
    """The fuzzer starts from configs that pass: otherwise it only tests the first error."""
    for i, text in enumerate(base_configs()):
        p = tmp_path / f"base{i}.yaml"
        p.write_text(text)
        o = run_check(mailflow_bin(), p)
        assert o.exit == 0, (i, o.stdout, o.stderr)


def test_known_hostile_configs_end_cleanly(tmp_path):
    """One of each kind, fixed, so a regression names its kind."""
    rng = random.Random(1)
    base = base_configs()[0]
    failures = []
    for m in MUTATORS:
        for k in range(3):
            data = m(rng, base)
            p = tmp_path / f"{m.__name__}-{k}.yaml"
            p.write_bytes(data)
            o = run_check(mailflow_bin(), p)
            problem = problem_with(o, p)
            if problem:
                failures.append(f"{p.name}: {problem}")
    assert not failures, "\n".join(failures)


def test_numbers_out_of_range_are_refused_not_trapped(tmp_path):
    """Sizes and durations that overflow a 64-bit integer once multiplied are refused with a line."""
    cases = {
        "limits:\n  max_message_size: 9999999999999GB\n": "limits.max_message_size",
        "limits:\n  max_message_size: 9223372036854775807KB\n": "limits.max_message_size",
        "timeouts:\n  command: 1e300\n": "timeouts.command",
        "health:\n  window: 1e300d\n": "health.window",
        "delivery:\n  retry_intervals: [1e308]\n": "delivery.retry_intervals[0]",
        "trace:\n  retention: 99999999999999999999d\n": "trace.retention",
    }
    for text, key in cases.items():
        p = tmp_path / "c.yaml"
        p.write_text(text)
        o = run_check(mailflow_bin(), p)
        assert problem_with(o, p) is None, (text, o)
        assert o.exit == 1 and key in o.stderr, (text, o.stderr)


def test_fuzzed_configs_never_crash_or_hang(tmp_path):
    report = fuzz(mailflow_bin(), tmp_path, seed=CI_SEED, cases=CI_CASES)
    print(f"config fuzz: {report.cases} cases (seed {CI_SEED}), {report.ok} OK, {report.refused} refused, "
          f"slowest {report.slowest:.2f} s, peak RSS {report.max_rss_mb:.0f} MB, by mutator {report.by_mutator}")
    assert report.cases == CI_CASES
    assert report.refused > report.cases // 4, "the mutations hardly ever produced a bad file: not fuzzing"
    assert not report.failures, "\n".join(f"{n}: {p} (input saved in {f})" for n, p, f in report.failures[:20])
