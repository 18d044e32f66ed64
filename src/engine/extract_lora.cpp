#include "engine/extract_lora.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "io/pairing.h"
#include "io/convert.h"
#include "io/peft.h"
#include "io/writer.h"
#include "util/error.h"
#include "util/memory_budget.h"
#include "util/name_regex.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::engine {

using io::pair_tensors;
using io::PairStatus;
using util::MemoryBudget;
using util::parallel_for;

int64_t vllm_rank(int64_t r) {
  for (int64_t v : kVllmRanks)
    if (v >= r) return v;
  throw Error(ErrorKind::Usage, fmt::format("rank {} is above vLLM's largest LoRA rank 512", r));
}

namespace {

constexpr size_t kBlock = 4096;

std::string leaf_of(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Input embeddings take embedding LoRA; output heads are linear.
bool is_input_embedding(const std::string& leaf) {
  return leaf == "embed_tokens" || leaf == "wte" || leaf == "wpe" || leaf == "embed_in";
}
bool is_vocab_layer(const std::string& leaf) {
  return is_input_embedding(leaf) || leaf == "lm_head" || leaf == "embed_out";
}

std::string regex_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (std::strchr(".^$*+?{}[]\\|()", c)) r += '\\';
    r += c;
  }
  return r;
}

// ‖Δ‖² and, when `edited` is given, ‖Δ − edited‖², with Δ = f32(post) − f32(base) exactly as the
// engine forms it; in f64, in element order.
std::pair<double, double> delta_norms(const io::Checkpoint& base, const io::TensorSource& post,
                                      const std::string& name, const float* edited) {
  const auto& bi = base.info(name);
  const auto& pi = post.info(name);
  const auto bb = base.data(name), pb = post.data(name);
  const size_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
  const uint64_t n = pi.numel();
  float b[kBlock], p[kBlock];
  double dd = 0, ee = 0;
  for (uint64_t at = 0; at < n; at += kBlock) {
    if (at % (uint64_t(1) << 20) == 0) io::check_interrupted();
    const size_t c = size_t(std::min<uint64_t>(kBlock, n - at));
    io::to_f32(bb.subspan(at * bsz, c * bsz), bi.dtype, std::span(b, c));
    io::to_f32(pb.subspan(at * psz, c * psz), pi.dtype, std::span(p, c));
    for (size_t i = 0; i < c; ++i) {
      const float d = p[i] - b[i];
      dd += double(d) * double(d);
      if (edited) {
        const double e = double(d) - double(edited[at + i]);
        ee += e * e;
      }
    }
  }
  return {dd, ee};
}

struct Factors {
  int64_t rank = 0;      // written rank (columns of B, rows of A)
  std::vector<float> a;  // rank × a_cols
  std::vector<float> b;  // b_rows × rank
  int64_t a_cols = 0, b_rows = 0;
};

// Appends zero rows to A and zero columns to B up to `rank`.
void pad(Factors& f, int64_t rank) {
  if (rank <= f.rank) return;
  f.a.resize(size_t(rank * f.a_cols), 0.0f);
  std::vector<float> b(size_t(f.b_rows * rank), 0.0f);
  for (int64_t i = 0; i < f.b_rows; ++i)
    std::copy_n(f.b.data() + i * f.rank, f.rank, b.data() + i * rank);
  f.b = std::move(b);
  f.rank = rank;
}

// LoRA factors with B·A = M (p×q, row-major) exactly: the identity on the shorter side.
Factors exact_factors(const float* m, int64_t p, int64_t q) {
  Factors f;
  f.a_cols = q;
  f.b_rows = p;
  if (p <= q) {  // B = I (p×p), A = M
    f.rank = p;
    f.b.assign(size_t(p * p), 0.0f);
    for (int64_t i = 0; i < p; ++i) f.b[size_t(i * p + i)] = 1.0f;
    f.a.assign(m, m + p * q);
  } else {  // A = I (q×q), B = M
    f.rank = q;
    f.a.assign(size_t(q * q), 0.0f);
    for (int64_t i = 0; i < q; ++i) f.a[size_t(i * q + i)] = 1.0f;
    f.b.assign(m, m + p * q);
  }
  return f;
}

struct Candidate {
  std::string tensor, module;
  bool embedding = false;
};

}  // namespace

