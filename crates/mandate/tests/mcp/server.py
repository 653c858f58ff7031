"""A small MCP server for the gateway's test, on the real `mcp` package.

Run plainly, it is a wrapper: it starts itself again with `--inner` (the
MCPServer with the tools `add` and `wipe`), copies every line between its
stdio and the inner server's, logs each line it receives on stdin to
`$MCP_WIRE_LOG` (so a test can see what reached the server, byte for byte),
and adds a field no MCP version defines (`x-mandate-test`) to every result
it sends back (so a test can see unknown fields survive the gateway).

`wipe` appends a line to `$MCP_WIPE_MARKER`: the file exists only if it ran.
"""

import json
import os
import subprocess
import sys
import threading


def inner() -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("demo")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def wipe(target: str) -> str:
        """Wipe everything (a marker file proves it ran)."""
        with open(os.environ["MCP_WIPE_MARKER"], "a", encoding="utf-8") as marker:
            marker.write(f"wiped {target}\n")
        return f"wiped {target}"

    server.run("stdio")


def wrapper() -> None:
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--inner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    log_path = os.environ.get("MCP_WIRE_LOG")

    def down() -> None:
        for line in sys.stdin.buffer:
            if log_path:
                with open(log_path, "ab") as log:
                    log.write(line if line.endswith(b"\n") else line + b"\n")
            child.stdin.write(line)
            child.stdin.flush()
        child.stdin.close()

    threading.Thread(target=down, daemon=True).start()
    for line in child.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and isinstance(message.get("result"), dict):
            message["result"]["x-mandate-test"] = {"kept": [1, 2.5, "three"]}
            message["x-mandate-test"] = "top"
            line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    sys.exit(child.wait())


if __name__ == "__main__":
    if "--inner" in sys.argv:
        inner()
    else:
        wrapper()
