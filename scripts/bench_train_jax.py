#!/usr/bin/env python3
# Milliseconds per optimizer step of the llama2-style model anemone-train trains, written in
# JAX (CPU, float32, one jit of value_and_grad + gradient clipping + AdamW): the peer that
# crates/train/benches/train_step.rs is compared against (scripts/bench-train.sh runs both).
#
# Usage: python3 scripts/bench_train_jax.py [PRESET...] [--steps N] [--seconds S]
#            [--threads T] [--json]
#   PRESET     tiny (16 x 64 tokens per step) and/or stories15m (4 x 256); both by default.
#   --steps N  measured steps after the compile and one warm-up step (default 10 for tiny,
#              5 otherwise); --seconds S measures for about S seconds instead (at least 3).
#   --threads  CPU threads XLA may use (default 2, as the Rust side on this 2-core machine):
#              the process is pinned to that many CPUs before JAX starts.
#   --phases   also times the forward pass alone and forward + backward without the
#              optimizer (each its own jit; best of 3), to show where JAX's time goes.
#   --json     one JSON object per preset: preset, batch, tokens, steps, ms_per_step_min,
#              ms_per_step_median, tokens_per_s (at the median step), compile_s, threads,
#              loss (of the first step), jax.
#
# The math is that of scripts/jax_reference.py (the f64 oracle) and of the Rust model:
# RMSNorm, RoPE on interleaved channel pairs, causal softmax attention, SwiGLU FFN, residual
# adds, final RMSNorm, classifier tied to the embedding, mean cross-entropy. The oracle is
# not imported because it switches JAX to float64 globally. The optimizer matches
# anemone-train's: global-norm clipping to 1.0, AdamW with betas 0.9/0.95, eps 1e-8 and no
# weight decay on norm weights, with each preset's learning rate and weight decay. Tokens
# are random (seeded); the compile and the warm-up step are not timed. Needs jax
# (scripts/install-test-deps.sh installs jax[cpu]).
import argparse
import json
import math
import os
import statistics
import sys
import time

PRESETS = {
    # dim, hidden, layers, heads, seq, vocab, batch, lr, weight decay
    "tiny": dict(dim=128, hidden=384, layers=2, heads=4, seq=64, vocab=256, batch=16,
                 lr=2e-3, wd=0.01),
    "stories15m": dict(dim=288, hidden=768, layers=6, heads=6, seq=256, vocab=32000, batch=4,
                       lr=3e-4, wd=0.1),
}
NORM_EPS = 1e-5
ROPE_THETA = 10000.0
BETA1, BETA2, ADAM_EPS, CLIP = 0.9, 0.95, 1e-8, 1.0
SEED = 7


def parse_args():
    ap = argparse.ArgumentParser(description="JAX training-step benchmark")
    ap.add_argument("presets", nargs="*", default=None)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--phases", action="store_true")
    a = ap.parse_args()
    a.presets = a.presets or ["tiny", "stories15m"]
    for p in a.presets:
        if p not in PRESETS:
            ap.error(f"unknown preset {p!r} (known: {', '.join(PRESETS)})")
    return a


def limit_threads(n):
    # Must run before JAX starts its thread pools.
    cpus = sorted(os.sched_getaffinity(0))
    if n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={n}"
    ).strip()