json ExtractLoraResult::to_json() const {
  json j;
  j["modules"] = json::array();
  double dd = 0, ee = 0, left = 0;
  int64_t rmin = 0, rmax = 0;
  uint64_t factor_bytes = 0;
  for (const auto& m : modules) {
    j["modules"].push_back({{"module", m.module},
                            {"tensor", m.tensor},
                            {"kind", m.embedding ? "embedding" : "linear"},
                            {"shape", {m.rows, m.cols}},
                            {"rank", m.rank},
                            {"svd_rank", m.svd_rank},
                            {"method", m.method},
                            {"delta_norm", m.delta_norm},
                            {"error_norm", m.error_norm},
                            {"rel_error", m.rel_error()},
                            {"bytes", m.bytes}});
    dd += m.delta_norm * m.delta_norm;
    ee += m.error_norm * m.error_norm;
    rmin = rmin == 0 ? m.rank : std::min(rmin, m.rank);
    rmax = std::max(rmax, m.rank);
    factor_bytes += m.bytes;
  }
  j["left_out"] = json::array();
  for (const auto& l : left_out) {
    j["left_out"].push_back(
        {{"tensor", l.tensor}, {"reason", l.reason}, {"delta_norm", l.delta_norm}});
    left += l.delta_norm * l.delta_norm;
  }
  j["saved"] = json::array();
  for (const auto& s : saved) j["saved"].push_back({{"tensor", s.tensor}, {"bytes", s.bytes}});
  j["unchanged_tensors"] = unchanged;
  // rel_error: over the modules; rel_error_all: over all of Δ that was compared, the left-out
  // tensors counting whole (saved tensors are exact).
  j["total"] = {{"modules", modules.size()},
                {"rank_min", rmin},
                {"rank_max", rmax},
                {"delta_norm", std::sqrt(dd)},
                {"error_norm", std::sqrt(ee)},
                {"rel_error", dd > 0 ? std::sqrt(ee / dd) : 0.0},
                {"rel_error_all", dd + left > 0 ? std::sqrt((ee + left) / (dd + left)) : 0.0},
                {"factor_bytes", factor_bytes},
                {"adapter_bytes", adapter_bytes}};
  j["adapter_config"] = adapter_config;
  return j;
}

