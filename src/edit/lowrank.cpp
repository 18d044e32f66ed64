// lowrank: Δ' = U_r Σ_r V_rᵀ, the rank-r truncation of the SVD of the 2-D tensor Δ (rows × cols).
//
// r is rank=r (capped at min(rows, cols)), or ⌊ratio·min(rows, cols)⌋ (default ratio 0.1), or the
// smallest r whose Σ_{i≤r} σ_i² reaches energy·Σ σ_i² (exact method only). When r ≥ min(rows, cols)
// the truncation is Δ itself and the tensor is left unchanged (no factors). method=exact: LAPACK's
// divide-and-conquer SVD (dgesdd) in f64. method=randomized: the randomized range finder of Halko,
// Martinsson & Tropp — sketch width ℓ = r + oversample (default 10), power_iters (default 4) rounds
// of power iteration re-orthonormalised by QR, Gaussian test matrix from the keyed Philox stream —
// with f32 BLAS products and LAPACK QR on Δ in place, then the f64 SVD of an ℓ×ℓ triangle. The
// factors are rounded to f32, and Δ' is written by reconstruct_lowrank(factors), the same routine a
// pack rebuild uses. Tensors that are not 2-D are left untouched; NaN/Inf entries are a Numeric
// error (the SVD is undefined).
#include <Eigen/Dense>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <memory>

#include "edit/op_impl.h"
#include "linalg/blas.h"
#include "util/interrupt.h"

namespace deltaedit::edit::detail {
namespace {

enum class Mode { Rank, Ratio, Energy };

class LowRankOp final : public WholeTensorOp {
 public:
  LowRankOp(Mode mode, double value, bool randomized, int64_t oversample, int64_t power_iters)
      : WholeTensorOp("lowrank"),
        mode_(mode),
        value_(value),
        randomized_(randomized),
        oversample_(oversample),
        power_iters_(power_iters) {}

  nlohmann::json own_params() const override {
    nlohmann::json j;
    if (mode_ == Mode::Rank) j["rank"] = static_cast<int64_t>(value_);
    if (mode_ == Mode::Ratio) j["ratio"] = value_;
    if (mode_ == Mode::Energy) j["energy"] = value_;
    j["method"] = randomized_ ? "randomized" : "exact";
    if (randomized_) {
      j["oversample"] = oversample_;
      j["power_iters"] = power_iters_;
    }
    return j;
  }
  bool applies_to(std::span<const int64_t> shape) const override { return shape.size() == 2; }

