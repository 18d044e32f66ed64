#include "zoo/train.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <unordered_map>
#include <fstream>

#include <fmt/format.h>

#include "io/checkpoint.h"
#include "io/writer.h"
#include "model/evaluate.h"
#include "model/loss.h"
#include "model/transformer.h"
#include "text/dataset.h"
#include "text/tokenizer.h"
#include "zoo/corpus.h"
#include "zoo/dataset.h"
#include "zoo/tasks.h"
#include "util/boundary.h"
#include "util/error.h"
#include "util/read_file.h"
#include "util/strict_json.h"
#include "util/philox.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::zoo {
namespace {

json hf_config(const ZooOptions& o, int64_t vocab) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"bos_token_id", 0},
          {"eos_token_id", 0},
          {"pad_token_id", 1},
          {"head_dim", o.hidden / o.heads},
          {"hidden_act", "silu"},
          {"hidden_size", o.hidden},
          {"initializer_range", 0.02},
          {"intermediate_size", o.intermediate},
          {"max_position_embeddings", o.max_position},
          {"mlp_bias", false},
          {"model_type", "llama"},
          {"num_attention_heads", o.heads},
          {"num_hidden_layers", o.layers},
          {"num_key_value_heads", o.kv_heads},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"},
          {"use_cache", true},
          {"vocab_size", vocab}};
}

void write_model(const fs::path& dir, model::Model& m, const json& config, const fs::path& tokenizer_dir,
                 const json& card) {
  io::Staging st(dir, {}, 0);
  std::vector<io::PlannedTensor> plan;
  for (const auto& n : m.param_names()) {
    auto sizes = m.param(n).sizes();
    plan.push_back({n, io::DType::F32, std::vector<int64_t>(sizes.begin(), sizes.end())});
  }
  io::SafetensorsWriter w(st.create(io::kSingleName), (dir / io::kSingleName).string(), plan,
                          {{"deltaedit.zoo", card.value("stage", "")}});
  for (const auto& n : m.param_names()) {
    auto t = m.param(n).detach().to(torch::kCPU, torch::kFloat32).contiguous();
    w.write(n, std::as_bytes(std::span(t.data_ptr<float>(), size_t(t.numel()))));
  }
  w.finish();
  st.write_text("config.json", config.dump(2) + "\n");
  st.write_text("generation_config.json",
                json{{"bos_token_id", 0}, {"eos_token_id", 0}, {"pad_token_id", 1}, {"do_sample", false}}.dump(2) + "\n");
  for (const auto& e : fs::directory_iterator(tokenizer_dir)) st.copy_in(e.path(), e.path().filename().string());
  st.write_text("zoo.json", card.dump(2) + "\n");
  st.commit_dir();
}

// Cosine decay after a linear warm-up.
double lr_at(int64_t step, int64_t total, double peak) {
  const int64_t warm = std::max<int64_t>(1, total / 20);
  if (step < warm) return peak * double(step + 1) / double(warm);
  const double p = double(step - warm) / double(std::max<int64_t>(1, total - warm));
  return peak * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * p)));
}

struct TrainStats {
  double seconds = 0, final_loss = 0;
  int64_t tokens = 0;     // scored tokens
  int64_t processed = 0;  // every real token fed to the model
};

// The loss of one step and its token counts.
struct StepLoss {
  torch::Tensor loss;  // scalar f32, differentiable
  int64_t scored = 0, processed = 0;
};

int64_t real_tokens(const model::Batch& b) {
  return b.attention_mask.defined() ? b.attention_mask.sum().item<int64_t>() : b.input_ids.numel();
}

