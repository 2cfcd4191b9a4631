"""``make conformance``: Autobahn|Testsuite's fuzzingclient against ``conformance.echo``.

Autobahn|Testsuite runs on Python 2.7 only. This script finds one (``AUTOBAHN_PYTHON``,
pyenv's 2.7, ``python2.7`` or ``python2``), installs a pinned Autobahn into
``.venv/autobahn-py27`` the first time (``make clean`` removes it with the venv; a 2.7
launcher adds it as a site directory so the ``zope`` namespace package imports), starts
the echo server in this process on 127.0.0.1, runs cases 1.* to 10.* (12.* and 13.* are
permessage-deflate, which the relay does not offer), reads the report, prints a summary
and writes ``docs/conformance.md``. A second, shorter pass checks the relay's own message
bounds (``conformance.limits``). Reports go to ``test-artifacts/conformance/``.

Exit status: 0 when every case is OK, NON-STRICT or INFORMATIONAL and every bound holds;
1 when not, or when the echo server hit an unexpected exception; 2 when Autobahn could not
be run at all.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from conformance import limits
from conformance.echo import EchoHost, echo_config, serve
from conformance.report import Outcome, render, summarize
from relay.config import Config
from relay.transport.wsread import FrameReader

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / ".venv" / "autobahn-py27"
REPORTS = ROOT / "test-artifacts" / "conformance"
DOC = ROOT / "docs" / "conformance.md"
AGENT = "ObserverRelay"
CASES = [f"{section}.*" for section in range(1, 11)]
EXCLUDED = ["12.*", "13.*"]
TIMEOUT = 30 * 60.0  # the whole run; section 9 alone takes a few minutes
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}

#: The last release that runs on 2.7 and the versions of its dependencies that still do
#: (found by a resolving install; pinned so that a fresh machine gets the same set).
AUTOBAHN_VERSION = "25.10.1"
PINS = [
    f"autobahntestsuite=={AUTOBAHN_VERSION}", "autobahn[accelerate,twisted]==0.10.9",
    "Twisted==19.10.0", "txaio==2.1.0", "zope.interface==4.6.0", "six==1.16.0",
    "Automat==22.10.0", "attrs==21.4.0", "constantly==15.1.0", "hyperlink==21.0.0",
    "idna==2.10", "incremental==16.10.1", "PyHamcrest==1.10.1", "typing==3.10.0.0",
    "klein==17.10.0", "Werkzeug==1.0.1", "jinja2==2.11.3", "markupsafe==1.1.1",
    "pyOpenSSL==19.1.0", "cryptography==3.3.2", "cffi==1.15.1", "pycparser==2.21",
    "enum34==1.1.10", "ipaddress==1.0.23", "service_identity==18.1.0", "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0", "unittest2==1.1.0", "traceback2==1.4.0", "linecache2==1.0.0",
    "argparse==1.4.0", "setuptools==44.0.0", "wsaccel==0.6.6", "ujson==2.0.3",
]
#: Run by Python 2.7: ``wstest`` with ``argv[1]`` as a site directory.
LAUNCHER = """\
import site, sys
site.addsitedir(sys.argv[1])
sys.argv = ["wstest"] + sys.argv[2:]
from autobahntestsuite.wstest import run
run()
"""


class Unavailable(Exception):
    """Autobahn cannot be run here; the message says what is missing."""


def find_python27() -> str:
    candidates = [os.environ.get("AUTOBAHN_PYTHON", "")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/python")),
                         reverse=True)
    candidates += [shutil.which("python2.7") or "", shutil.which("python2") or ""]
    for candidate in filter(None, candidates):
        check = [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (2, 7))"]
        try:
            if subprocess.run(check, capture_output=True, timeout=30).returncode == 0:
                return candidate
        except (OSError, subprocess.TimeoutExpired):
            continue
    raise Unavailable("no Python 2.7 found (set AUTOBAHN_PYTHON, or install 2.7.18 with pyenv)")


def install(python: str) -> Path:
    """Install the pinned Autobahn into ``INSTALL`` unless it is there already."""
    stamp = INSTALL / "pins.txt"
    wanted = "\n".join(PINS) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return INSTALL
    shutil.rmtree(INSTALL, ignore_errors=True)
    INSTALL.mkdir(parents=True)
    print(f"installing Autobahn|Testsuite {AUTOBAHN_VERSION} for {python} into {INSTALL}",
          flush=True)
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
               "--target", str(INSTALL), *PINS]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        shutil.rmtree(INSTALL, ignore_errors=True)
        raise Unavailable("pip install took more than 15 minutes") from None
    if done.returncode != 0:
        shutil.rmtree(INSTALL, ignore_errors=True)
        raise Unavailable(f"pip install failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    (INSTALL / "wstest_launcher.py").write_text(LAUNCHER)
    stamp.write_text(wanted)
    return INSTALL


def write_spec(port: int, outdir: Path, cases: list[str]) -> Path:
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": AGENT, "url": f"ws://127.0.0.1:{port}"}],
        "cases": cases,
        "exclude-cases": EXCLUDED,
        "exclude-agent-cases": {},
    }
    path = outdir.parent / f"{outdir.name}-spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


async def run_wstest(python: str, site_dir: Path, host: EchoHost, outdir: Path,
                     cases: list[str]) -> None:
    """Serve the echo and run the fuzzingclient against it; its output goes to a log."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    log_path = outdir.parent / f"{outdir.name}-wstest.log"
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, host)
        spec = write_spec(port, outdir, cases)
        print(f"echo server on 127.0.0.1:{port}; cases {' '.join(cases)}; log {log_path}",
              flush=True)
        command = [python, str(site_dir / "wstest_launcher.py"), str(site_dir),
                   "-m", "fuzzingclient", "-s", str(spec)]
        with log_path.open("wb") as log, trio.fail_after(TIMEOUT):
            done = await trio.run_process(command, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=str(outdir.parent), check=False)
        nursery.cancel_scope.cancel()
    if done.returncode != 0 or not (outdir / "index.json").exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise Unavailable(f"wstest exited with {done.returncode}:\n{tail}")


