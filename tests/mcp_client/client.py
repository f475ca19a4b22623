"""An MCP client built on the official Python SDK, driving `agentcom-hub mcp`.

Run by tests/mcp_python_client.rs, which plays the agent: this script prints
`SUBMITTED <task id>` and then waits for the task; the Rust side completes it
with a real agent connection, and the script prints `RESULT <json>` and exits 0.
Any failed expectation raises (exit code 1) with the reason on stderr.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def expect(condition, what):
    if not condition:
        raise SystemExit(f"expectation failed: {what}")


async def main():
    params = StdioServerParameters(
        command=os.environ["AGENTCOM_HUB_BIN"],
        args=["mcp"],
        env={
            "AGENTCOM_HUB_URL": os.environ["AGENTCOM_HUB_URL"],
            "AGENTCOM_TOKEN": os.environ["AGENTCOM_TOKEN"],
        },
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            expect(init.server_info.name == "agentcom-hub", f"server name {init.server_info}")
            tools = {t.name: t for t in (await session.list_tools()).tools}
            expect("wait_for_task" in tools, f"tools {sorted(tools)}")
            expect("cancel_task" not in tools, "an agent token sees no admin tools")

            bad = await session.call_tool("submit_task", {"priority": "soonish"})
            expect(bad.is_error, "bad arguments are a tool error")
            expect(bad.structured_content["error"] == "invalid_arguments", str(bad))

            created = await session.call_tool(
                "submit_task",
                {"description": "count the files", "capabilities": ["code"]},
            )
            expect(not created.is_error, str(created))
            task_id = created.structured_content["task_id"]
            print(f"SUBMITTED {task_id}", flush=True)

            waited = await session.call_tool(
                "wait_for_task", {"task_id": task_id, "timeout_seconds": 120}
            )
            expect(not waited.is_error, str(waited))
            print(f"RESULT {json.dumps(waited.structured_content)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