// AdamW over every parameter; `step_loss(step)` gives the loss of a step (deterministic).
TrainStats train_steps(model::Model& m, int64_t steps, double lr, const std::function<StepLoss(int64_t)>& step_loss,
                       const std::string& stage, const ZooLog& log) {
  m.set_requires_grad(true);
  std::vector<torch::Tensor> params;
  for (const auto& n : m.param_names()) params.push_back(m.param(n));
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.01));
  TrainStats s;
  auto t0 = std::chrono::steady_clock::now();
  double ema = 0;
  for (int64_t step = 0; step < steps; ++step) {
    io::check_interrupted();
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_at(step, steps, lr));
    auto sl = step_loss(step);
    opt.zero_grad();
    sl.loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    opt.step();
    s.tokens += sl.scored;
    s.processed += sl.processed;
    const double v = sl.loss.item<double>();
    ema = step == 0 ? v : 0.98 * ema + 0.02 * v;
    if (log && (step % 100 == 0 || step + 1 == steps))
      log(fmt::format("{} step {}/{} loss {:.4f} ({:.0f}s)", stage, step + 1, steps, ema,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()));
  }
  m.set_requires_grad(false);
  s.final_loss = ema;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// Causal-LM training on a batch stream.
TrainStats train(model::Model& m, int64_t steps, double lr, const std::function<model::Batch(int64_t)>& batch,
                 const std::string& stage, const ZooLog& log) {
  return train_steps(m, steps, lr, [&](int64_t step) {
    auto b = batch(step);
    auto l = model::causal_lm_loss_sum(m.forward(b.input_ids, b.attention_mask), b);
    return StepLoss{(l.sum / double(l.count)).to(torch::kFloat32), l.count, real_tokens(b)};
  }, stage, log);
}

}  // namespace