  uint64_t workspace_bytes(std::span<const int64_t> shape) const override {
    if (shape.size() != 2) return 0;
    const uint64_t m = static_cast<uint64_t>(shape[0]), n = static_cast<uint64_t>(shape[1]);
    const uint64_t k = std::min(m, n);
    const uint64_t factors = 4 * (m + n + 1) * k + 4 * k * n;  // f32 factors + Vᵀ in reconstruction
    if (!randomized_)
      return 8 * (m * n + 2 * (m + n) * k + 5 * k * k + 7 * k) + 4 * 8 * k + factors;
    const uint64_t l = std::min(k, static_cast<uint64_t>(target_rank(k) + oversample_));
    return 4 * (3 * n + 2 * m) * l + 8 * (m + n) * l + 32 * l * l + factors;
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    OpOutcome out;
    if (ctx.shape.size() != 2) {
      out.touched = false;
      return out;
    }
    const int64_t m = ctx.shape[0], n = ctx.shape[1];
    if (shape_elements(ctx.shape) != static_cast<int64_t>(delta.size())) {
      throw Error(ErrorKind::Internal,
                  "shape has " + std::to_string(shape_elements(ctx.shape)) +
                      " elements but the buffer holds " + std::to_string(delta.size()),
                  "", std::string(ctx.name));
    }
    const int64_t kmin = std::min(m, n);
    if (kmin == 0) return out;
    size_t bad = 0;
    for (float v : delta) bad += std::isfinite(v) ? 0 : 1;
    if (bad != 0) {
      throw Error(ErrorKind::Numeric,
                  "op 'lowrank': " + std::to_string(bad) + " NaN/Inf entries; the SVD is undefined",
                  "", std::string(ctx.name));
    }
    int64_t r = target_rank(static_cast<uint64_t>(kmin));
    if (mode_ != Mode::Energy && r >= kmin) return out;  // the full-rank truncation is Δ itself

    Eigen::MatrixXd u, v;
    Eigen::VectorXd s;
    if (!randomized_) {
      // Row-major Δ (m×n) is Δᵀ in column-major order: its SVD Δᵀ = V·Σ·Uᵀ gives Δ's factors
      // without a transpose.
      // LAPACK runs on its own thread so that Ctrl-C ends the run at once: the buffers belong to
      // that job (an interrupted run leaves it to the end of the process).
      struct Work {
        std::vector<double> at, vcol, ut, s;
      };
      auto w = std::make_shared<Work>();
      w->at.assign(delta.begin(), delta.end());
      w->vcol.resize(static_cast<size_t>(n * kmin));
      w->ut.resize(static_cast<size_t>(kmin * m));
      w->s.resize(static_cast<size_t>(kmin));
      util::run_interruptible([w, n, m] {
        const linalg::SerialBlas serial;  // same bytes for any thread count
        linalg::svd(w->at.data(), n, m, w->s.data(), w->vcol.data(), w->ut.data());
      });
      s = Eigen::Map<const Eigen::VectorXd>(w->s.data(), kmin);
      u = Eigen::Map<const Eigen::MatrixXd>(w->ut.data(), kmin, m).transpose();
      v = Eigen::Map<const Eigen::MatrixXd>(w->vcol.data(), n, kmin);
    } else {
      // The range finder works on Δ in place (f32, row-major, i.e. Δᵀ column-major with leading
      // dimension n) with f32 BLAS products and QR: its subspace only needs to be accurate to far
      // better than the truncation error. Then Bᵀ = ΔᵀQ = Q₂R, and the small SVD of Rᵀ (ℓ×ℓ, f64)
      // gives Δ ≈ Q·B = (Q·U_R)·Σ·(Q₂·V_R)ᵀ.
      const linalg::SerialBlas serial;  // same bytes for any thread count
      const int64_t l =
          std::max<int64_t>(1, std::min(kmin, r + oversample_));  // rank=0, oversample=0: ℓ = 1
      const size_t ml = static_cast<size_t>(m * l), nl = static_cast<size_t>(n * l);
      const util::KeyedRng rng = rng_for(ctx);
      std::vector<float> omega(nl), q(ml), z(nl);
      for (int64_t j = 0; j < n; ++j) {  // omega(j, t), column-major n×ℓ
        for (int64_t t = 0; t < l; ++t)
          omega[static_cast<size_t>(t * n + j)] =
              static_cast<float>(rng.normal(static_cast<uint64_t>(j * l + t)));
      }
      const float* a = delta.data();
      linalg::gemm(true, false, m, l, n, a, n, omega.data(), n, q.data(), m);  // Y = ΔΩ
      linalg::qr(q.data(), m, l);
      for (int64_t it = 0; it < power_iters_; ++it) {
        util::check_interrupted();
        linalg::gemm(false, false, n, l, m, a, n, q.data(), m, z.data(), n);  // Z = ΔᵀQ
        linalg::qr(z.data(), n, l);
        linalg::gemm(true, false, m, l, n, a, n, z.data(), n, q.data(), m);  // Y = ΔZ
        linalg::qr(q.data(), m, l);
      }
      util::check_interrupted();
      std::vector<float> rr(static_cast<size_t>(l * l));
      linalg::gemm(false, false, n, l, m, a, n, q.data(), m, z.data(), n);  // Bᵀ = ΔᵀQ
      linalg::qr(z.data(), n, l, rr.data());                                // Bᵀ = Q₂R
      Eigen::MatrixXd rt(l, l);                                             // Rᵀ
      for (int64_t i = 0; i < l; ++i)
        for (int64_t j = 0; j < l; ++j) rt(i, j) = rr[static_cast<size_t>(i * l + j)];
      Eigen::BDCSVD<Eigen::MatrixXd> svd(rt, Eigen::ComputeThinU | Eigen::ComputeThinV);
      const Eigen::MatrixXf ur = svd.matrixU().cast<float>(), vr = svd.matrixV().cast<float>();
      Eigen::MatrixXf uf(m, l), vf(n, l);
      linalg::gemm(false, false, m, l, l, q.data(), m, ur.data(), l, uf.data(), m);  // Q·U_R
      linalg::gemm(false, false, n, l, l, z.data(), n, vr.data(), l, vf.data(), n);  // Q₂·V_R
      u = uf.cast<double>();
      s = svd.singularValues();
      v = vf.cast<double>();
    }
    if (mode_ == Mode::Energy) {
      double total = 0.0;
      for (Eigen::Index t = 0; t < s.size(); ++t) total += s(t) * s(t);
      double acc = 0.0;
      r = 0;
      while (r < s.size() && acc < value_ * total) {
        acc += s(r) * s(r);
        ++r;
      }
      if (r >= kmin) return out;
    }
    LowRankFactors f;
    f.rows = m;
    f.cols = n;
    f.rank = r;
    f.u.resize(static_cast<size_t>(m * r));
    f.s.resize(static_cast<size_t>(r));
    f.v.resize(static_cast<size_t>(n * r));
    for (int64_t t = 0; t < r; ++t) f.s[static_cast<size_t>(t)] = static_cast<float>(s(t));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t t = 0; t < r; ++t)
        f.u[static_cast<size_t>(i * r + t)] = static_cast<float>(u(i, t));
    }
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t t = 0; t < r; ++t)
        f.v[static_cast<size_t>(j * r + t)] = static_cast<float>(v(j, t));
    }
    reconstruct_lowrank(f, delta);
    out.factors = std::move(f);
    return out;
  }

 private:
  int64_t target_rank(uint64_t kmin) const {
    const int64_t k = static_cast<int64_t>(kmin);
    if (mode_ == Mode::Rank) return std::min(k, static_cast<int64_t>(value_));
    if (mode_ == Mode::Ratio) return floor_count(value_, k);
    return k;
  }

  Mode mode_;
  double value_;
  bool randomized_;
  int64_t oversample_, power_iters_;
};

}  // namespace

