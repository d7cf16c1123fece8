"""A register-blocked GEMM tile for the network plan, written in LLVM IR through Numba.

The plan's convolutions are GEMMs on NHWC activations: output pixel ``m`` and output channel
``n`` get ``sum_t sum_c x[row_m + tap_t + c] * w[t, c, n]``, the taps being the kernel's
offsets in the input (one tap for a 1x1 convolution or a linear layer). One call of a tile
function computes ``MR`` pixels by ``NR`` channels: its ``MR x NR`` accumulators live in vector
registers for the whole reduction (``NR / lanes`` vectors per pixel), each step loads ``NR``
packed weights and broadcasts one input value per pixel, and the epilogue (bias, activation,
a residual added before or after it) is applied to the registers before the one store. Input
pixels are addressed by a table of row offsets, so a tile may span image rows, read a
zero-bordered buffer without bounds tests, and write into another.

Numba has no vector types, and LLVM's vectorisers do not keep a loop-carried tile of
accumulators in registers; this module therefore builds the loop in IR with
``numba.extending.intrinsic``. ``benches/bench_microkernel.py`` measures it against OpenBLAS
(numpy's matmul) on the plan's GEMM shapes.

A tile function's arguments (all arrays one-dimensional; offsets in elements)::

    tile(x, rows, m0, m_valid, x_shift, taps, n_taps, c_in, c_lo, c_hi,
         w, w_at, out, out_rows, n_shift, n_valid, start, finish,
         bias, has_bias, kind, lo, hi, alpha, beta, res, res_rows, res_mode)

``rows[m0 + m]`` is pixel ``m``'s offset in ``x`` (plus ``x_shift``) and ``out_rows[m0 + m]``
its offset in ``out`` (plus ``n_shift``, the first output channel); pixels past ``m_valid``
repeat the last one (the same value is stored twice). ``w[w_at:]`` is the panel, ``n_taps *
c_in`` rows of ``NR`` weights; the call sums the input channels ``[c_lo, c_hi)`` of every tap,
starting from zero (``start``) or from the partial sums in ``out``, and applies the epilogue
(``finish``) or stores the sums for the next chunk. ``n_valid`` (at most ``NR``) channels are
stored, masked.
``kind`` selects the activation (``fastconv.kernels.epilogue.ACTIVATIONS``); ``res_mode`` 0
adds no residual, 1 adds ``res[res_rows[m0 + m] + n_shift + n]`` before the activation, 2
after it.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import epilogue, tuning
from ..plan_tiles import TileGeometry, host_vector_bits, widest_vectors

def vector_bits() -> int:
    """The width of the vector registers the Numba kernels are compiled for (512, 256 or 128):
    this CPU's, or that of the features Numba is told to compile for (``NUMBA_CPU_FEATURES``,
    which ``FASTCONV_ISA`` sets; a CPU name's own features are not known here, so list them).
    A width the CPU lacks is refused: its code would stop on an illegal instruction."""
    from numba.core import config as numba_config

    host = host_vector_bits()
    if numba_config.CPU_FEATURES is None:
        return host
    bits = widest_vectors(f[1:] for f in numba_config.CPU_FEATURES.split(",")
                          if f.startswith("+"))
    if bits > host:
        raise RuntimeError(f"NUMBA_CPU_FEATURES={numba_config.CPU_FEATURES!r} asks for "
                           f"{bits}-bit vectors, but this CPU's widest are {host} bits")
    return bits


#: The tiles compiled here, for this CPU's vector width (``plan_tiles``): their shapes, packing
#: and schedule.
GEOMETRY = TileGeometry(vector_bits())

#: A vector's bytes at that width: a kernel's lanes are ``VECTOR_BYTES // x.itemsize``.
VECTOR_BYTES = GEOMETRY.vector_bits // 8


def tile_shape(dtype, wide: bool = False) -> tuple[int, int]:
    """``(MR, NR)``, the pixels and channels of one tile on this CPU (``tuning.GEMM_TILE``,
    or ``tuning.GEMM_TILE_WIDE``)."""
    return GEOMETRY.tile_shape(dtype, wide)


def lanes(dtype) -> int:
    return GEOMETRY.lanes(dtype)


def _splat(builder, value, vt):
    undef = ir.Constant(vt, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.count), [0] * vt.count)
    return builder.shuffle_vector(one, undef, mask)


def _select_lt(builder, a, b):
    """``b if a < b else a`` lane by lane: max that keeps a NaN in ``a``."""
    return builder.select(builder.fcmp_ordered("<", a, b), b, a)


def _select_gt(builder, a, b):
    """``b if a > b else a``: min that keeps a NaN in ``a``."""
    return builder.select(builder.fcmp_ordered(">", a, b), b, a)


class _Vectors:
    """What the IR builders share: the dtype's vector type, masks, masked loads and stores,
    branches over values, the epilogue's activations."""

    def __init__(self, dtype, vectors: int):
        self.double = np.dtype(dtype) == np.float64
        self.lanes = lanes(dtype)
        self.vectors = vectors

    def _types(self, builder):
        self.b = builder
        self.i64 = ir.IntType(64)
        self.ft = ir.DoubleType() if self.double else ir.FloatType()
        self.vt = ir.VectorType(self.ft, self.lanes)
        self.name = f"v{self.lanes}f{64 if self.double else 32}"
        return cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.vt, [self.vt] * 3), f"llvm.fma.{self.name}")

    def _store(self, value, array, offset, mask):
        ptr = self.b.bitcast(self.b.gep(array, [offset]), self.vt.as_pointer())
        self.b.call(self._masked("store"), [value, ptr, ir.Constant(ir.IntType(32), 4), mask])

    def _masks(self, n_valid):
        """One lane mask per vector: lanes below ``n_valid``."""
        b, lanes_ = self.b, self.lanes
        it = ir.VectorType(self.i64, lanes_)
        count = _splat(b, n_valid, it)
        return [b.icmp_signed("<", ir.Constant(it, [v * lanes_ + i for i in range(lanes_)]),
                              count) for v in range(self.vectors)]

    def _masked(self, what):
        vt, i32 = self.vt, ir.IntType(32)
        mask_t = ir.VectorType(ir.IntType(1), self.lanes)
        if what == "store":
            fnty = ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), i32, mask_t])
        else:
            fnty = ir.FunctionType(vt, [vt.as_pointer(), i32, mask_t, vt])
        return cgutils.get_or_insert_function(self.b.module, fnty,
                                              f"llvm.masked.{what}.{self.name}.p0")

    def _load(self, array, offset, mask):
        load = self._masked("load")
        ptr = self.b.bitcast(self.b.gep(array, [offset]), self.vt.as_pointer())
        return self.b.call(load, [ptr, ir.Constant(ir.IntType(32), 4), mask,
                                  ir.Constant(self.vt, [0.0] * self.lanes)])

    def _when(self, flag, values, compute):
        """``compute(values)`` if ``flag`` (an i1) else ``values``, as a branch."""
        b = self.b
        before = b.block
        then = b.append_basic_block("then")
        after = b.append_basic_block("after")
        b.cbranch(flag, then, after)
        b.position_at_end(then)
        computed = compute(values)
        then_end = b.block
        b.branch(after)
        b.position_at_end(after)
        out = []
        for row_old, row_new in zip(values, computed):
            merged = []
            for old, new in zip(row_old, row_new):
                phi = b.phi(self.vt)
                phi.add_incoming(old, before)
                phi.add_incoming(new, then_end)
                merged.append(phi)
            out.append(merged)
        return out

    def _exp_function(self):
        """``exp`` of a vector: for float32, Cephes' polynomial of ``e ** r`` on |r| <= ln 2 /
        2 times ``2 ** n`` made from the exponent's bits (about one ulp, and vector
        instructions only: LLVM's ``llvm.exp`` would call the scalar libm once per lane);
        for float64, ``llvm.exp``."""
        b, vt = self.b, self.vt
        if self.double:
            return cgutils.get_or_insert_function(b.module, ir.FunctionType(vt, [vt]),
                                                  f"llvm.exp.{self.name}")
        name = f"fastconv.exp.{self.name}"
        if name in b.module.globals:
            return b.module.globals[name]
        fn = ir.Function(b.module, ir.FunctionType(vt, [vt]), name)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        e = ir.IRBuilder(fn.append_basic_block("entry"))
        const = functools.partial(ir.Constant, vt)
        splat = lambda v: const([v] * self.lanes)  # noqa: E731
        x = fn.args[0]
        # the logarithms of the smallest normal float and (just past) the largest; keeps a
        # NaN. With the coefficients doubled and the power 2 ** (n - 1), n from -126 to 128,
        # the product overflows to infinity past the largest float and is 0 below about
        # 1.8e-38: no compare beyond the bounds
        x = _select_gt(e, _select_lt(e, x, splat(-87.33654)), splat(88.72284))
        floor = cgutils.get_or_insert_function(b.module, ir.FunctionType(vt, [vt]),
                                               f"llvm.floor.{self.name}")
        fma = cgutils.get_or_insert_function(b.module, ir.FunctionType(vt, [vt] * 3),
                                             f"llvm.fma.{self.name}")

        def madd(a, m, c):  # a * m + c, one instruction
            return e.call(fma, [a, m, c])
        n = e.call(floor, [madd(x, splat(1.44269504088896341), splat(0.5))])
        r = madd(n, splat(2.12194440e-4), madd(n, splat(-0.693359375), x))
        p = splat(3.9751383000e-4)  # twice Cephes': 2 e ** r, exactly
        for c in (2.7963999014e-3, 1.66669038146e-2, 8.3331591788e-2, 3.3333330918e-1,
                  1.00000002402):
            p = madd(p, r, splat(c))
        p = madd(e.fmul(p, r), r, madd(r, splat(2.0), splat(2.0)))
        it = ir.VectorType(ir.IntType(32), self.lanes)
        bits = e.shl(e.add(e.fptosi(n, it), ir.Constant(it, [126] * self.lanes)),
                     ir.Constant(it, [23] * self.lanes))
        e.ret(e.fmul(p, e.bitcast(bits, vt)))
        return fn

    def _splat(self, value):
        return ir.Constant(self.vt, [value] * self.lanes)

    def _intrinsic(self, name, arity=1):
        return cgutils.get_or_insert_function(
            self.b.module, ir.FunctionType(self.vt, [self.vt] * arity), f"llvm.{name}.{self.name}")

    def _per_lane(self, name, a):
        """libm's ``name`` of each lane (float64: exact where a polynomial of ours would
        not be)."""
        b = self.b
        fn = cgutils.get_or_insert_function(b.module, ir.FunctionType(self.ft, [self.ft]), name)
        out = a
        for i in range(self.lanes):
            at = ir.Constant(ir.IntType(32), i)
            out = b.insert_element(out, b.call(fn, [b.extract_element(a, at)]), at)
        return out

    def _tanh(self, a):
        """tanh: for float32, Cephes' odd polynomial below 0.625 and 1 - 2 / (exp(2|a|) + 1)
        above (no cancellation near 0), the sign copied; for float64, libm's."""
        if self.double:
            return self._per_lane("tanh", a)
        b, c = self.b, self._splat
        size = b.call(self._intrinsic("fabs"), [a])
        s = b.call(self._exp_function(), [b.fadd(size, size)])
        large = b.fsub(c(1.0), b.fdiv(c(2.0), b.fadd(s, c(1.0))))
        large = b.call(self._intrinsic("copysign", 2), [large, a])
        z = b.fmul(a, a)
        p = c(-5.70498872745e-3)
        for k in (2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1):
            p = b.fadd(b.fmul(p, z), c(k))
        small = b.fadd(b.fmul(b.fmul(p, z), a), a)
        return b.select(b.fcmp_ordered("<", size, c(0.625)), small, large)

    def _mish(self, a):
        """a tanh(log(1 + e^a)) = a n (n + 2) / (n (n + 2) + 2) with n = e^a; a itself above 20
        (where the fraction is 1 and n (n + 2) would overflow)."""
        b, c = self.b, self._splat
        n = b.call(self._exp_function(), [a])
        m = b.fmul(n, b.fadd(n, c(2.0)))
        y = b.fmul(a, b.fdiv(m, b.fadd(m, c(2.0))))
        return b.select(b.fcmp_ordered(">", a, c(20.0)), a, y)

    def _gelu(self, a):
        """a erfc(-a / sqrt 2) / 2: for float32, Numerical Recipes' erfc (relative error below
        1.2e-7, so a's negative tail keeps its digits) of |z|, 2 - it for z < 0; for float64,
        libm's erfc."""
        b, c = self.b, self._splat
        z = b.fmul(a, c(-0.7071067811865476))
        if self.double:
            return b.fmul(b.fmul(a, c(0.5)), self._per_lane("erfc", z))
        size = b.call(self._intrinsic("fabs"), [z])
        t = b.fdiv(c(1.0), b.fadd(c(1.0), b.fmul(size, c(0.5))))
        p = c(0.17087277)
        for k in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
                  0.37409196, 1.00002368, -1.26551223):
            p = b.fadd(b.fmul(p, t), c(k))
        tail = b.fmul(t, b.call(self._exp_function(), [b.fsub(p, b.fmul(size, size))]))
        erfc = b.select(b.fcmp_ordered("<", z, c(0.0)), b.fsub(c(2.0), tail), tail)
        return b.fmul(b.fmul(a, c(0.5)), erfc)

    def _gelu_tanh(self, a):
        """a (1 + tanh(u)) / 2 as a / (1 + exp(-2 u)): the same, without the cancellation of
        1 + tanh(u) in the negative tail."""
        b, c = self.b, self._splat
        u = b.fmul(c(-2 * 0.7978845608028654), b.fadd(a, b.fmul(c(0.044715), b.fmul(
            b.fmul(a, a), a))))
        return b.fdiv(a, b.fadd(c(1.0), b.call(self._exp_function(), [u])))

    def _activate(self, acc, kind, lo, hi, alpha, beta):
        b, vt = self.b, self.vt
        const = functools.partial(ir.Constant, vt)
        lo_v, hi_v = _splat(b, lo, vt), _splat(b, hi, vt)
        alpha_v, beta_v = _splat(b, alpha, vt), _splat(b, beta, vt)
        zero, one = const([0.0] * self.lanes), const([1.0] * self.lanes)

        def each(fn):
            return lambda values: [[fn(a) for a in r] for r in values]

        def clamp(a, low, high):
            return _select_gt(b, _select_lt(b, a, low), high)

        exp = self._exp_function()
        kinds = {
            epilogue.CLAMP: lambda a: clamp(a, lo_v, hi_v),
            epilogue.LEAKY: lambda a: b.select(b.fcmp_ordered("<", a, zero), b.fmul(a, alpha_v),
                                               a),
            epilogue.HARDSIGMOID: lambda a: clamp(b.fadd(b.fmul(a, alpha_v), beta_v), zero, one),
            epilogue.HARDSWISH: lambda a: b.fmul(a, clamp(
                b.fadd(b.fmul(a, const([1 / 6] * self.lanes)), const([0.5] * self.lanes)), zero,
                one)),
            epilogue.SIGMOID: lambda a: b.fdiv(one, b.fadd(one, b.call(exp, [b.fsub(zero, a)]))),
            epilogue.SILU: lambda a: b.fdiv(a, b.fadd(one, b.call(exp, [b.fsub(zero, a)]))),
            epilogue.TANH: self._tanh,
            epilogue.MISH: self._mish,
            epilogue.GELU: self._gelu,
            epilogue.GELU_TANH: self._gelu_tanh,
            epilogue.EXP: lambda a: b.call(exp, [a]),
        }
        for code, fn in kinds.items():
            flag = b.icmp_signed("==", kind, ir.Constant(kind.type, code))
            acc = self._when(flag, acc, each(fn))
        return acc


