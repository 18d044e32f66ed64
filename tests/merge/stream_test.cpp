// Streamed merge methods (MethodStream): for every sparsifying method of the task-vector family,
// the output of read passes plus a block-by-block output pass is bit-identical to the
// whole-tensor merge() — tensors larger than the block, ties at the magnitude cut, zeros, negative
// weights, 1-D, 3-D and tiny tensors, f32 and bf16, both conventions, blocks of 7, 64 and 1000
// elements — with the same warnings and errors; util::RankSelect against a sort; and end to end,
// `deltaedit merge` writes the same tensors streamed (any thread count) as buffered.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "merge_cli_util.h"
#include "merge_test_util.h"
#include "util/error.h"
#include "util/rank_select.h"

namespace deltaedit::merge::test {
namespace {

struct Streamed {
  Result r;
  int passes = 0;  // read passes before the output pass
};

// merge() through the stream, in blocks of `block` rounded up to the quantum; the blocks' model
// values are writable copies when `writable` (as the executor hands them).
Streamed run_streamed(std::string_view name, const Case& c, uint64_t block, bool writable) {
  const Method& m = method(name);
  const TensorJob whole = job_of(c);
  const auto plan = m.stream_plan(whole);
  if (!plan) throw std::runtime_error("no stream plan");
  const uint64_t n = count_of(c.shape);
  const uint64_t b = (block + plan->quantum - 1) / plan->quantum * plan->quantum;
  auto s = m.stream(whole);
  Streamed out;
  out.r.out.assign(n, -12345.0f);
  std::vector<std::vector<float>> copies(c.models.size());
  const auto block_job = [&](uint64_t off) {
    const uint64_t len = std::min(b, n - off);
    TensorJob j = job_of(c, off, len);
    if (writable) {
      for (size_t k = 0; k < j.models.size(); ++k) {
        copies[k].assign(j.models[k].values.begin(), j.models[k].values.end());
        j.models[k].values = copies[k];
      }
      j.model_values_writable = true;
    }
    return j;
  };
  while (s->next_pass()) {
    ++out.passes;
    for (uint64_t off = 0; off < n; off += b) s->observe(block_job(off));
  }
  for (uint64_t off = 0; off < n; off += b) {
    const TensorJob j = block_job(off);
    s->merge(j, std::span<float>(out.r.out).subspan(off, j.base->values.size()), out.r.warnings);
  }
  return out;
}

// Task vectors with many equal magnitudes (multiples of `step`), some exact zeros, both signs.
std::vector<float> finetune(const std::vector<float>& base, uint64_t seed, float step, bool bf16) {
  const std::vector<float> g = gaussian(base.size(), seed, 1.0);
  std::vector<float> v(base.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const float q = std::round(g[i] * 3.0f);  // −9..9, about a fifth of them 0
    v[i] = (i % 11 == 3) ? base[i] : base[i] + step * q;
  }
  return bf16 ? to_bf16(v) : v;
}

Case make_case(std::vector<int64_t> shape, bool bf16, uint64_t seed, const Params& p0,
               const Params& p1, const Params& p2) {
  Case c;
  c.shape = std::move(shape);
  c.work = bf16 ? WorkType::BF16 : WorkType::F32;
  const size_t n = count_of(c.shape);
  std::vector<float> base = gaussian(n, seed, 0.02);
  if (bf16) base = to_bf16(base);
  // bf16: steps of 2^-10 and 2^-12 stay exact on base values of ~0.02.
  c.models = {Model{finetune(base, seed + 1, 0x1p-10f, bf16), p0, 1},
              Model{finetune(base, seed + 2, 0x1p-12f, bf16), p1, 2},
              Model{finetune(base, seed + 3, 0x1p-10f, bf16), p2, 3}};
  c.base = Model{std::move(base), {}, 0};
  return c;
}

struct Variant {
  const char* method;
  Params p0, p1, p2, global;
  Conventions conventions = Conventions::Mergekit;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"ties",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", -0.3}, {"density", 0.3}},
       {{"weight", 0.8}, {"density", 1.0}},
       {}},
      {"ties",
       {{"weight", 0.5}, {"density", 0.2}},
       {{"weight", 0.3}, {"density", 0.7}},
       {{"weight", 0.8}, {"density", 0.5}},
       {{"rescale", 1.0}, {"lambda", 0.7}}},
      {"ties",
       {{"weight", 1.0}, {"density", 0.4}},
       {{"weight", -1.0}, {"density", 0.4}},
       {{"weight", 0.5}, {"density", 0.9}},
       {},
       Conventions::Paper},
      {"dare_ties",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", -0.3}, {"density", 0.3}},
       {{"weight", 0.8}, {"density", 0.9}},
       {}},
      {"dare_ties",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", 0.3}, {"density", 0.3}},
       {{"weight", 0.8}, {"density", 0.9}},
       {{"normalize", 1.0}},
       Conventions::Paper},
      {"dare_linear",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", -0.3}, {"density", 0.3}},
       {{"weight", 0.8}, {"density", 1.0}},
       {}},
      {"breadcrumbs",
       {{"weight", 0.5}, {"density", 0.5}, {"gamma", 0.05}},
       {{"weight", -0.3}, {"density", 0.9}, {"gamma", 0.2}},
       {{"weight", 0.8}, {"density", 0.3}},
       {}},
      {"breadcrumbs",
       {{"weight", 0.5}, {"density", 0.5}, {"gamma", 0.05}},
       {{"weight", 0.3}, {"density", 0.9}, {"gamma", 0.0}},
       {{"weight", 0.8}, {"density", 0.3}},
       {{"rescale", 1.0}}},
      {"breadcrumbs_ties",
       {{"weight", 0.5}, {"density", 0.6}, {"gamma", 0.1}},
       {{"weight", -0.3}, {"density", 0.4}},
       {{"weight", 0.8}, {"density", 0.5}, {"gamma", 0.6}},
       {}},
      {"breadcrumbs_ties",
       {{"weight", 0.5}, {"density", 0.6}, {"gamma", 0.1}},
       {{"weight", 0.3}, {"density", 0.4}},
       {{"weight", 0.8}, {"density", 0.5}},
       {},
       Conventions::Paper},
      {"della",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", -0.3}, {"density", 0.4}},
       {{"weight", 0.8}, {"density", 0.7}, {"epsilon", 0.1}},
       {}},
      {"della",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", 0.3}, {"density", 0.0}},
       {{"weight", 0.8}, {"density", 0.7}, {"epsilon", 0.1}},
       {},
       Conventions::Paper},
      {"della_linear",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", -0.3}, {"density", 0.4}},
       {{"weight", 0.8}, {"density", 0.7}, {"epsilon", 0.1}},
       {}},
      {"della_linear",
       {{"weight", 0.5}, {"density", 0.5}},
       {{"weight", 0.3}, {"density", 0.4}},
       {{"weight", 0.8}, {"density", 1.0}},
       {{"rescale", 0.0}}},
  };
  return v;
}

