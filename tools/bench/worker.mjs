// The official TypeScript SDK's side of `make bench` (protocol: see
// crates/claude-code-sdk/benches/compare.rs). Runs with NODE_PATH pointing at the npm folder
// tools/bench/setup made (the SDK pinned there); the CLI is the pinned one
// (pathToClaudeCodeExecutable) and inherits the sandbox environment of this process.

import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const require = createRequire(join(process.env.NODE_PATH, 'x.js'));
const sdkPath = require.resolve('@anthropic-ai/claude-agent-sdk');
const { query, startup, prewarm } = await import(sdkPath);
const version = JSON.parse(
  readFileSync(join(process.env.NODE_PATH, '@anthropic-ai/claude-agent-sdk/package.json'), 'utf8'),
).version;

const CLI = process.env.CLAUDE_CODE_CLI_PATH;
const CWD = process.env.BENCH_CWD;
const options = (extra = {}) => ({ pathToClaudeCodeExecutable: CLI, cwd: CWD, ...extra });
const now = () => performance.now();

function textOf(message) {
  return (message.message?.content ?? [])
    .filter((b) => b.type === 'text')
    .map((b) => b.text)
    .join('');
}

async function timeStream(start, stream, stopAtResult = true) {
  let first = null;
  let text = '';
  for await (const message of stream) {
    if (message.type === 'assistant') {
      if (first === null) first = now() - start;
      text += textOf(message);
    }
    if (message.type === 'result') {
      const at = now() - start;
      return { first: first ?? at, result: at, text };
    }
  }
  throw new Error('no result');
}

function statusKb(field) {
  const line = readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(field));
  return line ? parseInt(line.split(/\s+/)[1], 10) : 0;
}

function resetPeakRss() {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {}
}

function cpuSeconds() {
  const usage = process.resourceUsage();
  return (usage.userCPUTime + usage.systemCPUTime) / 1e6;
}

function childrenCpuSeconds() {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(')').pop().trim().split(/\s+/);
  return (Number(fields[16 - 3]) + Number(fields[17 - 3])) / 100;
}

function taggedAlive(tag) {
  const needle = `BENCH_TAG=${tag}`;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = readFileSync(`/proc/${name}/environ`, 'latin1').split('\0');
      if (env.includes(needle)) return true;
    } catch {}
  }
  return false;
}

const tag = () => Math.random().toString(16).slice(2) + Math.random().toString(16).slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A prompt stream a conversation can be fed through, turn by turn.
class Inbox {
  constructor() {
    this.items = [];
    this.waiting = null;
    this.closed = false;
  }
  push(text) {
    const message = { type: 'user', message: { role: 'user', content: text }, parent_tool_use_id: null, session_id: '' };
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w({ value: message, done: false });
    } else this.items.push(message);
  }
  close() {
    this.closed = true;
    if (this.waiting) this.waiting({ value: undefined, done: true });
  }
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.items.length) return Promise.resolve({ value: this.items.shift(), done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => (this.waiting = r));
      },
    };
  }
}

class Conversation {
  constructor() {
    this.inbox = new Inbox();
    this.q = query({ prompt: this.inbox, options: options() });
    this.it = this.q[Symbol.asyncIterator]();
  }
  async turn(prompt) {
    const start = now();
    this.inbox.push(prompt);
    let first = null;
    for (;;) {
      const { value: message, done } = await this.it.next();
      if (done) throw new Error('conversation ended');
      if (message.type === 'assistant' && first === null) first = now() - start;
      if (message.type === 'result') {
        const at = now() - start;
        return { first: first ?? at, result: at };
      }
    }
  }
  async close() {
    this.inbox.close();
    try {
      for (;;) {
        const { done } = await this.it.next();
        if (done) break;
      }
    } catch {}
  }
}

let conversation = null;
let turns = 0;

