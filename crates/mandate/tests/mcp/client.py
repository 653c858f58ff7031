"""The real `mcp` client (2.3.0) through `mandate mcp-gateway`.

usage: client.py MODE MANDATE_BIN SERVER_PY
MODE is `legacy` (the 2025 `initialize` handshake) or `auto` (probes
`server/discover`: 2026-07-28 when the server speaks it). Prints one JSON
summary line on stdout.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


async def main() -> None:
    mode, mandate, server_py = sys.argv[1:4]
    params = StdioServerParameters(
        command=mandate,
        args=["mcp-gateway", "--server", "demo", "--", sys.executable, server_py],
        env=dict(os.environ),
    )
    async with Client(params, mode=mode) as client:
        session = client.session
        discovered = getattr(session, "_discover_result", None) is not None
        tools = await client.list_tools()
        added = await client.call_tool("add", {"a": 2, "b": 40})
        wiped = await client.call_tool("wipe", {"target": "/"})

        def texts(result):
            return [getattr(item, "text", None) for item in result.content]

        summary = {
            "discovered": discovered,
            "tools": [tool.name for tool in tools.tools],
            "add": {"isError": added.is_error, "text": texts(added), "structured": added.structured_content},
            "wipe": {"isError": wiped.is_error, "text": texts(wiped)},
        }
    print(json.dumps(summary), flush=True)


asyncio.run(main())
