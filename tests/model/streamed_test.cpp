// The streamed passes (one unit of weights at a time) against the in-memory model on the same data:
// the approximation term, its per-tensor contributions, the true ΔL, losses and gradients.
#include "model/streamed.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/edit_engine.h"
#include "engine/increment_source.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "model/evaluate.h"
#include "text/dataset.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace deltaedit;

namespace {
fs::path fixture(const std::string& rel) {
  return fs::path(DELTAEDIT_TEST_DATA) / "hf-reference" / rel;
}
fs::path zoo(const std::string& rel) {
  return fs::path(DELTAEDIT_SOURCE_DIR) / "models" / "zoo" / "retrain" / rel;
}

// The fixture's batch (2 × 24 ids) as pre-tokenized records, every position scored.
std::vector<text::Record> fixture_records(const std::string& arch) {
  auto ref = io::SafetensorsFile::open(fixture(arch + "/ref.safetensors"));
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
  return text::parse_jsonl(jsonl, "fixture", nullptr);
}

// |a − b| within 1e-6 of |b| (absolute floor `floor` for values that are zero in both).
void expect_rel(double a, double b, const std::string& what, double rel = 1e-6) {
  EXPECT_LE(std::fabs(a - b), rel * std::fabs(b) + 1e-300)
      << what << ": streamed " << a << " in memory " << b;
}

struct Case {
  std::string base, post;
  std::vector<text::Record> records;
  std::string ref;  // DPO loss with this reference when set (records are preference pairs)
};

// The in-memory set (reference log-probabilities from a Model) and the streamed one (from a
// streamed forward walk of the reference), as approx builds each.
model::EvalSet memory_set(const Case& c, size_t batch_size, const model::LoadOptions& lo) {
  if (c.ref.empty()) return model::make_eval_set(c.records, batch_size, model::LossKind::CausalLM);
  auto rck = io::Checkpoint::open(c.ref);
  auto ref = model::Model::load(rck, lo);
  return model::make_eval_set(c.records, batch_size, model::LossKind::DPO, &ref, 0.1);
}
model::EvalSet streamed_set(const Case& c, size_t batch_size, const model::LoadOptions& lo) {
  if (c.ref.empty()) return model::make_eval_set(c.records, batch_size, model::LossKind::CausalLM);
  auto rck = io::Checkpoint::open(c.ref);
  model::StreamedModel ref(rck, lo);
  return model::make_dpo_eval_set(
      c.records, batch_size, 0.1,
      [&](const std::vector<model::Batch>& b) { return ref.sequence_logprobs(b); });
}

// Streamed and in-memory approx of one edit; every reported quantity agrees within 1e-6
// relative (`parts_rel` for the node values and per-tensor contributions).
void compare_approx(const Case& c, const std::vector<std::string>& ops, size_t batch_size,
                    int steps, model::Rule rule, bool fisher,
                    torch::ScalarType dtype = torch::kFloat32, int64_t head_slab = 0,
                    double parts_rel = 1e-6) {
  const std::string label = c.post + (c.ref.empty() ? "" : " (DPO)") + " " + ops[0] +
                            " C=" + std::to_string(steps) + " batch " + std::to_string(batch_size);
  auto base = io::Checkpoint::open(c.base);
  auto post = io::Checkpoint::open(c.post);
  auto chain = engine::OpChain::build(ops, 7, "", "");
  model::LoadOptions lo;
  lo.dtype = dtype;
  auto set = memory_set(c, batch_size, lo);
  auto sset = streamed_set(c, batch_size, lo);

  auto inc = engine::edit_increments(chain, base, post, nullptr);
  auto m = model::Model::load(post, lo);
  auto want = model::approximation_term(m, set, inc.d, inc.delta_sumsq, steps, rule, fisher);

  engine::IncrementSource src(chain, base, post, nullptr);
  model::StreamedEdit se;
  se.names = src.names();
  se.increment = [&](const std::string& n, double& dss) {
    return model::owning_tensor(src.increment(n, &dss));
  };
  se.delta_sumsq = [&](const std::string& n) { return src.delta_sumsq(n); };
  model::StreamedModel sm(post, lo);
  sm.set_head_slab_rows(head_slab);
  size_t walked = 0, total = 0;
  sm.set_progress([&](const char*, size_t done, size_t n) {
    EXPECT_EQ(done, walked + 1);
    walked = done;
    total = n;
  });
  auto got = sm.approximation_term(sset, se, steps, rule, fisher);
  // Every unit reported once forward and once backward: embedding, layers, head.
  EXPECT_EQ(walked, total);
  EXPECT_EQ(total, size_t(2 * sm.arch().layers + 3));

  expect_rel(got.approximation_term, want.approximation_term, label + " term");
  expect_rel(got.loss_post, want.loss_post, label + " L(W_post)");
  expect_rel(got.loss_edit, want.loss_edit, label + " L(W_edit)");
  expect_rel(got.true_delta_loss, want.true_delta_loss, label + " true ΔL");
  expect_rel(got.intensity, want.intensity, label + " intensity");
  ASSERT_EQ(got.fisher_term.has_value(), want.fisher_term.has_value());
  if (want.fisher_term) expect_rel(*got.fisher_term, *want.fisher_term, label + " Fisher term");
  ASSERT_EQ(got.nodes_t, want.nodes_t) << label;
  for (size_t i = 0; i < want.nodes_value.size(); ++i)
    expect_rel(got.nodes_value[i], want.nodes_value[i], label + " node " + std::to_string(i),
               parts_rel);
  ASSERT_EQ(got.per_tensor.size(), want.per_tensor.size()) << label;
  ASSERT_FALSE(want.per_tensor.empty());
  for (size_t i = 0; i < want.per_tensor.size(); ++i) {
    EXPECT_EQ(got.per_tensor[i].first, want.per_tensor[i].first);
    expect_rel(got.per_tensor[i].second, want.per_tensor[i].second,
               label + " " + want.per_tensor[i].first, parts_rel);
  }
  // The edit actually moved the loss, so the comparison is not of zeros.
  EXPECT_GT(std::fabs(want.true_delta_loss), 1e-7) << label;
  EXPECT_GT(std::fabs(want.approximation_term), 1e-7) << label;
}

Case fixture_case(const std::string& arch) {
  return {fixture(arch + "/base").string(), fixture(arch + "/post").string(), fixture_records(arch),
          ""};
}

Case zoo_case(size_t limit) {
  auto tok = text::Tokenizer::load(zoo("post"));
  text::DataOptions o{0, limit};
  return {zoo("base").string(), zoo("post").string(),
          text::load_jsonl(zoo("data/eval.jsonl"), &tok, o), ""};
}
}  // namespace