namespace {
std::unique_ptr<Op> make_lowrank(const ParamReader& r) {
  const std::optional<int64_t> rank = r.integer_opt("rank");
  const std::optional<double> ratio = r.real_opt("ratio");
  const std::optional<double> energy = r.real_opt("energy");
  const int given = (rank ? 1 : 0) + (ratio ? 1 : 0) + (energy ? 1 : 0);
  if (given > 1) {
    r.fail(rank && ratio ? "ratio" : "energy",
           "cannot be combined with another of rank, ratio, energy");
  }
  const bool randomized = r.choice("method") == "randomized";
  const int64_t oversample = r.integer("oversample");
  const int64_t power_iters = r.integer("power_iters");
  if (energy && randomized) r.fail("energy", "needs method=exact (the full spectrum)");
  if (rank)
    return std::make_unique<LowRankOp>(Mode::Rank, static_cast<double>(*rank), randomized,
                                       oversample, power_iters);
  if (energy)
    return std::make_unique<LowRankOp>(Mode::Energy, *energy, randomized, oversample, power_iters);
  return std::make_unique<LowRankOp>(Mode::Ratio, ratio.value_or(0.1), randomized, oversample,
                                     power_iters);
}
}  // namespace

OpDecl lowrank_decl() {
  const char* one_of =
      "at most one of rank, ratio, energy, default ratio=0.1; energy needs method=exact";
  return {
      "lowrank",
      "Δ' = U_r Σ_r V_rᵀ of the SVD of Δ (2-D tensors only)",
      {ParamSpec::integer("rank", std::nullopt, 0, (int64_t{1} << 31) - 1, "keep r singular values")
           .with_constraint(one_of),
       ParamSpec::number("ratio", 0.1, 0.0, 1.0, "keep ⌊ratio·min(rows, cols)⌋ singular values")
           .with_constraint(one_of),
       ParamSpec::number("energy", std::nullopt, 0.0, 1.0,
                         "keep the fewest values holding this share of Σσ²", true)
           .with_constraint(one_of),
       ParamSpec::choice("method", {"exact", "randomized"}, "exact",
                         "LAPACK SVD in f64, or a randomized range finder"),
       ParamSpec::integer("oversample", 10, 0, 4096, "randomized: extra columns of the sketch"),
       ParamSpec::integer("power_iters", 4, 0, 64, "randomized: power iterations")},
      &make_lowrank};
}

}  // namespace deltaedit::edit::detail