std::string label(const Variant& v, const std::vector<int64_t>& shape, bool bf16, uint64_t block) {
  std::string s = std::string(v.method) +
                  (v.conventions == Conventions::Paper ? " paper" : " mergekit") + " shape [";
  for (int64_t d : shape) s += std::to_string(d) + ",";
  return s + "] " + (bf16 ? "bf16" : "f32") + " block " + std::to_string(block);
}

TEST(StreamedMerge, EveryMethodMatchesTheWholeTensorBitForBit) {
  const std::vector<std::vector<int64_t>> shapes = {{37, 29}, {1000}, {5, 6, 7}, {60}, {3, 1}};
  int compared = 0;
  for (const Variant& v : variants()) {
    for (const auto& shape : shapes) {
      for (bool bf16 : {false, true}) {
        Case c = make_case(shape, bf16, 11 + compared, v.p0, v.p1, v.p2);
        c.global = v.global;
        c.conventions = v.conventions;
        // Tiny tensors: breadcrumbs' int(γ·n) = 0 and ties' int(d·n) = 0 are handled below.
        std::optional<Result> whole;
        std::string whole_error;
        try {
          whole = run(v.method, c);
        } catch (const Error& e) {
          whole_error = e.what();
        }
        for (uint64_t block : {uint64_t{7}, uint64_t{64}, uint64_t{1000}}) {
          for (bool writable : {false, true}) {
            SCOPED_TRACE(label(v, shape, bf16, block) + (writable ? " writable" : ""));
            try {
              const Streamed s = run_streamed(v.method, c, block, writable);
              ASSERT_TRUE(whole) << "the whole tensor failed: " << whole_error;
              EXPECT_TRUE(same_bytes(s.r.out, whole->out));
              EXPECT_EQ(s.r.warnings, whole->warnings);
              ++compared;
            } catch (const Error& e) {
              EXPECT_FALSE(whole) << "streamed only: " << e.what();
              EXPECT_EQ(std::string(e.what()), whole_error);
            }
          }
        }
      }
    }
  }
  EXPECT_GT(compared, 600);
}

