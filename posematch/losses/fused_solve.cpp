// The matching loss's solve on a CPU, one problem at a time: posematch::matching_solve.
//
// The same arithmetic as posematch/losses/transport.py from the stabilised kernel on (the rest
// of _solve, sinkhorn_scalings and _multipliers; their docstrings and posematch/losses/
// sinkhorn.py's derive it), fused per problem. One problem's cost and kernel (M x N values: 24 KiB for 4 demanders on a 32x24 map)
// stay in the core's cache through all its scalings, and a scaling is two passes over the kernel
// with no op boundary, where the batched torch ops pay a dispatch and a thread hand-off per op
// and stream the whole batch's kernel through memory per pass. Problems run in parallel on
// ATen's intra-op threads (at::parallel_for: the count torch.set_num_threads sets), each on
// one thread, so a result does not depend on the thread count.
//
// Sums over the pixels are SIMD reductions (omp simd), like the partial sums of a BLAS
// product; the M x M multiplier system is solved in double, as the torch path does.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

template <typename T>
T dot(const T* x, const T* y, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

template <typename T>
T dot3(const T* x, const T* y, const T* z, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i] * z[i];
  return s;
}

// Solves the m x m system A x = r in place (Gaussian elimination, partial pivoting); A is
// regular by construction (transport._multipliers pins the gauge).
void solve_small(std::vector<double>& A, std::vector<double>& r, int64_t m) {
  for (int64_t c = 0; c < m; ++c) {
    int64_t piv = c;
    for (int64_t k = c + 1; k < m; ++k)
      if (std::abs(A[k * m + c]) > std::abs(A[piv * m + c])) piv = k;
    if (piv != c) {
      for (int64_t k = 0; k < m; ++k) std::swap(A[c * m + k], A[piv * m + k]);
      std::swap(r[c], r[piv]);
    }
    for (int64_t k = c + 1; k < m; ++k) {
      const double f = A[k * m + c] / A[c * m + c];
      for (int64_t l = c; l < m; ++l) A[k * m + l] -= f * A[c * m + l];
      r[k] -= f * r[c];
    }
  }
  for (int64_t c = m - 1; c >= 0; --c) {
    double s = r[c];
    for (int64_t l = c + 1; l < m; ++l) s -= A[c * m + l] * r[l];
    r[c] = s / A[c * m + c];
  }
}

// Per-thread buffers of one problem: two n-vectors.
template <typename T>
struct Buffers {
  std::vector<T> t, y;
  explicit Buffers(int64_t n) : t(n), y(n) {}
};

struct Options {
  int64_t m, n, max_iters;
  double tol;
  bool need_grad;
};

