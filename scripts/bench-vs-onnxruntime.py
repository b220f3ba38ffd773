#!/usr/bin/env python3
"""Side-by-side timing of `anemone bench` (the CPU simulator) and onnxruntime's CPU provider
on the same graphs.

Usage: python3 scripts/bench-vs-onnxruntime.py [--anemone BIN] [--seconds S] [--rounds N]
           [--threads T] [--only TEXT] [--ort-fp32] [--json FILE] [--ort-ops]
(scripts/bench-vs-onnxruntime.sh makes a venv with the pinned packages and runs this.)

For every case of `anemone bench` that has an ONNX twin (CASES below: one list, whose names
must equal the suite's exactly; `anemone bench --list` is checked against it and a name it
lacks is an error), this builds the same graph with onnx.helper: the same shapes, ops and
element types (fp16 in, fp16 out; the seed conv's fp32 in and out with casts), weights of
the same shapes (not the same values). The fixture programs 04, 05 and 08 have no ONNX twin
and are skipped.

The two engines alternate per case, for --rounds rounds (default 2), so that load from other
work on the machine hits both alike; each side keeps its best (lowest) median over the
rounds. anemone: `anemone bench --device sim --json --only NAME --seconds S` (the binary of
--anemone, else the release build of anemone-cli, built once here). onnxruntime: one
session per graph, intra_op_num_threads=T (default 2, this machine's cores),
inter_op_num_threads=1, sequential execution, graph optimization level ALL, inputs and
preallocated outputs bound once (IOBinding), 3 warm-up runs, then single runs until S
seconds (default 0.5, as `anemone bench`) and at least 5 runs have passed; the median.

Being fair to onnxruntime: where a case can be written two ways (attention as MatMul,
Softmax, MatMul with the 1/sqrt(d) scale, or the opset-23 Attention op; gelu as the Gelu op
or its tanh formula), every way is timed and the fastest counts. onnxruntime's CPU provider
has no fp16 kernels for many ops on x86: it inserts casts to fp32 around them itself, so an
fp16 graph can be slower than its fp32 version. --ort-fp32 also times the fp32 version of
every graph (same shapes, fp32 tensors throughout) and keeps whichever is faster: the
fairest comparison, since anemone's graphs are fp16. --ort-ops prints the op types of
onnxruntime's optimized graph for each timed variant (where the casts went).

Output: a table of case, anemone us, onnxruntime us (and which graph that was), ratio =
onnxruntime us / anemone us (> 1: anemone is faster); with --ort-fp32 also the ratio to
onnxruntime on the fp16 graphs alone (the graphs anemone runs); with --json FILE, the same
as a JSON document (ratio_fp16_graphs per case). Needs onnx, onnxruntime and numpy.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The stories15m preset of anemone-train (crates/train/src/config.rs): its kernels are built
# for the preset's batch of sequences per evaluation.
STORIES15M = dict(dim=288, hidden=768, heads=6, seq=256, batch=4, rope_theta=10000.0)
# Masked attention scores get this added (crates/train/src/kernels.rs, MASK_VALUE).
MASK_VALUE = -40000.0


def parse_args():
    ap = argparse.ArgumentParser(
        description="anemone bench (simulator) against onnxruntime CPU on the same graphs",
        epilog="ratio = onnxruntime us / anemone us: above 1 means anemone is faster.",
    )
    ap.add_argument("--anemone", help="the anemone binary (default: build anemone-cli in release)")
    ap.add_argument("--seconds", type=float, default=0.5,
                    help="minimum time per case and engine, as anemone bench --seconds")
    ap.add_argument("--rounds", type=int, default=2, help="alternations per case (default 2)")
    ap.add_argument("--threads", type=int, default=2,
                    help="onnxruntime intra-op threads (default 2: this machine's cores)")
    ap.add_argument("--only", help="run only the cases whose name contains this text")
    ap.add_argument("--ort-fp32", action="store_true",
                    help="also time onnxruntime on fp32 graphs and keep the faster")
    ap.add_argument("--ort-ops", action="store_true",
                    help="print the op types of onnxruntime's optimized graphs")
    ap.add_argument("--json", metavar="FILE", help="write the table as JSON to FILE")
    a = ap.parse_args()
    if not 0.0 <= a.seconds <= 3600.0:
        ap.error("--seconds must be between 0 and 3600")
    if a.rounds < 1 or a.threads < 1:
        ap.error("--rounds and --threads must be at least 1")
    return a


# --------------------------------------------------------------------------------------------
# Graph building


class Graph:
    """An ONNX graph under construction that knows every value's shape, so that the helpers
    can follow anemone's builder op for op."""

    def __init__(self, name, fp16):
        import numpy as np
        from onnx import TensorProto

        self.name = name
        self.np = np
        self.dtype = np.float16 if fp16 else np.float32
        self.elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.shapes, self.types = {}, {}
        self.feeds = {}
        self.count = 0
        self.rng = np.random.default_rng(7)

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def value(self, name, shape, elem=None):
        self.shapes[name] = tuple(shape)
        self.types[name] = self.elem if elem is None else elem
        return name

    def input(self, name, shape, elem=None, np_dtype=None):
        from onnx import helper

        elem = self.elem if elem is None else elem
        np_dtype = self.dtype if np_dtype is None else np_dtype
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        self.feeds[name] = self.rng.uniform(-1.0, 1.0, shape).astype(np_dtype)
        return self.value(name, shape, elem)

    def const(self, hint, array, dtype=None):
        from onnx import numpy_helper

        arr = self.np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(arr, name))
        if arr.dtype == self.np.int64:
            return name
        return self.value(name, arr.shape)

    def weight(self, hint, shape, fan_in):
        scale = 1.0 / math.sqrt(fan_in)
        return self.const(hint, self.rng.uniform(-scale, scale, shape))

    def node(self, op, inputs, shape, hint=None, elem=None, **attrs):
        from onnx import helper

        out = self.fresh(hint or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return self.value(out, shape, elem)

    def output(self, v, name):
        from onnx import helper

        # The producing node's result takes the output's name (no copy, as in MIL).
        for n in self.nodes:
            for i, o in enumerate(n.output):
                if o == v:
                    n.output[i] = name
            for i, o in enumerate(n.input):
                if o == v:
                    n.input[i] = name
        self.value(name, self.shapes[v], self.types[v])
        self.outputs.append(helper.make_tensor_value_info(name, self.types[v], list(self.shapes[v])))

    def model(self, opset):
        from onnx import checker, helper

        g = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 10
        checker.check_model(m)
        return m

    # Ops, named as in anemone's builder.
    def reshape(self, x, shape):
        s = self.const("shape", shape, self.np.int64)
        return self.node("Reshape", [x, s], shape)

    def transpose(self, x, perm):
        shape = [self.shapes[x][p] for p in perm]
        return self.node("Transpose", [x], shape, perm=list(perm))

    def slice_by_size(self, x, begin, size):
        starts = self.const("starts", begin, self.np.int64)
        ends = self.const("ends", [b + s for b, s in zip(begin, size)], self.np.int64)
        axes = self.const("axes", list(range(len(begin))), self.np.int64)
        return self.node("Slice", [x, starts, ends, axes], size)

    def matmul(self, a, b, transpose_a=False, transpose_b=False):
        def t(v):
            r = len(self.shapes[v])
            return self.transpose(v, list(range(r - 2)) + [r - 1, r - 2])

        a = t(a) if transpose_a else a
        b = t(b) if transpose_b else b
        sa, sb = self.shapes[a], self.shapes[b]
        batch = self.np.broadcast_shapes(sa[:-2], sb[:-2])
        return self.node("MatMul", [a, b], (*batch, sa[-2], sb[-1]))

    def binary(self, op, a, b):
        return self.node(op, [a, b], self.np.broadcast_shapes(self.shapes[a], self.shapes[b]))

    def add(self, a, b):
        return self.binary("Add", a, b)

    def sub(self, a, b):
        return self.binary("Sub", a, b)

    def mul(self, a, b):
        return self.binary("Mul", a, b)

    def scalar(self, hint, v):
        return self.const(hint, v)

    def softmax(self, x, axis):
        return self.node("Softmax", [x], self.shapes[x], axis=axis)

    def sigmoid(self, x):
        return self.node("Sigmoid", [x], self.shapes[x])

    def silu(self, x):
        # ONNX has no silu before opset 24's Swish; x * sigmoid(x) is what onnxruntime's
        # optimizer recognises.
        return self.mul(x, self.sigmoid(x))

    def concat(self, values, axis):
        shape = list(self.shapes[values[0]])
        shape[axis] = sum(self.shapes[v][axis] for v in values)
        return self.node("Concat", values, shape, axis=axis)

    def reduce_sum(self, x, axes):
        shape = list(self.shapes[x])
        for a in axes:
            shape[a] = 1
        return self.node("ReduceSum", [x, self.const("axes", axes, self.np.int64)], shape,
                         keepdims=1)


# The simple cases of crates/cli/src/bench.rs.


def seed_conv(fp16):
    from onnx import TensorProto

    g = Graph("seed_conv", fp16)
    x = g.input("x", (1, 64, 1, 32), TensorProto.FLOAT, g.np.float32)
    if fp16:
        x = g.node("Cast", [x], (1, 64, 1, 32), to=TensorProto.FLOAT16)
    w = g.weight("W", (64, 64, 1, 1), 64)
    y = g.node("Conv", [x, w], (1, 64, 1, 32))
    if fp16:
        y = g.node("Cast", [y], (1, 64, 1, 32), elem=TensorProto.FLOAT, to=TensorProto.FLOAT)
    g.output(y, "y")
    return {"Conv": g}


def conv_1x1(cin, cout, spatial):
    def build(fp16):
        g = Graph(f"conv_1x1_{cin}_{cout}", fp16)
        x = g.input("x", (1, cin, 1, spatial))
        w = g.weight("W", (cout, cin, 1, 1), cin)
        g.output(g.node("Conv", [x, w], (1, cout, 1, spatial)), "y")
        return {"Conv": g}

    return build


def conv_3x3(cin, cout, size):
    def build(fp16):
        g = Graph(f"conv_3x3_{cin}_{cout}", fp16)
        x = g.input("x", (1, cin, size, size))
        w = g.weight("W", (cout, cin, 3, 3), cin * 9)
        b = g.weight("bias", (cout,), 1)
        y = g.node("Conv", [x, w, b], (1, cout, size, size), pads=[1, 1, 1, 1])
        g.output(y, "y")
        return {"Conv": g}

    return build


def attention(heads, seq, dim):
    def build(fp16):
        variants = {}
        shape = (1, heads, seq, dim)
        g = Graph("attention_matmul", fp16)
        q, k, v = (g.input(n, shape) for n in "qkv")
        s = g.matmul(q, k, transpose_b=True)
        s = g.mul(s, g.scalar("scale", 1.0 / math.sqrt(dim)))
        p = g.softmax(s, -1)
        g.output(g.matmul(p, v), "att")
        variants["MatMul-Softmax-MatMul"] = g
        g = Graph("attention_op", fp16)
        q, k, v = (g.input(n, shape) for n in "qkv")
        # Opset 23's Attention on [B, H, S, D] operands; its default scale is 1/sqrt(D).
        g.output(g.node("Attention", [q, k, v], shape), "att")
        variants["Attention op"] = g
        return variants

    return build


def mlp(seq, dim, hidden):
    def build(fp16):
        variants = {}
        for label in ("Gelu op", "tanh formula"):
            g = Graph("mlp", fp16)
            x = g.input("x", (1, seq, dim))
            gamma = g.const("gamma", 1.0 + g.rng.uniform(-0.25, 0.25, dim))
            beta = g.weight("beta", (dim,), 16)
            h = g.node("LayerNormalization", [x, gamma, beta], (1, seq, dim), axis=-1,
                       epsilon=1e-5)
            # MIL's linear takes weight [out, in]; ONNX's MatMul the transpose.
            h = g.add(g.matmul(h, g.weight("w1", (dim, hidden), dim)),
                      g.weight("b1", (hidden,), 16))
            if label == "Gelu op":
                h = g.node("Gelu", [h], (1, seq, hidden), approximate="tanh")
            else:
                # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                x3 = g.mul(g.mul(h, h), h)
                inner = g.add(h, g.mul(x3, g.scalar("c", 0.044715)))
                inner = g.mul(inner, g.scalar("k", math.sqrt(2.0 / math.pi)))
                t = g.node("Tanh", [inner], (1, seq, hidden))
                t = g.add(t, g.scalar("one", 1.0))
                h = g.mul(g.mul(h, t), g.scalar("half", 0.5))
            y = g.add(g.matmul(h, g.weight("w2", (hidden, dim), hidden)),
                      g.weight("b2", (dim,), 16))
            g.output(y, "y")
            variants[label] = g
        return variants

    return build


# The training kernels of crates/train/src/kernels.rs, op for op.


class Kernel:
    def __init__(self, g, s):
        self.g, self.s = g, s
        self.hd = s["dim"] // s["heads"]
        self.t = s["batch"] * s["seq"]

    def packed_input(self, name, channels, regions):
        """`[1, channels, 1, T + sum cols]`: activations, then one `[1, 1, channels, cols]`
        matrix per region (builder::packed_input)."""
        g, t = self.g, self.t
        x = g.input(name, (1, channels, 1, t + sum(c for _, c in regions)))
        act = g.slice_by_size(x, [0, 0, 0, 0], [1, channels, 1, t])
        mats, off = [], t
        for _, cols in regions:
            m = g.slice_by_size(x, [0, 0, 0, off], [1, channels, 1, cols])
            mats.append(g.reshape(m, [1, 1, channels, cols]))
            off += cols
        return act, mats

    def as_activation(self, x, rows):
        if self.g.shapes[x] == (1, rows, 1, self.t):
            return x
        return self.g.reshape(x, [1, rows, 1, self.t])

    def region_matmul(self, m, x, transpose):
        g = self.g
        rows, cols = g.shapes[m][2], g.shapes[m][3]
        k, out = (rows, cols) if transpose else (cols, rows)
        x4 = g.reshape(x, [1, 1, k, self.t])
        y = g.matmul(m, x4, transpose_a=transpose)
        return g.reshape(y, [1, out, 1, self.t])

    def split_heads(self, x):
        s = self.s
        x = self.g.reshape(x, [s["heads"], self.hd, s["batch"], s["seq"]])
        return self.g.transpose(x, [2, 0, 3, 1])

    def merge_heads(self, x):
        x = self.g.transpose(x, [1, 3, 0, 2])
        return self.g.reshape(x, [1, self.s["dim"], 1, self.t])

    def rope_tables(self):
        np, s = self.g.np, self.s
        pairs = s["dim"] // 2
        i = (np.arange(pairs) % (self.hd // 2))[:, None]
        pos = (np.arange(self.t) % s["seq"])[None, :]
        angle = pos * np.power(float(s["rope_theta"]), -2.0 * i / self.hd)
        shape = (1, pairs, 1, self.t)
        return (self.g.const("rope_cos", np.cos(angle).reshape(shape)),
                self.g.const("rope_sin", np.sin(angle).reshape(shape)))

    def rope(self, x, tables, inverse):
        g, pairs, t = self.g, self.s["dim"] // 2, self.t
        x = g.reshape(x, [1, pairs, 2, t])
        a = g.slice_by_size(x, [0, 0, 0, 0], [1, pairs, 1, t])
        b = g.slice_by_size(x, [0, 0, 1, 0], [1, pairs, 1, t])
        cos, sin = tables
        ac, as_, bc, bs = g.mul(a, cos), g.mul(a, sin), g.mul(b, cos), g.mul(b, sin)
        if inverse:
            ra, rb = g.add(ac, bs), g.sub(bc, as_)
        else:
            ra, rb = g.sub(ac, bs), g.add(as_, bc)
        r = g.concat([ra, rb], 2)
        return g.reshape(r, [1, self.s["dim"], 1, t])

    def probabilities(self, q, k):
        g, n = self.g, self.s["seq"]
        scale = g.scalar("scale", 1.0 / math.sqrt(self.hd))
        idx = g.np.arange(n * n)
        mask = g.const("causal_mask",
                       g.np.where(idx % n <= idx // n, 0.0, MASK_VALUE).reshape(1, 1, n, n))
        scores = g.mul(g.matmul(q, k, transpose_b=True), scale)
        return g.softmax(g.add(scores, mask), -1)

    def attn_fwd(self):
        g, d = self.g, self.s["dim"]
        xn, w = self.packed_input("x", d, [("wq", d), ("wk", d), ("wv", d), ("wo", d)])
        tables = self.rope_tables()
        q = self.rope(self.region_matmul(w[0], xn, True), tables, False)
        k = self.rope(self.region_matmul(w[1], xn, True), tables, False)
        v = self.region_matmul(w[2], xn, True)
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        p = self.probabilities(qh, kh)
        o = self.merge_heads(g.matmul(p, vh))
        y = self.region_matmul(w[3], o, True)
        for v_, n in ((y, "y"), (o, "o"), (q, "q"), (k, "k"), (v, "v")):
            g.output(v_, n)

    def ffn_fwd(self):
        g, d, h = self.g, self.s["dim"], self.s["hidden"]
        xn, w = self.packed_input("x", d, [("w1", h), ("w3", h), ("w2", h)])
        h1 = self.region_matmul(w[0], xn, True)
        h3 = self.region_matmul(w[1], xn, True)
        gg = g.mul(g.silu(h1), h3)
        y = self.region_matmul(w[2], gg, False)
        for v_, n in ((y, "y"), (h1, "h1"), (h3, "h3"), (gg, "g")):
            g.output(v_, n)

    def attn_bwd(self):
        g, d, t = self.g, self.s["dim"], self.t
        dy, w = self.packed_input(
            "dy", d, [("q", t), ("k", t), ("v", t), ("wq", d), ("wk", d), ("wv", d), ("wo", d)])
        tables = self.rope_tables()
        q, k, v = (self.as_activation(w[i], d) for i in range(3))
        d_o = self.region_matmul(w[6], dy, False)
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        doh = self.split_heads(d_o)
        p = self.probabilities(qh, kh)
        dvh = g.matmul(p, doh, transpose_a=True)
        dp = g.matmul(doh, vh, transpose_b=True)
        rows = g.reduce_sum(g.mul(p, dp), [-1])
        ds = g.mul(p, g.sub(dp, rows))
        ds = g.mul(ds, g.scalar("scale_bwd", 1.0 / math.sqrt(self.hd)))
        dq = self.merge_heads(g.matmul(ds, kh))
        dk = self.merge_heads(g.matmul(ds, qh, transpose_a=True))
        dv = self.merge_heads(dvh)
        dq = self.rope(dq, tables, True)
        dk = self.rope(dk, tables, True)
        dx = g.add(g.add(self.region_matmul(w[3], dq, False), self.region_matmul(w[4], dk, False)),
                   self.region_matmul(w[5], dv, False))
        for v_, n in ((dx, "dx"), (dq, "dq"), (dk, "dk"), (dv, "dv")):
            g.output(v_, n)

    def ffn_bwd(self):
        g, d, h, t = self.g, self.s["dim"], self.s["hidden"], self.t
        dy, w = self.packed_input("dy", d, [("w1", h), ("w3", h), ("w2", h)])
        saved = g.input("h", (1, h, 1, 2 * t))
        h1 = g.slice_by_size(saved, [0, 0, 0, 0], [1, h, 1, t])
        h3 = g.slice_by_size(saved, [0, 0, 0, t], [1, h, 1, t])
        dg = self.region_matmul(w[2], dy, True)
        sig = g.sigmoid(h1)
        act = g.mul(h1, sig)
        dh3 = g.mul(dg, act)
        dact = g.mul(dg, h3)
        one = g.scalar("one", 1.0)
        slope = g.mul(sig, g.add(g.mul(h1, g.sub(one, sig)), one))
        dh1 = g.mul(dact, slope)
        dx = g.add(self.region_matmul(w[0], dh1, False), self.region_matmul(w[1], dh3, False))
        for v_, n in ((dx, "dx"), (dh1, "dh1"), (dh3, "dh3")):
            g.output(v_, n)


def train_kernel(kind):
    def build(fp16):
        g = Graph(kind, fp16)
        getattr(Kernel(g, STORIES15M), kind)()
        return {"as built by anemone-train": g}

    return build


def opset_of(g):
    # Attention is opset 23; everything else is in opset 20 (Gelu's first).
    return 23 if any(n.op_type == "Attention" for n in g.nodes) else 20


# The cases with an ONNX twin, named exactly as `anemone bench --list` names them.
TOKENS = f"{STORIES15M['batch']}x{STORIES15M['seq']}"
CASES = [
    ("seed conv 64x64, spatial 32", seed_conv),
    ("conv 1x1 768->768, spatial 256", conv_1x1(768, 768, 256)),
    ("conv 1x1 768->2048, spatial 256", conv_1x1(768, 2048, 256)),
    ("conv 3x3 64->64, 56x56", conv_3x3(64, 64, 56)),
    ("attention 12 heads, seq 256, dim 64", attention(12, 256, 64)),
    ("mlp: layer_norm + linear + gelu", mlp(256, 768, 3072)),
] + [(f"stories15m {k}, {TOKENS} tokens", train_kernel(k))
     for k in ("attn_fwd", "ffn_fwd", "attn_bwd", "ffn_bwd")]

# Cases of the suite that have no ONNX twin, by the start of their name.
NO_TWIN = ("fixture ",)


# --------------------------------------------------------------------------------------------
# Timing


def time_ort(model, feeds, threads, seconds, show_ops, label):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: saving an optimized graph (--ort-ops) warns that it is machine-specific.
    so.log_severity_level = 3
    optimized = None
    if show_ops:
        optimized = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False).name
        so.optimized_model_filepath = optimized
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    if optimized:
        import onnx

        ops = {}
        for n in onnx.load(optimized).graph.node:
            key = f"{n.domain + '.' if n.domain else ''}{n.op_type}"
            ops[key] = ops.get(key, 0) + 1
        os.unlink(optimized)
        print(f"    {label}: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())),
              file=sys.stderr)
    io = sess.io_binding()
    for name, arr in feeds.items():
        io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
    elem = {"tensor(float16)": np.float16, "tensor(float)": np.float32}
    for o in sess.get_outputs():
        io.bind_ortvalue_output(
            o.name, ort.OrtValue.ortvalue_from_shape_and_type(o.shape, elem[o.type]))
    for _ in range(3):
        sess.run_with_iobinding(io)
    times, start = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < seconds and len(times) < 100_000):
        t = time.perf_counter()
        sess.run_with_iobinding(io)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def anemone_cmd(args):
    if args.anemone:
        return [args.anemone]
    print("building anemone-cli (release)...", file=sys.stderr)
    out = subprocess.run(
        ["cargo", "build", "--release", "-p", "anemone-cli", "--message-format=json"],
        cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "anemone" \
                and m.get("executable"):
            return [m["executable"]]
    sys.exit("bench-vs-onnxruntime: cargo built no anemone executable")


def time_anemone(cmd, name, seconds):
    out = subprocess.run(
        cmd + ["bench", "--device", "sim", "--json", "--only", name, "--seconds", str(seconds)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"anemone bench failed on {name!r}:\n{out.stderr}")
    doc = json.loads(out.stdout)
    for c in doc["cases"]:
        if c["name"] == name:
            return c
    sys.exit(f"anemone bench --json has no case named exactly {name!r}")


def check_names(cmd):
    listed = subprocess.run(cmd + ["bench", "--list"], cwd=REPO, check=True,
                            stdout=subprocess.PIPE, text=True).stdout.splitlines()
    ours = [n for n, _ in CASES]
    missing = [n for n in ours if n not in listed]
    if missing:
        sys.exit("bench-vs-onnxruntime: not cases of `anemone bench`: "
                 + "; ".join(missing) + "\n(its cases: " + "; ".join(listed) + ")")
    for n in listed:
        if n not in ours:
            why = "no ONNX twin" if n.startswith(NO_TWIN) else "not in this script's CASES"
            print(f"note: skipping {n!r} ({why})", file=sys.stderr)


def main():
    args = parse_args()
    try:
        import numpy  # noqa: F401
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        sys.exit(f"bench-vs-onnxruntime: {e} (scripts/bench-vs-onnxruntime.sh installs them)")
    cmd = anemone_cmd(args)
    check_names(cmd)
    cases = [(n, b) for n, b in CASES if args.only is None or args.only in n]
    if not cases:
        sys.exit(f"bench-vs-onnxruntime: no case name contains {args.only!r}")
    load_before = os.getloadavg()
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, {args.threads} threads; "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          file=sys.stderr)

    # Every (graph, precision) candidate of every case, built once.
    candidates = {}
    for name, build in cases:
        cs = []
        for fp16 in (True, False) if args.ort_fp32 else (True,):
            for label, g in build(fp16).items():
                cs.append((f"{'fp16' if fp16 else 'fp32'} {label}", g.model(opset_of(g)), g.feeds))
        candidates[name] = cs

    best_a, best_o, anemone_cases = {}, {}, {}
    for r in range(args.rounds):
        for name, _ in cases:
            print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr)
            c = time_anemone(cmd, name, args.seconds)
            if c["evaluate_us"] < best_a.get(name, math.inf):
                best_a[name], anemone_cases[name] = c["evaluate_us"], c
            for label, model, feeds in candidates[name]:
                try:
                    us = time_ort(model, feeds, args.threads, args.seconds,
                                  args.ort_ops and r == 0, label)
                except Exception as e:  # a graph onnxruntime cannot run is left out, loudly
                    print(f"  onnxruntime {label}: {str(e).splitlines()[0]}", file=sys.stderr)
                    continue
                print(f"  onnxruntime {label}: {us:.1f} us", file=sys.stderr)
                per = best_o.setdefault(name, {})
                per[label] = min(per.get(label, math.inf), us)
    load_after = os.getloadavg()

    rows = []
    for name, _ in cases:
        per = best_o.get(name)
        if not per:
            sys.exit(f"bench-vs-onnxruntime: onnxruntime ran no graph of {name!r}")
        label = min(per, key=per.get)
        a_us, o_us = best_a[name], per[label]
        # The same graphs as anemone's (fp16), whichever way of writing them was fastest.
        fp16_us = min((us for lb, us in per.items() if lb.startswith("fp16 ")), default=None)
        slowest = anemone_cases[name].get("slowest_op")
        rows.append(dict(case=name, anemone_us=a_us, onnxruntime_us=o_us,
                         onnxruntime_graph=label, ratio=o_us / a_us,
                         ratio_fp16_graphs=None if fp16_us is None else fp16_us / a_us,
                         onnxruntime_all_us=per,
                         anemone_slowest_op=slowest))

    head = ("case", "anemone us", "onnxruntime us", "ratio", "onnxruntime graph")
    table = [(r["case"], f"{r['anemone_us']:.1f}", f"{r['onnxruntime_us']:.1f}",
              f"{r['ratio']:.2f}", r["onnxruntime_graph"]) for r in rows]
    label_col = 4
    if args.ort_fp32:
        # Both comparisons side by side: against onnxruntime on the very graphs anemone runs,
        # and against the faster of those and their fp32 versions.
        head = head[:4] + ("fp16 graphs",) + head[4:]
        table = [t[:4] + ("-" if r["ratio_fp16_graphs"] is None
                          else f"{r['ratio_fp16_graphs']:.2f}",) + t[4:]
                 for t, r in zip(table, rows)]
        label_col = 5
    widths = [max(len(t[i]) for t in table + [head]) for i in range(len(head))]

    def fmt(t):
        return "  ".join(c.ljust(w) if i in (0, label_col) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(t, widths))).rstrip()

    print()
    print(f"median evaluate time, best of {args.rounds} rounds per engine; "
          f"ratio = onnxruntime us / anemone us (> 1: anemone faster)")
    if args.ort_fp32:
        print("ratio: against onnxruntime's faster graph, fp16 or fp32; fp16 graphs: against "
              "its time on the fp16 graphs alone")
    print(fmt(head))
    print(fmt(tuple("-" * w for w in widths)))
    for t in table:
        print(fmt(t))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(1-minute; this machine has {os.cpu_count()} CPUs)")
    if args.json:
        doc = dict(version=1, onnxruntime=ort.__version__, onnx=onnx.__version__,
                   threads=args.threads, seconds=args.seconds, rounds=args.rounds,
                   ort_fp32=args.ort_fp32, load_average_before=load_before[0],
                   load_average_after=load_after[0], cases=rows)
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
