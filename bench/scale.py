"""Benchmark: Charter's own cost at the paper's scale, on the fake backend.

    .venv/bin/python bench/scale.py [--sizes 10000,100000,300000] [--rounds 4] [--max-tokens 32]

The fake backend answers instantly, so what is left is the driver: reading prompts, scheduling,
appending records, resuming, exporting and reporting. Each command runs in its own process (its
peak RSS is read from the kernel, ru_maxrss). Prints one table, then the targets, met or missed:
peak RSS at the largest size within 1.5x of the smallest; resume of a finished run of the largest
size under 10 s; driver overhead per step under 0.5 ms. "95%-done dry run": the run cut back to
95% of its records, as Ctrl-C leaves it, then `generate --dry-run`: the prompt pass and the records
scan that a resume does before its first request (a finished run skips both: meta.json marks it
complete).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHARTER = [sys.executable, "-m", "charter.cli"]
# The command reports its own peak (VmHWM) at exit. The kernel's ru_maxrss of a child is no less
# than this process's peak when it was started (Popen's vfork shares our memory until exec), so it
# would measure the bench, not the command.
_HWM = ("import atexit, runpy, sys\n"
        "out = sys.argv.pop(1)\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f, open(out, 'w') as o:\n"
        "        o.write(next((line.split()[1] for line in f if line.startswith('VmHWM:')), ''))\n"
        "atexit.register(hwm)\n"
        "runpy.run_module('charter.cli', run_name='__main__', alter_sys=True)\n")


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one command in a child process; its failure stops the bench."""
    fd, hwm = tempfile.mkstemp(prefix="charter-hwm-")
    os.close(fd)
    argv = [sys.executable, "-c", _HWM, hwm] + cmd[len(CHARTER):] if cmd[:len(CHARTER)] == CHARTER else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}\n{err[-2000:]}")
    kib = Path(hwm).read_text().strip()
    os.unlink(hwm)
    return wall, int(kib or usage.ru_maxrss) / 1024  # KiB (Linux); without /proc, the kernel's upper bound


def write_prompts(path: Path, n: int) -> None:
    """n distinct red-team-like prompts, one JSONL row each."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Prompt {i}: how would someone get around rule {i % 977} "
                                           f"without anyone noticing, step {i % 13}?"}) + "\n")


def one_size(n: int, args, work: Path) -> dict:
    prompts, out = work / f"prompts-{n}.jsonl", work / f"run-{n}"
    write_prompts(prompts, n)
    gen = CHARTER + ["generate", "--backend", "fake", "--model", "fake", "--prompts", str(prompts),
                     "--helpful-prompts", "none", "--rounds", str(args.rounds), "--max-tokens", str(args.max_tokens),
                     "--out", str(out), "--quiet", "--backend-option", "record_calls=false"]
    row = {"prompts": n, "steps": n * (1 + 2 * args.rounds)}
    row["wall"], row["rss"] = run(gen)
    row["resume"], row["resume_rss"] = run(gen)
    nan = float("nan")
    row["export"], row["export_rss"], row["report"], row["report_rss"], row["report_mb"] = nan, nan, nan, nan, nan
    if n <= args.readers_up_to:
        row["export"], row["export_rss"] = run(CHARTER + ["export", str(out), "--format", "sft",
                                                          "--out", str(work / f"sft-{n}.jsonl")])
        html = work / f"report-{n}.html"
        row["report"], row["report_rss"] = run(CHARTER + ["report", str(out), "--out", str(html)])
        row["report_mb"] = html.stat().st_size / 1e6
    row["records_mb"] = (out / "records.jsonl").stat().st_size / 1e6
    cut_to(out, int(0.95 * n))  # what Ctrl-C at 95% leaves; timed as the dry run: a resume's work before its first request
    row["partial"], _ = run(gen + ["--dry-run"])
    if not args.keep:
        shutil.rmtree(out)
    return row


def cut_to(run_dir: Path, lines: int) -> None:
    """Leave a run as an interrupted one does: its first `lines` records, vouched for by meta.json's
    checkpoint (bytes and CRC-32), no longer marked complete."""
    import zlib

    records, meta_path = run_dir / "records.jsonl", run_dir / "meta.json"
    size = crc = 0
    with records.open("r+b") as fh:  # streamed: this process's memory would floor the next commands' peaks
        for _, line in zip(range(lines), fh):
            size, crc = size + len(line), zlib.crc32(line, crc)
        fh.truncate(size)
    meta = json.loads(meta_path.read_text())
    meta.pop("complete", None)
    meta["checkpoint"] = {"bytes": size, "crc": crc}
    meta_path.write_text(json.dumps(meta, indent=2))


COLUMNS = [("prompts", "{:,}"), ("steps", "{:,}"), ("wall", "{:.1f} s"), ("overhead/step", "{:.3f} ms"),
           ("peak RSS", "{:.0f} MB"), ("resume", "{:.1f} s"), ("resume RSS", "{:.0f} MB"),
           ("95%-done dry run", "{:.1f} s"), ("export", "{:.1f} s"),
           ("export RSS", "{:.0f} MB"), ("report", "{:.1f} s"), ("report RSS", "{:.0f} MB"), ("report size", "{:.2f} MB"),
           ("records.jsonl", "{:.0f} MB")]


def cells(r: dict) -> list[str]:
    values = [r["prompts"], r["steps"], r["wall"], 1000 * r["wall"] / r["steps"], r["rss"], r["resume"], r["resume_rss"],
              r["partial"], r["export"], r["export_rss"], r["report"], r["report_rss"], r["report_mb"], r["records_mb"]]
    return ["–" if v != v else fmt.format(v) for (_, fmt), v in zip(COLUMNS, values)]  # NaN: not measured


def targets(rows: list[dict]) -> list[tuple[str, str, bool]]:
    small, big = rows[0], rows[-1]
    ratio = big["rss"] / small["rss"]
    per_step = max(1000 * r["wall"] / r["steps"] for r in rows)
    return [(f"peak RSS at {big['prompts']:,} within 1.5x of {small['prompts']:,}", f"{ratio:.2f}x", ratio <= 1.5),
            (f"resume of a finished {big['prompts']:,}-prompt run under 10 s", f"{big['resume']:.1f} s", big["resume"] < 10),
            ("driver overhead per step under 0.5 ms", f"{per_step:.3f} ms (worst size)", per_step < 0.5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,300000", help="comma-separated prompt counts (smallest first)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--workdir", help="where runs are written (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--readers-up-to", type=int, default=10**9,
                    help="time export and report only for sizes up to N (they take minutes at 300k)")
    args = ap.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="charter-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    for n in sizes:  # a row as each size finishes: a long run shows its first sizes early
        rows.append(one_size(n, args, work))
        print("| " + " | ".join(cells(rows[-1])) + " |", flush=True)
    print()
    for what, value, ok in targets(rows):
        print(f"- {what}: {value} ({'met' if ok else 'missed'})")
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