// Llama, Qwen2 (tied head: the embedding's gradient is the head's and the lookup's) and Mistral.
TEST(StreamedApprox, MatchesInMemoryOnFixtures) {
  for (const std::string arch : {"llama", "qwen2", "mistral"}) {
    auto c = fixture_case(arch);
    compare_approx(c, {"dare:p=0.9"}, 2, 5, model::Rule::Left, false);
    // One sequence per batch: the f64 sums over batches and the per-batch Fisher.
    compare_approx(c, {"bitdelta"}, 1, 3, model::Rule::Trapezoid, true);
    compare_approx(c, {"dare:p=0.5"}, 1, 4, model::Rule::Mid, true);
  }
}

TEST(StreamedApprox, MatchesInMemoryInBf16AndFromShards) {
  auto c = fixture_case("llama");
  compare_approx(c, {"dare:p=0.9"}, 2, 2, model::Rule::Left, false, torch::kBFloat16);
  // A bf16 sharded post checkpoint (the tensors stay mapped across files).
  c.post = fixture("llama/post_bf16_sharded").string();
  compare_approx(c, {"magnitude:p=0.3"}, 1, 2, model::Rule::Left, true);
}

TEST(StreamedApprox, MatchesInMemoryOnTheZooPair) {
  auto c = zoo_case(6);
  compare_approx(c, {"dare:p=0.9"}, 4, 5, model::Rule::Left, false);
}

// A head formed and differentiated in row slabs (as a vocabulary over 512 MB is) sums
// ∂L/∂h = Σ_v g_v·W_v slab by slab instead of in one product: f32 re-association, so the term,
// the losses, ΔL and the Fisher term stay within 1e-6 while single tensors' contributions (the
// small ones, most sensitive to that rounding) are held to 1e-4.
TEST(StreamedApprox, SlicedHeadMatchesInMemory) {
  compare_approx(fixture_case("llama"), {"dare:p=0.9"}, 1, 3, model::Rule::Left, true,
                 torch::kFloat32, 96, 1e-4);
  compare_approx(fixture_case("mistral"), {"bitdelta"}, 2, 2, model::Rule::Trapezoid, false,
                 torch::kFloat32, 333, 1e-4);
  compare_approx(zoo_case(6), {"dare:p=0.9"}, 4, 5, model::Rule::Left, false, torch::kFloat32, 100,
                 1e-4);
}

