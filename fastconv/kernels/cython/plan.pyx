# cython: language_level=3
"""The network plan's kernels, AOT-compiled: the Cython executor's twins of
``fastconv.kernels.numba.nhwc``, taking the same arguments in the same order.

Each kernel here builds a step: its arguments checked (dtypes, layouts, and every offset
table and window against its buffer's size) and stored in a C struct, once, when an arena is
made. :class:`Program` then runs a plan's steps in one OpenMP parallel region per call, a
barrier between steps (``_plan_kernels.h``); the GIL is dropped only for that. The kernels
themselves are C (``_plan_kernels_t.h``), for GCC's vector extensions in the GEMM tiles.
"""

from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

import numpy as np

from ... import config
from .. import tuning

cimport numpy as cnp

cnp.import_array()

ctypedef int64_t i64


cdef extern from "_plan_kernels.h" nogil:
    int FC_MAX_MR
    int FC_MAX_NV
    enum:
        FC_ACT_NONE
        FC_ACT_CLAMP
        FC_ACT_LEAKY
        FC_ACT_HARDSIGMOID
        FC_ACT_HARDSWISH
        FC_ACT_SIGMOID
        FC_ACT_SILU
        FC_ACT_TANH
        FC_ACT_MISH
        FC_ACT_GELU
        FC_ACT_GELU_TANH
        FC_ACT_EXP
    enum:
        FC_BINARY_ADD
        FC_BINARY_MUL
        FC_BINARY_SUB
        FC_BINARY_DIV
        FC_BINARY_SUB_FROM
        FC_BINARY_DIV_INTO
        FC_BINARY_PRELU

    ctypedef void (*fc_task)(const void *args, i64 task, i64 tasks) noexcept nogil

    ctypedef struct fc_epi:
        i64 kind
        double lo, hi, alpha, beta

    ctypedef struct fc_border:
        i64 n, rows, cols, channels, top, bottom, left, right

    ctypedef struct fc_gemm:
        const void *w
        i64 panel, panels, mr, nr, prefetch
        int wide, has_bias, res_mode
        const void *bias
        fc_epi epi
        const void *res
        const i64 *res_rows

    ctypedef struct fc_from_nchw_args:
        void *x
        i64 sn, sc, sh, sw, n, c, h, w
        void *out
        i64 top, left
        fc_border border

    ctypedef struct fc_to_output_args:
        const void *src
        i64 rows, cols, channels, top, left
        void *out
        i64 n, c, h, w
        int flat

    ctypedef struct fc_zero_border_args:
        void *buf
        fc_border border

    ctypedef struct fc_affine_args:
        const void *x
        i64 rows, cols, channels, top, left
        const void *scale
        const void *shift
        int has_affine
        void *out
        i64 out_rows, out_cols, out_top, out_left, n, height, width
        fc_epi epi

    ctypedef struct fc_binary_args:
        const void *a
        i64 a_rows, a_cols, channels, a_top, a_left
        const void *b
        i64 b_rows, b_cols, b_top, b_left
        int b_pixels, op
        void *out
        i64 out_rows, out_cols, out_top, out_left, n, height, width
        fc_epi epi

    ctypedef struct fc_copy_args:
        const void *x
        i64 rows, cols, channels, top, left, x_c0, count
        void *out
        i64 out_rows, out_cols, total, out_top, out_left, c0, n, height, width, sh, sw
        i64 phase_step, row_step, col_step

    ctypedef struct fc_gather_args:
        const void *x
        const i64 *rows
        i64 c_step
        void *out
        const i64 *out_rows
        i64 pixels, channels

    ctypedef struct fc_resize_args:
        const void *x
        i64 rows, cols, channels, top, left, n
        void *out
        i64 out_rows, out_cols, out_top, out_left, ho, wo
        const i64 *rows0
        const i64 *rows1
        const i64 *cols0
        const i64 *cols1
        const void *row_w
        const void *col_w

    ctypedef struct fc_flatten_args:
        const void *src
        i64 rows, cols, channels, top, left, n, height, width
        void *out

    ctypedef struct fc_pool_args:
        const void *x
        i64 rows, cols, channels, top, left, n, height, width
        void *out
        i64 out_rows, out_cols, out_top, out_left, ho, wo
        i64 kh, kw, sh, sw, ph, pw, dh, dw
        i64 pad_bottom, pad_right, count_include_pad, divisor
        int average

    ctypedef struct fc_gap_args:
        const void *x
        i64 rows, cols, channels, top, left, n, height, width, maximum
        void *out
        i64 out_rows, out_cols, out_top, out_left

    ctypedef struct fc_se_args:
        const void *x
        i64 rows, cols, channels, top, left, n, height, width
        const void *w1
        const void *b1
        i64 squeeze
        fc_epi s_epi
        const void *w2
        const void *b2
        fc_epi epi
        void *out
        i64 out_rows, out_cols, out_top, out_left
        void *scratch
        i64 scratch_pitch

    ctypedef struct fc_depthwise_args:
        const void *x
        i64 rows, cols, c_in, top, left
        const void *w
        i64 kh, kw, multiplier
        const void *bias
        void *out
        i64 out_rows, out_cols, channels, out_top, out_left, n, ho, wo
        i64 sh, sw, dh, dw, block
        fc_epi epi
        fc_border border

    ctypedef struct fc_conv_args:
        const void *x
        const i64 *rows
        i64 pixels
        const i64 *taps
        i64 n_taps, c_in, groups
        fc_gemm g
        void *out
        const i64 *out_rows
        i64 out_per_group, tile_groups, unit_groups, block, chunk
        fc_border border

    ctypedef struct fc_separable_args:
        const void *x
        i64 rows, cols, channels, top, left, n
        const void *dw_w
        const void *dw_bias
        fc_epi dw_epi
        i64 sh, sw, dh, dw, ho, wo, block
        int expanded
        i64 height, width
        const i64 *e_rows
        fc_gemm e
        i64 e_channels
        void *slab
        i64 slab_pitch
        const i64 *slab_rows
        fc_gemm g
        void *out
        const i64 *out_rows
        i64 out_channels
        void *scratch
        i64 scratch_pitch
        const i64 *s_rows
        i64 rows_per_step
        fc_border border

    ctypedef struct fc_winograd_args:
        const void *x
        i64 rows, cols, channels, top, left, n
        fc_gemm g
        void *out
        i64 out_rows, out_cols, out_channels, out_top, out_left, ho, wo
        const void *res
        i64 res_rows, res_cols, res_pitch, res_top, res_left, res_channel
        void *v
        void *m
        i64 v_pitch, m_pitch
        const i64 *v_rows
        const i64 *m_rows
        i64 block
        fc_border border

    void fc_run(const fc_task *runs, const void *const *args, const i64 *tasks, i64 n,
                int threads, double *times)
    void fc_pool_set_spin(double seconds)

    # one vector width's kernels (_plan_kernels.h's FC_KERNELS, for float32 and float64)
    ctypedef struct fc_kernel_table:
        const char *isa
        int vector_bits, dw_vectors
        fc_task conv_f, conv_d
        fc_task depthwise_3x3_f, depthwise_3x3_d
        fc_task depthwise_f, depthwise_d
        fc_task separable_f, separable_d
        fc_task expanded_separable_f, expanded_separable_d
        fc_task winograd_f, winograd_d
        fc_task pool_f, pool_d
        fc_task global_average_f, global_average_d
        fc_task squeeze_excite_f, squeeze_excite_d
        fc_task from_nchw_f, from_nchw_d
        fc_task to_output_f, to_output_d
        fc_task zero_border_f, zero_border_d
        fc_task affine_f, affine_d
        fc_task binary_f, binary_d
        fc_task copy_channels_f, copy_channels_d
        fc_task gather_f, gather_d
        fc_task resize_f, resize_d
        fc_task softmax_f, softmax_d
        fc_task flatten_f, flatten_d

    const fc_kernel_table *fc_select_kernels(int max_bits)