json build_zoo(const fs::path& out, const ZooOptions& o, const ZooLog& log) {
  if (fs::exists(out)) throw Error(ErrorKind::Usage, "output already exists; choose a new --out", out.string());
  torch::manual_seed(o.seed);
  torch::set_num_threads(o.threads);
  const fs::path work = out.parent_path() / (".zoo-work-" + out.filename().string());
  fs::remove_all(work);
  fs::create_directories(work);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{work};

  // Data: task splits, corpus and tokenizer.
  zoo::ZooDatasetOptions dopt;
  dopt.seed = o.seed;
  dopt.n_train = o.n_train;
  dopt.n_test = o.n_test;
  dopt.corpus_bytes = o.corpus_bytes;
  dopt.vocab_size = size_t(o.vocab);
  auto ds = zoo::write_zoo_dataset(work / "data", dopt);
  if (log) log(fmt::format("data: {} train / {} test problems, {} corpus bytes, vocab {}", ds.n_train, ds.n_test,
                           ds.corpus_bytes, ds.vocab_size));
  auto tok = text::Tokenizer::load(work / "data/tokenizer");
  const int64_t vocab = int64_t(tok.vocab_size());
  const int64_t eos = tok.eos_id().value_or(0);

  // Pre-training stream: the corpus as one token sequence.
  const std::string corpus = util::read_file(work / "data/corpus.txt");
  auto ids32 = tok.encode(corpus, false);
  auto stream = torch::tensor(std::vector<int64_t>(ids32.begin(), ids32.end()), torch::kInt64);
  const int64_t nstream = stream.size(0);
  if (nstream <= o.pretrain_seq + 1) throw Error(ErrorKind::Usage, "corpus too small for the sequence length");

  ZooOptions cfg_opt = o;
  json config = hf_config(cfg_opt, vocab);
  io::ModelConfig mc = io::parse_config(config.dump(), "zoo config");
  auto m = model::Model::random(mc, o.seed);
  const int64_t nparams = m.num_params();
  if (log) log(fmt::format("model: {} parameters ({} layers, hidden {})", nparams, o.layers, o.hidden));

  util::KeyedRng rng(util::rng_key(o.seed, "zoo.pretrain", 0));
  auto pre = train(m, o.pretrain_steps, o.pretrain_lr, [&](int64_t step) {
    std::vector<torch::Tensor> rows;
    for (int64_t b = 0; b < o.pretrain_batch; ++b) {
      const uint64_t i = uint64_t(step * o.pretrain_batch + b);
      const int64_t start = int64_t(rng.below(i, uint64_t(nstream - o.pretrain_seq)));
      rows.push_back(stream.slice(0, start, start + o.pretrain_seq));
    }
    auto ids = torch::stack(rows);
    return model::Batch{ids, torch::ones_like(ids), torch::ones_like(ids)};
  }, "pretrain", log);

  // Base evaluation, then post-training on a copy.
  auto train_records = text::load_jsonl(work / "data/tasks_train.jsonl", &tok);
  auto test_records = text::load_jsonl(work / "data/tasks_test.jsonl", &tok);
  std::vector<text::Record> eval(test_records.begin(), test_records.begin() + std::min(o.n_eval, test_records.size()));
  auto base_acc = model::dataset_accuracy(m, tok, eval, o.max_new_tokens);
  if (log) log(fmt::format("base accuracy {:.3f}", base_acc.accuracy()));
  auto base_state = m.state();

  // SFT sequences: BOS + prompt, then response + EOS (the EOS teaches the model to stop).
  std::vector<text::Sequence> sft;
  for (auto& r : train_records) {
    r.seq.ids.push_back(int32_t(eos));
    r.seq.scored.push_back(1);
    sft.push_back(r.seq);
  }
  util::KeyedRng srng(util::rng_key(o.seed, "zoo.sft", 0));
  auto post_stats = train(m, o.sft_steps, o.sft_lr, [&](int64_t step) {
    std::vector<text::Sequence> pick;
    for (int64_t b = 0; b < o.sft_batch; ++b)
      pick.push_back(sft[size_t(srng.below(uint64_t(step * o.sft_batch + b), sft.size()))]);
    return model::make_batches(pick, pick.size())[0];
  }, "sft", log);
  auto post_acc = model::dataset_accuracy(m, tok, eval, o.max_new_tokens);
  if (log) log(fmt::format("post accuracy {:.3f}", post_acc.accuracy()));

  json common{{"seed", o.seed}, {"parameters", nparams}, {"threads", o.threads}, {"vocab", vocab},
              {"architecture", {{"hidden", o.hidden}, {"intermediate", o.intermediate}, {"layers", o.layers},
                                {"heads", o.heads}, {"kv_heads", o.kv_heads}}},
              {"eval_examples", eval.size()}, {"max_new_tokens", o.max_new_tokens}};
  json base_card = common, post_card = common;
  base_card["stage"] = "base";
  base_card["pretraining"] = {{"steps", o.pretrain_steps}, {"batch", o.pretrain_batch}, {"seq", o.pretrain_seq},
                              {"lr", o.pretrain_lr}, {"tokens_seen", pre.tokens}, {"seconds", pre.seconds},
                              {"final_loss", pre.final_loss}, {"corpus_bytes", ds.corpus_bytes}};
  base_card["accuracy"] = base_acc.accuracy();
  post_card["stage"] = "post";
  post_card["pretraining"] = base_card["pretraining"];
  post_card["post_training"] = {{"steps", o.sft_steps}, {"batch", o.sft_batch}, {"lr", o.sft_lr},
                                {"tokens_seen", post_stats.tokens}, {"seconds", post_stats.seconds},
                                {"final_loss", post_stats.final_loss}, {"train_problems", train_records.size()}};
  post_card["accuracy"] = post_acc.accuracy();

  // Outputs, staged: data first, then the two checkpoints, then one rename of the whole folder.
  io::Staging st(out, {}, 0);
  const fs::path tmp = st.materialize();
  write_model(tmp / "post", m, config, work / "data/tokenizer", post_card);
  m.load_state(base_state);
  write_model(tmp / "base", m, config, work / "data/tokenizer", base_card);
  fs::create_directories(tmp / "data");
  for (const char* f : {"tasks_test.jsonl", "corpus.txt", "zoo_data.json"}) fs::copy_file(work / "data" / f, tmp / "data" / f);
  {
    std::istringstream all(util::read_file(work / "data/tasks_test.jsonl"));
    std::string line, ev;
    for (size_t i = 0; i < eval.size() && std::getline(all, line); ++i) ev += line + "\n";
    io::replace_file(tmp / "data/eval.jsonl", ev);
  }
  json summary{{"base", base_card}, {"post", post_card}};
  io::replace_file(tmp / "zoo.json", summary.dump(2) + "\n");
  st.commit_dir();
  return summary;
}

