#!/usr/bin/env python3
"""Chunk runner throughput against curl doing the same work, from the same loopback server.

Generates N files of S MB, serves them from 127.0.0.1 (a threaded server writing large
blocks), then fetches them with `run_chunk.py` (embedded path: each file written to disk and
its MD5 computed while streaming) and with `curl URL | tee FILE | md5sum` at the same
parallelism (`xargs -P`): like with like. Each side runs `--repeat` times, alternating; the
script prints every run and the ratio of the medians.
Usage: python benchmarks/bench_fetcher.py [--files 20] [--mb 50] [--parallel 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(__file__).resolve().parents[1] / "nextflow" / "bin"


class Files(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:
        shutil.copyfileobj(source, outputfile, 4 << 20)


def serve(folder: Path) -> http.server.ThreadingHTTPServer:
    handler = lambda *a, **k: Files(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_files(folder: Path, count: int, size_mb: int) -> list[tuple[str, str, int]]:
    block = os.urandom(1 << 20)
    files = []
    for i in range(count):
        name = f"ERR{9000000 + i}_1.fastq.gz"
        digest = hashlib.md5(usedforsecurity=False)
        with open(folder / name, "wb") as handle:
            for j in range(size_mb):
                chunk = block[j % 7:] + block[: j % 7]
                handle.write(chunk)
                digest.update(chunk)
        files.append((name, digest.hexdigest(), size_mb << 20))
    return files


CURL_AND_MD5 = 'curl -sS "$1" | tee "${1##*/}" | md5sum'


def time_runner(root: Path, files: list[tuple[str, str, int]], base: str, parallel: int,
                round_: int) -> float:
    worker = root / f"mf-1-{round_}-bbbbbb"
    worker.mkdir()
    rows = ["run_accession\turls\tmd5s\tbytes"] + [
        f"ERR{9000000 + i}\t{base}/{name}\t{md5}\t{size}"
        for i, (name, md5, size) in enumerate(files)]
    (worker / "chunk.tsv").write_text("\n".join(rows) + "\n")
    (worker / "token").write_text("x")
    started = time.perf_counter()
    subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                    "--max-parallel", str(parallel)], check=True, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    shutil.rmtree(worker)
    return elapsed


def time_curl(root: Path, files: list[tuple[str, str, int]], base: str, parallel: int) -> float:
    folder = root / "curl"
    folder.mkdir()
    urls = "\n".join(f"{base}/{name}" for name, _, _ in files)
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-n", "1", "sh", "-c", CURL_AND_MD5, "_"],
                   input=urls, text=True, cwd=folder, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    shutil.rmtree(folder)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "served").mkdir()
        files = make_files(root / "served", args.files, args.mb)
        server = serve(root / "served")
        base = f"http://127.0.0.1:{server.server_port}"
        total = sum(size for _, _, size in files) / 1e6
        for round_ in range(args.repeat):
            ours.append(time_runner(root, files, base, args.parallel, round_))
            theirs.append(time_curl(root, files, base, args.parallel))
        server.shutdown()
    print(f"{args.files} files x {args.mb} MB, {args.parallel} at a time, from 127.0.0.1, "
          f"{args.repeat} rounds")
    for name, times in (("run_chunk.py (write + MD5)", ours),
                        ("curl | tee | md5sum", theirs)):
        speeds = ", ".join(f"{total / t:.0f}" for t in times)
        print(f"{name:28} MB/s per round: {speeds}")
    ratio = statistics.median(theirs) / statistics.median(ours)
    print(f"ratio run_chunk / curl+md5sum (median throughput): {ratio:.2f}")


if __name__ == "__main__":
    main()
