"""Shared by the bench scripts (scripts/bench*, scripts/eval-health) and the end-to-end tests (tests/e2e).

- `processes`: ports, tools, process stop, the clean-up stack a script unwinds at exit
- `mailflow`: a `mailflow serve` process started on a config and found by its listening line
- `postfix`: a throw-away Postfix instance (`postfix -c DIR`, its own main.cf and master.cf)
- `dovecot`: a throw-away Dovecot with only its auth service, for Postfix's `smtpd_sasl_type = dovecot`
- `benchmarks_md`: the machine line and the section writer for BENCHMARKS.md

Scripts put `scripts/lib` on `sys.path` themselves; tests/e2e/conftest.py does it for the tests.
Stdlib only.
"""