IF OPENMP:
    cdef extern from "omp.h" nogil:
        int omp_get_max_threads()

# The kernels of the widest vectors this CPU runs (at most FASTCONV_ISA's, see config)
cdef const fc_kernel_table *K = fc_select_kernels(config.ISA_BITS)
#: The instruction set of the kernels chosen for this CPU: "avx512", "avx2" or "sse2".
ISA = K.isa.decode()
#: The width of their vector registers, in bits.
VECTOR_BITS = K.vector_bits
#: Vectors per block of the depthwise rows' register path (``tuning.DEPTHWISE_VECTORS``).
DEPTHWISE_VECTORS = K.dw_vectors


def max_threads():
    """OpenMP's thread count for a region (``OMP_NUM_THREADS``, else the cores); 1 when the
    extension was built without OpenMP."""
    IF OPENMP:
        return omp_get_max_threads()
    ELSE:
        return 1


# --- the arguments' checks, before any step is built ------------------------------------------


def _is_shape(value) -> bool:
    """Whether ``value`` is one shape (a sequence of ints), not a list of shapes."""
    return all(isinstance(d, (int, np.integer)) for d in value)


cdef void *_data(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def _array(name, a, dtype, writes=False):
    """``a`` an ndarray of ``dtype``, C-contiguous (and writeable, where a kernel writes)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, but got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"expected {name} of dtype {np.dtype(dtype)}, but got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writes and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return a


def _buffer(name, a, dtype, writes=False):
    """A 4-D NHWC buffer."""
    _array(name, a, dtype, writes)
    if a.ndim != 4:
        raise ValueError(f"expected {name} to be a 4-D buffer (N, H, W, C), but got size "
                         f"{list(a.shape)}")
    return a


def _table(name, t, lo, hi, size, count=None):
    """An offset table: every ``t[i] + lo`` to ``t[i] + hi`` (exclusive) inside ``size``
    elements, at least ``count`` entries."""
    _array(name, t, np.int64)
    if t.ndim != 1 or (count is not None and t.shape[0] < count):
        raise ValueError(f"expected {name} to be 1-D with at least {count} entries, but got "
                         f"size {list(t.shape)}")
    if t.shape[0] and (int(t.min()) + lo < 0 or int(t.max()) + hi > size):
        raise ValueError(f"{name} addresses elements outside [0, {size}): from "
                         f"{int(t.min()) + lo} to {int(t.max()) + hi}")
    return t


def _exactly(name, t, expected):
    """An offset table the kernel's own loops keep in bounds only if it is exactly this."""
    _array(name, t, np.int64)
    if t.shape != expected.shape or not np.array_equal(t, expected):
        raise ValueError(f"{name} is not the table this kernel expects")


def _window(name, buf, top, left, height, width, channels=None):
    """Rows ``top`` to ``top + height`` and columns ``left`` to ``left + width`` inside
    ``buf`` (and ``channels`` at most its own)."""
    if (top < 0 or left < 0 or top + height > buf.shape[1] or left + width > buf.shape[2]
            or (channels is not None and channels > buf.shape[3])):
        raise ValueError(f"{name} of size {list(buf.shape)} does not hold {height}x{width} "
                         f"pixels from ({top}, {left})"
                         + ("" if channels is None else f" of {channels} channels"))


def _positive(**values):
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, but got {value}")


#: The activations' numbers in the C kernels (``FC_ACT_*``), by name.
ACTIVATIONS = {"none": FC_ACT_NONE, "clamp": FC_ACT_CLAMP, "leaky": FC_ACT_LEAKY,
               "hardsigmoid": FC_ACT_HARDSIGMOID, "hardswish": FC_ACT_HARDSWISH,
               "sigmoid": FC_ACT_SIGMOID, "silu": FC_ACT_SILU, "tanh": FC_ACT_TANH,
               "mish": FC_ACT_MISH, "gelu": FC_ACT_GELU, "gelu_tanh": FC_ACT_GELU_TANH,
               "exp": FC_ACT_EXP}

#: The element-wise operations' numbers in the C kernels (``FC_BINARY_*``), by name.
BINARY_OPS = {"add": FC_BINARY_ADD, "mul": FC_BINARY_MUL, "sub": FC_BINARY_SUB,
              "div": FC_BINARY_DIV, "sub_from": FC_BINARY_SUB_FROM,
              "div_into": FC_BINARY_DIV_INTO, "prelu": FC_BINARY_PRELU}


cdef fc_epi _epi(kind, lo, hi, alpha, beta):
    if kind not in ACTIVATIONS.values():
        raise ValueError(f"unknown activation kind {kind}")
    cdef fc_epi e
    e.kind, e.lo, e.hi, e.alpha, e.beta = kind, lo, hi, alpha, beta
    return e


cdef fc_border _border(name, buf, border):
    """``border`` (N, Hb, Wb, C, top, bottom, left, right) must describe ``buf`` (flat or 4-D)."""
    b = [int(v) for v in border]
    if len(b) != 8 or min(b) < 0 or b[0] * b[1] * b[2] * b[3] != buf.size or (
            b[4] + b[5] > b[1] or b[6] + b[7] > b[2]):
        raise ValueError(f"the border {b} does not describe {name} of {buf.size} elements")
    cdef fc_border r
    r.n, r.rows, r.cols, r.channels, r.top, r.bottom, r.left, r.right = b
    return r


cdef fc_gemm _gemm(w, panel, panels, out_channels, k, bias, has_bias, kind, lo, hi, alpha,
                   beta, res, res_rows, res_mode, wide, mr, nr, dtype, rows_count,
                   groups=1) except *:
    """The tiles' weights (``panels`` of ``panel`` elements per group, ``k`` rows of ``nr``
    each), bias and epilogue; ``res_rows`` must have ``rows_count`` entries."""
    lanes = K.vector_bits // (8 * np.dtype(dtype).itemsize)
    if not (1 <= mr <= FC_MAX_MR and nr >= lanes and nr % lanes == 0
            and nr // lanes <= FC_MAX_NV):
        raise ValueError(f"a {mr}x{nr} tile is not one these kernels were compiled for")
    _array("w", w, dtype)
    if panel != k * nr or w.size < groups * panels * panel:
        raise ValueError(f"the packed weights ({w.size} elements) are not {groups * panels} "
                         f"panels of {k} x {nr}")
    _array("bias", bias, dtype)
    if has_bias and bias.size < out_channels:
        raise ValueError(f"expected a bias of {out_channels} channels, but got {bias.size}")
    if res_mode not in (0, 1, 2):
        raise ValueError(f"res_mode must be 0, 1 or 2, but got {res_mode}")
    cdef fc_gemm g
    memset(&g, 0, sizeof(g))
    g.w, g.panel, g.panels, g.mr, g.nr = _data(w), panel, panels, mr, nr
    g.prefetch = tuning.GEMM_PREFETCH
    g.wide, g.has_bias, g.res_mode = bool(wide), bool(has_bias), res_mode
    g.bias = _data(bias)
    g.epi = _epi(kind, lo, hi, alpha, beta)
    if res_mode:
        _array("res", res, dtype)
        _table("res_rows", res_rows, 0, out_channels, res.size, rows_count)
        g.res, g.res_rows = _data(res), <const i64 *>_data(res_rows)
    return g


# --- steps ------------------------------------------------------------------------------------


cdef class Step:
    """One kernel call of a plan, its arguments in a C struct."""

    cdef void *args
    cdef fc_task run
    cdef readonly i64 tasks
    cdef readonly str kernel
    cdef list keep  # the arrays its pointers point into

    def __dealloc__(self):
        free(self.args)

    def __repr__(self):
        return f"<plan step {self.kernel}, {self.tasks} tasks>"


cdef Step _step(str kernel, size_t size, fc_task run_f, fc_task run_d, dtype, tasks, list keep):
    if tasks < 1:
        raise ValueError(f"{kernel}: tasks must be at least 1, but got {tasks}")
    cdef Step s = Step.__new__(Step)
    s.args = calloc(1, size)
    if s.args == NULL:
        raise MemoryError()
    s.kernel, s.tasks, s.keep = kernel, tasks, keep
    if np.dtype(dtype) == np.float64:
        s.run = run_d
    elif np.dtype(dtype) == np.float32:
        s.run = run_f
    else:
        raise TypeError(f"expected float32 or float64, but got {np.dtype(dtype)}")
    return s


def from_nchw(x, out, top, left, border, tasks):
    """The input step: NCHW ``x`` (given on each call, :meth:`Program.run`) into ``out``'s
    interior from (top, left), its border zeroed."""
    dtype = out.dtype
    _buffer("out", out, dtype, True)
    cdef Step s = _step("from_nchw", sizeof(fc_from_nchw_args), K.from_nchw_f,
                        K.from_nchw_d, dtype, tasks, [out])
    cdef fc_from_nchw_args *a = <fc_from_nchw_args *>s.args
    a.out, a.top, a.left = _data(out), top, left
    a.border = _border("out", out, border)
    a.n, a.h, a.w, a.c = out.shape[0], out.shape[1] - border[4] - border[5], (
        out.shape[2] - border[6] - border[7]), out.shape[3]
    return s


def to_output(src, top, left, shape, flat, tasks):
    """The output step: ``src``'s interior from (top, left) into the caller's new array of
    ``shape`` (NCHW, or (N, C) when ``flat``), given on each call."""
    _buffer("src", src, src.dtype)
    n, c = shape[0], shape[1]
    h, w = (1, 1) if flat else shape[2:]
    _window("src", src, top, left, h, w, c)
    if src.shape[3] != c:
        raise ValueError(f"expected src of {c} channels, but got {src.shape[3]}")
    cdef Step s = _step("to_output", sizeof(fc_to_output_args), K.to_output_f,
                        K.to_output_d, src.dtype, tasks, [src])
    cdef fc_to_output_args *a = <fc_to_output_args *>s.args
    a.src, a.rows, a.cols, a.channels, a.top, a.left = (_data(src), src.shape[1], src.shape[2],
                                                          src.shape[3], top, left)
    a.n, a.c, a.h, a.w, a.flat = n, c, h, w, bool(flat)
    return s


def zero_border(buf, border, tasks):
    _array("buf", buf, buf.dtype, True)
    cdef Step s = _step("zero_border", sizeof(fc_zero_border_args), K.zero_border_f,
                        K.zero_border_d, buf.dtype, tasks, [buf])
    cdef fc_zero_border_args *a = <fc_zero_border_args *>s.args
    a.buf, a.border = _data(buf), _border("buf", buf, border)
    return s


def affine(x, top, left, scale, shift, has_affine, out, out_top, out_left, height, width,
           kind, lo, hi, alpha, beta, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    channels = x.shape[3]
    _window("x", x, top, left, height, width, channels)
    _window("out", out, out_top, out_left, height, width, channels)
    if out.shape[3] != channels or x.shape[0] != out.shape[0]:
        raise ValueError(f"affine: x of size {list(x.shape)} and out of size "
                         f"{list(out.shape)} differ in batch or channels")
    _array("scale", scale, dtype)
    _array("shift", shift, dtype)
    if has_affine and (scale.size < channels or shift.size < channels):
        raise ValueError(f"expected scale and shift of {channels} channels")
    cdef Step s = _step("affine", sizeof(fc_affine_args), K.affine_f, K.affine_d,
                        dtype, tasks, [x, out, scale, shift])
    cdef fc_affine_args *a = <fc_affine_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        channels, top, left)
    a.scale, a.shift, a.has_affine = _data(scale), _data(shift), bool(has_affine)
    a.out, a.out_rows, a.out_cols, a.out_top, a.out_left = (_data(out), out.shape[1],
                                                              out.shape[2], out_top, out_left)
    a.n, a.height, a.width = x.shape[0], height, width
    a.epi = _epi(kind, lo, hi, alpha, beta)
    return s


def binary(a, a_top, a_left, b, b_top, b_left, b_pixels, op, out, out_top, out_left, height,
           width, kind, lo, hi, alpha, beta, tasks):
    dtype = out.dtype
    if op not in BINARY_OPS.values():
        raise ValueError(f"binary: unknown operation {op}")
    _buffer("a", a, dtype)
    _buffer("b", b, dtype)
    _buffer("out", out, dtype, True)
    channels = a.shape[3]
    _window("a", a, a_top, a_left, height, width, channels)
    _window("b", b, b_top, b_left, height if b_pixels else 1, width if b_pixels else 1,
            channels)
    _window("out", out, out_top, out_left, height, width, channels)
    if b.shape[3] != channels or out.shape[3] != channels or not (
            a.shape[0] == b.shape[0] == out.shape[0]):
        raise ValueError(f"binary: a {list(a.shape)}, b {list(b.shape)} and out "
                         f"{list(out.shape)} differ in batch or channels")
    cdef Step s = _step("binary", sizeof(fc_binary_args), K.binary_f, K.binary_d,
                        dtype, tasks, [a, b, out])
    cdef fc_binary_args *r = <fc_binary_args *>s.args
    r.a, r.a_rows, r.a_cols, r.channels, r.a_top, r.a_left = (_data(a), a.shape[1], a.shape[2],
                                                              channels, a_top, a_left)
    r.b, r.b_rows, r.b_cols, r.b_top, r.b_left = _data(b), b.shape[1], b.shape[2], b_top, b_left
    r.b_pixels, r.op = bool(b_pixels), op
    r.out, r.out_rows, r.out_cols, r.out_top, r.out_left = (_data(out), out.shape[1],
                                                            out.shape[2], out_top, out_left)
    r.n, r.height, r.width = a.shape[0], height, width
    r.epi = _epi(kind, lo, hi, alpha, beta)
    return s


def copy_channels(x, top, left, x_c0, count, out, out_top, out_left, c0, height, width, sh,
                  sw, phase_step, row_step, col_step, tasks):
    """Channels ``x_c0`` to ``x_c0 + count`` of ``x``'s window of ``height`` x ``width`` into
    ``out`` from channel ``c0``, each pixel repeated ``sh`` x ``sw`` times (a nearest
    upsampling; 1 x 1 copies), output phase (i, j) reading ``(i * sw + j) * phase_step``
    channels further (a depth-to-space)."""
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    if sh < 1 or sw < 1 or row_step < 1 or col_step < 1:
        raise ValueError(f"copy_channels: factors and steps must be positive, but got {sh} x "
                         f"{sw} and {row_step} x {col_step}")
    _window("x", x, top, left, (height - 1) * row_step + 1, (width - 1) * col_step + 1)
    _window("out", out, out_top, out_left, height * sh, width * sw)
    last = x_c0 + (sh * sw - 1) * phase_step + count  # past the last phase's channels
    if (c0 < 0 or x_c0 < 0 or count < 0 or phase_step < 0 or last > x.shape[3]
            or c0 + count > out.shape[3] or x.shape[0] != out.shape[0]):
        raise ValueError(f"copy_channels: channels {x_c0} to {last} of x of size "
                         f"{list(x.shape)} do not fit out of size {list(out.shape)} from "
                         f"channel {c0}")
    cdef Step s = _step("copy_channels", sizeof(fc_copy_args), K.copy_channels_f,
                        K.copy_channels_d, dtype, tasks, [x, out])
    cdef fc_copy_args *a = <fc_copy_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        x.shape[3], top, left)
    a.x_c0, a.count = x_c0, count
    a.out, a.out_rows, a.out_cols, a.total = _data(out), out.shape[1], out.shape[2], out.shape[3]
    a.out_top, a.out_left, a.c0 = out_top, out_left, c0
    a.n, a.height, a.width, a.sh, a.sw = x.shape[0], height, width, sh, sw
    a.phase_step, a.row_step, a.col_step = phase_step, row_step, col_step
    return s


def gather(x, rows, c_step, out, out_rows, channels, tasks):
    """``out[out_rows[p] + c] = x[rows[p] + c * c_step]`` (``nhwc.layout.gather``), ``x``
    and ``out`` flat, every table entry checked against its array's size."""
    dtype = out.dtype
    _array("x", x, dtype)
    _array("out", out, dtype, True)
    if channels < 1 or c_step < 0:
        raise ValueError(f"gather: channels must be positive and c_step not negative, but got "
                         f"{channels} and {c_step}")
    _table("out_rows", out_rows, 0, channels, out.size)
    _table("rows", rows, 0, (channels - 1) * c_step + 1, x.size, out_rows.shape[0])
    cdef Step s = _step("gather", sizeof(fc_gather_args), K.gather_f, K.gather_d, dtype, tasks,
                        [x, out, rows, out_rows])
    cdef fc_gather_args *a = <fc_gather_args *>s.args
    a.x, a.rows, a.c_step = _data(x), <const i64 *>_data(rows), c_step
    a.out, a.out_rows = _data(out), <const i64 *>_data(out_rows)
    a.pixels, a.channels = out_rows.shape[0], channels
    return s


def softmax(x, top, left, height, width, out, out_top, out_left, tasks):
    """The softmax over each pixel's channels (``nhwc.layout.softmax``)."""
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    _window("x", x, top, left, height, width)
    _window("out", out, out_top, out_left, height, width)
    if out.shape[3] != x.shape[3] or x.shape[0] != out.shape[0]:
        raise ValueError(f"softmax: x of size {list(x.shape)} and out of size "
                         f"{list(out.shape)} differ in batch or channels")
    cdef Step s = _step("softmax", sizeof(fc_gap_args), K.softmax_f, K.softmax_d, dtype, tasks,
                        [x, out])
    cdef fc_gap_args *a = <fc_gap_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        x.shape[3], top, left)
    a.n, a.height, a.width, a.maximum = x.shape[0], height, width, 0
    a.out, a.out_rows, a.out_cols, a.out_top, a.out_left = (_data(out), out.shape[1],
                                                              out.shape[2], out_top, out_left)
    return s


