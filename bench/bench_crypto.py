"""Encrypted vs unencrypted backup of the PostgreSQL benchmark database, in the same run.

    python bench/bench_crypto.py --scale 50 [--repeat 3]

Builds the database of bench_backup.py (`pgbench -i -s SCALE` plus the events table) as
`dbjobs_crypto_pg_<scale>`, then times our backup without encryption (the anchor) and with
DBJOBS_ENCRYPT_TO set to two recipients, alternating the two so a busy machine slows both
alike; best of --repeat each. Each backup runs in a child process that reports its own peak
RSS and the CPU time it and its tools (pg_dump, age) used: on a saturated machine extra CPU
shows as wall time, on an idle second core `age` runs beside the dump. Then the encrypted
backup is restored into `dbjobs_crypto_pg_<scale>_restore` (which decrypts twice: the full
check before anything is touched, and the load).

If pyrage is importable, it also encrypts the same compressed dump with `age` and with
pyrage's `encrypt_io`, the measurement behind using the tool. Every database it creates is
dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backup import (  # the shared database builder and report lines
    MIB,
    PG_URL,
    ROOT,
    Row,
    best,
    build_pg,
    fresh_dir,
    recreate_pg,
    scratch_database,
)

sys.path.insert(0, str(ROOT))


def child_main(spec: dict[str, object]) -> None:
    """Our backup (with recipients, or none) or restore, timed in-process; prints time, peak RSS and size."""
    from dbjobs.backup import run_backup
    from dbjobs.catalog import find_backup
    from dbjobs.dburl import parse_url
    from dbjobs.recipients import AgeKeys
    from dbjobs.restore import run_restore
    from dbjobs.storage.local import LocalStorage

    db = parse_url("bench", str(spec["url"]))
    directory = Path(str(spec["dir"]))
    start = time.perf_counter()
    if spec["job"] == "backup":
        result = run_backup(db, directory, recipients=tuple(spec["recipients"]))  # type: ignore[arg-type]
        size = result.backup.manifest.size
    else:
        backup = find_backup([LocalStorage(directory)], str(spec["backup"]))
        run_restore(backup, db, directory / "safety", confirmed=True, safety_backup=False,
                    keys=AgeKeys(identity_file=Path(str(spec["identity"]))))
        size = backup.manifest.size
    seconds = time.perf_counter() - start
    me, tools = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + tools.ru_utime + tools.ru_stime  # ours, pg_dump's and age's
    print(json.dumps({"seconds": seconds, "rss_mib": me.ru_maxrss / 1024, "size": size, "cpu": cpu}))


def child(spec: dict[str, object]) -> dict[str, float]:
    """Run `child_main(spec)` in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def keys(work: Path) -> tuple[Path, list[str]]:
    """Two key pairs (the ops key and a break-glass key); the ops identity restores."""
    from dbjobs.crypto import keygen

    return work / "ops.key", [keygen(work / "ops.key"), keygen(work / "glass.key")]


def alternate(repeat: int, specs: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """Run each spec `repeat` times, interleaved; keep each one's fastest run and its largest peak RSS."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in specs}
    for _ in range(repeat):
        for name, spec in specs.items():
            fresh_dir(Path(str(spec["dir"])))()
            runs[name].append(child(spec))
    return {name: {**min(r, key=lambda x: x["seconds"]), "rss_mib": max(x["rss_mib"] for x in r)}
            for name, r in runs.items()}


def tool_vs_pyrage(dump: Path, recipient: str, repeat: int) -> tuple[float, float] | None:
    """Seconds to encrypt `dump` with the `age` tool and with pyrage's encrypt_io (None without pyrage)."""
    try:
        import pyrage  # type: ignore[import-not-found]
    except ImportError:
        return None
    out = dump.with_suffix(".age")

    def tool() -> None:
        with open(dump, "rb") as src, open(out, "wb") as dst:
            subprocess.run(["age", "--encrypt", "--recipient", recipient], stdin=src, stdout=dst, check=True)

    def library() -> None:
        with open(dump, "rb") as src, open(out, "wb") as dst:
            pyrage.encrypt_io(src, dst, [pyrage.x25519.Recipient.from_str(recipient)])

    return best(repeat, tool), best(repeat, library)


def main() -> None:
    """Build, measure side by side, print the table, drop the databases."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50: the 1.07 GB database)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept (default 3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dbjobs-crypto-bench-") as tmp, \
            scratch_database("postgresql", f"dbjobs_crypto_pg_{args.scale}") as name:
        work = Path(tmp)
        identity, recipients = keys(work)
        print(f"building PostgreSQL at scale {args.scale} ...", file=sys.stderr)
        build_pg(name, scale=args.scale)
        url = PG_URL.format(name)
        got = alternate(args.repeat, {
            "plain": {"job": "backup", "url": url, "dir": str(work / "plain"), "recipients": []},
            "encrypted": {"job": "backup", "url": url, "dir": str(work / "sealed"), "recipients": recipients},
        })
        plain, sealed = got["plain"], got["encrypted"]
        rows.append(Row(f"pg backup time (scale {args.scale}), encrypted vs not", sealed["seconds"], plain["seconds"],
                        1.1, "s"))
        rows.append(Row(f"pg backup CPU s (scale {args.scale}), encrypted vs not", sealed["cpu"], plain["cpu"],
                        float("inf"), "s"))
        rows.append(Row(f"pg backup peak RSS (scale {args.scale}), encrypted", sealed["rss_mib"], 150, 1.0, "MiB"))
        rows.append(Row(f"pg backup size (scale {args.scale}), encrypted vs not", sealed["size"] / MIB,
                        plain["size"] / MIB, 1.01, "MiB"))
        backup_id = next((work / "sealed").glob("*.manifest.json")).name.removesuffix(".manifest.json")
        with scratch_database("postgresql", f"dbjobs_crypto_pg_{args.scale}_restore") as target:
            restored = []
            for _ in range(args.repeat):
                recreate_pg(target)()
                restored.append(child({"job": "restore", "url": PG_URL.format(target), "dir": str(work / "sealed"),
                                       "backup": backup_id, "identity": str(identity)}))
        fastest = min(restored, key=lambda r: r["seconds"])
        rows.append(Row(f"pg restore peak RSS (scale {args.scale}), encrypted", max(r["rss_mib"] for r in restored),
                        150, 1.0, "MiB"))
        plain_dump = next((work / "plain").glob("*.dump.zst"))
        compared = tool_vs_pyrage(plain_dump, recipients[0], args.repeat)
        if compared:
            rows.append(Row("encrypt the compressed dump: age tool vs pyrage", compared[0], compared[1], 1.0, "s"))
        print(f"  plain backup {plain['seconds']:.2f} s, encrypted {sealed['seconds']:.2f} s; encrypted restore "
              f"{fastest['seconds']:.2f} s (decrypts twice: check, then load); dump {plain['size'] / MIB:.1f} MiB",
              file=sys.stderr)
    print(f"\n{'figure':<44} {'ours':>10} {'anchor':>10} {'':<4} {'ratio':>7}  target")
    for row in rows:
        print(row.render())


if __name__ == "__main__":
    main()
