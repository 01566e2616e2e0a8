#!/usr/bin/env python3
"""make_api_corpus.py -- writes the seed corpus of fuzz_api.c.

Each seed is a small program in the harness's byte format (see the
comment at the top of fuzz_api.c): a two-byte header, then actions, each an
index into ACTIONS followed by the bytes its decoder reads. The encoders
below mirror those decoders; keep them in step with the tables (indices are
positions in ACTIONS and OPS). Check a seed's meaning with
    FUZZ_API_TRACE=1 build-fuzz/tests/fuzz/fuzz_api tests/fuzz/corpus/fuzz_api/<seed>

usage: tests/fuzz/make_api_corpus.py [outdir]   (default: tests/fuzz/corpus/fuzz_api)
"""
import os
import struct
import sys

# ACTIONS indices (fuzz_api.c)
CONSTANT, VARIABLE, SCALAR, SCALAR_VAR, PARAM, OP = 0, 1, 2, 3, 4, 5
APPLY_BUILTIN, APPLY_NAMED, SWEEP, REPLAY, RESET, SET_VALUE = 9, 10, 11, 13, 14, 15
POKE, ACCESSORS, SET_NAME, EXPORT_DOT, TRACE = 16, 17, 18, 19, 20
GRADCHECK, HANDCHECK, CHECK_GRAD, SWITCH, RENEW, REGISTRY, ARM, NULL_TAPE = (
    21, 22, 23, 24, 25, 26, 27, 28)
TANGENTS, SET_TANGENT, FORWARD, BACKWARD_TANGENT, DRIVER, WORKSPACE = 32, 33, 34, 35, 36, 38
GRADIENT_NODES = 40
CODEGEN, CODEGEN_BIG, SPARSE_NEW, SPARSE_EVAL, SPARSE_FREE = 42, 44, 45, 46, 48

# OPS indices
OPS = ["add", "sub", "mul", "div", "neg", "scale", "addc", "square", "sqrt", "exp", "log",
       "tanh", "sigmoid", "relu", "abs", "powc", "sum", "mean", "dot", "matvec", "matvec_t",
       "matmul", "matmul_nt", "outer", "transpose", "affine", "softmax_xent", "cube", "fma3",
       "sum4", "reshape0"]
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "dot": 2, "matvec": 2, "matvec_t": 2,
         "matmul": 2, "matmul_nt": 2, "outer": 2, "softmax_xent": 2, "affine": 3, "fma3": 3,
         "sum4": 4}
TAKES_C = {"scale", "addc", "powc", "cube", "fma3", "sum4", "reshape0"}  # customs read one too
TABLE = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 0.1, -7.25, 10.0, -100.0, 1000.0, 1e-3, 1e6,
         1e200, 5e-310]


def dbl(x):
    """A double as rd_double reads it."""
    k = x * 8 + 64
    if k == int(k) and 0 <= k < 128 and not (x == 0 and str(x).startswith("-")):
        return bytes([int(k)])
    for i, v in enumerate(TABLE):
        if struct.pack("<d", v) == struct.pack("<d", x):
            return bytes([128 + i])
    return bytes([240]) + struct.pack("<d", x)


def fill(values):
    """rd_fill: up to 8 values, repeated cyclically over the tensor."""
    assert 1 <= len(values) <= 8
    return bytes([len(values) - 1]) + b"".join(dbl(v) for v in values)


def scalar():
    return bytes([0, 0])


def vec(n):
    assert 1 <= n <= 8
    return bytes([1, n - 1])


def mat(r, c):
    assert 1 <= r <= 8 and 1 <= c <= 8
    return bytes([2, (r - 1) | (c - 1) << 3])


def node(j):
    """pick(): the j-th node of the current tape (an even selector). Selectors
    224.. pick other handles by their value mod 6: 227/228 nil, 229 stale,
    230 of the other tape, 225 a forged id, 226 a forged tag."""
    assert 0 <= j < 112
    return bytes([2 * j])