def resize(x, top, left, height, width, out, out_top, out_left, rows0, rows1, row_w, cols0,
           cols1, col_w, tasks):
    """ONNX's Resize through per-axis tables (``nhwc.layout.resize``)."""
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    for name, table in (("rows0", rows0), ("rows1", rows1), ("cols0", cols0), ("cols1", cols1)):
        _array(name, table, np.int64)
    _array("row_w", row_w, dtype)
    _array("col_w", col_w, dtype)
    ho, wo = rows0.size, cols0.size
    if (rows1.size != ho or row_w.size != ho or cols1.size != wo or col_w.size != wo
            or x.shape[3] != out.shape[3] or x.shape[0] != out.shape[0]):
        raise ValueError(f"resize: tables of {ho} rows and {wo} columns, x of size "
                         f"{list(x.shape)} and out of size {list(out.shape)} disagree")
    for name, table, limit in (("rows0", rows0, height), ("rows1", rows1, height),
                               ("cols0", cols0, width), ("cols1", cols1, width)):
        if table.size and (table.min() < 0 or table.max() >= limit):
            raise ValueError(f"resize: {name} reaches outside the input's {limit} "
                             f"{'rows' if name.startswith('rows') else 'columns'}")
    _window("x", x, top, left, height, width)
    _window("out", out, out_top, out_left, ho, wo)
    cdef Step s = _step("resize", sizeof(fc_resize_args), K.resize_f, K.resize_d, dtype, tasks,
                        [x, out, rows0, rows1, row_w, cols0, cols1, col_w])
    cdef fc_resize_args *a = <fc_resize_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        x.shape[3], top, left)
    a.n = x.shape[0]
    a.out, a.out_rows, a.out_cols, a.out_top, a.out_left = (_data(out), out.shape[1],
                                                              out.shape[2], out_top, out_left)
    a.ho, a.wo = ho, wo
    a.rows0, a.rows1 = <const i64 *>_data(rows0), <const i64 *>_data(rows1)
    a.cols0, a.cols1 = <const i64 *>_data(cols0), <const i64 *>_data(cols1)
    a.row_w, a.col_w = _data(row_w), _data(col_w)
    return s