class _Tile(_Vectors):
    """Builds the IR of one (MR, NR, dtype) tile function; with ``vectors``, one that
    computes only the first ``vectors`` vectors of a panel of NR channels (a panel whose
    channels end sooner: the rest would be computed and dropped)."""

    def __init__(self, mr: int, nr: int, dtype, vectors: int | None = None):
        if nr % lanes(dtype):
            raise ValueError(f"NR={nr} is not a whole number of {lanes(dtype)}-lane vectors")
        super().__init__(dtype, vectors or nr // lanes(dtype))
        self.mr, self.nr = mr, nr

    def codegen(self, context, builder, signature, args):
        (x, rows, m0, m_valid, x_shift, taps, n_taps, c_in, c_lo, c_hi, w, w_at, out,
         out_rows, n_shift, n_valid, start, finish, bias, has_bias, kind, lo, hi, alpha, beta,
         res, res_rows, res_mode) = args
        ty = signature.args

        def data(i, value):
            return context.make_array(ty[i])(context, builder, value).data

        X, ROWS, TAPS, W = data(0, x), data(1, rows), data(5, taps), data(10, w)
        OUT, OUT_ROWS, BIAS = data(12, out), data(13, out_rows), data(18, bias)
        RES, RES_ROWS = data(25, res), data(26, res_rows)
        fma = self._types(builder)
        i64, vt = self.i64, self.vt
        zero = ir.Constant(vt, [0.0] * self.lanes)
        last = builder.sub(m_valid, ir.Constant(i64, 1))

        def row(table, m):  # the offset of pixel min(m, m_valid - 1)
            m = builder.select(builder.icmp_signed("<", ir.Constant(i64, m), m_valid),
                               ir.Constant(i64, m), last)
            return builder.load(builder.gep(table, [builder.add(m0, m)]))

        x_rows = [builder.add(row(ROWS, m), x_shift) for m in range(self.mr)]
        mask = self._masks(n_valid)
        out_at = [builder.add(row(OUT_ROWS, m), n_shift) for m in range(self.mr)]
        lane = [ir.Constant(i64, v * self.lanes) for v in range(self.vectors)]
        # the accumulators start at zero, or at the partial sums a chunk before stored
        partial = self._when(builder.not_(start), [[zero] * self.vectors] * self.mr,
                             lambda values: [[self._load(OUT, builder.add(out_at[m], lane[v]),
                                                         mask[v]) for v in range(self.vectors)]
                                             for m in range(self.mr)])

        entry = builder.block
        tap_head = builder.append_basic_block("tap_head")
        tap_body = builder.append_basic_block("tap_body")
        k_head = builder.append_basic_block("k_head")
        k_body = builder.append_basic_block("k_body")
        tap_next = builder.append_basic_block("tap_next")
        done = builder.append_basic_block("done")
        builder.branch(tap_head)

        # taps: t, the weights' position, the accumulators
        builder.position_at_end(tap_head)
        t = builder.phi(i64)
        t.add_incoming(ir.Constant(i64, 0), entry)
        acc_t = [[builder.phi(vt) for _ in range(self.vectors)] for _ in range(self.mr)]
        for r, p in zip(acc_t, partial):
            for a, b in zip(r, p):
                a.add_incoming(b, entry)
        builder.cbranch(builder.icmp_signed("<", t, n_taps), tap_body, done)

        builder.position_at_end(tap_body)
        tap = builder.load(builder.gep(TAPS, [t]))
        bases = [builder.add(xr, tap) for xr in x_rows]
        w_pos = builder.add(w_at, builder.mul(builder.add(builder.mul(t, c_in), c_lo),
                                              ir.Constant(i64, self.nr)))
        builder.branch(k_head)

        # the reduction over the chunk [c_lo, c_hi) of one tap's input channels
        builder.position_at_end(k_head)
        k = builder.phi(i64)
        k.add_incoming(c_lo, tap_body)
        wk = builder.phi(i64)
        wk.add_incoming(w_pos, tap_body)
        acc_k = [[builder.phi(vt) for _ in range(self.vectors)] for _ in range(self.mr)]
        for rk, rt in zip(acc_k, acc_t):
            for a, b in zip(rk, rt):
                a.add_incoming(b, tap_body)
        builder.cbranch(builder.icmp_signed("<", k, c_hi), k_body, tap_next)

        builder.position_at_end(k_body)
        if tuning.GEMM_PREFETCH:  # the weights a few steps ahead: they may come from memory
            prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ir.VoidType(), [ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(32),
                                ir.IntType(32)]), "llvm.prefetch.p0")
            ahead = builder.gep(W, [builder.add(wk, ir.Constant(i64, tuning.GEMM_PREFETCH))])
            for line in range(0, self.vectors * self.lanes * (8 if self.double else 4), 64):
                ptr = builder.gep(builder.bitcast(ahead, ir.IntType(8).as_pointer()),
                                  [ir.Constant(i64, line)])
                builder.call(prefetch, [ptr, ir.Constant(ir.IntType(32), 0),
                                        ir.Constant(ir.IntType(32), 3),
                                        ir.Constant(ir.IntType(32), 1)])
        weights = [builder.load(builder.bitcast(
            builder.gep(W, [builder.add(wk, ir.Constant(i64, v * self.lanes))]),
            vt.as_pointer()), align=8 if self.double else 4) for v in range(self.vectors)]
        new = []
        for m in range(self.mr):
            value = builder.load(builder.gep(X, [builder.add(bases[m], k)]))
            broadcast = _splat(builder, value, vt)
            new.append([builder.call(fma, [broadcast, weights[v], acc_k[m][v]])
                        for v in range(self.vectors)])
        body_end = builder.block
        k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body_end)
        wk.add_incoming(builder.add(wk, ir.Constant(i64, self.nr)), body_end)
        for rk, rn in zip(acc_k, new):
            for a, b in zip(rk, rn):
                a.add_incoming(b, body_end)
        builder.branch(k_head)

        builder.position_at_end(tap_next)
        t.add_incoming(builder.add(t, ir.Constant(i64, 1)), tap_next)
        for rt, rk in zip(acc_t, acc_k):
            for a, b in zip(rt, rk):
                a.add_incoming(b, tap_next)
        builder.branch(tap_head)

        builder.position_at_end(done)
        acc = [[a for a in r] for r in acc_t]
        res_rows_m = [builder.add(row(RES_ROWS, m), n_shift) for m in range(self.mr)]

        def before(values):  # after the last chunk: bias, a residual before the activation
            values = self._add_bias(values, BIAS, n_shift, has_bias, mask)
            return self._add_residual(values, RES, res_rows_m, res_mode, 1, mask)

        def after(values):  # the activation, a residual after it
            values = self._activate(values, kind, lo, hi, alpha, beta)
            return self._add_residual(values, RES, res_rows_m, res_mode, 2, mask)
        # an activation of a few instructions in registers; one with an exponential (and its
        # temporaries) would spill the tile's accumulators: on the stored rows instead
        costly = builder.icmp_signed(">=", kind, ir.Constant(kind.type, epilogue.SIGMOID))
        acc = self._when(finish, acc, before)
        acc = self._when(builder.and_(finish, builder.not_(costly)), acc, after)
        for m in range(self.mr):
            for v in range(self.vectors):
                self._store(acc[m][v], OUT, builder.add(out_at[m], lane[v]), mask[v])
        with builder.if_then(builder.and_(finish, costly)):
            # each stored pixel once (the last one repeats in a short tile)
            with cgutils.for_range(builder, m_valid) as pixel:
                at = builder.load(builder.gep(OUT_ROWS, [builder.add(m0, pixel.index)]))
                at = builder.add(at, n_shift)
                res_at = builder.add(builder.load(builder.gep(
                    RES_ROWS, [builder.add(m0, pixel.index)])), n_shift)
                for v in range(self.vectors):
                    where = builder.add(at, lane[v])
                    value = self._activate([[self._load(OUT, where, mask[v])]], kind, lo, hi,
                                           alpha, beta)
                    value = self._add_residual(value, RES, [builder.add(res_at, lane[v])],
                                               res_mode, 2, [mask[v]])
                    self._store(value[0][0], OUT, where, mask[v])
        return context.get_dummy_value()

    def _add_bias(self, acc, bias, n_shift, has_bias, mask):
        def add(values):
            vectors = [self._load(bias, self.b.add(n_shift, ir.Constant(
                self.i64, v * self.lanes)), mask[v]) for v in range(self.vectors)]
            return [[self.b.fadd(a, vectors[v]) for v, a in enumerate(r)] for r in values]
        return self._when(has_bias, acc, add)

    def _add_residual(self, acc, res, rows, res_mode, when, mask):
        def add(values):
            return [[self.b.fadd(a, self._load(res, self.b.add(rows[m], ir.Constant(
                self.i64, v * self.lanes)), mask[v])) for v, a in enumerate(r)]
                    for m, r in enumerate(values)]
        flag = self.b.icmp_signed("==", res_mode, ir.Constant(res_mode.type, when))
        return self._when(flag, acc, add)


