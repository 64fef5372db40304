#!/usr/bin/env python3
"""Writes the seed corpus of the fuzzers (Fuzz/Corpus/<target>/, one input a file).

Run it again after changing the lists below; the files are committed, so the fuzzers need no
Python. scripts/fuzz copies these folders to a temporary one before a run: new inputs never land
in the repository.
"""
import os
import re
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))

# Command lines as the parser gets them: no CRLF. Every verb and every parameter, then the hostile
# inputs of issue 10 and other edge cases.
COMMANDS = {
    "ehlo": "EHLO client.example.test",
    "ehlo-literal-v4": "EHLO [192.0.2.1]",
    "ehlo-literal-v6": "EHLO [IPv6:2001:db8::1]",
    "ehlo-bare-word": "ehlo localhost",
    "ehlo-empty": "EHLO",
    "ehlo-two-words": "EHLO a b",
    "helo": "HELO client.example.test",
    "mail": "MAIL FROM:<alice@example.test>",
    "mail-null": "MAIL FROM:<>",
    "mail-space-after-colon": "MAIL FROM: <alice@example.test>",
    "mail-lowercase": "mail from:<Alice@Example.TEST>",
    "mail-source-route": "MAIL FROM:<@relay.test,@other.test:alice@example.test>",
    "mail-quoted": 'MAIL FROM:<"john \\"q\\" doe"@example.test>',
    "mail-literal": "MAIL FROM:<alice@[192.0.2.1]>",
    "mail-literal-v6": "MAIL FROM:<alice@[IPv6:::1]>",
    "mail-size": "MAIL FROM:<alice@example.test> SIZE=12345",
    "mail-body-8bit": "MAIL FROM:<alice@example.test> BODY=8BITMIME",
    "mail-body-7bit": "MAIL FROM:<alice@example.test> BODY=7BIT",
    "mail-smtputf8": "MAIL FROM:<j\u00f6rg@b\u00fccher.test> SMTPUTF8",
    "mail-utf8-without-smtputf8": "MAIL FROM:<j\u00f6rg@example.test>",
    "mail-ret-full": "MAIL FROM:<alice@example.test> RET=FULL",
    "mail-ret-hdrs": "MAIL FROM:<alice@example.test> RET=HDRS",
    "mail-envid": "MAIL FROM:<alice@example.test> ENVID=QQ314159+2Bx",
    "mail-all-params": "MAIL FROM:<alice@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc",
    "mail-duplicate-param": "MAIL FROM:<alice@example.test> SIZE=1 SIZE=2",
    "mail-unknown-param": "MAIL FROM:<alice@example.test> XFOO=bar",
    "mail-missing-bracket": "MAIL FROM:alice@example.test",
    "rcpt": "RCPT TO:<bob@example.test>",
    "rcpt-postmaster": "RCPT TO:<Postmaster>",
    "rcpt-postmaster-domain": "RCPT TO:<postmaster@example.test>",
    "rcpt-notify": "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE,DELAY",
    "rcpt-notify-never": "RCPT TO:<bob@example.test> NOTIFY=NEVER",
    "rcpt-notify-never-and": "RCPT TO:<bob@example.test> NOTIFY=NEVER,SUCCESS",
    "rcpt-orcpt": "RCPT TO:<bob@example.test> ORCPT=rfc822;bob@example.test",
    "rcpt-orcpt-xtext": "RCPT TO:<bob@example.test> ORCPT=rfc822;bob+2Bfilter@example.test",
    "rcpt-notify-orcpt": "RCPT TO:<bob@example.test> NOTIFY=FAILURE ORCPT=rfc822;bob@example.test",
    "rcpt-utf8": "RCPT TO:<\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a>",
    "rcpt-literal": "RCPT TO:<bob@[IPv6:2001:db8::2]>",
    "rcpt-long-local": "RCPT TO:<" + "a" * 65 + "@example.test>",
    "rcpt-long-domain": "RCPT TO:<bob@" + ".".join(["a" * 63] * 4) + ">",
    "data": "DATA",
    "data-args": "DATA now",
    "bdat": "BDAT 1024",
    "bdat-last": "BDAT 0 LAST",
    "bdat-huge": "BDAT 9999999999999999999999",
    "bdat-bad": "BDAT -1 LAST",
    "rset": "RSET",
    "noop": "NOOP",
    "noop-args": "NOOP anything at all",
    "quit": "QUIT",
    "vrfy": "VRFY bob",
    "vrfy-empty": "VRFY ",
    "help": "HELP",
    "help-topic": "HELP MAIL",
    "starttls": "STARTTLS",
    "expn-not-implemented": "EXPN staff",
    "garbage": "\u00e9\u00e9\u00e9 ???",
    "empty": "",
    # Issue 10: the hostile probe.
    "issue10-size-plus": "MAIL FROM:<a@b.test> SIZE=+5",
    "issue10-envid-crlf": "MAIL FROM:<a@b.test> ENVID=x+0D+0AInjected",
    "issue10-envid-escape": "MAIL FROM:<a@b.test> ENVID=+1B[2J+1B]0;pwned+07",
    "issue10-orcpt-crlf": "RCPT TO:<a@b.test> ORCPT=rfc822;a+0D+0AX-Injected:+20yes",
    "issue10-orcpt-c1": "RCPT TO:<a@b.test> ORCPT=utf-8;+C2+9B2J",
    "issue10-empty-quoted": 'RCPT TO:<""@catch-all.test>',
    "issue10-quoted-spaces": 'RCPT TO:<"a b c"@domain.test>',
    "issue10-log-forgery": 'RCPT TO:<"x [Ingress] client=6.6.6.6 queue_id=FORGED"@d.test>',
}