def fitting(j):
    """pick_for(): not the shape search, then node j."""
    return bytes([200]) + node(j)


def leaf(kind, shape, values):
    """constant / variable: node_dims byte, shape, mode (data given), data."""
    return bytes([kind, 0]) + shape + bytes([0]) + fill(values)


def scalar_leaf(kind, x):
    return bytes([kind, 0]) + fill([x]) + dbl(x)


def param(shape, voff, goff, grad=True):
    mode = 1 if grad else 0
    return bytes([PARAM, 0]) + shape + bytes([mode]) + struct.pack("<HH", voff, goff)


def op(name, *args, c=None):
    out = bytes([OP, OPS.index(name)])
    for k, a in enumerate(args):
        out += node(a) if k == 0 else fitting(a)
    if name in TAKES_C:
        out += dbl(c if c is not None else 0)
    if name == "reshape0":
        out += bytes([c])
    return out


def sweep(kind, out, seed, extra=0):
    """kind: 0 backward, 1 backward_seed, 2 sweep, 3 sweep ASSIGN."""
    return bytes([SWEEP, kind, extra]) + node(out) + fill(seed)


def driver(kind, out, inputs, v, mode=0):
    """kind: 0 jvp, 1 hvp, 3..5 jacobian auto/forward/reverse, 6 hessian."""
    b = bytes([DRIVER, kind, mode]) + node(out) + bytes([len(inputs)])
    for i in inputs:
        b += bytes([i])  # pick_leaf: a selector < 200 starts the leaf search at node i
    for _ in inputs:
        b += fill(v)
    return b


def cgopts(prefix=0, hdr=False, header_name=False, use_float=False, twice=False, what=0,
           unknown=False, max_stmts=0, nulls=0, src=0, hdr_kind=0, fail_after=0):
    """rd_cgopts: prefix 0..5 valid (6..11 refused: NULL, "", "9lives",
    "_under", "has space", 65 characters); max_stmts an index into
    {0, 1, 2, 3, 4, 5}; nulls 1..4: opts, src, in NULL, n = 0; streams 0 in
    memory, 1 /dev/null, 2 read-only (every write fails), 3 in memory
    failing after 1 + 97 fail_after bytes."""
    m1 = prefix | hdr << 4 | header_name << 5 | use_float << 6 | twice << 7
    m2 = what | (0xe0 if unknown else 0)
    m3 = max_stmts << 2 | nulls << 5
    if src > 1 or hdr_kind > 1:
        kind = 0xf0 | src | hdr_kind << 2
    else:
        kind = src | hdr_kind << 2
    return bytes([m1, m2, m3, kind, fail_after])


def codegen(out, inputs, **kw):
    """ad_codegen of node out with the leaves found from the given indices."""
    b = bytes([CODEGEN]) + cgopts(**kw) + node(out) + bytes([len(inputs) - 1])
    return b + bytes(inputs)  # pick_leaf selectors < 200


def codegen_big(seed, ops=0, repeat=False, tensors=True, nin=3, **kw):
    """A tape of 2080 + 160 ops scalar ops (ops 0..3) made from seed."""
    shape = (0 if repeat else 1) | (4 if tensors else 0) | (nin - 1) << 4
    return bytes([CODEGEN_BIG]) + struct.pack("<H", seed) + bytes([0x30 | ops, shape]) + cgopts(**kw)


def sparse_mode(hess, nout, nin, flags=0):
    for m in range(256):
        if (m & 1 == hess and 1 + (m >> 1) % 3 == nout and 1 + (m >> 3) % 3 == nin and
                ((m & 0xe0) == 0x20) == (flags == 1) and (m & 0xe0) != 0x40):
            return m
    raise ValueError("no mode byte")


