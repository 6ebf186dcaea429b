"""Central-difference gradients and the relative error used to compare them."""
import numpy as np


def numerical_gradient(f, x, dout=None, h=1e-5):
    """Central-difference gradient of sum(f(x) * dout) with respect to x.

    f maps the array x (any shape) to an array or a scalar; dout has the shape
    of f(x) (ones when omitted).  x is perturbed in place and restored, so pass
    an array you own.  Returns an array shaped like x.
    """
    x = np.asarray(x)
    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = np.asarray(f(x), dtype=np.float64)
        x[i] = old - h
        fm = np.asarray(f(x), dtype=np.float64)
        x[i] = old
        weight = 1.0 if dout is None else dout
        grad[i] = np.sum((fp - fm) * weight) / (2 * h)
    return grad


def rel_error(a, b):
    """max |a - b| scaled by the larger of max|a|, max|b| (0 when both are zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b), initial=0.0) / scale)