// ---------------------------------------------------------------------------------------------
// The model family.

namespace {

ZooOptions arch_of(const FamilyOptions& o) {
  ZooOptions a;
  a.hidden = o.hidden;
  a.intermediate = o.intermediate;
  a.layers = o.layers;
  a.heads = o.heads;
  a.kv_heads = o.kv_heads;
  a.vocab = o.vocab;
  a.max_position = o.max_position;
  return a;
}

// A JSON file this program wrote earlier (a resumed run): strict, and malformed content is a
// Format error naming the file.
json read_json_file(const fs::path& p) {
  return util::at_boundary(p.string(), "", [&] { return util::parse_json_strict(util::read_file(p), p.string()); });
}

void write_json_file(const fs::path& p, const json& j) { io::replace_file(p, j.dump(2) + "\n"); }

// Prompt/response records with the EOS appended to the response (the EOS teaches stopping).
std::vector<text::Sequence> sft_sequences(const std::vector<text::Record>& recs, int64_t eos) {
  std::vector<text::Sequence> out;
  out.reserve(recs.size());
  for (const auto& r : recs) {
    auto q = r.seq;
    q.ids.push_back(int32_t(eos));
    q.scored.push_back(1);
    out.push_back(std::move(q));
  }
  return out;
}

// ‖W_a − W_b‖ / ‖W_b‖ over every parameter (f64), and the per-tensor range.
json delta_ratio(const model::Model& a, const std::unordered_map<std::string, torch::Tensor>& b) {
  double dd = 0, ww = 0, lo = 1e300, hi = 0;
  std::string lo_name, hi_name;
  for (const auto& n : a.param_names()) {
    auto wa = a.param(n).detach().to(torch::kFloat64);
    auto wb = b.at(n).to(torch::kFloat64);
    const double d2 = (wa - wb).pow(2).sum().item<double>(), w2 = wb.pow(2).sum().item<double>();
    dd += d2;
    ww += w2;
    const double r = w2 > 0 ? std::sqrt(d2 / w2) : 0.0;
    if (r < lo) lo = r, lo_name = n;
    if (r > hi) hi = r, hi_name = n;
  }
  return {{"delta_over_weight", std::sqrt(dd / ww)}, {"delta_norm", std::sqrt(dd)}, {"weight_norm", std::sqrt(ww)},
          {"per_tensor_min", lo}, {"per_tensor_min_tensor", lo_name}, {"per_tensor_max", hi},
          {"per_tensor_max_tensor", hi_name}};
}

// DPO loss and reward accuracy of `policy` against `reference` on held-out pairs: reward margin
// β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]; reward accuracy = fraction with a
// positive margin (0 when policy = reference, where every margin is 0).
json dpo_stats(model::Model& policy, model::Model& reference, const std::vector<text::Sequence>& chosen,
               const std::vector<text::Sequence>& rejected, double beta) {
  torch::NoGradGuard ng;
  double loss = 0, margin = 0;
  size_t wins = 0, n = 0;
  const size_t bs = 32;
  for (size_t s = 0; s < chosen.size(); s += bs) {
    const size_t e = std::min(chosen.size(), s + bs);
    std::vector<text::Sequence> c(chosen.begin() + long(s), chosen.begin() + long(e));
    std::vector<text::Sequence> r(rejected.begin() + long(s), rejected.begin() + long(e));
    auto bc = model::make_batches(c, c.size())[0], br = model::make_batches(r, r.size())[0];
    auto pc = model::sequence_logprob(policy.forward(bc.input_ids, bc.attention_mask), bc);
    auto pr = model::sequence_logprob(policy.forward(br.input_ids, br.attention_mask), br);
    auto rc = model::sequence_logprob(reference.forward(bc.input_ids, bc.attention_mask), bc);
    auto rr = model::sequence_logprob(reference.forward(br.input_ids, br.attention_mask), br);
    auto l = model::dpo_losses(pc, pr, rc, rr, beta).to(torch::kFloat64);
    auto m = beta * ((pc.to(torch::kFloat64) - rc.to(torch::kFloat64)) - (pr.to(torch::kFloat64) - rr.to(torch::kFloat64)));
    loss += l.sum().item<double>();
    margin += m.sum().item<double>();
    wins += size_t((m > 0).sum().item<int64_t>());
    n += e - s;
  }
  return {{"pairs", n}, {"dpo_loss", loss / double(n)}, {"reward_accuracy", double(wins) / double(n)},
          {"reward_margin", margin / double(n)}};
}

}  // namespace