def flatten(src, top, left, out, channels, height, width, tasks):
    dtype = out.dtype
    _buffer("src", src, dtype)
    _array("out", out, dtype, True)
    _window("src", src, top, left, height, width, channels)
    if src.shape[3] != channels or out.size < src.shape[0] * channels * height * width:
        raise ValueError(f"flatten: out of {out.size} elements does not hold src of size "
                         f"{list(src.shape)}")
    cdef Step s = _step("flatten", sizeof(fc_flatten_args), K.flatten_f,
                        K.flatten_d, dtype, tasks, [src, out])
    cdef fc_flatten_args *a = <fc_flatten_args *>s.args
    a.src, a.rows, a.cols, a.channels, a.top, a.left = (_data(src), src.shape[1], src.shape[2],
                                                          channels, top, left)
    a.n, a.height, a.width, a.out = src.shape[0], height, width, _data(out)
    return s


cdef Step _pool(str kernel, x, top, left, height, width, out, out_top, out_left, ho, wo, kh,
                kw, sh, sw, ph, pw, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    _window("x", x, top, left, height, width, out.shape[3])
    _window("out", out, out_top, out_left, ho, wo, x.shape[3])
    _positive(kh=kh, kw=kw, sh=sh, sw=sw)
    cdef Step s = _step(kernel, sizeof(fc_pool_args), K.pool_f, K.pool_d, dtype,
                        tasks, [x, out])
    cdef fc_pool_args *a = <fc_pool_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        x.shape[3], top, left)
    a.n, a.height, a.width = x.shape[0], height, width
    a.out, a.out_rows, a.out_cols, a.out_top, a.out_left = (_data(out), out.shape[1],
                                                              out.shape[2], out_top, out_left)
    a.ho, a.wo, a.kh, a.kw, a.sh, a.sw, a.ph, a.pw = ho, wo, kh, kw, sh, sw, ph, pw
    return s


