#!/usr/bin/env python3
"""Writes the Core ML parity fixtures under crates/anemone/tests/coreml/.

Each fixture is a small PyTorch model converted by Apple's coremltools into an ML Program
package, with the fp32 inputs it was run on and torch's fp32 outputs:

    crates/anemone/tests/coreml/<model>-<target>/
        model.mlpackage/       what coremltools wrote
        <input name>.npy       torch input (float32, or int32 for token ids)
        <output name>.npy      torch output, float32
        case.json              inputs, outputs, target, converter versions, tolerance

Run by hand, never in CI (torch is several GB). The fixtures are committed:

    python3 -m venv /tmp/coreml-venv   # torch 2.7.0: the newest coremltools 9.0 was tested with
    /tmp/coreml-venv/bin/pip install "torch==2.7.0" "coremltools==9.0" numpy
    /tmp/coreml-venv/bin/python scripts/make-coreml-fixtures.py

Targets: iOS15 (fp32 inputs and outputs; coremltools inserts casts around fp16 compute) and
iOS18 (fp16 inputs and outputs, and `scaled_dot_product_attention` as one op).
"""

import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import coremltools as ct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "anemone",
                    "tests", "coreml")

# The parity bound the tests apply unless a case states a tighter one:
# |y - ref| <= REL * |ref| + ABS_OF_MAX * max|ref|.
REL = 0.01
ABS_OF_MAX = 0.01


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Cnn(nn.Module):
    """Conv + batch norm (fused into the conv by the converter), pooling, a batch norm and an
    instance norm the converter keeps, and a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        x = self.conv2(x)
        x = F.avg_pool2d(x, 2)
        x = F.relu(self.bn2(x))
        x = self.inorm(x)
        return self.fc(torch.flatten(x, 1))


class Block(nn.Module):
    """A pre-norm transformer block with explicit causal attention (a masked_fill with -inf)
    and a GELU MLP."""

    def __init__(self, dim=32, heads=4, sdpa=False):
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.sdpa = sdpa
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        # Sizes as Python constants: the traced graph then has no shape arithmetic.
        b, t, c = 1, 16, self.dim
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(c, dim=-1)
        q = q.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-2, -1)) / math.sqrt(self.dim // self.heads)
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
            s = s.masked_fill(mask, float("-inf"))
            a = torch.softmax(s, dim=-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Embedding(nn.Module):
    """Token ids in, a pooled embedding through a linear layer out."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, ids):
        return self.fc(torch.tanh(self.emb(ids)).mean(dim=1))


class SplitConcat(nn.Module):
    """Shape plumbing: split, squeeze, unsqueeze, stack, concat, permute."""

    def forward(self, x):
        a, b = torch.split(x, [4, 8], dim=1)
        a = a.squeeze(2)
        b = b.squeeze(2)
        s = torch.stack([a.sum(dim=1), b.mean(dim=1)], dim=1)
        y = torch.cat([a, b * 2.0, torch.abs(a[:, :1]) - 1.0], dim=1)
        return y.unsqueeze(1).permute(0, 2, 1, 3).flatten(1) , s