async function run(command) {
  const op = command.op;
  const prompt = command.prompt ?? 'benchmark prompt';
  switch (op) {
    case 'cold': {
      const start = now();
      const { first, result } = await timeStream(start, query({ prompt, options: options() }));
      return { first, result };
    }
    case 'ts_startup': {
      // The SDK's own warm start: startup() (untimed), then the query on it.
      const warm = await startup({ options: options() });
      const start = now();
      const { first, result } = await timeStream(start, warm.query(prompt));
      return { first, result };
    }
    case 'ts_prewarm': {
      // The SDK's parked spare: prewarm() (untimed), then claim() for a new folder.
      const spare = await prewarm({ options: { pathToClaudeCodeExecutable: CLI } });
      const start = now();
      const q = spare.claim({ prompt, options: { cwd: command.cwd } });
      spare.claimed.catch(() => {});
      const { first, result } = await timeStream(start, q);
      return { first, result };
    }
    case 'client_turn': {
      if (!conversation) {
        conversation = new Conversation();
        await conversation.turn('warm-up turn');
      }
      turns += 1;
      const t = await conversation.turn(prompt);
      if (turns % 20 === 0) {
        await conversation.close();
        conversation = null;
      }
      return t;
    }
    case 'client_first_turn': {
      // A freshly started conversation: wait for its process to be up, then time a turn.
      const warm = await startup({ options: options() });
      const inbox = new Inbox();
      const q = warm.query(inbox);
      const c = { inbox, q, it: q[Symbol.asyncIterator]() };
      Object.setPrototypeOf(c, Conversation.prototype);
      const t = await c.turn(prompt);
      await c.close();
      return t;
    }
    case 'throughput': {
      const n = command.n ?? 32;
      const before = childrenCpuSeconds();
      const start = now();
      const answers = await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const id = `query-id-${i}-${tag()}`;
          const { text } = await timeStream(now(), query({ prompt: id, options: options() }));
          return text.includes(id);
        }),
      );
      const wall = now() - start;
      await sleep(200);
      return { wall, ok: answers.every(Boolean), cli_cpu: (childrenCpuSeconds() - before) / n };
    }
    case 'early_stop': {
      const t = tag();
      const q = query({ prompt, options: options({ env: { ...process.env, BENCH_TAG: t } }) });
      for await (const _ of q) break;
      const start = now();
      while (taggedAlive(t) && now() - start < 30000) await sleep(1);
      return { gone: now() - start };
    }
    case 'rss_concurrent': {
      const n = command.n ?? 32;
      resetPeakRss();
      const before = statusKb('VmRSS:');
      const answers = await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const id = `rss-id-${i}-${tag()}`;
          const { text } = await timeStream(now(), query({ prompt: id, options: options() }));
          return text.includes(id);
        }),
      );
      return { rss_kb: Math.max(0, statusKb('VmHWM:') - before), ok: answers.every(Boolean) };
    }
    case 'big': {
      const bytes = command.bytes ?? 50 << 20;
      resetPeakRss();
      const before = statusKb('VmRSS:');
      const cpuBefore = cpuSeconds();
      const start = now();
      let got = 0;
      for await (const message of query({ prompt: `BIG_ANSWER:${bytes}`, options: options() })) {
        if (message.type === 'assistant') got += textOf(message).length;
        if (message.type === 'result') break;
      }
      const wall = now() - start;
      return {
        wall,
        rss_kb: Math.max(0, statusKb('VmHWM:') - before),
        cpu: cpuSeconds() - cpuBefore,
        ok: got >= bytes,
      };
    }
    case 'stop':
      if (conversation) await conversation.close();
      return { stopped: true };
    default:
      return { error: `unsupported op ${op}` };
  }
}

console.log(JSON.stringify({ ready: true, sdk: '@anthropic-ai/claude-agent-sdk', version }));
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  let answer;
  try {
    answer = await run(command);
  } catch (error) {
    answer = { error: String(error?.stack ?? error) };
  }
  console.log(JSON.stringify(answer));
  if (command.op === 'stop') break;
}
process.exit(0);