def max_pool(x, top, left, height, width, out, out_top, out_left, ho, wo, kh, kw, sh, sw, ph,
             pw, dh, dw, tasks):
    cdef Step s = _pool("max_pool", x, top, left, height, width, out, out_top, out_left, ho,
                        wo, kh, kw, sh, sw, ph, pw, tasks)
    _positive(dh=dh, dw=dw)
    cdef fc_pool_args *a = <fc_pool_args *>s.args
    a.dh, a.dw, a.average = dh, dw, 0
    return s


def avg_pool(x, top, left, height, width, out, out_top, out_left, ho, wo, kh, kw, sh, sw, ph,
             pw, pad_bottom, pad_right, count_include_pad, divisor, tasks):
    cdef Step s = _pool("avg_pool", x, top, left, height, width, out, out_top, out_left, ho,
                        wo, kh, kw, sh, sw, ph, pw, tasks)
    cdef fc_pool_args *a = <fc_pool_args *>s.args
    a.pad_bottom, a.pad_right = pad_bottom, pad_right
    a.count_include_pad, a.divisor, a.average = bool(count_include_pad), divisor, 1
    return s


def squeeze_excite(x, top, left, height, width, w1, b1, s_kind, s_lo, s_hi, s_alpha, s_beta,
                   w2, b2, kind, lo, hi, alpha, beta, out, out_top, out_left, scratch, tasks):
    """Squeeze-and-excitation as one step (``nhwc.squeeze_excite``): ``w1`` and ``w2`` both
    (S, C), ``scratch`` (tasks, 2 C + S)."""
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    for name, array in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        _array(name, array, dtype)
    _array("scratch", scratch, dtype, True)
    channels = x.shape[3]
    squeeze = w1.shape[0] if w1.ndim == 2 else 0
    if (w1.ndim != 2 or w1.shape[1] != channels or w2.ndim != 2 or w2.shape[0] != squeeze
            or w2.shape[1] != channels or b1.size < squeeze or b2.size < channels
            or out.shape[3] != channels or x.shape[0] != out.shape[0]):
        raise ValueError(f"squeeze_excite: x of size {list(x.shape)}, w1 {list(w1.shape)}, b1 "
                         f"{list(b1.shape)}, w2 {list(w2.shape)}, b2 {list(b2.shape)} and out of "
                         f"size {list(out.shape)} disagree")
    if scratch.ndim != 2 or scratch.shape[0] < tasks or scratch.shape[1] < 2 * channels + squeeze:
        raise ValueError(f"expected scratch of at least ({tasks}, {2 * channels + squeeze}), but "
                         f"got {list(scratch.shape)}")
    _window("x", x, top, left, height, width)
    _window("out", out, out_top, out_left, height, width)
    cdef Step s = _step("squeeze_excite", sizeof(fc_se_args), K.squeeze_excite_f,
                        K.squeeze_excite_d, dtype, tasks, [x, w1, b1, w2, b2, out, scratch])
    cdef fc_se_args *a = <fc_se_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        channels, top, left)
    a.n, a.height, a.width = x.shape[0], height, width
    a.w1, a.b1, a.squeeze, a.w2, a.b2 = _data(w1), _data(b1), squeeze, _data(w2), _data(b2)
    a.s_epi = _epi(s_kind, s_lo, s_hi, s_alpha, s_beta)
    a.epi = _epi(kind, lo, hi, alpha, beta)
    a.out, a.out_rows, a.out_cols, a.out_top, a.out_left = (_data(out), out.shape[1],
                                                              out.shape[2], out_top, out_left)
    a.scratch, a.scratch_pitch = _data(scratch), scratch.shape[1]
    return s


