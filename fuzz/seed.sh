#!/usr/bin/env bash
# Seeds the fuzz corpora from real captures: the SDK's CLI fixtures
# (crates/claude-code-sdk/tests/fixtures) and the shared captures (../shared/fixtures,
# when present). wire_lines gets each capture's stdout lines (what the CLI wrote), in
# pieces of a few lines; transcript gets each session transcript file.
set -euo pipefail
cd "$(dirname "$0")"
root=..
out_wire=corpus/wire_lines
out_transcript=corpus/transcript
mkdir -p "$out_wire" "$out_transcript"
captures=$(ls "$root"/crates/claude-code-sdk/tests/fixtures/cli-*/*.jsonl "$root"/../shared/fixtures/*/*.jsonl 2>/dev/null || true)
python3 - "$out_wire" "$out_transcript" $captures <<'PY'
import json, sys, os, hashlib
out_wire, out_transcript, files = sys.argv[1], sys.argv[2], sys.argv[3:]
def save(directory, data):
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
n_wire = n_transcript = 0
for path in files:
    lines = open(path, "rb").read().splitlines()
    if "transcript" in os.path.basename(path):
        save(out_transcript, b"\n".join(lines) + b"\n"); n_transcript += 1
        for i in range(0, len(lines), 4):
            save(out_transcript, b"\n".join(lines[i:i + 4]) + b"\n"); n_transcript += 1
        continue
    out = []
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("dir") == "out":
            out.append(json.dumps(record.get("msg"), separators=(",", ":")).encode())
    # Four cut bytes first (see wire_lines), then a few stdout lines.
    for i in range(0, len(out), 3):
        piece = b"\n".join(l for l in out[i:i + 3] if len(l) < 3000) + b"\n"
        save(out_wire, b"\x05\x11\x2a\x60" + piece); n_wire += 1
print(f"seeded {n_wire} wire_lines and {n_transcript} transcript inputs from {len(files)} captures")
PY