def load(outdir: Path) -> list[Outcome]:
    index: dict[str, dict[str, dict[str, Any]]] = json.loads((outdir / "index.json").read_text())
    outcomes = []
    for case_id, entry in index[AGENT].items():
        detail: dict[str, Any] = {}
        report = outdir / entry.get("reportfile", "")
        if report.is_file():
            detail = json.loads(report.read_text())
        outcomes.append(Outcome.from_report(case_id, entry, detail))
    return sorted(outcomes, key=lambda o: o.key)


def main() -> int:
    host = EchoHost()  # bounds raised for section 9
    # What a relay connection gets: the configured size, the reader's default frame bound.
    bounded = EchoHost(config=echo_config(max_message_size=Config().max_message_size),
                       max_frames=FrameReader(0).max_frames)
    outdir, limits_dir = REPORTS / "reports", REPORTS / "limits"
    try:
        python = find_python27()
        site_dir = install(python)
        trio.run(run_wstest, python, site_dir, host, outdir, CASES)
        trio.run(run_wstest, python, site_dir, bounded, limits_dir, limits.CASES)
    except (Unavailable, trio.TooSlowError) as exc:
        print(f"conformance: Autobahn could not be run: {exc}", file=sys.stderr)
        return 2
    outcomes = load(outdir)
    table, bad = summarize(outcomes, ACCEPTED)
    print(table)
    checks = limits.check(load(limits_dir))
    missed = [c.case for c in checks if not c.passed]
    print(f"relay bounds: {len(checks) - len(missed)} of {len(checks)} cases as required")
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    errors = host.errors + bounded.errors
    appendix = limits.render(checks)
    DOC.write_text(render(outcomes, ACCEPTED, today=today, version=AUTOBAHN_VERSION,
                          bounds=(host.config.max_message_size, host.max_frames),
                          server_errors=errors, appendix=appendix))
    print(f"wrote {DOC.relative_to(ROOT)}; reports in {REPORTS.relative_to(ROOT)}")
    for error in errors:
        print(f"echo server error: {error}", file=sys.stderr)
    if bad:
        print(f"conformance: not accepted: {' '.join(o.case for o in bad)}", file=sys.stderr)
    if missed:
        print(f"conformance: bounds not as required: {' '.join(missed)}", file=sys.stderr)
    return 1 if bad or missed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
