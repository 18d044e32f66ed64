// Approximation term, data loading, evaluation and gradients against closed forms and fixtures.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "engine/edit_engine.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "model/evaluate.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace deltaedit;

namespace {
fs::path fixture(const std::string& rel) { return fs::path(DELTAEDIT_TEST_DATA) / "hf-reference" / rel; }

std::vector<float> read_f32(const io::SafetensorsFile& f, const std::string& name) {
  const auto* t = f.header().find(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<float> v(t ? t->numel() : 0);
  if (t) io::to_f32(f.data(*t), t->dtype, v);
  return v;
}

// The fixture's batch (2 × 24 ids) as pre-tokenized records: every position scored, like the
// reference loss model(input_ids, labels=input_ids).
model::EvalSet fixture_set(const io::SafetensorsFile& ref) {
  const auto* t = ref.header().find("input_ids");
  std::vector<int64_t> ids(t->numel());
  std::memcpy(ids.data(), ref.data(*t).data(), ids.size() * 8);
  std::string jsonl;
  const int64_t T = t->shape[1];
  for (int64_t b = 0; b < t->shape[0]; ++b) {
    nlohmann::json r;
    r["input_ids"] = std::vector<int64_t>(ids.begin() + b * T, ids.begin() + (b + 1) * T);
    jsonl += r.dump() + "\n";
  }
  auto recs = text::parse_jsonl(jsonl, "fixture", nullptr);
  return model::make_eval_set(std::move(recs), 2, model::LossKind::CausalLM);
}
}  // namespace

// Quadratic loss L(W) = ½‖W‖²: ⟨∇L(W+tD), D⟩ = ⟨W,D⟩ + t‖D‖², exact ΔL = ⟨W,D⟩ + ½‖D‖².
// The left sum gives ⟨W,D⟩ + ‖D‖²(C−1)/(2C): it under-estimates ΔL by exactly ‖D‖²/(2C);
// midpoint and trapezoid rules are exact for a linear integrand.
TEST(Riemann, QuadraticLossClosedForm) {
  const double wd[2] = {0.7, -1.3};   // ⟨W, D⟩ per tensor
  const double dd[2] = {2.0, 0.5};    // ‖D‖² per tensor
  const double exact = (wd[0] + wd[1]) + 0.5 * (dd[0] + dd[1]);
  auto dots = [&](double t) { return std::vector<double>{wd[0] + t * dd[0], wd[1] + t * dd[1]}; };
  for (int C : {1, 2, 5, 10, 100}) {
    auto left = model::riemann_sum(C, model::Rule::Left, 2, dots);
    EXPECT_NEAR(exact - left.total, (dd[0] + dd[1]) / (2.0 * C), 1e-12) << C;
    EXPECT_NEAR(left.per_tensor[0] + left.per_tensor[1], left.total, 1e-15);
    EXPECT_NEAR(model::riemann_sum(C, model::Rule::Mid, 2, dots).total, exact, 1e-12) << C;
    EXPECT_NEAR(model::riemann_sum(C, model::Rule::Trapezoid, 2, dots).total, exact, 1e-12) << C;
  }
  auto n = model::quadrature_nodes(5, model::Rule::Left);
  ASSERT_EQ(n.size(), 5u);
  EXPECT_DOUBLE_EQ(n[4].first, 0.8);  // the paper's nodes 0, 0.2, ..., 0.8
  EXPECT_THROW(model::quadrature_nodes(0, model::Rule::Left), Error);
}

// C = 1 is the first-order term ⟨∇L(W_post), D⟩; the fixture gives ∇L(W_post) and D.
TEST(Approx, FirstOrderTermMatchesFixtureAndConverges) {
  for (const std::string arch : {"llama", "qwen2", "mistral"}) {
    auto base = io::Checkpoint::open(fixture(arch + "/base"));
    auto post = io::Checkpoint::open(fixture(arch + "/post"));
    auto ref = io::SafetensorsFile::open(fixture(arch + "/ref.safetensors"));
    auto chain = engine::OpChain::build({"bitdelta"}, 0, "", "");
    auto inc = engine::edit_increments(chain, base, post, nullptr);
    // Reference ⟨grad_post, D⟩ with D = edit_delta − (post − base), in f64.
    double want = 0;
    for (const auto& t : ref.header().tensors) {
      if (t.name.rfind("grad_post.", 0) != 0) continue;
      const std::string n = t.name.substr(10);
      auto g = read_f32(ref, t.name), e = read_f32(ref, "edit_delta." + n);
      std::vector<float> b(g.size()), p(g.size());
      io::to_f32(base.data(n), base.info(n).dtype, b);
      io::to_f32(post.data(n), post.info(n).dtype, p);
      for (size_t i = 0; i < g.size(); ++i) want += double(g[i]) * (double(e[i]) - (double(p[i]) - double(b[i])));
    }
    auto m = model::Model::load(post);
    auto set = fixture_set(ref);
    auto r1 = model::approximation_term(m, set, inc.d, inc.delta_sumsq, 1, model::Rule::Left, false);
    EXPECT_NEAR(r1.approximation_term, want, 1e-4 * std::fabs(want)) << arch;
    // True ΔL against the fixture's path losses (t = 0 and t = 1).
    auto pl = read_f32(ref, "path_loss");
    EXPECT_NEAR(r1.loss_post, pl[0], 1e-5) << arch;
    EXPECT_NEAR(r1.loss_edit, pl[4], 1e-5) << arch;
    EXPECT_NEAR(r1.true_delta_loss, double(pl[4]) - double(pl[0]), 2e-5) << arch;
    // Per-tensor contributions sum to the total; more nodes close the gap.
    double s = 0;
    for (const auto& [n, c] : r1.per_tensor) s += c;
    EXPECT_NEAR(s, r1.approximation_term, 1e-9 * std::fabs(s) + 1e-15);
    double prev = std::fabs(r1.gap);
    for (int C : {2, 5, 20}) {
      auto r = model::approximation_term(m, set, inc.d, inc.delta_sumsq, C, model::Rule::Left, false);
      EXPECT_LT(std::fabs(r.gap), prev) << arch << " C=" << C;
      prev = std::fabs(r.gap);
    }
    EXPECT_LT(prev, 0.05 * std::fabs(r1.true_delta_loss)) << arch;
    auto rt = model::approximation_term(m, set, inc.d, inc.delta_sumsq, 20, model::Rule::Trapezoid, true);
    EXPECT_LT(std::fabs(rt.gap), 0.01 * std::fabs(rt.true_delta_loss)) << arch;
    ASSERT_TRUE(rt.fisher_term.has_value());
    EXPECT_GT(*rt.fisher_term, 0.0);
    // The model is back at W_post afterwards.
    EXPECT_NEAR(model::dataset_loss(m, set), pl[0], 1e-5);
    EXPECT_GT(r1.intensity, 0.0);
  }
}

TEST(Data, RecordsMasksAndErrors) {
  auto tok = text::Tokenizer::load(fixture("tokenizers/llama3/tokenizer.json"));
  auto recs = text::parse_jsonl(
      "{\"text\": \"hello world\"}\n\n{\"prompt\": \"Q: 1+1?\", \"response\": \" 2\"}\n{\"input_ids\": [5, 6, 7]}\n"
      "{\"prompt\": \"p\", \"chosen\": \" a\", \"rejected\": \" b\"}\n",
      "mem", &tok);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].line, 1u);
  EXPECT_EQ(recs[1].line, 3u);
  // text: BOS + tokens, every token after the first scored.
  EXPECT_EQ(recs[0].seq.ids, (std::vector<int32_t>(tok.encode("hello world", true))));
  EXPECT_EQ(recs[0].seq.scored.front(), 0);
  // prompt/response: prompt with BOS unscored, response tokens scored.
  auto p = tok.encode("Q: 1+1?", true), r = tok.encode(" 2", false);
  ASSERT_EQ(recs[1].seq.ids.size(), p.size() + r.size());
  for (size_t i = 0; i < recs[1].seq.ids.size(); ++i) EXPECT_EQ(recs[1].seq.scored[i], i >= p.size() ? 1 : 0);
  EXPECT_TRUE(recs[3].preference);
  ASSERT_TRUE(recs[3].rejected.has_value());
  auto line_error = [&](const std::string& text, const std::string& needle) {
    try {
      text::parse_jsonl(text, "data.jsonl", &tok);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("data.jsonl"), std::string::npos) << e.what();
    }
  };
  line_error("{\"text\": \"a\"}\n{oops\n", "line 2");
  line_error("{\"foo\": 1}\n", "line 1: unknown record");
  line_error("{\"prompt\": \"x\"}\n", "needs both");
  line_error("{\"text\": 5}\n", "must be a string");
  line_error("{\"input_ids\": [1, -2]}\n", "non-negative");
  line_error("{\"prompt\": \"x\", \"response\": \"\"}\n", "no scored token");
  line_error("{\"input_ids\": [1, 999999]}\n", "outside the vocabulary");
  // --max-length keeps the first tokens; --limit the first records.
  text::DataOptions o{3, 1};
  auto cut = text::parse_jsonl("{\"input_ids\": [1,2,3,4,5]}\n{\"input_ids\": [1,2]}\n", "m", nullptr, o);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].seq.ids, (std::vector<int32_t>{1, 2, 3}));
}