# CommandRoundtripFuzzer reads each input twice: as a command line (parsed, encoded, parsed again)
# and as a command built by hand: a selector octet (the command), a flags octet (parameters), then
# local part, domain, ENVID, ORCPT type, ORCPT address and size octets, cut at 0xFF (never UTF-8).
ROUNDTRIP = {
    "line-mail-all-params": b"MAIL FROM:<alice@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=a+2Bb+3Dc+20d",
    "line-rcpt-dsn": b"rcpt to: <bob@example.test> NOTIFY=DELAY,SUCCESS ORCPT=utf-8;bob+2Bx+C3+BC@example.test",
    "line-mail-quoted": b'MAIL FROM:<@relay.test:"a>b \\"c\\"@d"@[IPv6:2001:db8::1]>',
    "line-rcpt-utf8": "RCPT TO:<\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a>".encode("utf-8"),
    "line-rcpt-postmaster": b"RCPT TO:<postmaster> NOTIFY=NEVER",
    "line-ehlo": b"ehlo [192.0.2.1]",
    "line-bdat": b"bdat 0 last",
    "line-vrfy": b"VRFY  Bob Smith ",
    "line-noop": b"NOOP with words",
    "built-mail-smuggle": b"\x07\x01alice\xffexample.test>\r\nRCPT TO:<victim@evil.test\xff\xff\xff\xff\x10",
    "built-rcpt-orcpt": b"\x06\x45bob\xffexample.test\xff\xffrfc822\xffbob+x=y \xc3\xbc@example.test",
    "built-rcpt-orcpt-crlf": b"\x06\x40bob\xffexample.test\xff\xffrfc822\xffa\r\nX-Injected: yes",
    "built-ehlo-crlf": b"\x00\x00mx.test\r\nQUIT",
    "built-combining-after-at": b"\x07\x08a\xff\xcc\x81b.test",
    "built-combining-after-lt": b"\x06\x00\xcc\x81a\xffb.test",
    "built-envid": b"\x08\x5b\xff\xffid+1 =\x1b",
    "built-size-negative": b"\x05\x83\xff\xff\xff\xff\xff\x01",
    "built-vrfy-nul": b"\x04\x00bob\x00",
    "built-quoted": b'\x02\x00"a>b@c"\xffexample.test',
    "built-notify-never-and": b"\x03\x07bob\xffexample.test",
}

# What a remote server sends: complete replies with CRLF, several in a row, and odd ones.
REPLIES = {
    "greeting": "220 mx.example.test ESMTP ready\r\n",
    "ehlo": "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 STARTTLS\r\n",
    "ok-enhanced": "250 2.1.0 Sender OK\r\n",
    "pipelined": "250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 User unknown\r\n354 Go ahead\r\n",
    "multiline-enhanced": "550-5.7.1 Message rejected\r\n550-5.7.1 see https://example.test/why\r\n"
    "550 5.7.1 policy\r\n",
    "code-only": "250\r\n",
    "bare-lf": "250 OK\n",
    "code-changes": "250-first\r\n251 second\r\n",
    "code-out-of-range": "199 too low\r\n",
    "code-600": "600 too high\r\n",
    "bad-separator": "250_OK\r\n",
    "short": "25\r\n",
    "enhanced-class-mismatch": "250 5.1.1 odd\r\n",
    "enhanced-leading-zero": "451 4.07.01 Try later\r\n",
    "enhanced-only": "421 4.3.2\r\n",
    "partial": "250-mx.example.test\r\n250-PIPE",
    "no-crlf": "250 OK",
    "utf8-text": "550 5.1.1 Benutzer unbekannt: j\u00f6rg\r\n",
    "cr-inside": "250 a\rb\r\n",
    "double-cr": "250 OK\r\r\n",
    "leading-spaces": "250-2.0.0 a\r\n250  2.0.0 b\r\n",
    "size-keyword": "250-mx\r\n250-SIZE -5\r\n250 SIZE\r\n",
    "long-line": "250 " + "x" * 2100 + "\r\n",
    "too-many-lines": "".join("250-line %d\r\n" % i for i in range(101)) + "250 end\r\n",
}