class Llama(nn.Module):
    """A llama-style block: RMSNorm, rotary embeddings (rotate-half with a negation),
    causal `F.scaled_dot_product_attention`, a SwiGLU MLP, no biases."""

    def __init__(self, dim=32, heads=4, seq=16, hidden=64):
        super().__init__()
        self.dim, self.heads, self.seq = dim, heads, seq
        self.norm1 = nn.Parameter(torch.rand(dim) + 0.5)
        self.norm2 = nn.Parameter(torch.rand(dim) + 0.5)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        hd = dim // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        freqs = torch.outer(torch.arange(seq).float(), inv)
        self.register_buffer("cos", torch.cat([freqs.cos(), freqs.cos()], -1))
        self.register_buffer("sin", torch.cat([freqs.sin(), freqs.sin()], -1))

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def rotate_half(self, x):
        half = (self.dim // self.heads) // 2
        return torch.cat([-x[..., half:], x[..., :half]], -1)

    def forward(self, x):
        b, t, c, hd = 1, self.seq, self.dim, self.dim // self.heads
        h = self.rms(x, self.norm1)
        q = self.wq(h).reshape(b, t, self.heads, hd).transpose(1, 2)
        k = self.wk(h).reshape(b, t, self.heads, hd).transpose(1, 2)
        v = self.wv(h).reshape(b, t, self.heads, hd).transpose(1, 2)
        q = q * self.cos + self.rotate_half(q) * self.sin
        k = k * self.cos + self.rotate_half(k) * self.sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(a.transpose(1, 2).reshape(b, t, c))
        h = self.rms(x, self.norm2)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Mobile(nn.Module):
    """MobileNet-style pieces: strided conv with hardswish, depthwise conv with relu6, a
    pointwise conv with leaky relu, nearest upsampling, global average pooling, softmax."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = F.hardswish(self.c1(x))
        x = F.relu6(self.dw(x))
        x = F.leaky_relu(self.pw(x), 0.1)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.softmax(self.fc(x), -1)


# name -> (module, [(input name, shape, kind)], [output names])
MODELS = {
    "mlp": (Mlp, [("x", (4, 16), "float")], ["y"]),
    "cnn": (Cnn, [("image", (1, 3, 16, 16), "float")], ["logits"]),
    "transformer": (Block, [("x", (1, 16, 32), "float")], ["y"]),
    "sdpa": (lambda: Block(sdpa=True), [("x", (1, 16, 32), "float")], ["y"]),
    "embedding": (Embedding, [("ids", (2, 8), "ids")], ["y"]),
    "split_concat": (SplitConcat, [("x", (2, 12, 1, 8), "float")], ["y", "stats"]),
    "llama": (Llama, [("x", (1, 16, 32), "float")], ["y"]),
    "mobile": (Mobile, [("image", (1, 3, 32, 32), "float")], ["probs"]),
}

TARGETS = {
    "ios15": ct.target.iOS15,
    "ios18": ct.target.iOS18,
}


def make_inputs(spec, rng):
    out = {}
    for name, shape, kind in spec:
        if kind == "ids":
            out[name] = rng.integers(0, 100, size=shape).astype(np.int32)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def randomize_norms(module, gen):
    """Trained-looking batch-norm statistics, so that the fused and kept norms do work."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def convert(name, target_name):
    make, inputs_spec, output_names = MODELS[name]
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = make().eval()
    with torch.no_grad():
        randomize_norms(model, gen)
    rng = np.random.default_rng(11)
    inputs = make_inputs(inputs_spec, rng)
    example = tuple(torch.from_numpy(inputs[n]) for n, _, _ in inputs_spec)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        ref = model(*example)
    refs = ref if isinstance(ref, tuple) else (ref,)

    fp16_io = target_name == "ios18"
    ct_inputs = []
    for n, shape, kind in inputs_spec:
        if kind == "ids":
            ct_inputs.append(ct.TensorType(name=n, shape=shape, dtype=np.int32))
        else:
            dtype = np.float16 if fp16_io else np.float32
            ct_inputs.append(ct.TensorType(name=n, shape=shape, dtype=dtype))
    out_dtype = np.float16 if fp16_io else np.float32
    ct_outputs = [ct.TensorType(name=n, dtype=out_dtype) for n in output_names]
    mlmodel = ct.convert(
        traced,
        inputs=ct_inputs,
        outputs=ct_outputs,
        convert_to="mlprogram",
        minimum_deployment_target=TARGETS[target_name],
    )

    case = f"{name}-{target_name}"
    out_dir = os.path.join(ROOT, case)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    mlmodel.save(os.path.join(out_dir, "model.mlpackage"))
    for n, value in inputs.items():
        np.save(os.path.join(out_dir, f"{n}.npy"), value)
    for n, value in zip(output_names, refs):
        np.save(os.path.join(out_dir, f"{n}.npy"), value.numpy().astype(np.float32))
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump(
            {
                "model": name,
                "target": target_name,
                "inputs": [n for n, _, _ in inputs_spec],
                "outputs": output_names,
                "tolerance": {"rel": REL, "abs_of_max": ABS_OF_MAX},
                "torch": torch.__version__,
                "coremltools": ct.__version__,
            },
            f,
            indent=2,
        )
        f.write("\n")
    print(f"{case}: {', '.join(sorted(op_types(mlmodel)))}")


def op_types(mlmodel):
    spec = mlmodel.get_spec()
    seen = set()
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                seen.add(op.type)
    return seen


def main():
    names = sys.argv[1:] or list(MODELS)
    for name in names:
        for target_name in TARGETS:
            convert(name, target_name)


if __name__ == "__main__":
    main()