def global_average(x, top, left, height, width, maximum, out, out_top, out_left, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    _window("x", x, top, left, height, width)
    _window("out", out, out_top, out_left, 1, 1, x.shape[3])
    if out.shape[3] != x.shape[3] or x.shape[0] != out.shape[0]:
        raise ValueError(f"global_average: x of size {list(x.shape)} and out of size "
                         f"{list(out.shape)} differ in batch or channels")
    # a task per image and share of the channels
    cdef Step s = _step("global_average", sizeof(fc_gap_args), K.global_average_f,
                        K.global_average_d, dtype, max(1, x.shape[0]) * tasks, [x, out])
    cdef fc_gap_args *a = <fc_gap_args *>s.args
    a.x, a.rows, a.cols, a.channels, a.top, a.left = (_data(x), x.shape[1], x.shape[2],
                                                        x.shape[3], top, left)
    a.n, a.height, a.width, a.maximum = x.shape[0], height, width, bool(maximum)
    a.out, a.out_rows, a.out_cols, a.out_top, a.out_left = (_data(out), out.shape[1],
                                                              out.shape[2], out_top, out_left)
    return s


cdef Step _depthwise(str kernel, fc_task run_f, fc_task run_d, x, top, left, w, kh, kw,
                     multiplier, bias, out, out_top, out_left, ho, wo, sh, sw, dh, dw, kind,
                     lo, hi, alpha, beta, block, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    _array("w", w, dtype)
    _array("bias", bias, dtype)
    channels = out.shape[3]
    _positive(kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, multiplier=multiplier, block=block)
    if (w.ndim != 2 or w.shape[0] != kh * kw or w.shape[1] != channels
            or bias.size < channels or x.shape[3] * multiplier != channels
            or x.shape[0] != out.shape[0]):
        raise ValueError(f"{kernel}: weights {list(w.shape)}, bias {list(bias.shape)}, x "
                         f"{list(x.shape)} and out {list(out.shape)} disagree")
    _window("x", x, top, left, (ho - 1) * sh + (kh - 1) * dh + 1,
            (wo - 1) * sw + (kw - 1) * dw + 1)
    _window("out", out, out_top, out_left, ho, wo)
    cdef Step s = _step(kernel, sizeof(fc_depthwise_args), run_f, run_d, dtype, tasks,
                        [x, w, bias, out])
    cdef fc_depthwise_args *a = <fc_depthwise_args *>s.args
    a.x, a.rows, a.cols, a.c_in, a.top, a.left = (_data(x), x.shape[1], x.shape[2], x.shape[3],
                                                    top, left)
    a.w, a.kh, a.kw, a.multiplier, a.bias = _data(w), kh, kw, multiplier, _data(bias)
    a.out, a.out_rows, a.out_cols, a.channels = _data(out), out.shape[1], out.shape[2], channels
    a.out_top, a.out_left, a.n, a.ho, a.wo = out_top, out_left, x.shape[0], ho, wo
    a.sh, a.sw, a.dh, a.dw, a.block = sh, sw, dh, dw, block
    a.epi = _epi(kind, lo, hi, alpha, beta)
    return s


def depthwise_3x3(x, top, left, w, bias, out, out_top, out_left, ho, wo, sh, sw, dh, dw,
                  kind, lo, hi, alpha, beta, block, out_border, tasks):
    cdef Step s = _depthwise("depthwise_3x3", K.depthwise_3x3_f, K.depthwise_3x3_d,
                             x, top, left, w, 3, 3, 1, bias, out, out_top, out_left, ho, wo,
                             sh, sw, dh, dw, kind, lo, hi, alpha, beta, block, tasks)
    (<fc_depthwise_args *>s.args).border = _border("out", out, out_border)
    return s


def depthwise(x, top, left, w, kh, kw, multiplier, bias, out, out_top, out_left, ho, wo, sh,
              sw, dh, dw, kind, lo, hi, alpha, beta, block, tasks):
    return _depthwise("depthwise", K.depthwise_f, K.depthwise_d, x, top, left, w,
                      kh, kw, multiplier, bias, out, out_top, out_left, ho, wo, sh, sw, dh, dw,
                      kind, lo, hi, alpha, beta, block, tasks)


def conv(x, rows, taps, c_in, groups, w, panel, out, out_rows, out_per_group, bias, has_bias,
         kind, lo, hi, alpha, beta, res, res_rows, res_mode, wide, mr, nr, tile_groups,
         unit_groups, block, chunk, out_border):
    dtype = out.dtype
    _array("x", x, dtype)
    _array("out", out, dtype, True)
    _positive(c_in=c_in, groups=groups, out_per_group=out_per_group, tile_groups=tile_groups,
              unit_groups=unit_groups, block=block, chunk=chunk)
    _array("taps", taps, np.int64)
    if taps.ndim != 1 or taps.shape[0] < 1:
        raise ValueError(f"expected at least one tap, but got size {list(taps.shape)}")
    reach = int(taps.max()) + groups * c_in
    _table("rows", rows, int(taps.min()), reach, x.size)
    pixels = rows.shape[0]
    _table("out_rows", out_rows, 0, groups * out_per_group, out.size, pixels)
    panels = -(-out_per_group // nr)
    cdef fc_gemm g = _gemm(w, panel, panels, groups * out_per_group, taps.shape[0] * c_in,
                           bias, has_bias, kind, lo, hi, alpha, beta, res, res_rows, res_mode,
                           wide, mr, nr, dtype, pixels, groups)
    cdef Step s = _step("conv", sizeof(fc_conv_args), K.conv_f, K.conv_d, dtype,
                        tile_groups * unit_groups, [x, rows, taps, w, out, out_rows, bias, res,
                                                    res_rows])
    cdef fc_conv_args *a = <fc_conv_args *>s.args
    a.x, a.rows, a.pixels = _data(x), <const i64 *>_data(rows), pixels
    a.taps, a.n_taps, a.c_in, a.groups = <const i64 *>_data(taps), taps.shape[0], c_in, groups
    a.g = g
    a.out, a.out_rows, a.out_per_group = _data(out), <const i64 *>_data(out_rows), out_per_group
    a.tile_groups, a.unit_groups, a.block, a.chunk = tile_groups, unit_groups, block, chunk
    a.border = _border("out", out, out_border)
    return s


cdef _pair(fc_separable_args *a, x, top, left, channels, dw_w, dw_bias, dw_kind, dw_lo, dw_hi,
           dw_alpha, dw_beta, sh, sw, dh, dw, ho, wo, block, w, panel, panels, out, out_rows,
           out_channels, bias, has_bias, kind, lo, hi, alpha, beta, res, res_rows, res_mode,
           wide, mr, nr, scratch, s_rows, rows_per_step, out_border, tasks, dtype):
    """The depthwise and pointwise halves' arguments, checked."""
    _array("out", out, dtype, True)
    _array("dw_w", dw_w, dtype)
    _array("dw_bias", dw_bias, dtype)
    _positive(sh=sh, sw=sw, dh=dh, dw=dw, block=block, rows_per_step=rows_per_step)
    if dw_w.ndim != 2 or dw_w.shape[0] != 9 or dw_w.shape[1] != channels or (
            dw_bias.size < channels):
        raise ValueError(f"expected depthwise weights (9, {channels}) and bias, but got "
                         f"{list(dw_w.shape)} and {list(dw_bias.shape)}")
    _array("scratch", scratch, dtype, True)
    if scratch.ndim != 2 or scratch.shape[0] < tasks or (
            scratch.shape[1] < rows_per_step * wo * channels):
        raise ValueError(f"expected scratch of at least ({tasks}, {rows_per_step * wo * channels})"
                         f", but got {list(scratch.shape)}")
    pixels = out_rows.shape[0]
    # pixel p of a step from r0 lands at (p - r0 * wo) * channels in the task's scratch
    _exactly("s_rows", s_rows, np.arange(pixels, dtype=np.int64) * channels)
    _table("out_rows", out_rows, 0, out_channels, out.size, pixels)
    a.g = _gemm(w, panel, panels, out_channels, channels, bias, has_bias, kind, lo, hi, alpha,
                beta, res, res_rows, res_mode, wide, mr, nr, dtype, pixels)
    a.dw_w, a.dw_bias, a.dw_epi = _data(dw_w), _data(dw_bias), _epi(dw_kind, dw_lo, dw_hi,
                                                                      dw_alpha, dw_beta)
    a.sh, a.sw, a.dh, a.dw, a.ho, a.wo, a.block = sh, sw, dh, dw, ho, wo, block
    a.out, a.out_rows, a.out_channels = _data(out), <const i64 *>_data(out_rows), out_channels
    a.scratch, a.scratch_pitch = _data(scratch), scratch.shape[1]
    a.s_rows, a.rows_per_step = <const i64 *>_data(s_rows), rows_per_step
    a.border = _border("out", out, out_border)
    return pixels


def separable(x, top, left, dw_w, dw_bias, dw_kind, dw_lo, dw_hi, dw_alpha, dw_beta, sh, sw, dh,
              dw, ho, wo, block, w, panel, panels, out, out_rows, out_channels, bias, has_bias,
              kind, lo, hi, alpha, beta, res, res_rows, res_mode, wide, mr, nr, scratch,
              s_rows, taps, rows_per_step, out_border, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    channels = x.shape[3]
    _window("x", x, top, left, (ho - 1) * sh + 2 * dh + 1, (wo - 1) * sw + 2 * dw + 1)
    cdef Step s = _step("separable", sizeof(fc_separable_args), K.separable_f,
                        K.separable_d, dtype, tasks,
                        [x, dw_w, dw_bias, w, out, out_rows, bias, res, res_rows, scratch,
                         s_rows])
    cdef fc_separable_args *a = <fc_separable_args *>s.args
    pixels = _pair(a, x, top, left, channels, dw_w, dw_bias, dw_kind, dw_lo, dw_hi, dw_alpha,
                   dw_beta, sh, sw, dh, dw, ho, wo, block, w, panel, panels, out, out_rows,
                   out_channels, bias, has_bias, kind, lo, hi, alpha, beta, res, res_rows,
                   res_mode, wide, mr, nr, scratch, s_rows, rows_per_step, out_border, tasks,
                   dtype)
    if pixels != x.shape[0] * ho * wo:
        raise ValueError(f"expected {x.shape[0] * ho * wo} output pixels, but got {pixels}")
    a.x, a.rows, a.cols, a.channels, a.top, a.left, a.n = (_data(x), x.shape[1], x.shape[2],
                                                             channels, top, left, x.shape[0])
    return s


def expanded_separable(x, x_top, x_left, height, width, e_rows, e_w, e_panel, e_panels,
                       expanded, e_bias, e_has_bias, e_kind, e_lo, e_hi, e_alpha, e_beta,
                       e_wide, e_mr, e_nr, slab, slab_rows, dw_w, dw_bias, dw_kind, dw_lo,
                       dw_hi, dw_alpha, dw_beta, stride, ho, wo, block, w, panel, panels, out,
                       out_rows, out_channels, bias, has_bias, kind, lo, hi, alpha, beta, res,
                       res_rows, res_mode, wide, mr, nr, scratch, s_rows, taps, rows_per_step,
                       out_border, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    c_in = x.shape[3]
    _window("x", x, x_top, x_left, height, width)
    if stride not in (1, 2) or ho != (height - 1) // stride + 1 or (
            wo != (width - 1) // stride + 1):
        raise ValueError(f"expanded_separable: a {ho}x{wo} output does not follow from a "
                         f"{height}x{width} input at stride {stride}")
    capacity = (rows_per_step - 1) * stride + 3
    pitch = (width + 2) * expanded
    _array("slab", slab, dtype, True)
    if slab.ndim != 2 or slab.shape[0] < tasks or slab.shape[1] < capacity * pitch:
        raise ValueError(f"expected a slab of at least ({tasks}, {capacity * pitch}), but got "
                         f"{list(slab.shape)}")
    # a run of slab rows' pixels: read from the run's first input row, written in the slab
    q = np.arange(capacity * width, dtype=np.int64)
    _exactly("e_rows", e_rows, (q // width * x.shape[2] + q % width) * c_in)
    _exactly("slab_rows", slab_rows, (q // width * (width + 2) + 1 + q % width) * expanded)
    cdef Step s = _step("expanded_separable", sizeof(fc_separable_args),
                        K.expanded_separable_f, K.expanded_separable_d, dtype,
                        tasks, [x, e_rows, e_w, e_bias, slab, slab_rows, dw_w, dw_bias, w, out,
                                out_rows, bias, res, res_rows, scratch, s_rows])
    cdef fc_separable_args *a = <fc_separable_args *>s.args
    pixels = _pair(a, x, x_top, x_left, expanded, dw_w, dw_bias, dw_kind, dw_lo, dw_hi,
                   dw_alpha, dw_beta, stride, stride, 1, 1, ho, wo, block, w, panel, panels,
                   out, out_rows, out_channels, bias, has_bias, kind, lo, hi, alpha, beta, res,
                   res_rows, res_mode, wide, mr, nr, scratch, s_rows, rows_per_step,
                   out_border, tasks, dtype)
    if pixels != x.shape[0] * ho * wo:
        raise ValueError(f"expected {x.shape[0] * ho * wo} output pixels, but got {pixels}")
    a.e = _gemm(e_w, e_panel, e_panels, expanded, c_in, e_bias, e_has_bias, e_kind, e_lo, e_hi,
                e_alpha, e_beta, None, None, 0, e_wide, e_mr, e_nr, dtype, 0)
    a.x, a.rows, a.cols, a.channels, a.top, a.left, a.n = (_data(x), x.shape[1], x.shape[2],
                                                             c_in, x_top, x_left, x.shape[0])
    a.expanded, a.height, a.width, a.e_rows = 1, height, width, <const i64 *>_data(e_rows)
    a.e_channels, a.slab, a.slab_pitch = expanded, _data(slab), slab.shape[1]
    a.slab_rows = <const i64 *>_data(slab_rows)
    return s


def winograd(x, top, left, w, panel, panels, channels, bias, out, out_top, out_left, ho, wo,
             kind, lo, hi, alpha, beta, res, res_top, res_left, res_channel, res_mode, v, m,
             rows, m_rows, taps, block, is_wide, mr, nr, out_border, tasks):
    dtype = out.dtype
    _buffer("x", x, dtype)
    _buffer("out", out, dtype, True)
    _buffer("res", res, dtype)
    o_ch = out.shape[3]
    _positive(block=block)
    if x.shape[3] != channels or x.shape[0] != out.shape[0] or x.shape[0] != res.shape[0]:
        raise ValueError(f"winograd: x {list(x.shape)}, out {list(out.shape)} and res "
                         f"{list(res.shape)} disagree with {channels} channels")
    tiles_h, tiles_w = (ho + 1) // 2, (wo + 1) // 2
    _window("x", x, top, left, 2 * tiles_h + 2, 2 * tiles_w + 2)
    _window("out", out, out_top, out_left, ho, wo)
    if res_mode:
        _window("res", res, res_top, res_left, ho, wo)
        if res_channel < 0 or res_channel + o_ch > res.shape[3]:
            raise ValueError(f"res of {res.shape[3]} channels has no {o_ch} from "
                             f"{res_channel}")
    for name, scratch, width in (("v", v, channels), ("m", m, o_ch)):
        _array(name, scratch, dtype, True)
        if scratch.ndim != 2 or scratch.shape[0] < tasks or scratch.shape[1] < 16 * block * width:
            raise ValueError(f"expected {name} of at least ({tasks}, {16 * block * width}), but "
                             f"got {list(scratch.shape)}")
    _table("rows", rows, 0, channels, block * channels, block)
    _table("m_rows", m_rows, 0, o_ch, block * o_ch, block)
    if not bias.size >= o_ch:
        raise ValueError(f"expected a bias of {o_ch} channels, but got {bias.size}")
    cdef Step s = _step("winograd", sizeof(fc_winograd_args), K.winograd_f,
                        K.winograd_d, dtype, tasks, [x, w, bias, out, res, v, m, rows,
                                                           m_rows])
    cdef fc_winograd_args *a = <fc_winograd_args *>s.args
    a.g = _gemm(w, panel, panels, o_ch, channels, bias, True, kind, lo, hi, alpha, beta, None,
                None, 0, is_wide, mr, nr, dtype, 0, 16)
    a.g.res_mode = res_mode
    a.x, a.rows, a.cols, a.channels, a.top, a.left, a.n = (_data(x), x.shape[1], x.shape[2],
                                                             channels, top, left, x.shape[0])
    a.out, a.out_rows, a.out_cols, a.out_channels = (_data(out), out.shape[1], out.shape[2],
                                                     o_ch)
    a.out_top, a.out_left, a.ho, a.wo = out_top, out_left, ho, wo
    a.res, a.res_rows, a.res_cols, a.res_pitch = (_data(res), res.shape[1], res.shape[2],
                                                  res.shape[3])
    a.res_top, a.res_left, a.res_channel = res_top, res_left, res_channel
    a.v, a.m, a.v_pitch, a.m_pitch = _data(v), _data(m), v.shape[1], m.shape[1]
    a.v_rows, a.m_rows = <const i64 *>_data(rows), <const i64 *>_data(m_rows)
    a.block = block
    a.border = _border("out", out, out_border)
    return s


# --- a whole call -----------------------------------------------------------------------------


cdef class Program:
    """A plan's steps, run in one parallel region per call. The first steps are
    :func:`from_nchw`, one per input, and the last :func:`to_output`, one per output; their
    input and output arrays come with each call. One call at a time: the steps' buffers are
    the program's."""

    cdef fc_task *runs
    cdef const void **args
    cdef i64 *tasks
    cdef i64 n
    cdef list steps
    cdef list input_shapes, output_shapes
    cdef object dtype
    cdef readonly int threads

    def __cinit__(self, list steps, int threads, input_shape, output_shape, dtype):
        cdef Step s
        cdef i64 i
        cdef fc_from_nchw_args *first
        # one shape, or a list of them (one per input, or output)
        inputs = [tuple(input_shape)] if _is_shape(input_shape) else [tuple(t) for t in
                                                                       input_shape]
        outputs = [tuple(output_shape)] if _is_shape(output_shape) else [tuple(t) for t in
                                                                          output_shape]
        k, m = len(inputs), len(outputs)
        if (k < 1 or m < 1 or len(steps) < k + m
                or any(steps[i].kernel != "from_nchw" for i in range(k))
                or any(steps[len(steps) - 1 - i].kernel != "to_output" for i in range(m))):
            raise ValueError("a program runs from from_nchw to to_output")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, but got {threads}")
        self.n = len(steps)
        self.runs = <fc_task *>malloc(self.n * sizeof(fc_task))
        self.args = <const void **>malloc(self.n * sizeof(void *))
        self.tasks = <i64 *>malloc(self.n * sizeof(i64))
        if self.runs == NULL or self.args == NULL or self.tasks == NULL:
            raise MemoryError()
        for i in range(self.n):
            s = steps[i]
            self.runs[i], self.args[i], self.tasks[i] = s.run, s.args, s.tasks
        self.steps = steps
        self.threads = threads
        self.input_shapes, self.output_shapes = inputs, outputs
        self.dtype = np.dtype(dtype)
        for i in range(k):
            first = <fc_from_nchw_args *>(<Step>steps[i]).args
            if (first.n, first.c, first.h, first.w) != inputs[i]:
                raise ValueError(f"the input step takes {[first.n, first.c, first.h, first.w]}, "
                                 f"not {list(inputs[i])}")

    def __dealloc__(self):
        free(self.runs)
        free(self.args)
        free(self.tasks)

    def run(self, x, out, times=None):
        """Run every step on ``x`` (N, C, H, W, any strides; a list of them for several
        inputs) into ``out`` (a new C-contiguous array of the output's shape; a list for
        several outputs). ``times``, a float64 array of ``len(steps) + 1``, gets the clock at
        the start and after each step."""
        cdef double *clock = NULL
        cdef fc_from_nchw_args *first
        cdef fc_to_output_args *last
        cdef i64 i
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if len(xs) != len(self.input_shapes) or len(outs) != len(self.output_shapes):
            raise ValueError(f"expected {len(self.input_shapes)} inputs and "
                             f"{len(self.output_shapes)} outputs, but got {len(xs)} and "
                             f"{len(outs)}")
        itemsize = self.dtype.itemsize
        for i, shape in enumerate(self.input_shapes):
            a = xs[i]
            if not isinstance(a, np.ndarray) or a.dtype != self.dtype or a.shape != shape:
                raise ValueError(f"expected input of size {list(shape)} and dtype "
                                 f"{self.dtype}, but got {getattr(a, 'shape', None)}")
            if any(st % itemsize for st in a.strides) or not a.dtype.isnative:
                xs[i] = np.ascontiguousarray(a)
        for i, shape in enumerate(self.output_shapes):
            _array("out", outs[i], self.dtype, True)
            if outs[i].shape != shape:
                raise ValueError(f"expected out of size {list(shape)}, but got "
                                 f"{list(outs[i].shape)}")
        if times is not None:
            _array("times", times, np.float64, True)
            if times.shape != (self.n + 1,):
                raise ValueError(f"expected times of size [{self.n + 1}], but got "
                                 f"{list(times.shape)}")
            clock = <double *>_data(times)
        for i in range(len(xs)):
            first = <fc_from_nchw_args *>(<Step>self.steps[i]).args
            # x's data pointer at element (0, 0, 0, 0), whatever the signs of its strides
            first.x = cnp.PyArray_DATA(<cnp.ndarray>xs[i])
            first.sn, first.sc, first.sh, first.sw = [st // itemsize for st in xs[i].strides]
        for i in range(len(outs)):
            last = <fc_to_output_args *>(<Step>self.steps[self.n - len(outs) + i]).args
            last.out = _data(outs[i])
        fc_pool_set_spin(tuning.PLAN_SPIN_SECONDS)
        with nogil:
            fc_run(self.runs, self.args, self.tasks, self.n, self.threads, clock)
        for i in range(len(xs)):
            (<fc_from_nchw_args *>(<Step>self.steps[i]).args).x = NULL
        for i in range(len(outs)):
            (<fc_to_output_args *>(<Step>self.steps[self.n - len(outs) + i]).args).out = NULL
        return out
