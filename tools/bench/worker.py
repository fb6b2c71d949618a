"""The official Python SDK's side of `make bench` (see crates/claude-code-sdk/benches/compare.rs
for the protocol: one JSON command per line on stdin, one JSON answer per line on stdout).

Runs in the venv tools/bench/setup made, with claude-agent-sdk pinned there. The CLI is the
pinned one (cli_path), and it inherits the sandbox environment the driver gave this process.
"""

import asyncio
import json
import os
import random
import sys
import time

import claude_agent_sdk
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    TextBlock,
    query,
)

CLI = os.environ["CLAUDE_CODE_CLI_PATH"]
CWD = os.environ["BENCH_CWD"]


def options(**extra):
    return ClaudeAgentOptions(cli_path=CLI, cwd=CWD, **extra)


def ms(seconds):
    return seconds * 1000.0


def text_of(message):
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


async def time_stream(start, stream):
    first = None
    text = []
    async for message in stream:
        if isinstance(message, AssistantMessage):
            if first is None:
                first = time.perf_counter() - start
            text.append(text_of(message))
        if isinstance(message, ResultMessage):
            at = time.perf_counter() - start
            return (first if first is not None else at), at, "".join(text)
    raise RuntimeError("no result")


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_seconds():
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    at = lambda n: float(fields[n - 3])
    return (at(14) + at(15)) / tick, (at(16) + at(17)) / tick


def tagged_alive(tag):
    needle = f"BENCH_TAG={tag}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    return True
        except OSError:
            pass
    return False


def tag():
    return f"{random.getrandbits(64):016x}"


class Worker:
    def __init__(self):
        self.client = None
        self.turns = 0

    async def run(self, command):
        op = command.get("op")
        prompt = command.get("prompt", "benchmark prompt")
        if op == "cold":
            start = time.perf_counter()
            first, result, _ = await time_stream(start, query(prompt=prompt, options=options()))
            return {"first": ms(first), "result": ms(result)}
        if op == "client_turn":
            if self.client is None:
                self.client = ClaudeSDKClient(options())
                await self.client.connect()
                await self.client.query("warm-up turn")
                await time_stream(time.perf_counter(), self.client.receive_response())
            self.turns += 1
            start = time.perf_counter()
            await self.client.query(prompt)
            first, result, _ = await time_stream(start, self.client.receive_response())
            if self.turns % 20 == 0:
                await self.client.disconnect()
                self.client = None
            return {"first": ms(first), "result": ms(result)}
        if op == "client_first_turn":
            client = ClaudeSDKClient(options())
            await client.connect()
            start = time.perf_counter()
            await client.query(prompt)
            first, result, _ = await time_stream(start, client.receive_response())
            await client.disconnect()
            return {"first": ms(first), "result": ms(result)}
        if op == "throughput":
            n = command.get("n", 32)
            _, children_before = cpu_seconds()

            async def one(i):
                ident = f"query-id-{i}-{tag()}"
                _, _, text = await time_stream(time.perf_counter(), query(prompt=ident, options=options()))
                return ident in text

            start = time.perf_counter()
            answers = await asyncio.gather(*(one(i) for i in range(n)))
            wall = time.perf_counter() - start
            await asyncio.sleep(0.2)
            _, children_after = cpu_seconds()
            return {"wall": ms(wall), "ok": all(answers), "cli_cpu": (children_after - children_before) / n}
        if op == "early_stop":
            t = tag()
            stream = query(prompt=prompt, options=options(env={"BENCH_TAG": t}))
            async for _ in stream:
                break
            # What a user writes: leave the loop and drop the iterator.
            del stream
            start = time.perf_counter()
            while tagged_alive(t) and time.perf_counter() - start < 30:
                await asyncio.sleep(0.001)
            return {"gone": ms(time.perf_counter() - start)}
        if op == "rss_concurrent":
            n = command.get("n", 32)
            reset_peak_rss()
            before = status_kb("VmRSS:")

            async def one(i):
                ident = f"rss-id-{i}-{tag()}"
                _, _, text = await time_stream(time.perf_counter(), query(prompt=ident, options=options()))
                return ident in text

            answers = await asyncio.gather(*(one(i) for i in range(n)))
            return {"rss_kb": max(0, status_kb("VmHWM:") - before), "ok": all(answers)}
        if op == "big":
            size = command.get("bytes", 50 << 20)
            reset_peak_rss()
            before = status_kb("VmRSS:")
            cpu_before, _ = cpu_seconds()
            start = time.perf_counter()
            got = 0
            # Its line limit defaults to 1 MiB: raise it above the answer.
            big_options = options(max_buffer_size=4 * size + (1 << 20))
            async for message in query(prompt=f"BIG_ANSWER:{size}", options=big_options):
                if isinstance(message, AssistantMessage):
                    got += len(text_of(message))
                if isinstance(message, ResultMessage):
                    break
            wall = time.perf_counter() - start
            cpu_after, _ = cpu_seconds()
            return {
                "wall": ms(wall),
                "rss_kb": max(0, status_kb("VmHWM:") - before),
                "cpu": cpu_after - cpu_before,
                "ok": got >= size,
            }
        if op == "stop":
            if self.client is not None:
                await self.client.disconnect()
            return {"stopped": True}
        return {"error": f"unsupported op {op!r}"}


async def main():
    worker = Worker()
    loop = asyncio.get_running_loop()
    version = getattr(claude_agent_sdk, "__version__", "?")
    print(json.dumps({"ready": True, "sdk": "claude-agent-sdk", "version": version}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        try:
            answer = await worker.run(command)
        except Exception as error:  # a failed run is a missing sample, not a dead bench
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
        if command.get("op") == "stop":
            break


if __name__ == "__main__":
    asyncio.run(main())