TEST(StreamedMerge, LargeTensorsAcrossBlocksAndHistogramPasses) {
  // 70 000 entries: ties and breadcrumbs cuts with distinct f32 keys need the low-bits pass; bf16
  // keys are found in one pass (all low key bits zero).
  for (const char* name : {"ties", "breadcrumbs", "dare_ties", "della_linear"}) {
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(std::string(name) + (bf16 ? " bf16" : " f32"));
      Case c = make_case({250, 280}, bf16, 5, {{"weight", 0.5}, {"density", 0.5}},
                         {{"weight", -0.3}, {"density", 0.4}}, {{"weight", 0.8}, {"density", 0.7}});
      // Distinct magnitudes in model 0 (continuous Gaussian task vector).
      const std::vector<float> g = gaussian(c.base->values.size(), 99, 1e-3);
      for (size_t i = 0; i < g.size(); ++i) c.models[0].values[i] = c.base->values[i] + g[i];
      if (bf16) c.models[0].values = to_bf16(c.models[0].values);
      const Result whole = run(name, c);
      for (uint64_t block : {uint64_t{4096}, uint64_t{65536}}) {
        const Streamed s = run_streamed(name, c, block, true);
        EXPECT_TRUE(same_bytes(s.r.out, whole.out)) << block;
        const std::string n(name);
        if (n == "ties" || n == "breadcrumbs") {
          EXPECT_EQ(s.passes, bf16 ? 1 : 2);
        } else {
          EXPECT_EQ(s.passes, 1);  // the L1 sums of the rescale
        }
      }
    }
  }
}

TEST(StreamedMerge, TiesAtTheCutKeepTheLowerIndexAcrossBlocks) {
  Case c;
  c.shape = {12};
  c.base = Model{std::vector<float>(12, 0.0f), {}, 0};
  // k = 6 of eight entries of magnitude 2: indices 1, 2, 3, 5, 7, 8 win over 10 and 11.
  c.models = {
      Model{{1, -2, 2, 2, 0.5, -2, 0, 2, -2, 1, 2, 2}, {{"weight", 1.0}, {"density", 0.5}}, 0}};
  const std::vector<float> want = {0, -2, 2, 2, 0, -2, 0, 2, -2, 0, 0, 0};
  EXPECT_EQ(run("ties", c).out, want);
  for (uint64_t block : {1, 2, 5, 7}) EXPECT_EQ(run_streamed("ties", c, block, false).r.out, want);
}