TEST(StreamedModel, LossAndGradientEqualTheModelsOnTheZoo) {
  auto c = zoo_case(5);
  auto post = io::Checkpoint::open(c.post);
  auto set = model::make_eval_set(c.records, 2, model::LossKind::CausalLM);
  auto m = model::Model::load(post);
  model::StreamedModel sm(post);
  expect_rel(sm.loss(set), model::dataset_loss(m, set), "loss");
  auto want = model::dataset_gradients(m, set);
  std::map<std::string, std::vector<float>> got;
  auto r = sm.gradients(set, [&](const std::string& n, int64_t row, const torch::Tensor& g) {
    EXPECT_EQ(g.scalar_type(), torch::kFloat32);
    EXPECT_EQ(row, 0) << n;
    EXPECT_FALSE(got.count(n)) << n << " handed over twice";
    got[n].assign(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
  });
  expect_rel(r.loss(), want.loss(), "gradient pass loss");
  EXPECT_EQ(r.count, want.count);
  ASSERT_EQ(got.size(), want.grads.size());
  for (const auto& [n, g] : want.grads) {
    ASSERT_TRUE(got.count(n)) << n;
    const auto& v = got[n];
    ASSERT_EQ(v.size(), g.values.size()) << n;
    double err = 0, norm = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      err = std::max(err, std::fabs(double(v[i]) - double(g.values[i])));
      norm = std::max(norm, std::fabs(double(g.values[i])));
    }
    EXPECT_LE(err, 1e-6 * norm) << n;
    EXPECT_GT(norm, 0.0) << n;
  }
}

namespace {
// Preference records on the fixture's token ids (prompt of 6, responses of 18 and 14 tokens).
std::vector<text::Record> preference_records(const std::string& arch, size_t n) {
  auto plain = fixture_records(arch);
  std::vector<text::Record> v;
  for (size_t i = 0; i < n; ++i) {
    const auto& a = plain[i % plain.size()].seq.ids;
    const auto& b = plain[(i + 1) % plain.size()].seq.ids;
    text::Record r;
    r.preference = true;
    r.line = i + 1;
    r.seq.ids.assign(a.begin(), a.begin() + 24 - int(i % 3));
    r.seq.scored.assign(r.seq.ids.size(), 1);
    std::fill(r.seq.scored.begin(), r.seq.scored.begin() + 6, 0);
    text::Sequence rej;
    rej.ids.assign(a.begin(), a.begin() + 6);
    rej.ids.insert(rej.ids.end(), b.begin() + 6, b.begin() + 20);
    rej.scored.assign(rej.ids.size(), 1);
    std::fill(rej.scored.begin(), rej.scored.begin() + 6, 0);
    r.rejected = rej;
    v.push_back(std::move(r));
  }
  return v;
}

Case dpo_fixture_case(const std::string& arch, size_t n) {
  return {fixture(arch + "/base").string(), fixture(arch + "/post").string(),
          preference_records(arch, n), fixture(arch + "/base").string()};
}

Case dpo_zoo_case(size_t limit) {
  const fs::path z = fs::path(DELTAEDIT_SOURCE_DIR) / "models" / "zoo";
  auto tok = text::Tokenizer::load(z / "math-dpo");
  text::DataOptions o{0, limit};
  return {(z / "math-sft").string(), (z / "math-dpo").string(),
          text::load_jsonl(z / "data" / "dpo_test.jsonl", &tok, o), (z / "math-sft").string()};
}
}  // namespace

