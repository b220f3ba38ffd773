#!/usr/bin/env bash
# Compares one training step of anemone-train on the simulator with the same step in JAX
# (CPU, float32, jit) on this machine, and prints a table per preset.
#
# Usage: bash scripts/bench-train.sh [PRESET...]     (default: tiny stories15m)
# Environment: ROUNDS (default 2) alternations of a Rust run and a JAX run per preset;
#              PYTHON (default $ANEMONE_PYTHON, else python3) with jax installed
#              (scripts/install-test-deps.sh); THREADS for JAX (default 2, as the Rust side
#              uses this 2-core machine's cores).
#
# Builds crates/train/benches/train_step.rs in release once, then alternates it with
# scripts/bench_train_jax.py so that load from other processes hits both alike, and keeps
# each side's best ms/step. The anemone columns split that fastest step into device
# (inside the simulator's evaluate), CPU (embedding, norms, classifier and cross-entropy,
# weight gradients not hidden behind the device, clipping, AdamW) and copy (fp16 conversion
# into and out of device surfaces, staging weights). ratio = JAX ms / anemone ms: above 1
# means anemone is faster.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-2}"
PYTHON="${PYTHON:-${ANEMONE_PYTHON:-python3}}"
THREADS="${THREADS:-2}"
if [ "$#" -gt 0 ]; then PRESETS=("$@"); else PRESETS=(tiny stories15m); fi

if ! "$PYTHON" -c "import jax" 2>/dev/null; then
    echo "bench-train.sh: $PYTHON cannot import jax; run scripts/install-test-deps.sh" >&2
    exit 1
fi

echo "building the train_step bench (release)..." >&2
BIN="$(cargo bench -p anemone-train --bench train_step --no-run --message-format=json \
    | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_step" \
            and m.get("executable"):
        print(m["executable"])
')"
if [ -z "$BIN" ]; then
    echo "bench-train.sh: no train_step executable was built" >&2
    exit 1
fi

RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for preset in "${PRESETS[@]}"; do
        echo "round $round/$ROUNDS: $preset (anemone)" >&2
        "$BIN" --json "$preset" | sed 's/^/anemone /' >>"$RESULTS"
        echo "round $round/$ROUNDS: $preset (jax)" >&2
        "$PYTHON" scripts/bench_train_jax.py --json --threads "$THREADS" "$preset" 2>/dev/null \
            | sed 's/^/jax /' >>"$RESULTS"
    done
done

"$PYTHON" - "$RESULTS" "${PRESETS[@]}" <<'PY'
import json, sys

path, presets = sys.argv[1], sys.argv[2:]
runs = {}
for line in open(path):
    side, _, obj = line.partition(" ")
    r = json.loads(obj)
    runs.setdefault((side, r["preset"]), []).append(r)

def best(side, preset):
    rs = runs.get((side, preset), [])
    return min(rs, key=lambda r: r["ms_per_step_min"]) if rs else None

head = ("preset", "tokens", "anemone ms", "device", "cpu", "copy", "JAX ms", "ratio")
rows = []
for p in presets:
    a, j = best("anemone", p), best("jax", p)
    if a is None or j is None:
        continue
    a_ms, j_ms = a["ms_per_step_min"], j["ms_per_step_min"]
    split = [a[f"min_step_{k}_ms"] for k in ("device", "cpu", "copy")]
    rows.append((p, str(a["tokens"]), f"{a_ms:.1f}", *(f"{x:.1f}" for x in split),
                 f"{j_ms:.1f}", f"{j_ms / a_ms:.2f}"))
widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]


def fmt(r):
    cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "  ".join(cells)


print()
print("ms per optimizer step: best step of all runs of each side; device/cpu/copy: its split")
print("ratio = JAX ms / anemone ms (> 1: anemone faster)")
print(fmt(head))
print(fmt(tuple("-" * w for w in widths)))
for r in rows:
    print(fmt(r))
print()
for p in presets:
    a, j = best("anemone", p), best("jax", p)
    if a and j:
        print(f"{p}: anemone median {a['ms_per_step_median']:.1f} ms (mean split: device "
              f"{a['device_ms']:.1f}, cpu {a['cpu_ms']:.1f} of which clip + AdamW "
              f"{a['optim_ms']:.1f}, copy {a['copy_ms']:.1f}), "
              f"{a['tokens_per_s']:.0f} tokens/s, {a['compiles']} compiles; "
              f"JAX median {j['ms_per_step_median']:.1f} ms, {j['tokens_per_s']:.0f} tokens/s "
              f"(jax {j['jax']}, {j['threads']} threads, compile {j['compile_s']:.1f} s)")
PY