TEST(StreamedMerge, DellaBlocksAreWholeRows) {
  Case c = make_case({9, 13}, false, 3, {{"weight", 1.0}, {"density", 0.5}},
                     {{"weight", 1.0}, {"density", 0.5}}, {{"weight", 1.0}, {"density", 0.5}});
  const auto plan = method("della").stream_plan(job_of(c));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->quantum, 13u);
  c.shape = {2, 3, 5};
  c.base->values.resize(30);
  for (auto& m : c.models) m.values.resize(30);
  EXPECT_EQ(method("della").stream_plan(job_of(c))->quantum, 15u);  // 3 rows of stride 5
  EXPECT_EQ(method("ties").stream_plan(job_of(c))->quantum, 1u);
}

TEST(StreamedMerge, OpsOnTaskVectorsNeedTheWholeTensor) {
  Case c = make_case({40}, false, 3, {{"weight", 1.0}, {"density", 0.5}},
                     {{"weight", 1.0}, {"density", 0.5}}, {{"weight", 1.0}, {"density", 0.5}});
  TensorJob j = job_of(c);
  EXPECT_TRUE(method("ties").stream_plan(j));
  j.edit_task_vector = [](size_t, std::span<float>) {};
  EXPECT_FALSE(method("ties").stream_plan(j));
  EXPECT_FALSE(method("linear").stream_plan(job_of(c)));
}

// util::RankSelect against a sorted copy: the key at each rank, the keys below and equal to it.
TEST(RankSelect, MatchesASortInAnyPieces) {
  for (int trial = 0; trial < 6; ++trial) {
    const size_t n = trial < 3 ? 5000 : 70000;
    const std::vector<float> g = gaussian(n, 40 + trial);
    std::vector<uint32_t> keys(n);
    for (size_t i = 0; i < n; ++i) {
      float x = trial % 3 == 0 ? std::round(g[i] * 8.0f) : g[i];  // many ties, or few
      if (trial % 3 == 2) x = static_cast<float>(bf16_of_float(x));
      std::memcpy(&keys[i], &x, 4);
      keys[i] &= 0x7FFFFFFFu;
    }
    std::vector<uint32_t> sorted = keys;
    std::sort(sorted.begin(), sorted.end());
    const std::vector<uint64_t> ranks = {0, n / 3, n / 2, n - 1};
    util::RankSelect s(n, ranks);
    int passes = 0;
    while (s.next_pass()) {
      ++passes;
      for (size_t off = 0; off < n; off += 777) {
        const size_t c = std::min<size_t>(777, n - off);
        s.add(c, [&](size_t j) { return keys[off + j]; });
      }
    }
    EXPECT_LE(passes, 2);
    if (trial % 3 == 2) {
      EXPECT_EQ(passes, 1);
    }
    for (size_t j = 0; j < ranks.size(); ++j) {
      const uint32_t v = sorted[ranks[j]];
      const auto lo = std::lower_bound(sorted.begin(), sorted.end(), v);
      const auto hi = std::upper_bound(sorted.begin(), sorted.end(), v);
      EXPECT_EQ(s.cut(j).value, v) << trial << " rank " << ranks[j];
      EXPECT_EQ(s.cut(j).below, uint64_t(lo - sorted.begin()));
      EXPECT_EQ(s.cut(j).equal, uint64_t(hi - lo));
    }
  }
}

}  // namespace
}  // namespace deltaedit::merge::test

// ---- end to end -----------------------------------------------------------------------------