ExtractLoraResult run_extract_lora(const ExtractLoraRequest& req, const Progress& progress) {
  // 1. Checks without I/O.
  if (req.rank.has_value() == req.energy.has_value())
    throw Error(ErrorKind::Usage, "give exactly one of --rank R and --energy E");
  if (req.rank && *req.rank < 1) throw Error(ErrorKind::Usage, "--rank must be at least 1");
  if (req.energy && !(*req.energy > 0.0 && *req.energy <= 1.0))
    throw Error(ErrorKind::Usage, "--energy must be in (0, 1]");
  if (req.method != "auto" && req.method != "exact" && req.method != "randomized")
    throw Error(ErrorKind::Usage, "--method must be auto, exact or randomized");
  if (req.energy && req.method == "randomized")
    throw Error(ErrorKind::Usage, "--energy needs the full spectrum: use --method exact (or auto)");
  if (req.vllm && !req.save_modules.empty())
    throw Error(ErrorKind::Usage,
                "--vllm writes no modules_to_save: drop --save-modules or --vllm");
  if (req.vllm && req.rank) vllm_rank(*req.rank);  // above 512: usage error now
  for (const auto& m : req.save_modules)
    if (m.empty()) throw Error(ErrorKind::Usage, "--save-modules: empty module name");
  if (fs::exists(req.out))
    throw Error(ErrorKind::Usage, "output already exists; choose a new --out or remove it first",
                req.out.string());
  const util::NameRegex include(req.include, "--include"), exclude(req.exclude, "--exclude");
  const int64_t oversample = 10, power_iters = 4;

  // 2. Inputs and the plan.
  auto base = io::Checkpoint::open(req.base);
  const auto post_source = io::open_post(req.post, base);
  const io::TensorSource& post = *post_source;
  const auto saves = [&](const std::string& module) {
    return std::any_of(req.save_modules.begin(), req.save_modules.end(),
                       [&](const std::string& m) { return ends_with(module, m); });
  };
  ExtractLoraResult result;
  std::vector<Candidate> cands;
  std::vector<std::pair<std::string, std::string>> compare_only;  // tensor, reason if Δ ≠ 0
  for (const auto& p : pair_tensors(base, post)) {
    // The module a tensor belongs to, as peft names it: the name up to its last component.
    const std::string module = p.name.rfind('.') == std::string::npos
                                   ? std::string()
                                   : p.name.substr(0, p.name.rfind('.'));
    if (p.status != PairStatus::Editable) {
      result.left_out.push_back({p.name, p.note, 0.0});
      continue;
    }
    const auto& shape = post.info(p.name).shape;
    if (saves(module)) {
      result.saved.push_back({p.name, post.info(p.name).nbytes()});
      continue;
    }
    const std::string leaf = leaf_of(module);
    const bool linear_weight = shape.size() == 2 && ends_with(p.name, ".weight");
    const bool named = !include.empty() && include.search(p.name);
    if (!util::selected(include, exclude, p.name)) {
      compare_only.emplace_back(p.name, "not selected by --include/--exclude");
    } else if (!linear_weight) {
      compare_only.emplace_back(
          p.name, fmt::format("not a 2-D weight ({}-D {}): norms and biases are not LoRA "
                              "targets; save the module whole with --save-modules",
                              shape.size(), ends_with(p.name, ".bias") ? "bias" : "tensor"));
    } else if (is_vocab_layer(leaf) && !named) {
      compare_only.emplace_back(
          p.name,
          "embedding or output head: left out by default; name it with --include to "
          "extract it, or save it whole with --save-modules");
    } else if (req.vllm && is_input_embedding(leaf)) {
      compare_only.emplace_back(p.name, "embedding LoRA is left out with --vllm");
    } else {
      cands.push_back({p.name, module, is_input_embedding(leaf)});
    }
  }

  // 3. The factors, tensor by tensor (workers, buffers admitted against the budget).
  struct Work {
    ExtractedModule info;
    Factors f;
    bool unchanged = false;
  };
  std::vector<Work> work(cands.size());
  std::vector<double> compare_norm(compare_only.size(), 0.0);
  const size_t total = cands.size() + compare_only.size();
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::mutex progress_mu;
  const auto tick = [&](uint64_t bytes) {
    bytes_done += bytes;
    const size_t d = ++done;
    if (progress) {
      std::lock_guard<std::mutex> g(progress_mu);
      progress(d, total, bytes_done.load());
    }
  };
  MemoryBudget budget(req.max_memory);
  parallel_for(total, std::max(1u, req.threads), [&](size_t i) {
    if (i >= cands.size()) {
      const auto& name = compare_only[i - cands.size()].first;
      MemoryBudget::Hold hold(budget, post.formed_bytes(name));
      compare_norm[i - cands.size()] = std::sqrt(delta_norms(base, post, name, nullptr).first);
      post.release(name);
      base.release(name);
      tick(post.info(name).nbytes());
      return;
    }
    const Candidate& c = cands[i];
    Work& w = work[i];
    const auto& shape = post.info(c.tensor).shape;
    const int64_t rows = shape[0], cols = shape[1], kmin = std::min(rows, cols);
    w.info.module = c.module;
    w.info.tensor = c.tensor;
    w.info.embedding = c.embedding;
    w.info.rows = rows;
    w.info.cols = cols;
    const uint64_t n = uint64_t(rows) * uint64_t(cols);
    // Δ' buffer, the SVD's workspace (bounded by the exact method's), and the factors.
    const uint64_t need =
        post.formed_bytes(c.tensor) + 4 * n +
        8 * (n + 2 * uint64_t(rows + cols) * uint64_t(kmin) + 5 * uint64_t(kmin) * uint64_t(kmin)) +
        8 * uint64_t(rows + cols) * uint64_t(kmin);
    MemoryBudget::Hold hold(budget, need);
    const double dd = delta_norms(base, post, c.tensor, nullptr).first;
    w.info.delta_norm = std::sqrt(dd);
    if (dd == 0.0) {
      w.unchanged = true;
      post.release(c.tensor);
      base.release(c.tensor);
      tick(post.info(c.tensor).nbytes());
      return;
    }
    // The lowrank op of `edit`, keyed like op 0 of an edit with this seed: the same factors.
    const auto run = [&](const std::string& spec) {
      const OpChain chain = OpChain::build({spec}, req.seed, "", "");
      return edit_tensor(chain, base, post, c.tensor, nullptr);
    };
    std::string method;
    std::string spec;
    int64_t want = 0;
    if (req.rank) {
      want = req.vllm ? vllm_rank(*req.rank) : *req.rank;
      const bool randomized =
          req.method == "randomized" || (req.method == "auto" && (want + oversample) * 4 <= kmin);
      method = randomized ? "randomized" : "exact";
      spec = fmt::format("lowrank:rank={},method={}", want, method);
      if (randomized) spec += fmt::format(",oversample={},power_iters={}", oversample, power_iters);
    } else {
      method = "exact";
      spec = fmt::format("lowrank:energy={:.17g},method=exact", *req.energy);
    }
    TensorEdit te = run(spec);
    if (req.energy && req.vllm) {
      const int64_t r = te.factors ? te.factors->rank : kmin;
      want = vllm_rank(std::max<int64_t>(r, 1));
      if (want != r && want < kmin) te = run(fmt::format("lowrank:rank={},method=exact", want));
    }
    Factors f;
    if (te.factors && te.factors->rank > 0) {
      const edit::LowRankFactors& lf = *te.factors;
      const int64_t r = lf.rank;
      std::vector<float> rs(static_cast<size_t>(r));
      for (int64_t t = 0; t < r; ++t) rs[size_t(t)] = std::sqrt(lf.s[size_t(t)]);
      f.rank = r;
      if (!c.embedding) {  // A = √S·Vᵀ (r×cols), B = U·√S (rows×r)
        f.a_cols = cols;
        f.b_rows = rows;
        f.a.resize(size_t(r * cols));
        f.b.resize(size_t(rows * r));
        for (int64_t t = 0; t < r; ++t)
          for (int64_t j = 0; j < cols; ++j)
            f.a[size_t(t * cols + j)] = rs[size_t(t)] * lf.v[size_t(j * r + t)];
        for (int64_t ii = 0; ii < rows; ++ii)
          for (int64_t t = 0; t < r; ++t)
            f.b[size_t(ii * r + t)] = lf.u[size_t(ii * r + t)] * rs[size_t(t)];
      } else {  // (B·A)ᵀ = Δ_r: A = √S·Uᵀ (r×rows), B = V·√S (cols×r)
        f.a_cols = rows;
        f.b_rows = cols;
        f.a.resize(size_t(r * rows));
        f.b.resize(size_t(cols * r));
        for (int64_t t = 0; t < r; ++t)
          for (int64_t ii = 0; ii < rows; ++ii)
            f.a[size_t(t * rows + ii)] = rs[size_t(t)] * lf.u[size_t(ii * r + t)];
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t t = 0; t < r; ++t)
            f.b[size_t(j * r + t)] = lf.v[size_t(j * r + t)] * rs[size_t(t)];
      }
      w.info.method = method;
    } else {
      // The truncation is Δ itself (r ≥ min(rows, cols)): exact factors of Δ (embedding: of Δᵀ).
      const float* d = te.edited.data();
      if (!c.embedding) {
        f = exact_factors(d, rows, cols);
      } else {
        std::vector<float> dt(static_cast<size_t>(n));
        for (int64_t ii = 0; ii < rows; ++ii)
          for (int64_t j = 0; j < cols; ++j) dt[size_t(j * rows + ii)] = d[size_t(ii * cols + j)];
        f = exact_factors(dt.data(), cols, rows);
      }
      w.info.method = "full";
    }
    w.info.svd_rank = f.rank;
    if (req.vllm) pad(f, vllm_rank(f.rank));
    w.info.rank = f.rank;
    w.info.error_norm = std::sqrt(delta_norms(base, post, c.tensor, te.edited.data()).second);
    w.info.bytes = 4 * uint64_t(f.a.size() + f.b.size());
    w.f = std::move(f);
    post.release(c.tensor);
    base.release(c.tensor);
    tick(post.info(c.tensor).nbytes());
  });
  for (size_t k = 0; k < compare_only.size(); ++k) {
    if (compare_norm[k] == 0.0)
      ++result.unchanged;
    else
      result.left_out.push_back({compare_only[k].first, compare_only[k].second, compare_norm[k]});
  }
  std::vector<size_t> kept;
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].unchanged)
      ++result.unchanged;
    else
      kept.push_back(i);
  }
  if (kept.empty() && result.saved.empty())
    throw Error(ErrorKind::Usage,
                "no tensor to extract: base and post agree on every selected 2-D weight",
                req.post.string());

  // 4. adapter_config.json: r = the most common rank (the largest with --vllm), patterns for the
  // rest.
  std::map<int64_t, size_t> rank_count;
  for (size_t i : kept) ++rank_count[work[i].info.rank];
  int64_t r_cfg = 0;
  size_t best = 0;
  for (const auto& [r, cnt] : rank_count)
    if (cnt >= best) {
      best = cnt;
      r_cfg = r;
    }
  if (req.vllm && !rank_count.empty()) r_cfg = rank_count.rbegin()->first;
  if (r_cfg == 0) r_cfg = req.rank ? *req.rank : 8;
  json rank_pattern = json::object(), alpha_pattern = json::object();
  std::vector<std::string> targets;
  for (size_t i : kept) {
    const auto& m = work[i].info;
    targets.push_back(leaf_of(m.module));
    if (m.rank != r_cfg) {
      const std::string key = "^" + regex_escape(m.module);
      rank_pattern[key] = m.rank;
      alpha_pattern[key] = m.rank;
    }
  }
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
  json cfg{{"peft_type", "LORA"},
           {"r", r_cfg},
           {"lora_alpha", r_cfg},
           {"rank_pattern", rank_pattern},
           {"alpha_pattern", alpha_pattern},
           {"target_modules", targets},
           {"modules_to_save", req.save_modules.empty() ? json(nullptr) : json(req.save_modules)},
           {"base_model_name_or_path", req.base.string()},
           {"bias", "none"},
           {"fan_in_fan_out", false},
           {"use_rslora", false},
           {"use_dora", false},
           {"lora_dropout", 0.0},
           {"init_lora_weights", true},
           {"inference_mode", true},
           {"layers_to_transform", nullptr},
           {"layers_pattern", nullptr}};
  const auto& bcfg = base.config();
  cfg["task_type"] =
      bcfg && ends_with(bcfg->architecture, "ForCausalLM") ? json("CAUSAL_LM") : json(nullptr);
  result.adapter_config = cfg;

  // 5. Write through staging; validate by reading the adapter back over the base; rename.
  std::vector<io::PlannedTensor> planned;
  const std::string prefix = io::kPeftKeyPrefix;
  for (size_t i : kept) {
    const auto& w = work[i];
    const std::string k = prefix + w.info.module;
    if (w.info.embedding) {
      planned.push_back({k + ".lora_embedding_A", io::DType::F32, {w.f.rank, w.f.a_cols}});
      planned.push_back({k + ".lora_embedding_B", io::DType::F32, {w.f.b_rows, w.f.rank}});
    } else {
      planned.push_back({k + ".lora_A.weight", io::DType::F32, {w.f.rank, w.f.a_cols}});
      planned.push_back({k + ".lora_B.weight", io::DType::F32, {w.f.b_rows, w.f.rank}});
    }
  }
  for (const auto& s : result.saved) {
    const auto& ti = post.info(s.tensor);
    planned.push_back({prefix + s.tensor, ti.dtype, ti.shape});
  }
  uint64_t planned_bytes = 0;
  for (const auto& p : planned) planned_bytes += p.nbytes();
  std::vector<fs::path> inputs = base.input_paths();
  for (auto& p : post.input_paths()) inputs.push_back(p);
  io::Staging staging(req.out, inputs, planned_bytes);
  const std::map<std::string, std::string> md{
      {"deltaedit.version", kVersion},
      {"deltaedit.extract_lora",
       req.rank ? fmt::format("rank={}", *req.rank) : fmt::format("energy={}", *req.energy)}};
  {
    io::SafetensorsWriter writer(staging.create(io::kAdapterWeightsName),
                                 (staging.target() / io::kAdapterWeightsName).string(), planned,
                                 md);
    const auto put = [&](const std::string& name, const std::vector<float>& v) {
      std::vector<std::byte> b(v.size() * 4);
      io::from_f32(v, io::DType::F32, b);
      writer.write(name, b);
    };
    for (size_t i : kept) {
      const auto& w = work[i];
      const std::string k = prefix + w.info.module;
      put(k + (w.info.embedding ? ".lora_embedding_A" : ".lora_A.weight"), w.f.a);
      put(k + (w.info.embedding ? ".lora_embedding_B" : ".lora_B.weight"), w.f.b);
    }
    for (const auto& s : result.saved) {
      writer.write(prefix + s.tensor, post.data(s.tensor));
      post.release(s.tensor);
    }
    writer.finish();
  }
  staging.write_text(io::kAdapterConfigName, cfg.dump(2) + "\n");
  const fs::path staged = staging.materialize();
  {
    const auto check = io::AdapterSource::open(staged, base);
    if (check->modules().size() != kept.size() + result.saved.size())
      throw Error(ErrorKind::Format, "written adapter does not read back with every module",
                  staged.string());
  }
  result.adapter_bytes = fs::file_size(staged / io::kAdapterWeightsName) +
                         fs::file_size(staged / io::kAdapterConfigName);
  staging.commit_dir();
  for (size_t i : kept) result.modules.push_back(std::move(work[i].info));
  return result;
}

}  // namespace deltaedit::engine