TEST(Eval, BatchingDoesNotChangeTheLossAndDpoIsConsistent) {
  auto post = io::Checkpoint::open(fixture("llama/post"));
  auto m = model::Model::load(post);
  auto ref = io::SafetensorsFile::open(fixture("llama/ref.safetensors"));
  auto set = fixture_set(ref);
  auto pl = read_f32(ref, "path_loss");
  EXPECT_NEAR(model::dataset_loss(m, set), pl[0], 1e-5);
  auto one = model::make_eval_set(set.records, 1, model::LossKind::CausalLM);
  EXPECT_NEAR(model::dataset_loss(m, one), pl[0], 1e-5);
  // DPO of a model against itself is log 2 for every record.
  auto base = model::Model::load(io::Checkpoint::open(fixture("llama/base")));
  // Preference records built directly as token sequences (the JSONL form needs a tokenizer).
  text::Record r;
  r.preference = true;
  r.seq.ids = {1, 5, 9, 11};
  r.seq.scored = {0, 0, 1, 1};
  r.rejected = text::Sequence{{1, 5, 7, 3, 2}, {0, 0, 1, 1, 1}};
  std::vector<text::Record> recs{r, r};
  auto dset = model::make_eval_set(recs, 2, model::LossKind::DPO, &m, 0.1);
  EXPECT_NEAR(model::dataset_loss(m, dset), std::log(2.0), 1e-6);
  auto dset2 = model::make_eval_set(recs, 1, model::LossKind::DPO, &base, 0.1);
  const double l = model::dataset_loss(m, dset2);
  EXPECT_TRUE(std::isfinite(l));
  EXPECT_NE(l, std::log(2.0));
  auto g = model::dataset_gradients(m, dset2);
  EXPECT_NEAR(g.loss(), l, 1e-6);
  EXPECT_THROW(model::make_eval_set(set.records, 2, model::LossKind::DPO, &m), Error);
}
