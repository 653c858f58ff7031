#!/usr/bin/env python3
"""Storage per decision of an embedded store, from SQLite's `dbstat`.

    python3 bench/storage.py DATA_DIR/mandate.db

Stop the server first (or let `mandate bench` finish): the figures count the
database file's pages, not the WAL. Prints the bytes of each table per
decision entry and per entry, and the average row kept for an entry.
"""

import sqlite3
import sys

LOG_TABLES = ["entries", "search", "search_identity", "entry_keys", "nodes"]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    connection = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    decisions = connection.execute("SELECT count(*) FROM search WHERE type = 'decision'").fetchone()[0]
    entries = connection.execute("SELECT count(*) FROM entries").fetchone()[0]
    if not decisions:
        print("no decisions in this store", file=sys.stderr)
        return 1
    sizes = dict(connection.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    kept = connection.execute("SELECT avg(length(bytes)) FROM entries").fetchone()[0]
    print(f"{decisions} decisions, {entries} entries; an entry's row keeps {kept:.0f} B on average")
    print(f"{'table':16} {'B/decision':>10} {'B/entry':>8}")
    for table in LOG_TABLES + ["state"]:
        size = sizes.get(table, 0)
        print(f"{table:16} {size / decisions:10.1f} {size / entries:8.1f}")
    log = sum(sizes.get(table, 0) for table in LOG_TABLES)
    print(f"{'the log':16} {log / decisions:10.1f} {log / entries:8.1f}   (every table but `state`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
