#!/usr/bin/env python3
"""Chunk runner throughput against curl, on the same files from the same loopback server.

Generates N files of S MB, serves them from 127.0.0.1 (a threaded server writing large
blocks), then fetches them with `run_chunk.py` (embedded path, MD5 of every file verified) and
with `curl` at the same parallelism (`xargs -P`), and prints both throughputs and the ratio.
Usage: python benchmarks/bench_fetcher.py [--files 20] [--mb 50] [--parallel 4]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "served").mkdir()
        files = make_files(root / "served", args.files, args.mb)
        server = serve(root / "served")
        base = f"http://127.0.0.1:{server.server_port}"
        total = sum(size for _, _, size in files) / 1e6
        worker = root / "mf-1-0-bbbbbb"
        worker.mkdir()
        rows = ["run_accession\turls\tmd5s\tbytes"] + [
            f"ERR{9000000 + i}\t{base}/{name}\t{md5}\t{size}"
            for i, (name, md5, size) in enumerate(files)]
        (worker / "chunk.tsv").write_text("\n".join(rows) + "\n")
        (worker / "token").write_text("x")
        started = time.perf_counter()
        subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                        "--max-parallel", str(args.parallel)], check=True,
                       stderr=subprocess.DEVNULL)
        ours = time.perf_counter() - started
        (root / "curl").mkdir()
        urls = "\n".join(f"{base}/{name}" for name, _, _ in files)
        started = time.perf_counter()
        subprocess.run(["xargs", "-P", str(args.parallel), "-n", "1", "curl", "-sS", "-O"],
                       input=urls, text=True, cwd=root / "curl", check=True)
        theirs = time.perf_counter() - started
        server.shutdown()
    print(f"{args.files} files x {args.mb} MB, {args.parallel} at a time, from 127.0.0.1")
    print(f"run_chunk.py (MD5 verified): {total / ours:7.0f} MB/s  ({ours:.1f} s)")
    print(f"curl (no verification):      {total / theirs:7.0f} MB/s  ({theirs:.1f} s)")
    print(f"ratio run_chunk / curl: {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
