#include "zoo/train.h"

#include <torch/torch.h>

#include <chrono>
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
#include "util/error.h"
#include "util/read_file.h"
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
  int64_t tokens = 0;
};

// AdamW over every parameter; `batch(step)` gives the batch of a step (deterministic).
TrainStats train(model::Model& m, int64_t steps, double lr, const std::function<model::Batch(int64_t)>& batch,
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
    auto b = batch(step);
    auto l = model::causal_lm_loss_sum(m.forward(b.input_ids, b.attention_mask), b);
    auto loss = (l.sum / double(l.count)).to(torch::kFloat32);
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    opt.step();
    s.tokens += l.count;
    const double v = loss.item<double>();
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
    std::ofstream ev(tmp / "data/eval.jsonl", std::ios::binary);
    std::istringstream all(util::read_file(work / "data/tasks_test.jsonl"));
    std::string line;
    for (size_t i = 0; i < eval.size() && std::getline(all, line); ++i) ev << line << "\n";
  }
  json summary{{"base", base_card}, {"post", post_card}};
  {
    std::ofstream sj(tmp / "zoo.json", std::ios::binary);
    sj << summary.dump(2) << "\n";
  }
  st.commit_dir();
  return summary;
}

}  // namespace deltaedit::zoo