# What follows DATA: bodies, their end, and what comes after. Smuggling variants of
# CVE-2023-51764 and friends: none of them may end the body early.
BODIES = {
    "simple": "Subject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n",
    "empty": ".\r\n",
    "empty-then-command": ".\r\nMAIL FROM:<a@b.test>\r\n",
    "dot-stuffed": "a\r\n..leading dot\r\n...two\r\n.\r\n",
    "dot-mid-line": "a.b\r\n.x\r\n.\r\n",
    "smuggle-lf-dot-lf": "hi\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nevil\r\n.\r\n",
    "smuggle-lf-dot-crlf": "hi\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\n",
    "smuggle-cr-dot-cr": "hi\r.\rMAIL FROM:<evil@x.test>\r\n.\r\n",
    "smuggle-crlf-dot-lf": "hi\r\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n",
    "smuggle-crlf-dot-cr": "hi\r\n.\rMAIL FROM:<evil@x.test>\r\n.\r\n",
    "smuggle-cr-dot-crlf": "hi\r.\r\nMAIL FROM:<evil@x.test>\r\n.\r\n",
    "smuggle-dot-cr-cr-lf": "hi\r\n.\r\r\nQUIT\r\n.\r\n",
    "bare-lf": "line one\nline two\r\n.\r\n",
    "bare-cr": "line one\rline two\r\n.\r\n",
    "cr-cr-lf": "a\r\r\n.\r\n",
    "trailing-cr": "a\r",
    "no-end": "Subject: x\r\n\r\nbody without end\r\n",
    "line-998": "x" * 998 + "\r\n.\r\n",
    "line-999": "x" * 999 + "\r\n.\r\n",
    "line-1200": "y" * 1200 + "\r\n.\r\n",
    "dot-line-998": "." * 999 + "\r\n.\r\n",
    "nul-and-8bit": "a\x00b\xff\r\n.\r\n",
}


# DNS messages as a resolver gets them (RFC 1035 §4.1): good answers of every type the decoder
# knows, compressed, and the hostile ones (truncated, compression loops, oversized names and counts).
def dns_name(name):
    out = b""
    for label in name.split(".") if name else []:
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def dns_header(qd=1, an=0, ns=0, ar=0, flags=0x8180, ident=0xBEEF):
    return ident.to_bytes(2, "big") + flags.to_bytes(2, "big") + b"".join(
        n.to_bytes(2, "big") for n in (qd, an, ns, ar))


def dns_question(name, qtype):
    return dns_name(name) + qtype.to_bytes(2, "big") + b"\x00\x01"


def dns_rr(owner, rtype, rdata, ttl=300, rclass=1):
    return owner + rtype.to_bytes(2, "big") + rclass.to_bytes(2, "big") + ttl.to_bytes(4, "big") + \
        len(rdata).to_bytes(2, "big") + rdata