// One problem, from its cost and stabilised kernel (m x n; both overwritten: Q * C and Q):
// <C, P> into *value, dL/da into grad (when need_grad); returns the scalings run.
template <typename T>
int64_t solve_one(const T* a, T* cost, T* kernel, const T* row_factor, const T* b,
                  const Options& o, Buffers<T>& buf, T* value, T* grad) {
  const int64_t m = o.m, n = o.n;
  T* t = buf.t.data();
  T* y = buf.y.data();

  // Sinkhorn scalings in POT's order (transport.sinkhorn_scalings).
  std::vector<T> v(m), ky(m);
  for (int64_t j = 0; j < m; ++j) v[j] = b[j] / dot(kernel + j * n, row_factor, n);
  int64_t iters = 1;
  while (true) {
    if (iters % 8 == 1) {
      const T top = *std::max_element(v.begin(), v.end());
      for (auto& x : v) x /= top;
    }
    std::fill(t, t + n, T(0));
    for (int64_t j = 0; j < m; ++j) {
      const T* k = kernel + j * n;
      const T vj = v[j];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) t[i] += vj * k[i];
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] / t[i];
    T err2 = 0;
    for (int64_t j = 0; j < m; ++j) {
      ky[j] = dot(kernel + j * n, y, n);
      const T gap = v[j] * ky[j] - b[j];  // P^T 1 - b
      err2 += gap * gap;
    }
    if (iters >= o.max_iters || std::sqrt(err2) < T(o.tol)) break;
    for (int64_t j = 0; j < m; ++j) v[j] = b[j] / ky[j];
    ++iters;
  }

  // Q = K~ v / t (in the kernel's place), Q * C (in the cost's), and the value.
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = T(1) / t[i];
  T total = 0;
  std::vector<T> demander_cost(m);
  for (int64_t j = 0; j < m; ++j) {
    T* q = kernel + j * n;
    T* qc = cost + j * n;
    const T vj = v[j];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      q[i] = q[i] * vj * y[i];
      qc[i] = qc[i] * q[i];
    }
    demander_cost[j] = dot(qc, a, n);
    total += demander_cost[j];
  }
  *value = total;
  if (!o.need_grad) return iters;

  // <Q_i, C_i> per supplier, into grad, then the multipliers (transport._multipliers).
  std::copy(cost, cost + n, grad);
  for (int64_t j = 1; j < m; ++j) {
    const T* qc = cost + j * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) grad[i] += qc[i];
  }
  std::vector<double> system(m * m), rhs(m);
  for (int64_t j = 0; j < m; ++j) {
    const T* qj = kernel + j * n;
    double row = 0;
    for (int64_t l = 0; l < m; ++l) {
      const double g = l >= j ? double(dot3(qj, kernel + l * n, a, n)) : system[l * m + j];
      system[j * m + l] = g;
      row += g;
    }
    rhs[j] = double(demander_cost[j]) - double(dot3(qj, a, grad, n));
    system[j * m + j] -= row;  // -(diag(P^T 1) - Gram) so far
  }
  double trace = 0;
  for (int64_t j = 0; j < m; ++j) trace -= system[j * m + j];
  const double scale = std::max(trace, 1e-12);
  for (int64_t j = 0; j < m; ++j)
    for (int64_t l = 0; l < m; ++l) {
      double s = -system[j * m + l];  // the Jacobian diag(P^T 1) - Gram
      if (b[j] > 0 && b[l] > 0) s += scale;
      if (j == l && !(b[j] > 0)) s += 1.0;
      system[j * m + l] = s;
    }
  solve_small(system, rhs, m);
  for (int64_t j = 0; j < m; ++j) {
    if (!(b[j] > 0)) continue;
    const T lam = T(rhs[j]);
    const T* q = kernel + j * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) grad[i] -= lam * q[i];
  }
  return iters;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> matching_solve(
    const at::Tensor& a, at::Tensor cost, at::Tensor kernel, const at::Tensor& row_factor,
    const at::Tensor& b, int64_t max_iters, double tol, bool need_grad) {
  TORCH_CHECK(a.dim() == 2 && cost.dim() == 3 && b.dim() == 2,
              "matching_solve: expected a (P, N), cost and kernel (P, M, N), b (P, M)");
  TORCH_CHECK(cost.sizes() == kernel.sizes() && cost.size(0) == a.size(0) &&
                  cost.size(1) == b.size(1) && cost.size(2) == a.size(1) &&
                  b.size(0) == a.size(0) && row_factor.sizes() == a.sizes(),
              "matching_solve: a, cost, kernel, row_factor and b disagree in shape");
  TORCH_CHECK(cost.is_contiguous() && kernel.is_contiguous(),
              "matching_solve: cost and kernel must be contiguous (they are overwritten)");
  for (const at::Tensor* x : {static_cast<const at::Tensor*>(&cost), static_cast<const at::Tensor*>(&kernel), &row_factor, &b})
    TORCH_CHECK(x->scalar_type() == a.scalar_type(), "matching_solve: one dtype for all inputs");
  TORCH_CHECK(max_iters >= 1, "matching_solve: max_iters must be at least 1");
  const at::Tensor a_c = a.contiguous(), rf_c = row_factor.contiguous(), b_c = b.contiguous();
  const int64_t problems = a.size(0);
  const Options o{b.size(1), a.size(1), max_iters, tol, need_grad};
  at::Tensor value = at::empty({problems}, a.options());
  at::Tensor grad = need_grad ? at::empty({problems, o.n}, a.options()) : at::empty({0}, a.options());
  at::Tensor iters = at::empty({problems}, a.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "matching_solve", [&] {
    const scalar_t* pa = a_c.data_ptr<scalar_t>();
    scalar_t* pc = cost.data_ptr<scalar_t>();
    scalar_t* pk = kernel.data_ptr<scalar_t>();
    const scalar_t* pr = rf_c.data_ptr<scalar_t>();
    const scalar_t* pb = b_c.data_ptr<scalar_t>();
    scalar_t* pv = value.data_ptr<scalar_t>();
    scalar_t* pg = need_grad ? grad.data_ptr<scalar_t>() : nullptr;
    int64_t* pi = iters.data_ptr<int64_t>();
    const int64_t mn = o.m * o.n;
    at::parallel_for(0, problems, 1, [&](int64_t begin, int64_t end) {
      Buffers<scalar_t> buf(o.n);
      for (int64_t p = begin; p < end; ++p)
        pi[p] = solve_one<scalar_t>(pa + p * o.n, pc + p * mn, pk + p * mn, pr + p * o.n,
                                    pb + p * o.m, o, buf, pv + p,
                                    need_grad ? pg + p * o.n : nullptr);
    });
  });
  return {value, grad, iters};
}

}  // namespace

TORCH_LIBRARY(posematch, m) {
  m.def(
      "matching_solve(Tensor a, Tensor(a!) cost, Tensor(b!) kernel, Tensor row_factor, Tensor b, "
      "int max_iters, float tol, bool need_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(posematch, CPU, m) { m.impl("matching_solve", &matching_solve); }