// The DPO loss streamed: the reference's sequence log-probabilities from a streamed walk, the
// chosen and rejected batches of a pair walked together and differentiated as one batch.
TEST(StreamedApprox, DpoMatchesInMemory) {
  // Llama (untied), Qwen2 (tied: the head's pending gradient is the pair's) and one record per
  // batch (the per-batch Fisher of a pair), with a padded batch of unequal lengths.
  compare_approx(dpo_fixture_case("llama", 3), {"dare:p=0.9"}, 2, 3, model::Rule::Left, false);
  compare_approx(dpo_fixture_case("qwen2", 3), {"bitdelta"}, 1, 2, model::Rule::Trapezoid, true);
  compare_approx(dpo_fixture_case("mistral", 2), {"dare:p=0.5"}, 2, 2, model::Rule::Mid, true);
  // A head in row slabs.
  compare_approx(dpo_fixture_case("llama", 2), {"dare:p=0.9"}, 1, 2, model::Rule::Left, true,
                 torch::kFloat32, 96, 1e-4);
  // The shipped DPO stage against its SFT reference, the paper's DPO edit setting.
  compare_approx(dpo_zoo_case(6), {"dare:p=0.9"}, 3, 3, model::Rule::Left, false);
}

TEST(StreamedModel, DpoLossGradientAndReferenceEqualTheModels) {
  auto c = dpo_zoo_case(5);
  auto post = io::Checkpoint::open(c.post);
  auto m = model::Model::load(post);
  auto set = memory_set(c, 2, {});
  auto sset = streamed_set(c, 2, {});
  ASSERT_EQ(sset.ref_chosen.size(), set.ref_chosen.size());
  for (size_t i = 0; i < set.ref_chosen.size(); ++i) {
    EXPECT_TRUE(torch::allclose(sset.ref_chosen[i], set.ref_chosen[i], 1e-6, 1e-5)) << i;
    EXPECT_TRUE(torch::allclose(sset.ref_rejected[i], set.ref_rejected[i], 1e-6, 1e-5)) << i;
  }
  model::StreamedModel sm(post);
  const double want_loss = model::dataset_loss(m, set);
  expect_rel(sm.loss(sset), want_loss, "DPO loss");
  EXPECT_GT(std::fabs(want_loss - std::log(2.0)), 1e-4) << "the DPO stage moved off its reference";
  auto want = model::dataset_gradients(m, set);
  std::map<std::string, std::vector<float>> got;
  auto r = sm.gradients(sset, [&](const std::string& n, int64_t, const torch::Tensor& g) {
    got[n].assign(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
  });
  EXPECT_EQ(r.count, want.count);
  EXPECT_EQ(r.count, 5);  // records, the DPO mean's denominator
  ASSERT_EQ(got.size(), want.grads.size());
  for (const auto& [n, g] : want.grads) {
    ASSERT_TRUE(got.count(n)) << n;
    double err = 0, norm = 0;
    for (size_t i = 0; i < g.values.size(); ++i) {
      err = std::max(err, std::fabs(double(got[n][i]) - double(g.values[i])));
      norm = std::max(norm, std::fabs(double(g.values[i])));
    }
    EXPECT_LE(err, 1e-6 * norm) << n;
    EXPECT_GT(norm, 0.0) << n;
  }
}

TEST(StreamedModel, DpoNeedsPreferenceRecordsAndAReference) {
  auto recs = fixture_records("llama");
  try {
    model::make_dpo_eval_set(recs, 1, 0.1, [](const std::vector<model::Batch>& b) {
      return std::vector<torch::Tensor>(b.size());
    });
    ADD_FAILURE() << "plain records accepted for DPO";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 1"), std::string::npos) << e.what();
  }
  try {
    model::make_dpo_eval_set(preference_records("llama", 1), 1, 0.1, {});
    ADD_FAILURE() << "DPO without a reference";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
  }
}

// The per-tensor source gives exactly the increments edit_increments computes for the whole model.
TEST(IncrementSource, EqualsEditIncrements) {
  auto base = io::Checkpoint::open(fixture("mistral/base"));
  auto post = io::Checkpoint::open(fixture("mistral/post"));
  auto chain = engine::OpChain::build({"dare:p=0.7", "magnitude:p=0.5"}, 3, "", "");
  auto inc = engine::edit_increments(chain, base, post, nullptr);
  engine::IncrementSource src(chain, base, post, nullptr);
  ASSERT_EQ(src.names().size(), inc.d.size());
  double dss = 0;
  for (const auto& n : src.names()) {
    ASSERT_TRUE(inc.d.count(n)) << n;
    std::vector<float> d(inc.d.at(n).size());
    dss += src.increment(n, d);
    EXPECT_EQ(0, std::memcmp(d.data(), inc.d.at(n).data(), d.size() * 4)) << n;
  }
  EXPECT_NEAR(dss, inc.delta_sumsq, 1e-12 * inc.delta_sumsq);
}
