#!/usr/bin/env python3
# An independent JAX implementation of anemone-train's llama2-style model, evaluated in
# float64 so that it can serve as an oracle for the Rust f64 reference
# (crates/train/src/reference.rs; crates/train/tests/reference_vs_jax.rs runs it).
#
# Usage: python3 scripts/jax_reference.py DIR
# DIR holds config.json (the ModelConfig fields), one `<tensor name>.npy` per parameter
# (f32, llama names such as layers.0.attention.wq.weight.npy; linear weights [out, in],
# embedding [vocab, dim]) and inputs.npy / targets.npy (int32 [batch, seq]). The script
# writes loss.npy (f64 scalar, the mean cross-entropy) and `grad.<tensor name>.npy` (f64,
# the gradient of that loss) into DIR. Needs jax (scripts/install-test-deps.sh).
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

LAYER_TENSORS = [
    "attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
    "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3",
]


def tensor_names(cfg):
    names = ["tok_embeddings.weight"]
    names += [f"layers.{l}.{t}.weight" for t in LAYER_TENSORS for l in range(cfg["n_layers"])]
    names.append("norm.weight")
    if not cfg["shared_classifier"]:
        names.append("output.weight")
    return names


def rmsnorm(x, w, eps):
    return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, theta):
    # x: [batch, seq, heads, head_dim]; llama2.c rotates interleaved pairs (2i, 2i + 1).
    seq, hd = x.shape[1], x.shape[3]
    freq = 1.0 / theta ** (jnp.arange(0, hd, 2, dtype=jnp.float64) / hd)
    angle = jnp.arange(seq, dtype=jnp.float64)[:, None] * freq[None, :]
    cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)


def loss_fn(p, inputs, targets, cfg):
    batch, seq = inputs.shape
    dim, heads = cfg["dim"], cfg["n_heads"]
    hd = dim // heads
    # The Rust model keeps these as f32 and promotes them; do the same.
    eps = float(np.float32(cfg["norm_eps"]))
    theta = float(np.float32(cfg["rope_theta"]))
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
    x = p["tok_embeddings.weight"][inputs]
    for l in range(cfg["n_layers"]):
        w = {t: p[f"layers.{l}.{t}.weight"] for t in LAYER_TENSORS}
        xn = rmsnorm(x, w["attention_norm"], eps)
        q = rope((xn @ w["attention.wq"].T).reshape(batch, seq, heads, hd), theta)
        k = rope((xn @ w["attention.wk"].T).reshape(batch, seq, heads, hd), theta)
        v = (xn @ w["attention.wv"].T).reshape(batch, seq, heads, hd)
        scores = jnp.einsum("bthc,bshc->bhts", q, k) / jnp.sqrt(float(hd))
        probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        o = jnp.einsum("bhts,bshc->bthc", probs, v).reshape(batch, seq, dim)
        x = x + o @ w["attention.wo"].T
        xn = rmsnorm(x, w["ffn_norm"], eps)
        g = jax.nn.silu(xn @ w["feed_forward.w1"].T) * (xn @ w["feed_forward.w3"].T)
        x = x + g @ w["feed_forward.w2"].T
    xf = rmsnorm(x, p["norm.weight"], eps)
    classifier = p["tok_embeddings.weight" if cfg["shared_classifier"] else "output.weight"]
    logp = jax.nn.log_softmax(xf @ classifier.T, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: jax_reference.py DIR")
    d = Path(sys.argv[1])
    cfg = json.loads((d / "config.json").read_text())
    names = tensor_names(cfg)
    params = {n: jnp.asarray(np.load(d / f"{n}.npy"), dtype=jnp.float64) for n in names}
    inputs = jnp.asarray(np.load(d / "inputs.npy"), dtype=jnp.int32)
    targets = jnp.asarray(np.load(d / "targets.npy"), dtype=jnp.int32)
    loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets, cfg)
    np.save(d / "loss.npy", np.asarray(loss, dtype=np.float64))
    for n in names:
        np.save(d / f"grad.{n}.npy", np.asarray(grads[n], dtype=np.float64))


if __name__ == "__main__":
    main()
