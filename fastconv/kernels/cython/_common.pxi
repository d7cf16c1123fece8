# Shared by the Cython kernels (included, not imported): the float types, BLAS GEMM, and the
# index helpers. Conventions as in the Numba kernels: C-contiguous arrays, NCHW / OIHW.

cimport cython
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport dgemm, sgemm

ctypedef fused floating:
    float
    double


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major ``C (m x n) = op(A) @ op(B) + beta * C`` with leading dimensions lda, ldb,
    ldc, through column-major BLAS: ``C^T = op(B)^T @ op(A)^T``."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef floating alpha = 1
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


# Output positions o with 0 <= o * stride + offset < in_size form [range_lo, range_hi). Two
# functions returning values, not one writing through pointers: inside a prange, Cython makes
# a variable thread-private only when the loop body assigns it.

cdef inline Py_ssize_t range_lo(Py_ssize_t offset, Py_ssize_t stride,
                                Py_ssize_t out_size) noexcept nogil:
    cdef Py_ssize_t lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    return lo if lo < out_size else out_size


cdef inline Py_ssize_t range_hi(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t in_size,
                                Py_ssize_t out_size) noexcept nogil:
    cdef Py_ssize_t last = in_size - 1 - offset  # the largest o * stride that fits
    cdef Py_ssize_t hi = 0 if last < 0 else last // stride + 1
    cdef Py_ssize_t lo = range_lo(offset, stride, out_size)
    if hi > out_size:
        hi = out_size
    return hi if hi > lo else lo