def sparse_new(hess, outs, inputs, flags=0, at_once=None):
    """ad_sparse_{jacobian,hessian}_new; at_once: evaluate at once with
    these bytes (sparse_eval's)."""
    b = bytes([SPARSE_NEW, sparse_mode(hess, len(outs), len(inputs), flags),
               8 if at_once is not None else 0])
    b += b"".join(node(o) for o in outs) + bytes(inputs)
    return b + (at_once if at_once is not None else b"")


def sparse_eval_args(x=None, w=None, misuse=None):
    """mode (x given: the values of fill(x)), then x's and w's fills."""
    mode = (1 if x else 0) | (2 if w else 0)
    if misuse is not None:
        mode = 0x80 | misuse
    return bytes([mode]) + fill(x or [0]) + fill(w or [1])


def header(fail=0, sticky=False, tape_b=0, customs=0):
    return bytes([fail, (1 if sticky else 0) | tape_b << 1 | customs << 4])


SEEDS = {}

# The README's neuron: z = W.x + b, J = 1/2 (relu(z) - 5)^2, swept, checked,
# traced and exported.
neuron = (leaf(VARIABLE, vec(3), [4, 2, -5]) + leaf(CONSTANT, vec(3), [1, 0, 2]) +
          scalar_leaf(SCALAR_VAR, 7) +
          op("dot", 0, 1) + op("add", 3, 2) + op("relu", 4) + op("addc", 5, c=-5) +
          op("square", 6) + op("scale", 7, c=0.5) +
          sweep(0, 8, [1], extra=0x80) +
          bytes([CHECK_GRAD]) + node(0) + bytes([0x13]) +
          bytes([TRACE, 0]) + node(8) + bytes([0x12, 100]) +
          bytes([EXPORT_DOT, 1]) + node(8) + bytes([0x31]))
SEEDS["neuron"] = header() + neuron

# The same with the allocator failing its 9th allocation, then re-armed.
SEEDS["neuron-oom"] = header(fail=9) + neuron + bytes([RESET, ARM, 3]) + neuron

# A dense layer on caller buffers: affine of a 3x4 ad_param, a sample and a
# bias; tanh, sum; assigning sweeps, replay after poking the weights, a
# workspace swept beside the tape.
layer = (param(mat(3, 4), 0, 0) + param(vec(4), 40, 0, grad=False) + param(vec(3), 60, 12) +
         op("affine", 0, 1, 2) + op("tanh", 3) + op("sum", 4) +
         sweep(3, 5, [1]) + bytes([POKE]) + struct.pack("<H", 2) + bytes([4]) + dbl(0.5) +
         dbl(0.25) + bytes([0]) + bytes([REPLAY]) + sweep(3, 5, [1], extra=0x80) +
         bytes([WORKSPACE, 0]) + node(5) + fill([1]))
SEEDS["dense-layer"] = header() + layer

# A batch through the layer: X (2x4) W^T + b, softmax cross-entropy against
# one-hot rows, the Jacobian of the logits and the Hessian of the loss in b.
batch = (leaf(VARIABLE, mat(3, 4), [0.5, -1, 0.25, 2, 1.5]) +
         leaf(VARIABLE, mat(2, 4), [1, 0, -1, 0.5]) + leaf(VARIABLE, vec(3), [0.1, -0.2]) +
         op("affine", 0, 1, 2) + leaf(CONSTANT, mat(2, 3), [1, 0, 0, 0]) +
         op("softmax_xent", 3, 4) + sweep(0, 5, [1]) +
         driver(5, 3, [0, 2], [1]) + driver(6, 5, [2], [1]))
SEEDS["batch-xent"] = header() + batch

# Tied weights: two ad_param views whose gradient buffers overlap, through
# matmul and matvec, swept adding and assigning.
tied = (param(mat(2, 3), 0, 100) + param(mat(3, 2), 6, 103) + op("matmul", 0, 1) +
        param(vec(2), 20, 104) + op("matvec", 2, 3) + op("sum", 4) +
        sweep(2, 5, [1]) + sweep(3, 5, [1], extra=0x80) + sweep(3, 5, [1]))