PTR_Q = b"\xc0\x0c"  # a pointer to the question name at offset 12
OPT = dns_rr(b"\x00", 41, b"", ttl=0, rclass=1232)
DNS = {
    "mx-compressed": dns_header(an=2, ar=1) + dns_question("example.com", 15)
    + dns_rr(PTR_Q, 15, b"\x00\x0a" + b"\x03mx1" + PTR_Q)
    + dns_rr(PTR_Q, 15, b"\x00\x14" + b"\x03mx2" + PTR_Q) + OPT,
    "mx-null": dns_header(an=1) + dns_question("nullmx.test", 15) + dns_rr(PTR_Q, 15, b"\x00\x00\x00"),
    "a": dns_header(an=1) + dns_question("mx1.example.com", 1) + dns_rr(PTR_Q, 1, bytes([192, 0, 2, 1])),
    "aaaa": dns_header(an=1) + dns_question("mx1.example.com", 28)
    + dns_rr(PTR_Q, 28, bytes([0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [1])),
    "txt": dns_header(an=1) + dns_question("example.com", 16)
    + dns_rr(PTR_Q, 16, b"\x12v=spf1 -all x y z\x00\x05hello"),
    "tlsa": dns_header(an=1) + dns_question("_25._tcp.mx1.example.com", 52)
    + dns_rr(PTR_Q, 52, b"\x03\x01\x01" + bytes(range(32))),
    "ptr": dns_header(an=1) + dns_question("1.2.0.192.in-addr.arpa", 12) + dns_rr(PTR_Q, 12, dns_name("mx1.example.com")),
    "cname-chain": dns_header(an=2) + dns_question("www.example.com", 1)
    + dns_rr(PTR_Q, 5, b"\x04host\xc0\x10") + dns_rr(b"\x04host\xc0\x10", 1, bytes([192, 0, 2, 7])),
    "nxdomain-soa": dns_header(ns=1, flags=0x8183) + dns_question("nope.example.com", 15)
    + dns_rr(b"\xc0\x11", 6, b"\x02ns\xc0\x11\x0ahostmaster\xc0\x11" + bytes(20)),
    "ns-and-opt-option": dns_header(an=1, ar=1) + dns_question("example.com", 2) + dns_rr(PTR_Q, 2, b"\x02ns" + PTR_Q)
    + dns_rr(b"\x00", 41, b"\x00\x0a\x00\x08" + bytes(8), ttl=0x8000, rclass=1232),
    "servfail-extended-rcode": dns_header(ar=1, flags=0x8182) + dns_question("example.com", 15)
    + dns_rr(b"\x00", 41, b"", ttl=0x01000000, rclass=4096),
    "truncated-tc": dns_header(flags=0x8380) + dns_question("example.com", 15),
    "unknown-type": dns_header(an=1) + dns_question("example.com", 99) + dns_rr(PTR_Q, 99, b"opaque data"),
    "query": dns_header(flags=0x0100, ar=1) + dns_question("example.com", 15) + OPT,
    "header-only": dns_header(qd=0),
    "short-header": dns_header()[:7],
    "cut-in-question": (dns_header() + dns_question("example.com", 15))[:20],
    "cut-in-rdata": (dns_header(an=1) + dns_question("example.com", 1) + dns_rr(PTR_Q, 1, bytes(4)))[:-2],
    "loop-self": dns_header() + b"\xc0\x0c\x00\x01\x00\x01",
    "loop-two": dns_header() + b"\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
    "loop-label-back": dns_header() + b"\x01a\xc0\x0c\x00\x01\x00\x01",
    "loop-in-mx": dns_header(an=1) + dns_question("example.com", 15)
    + dns_rr(PTR_Q, 15, b"\x00\x0a\xc0\x2b"),
    "pointer-out-of-bounds": dns_header() + b"\xc3\xff\x00\x01\x00\x01",
    "pointer-into-header": dns_header() + b"\xc0\x02\x00\x01\x00\x01",
    "pointer-chain": dns_header(qd=4) + dns_question("a", 1) + b"\xc0\x0c\x00\x01\x00\x01"
    + b"\xc0\x13\x00\x01\x00\x01" + b"\xc0\x19\x00\x01\x00\x01",
    "label-64": dns_header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "name-over-255": dns_header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
    "counts-65535": dns_header(qd=0xFFFF, an=0xFFFF, ns=0xFFFF, ar=0xFFFF),
    "rdlength-past-end": dns_header(an=1) + dns_question("example.com", 1) + PTR_Q
    + b"\x00\x01\x00\x01\x00\x00\x01\x2c\x00\xc8\x01\x02",
    "a-with-5-octets": dns_header(an=1) + dns_question("example.com", 1) + dns_rr(PTR_Q, 1, bytes(5)),
    "txt-overrun": dns_header(an=1) + dns_question("example.com", 16) + dns_rr(PTR_Q, 16, b"\x09abc"),
    "soa-short": dns_header(ns=1) + dns_question("example.com", 6) + dns_rr(PTR_Q, 6, b"\x00\x00" + bytes(10)),
}


def write(folder, items, encode):
    path = os.path.join(HERE, "Corpus", folder)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for name, text in items.items():
        assert re.fullmatch(r"[a-z0-9-]+", name), name
        with open(os.path.join(path, name), "wb") as f:
            f.write(encode(text))


write("CommandParserFuzzer", COMMANDS, lambda s: s.encode("utf-8"))
write("CommandRoundtripFuzzer", ROUNDTRIP, lambda b: b)
write("ReplyParserFuzzer", REPLIES, lambda s: s.encode("utf-8"))
# Bodies are bytes: latin-1 keeps \xff as one octet.
write("BodyDecoderFuzzer", BODIES, lambda s: s.encode("latin-1"))
write("DNSMessageFuzzer", DNS, lambda b: b)
