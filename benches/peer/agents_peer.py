"""The bench's peer: the OpenAI Agents SDK with SQLiteSession running Colloquy's bench turn.

One turn is the same as Colloquy's: a user message, a streamed chat completion that calls the
calculator, the tool, a second streamed completion with the answer, every item stored in a
SQLite session file. `clients` asyncio tasks run turns back to back for `warmup + duration`
seconds; turns that start after the warm-up are reported. Each prompt carries a key
(`bench-turn-<hex>`) so that the bench driver can subtract the mock provider's own time.

Run by `cargo xtask bench` in the virtualenv it creates (target/bench-peer). Prints one JSON
object on stdout:
{"turns": N, "errors": E, "window_s": S, "first_error": "...", "samples": [[key, turn_us, ttft_us], ...]}
where `turns` counts turns completed inside the measured window.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    Runner,
    SQLiteSession,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI


@function_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `6 * 7`."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        return json.dumps({"expression": expression, "error": "not arithmetic"})
    return json.dumps({"expression": expression, "result": float(eval(expression, {"__builtins__": {}}))})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--turns-per-session", type=int, default=20)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=args.base_url, api_key="unused", max_retries=0)
    agent = Agent(
        name="assistant",
        instructions="You are a helpful assistant. Use the calculator for arithmetic.",
        model=OpenAIChatCompletionsModel(model=args.model, openai_client=client),
        tools=[calculator],
    )

    start = time.perf_counter()
    window_start = start + args.warmup
    window_end = window_start + args.duration
    samples = []
    state = {"turns": 0, "errors": 0, "first_error": None}

    async def run_client() -> None:
        session = None
        used = args.turns_per_session
        while time.perf_counter() < window_end:
            if used >= args.turns_per_session:
                session = SQLiteSession(uuid.uuid4().hex, args.db)
                used = 0
            used += 1
            key = uuid.uuid4().hex
            began = time.perf_counter()
            first = None
            try:
                result = Runner.run_streamed(agent, f"bench-turn-{key}: what is 6 * 7?", session=session)
                async for event in result.stream_events():
                    if first is None and event.type == "raw_response_event":
                        if getattr(event.data, "type", "").endswith(".delta"):
                            first = time.perf_counter()
                if not result.final_output:
                    raise RuntimeError("the turn ended without an answer")
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                state["errors"] += 1
                if state["first_error"] is None:
                    state["first_error"] = repr(error)
                continue
            ended = time.perf_counter()
            if began >= window_start:
                samples.append([key, int((ended - began) * 1e6), int(((first or ended) - began) * 1e6)])
            if window_start <= ended <= window_end:
                state["turns"] += 1

    await asyncio.gather(*(run_client() for _ in range(args.clients)))
    json.dump(
        {
            "turns": state["turns"],
            "errors": state["errors"],
            "window_s": args.duration,
            "first_error": state["first_error"],
            "samples": samples,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
