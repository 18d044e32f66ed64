#include "report/correlation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <utility>

namespace deltaedit::report {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::pair<std::vector<double>, std::vector<double>> finite_pairs(std::span<const double> x, std::span<const double> y) {
  if (x.size() != y.size()) throw std::invalid_argument("correlation: samples differ in size");
  std::pair<std::vector<double>, std::vector<double>> out;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    out.first.push_back(x[i]);
    out.second.push_back(y[i]);
  }
  return out;
}

double pearson_finite(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = x.size();
  if (n < 2) return kNaN;
  double mx = 0.0, my = 0.0;
  for (std::size_t i = 0; i < n; ++i) mx += x[i], my += y[i];
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxy = 0.0, sxx = 0.0, syy = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx == 0.0 || syy == 0.0) return kNaN;
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

int sign_of(double v) { return (v > 0.0) - (v < 0.0); }

}  // namespace

std::vector<double> average_ranks(std::span<const double> values) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  std::size_t i = 0;
  while (i < order.size()) {
    std::size_t j = i + 1;
    while (j < order.size() && values[order[j]] == values[order[i]]) ++j;
    const double rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;  // mean of i+1 .. j
    for (std::size_t k = i; k < j; ++k) ranks[order[k]] = rank;
    i = j;
  }
  return ranks;
}

double pearson(std::span<const double> x, std::span<const double> y) {
  const auto [fx, fy] = finite_pairs(x, y);
  return pearson_finite(fx, fy);
}

double spearman(std::span<const double> x, std::span<const double> y) {
  const auto [fx, fy] = finite_pairs(x, y);
  if (fx.size() < 2) return kNaN;
  return pearson_finite(average_ranks(fx), average_ranks(fy));
}

double sign_agreement(std::span<const double> x, std::span<const double> y) {
  const auto [fx, fy] = finite_pairs(x, y);
  if (fx.empty()) return kNaN;
  std::size_t same = 0;
  for (std::size_t i = 0; i < fx.size(); ++i) same += sign_of(fx[i]) == sign_of(fy[i]);
  return static_cast<double>(same) / static_cast<double>(fx.size());
}

Agreement agreement(std::span<const double> x, std::span<const double> y) {
  Agreement a;
  a.pearson = pearson(x, y);
  a.spearman = spearman(x, y);
  a.sign_agreement = sign_agreement(x, y);
  a.used = finite_pairs(x, y).first.size();
  a.dropped = x.size() - a.used;
  return a;
}

}  // namespace deltaedit::report