namespace {

using namespace deltaedit;
using namespace deltaedit::testing;

// Base and three fine-tunes: f32 and bf16 matrices above the 65 536-element block, a 1-D
// tensor above it, a small norm; task vectors with ties and zeros.
void make_stream_models(const fs::path& dir) {
  const auto tensors = [](uint32_t k) {
    const auto vals = [&](size_t n, uint32_t seed, float scale) {
      std::vector<float> base = random_values(n, seed, scale);
      if (k == 0) return base;
      std::vector<float> d = random_values(n, seed * 7 + k, 1.0f);
      for (size_t i = 0; i < n; ++i)
        base[i] += (i % 13 == 0) ? 0.0f : std::round(d[i] * 3.0f) * 0x1p-10f;
      return base;
    };
    return std::vector<SynthTensor>{
        {"model.layers.0.mlp.up_proj.weight",
         io::DType::F32,
         {300, 257},
         vals(300 * 257, 1, 0.02f)},
        {"model.layers.0.mlp.down_proj.weight",
         io::DType::BF16,
         {257, 300},
         vals(257 * 300, 2, 0.02f)},
        {"model.layers.0.input_layernorm.weight", io::DType::F32, {70000}, vals(70000, 3, 1.0f)},
        {"model.layers.0.post_attention_layernorm.weight",
         io::DType::F32,
         {64},
         vals(64, 4, 1.0f)}};
  };
  const char* names[] = {"base", "a", "b", "c"};
  for (uint32_t k = 0; k < 4; ++k) write_model(dir / names[k], tensors(k), 1);
}

std::string method_yaml(const fs::path& dir, const std::string& method, bool ops) {
  const std::string extra = method.rfind("breadcrumbs", 0) == 0 ? ", gamma: 0.05"
                            : method.rfind("della", 0) == 0     ? ", epsilon: 0.1"
                                                                : "";
  std::string y =
      "merge_method: " + method + "\nbase_model: " + (dir / "base").string() + "\nmodels:\n";
  const char* weights[] = {"0.5", "-0.3", "0.8"};
  const char* densities[] = {"0.5", "0.4", "0.6"};
  const char* names[] = {"a", "b", "c"};
  for (int k = 0; k < 3; ++k) {
    y += "  - model: " + (dir / names[k]).string() + "\n    parameters: {weight: " + weights[k] +
         ", density: " + densities[k] + extra + "}\n";
    // A no-op op chain makes every tensor take the whole-tensor path.
    if (ops && k == 0) y += "    deltaedit: {ops: [\"scale:alpha=0\"]}\n";
  }
  return y;
}

void expect_same_tensors(const fs::path& a, const fs::path& b) {
  auto x = io::Checkpoint::open(a), y = io::Checkpoint::open(b);
  ASSERT_EQ(x.names(), y.names());
  for (const auto& n : x.names()) {
    auto p = x.data(n), q = y.data(n);
    EXPECT_TRUE(p.size() == q.size() && std::memcmp(p.data(), q.data(), p.size()) == 0) << n;
  }
}

TEST(StreamedMergeCli, SameTensorsStreamedOnAnyThreadsAndBuffered) {
  TempDir t;
  make_stream_models(t.path);
  for (const std::string method : {"ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della",
                                   "della_linear", "dare_linear"}) {
    SCOPED_TRACE(method);
    write_text(t / "s.yaml", method_yaml(t.path, method, false));
    write_text(t / "w.yaml", method_yaml(t.path, method, true));
    const auto run = [&](const char* cfg, const char* out, const char* threads) {
      auto r = run_cli({"merge", (t / cfg).string(), "--out", (t / out).string(), "--threads",
                        threads, "--seed", "5", "--json"});
      EXPECT_EQ(r.status, 0) << r.err;
      return r;
    };
    const auto s1 = run("s.yaml", "s1", "1");
    run("s.yaml", "s2", "2");
    const auto w = run("w.yaml", "w", "2");
    // The three large tensors stream (1-D della rows: the whole 70 000-entry row per block).
    EXPECT_NE(s1.out.find("\"streamed_tensors\": 3"), std::string::npos) << s1.out;
    EXPECT_NE(w.out.find("\"streamed_tensors\": 0"), std::string::npos) << w.out;
    expect_same_dirs(t / "s1", t / "s2");
    expect_same_tensors(t / "s1", t / "w");
    for (const char* d : {"s1", "s2", "w"}) fs::remove_all(t / d);
  }
}

}  // namespace