SEEDS["tied-weights"] = header() + tied

# Forward mode: K = 2 tangents seeded on two variables, a forward sweep,
# then forward over reverse; a jvp and an hvp.
fwd = (leaf(VARIABLE, vec(3), [0.5, -1, 2]) + scalar_leaf(SCALAR_VAR, 1.5) +
       op("exp", 0) + op("mul", 2, 1) + op("sigmoid", 3) + op("dot", 4, 0) +
       bytes([TANGENTS, 1]) +
       bytes([SET_TANGENT, 0, 0]) + fill([1, 0, 0, 0, 1, 0]) +
       bytes([SET_TANGENT, 1, 0]) + fill([0.5, -0.5]) +
       bytes([FORWARD, 5]) + bytes([BACKWARD_TANGENT]) + node(5) + fill([1]) + bytes([0]) +
       driver(0, 4, [0, 1], [1, -1]) + driver(1, 5, [0, 1], [0.5]))
SEEDS["forward-mode"] = header() + fwd

# Custom ops from the registry: cube by name, fma3 and sum4 by descriptor,
# the Jacobian (forward and reverse) through them.
custom = (header(customs=0b0011) + leaf(VARIABLE, vec(2), [1.5, -0.5]) +
          bytes([APPLY_NAMED, 0, 0]) + node(0) + dbl(0) +
          op("fma3", 1, 0, 0) + op("sum4", 2, 1, 0, 0) + op("sum", 3) +
          sweep(0, 4, [1]) + driver(4, 3, [0], [1]) + driver(5, 3, [0], [1]))
SEEDS["custom-ops"] = custom

# Misuse: nil, stale and foreign handles, set_value on an op, an unknown
# sweep flag, bad registry entries, calls on NULL tapes.
misuse = (leaf(VARIABLE, vec(2), [1, 2]) + op("neg", 0) +
          bytes([SET_VALUE]) + node(1) + bytes([0]) + fill([3]) +
          bytes([SWEEP, 4, 1]) + node(1) + fill([1]) +
          bytes([OP, OPS.index("add"), 228, 200, 228]) +  # nil operands
          bytes([RESET]) + leaf(VARIABLE, vec(2), [1, 2]) +
          bytes([OP, OPS.index("neg"), 229, 0]) +  # a stale handle
          bytes([SWITCH]) + leaf(CONSTANT, scalar(), [1]) + bytes([SWITCH]) +
          bytes([OP, OPS.index("neg"), 230, 0]) +  # a handle of the other tape
          bytes([REGISTRY, 3, REGISTRY, 7, REGISTRY, 8, REGISTRY, 8, NULL_TAPE, 5]) +
          bytes([ACCESSORS, 251]))
SEEDS["misuse"] = header(tape_b=2) + misuse

# The checks of check.h on a small program: gradcheck with two inputs, a
# handcheck with a callback.
checks = (bytes([GRADCHECK, 1, 0x11]) + fill([0.5, -1]) + fill([0]) + bytes([0, 0]) +
          bytes([0x11]) + fill([2, 0.5, -1]) + fill([0]) + bytes([0, 0]) +
          bytes([3, OPS.index("mul"), 1]) + dbl(0) + bytes([OPS.index("tanh"), 0]) + dbl(0) +
          bytes([OPS.index("sum"), 0]) + dbl(0) + bytes([0, 0, 7, 0]) +
          bytes([HANDCHECK, 0, 0x10]) + fill([1.5]) + fill([0.5]) + bytes([0, 0]) +
          bytes([1, OPS.index("square"), 0]) + dbl(0) + bytes([0, 0x10, 3, 0, 1]))
SEEDS["checks"] = header() + checks

