#!/usr/bin/env python3
"""What one fsync costs on this disk by the number of pages written first.

    python3 bench/fsync_pages.py [DIR] [--commits N] [--fdatasync]

For 1, 6, 13 and 26 pages (a WAL frame: 4 KiB and its 24-byte header), it
preallocates a file in DIR (default: the current directory), then N times
rewrites the next N pages with `pwrite` and calls `fsync`, and prints the
median and p90 of each write-and-sync. A lone decision writes 13 frames.
With --fdatasync it syncs with `fdatasync` instead (SQLite, as built,
calls `fsync`).
"""

import argparse
import os
import time

FRAME_BYTES = 4096 + 24


def measure(directory: str, pages: int, commits: int, sync=os.fsync) -> tuple[float, float]:
    path = os.path.join(directory, "fsync_pages.bin")
    size = FRAME_BYTES * pages
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\1" * (size * commits))
        os.fsync(fd)
        frames = [os.urandom(FRAME_BYTES) for _ in range(pages)]
        took = []
        for commit in range(commits):
            started = time.perf_counter()
            for n, frame in enumerate(frames):
                os.pwrite(fd, frame, commit * size + n * FRAME_BYTES)
            sync(fd)
            took.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    return took[len(took) // 2] * 1e6, took[int(len(took) * 0.9)] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", default=".")
    parser.add_argument("--commits", type=int, default=1500)
    parser.add_argument("--fdatasync", action="store_true", help="sync with fdatasync instead of fsync")
    args = parser.parse_args()
    sync = os.fdatasync if args.fdatasync else os.fsync
    for pages in (1, 6, 13, 26):
        median, p90 = measure(args.dir, pages, args.commits, sync)
        print(f"{pages:3} pages: p50 {median:5.0f} us, p90 {p90:5.0f} us")


if __name__ == "__main__":
    main()
