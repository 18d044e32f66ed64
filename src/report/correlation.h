// Agreement between two paired samples, e.g. the approximation term of each
// edit against its true loss change ΔL. Pairs where either value is NaN or
// infinite are dropped; statistics that are undefined (fewer than two pairs,
// a constant sample) are NaN. Sums are in f64 in index order.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace deltaedit::report {

struct Agreement {
  double pearson = 0.0;
  double spearman = 0.0;
  double sign_agreement = 0.0;  // fraction of pairs with sign(x) == sign(y), signs in {-1, 0, +1}
  std::size_t used = 0;         // pairs with both values finite
  std::size_t dropped = 0;      // pairs dropped for a non-finite value
};

// All of these throw std::invalid_argument when the sizes differ.
double pearson(std::span<const double> x, std::span<const double> y);
// Pearson correlation of the ranks, ties receiving their average rank.
double spearman(std::span<const double> x, std::span<const double> y);
// NaN when no pair is usable.
double sign_agreement(std::span<const double> x, std::span<const double> y);
Agreement agreement(std::span<const double> x, std::span<const double> y);

// 1-based ranks, ties averaged (e.g. {10, 20, 20, 30} -> {1, 2.5, 2.5, 4}); non-finite values must be removed first.
std::vector<double> average_ranks(std::span<const double> values);

}  // namespace deltaedit::report