def build(cfg):
    import jax
    import jax.numpy as jnp
    import numpy as np

    dim, hidden, layers, heads = cfg["dim"], cfg["hidden"], cfg["layers"], cfg["heads"]
    seq, vocab, batch = cfg["seq"], cfg["vocab"], cfg["batch"]
    hd = dim // heads

    # llama2.c's initialisation, as Params::init: normal(0, 0.02), output projections
    # scaled by 1/sqrt(2 layers), norms at 1. Linear weights are [out, in].
    rng = np.random.default_rng(SEED)
    normal = lambda shape, std: jnp.asarray(rng.normal(0.0, std, shape), dtype=jnp.float32)
    residual = 0.02 / math.sqrt(2 * layers)
    params = {
        "embedding": normal((vocab, dim), 0.02),
        "final_norm": jnp.ones((dim,), jnp.float32),
        "layers": [
            {
                "attn_norm": jnp.ones((dim,), jnp.float32),
                "wq": normal((dim, dim), 0.02),
                "wk": normal((dim, dim), 0.02),
                "wv": normal((dim, dim), 0.02),
                "wo": normal((dim, dim), residual),
                "ffn_norm": jnp.ones((dim,), jnp.float32),
                "w1": normal((hidden, dim), 0.02),
                "w2": normal((dim, hidden), residual),
                "w3": normal((hidden, dim), 0.02),
            }
            for _ in range(layers)
        ],
    }
    inputs = jnp.asarray(rng.integers(0, vocab, (batch, seq)), dtype=jnp.int32)
    targets = jnp.asarray(rng.integers(0, vocab, (batch, seq)), dtype=jnp.int32)

    freq = 1.0 / ROPE_THETA ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    angle = np.arange(seq, dtype=np.float64)[:, None] * freq[None, :]
    cos = jnp.asarray(np.cos(angle)[None, :, None, :], dtype=jnp.float32)
    sin = jnp.asarray(np.sin(angle)[None, :, None, :], dtype=jnp.float32)
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))

    def rmsnorm(x, w):
        return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + NORM_EPS) * w

    def rope(x):
        # x: [batch, seq, heads, head_dim]; rotates interleaved pairs (2i, 2i + 1).
        a, b = x[..., 0::2], x[..., 1::2]
        return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)

    def loss_fn(p, inputs, targets):
        x = p["embedding"][inputs]
        for w in p["layers"]:
            xn = rmsnorm(x, w["attn_norm"])
            q = rope((xn @ w["wq"].T).reshape(batch, seq, heads, hd))
            k = rope((xn @ w["wk"].T).reshape(batch, seq, heads, hd))
            v = (xn @ w["wv"].T).reshape(batch, seq, heads, hd)
            scores = jnp.einsum("bthc,bshc->bhts", q, k) / math.sqrt(hd)
            probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
            o = jnp.einsum("bhts,bshc->bthc", probs, v).reshape(batch, seq, dim)
            x = x + o @ w["wo"].T
            xn = rmsnorm(x, w["ffn_norm"])
            g = jax.nn.silu(xn @ w["w1"].T) * (xn @ w["w3"].T)
            x = x + g @ w["w2"].T
        xf = rmsnorm(x, p["final_norm"])
        logp = jax.nn.log_softmax(xf @ p["embedding"].T, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    # Weight decay per leaf: none on norm weights.
    decay = jax.tree_util.tree_map_with_path(
        lambda path, _: 0.0 if "norm" in jax.tree_util.keystr(path) else cfg["wd"], params
    )

    def step(p, m, v, t, lr, inputs, targets):
        loss, g = jax.value_and_grad(loss_fn)(p, inputs, targets)
        leaves = jax.tree_util.tree_leaves(g)
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
        scale = jnp.minimum(1.0, CLIP / jnp.maximum(norm, 1e-30))
        g = jax.tree_util.tree_map(lambda x: x * scale, g)
        bc1 = 1.0 - BETA1**t
        bc2 = 1.0 - BETA2**t
        m = jax.tree_util.tree_map(lambda m, g: BETA1 * m + (1.0 - BETA1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: BETA2 * v + (1.0 - BETA2) * g * g, v, g)

        def update(p, m, v, wd):
            return p * (1.0 - lr * wd) - lr * (m / bc1) / (jnp.sqrt(v / bc2) + ADAM_EPS)

        p = jax.tree_util.tree_map(update, p, m, v, decay)
        return p, m, v, loss, norm

    zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)
    state = (params, zeros(params), zeros(params))
    return jax.jit(step, donate_argnums=(0, 1, 2)), state, inputs, targets, loss_fn


def best_ms(f, *a, reps=3):
    import jax

    jax.block_until_ready(f(*a))  # compiles
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(f(*a))
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def bench(name, args):
    import jax
    import jax.numpy as jnp

    cfg = PRESETS[name]
    step, (p, m, v), inputs, targets, loss_fn = build(cfg)
    tokens = cfg["batch"] * cfg["seq"]
    lr = jnp.float32(cfg["lr"])
    k = 0

    def one():
        nonlocal p, m, v, k
        k += 1
        start = time.perf_counter()
        p, m, v, loss, norm = step(p, m, v, jnp.float32(k), lr, inputs, targets)
        jax.block_until_ready((p, m, v, loss, norm))
        return time.perf_counter() - start, float(loss)

    compile_s, first_loss = one()  # compiles
    one()  # warm-up
    samples = []
    started = time.perf_counter()
    default_steps = 10 if name == "tiny" else 5
    while True:
        samples.append(one()[0] * 1e3)
        if args.seconds is not None:
            if len(samples) >= 3 and time.perf_counter() - started >= args.seconds:
                break
        elif len(samples) >= (args.steps or default_steps):
            break
    best, median = min(samples), statistics.median(samples)
    result = {
        "preset": name,
        "batch": cfg["batch"],
        "tokens": tokens,
        "steps": len(samples),
        "ms_per_step_min": best,
        "ms_per_step_median": median,
        "tokens_per_s": tokens / (median / 1e3),
        "compile_s": compile_s,
        "threads": args.threads,
        "loss": first_loss,
        "jax": jax.__version__,
    }
    if args.phases:
        result["forward_ms"] = best_ms(jax.jit(loss_fn), p, inputs, targets)
        result["forward_backward_ms"] = best_ms(jax.jit(jax.value_and_grad(loss_fn)), p, inputs,
                                                targets)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(
            f"{name}: batch {cfg['batch']} ({tokens} tokens/step), jax {jax.__version__} on "
            f"{args.threads} threads; first call (compile + step) {compile_s:.2f} s, "
            f"loss {first_loss:.4f} (ln vocab {math.log(cfg['vocab']):.4f})"
        )
        print(
            f"  {len(samples)} steps: ms/step min {best:.1f}, median {median:.1f} "
            f"({result['tokens_per_s']:.0f} tokens/s at the median)",
            flush=True,
        )
        if args.phases:
            print(
                f"  forward alone {result['forward_ms']:.1f} ms, forward + backward "
                f"{result['forward_backward_ms']:.1f} ms (best of 3)",
                flush=True,
            )


def main():
    args = parse_args()
    limit_threads(args.threads)
    try:
        import jax  # noqa: F401
    except ImportError:
        sys.exit("bench_train_jax.py needs jax: run scripts/install-test-deps.sh")
    for name in args.presets:
        bench(name, args)


if __name__ == "__main__":
    main()
