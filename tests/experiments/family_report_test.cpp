// The demo's combined report: prediction quality by band of |ΔL| computed from the points, and a
// page that holds every part (or says which part is missing).
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "experiments/family_report.h"

using nlohmann::json;
using namespace deltaedit;

namespace {

json point(double term, double dl, json params = json::object(), double acc = 0.5) {
  return {{"approximation_term", term}, {"true_delta_loss", dl}, {"params", params}, {"accuracy", acc}};
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST(FamilyReport, PredictionBandsSplitByTheSizeOfTheLossChange) {
  // Small band: 4 points, signs agree on 3 (the third has the wrong sign). Middle: 2, both agree.
  // Large: 1 point. A NaN term is dropped everywhere.
  json res{{"experiments",
            {{"F1", {point(0.001, 0.002), point(-0.003, -0.001), point(0.004, -0.005), point(0.0, 0.0)}},
             {"F6", {point(0.05, 0.03), point(-0.02, -0.04), point(2.0, 1.5), point(NAN, 0.2)}}}}};
  const auto b = experiments::prediction_bands(res);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].band, "all");
  EXPECT_EQ(b[0].n, 7u);
  EXPECT_EQ(b[1].n, 4u);
  EXPECT_EQ(b[2].n, 2u);
  EXPECT_EQ(b[3].n, 1u);
  EXPECT_DOUBLE_EQ(b[1].sign_agreement, 0.75);  // sign(0) == sign(0) counts as agreement
  EXPECT_DOUBLE_EQ(b[2].sign_agreement, 1.0);
  EXPECT_DOUBLE_EQ(b[0].sign_agreement, 6.0 / 7.0);
  // Pearson of the middle band's two points is exactly 1 (two points lie on a line).
  EXPECT_NEAR(b[2].pearson, 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(b[3].pearson));  // one pair: undefined
  // Pearson over the small band from its definition.
  const double x[] = {0.001, -0.003, 0.004, 0.0}, y[] = {0.002, -0.001, -0.005, 0.0};
  double mx = 0, my = 0;
  for (int i = 0; i < 4; ++i) mx += x[i] / 4, my += y[i] / 4;
  double sxy = 0, sxx = 0, syy = 0;
  for (int i = 0; i < 4; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  EXPECT_NEAR(b[1].pearson, sxy / std::sqrt(sxx * syy), 1e-12);
}

TEST(FamilyReport, PageHoldsEveryPartAndNamesMissingOnes) {
  json sweep{{"models", {{"base", {{"accuracy", 0.1}, {"loss", 2.0}}}, {"post", {{"accuracy", 0.9}, {"loss", 1.0}}}}},
             {"experiments",
              {{"F1",
                {point(0.1, 0.2, {{"p", 0.5}, {"k", 0.0}}, 0.85), point(1.0, 1.2, {{"p", 0.9}, {"k", 0.0}}, 0.2),
                 point(0.01, 0.02, {{"p", 0.5}, {"k", 0.5}}, 0.9)}}}}};
  json in{{"regimes",
           {{{"id", "family"}, {"name", "light SFT"}, {"delta_over_weight", 0.05}, {"results", sweep}},
            {{"id", "retrain"}, {"name", "retrain pair"}, {"delta_over_weight", 0.66}, {"results", sweep}}}},
          {"dpo", nullptr},
          {"merge", nullptr}};
  const std::string html = experiments::family_report_html(in);
  EXPECT_NE(html.find("Claims in each regime"), std::string::npos);
  EXPECT_NE(html.find("light SFT"), std::string::npos);
  EXPECT_NE(html.find("retrain pair"), std::string::npos);
  EXPECT_NE(html.find("The DPO-loss sweep was not run."), std::string::npos);
  EXPECT_NE(html.find("The merge experiment was not run."), std::string::npos);
  // Two charts of the regimes (DARE tolerance, term vs ΔL), each with one series per regime.
  EXPECT_EQ(count(html, "data-series=\"2\""), 2u);
  // term vs ΔL has both axes symmetric-log, linear within ±1e-4: ΔL up to 1.2 reaches 5 decades
  // past 1e-4 and is labelled every other decade, 10, 0.1 and 0.001 (a linear axis would read 0,
  // 0.2, ...; the terms' y axis has 1 and 0.01, the DARE chart's axes 0.2 steps).
  EXPECT_NE(html.find("term against ΔL (symmetric log, linear within ±0.0001)"), std::string::npos);
  EXPECT_NE(html.find(">0.001</text>"), std::string::npos);

  in["merge"] = {{"config", {{"experts", {{{"name", "math"}}, {{"name", "order"}}}}}},
                 {"models",
                  {{"base", {{"math", {{"accuracy", 0.1}}}, {"order", {{"accuracy", 0.05}}}}},
                   {"math", {{"math", {{"accuracy", 0.95}}}, {"order", {{"accuracy", 0.1}}}}},
                   {"order", {{"math", {{"accuracy", 0.1}}}, {"order", {{"accuracy", 0.97}}}}}}},
                 {"points",
                  {{{"label", "TIES density=0.5"},
                    {"tasks",
                     {{"math",
                       {{"accuracy", 0.8},
                        {"approximation_term", 0.3},
                        {"true_delta_loss", 0.35},
                        {"per_tensor", {{{"name", "model.layers.0.mlp.up_proj.weight"}, {"contribution", 0.2}}}}}},
                      {"order", {{"accuracy", 0.7}, {"approximation_term", 0.4}, {"true_delta_loss", 0.5}}}}}}}}};
  const std::string with_merge = experiments::family_report_html(in);
  EXPECT_EQ(with_merge.find("The merge experiment was not run."), std::string::npos);
  EXPECT_NE(with_merge.find("TIES density=0.5"), std::string::npos);
  EXPECT_NE(with_merge.find("model.layers.0.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(with_merge.find("order expert"), std::string::npos);
}