class _DepthwiseRow(_Vectors):
    """Builds the IR of one row of a 3x3 depthwise convolution over one block of channels.

    The block's nine weight vectors (per vector of the block) and its bias stay in registers
    while the loop runs along the output row; each output is nine loads and multiply-adds
    per vector, its activation, and one (masked) store. Arguments::

        row(x, x_at, row_step, col_step, dil_step, w, c0, channels, bias,
            out, out_at, out_step, count, kind, lo, hi, alpha, beta)

    Output ``i`` of the row reads ``x[x_at + i * col_step + r * row_step + s * dil_step + c]``
    for tap (r, s), weights ``w[(3 * r + s) * channels + c]``, and is stored at ``out[out_at +
    i * out_step + c]``, for the channels ``c0 <= c < min(c0 + block, channels)``.
    """

    def codegen(self, context, builder, signature, args):
        (x, x_at, row_step, col_step, dil_step, w, c0, channels, bias, out, out_at, out_step,
         count, kind, lo, hi, alpha, beta) = args
        ty = signature.args

        def data(i, value):
            return context.make_array(ty[i])(context, builder, value).data

        X, W, BIAS, OUT = data(0, x), data(5, w), data(8, bias), data(9, out)
        fma = self._types(builder)
        i64 = self.i64
        mask = self._masks(builder.sub(channels, c0))
        lane = [ir.Constant(i64, v * self.lanes) for v in range(self.vectors)]
        weights = [[self._load(W, builder.add(builder.add(builder.mul(ir.Constant(i64, t),
                                                                      channels), c0), lane[v]),
                               mask[v]) for v in range(self.vectors)] for t in range(9)]
        biases = [self._load(BIAS, builder.add(c0, lane[v]), mask[v])
                  for v in range(self.vectors)]
        taps = [builder.add(builder.mul(ir.Constant(i64, t // 3), row_step),
                            builder.mul(ir.Constant(i64, t % 3), dil_step)) for t in range(9)]
        x_base = builder.add(x_at, c0)
        out_base = builder.add(out_at, c0)

        entry = builder.block
        head = builder.append_basic_block("head")
        body = builder.append_basic_block("body")
        done = builder.append_basic_block("done")
        builder.branch(head)
        builder.position_at_end(head)
        i = builder.phi(i64)
        i.add_incoming(ir.Constant(i64, 0), entry)
        builder.cbranch(builder.icmp_signed("<", i, count), body, done)
        builder.position_at_end(body)
        at = builder.add(x_base, builder.mul(i, col_step))
        acc = [[b for b in biases]]
        for t in range(9):
            here = builder.add(at, taps[t])
            acc[0] = [builder.call(fma, [weights[t][v], self._load(
                X, builder.add(here, lane[v]), mask[v]), acc[0][v]])
                for v in range(self.vectors)]
        acc = self._activate(acc, kind, lo, hi, alpha, beta)
        where = builder.add(out_base, builder.mul(i, out_step))
        for v in range(self.vectors):
            self._store(acc[0][v], OUT, builder.add(where, lane[v]), mask[v])
        i.add_incoming(builder.add(i, ir.Constant(i64, 1)), builder.block)
        builder.branch(head)
        builder.position_at_end(done)
        return context.get_dummy_value()


class _DepthwiseRowTaps(_Vectors):
    """Builds the IR of one row of a depthwise convolution of any kernel size over one block
    of channels: :class:`_DepthwiseRow`'s arguments and the kernel's ``kh`` and ``kw``::

        row(x, x_at, row_step, col_step, dil_step, w, c0, channels, bias,
            out, out_at, out_step, count, kh, kw, kind, lo, hi, alpha, beta)

    Tap (r, s) has weights ``w[(kw * r + s) * channels + c]``. Too many taps for their
    weights to stay in registers, so the row runs ``OUTPUTS`` outputs at a time: their
    accumulators stay in registers over every tap, and each tap's weight vector, loaded
    once, serves them all. For the common widths (``WIDTHS``) with a stride of one or two
    dilations, a kernel row's taps are unrolled and the outputs share their input columns
    (output p's tap s reads column ``p * stride + s``), each column loaded once; other shapes
    loop over the taps. A row's last outputs are its last ``OUTPUTS`` again (each output is
    written once from its own sums, so recomputing one stores the same value); a row shorter
    than that runs one output at a time.
    """

    OUTPUTS = 4
    WIDTHS = (3, 5, 7, 9)

    def codegen(self, context, builder, signature, args):
        (x, x_at, row_step, col_step, dil_step, w, c0, channels, bias, out, out_at, out_step,
         count, kh, kw, kind, lo, hi, alpha, beta) = args
        ty = signature.args

        def data(i, value):
            return context.make_array(ty[i])(context, builder, value).data

        X, W, BIAS, OUT = data(0, x), data(5, w), data(8, bias), data(9, out)
        fma = self._types(builder)
        b, i64 = builder, self.i64
        const = functools.partial(ir.Constant, i64)
        mask = self._masks(b.sub(channels, c0))
        lane = [const(v * self.lanes) for v in range(self.vectors)]
        biases = [self._load(BIAS, b.add(c0, lane[v]), mask[v]) for v in range(self.vectors)]
        x_base, out_base = b.add(x_at, c0), b.add(out_at, c0)
        # the accumulators: stack slots that LLVM promotes to registers
        slots = [[cgutils.alloca_once(b, self.vt) for _ in range(self.vectors)]
                 for _ in range(self.OUTPUTS)]
        # which tap code runs: kw * 4 + the stride in dilations (1 or 2; 0 for any other)
        stride = b.select(b.icmp_signed("==", col_step, dil_step), const(1),
                          b.select(b.icmp_signed("==", col_step, b.mul(dil_step, const(2))),
                                   const(2), const(0)))
        key = b.add(b.mul(kw, const(4)), stride)

        def fma_into(p, v, weight, value):
            b.store(b.call(fma, [weight, value, b.load(slots[p][v])]), slots[p][v])

        def weight_vectors(tap):
            at = b.add(b.mul(tap, channels), c0)
            return [self._load(W, b.add(at, lane[v]), mask[v]) for v in range(self.vectors)]

        def unrolled_taps(first, n, width, step):
            """A kernel row's ``width`` taps written out; columns shared between outputs."""
            with cgutils.for_range(b, kh) as r:
                row_at = b.add(first, b.mul(r.index, row_step))
                columns = {}
                for s in range(width):
                    weights = weight_vectors(b.add(b.mul(r.index, const(width)), const(s)))
                    for p in range(n):
                        j = p * step + s
                        if j not in columns:
                            at = b.add(row_at, b.mul(const(j), dil_step))
                            columns[j] = [self._load(X, b.add(at, lane[v]), mask[v])
                                          for v in range(self.vectors)]
                        for v in range(self.vectors):
                            fma_into(p, v, weights[v], columns[j][v])

        def looped_taps(first, n):
            with cgutils.for_range(b, kh) as r:
                row_at = b.add(first, b.mul(r.index, row_step))
                with cgutils.for_range(b, kw) as s:
                    weights = weight_vectors(b.add(b.mul(r.index, kw), s.index))
                    at = b.add(row_at, b.mul(s.index, dil_step))
                    for p in range(n):
                        here = b.add(at, b.mul(const(p), col_step))
                        for v in range(self.vectors):
                            fma_into(p, v, weights[v],
                                     self._load(X, b.add(here, lane[v]), mask[v]))

        def outputs(i, n):
            """Outputs i .. i + n - 1: their sums over every tap, the epilogue, the store."""
            for p in range(n):
                for v in range(self.vectors):
                    b.store(biases[v], slots[p][v])
            first = b.add(x_base, b.mul(i, col_step))
            merge = b.append_basic_block("taps_done")
            generic = b.append_basic_block("taps_looped")
            switch = b.switch(key, generic)
            for width in self.WIDTHS:
                for step in (1, 2):
                    case = b.append_basic_block(f"taps_{width}_{step}")
                    switch.add_case(const(width * 4 + step), case)
                    b.position_at_end(case)
                    unrolled_taps(first, n, width, step)
                    b.branch(merge)
            b.position_at_end(generic)
            looped_taps(first, n)
            b.branch(merge)
            b.position_at_end(merge)
            acc = self._activate([[b.load(slots[p][v]) for v in range(self.vectors)]
                                  for p in range(n)], kind, lo, hi, alpha, beta)
            for p in range(n):
                where = b.add(out_base, b.mul(b.add(i, const(p)), out_step))
                for v in range(self.vectors):
                    self._store(acc[p][v], OUT, b.add(where, lane[v]), mask[v])

        n = self.OUTPUTS
        with b.if_else(b.icmp_signed(">=", count, const(n))) as (whole, short):
            with whole:
                last = b.sub(count, const(n))
                with cgutils.for_range_slice(b, const(0), count, const(n)) as (i, _):
                    outputs(b.select(b.icmp_signed(">", i, last), last, i), n)
            with short:
                with cgutils.for_range(b, count) as loop:
                    outputs(loop.index, 1)
        return context.get_dummy_value()


class _ChannelLoop(_Vectors):
    """IR that runs along the channels one vector at a time (the last one masked)."""

    def _channels(self, channels, body):
        """``body(c, mask)`` for ``c = 0, lanes, 2 * lanes, ...`` below ``channels``."""
        b, i64 = self.b, self.i64
        entry = b.block
        head = b.append_basic_block("c_head")
        loop = b.append_basic_block("c_body")
        done = b.append_basic_block("c_done")
        b.branch(head)
        b.position_at_end(head)
        c = b.phi(i64)
        c.add_incoming(ir.Constant(i64, 0), entry)
        b.cbranch(b.icmp_signed("<", c, channels), loop, done)
        b.position_at_end(loop)
        self.vectors = 1
        body(c, self._masks(b.sub(channels, c))[0])
        c.add_incoming(b.add(c, ir.Constant(i64, self.lanes)), b.block)
        b.branch(head)
        b.position_at_end(done)


class _ActivateSpan(_ChannelLoop):
    """The epilogue's activation over ``count`` contiguous values, a vector at a time::

        activate_span(y, at, count, kind, lo, hi, alpha, beta)

    ``y[at:at + count]`` in place (the same IR as the GEMM tiles' epilogue)."""

    def codegen(self, context, builder, signature, args):
        y, at, count, kind, lo, hi, alpha, beta = args
        Y = context.make_array(signature.args[0])(context, builder, y).data
        self._types(builder)
        b = builder

        def body(c, mask):
            where = b.add(at, c)
            value = self._activate([[self._load(Y, where, mask)]], kind, lo, hi, alpha, beta)
            self._store(value[0][0], Y, where, mask)
        self._channels(count, body)
        return context.get_dummy_value()


@intrinsic
def activate_span(typingctx, y, at, count, kind, lo, hi, alpha, beta):
    """See :class:`_ActivateSpan`."""
    i = types.int64
    scalar = y.dtype
    sig = types.void(y, i, i, i, scalar, scalar, scalar, scalar)
    return sig, _ActivateSpan(np.dtype(y.dtype.name), 1).codegen


class _WinogradInput(_ChannelLoop):
    """``V = B^T d B`` of one 4x4 patch, for every channel::

        winograd_in(x, x_at, row_step, col_step, channels, v, v_at, shift)

    reads the patch's pixel (i, j) at ``x[x_at + i * row_step + j * col_step + c]`` and writes
    position ``xi`` at ``v[v_at + xi * shift + c]``.
    """

    def codegen(self, context, builder, signature, args):
        x, x_at, row_step, col_step, channels, v, v_at, shift = args
        X = context.make_array(signature.args[0])(context, builder, x).data
        V = context.make_array(signature.args[5])(context, builder, v).data
        self._types(builder)
        b, i64 = builder, self.i64

        def body(c, mask):
            d = [[self._load(X, b.add(b.add(x_at, c), b.add(
                b.mul(ir.Constant(i64, i), row_step), b.mul(ir.Constant(i64, j), col_step))),
                mask) for j in range(4)] for i in range(4)]
            rows = [[b.fsub(d[0][j], d[2][j]) for j in range(4)],  # B^T d
                    [b.fadd(d[1][j], d[2][j]) for j in range(4)],
                    [b.fsub(d[2][j], d[1][j]) for j in range(4)],
                    [b.fsub(d[1][j], d[3][j]) for j in range(4)]]
            for i, r in enumerate(rows):  # (.) B
                values = (b.fsub(r[0], r[2]), b.fadd(r[1], r[2]), b.fsub(r[2], r[1]),
                          b.fsub(r[1], r[3]))
                for j, value in enumerate(values):
                    at = b.add(b.add(v_at, c), b.mul(ir.Constant(i64, 4 * i + j), shift))
                    self._store(value, V, at, mask)
        self._channels(channels, body)
        return context.get_dummy_value()


class _WinogradOutput(_ChannelLoop):
    """``Y = A^T M A`` of one tile's 16 products, with bias, a residual and activation::

        winograd_out(m, m_at, shift, channels, bias, out, out_at, row_step, col_step,
                     rows, cols, kind, lo, hi, alpha, beta,
                     res, res_at, res_row_step, res_col_step, res_mode)

    reads position ``xi`` at ``m[m_at + xi * shift + c]`` and writes the ``rows x cols`` (1 or
    2 each) outputs (i, j) at ``out[out_at + i * row_step + j * col_step + c]``; ``res_mode``
    1 adds ``res[res_at + i * res_row_step + j * res_col_step + c]`` before the activation,
    2 after it, 0 nothing. Outputs past ``rows x cols`` are neither read nor written.
    """

    def codegen(self, context, builder, signature, args):
        (m, m_at, shift, channels, bias, out, out_at, row_step, col_step, rows, cols, kind, lo,
         hi, alpha, beta, res, res_at, res_row_step, res_col_step, res_mode) = args
        M = context.make_array(signature.args[0])(context, builder, m).data
        BIAS = context.make_array(signature.args[4])(context, builder, bias).data
        OUT = context.make_array(signature.args[5])(context, builder, out).data
        RES = context.make_array(signature.args[16])(context, builder, res).data
        self._types(builder)
        b, i64 = builder, self.i64

        def offset(base, c, i, j, down, across):
            return b.add(b.add(base, c), b.add(b.mul(ir.Constant(i64, i), down),
                                               b.mul(ir.Constant(i64, j), across)))

        def body(c, mask):
            p = [self._load(M, b.add(b.add(m_at, c), b.mul(ir.Constant(i64, xi), shift)), mask)
                 for xi in range(16)]
            r0 = [b.fadd(b.fadd(p[j], p[4 + j]), p[8 + j]) for j in range(4)]  # A^T M
            r1 = [b.fsub(b.fsub(p[4 + j], p[8 + j]), p[12 + j]) for j in range(4)]
            bias_v = self._load(BIAS, c, mask)
            y = [[b.fadd(b.fadd(b.fadd(r[0], r[1]), r[2]), bias_v),  # (.) A
                  b.fadd(b.fsub(b.fsub(r[1], r[2]), r[3]), bias_v)] for r in (r0, r1)]
            inside = [[b.and_(mask, _splat(b, b.and_(
                b.icmp_signed("<", ir.Constant(i64, i), rows),
                b.icmp_signed("<", ir.Constant(i64, j), cols)),
                ir.VectorType(ir.IntType(1), self.lanes))) for j in range(2)] for i in range(2)]

            def add_residual(values):
                return [[b.fadd(values[i][j], self._load(
                    RES, offset(res_at, c, i, j, res_row_step, res_col_step), inside[i][j]))
                    for j in range(2)] for i in range(2)]

            def when(mode):
                return b.icmp_signed("==", res_mode, ir.Constant(res_mode.type, mode))
            y = self._when(when(1), y, add_residual)
            y = self._activate(y, kind, lo, hi, alpha, beta)
            y = self._when(when(2), y, add_residual)
            for i in range(2):
                for j in range(2):
                    self._store(y[i][j], OUT, offset(out_at, c, i, j, row_step, col_step),
                                inside[i][j])
        self._channels(channels, body)
        return context.get_dummy_value()


@intrinsic
def winograd_in(typingctx, x, x_at, row_step, col_step, channels, v, v_at, shift):
    """:class:`_WinogradInput` for ``x``'s dtype."""
    i = types.int64
    sig = types.void(x, i, i, i, i, v, i, i)
    return sig, _WinogradInput(np.dtype(x.dtype.name), 1).codegen


@intrinsic
def winograd_out(typingctx, m, m_at, shift, channels, bias, out, out_at, row_step, col_step,
                 rows, cols, kind, lo, hi, alpha, beta, res, res_at, res_row_step,
                 res_col_step, res_mode):
    """:class:`_WinogradOutput` for ``m``'s dtype."""
    i = types.int64
    s = m.dtype
    sig = types.void(m, i, i, i, bias, out, i, i, i, i, i, i, s, s, s, s, res, i, i, i, i)
    return sig, _WinogradOutput(np.dtype(m.dtype.name), 1).codegen


def depthwise_block(dtype) -> int:
    """Channels per call of the depthwise row (``tuning.DEPTHWISE_VECTORS`` vectors)."""
    return GEOMETRY.depthwise_block(dtype)


class _ByBlockWidth:
    """A depthwise row's code for a whole block of vectors, and beside it the same row over
    one vector for a block whose channels fit one (16 channels of a 32-wide block, a layer's
    last 8): the whole block's code would compute and mask off the rest. Chosen per call by
    the row's ``c0`` and ``channels`` (arguments 6 and 7). The 3x3 row only: the k x k row
    gained nothing measurable from it (``Network.profile`` of MobileNetV3-Large's 5x5 layer
    of 72 channels) for twice its code."""

    def __init__(self, row_class, dtype):
        vectors = tuning.DEPTHWISE_VECTORS[vector_bits()]
        self.whole = row_class(dtype, vectors)
        self.one = row_class(dtype, 1) if vectors > 1 else None
        self.lanes = lanes(dtype)

    def codegen(self, context, builder, signature, args):
        if self.one is None:
            return self.whole.codegen(context, builder, signature, args)
        c0, channels = args[6], args[7]
        fits = builder.icmp_signed("<=", builder.sub(channels, c0),
                                   ir.Constant(ir.IntType(64), self.lanes))
        with builder.if_else(fits) as (one, whole):
            with one:
                self.one.codegen(context, builder, signature, args)
            with whole:
                self.whole.codegen(context, builder, signature, args)
        return context.get_dummy_value()


class _Interleave3(_Vectors):
    """Builds the IR of :func:`interleave3`: three vector loads, two shuffles, one store."""

    def codegen(self, context, builder, signature, args):
        out, out_at, a, b, c, at = args
        ty = signature.args
        self._types(builder)
        n, i32 = self.lanes, ir.IntType(32)

        def load(k, value):
            data = context.make_array(ty[k])(context, builder, value).data
            ptr = builder.bitcast(builder.gep(data, [at]), self.vt.as_pointer())
            return builder.load(ptr, align=8 if self.double else 4)

        def indices(values):
            return ir.Constant(ir.VectorType(i32, len(values)), values)

        first, second, third = load(2, a), load(3, b), load(4, c)
        both = builder.shuffle_vector(first, second, indices(list(range(2 * n))))
        third = builder.shuffle_vector(third, third, indices([*range(n), *range(n)]))
        pixels = builder.shuffle_vector(both, third, indices(
            [k * n + p for p in range(n) for k in range(3)]))
        data = context.make_array(ty[0])(context, builder, out).data
        ptr = builder.bitcast(builder.gep(data, [out_at]),
                              ir.VectorType(self.ft, 3 * n).as_pointer())
        builder.store(pixels, ptr, align=8 if self.double else 4)
        return context.get_dummy_value()


@intrinsic
def interleave3(typingctx, out, out_at, a, b, c, at):
    """``out[out_at + 3 i + k]`` = the ``k``-th of ``a``, ``b``, ``c`` at ``at + i``, for
    the ``i`` of one vector (:func:`lanes`): three planes' runs of pixels as the pixels'
    three channels, in vector loads, shuffles and stores (a loop of scalars would write
    every third value). The four arrays are 1-D and contiguous where read and written."""
    i = types.int64
    sig = types.void(out, i, a, b, c, i)
    return sig, _Interleave3(np.dtype(a.dtype.name), 1).codegen


@intrinsic
def depthwise_row(typingctx, x, x_at, row_step, col_step, dil_step, w, c0, channels, bias,
                  out, out_at, out_step, count, kind, lo, hi, alpha, beta):
    """One row of a 3x3 depthwise convolution over :func:`depthwise_block` channels (see
    :class:`_DepthwiseRow`)."""
    dtype = np.dtype(x.dtype.name)
    i = types.int64
    scalar = x.dtype
    sig = types.void(x, i, i, i, i, w, i, i, bias, out, i, i, i, i, scalar, scalar, scalar,
                     scalar)
    return sig, _ByBlockWidth(_DepthwiseRow, dtype).codegen


@intrinsic
def depthwise_taps_row(typingctx, x, x_at, row_step, col_step, dil_step, w, c0, channels, bias,
                       out, out_at, out_step, count, kh, kw, kind, lo, hi, alpha, beta):
    """One row of a ``kh`` x ``kw`` depthwise convolution over :func:`depthwise_block`
    channels (see :class:`_DepthwiseRowTaps`)."""
    i = types.int64
    scalar = x.dtype
    sig = types.void(x, i, i, i, i, w, i, i, bias, out, i, i, i, i, i, i, scalar, scalar,
                     scalar, scalar)
    builder = _DepthwiseRowTaps(np.dtype(x.dtype.name), tuning.DEPTHWISE_VECTORS[vector_bits()])
    return sig, builder.codegen


@functools.lru_cache(maxsize=None)
def _builder(mr: int, nr: int, dtype_name: str, vectors: int | None = None) -> _Tile:
    return _Tile(mr, nr, dtype_name, vectors)


def tile_function(rows: int | None = None, wide: bool = False, vectors: int | None = None):
    """A Numba intrinsic computing one tile (see the module docstring for its arguments) of
    ``rows`` pixels, or of the dtype's full ``MR`` when None, by the dtype's ``NR`` channels
    (only the first ``vectors`` vectors of them, where given); the dtype is ``x``'s, and
    :func:`tile_shape` (``wide`` or not) gives ``MR`` and ``NR``."""

    @intrinsic
    def tile(typingctx, x, rows_, m0, m_valid, x_shift, taps, n_taps, c_in, c_lo, c_hi, w,
             w_at, out, out_rows, n_shift, n_valid, start, finish, bias, has_bias, kind, lo, hi,
             alpha, beta, res, res_rows, res_mode):
        dtype = np.dtype(x.dtype.name)
        full, nr = tile_shape(dtype, wide)
        mr = full if rows is None else min(rows, full)
        scalar = x.dtype
        i = types.int64
        b = types.boolean
        sig = types.void(x, rows_, i, i, i, taps, i, i, i, i, w, i, out, out_rows, i, i, b, b,
                         bias, b, i, scalar, scalar, scalar, scalar, res, res_rows, i)
        return sig, _builder(mr, nr, dtype.name, vectors).codegen

    tile.__name__ = (f"tile_{rows or 'full'}{'_wide' if wide else ''}"
                     f"{f'_{vectors}v' if vectors else ''}")
    return tile


#: The tile functions the kernels call: the full tile, and narrower ones for the last pixels
#: of a layer (and a linear layer's batch of one), which would otherwise repeat a pixel; and
#: the same for the wide tile (fewer pixels, more channels), for layers of few channels.
tile_full, tile_4, tile_2, tile_1 = (tile_function(r) for r in (None, 4, 2, 1))
wide_full, wide_4, wide_2, wide_1 = (tile_function(r, True) for r in (None, 4, 2, 1))
#: Full tiles of a panel whose channels end in fewer vectors than the panel's: the narrow
#: tile's first of its two, the wide tile's first one, two or three of its three or four.
tile_full_1v = tile_function(None, False, 1)
wide_full_1v, wide_full_2v, wide_full_3v = (tile_function(None, True, v) for v in (1, 2, 3))