# Replay after set_value: copied leaves changed, the tape re-evaluated and
# swept again; names and a second tape freed and made anew.
replay = (leaf(VARIABLE, mat(2, 2), [1, 2, 3, 4]) + leaf(VARIABLE, mat(2, 2), [0.5, -1]) +
          op("matmul", 0, 1) + op("transpose", 2) + op("mul", 3, 0) + op("mean", 4) +
          sweep(0, 5, [1]) + bytes([SET_VALUE]) + node(1) + bytes([0x80]) + fill([2, -3]) +
          sweep(0, 5, [1], extra=0x80) +
          bytes([SET_NAME]) + node(0) + bytes([1, ord("W")]) +
          bytes([RENEW, 0, SWITCH]) + leaf(VARIABLE, vec(4), [1]) + op("powc", 0, c=3))
SEEDS["replay"] = header() + replay

# Code generation of the neuron: the gradient in memory with its header,
# generated twice (the same text), in float with one statement per
# function, to a stream every write to fails (AD_EIO), with a refused
# prefix and an unknown bit; inputs W, b (and x, a constant).
SEEDS["codegen-neuron"] = header() + neuron + (
    codegen(8, [0, 2, 1], hdr=True, header_name=True, twice=True) +
    codegen(8, [0, 2], prefix=1, use_float=True, max_stmts=1, what=3) +
    codegen(8, [0, 2], prefix=2, src=2, hdr=True) +
    codegen(8, [0, 2], prefix=3, src=3, hdr=True, hdr_kind=0, fail_after=5) +
    codegen(8, [0], prefix=8) + codegen(8, [0], what=1, unknown=True) +
    codegen(4, [0, 0]) + codegen(8, [4]))

# Large tapes: the level order with groups and tables (an irregular
# chain), and repeated blocks as loops.
SEEDS["codegen-big"] = header() + codegen_big(7, ops=1, twice=True, max_stmts=5)
SEEDS["codegen-big-repeat"] = header() + codegen_big(3, repeat=True, what=1 | 2)

# Sparse Jacobians: two outputs of a small function, evaluated at once at a
# point, again at the tape's values, after a reset (refused), freed.
sparse = (leaf(VARIABLE, vec(3), [0.5, -1, 2]) + scalar_leaf(SCALAR_VAR, 1.5) +
          op("exp", 0) + op("mul", 2, 1) + op("sigmoid", 3) + op("dot", 4, 0) +
          sparse_new(0, [4, 5], [0, 1], at_once=sparse_eval_args(x=[0.25, 1, -0.5, 2])) +
          bytes([SPARSE_EVAL]) + sparse_eval_args() +
          bytes([SPARSE_EVAL]) + sparse_eval_args(misuse=2) +
          sparse_new(1, [5], [0, 1], flags=1, at_once=sparse_eval_args(w=[2])) +
          bytes([SPARSE_EVAL]) + sparse_eval_args(x=[1, 1, 1, 1], w=[0.5]) +
          bytes([RESET, SPARSE_EVAL]) + sparse_eval_args() + bytes([SPARSE_FREE]))
SEEDS["sparse"] = header() + sparse

# A Hessian of a weighted sum of two scalars of a vector, and a Jacobian
# of a matrix product, with a leaf that is a constant (refused).
sparse2 = (leaf(VARIABLE, vec(4), [0.5, -1, 2, 0.25]) + leaf(VARIABLE, mat(2, 4), [1, 0, -1]) +
           op("matvec", 1, 0) + op("tanh", 2) + op("sum", 3) + op("square", 0) +
           op("sum", 5) + sparse_new(1, [4, 6], [0, 1], at_once=sparse_eval_args(w=[1, -2])) +
           sparse_new(0, [3], [0, 1], at_once=sparse_eval_args()) +
           leaf(CONSTANT, vec(2), [1]) + sparse_new(0, [3], [7]))
SEEDS["sparse-hessian"] = header() + sparse2


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_api")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
