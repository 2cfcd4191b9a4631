"""Run every fuzz harness for a fixed number of iterations; file crashes in the corpus.

``python -m fuzz.run`` (``make fuzz``) runs ``ws_frames``, ``observer_codecs`` and
``http_head`` one after the other, each in its own subprocess (atheris hands the process to
libFuzzer, which exits on the first crash). Each run starts from the seeds and earlier
crashes in ``tests/corpus/<target>/`` (read only) and grows a scratch corpus in a temporary
directory, or in ``--work DIR`` to keep it between runs. A crashing input is moved to
``tests/corpus/<target>/<sha1 of its bytes>``, where ``tests/test_corpus.py`` replays it on
every test run from then on; the run's log tail is printed and the exit status is 1.

The default iteration counts take about a minute per harness here, a little over three
minutes in all with atheris's start-up instrumentation (measured: ~1,900 inputs/s for the
frame reader, ~1,000/s for the codecs with their deep seeds, ~500/s for the HTTP head, which
runs a trio event loop per input); ``--runs N`` sets one count for all.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from . import TARGETS

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Plan:
    runs: int  # default iterations
    max_len: int  # longest input libFuzzer generates (deep JSON and 16 KiB heads need room)


PLANS: Mapping[str, Plan] = MappingProxyType({
    "ws_frames": Plan(runs=100_000, max_len=4096),
    "observer_codecs": Plan(runs=60_000, max_len=12_000),
    "http_head": Plan(runs=30_000, max_len=40_000),
})


def run_target(target: str, runs: int, work: Path) -> bool:
    """Fuzz ``target`` once; True when it ran all its iterations without a crash."""
    plan = PLANS[target]
    seeds = CORPUS / target
    seeds.mkdir(parents=True, exist_ok=True)
    scratch = work / target
    artifacts = work / f"{target}-artifacts"
    for folder in (scratch, artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", f"fuzz.{target}",
        f"-runs={runs}", f"-max_len={plan.max_len}", "-timeout=60", "-rss_limit_mb=4096",
        f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
    ]
    dictionary = HERE / f"{target}.dict"
    if dictionary.exists():
        command.append(f"-dict={dictionary}")
    command += [str(scratch), str(seeds)]  # new inputs go to the first directory only
    log = work / f"{target}.log"
    started = time.monotonic()
    print(f"fuzz: {target}: {runs} runs ...", flush=True)
    with log.open("wb") as out:
        status = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
    crashes = file_artifacts(artifacts, seeds)
    took = time.monotonic() - started
    text = log.read_text("utf-8", "replace").splitlines()
    stats = [line for line in text if line.startswith(("stat::number_of_executed_units",
                                                        "stat::new_units_added", "Done "))]
    print(f"fuzz: {target}: exit {status} in {took:.0f} s; " + "; ".join(stats), flush=True)
    if status == 0 and not crashes:
        return True
    print("\n".join(text[-40:]), flush=True)
    for path in crashes:
        print(f"fuzz: {target}: crashing input saved as {path.relative_to(ROOT)}")
    if not crashes:  # e.g. a bad flag: libFuzzer failed without an input to blame
        print(f"fuzz: {target}: failed without a crashing input", flush=True)
    return False


def file_artifacts(artifacts: Path, corpus: Path) -> list[Path]:
    """Move libFuzzer's ``crash-…``/``timeout-…``/``oom-…`` files to ``corpus/<sha1>``."""
    saved = []
    for path in sorted(artifacts.iterdir()):
        data = path.read_bytes()
        target = corpus / hashlib.sha1(data).hexdigest()
        target.write_bytes(data)
        path.unlink()
        saved.append(target)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--runs", type=int, help="iterations per harness (default: per "
                        "harness, about a minute each)")
    parser.add_argument("--only", action="append", choices=TARGETS,
                        help="fuzz only this harness (repeatable)")
    parser.add_argument("--work", type=Path, help="keep the growing corpora here")
    args = parser.parse_args(argv)
    targets = args.only or list(TARGETS)
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="relay-fuzz-") as tmp:
        work = args.work or Path(tmp)
        for target in targets:
            runs = args.runs if args.runs is not None else PLANS[target].runs
            if not run_target(target, runs, work):
                failed.append(target)
        if failed and args.work is None:
            # Logs of failed runs would vanish with the temporary directory.
            keep = Path(tempfile.mkdtemp(prefix="relay-fuzz-logs-"))
            for target in failed:
                shutil.copy(work / f"{target}.log", keep)
            print(f"fuzz: logs kept in {keep}")
    print("fuzz: " + (f"FAILED: {', '.join(failed)}" if failed else "all harnesses passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