json build_family(const fs::path& out, const FamilyOptions& o, const ZooLog& log) {
  static const std::vector<std::string> kStages{"data", "base", "math-sft", "math-dpo", "order-sft"};
  if (!o.stop_after.empty() && std::find(kStages.begin(), kStages.end(), o.stop_after) == kStages.end())
    throw Error(ErrorKind::Usage, "--stop-after takes data, base, math-sft, math-dpo or order-sft", o.stop_after);
  torch::manual_seed(o.seed);
  torch::set_num_threads(o.threads);
  fs::create_directories(out);
  const auto t_all = std::chrono::steady_clock::now();
  const ZooOptions arch = arch_of(o);
  json arch_json{{"hidden", o.hidden}, {"intermediate", o.intermediate}, {"layers", o.layers}, {"heads", o.heads},
                 {"kv_heads", o.kv_heads}, {"vocab", o.vocab}, {"max_position", o.max_position}};

  // Data: both tasks, preference pairs, the skills corpus and the tokenizer.
  json data_recipe{{"seed", o.seed}, {"n_train", o.n_train}, {"n_test", o.n_test}, {"n_order_train", o.n_order_train},
                   {"n_order_test", o.n_order_test}, {"n_dpo_train", o.n_dpo_train}, {"n_dpo_test", o.n_dpo_test},
                   {"corpus_bytes", o.corpus_bytes}, {"vocab", o.vocab}, {"n_eval", o.n_eval}};
  const fs::path data = out / "data";
  if (fs::exists(data / "family_data.json")) {
    if (read_json_file(data / "family_data.json") != data_recipe)
      throw Error(ErrorKind::Usage, "holds data of other options; choose a new --out", data.string());
    if (log) log("data: kept from an earlier run");
  } else {
    const fs::path tmp = out / ".data-tmp";
    fs::remove_all(tmp);
    fs::remove_all(data);
    zoo::ZooDatasetOptions dopt;
    dopt.seed = o.seed;
    dopt.n_train = o.n_train;
    dopt.n_test = o.n_test;
    dopt.corpus_bytes = o.corpus_bytes;
    dopt.vocab_size = size_t(o.vocab);
    dopt.family = true;
    dopt.n_order_train = o.n_order_train;
    dopt.n_order_test = o.n_order_test;
    dopt.n_dpo_train = o.n_dpo_train;
    dopt.n_dpo_test = o.n_dpo_test;
    auto ds = zoo::write_zoo_dataset(tmp, dopt);
    // The evaluation subsets: the first n_eval test problems of each task, the first n_dpo_test pairs.
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{{"tasks_test.jsonl", "eval.jsonl"},
                                                                                   {"order_test.jsonl", "order_eval.jsonl"}}) {
      std::istringstream all(util::read_file(tmp / from));
      std::string line, ev;
      for (size_t i = 0; i < o.n_eval && std::getline(all, line); ++i) ev += line + "\n";
      io::replace_file(tmp / to, ev);
    }
    write_json_file(tmp / "family_data.json", data_recipe);
    fs::rename(tmp, data);
    if (log)
      log(fmt::format("data: {} / {} arithmetic, {} / {} order problems (train / test), {} / {} preference pairs, "
                      "{} corpus bytes, vocab {}",
                      ds.n_train, ds.n_test, ds.n_order_train, ds.n_order_test, ds.n_dpo_train, ds.n_dpo_test,
                      ds.corpus_bytes, ds.vocab_size));
  }
  json summary{{"recipe", "family"}, {"seed", o.seed}, {"threads", o.threads}, {"architecture", arch_json},
               {"data", data_recipe}, {"stages", json::object()}};
  if (o.stop_after == "data") return summary;

  auto tok = text::Tokenizer::load(data / "tokenizer");
  const int64_t vocab = int64_t(tok.vocab_size());
  const int64_t eos = tok.eos_id().value_or(0);
  json config = hf_config(arch, vocab);
  io::ModelConfig mc = io::parse_config(config.dump(), "zoo config");
  const auto load_eval = [&](const char* f) { return text::load_jsonl(data / f, &tok); };
  const auto math_eval = load_eval("eval.jsonl");
  const auto order_eval = load_eval("order_eval.jsonl");
  std::vector<text::Sequence> pair_c, pair_r;
  for (const auto& r : load_eval("dpo_test.jsonl")) {
    auto c = r.seq, j = *r.rejected;
    c.ids.push_back(int32_t(eos)), c.scored.push_back(1);
    j.ids.push_back(int32_t(eos)), j.scored.push_back(1);
    pair_c.push_back(std::move(c));
    pair_r.push_back(std::move(j));
  }
  const auto accuracies = [&](model::Model& m) {
    auto t0 = std::chrono::steady_clock::now();
    json a{{"math_accuracy", model::dataset_accuracy(m, tok, math_eval, o.max_new_tokens).accuracy()},
           {"order_accuracy", model::dataset_accuracy(m, tok, order_eval, o.max_new_tokens).accuracy()}};
    a["eval_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return a;
  };

  auto m = model::Model::random(mc, o.seed);
  const int64_t nparams = m.num_params();
  json common{{"seed", o.seed}, {"parameters", nparams}, {"threads", o.threads}, {"vocab", vocab},
              {"architecture", arch_json}, {"eval_examples", math_eval.size()}, {"max_new_tokens", o.max_new_tokens}};

  // A stage: load it when OUT holds it with this recipe, else train it (`run` returns its
  // figures), measure and write it.
  const auto stage = [&](const std::string& name, const json& recipe,
                         const std::function<json()>& run) -> json {
    const fs::path dir = out / name;
    if (fs::exists(dir / "zoo.json")) {
      auto card = read_json_file(dir / "zoo.json");
      if (!card.is_object())
        throw Error(ErrorKind::Format, "not a zoo card (a JSON object); remove the stage to retrain it",
                    (dir / "zoo.json").string());
      if (card.value("recipe", json()) != recipe)
        throw Error(ErrorKind::Usage, "holds a stage trained with another recipe; choose a new --out", dir.string());
      m = model::Model::load(io::Checkpoint::open(dir));
      if (log) log(fmt::format("{}: kept from an earlier run", name));
      return card;
    }
    if (fs::exists(dir)) fs::remove_all(dir);
    json card = common;
    card["stage"] = name;
    card["recipe"] = recipe;
    card["training"] = run();
    card["evaluation"] = accuracies(m);
    if (log) log(fmt::format("{}: math accuracy {:.3f}, order accuracy {:.3f}", name,
                             card["evaluation"]["math_accuracy"].get<double>(),
                             card["evaluation"]["order_accuracy"].get<double>()));
    return card;
  };
  const auto save = [&](const std::string& name, json& card) {
    if (!fs::exists(out / name / "zoo.json")) write_model(out / name, m, config, data / "tokenizer", card);
    summary["stages"][name] = card;
  };
  const auto stats_json = [](const TrainStats& s) {
    return json{{"tokens_seen", s.tokens}, {"tokens_processed", s.processed}, {"seconds", s.seconds},
                {"final_loss", s.final_loss}};
  };

  // base: pre-training on the skills corpus.
  json base_recipe{{"from", "random"}, {"seed", o.seed}, {"data", "corpus.txt"}, {"steps", o.pretrain_steps},
                   {"batch", o.pretrain_batch}, {"seq", o.pretrain_seq}, {"lr", o.pretrain_lr},
                   {"schedule", "linear warm-up 5 %, cosine to 10 %"}, {"optimizer", "AdamW b=(0.9,0.95) wd=0.01 clip=1"}};
  json base_card = stage("base", base_recipe, [&] {
    const std::string corpus = util::read_file(data / "corpus.txt");
    auto ids32 = tok.encode(corpus, false);
    auto stream = torch::tensor(std::vector<int64_t>(ids32.begin(), ids32.end()), torch::kInt64);
    const int64_t nstream = stream.size(0);
    if (nstream <= o.pretrain_seq + 1) throw Error(ErrorKind::Usage, "corpus too small for the sequence length");
    if (log) log(fmt::format("base: {} parameters, corpus {} tokens", nparams, nstream));
    util::KeyedRng rng(util::rng_key(o.seed, "zoo.family.pretrain", 0));
    auto s = train(m, o.pretrain_steps, o.pretrain_lr, [&](int64_t step) {
      std::vector<torch::Tensor> rows;
      for (int64_t b = 0; b < o.pretrain_batch; ++b) {
        const uint64_t i = uint64_t(step * o.pretrain_batch + b);
        const int64_t start = int64_t(rng.below(i, uint64_t(nstream - o.pretrain_seq)));
        rows.push_back(stream.slice(0, start, start + o.pretrain_seq));
      }
      auto ids = torch::stack(rows);
      return model::Batch{ids, torch::ones_like(ids), torch::ones_like(ids)};
    }, "pretrain", log);
    json j = stats_json(s);
    j["corpus_tokens"] = nstream;
    return j;
  });
  save("base", base_card);
  const auto base_state = m.state();
  if (o.stop_after == "base") return summary;

  // SFT of base on one task.
  const auto sft_stage = [&](const std::string& name, const char* train_file, const char* stream_key) {
    json recipe{{"from", "base"}, {"data", train_file}, {"steps", o.sft_steps}, {"batch", o.sft_batch},
                {"lr", o.sft_lr}, {"schedule", "linear warm-up 5 %, cosine to 10 %"},
                {"optimizer", "AdamW b=(0.9,0.95) wd=0.01 clip=1"}, {"loss", "response tokens + EOS"}};
    m.load_state(base_state);
    json card = stage(name, recipe, [&] {
      auto seqs = sft_sequences(load_eval(train_file), eos);
      util::KeyedRng srng(util::rng_key(o.seed, stream_key, 0));
      auto s = train(m, o.sft_steps, o.sft_lr, [&](int64_t step) {
        std::vector<text::Sequence> pick;
        for (int64_t b = 0; b < o.sft_batch; ++b)
          pick.push_back(seqs[size_t(srng.below(uint64_t(step * o.sft_batch + b), seqs.size()))]);
        return model::make_batches(pick, pick.size())[0];
      }, name, log);
      json j = stats_json(s);
      j["train_problems"] = seqs.size();
      return j;
    });
    if (!card.contains("delta")) card["delta"] = delta_ratio(m, base_state);
    return card;
  };

  json sft_card = sft_stage("math-sft", "tasks_train.jsonl", "zoo.family.math-sft");
  save("math-sft", sft_card);
  const auto sft_state = m.state();
  if (o.stop_after == "math-sft") return summary;

  // math-dpo: DPO from math-sft, reference = math-sft.
  json dpo_recipe{{"from", "math-sft"}, {"reference", "math-sft"}, {"data", "dpo_train.jsonl"}, {"steps", o.dpo_steps},
                  {"batch", o.dpo_batch}, {"lr", o.dpo_lr}, {"beta", o.dpo_beta},
                  {"schedule", "linear warm-up 5 %, cosine to 10 %"}, {"optimizer", "AdamW b=(0.9,0.95) wd=0.01 clip=1"}};
  auto reference = model::Model::random(mc, o.seed);
  reference.load_state(sft_state);
  json dpo_before = dpo_stats(m, reference, pair_c, pair_r, o.dpo_beta);
  json dpo_card = stage("math-dpo", dpo_recipe, [&] {
    std::vector<text::Sequence> chosen, rejected;
    for (const auto& r : load_eval("dpo_train.jsonl")) {
      auto c = r.seq, j = *r.rejected;
      c.ids.push_back(int32_t(eos)), c.scored.push_back(1);
      j.ids.push_back(int32_t(eos)), j.scored.push_back(1);
      chosen.push_back(std::move(c));
      rejected.push_back(std::move(j));
    }
    util::KeyedRng drng(util::rng_key(o.seed, "zoo.family.math-dpo", 0));
    auto s = train_steps(m, o.dpo_steps, o.dpo_lr, [&](int64_t step) {
      std::vector<text::Sequence> c, r;
      for (int64_t b = 0; b < o.dpo_batch; ++b) {
        const size_t i = size_t(drng.below(uint64_t(step * o.dpo_batch + b), chosen.size()));
        c.push_back(chosen[i]);
        r.push_back(rejected[i]);
      }
      auto bc = model::make_batches(c, c.size())[0], br = model::make_batches(r, r.size())[0];
      torch::Tensor rc, rr;
      {
        torch::NoGradGuard ng;
        rc = model::sequence_logprob(reference.forward(bc.input_ids, bc.attention_mask), bc);
        rr = model::sequence_logprob(reference.forward(br.input_ids, br.attention_mask), br);
      }
      auto pc = model::sequence_logprob(m.forward(bc.input_ids, bc.attention_mask), bc);
      auto pr = model::sequence_logprob(m.forward(br.input_ids, br.attention_mask), br);
      auto loss = model::dpo_loss(pc, pr, rc, rr, o.dpo_beta).to(torch::kFloat32);
      return StepLoss{loss, int64_t(c.size()), real_tokens(bc) + real_tokens(br)};
    }, "math-dpo", log);
    json j = stats_json(s);
    j["train_pairs"] = chosen.size();
    return j;
  });
  if (!dpo_card.contains("dpo")) {
    dpo_card["dpo"] = {{"before", dpo_before}, {"after", dpo_stats(m, reference, pair_c, pair_r, o.dpo_beta)}};
    dpo_card["delta"] = delta_ratio(m, sft_state);
    dpo_card["delta_from_base"] = delta_ratio(m, base_state);
  }
  save("math-dpo", dpo_card);
  if (log) log(fmt::format("math-dpo: held-out DPO loss {:.4f} -> {:.4f}, reward accuracy {:.3f} -> {:.3f}",
                           dpo_card["dpo"]["before"]["dpo_loss"].get<double>(),
                           dpo_card["dpo"]["after"]["dpo_loss"].get<double>(),
                           dpo_card["dpo"]["before"]["reward_accuracy"].get<double>(),
                           dpo_card["dpo"]["after"]["reward_accuracy"].get<double>()));
  if (o.stop_after == "math-dpo") return summary;

  json order_card = sft_stage("order-sft", "order_train.jsonl", "zoo.family.order-sft");
  save("order-sft", order_card);

  // Post-training tokens against pre-training tokens (every real token fed to the model).
  const double pre_tokens = base_card["training"]["tokens_processed"].get<double>();
  json ratios;
  for (const char* s : {"math-sft", "math-dpo", "order-sft"})
    ratios[s] = summary["stages"][s]["training"]["tokens_processed"].get<double>() / pre_tokens;
  summary["post_to_pre_tokens"] = ratios;
  summary["seconds_this_run"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count();
  write_json_file(out / "zoo.json", summary);
  return summary;
}

}  // namespace deltaedit::zoo
