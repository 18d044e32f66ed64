// eval, grad, approx: subcommands that run the model (libtorch).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "cli/torch_names.h"
#include "engine/edit_engine.h"
#include "engine/increment_source.h"
#include "engine/merge_run.h"
#include "experiments/family_report.h"
#include "experiments/merge_approx.h"
#include "experiments/merge_sweep.h"
#include "experiments/sweep.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "io/peft.h"
#include "io/writer.h"
#include "merge/config.h"
#include "merge/plan.h"
#include "model/evaluate.h"
#include "model/streamed.h"
#include "text/dataset.h"
#include "util/boundary.h"
#include "util/error.h"
#include "util/read_file.h"
#include "zoo/train.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::cli {
namespace {

struct DataFlags {
  std::string data, loss = "ce", ref, tokenizer, device = "cpu", dtype = "f32";
  size_t batch_size = 8, max_length = 0, limit = 0;
  double beta = 0.1;
  unsigned threads = 2;
  bool progress_lines = false;
  std::vector<std::string> per_model_data;  // approx: --data FILE, or --data MODEL=FILE per expert
  void add(CLI::App* sub, bool per_model = false) {
    constexpr const char* kRecords =
        "JSONL records: {text} | {prompt,response} | {input_ids} | {prompt,chosen,rejected}";
    if (per_model)
      sub->add_option(
          "--data", per_model_data,
          std::string(kRecords) + "; with --merge MODEL=FILE, once per expert of the config");
    else
      sub->add_option("--data", data, kRecords)->required();
    sub->add_option("--loss", loss, "ce (causal LM, default) or dpo")
        ->check(CLI::IsMember({"ce", "dpo"}));
    sub->add_option("--ref", ref, "reference model of the DPO loss");
    sub->add_option("--beta", beta, "DPO β (default 0.1)");
    sub->add_option("--batch-size", batch_size, "sequences per batch (default 8)")
        ->check(CLI::Range(size_t(1), size_t(4096)));
    sub->add_option("--max-length", max_length,
                    "truncate sequences to this many tokens (default: none)");
    sub->add_option("--limit", limit, "use only the first N records");
    sub->add_option("--tokenizer", tokenizer, "tokenizer.json (default: the model directory's)");
    sub->add_option("--threads", threads, "CPU threads (default 2)")->check(CLI::Range(1u, 256u));
    sub->add_option("--device", device, "cpu or cuda (when libtorch has CUDA)")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    sub->add_option("--compute-dtype", dtype, "f32 (default) or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}));
    sub->add_flag("--progress", progress_lines,
                  "streamed passes: one line per unit walked on stderr, with the elapsed time (for "
                  "logs; a terminal shows a progress bar without it)");
  }
  model::LoadOptions load_options() const {
    model::LoadOptions o;
    o.dtype = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    if (device == "cuda") {
      if (!torch::cuda::is_available())
        throw Error(ErrorKind::Usage,
                    "--device cuda: this libtorch build has no CUDA or no GPU is visible");
      o.device = torch::kCUDA;
    }
    return o;
  }
  model::LossKind kind() const {
    return loss == "dpo" ? model::LossKind::DPO : model::LossKind::CausalLM;
  }
};

std::optional<text::Tokenizer> load_tokenizer(const std::string& explicit_path,
                                              const fs::path& model_dir) {
  if (!explicit_path.empty()) return text::Tokenizer::load(explicit_path);
  if (fs::is_directory(model_dir) && fs::exists(model_dir / "tokenizer.json"))
    return text::Tokenizer::load(model_dir);
  return std::nullopt;
}

struct Loaded {
  model::Model model;
  std::optional<text::Tokenizer> tok;
  std::optional<model::Model> ref;
  model::EvalSet set;
};

// `model_source` (optional) supplies the weights instead of model_path (a PEFT adapter over its
// base); tokenizer and data are still found from model_path.
Loaded load_all(const fs::path& model_path, const DataFlags& f,
                const io::TensorSource* model_source = nullptr) {
  torch::set_num_threads(int(f.threads));
  std::optional<io::Checkpoint> ck;
  if (!model_source) ck = io::Checkpoint::open(model_path);
  const io::TensorSource& weights =
      model_source ? *model_source : static_cast<const io::TensorSource&>(*ck);
  auto m = model::Model::load(weights, f.load_options());
  auto tok = load_tokenizer(f.tokenizer, model_path);
  text::DataOptions dopt{f.max_length, f.limit};
  auto records = text::load_jsonl(f.data, tok ? &*tok : nullptr, dopt);
  std::optional<model::Model> ref;
  if (f.kind() == model::LossKind::DPO) {
    if (f.ref.empty())
      throw Error(ErrorKind::Usage,
                  "--loss dpo needs --ref MODEL (the reference, e.g. the SFT model)");
    ref = model::Model::load(io::Checkpoint::open(f.ref), f.load_options());
  }
  auto set = model::make_eval_set(std::move(records), f.batch_size, f.kind(), ref ? &*ref : nullptr,
                                  f.beta);
  return {std::move(m), std::move(tok), std::move(ref), std::move(set)};
}

// The dataset alone, for the streamed passes (which read the weights unit by unit).
model::EvalSet load_data(const fs::path& model_path, const DataFlags& f) {
  torch::set_num_threads(int(f.threads));
  auto tok = load_tokenizer(f.tokenizer, model_path);
  text::DataOptions dopt{f.max_length, f.limit};
  auto records = text::load_jsonl(f.data, tok ? &*tok : nullptr, dopt);
  if (f.kind() != model::LossKind::DPO)
    return model::make_eval_set(std::move(records), f.batch_size, f.kind());
  if (f.ref.empty())
    throw Error(ErrorKind::Usage,
                "--loss dpo needs --ref MODEL (the reference, e.g. the SFT model)");
  // The reference's log-probabilities in one streamed forward walk, like the model's own passes.
  auto ref_ck = io::Checkpoint::open(f.ref);
  model::StreamedModel ref(ref_ck, f.load_options());
  return model::make_dpo_eval_set(
      std::move(records), f.batch_size, f.beta,
      [&](const std::vector<model::Batch>& b) { return ref.sequence_logprobs(b); });
}

// Progress of the streamed walks on stderr: a bar on a terminal (not with --json), or with
// --progress one line per unit (embedding, decoder layer, head), forward then backward.
class WalkProgress {
 public:
  WalkProgress(model::StreamedModel& sm, const char* label, const DataFlags& f, bool as_json)
      : bar_(label, !as_json && !f.progress_lines && stderr_is_tty()), label_(label) {
    const bool lines = f.progress_lines;
    sm.set_progress([this, lines](const char* phase, size_t done, size_t total) {
      if (!lines) {
        bar_.update(double(done), double(total), phase);
        return;
      }
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::cerr << fmt::format("{}: {} unit {}/{} done, {:.1f} s\n", label_, phase, done, total,
                               el);
    });
  }
  ~WalkProgress() { bar_.finish(); }
  WalkProgress(const WalkProgress&) = delete;
  WalkProgress& operator=(const WalkProgress&) = delete;

 private:
  ProgressLine bar_;
  std::string label_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

std::string gb(uint64_t b) { return fmt::format("{:.2f} GB", double(b) / 1e9); }

// eval --dump-logits: every record's logits [T, vocab] in f32 and its token ids, one model
// forward per record (no padding), for cross-checks against other runtimes.
void write_logits(model::Model& m, const std::vector<text::Record>& records, const std::string& out,
                  const std::vector<fs::path>& inputs) {
  torch::NoGradGuard ng;
  std::vector<io::PlannedTensor> plan;
  std::vector<torch::Tensor> logits;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& ids = records[i].seq.ids;
    const auto T = int64_t(ids.size());
    auto x =
        torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64).view({1, T});
    logits.push_back(
        m.forward(x.to(m.device())).squeeze(0).to(torch::kCPU, torch::kFloat32).contiguous());
    plan.push_back({fmt::format("logits.{}", i), io::DType::F32, {T, logits.back().size(1)}});
    plan.push_back({fmt::format("input_ids.{}", i), io::DType::I32, {T}});
  }
  io::Staging st(out, inputs, 0);
  io::SafetensorsWriter w(st.create("logits.safetensors"), out, plan, {});
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& l = logits[i];
    w.write(fmt::format("logits.{}", i),
            std::as_bytes(std::span(l.data_ptr<float>(), size_t(l.numel()))));
    w.write(fmt::format("input_ids.{}", i), std::as_bytes(std::span(records[i].seq.ids)));
  }
  w.finish();
  st.commit_file("logits.safetensors");
}

// eval --dump-generations: one JSON line per record with the prompt's ids, the greedy tokens and
// their text.
void write_generations(const model::AccuracyResult& acc, const std::string& out,
                       const std::vector<fs::path>& inputs) {
  std::string text;
  for (size_t i = 0; i < acc.outputs.size(); ++i)
    text += json{{"prompt_ids", acc.prompt_ids[i]},
                 {"output_ids", acc.output_ids[i]},
                 {"output", acc.outputs[i]}}
                .dump() +
            "\n";
  io::Staging st(out, inputs, text.size());
  st.write_text("generations.jsonl", text);
  st.commit_file("generations.jsonl");
}

Command add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", torch_summary("eval"));
  sub->footer(
      "Loss = mean token cross-entropy over all scored tokens (DPO: mean over records).\n"
      "Accuracy: greedy decoding of each response; the answer is the number after the last ####.\n"
      "Examples:\n  deltaedit eval --model post --data test.jsonl --metric accuracy --json\n"
      "  deltaedit eval --model aligned --data prefs.jsonl --loss dpo --ref sft");
  auto f = std::make_shared<DataFlags>();
  auto model_path = std::make_shared<std::string>();
  auto metric = std::make_shared<std::string>("loss");
  auto max_new = std::make_shared<int64_t>(64);
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("--model", *model_path, "checkpoint directory")->required();
  sub->add_option("--metric", *metric, "loss (default) or accuracy (reports loss too)")
      ->check(CLI::IsMember({"loss", "accuracy"}));
  sub->add_option("--max-new-tokens", *max_new, "generation budget for accuracy (default 64)");
  sub->add_flag("--json", *as_json, "machine-readable output: {loss, tokens, accuracy, examples}");
  auto streamed = std::make_shared<bool>(false);
  sub->add_flag("--streamed", *streamed,
                "--metric loss in memory bounded by one decoder layer (weights read unit by unit)");
  auto dump_logits = std::make_shared<std::string>();
  auto dump_gen = std::make_shared<std::string>();
  sub->add_option(
      "--dump-logits", *dump_logits,
      "also write each record's f32 logits (logits.N [T, vocab]) and ids (input_ids.N) to this "
      ".safetensors file (must not exist)");
  sub->add_option("--dump-generations", *dump_gen,
                  "with --metric accuracy: also write one JSON line per record {prompt_ids, "
                  "output_ids, output} "
                  "to this file (must not exist)");
  f->add(sub);
  return {sub, [=] {
            if (!dump_gen->empty() && *metric != "accuracy")
              throw Error(ErrorKind::Usage, "--dump-generations needs --metric accuracy");
            if (*streamed) {
              if (*metric != "loss" || !dump_logits->empty())
                throw Error(
                    ErrorKind::Usage,
                    "--streamed computes the loss only (no --metric accuracy, no --dump-logits)");
              auto set = load_data(*model_path, *f);
              auto ck = io::Checkpoint::open(*model_path);
              model::StreamedModel sm(ck, f->load_options());
              double loss = 0;
              {
                WalkProgress wp(sm, "eval", *f, *as_json);
                loss = sm.loss(set);
              }
              int64_t tokens = 0;
              for (const auto& r : set.records)
                for (auto s : r.seq.scored) tokens += s;
              if (*as_json)
                std::cout << json{{"loss", loss},
                                  {"tokens", tokens},
                                  {"examples", set.records.size()},
                                  {"accuracy", nullptr}}
                                 .dump(2)
                          << "\n";
              else
                std::cout << fmt::format("loss {:.6f} over {} scored tokens in {} records\n", loss,
                                         tokens, set.records.size());
              return int(kOk);
            }
            auto L = load_all(*model_path, *f);
            const auto inputs = io::Checkpoint::open(*model_path).input_paths();
            if (!dump_logits->empty()) write_logits(L.model, L.set.records, *dump_logits, inputs);
            double loss = model::dataset_loss(L.model, L.set);
            int64_t tokens = 0;
            for (const auto& r : L.set.records)
              for (auto s : r.seq.scored) tokens += s;
            std::optional<model::AccuracyResult> acc;
            if (*metric == "accuracy") {
              if (!L.tok)
                throw Error(ErrorKind::Usage,
                            "accuracy needs a tokenizer (tokenizer.json in the model directory or "
                            "--tokenizer)");
              acc = model::dataset_accuracy(L.model, *L.tok, L.set.records, *max_new);
              if (!dump_gen->empty()) write_generations(*acc, *dump_gen, inputs);
            }
            if (*as_json) {
              json j{{"loss", loss},
                     {"tokens", tokens},
                     {"examples", L.set.records.size()},
                     {"accuracy", acc ? json(acc->accuracy()) : json(nullptr)}};
              std::cout << j.dump(2) << "\n";
            } else {
              std::cout << fmt::format("loss {:.6f} over {} scored tokens in {} records\n", loss,
                                       tokens, L.set.records.size());
              if (acc)
                std::cout << fmt::format("accuracy {:.4f} ({}/{})\n", acc->accuracy(), acc->correct,
                                         acc->examples);
            }
            return int(kOk);
          }};
}

Command add_grad(CLI::App& app) {
  auto* sub = app.add_subcommand("grad", torch_summary("grad"));
  sub->footer(
      "The output names tensors like the parameters; feed it to `edit --op biased:by=grad --grad "
      "G`.\n"
      "Example:\n  deltaedit grad --model post --data train.jsonl --out grad.safetensors");
  auto f = std::make_shared<DataFlags>();
  auto model_path = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  sub->add_option("--model", *model_path, "checkpoint directory")->required();
  sub->add_option("--out", *out, "output .safetensors file (must not exist)")->required();
  auto streamed = std::make_shared<bool>(false);
  sub->add_flag(
      "--streamed", *streamed,
      "in memory bounded by one decoder layer: each gradient is written as soon as it is complete");
  f->add(sub);
  return {sub, [=] {
            if (*streamed) {
              auto set = load_data(*model_path, *f);
              auto ck = io::Checkpoint::open(*model_path);
              model::StreamedModel sm(ck, f->load_options());
              WalkProgress wp(sm, "grad", *f, false);
              // The header carries the loss: one forward walk first, then the gradient walk.
              const double loss = sm.loss(set);
              auto names = sm.param_names();
              std::sort(names.begin(), names.end());  // the in-memory file's order
              std::vector<io::PlannedTensor> plan;
              for (const auto& n : names) plan.push_back({n, io::DType::F32, sm.shape(n)});
              io::Staging st(*out, ck.input_paths(), 0);
              io::SafetensorsWriter w(st.create("grad.safetensors"), *out, plan,
                                      {{"deltaedit.loss", fmt::format("{:.9g}", loss)},
                                       {"deltaedit.data", f->data},
                                       {"deltaedit.model", *model_path}});
              auto g =
                  sm.gradients(set, [&](const std::string& n, int64_t row, const torch::Tensor& t) {
                    const auto& shape = sm.shape(n);
                    const uint64_t row_bytes =
                        shape.empty() ? 0
                                      : uint64_t(t.numel() / std::max<int64_t>(t.size(0), 1)) * 4;
                    w.write(n, std::as_bytes(std::span(t.data_ptr<float>(), size_t(t.numel()))),
                            uint64_t(row) * row_bytes);
                  });
              w.finish();
              st.commit_file("grad.safetensors");
              std::cout << fmt::format("wrote {} ({} tensors; loss {:.6f})\n", *out, names.size(),
                                       g.loss());
              return int(kOk);
            }
            auto L = load_all(*model_path, *f);
            auto g = model::dataset_gradients(L.model, L.set);
            std::vector<io::PlannedTensor> plan;
            for (const auto& [n, v] : g.grads) plan.push_back({n, io::DType::F32, v.shape});
            auto ck = io::Checkpoint::open(*model_path);
            io::Staging st(*out, ck.input_paths(), 0);
            io::SafetensorsWriter w(st.create("grad.safetensors"), *out, plan,
                                    {{"deltaedit.loss", fmt::format("{:.9g}", g.loss())},
                                     {"deltaedit.data", f->data},
                                     {"deltaedit.model", *model_path}});
            for (const auto& [n, v] : g.grads) w.write(n, std::as_bytes(std::span(v.values)));
            w.finish();
            st.commit_file("grad.safetensors");
            std::cout << fmt::format("wrote {} ({} tensors; loss {:.6f})\n", *out, g.grads.size(),
                                     g.loss());
            return int(kOk);
          }};
}

void print_approx_text(const model::ApproxResult& r, const std::string& rule, int steps,
                       const char* edited, const char* start, const std::string& indent) {
  std::cout << fmt::format("{}approximation term ({} rule, C={}): {:+.6e}\n", indent, rule, steps,
                           r.approximation_term);
  std::cout << fmt::format("{}true ΔL = L({}) − L({}) = {:.6f} − {:.6f} = {:+.6e}\n", indent,
                           edited, start, r.loss_edit, r.loss_post, r.true_delta_loss);
  std::cout << fmt::format("{}gap (ΔL − term): {:+.3e}; intensity ‖D‖²/‖Δ‖² = {:.6g}\n", indent,
                           r.gap, r.intensity);
  if (r.fisher_term)
    std::cout << fmt::format("{}second-order Fisher term: {:+.6e}\n", indent, *r.fisher_term);
  auto pt = r.per_tensor;
  std::sort(pt.begin(), pt.end(),
            [](auto& a, auto& b) { return std::fabs(a.second) > std::fabs(b.second); });
  std::cout << indent << "largest per-tensor contributions:\n";
  for (size_t i = 0; i < std::min<size_t>(10, pt.size()); ++i)
    std::cout << fmt::format("{}  {:<56} {:+.6e}\n", indent, pt[i].first, pt[i].second);
}

int print_approx(const model::ApproxResult& r, const std::string& rule, int steps, bool as_json) {
  if (as_json) {
    std::cout << r.to_json().dump(2) << "\n";
    return int(kOk);
  }
  print_approx_text(r, rule, steps, "W_edit", "W_post", "");
  return int(kOk);
}

// A directory under the system's temporary folder, removed with everything in it at scope exit.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string t = (fs::temp_directory_path() / "deltaedit-approx-merge-XXXXXX").string();
    if (!::mkdtemp(t.data()))
      throw Error(ErrorKind::Io, "cannot create a temporary directory for the merge", t);
    path = t;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

struct ApproxMergeArgs {
  std::string config, save_merge, rule;
  std::optional<uint64_t> seed;
  int steps = 5;
  bool fisher = false, streamed = false, as_json = false;
};

// approx --merge: per expert i of the config, the term of D_i = W_merge − W_i on expert i's data
// against the true ΔL_i = L_i(W_merge) − L_i(W_i) (MERGE.md §0 "Explaining a merge").
int run_approx_merge(const ApproxMergeArgs& a, const DataFlags& f) {
  std::vector<std::pair<std::string, std::string>> given;
  for (const auto& d : f.per_model_data) {
    const auto eq = d.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == d.size())
      throw Error(
          ErrorKind::Usage,
          fmt::format(
              "--merge: --data takes MODEL=FILE (the model as the config names it), got '{}'", d));
    given.emplace_back(d.substr(0, eq), d.substr(eq + 1));
  }
  if (!a.save_merge.empty() && fs::exists(a.save_merge))
    throw Error(ErrorKind::Usage,
                "--save-merge: output already exists; choose a new directory or remove it first",
                a.save_merge);
  std::string text;
  try {
    text = util::read_file(a.config);
  } catch (const Error& e) {
    throw Error(ErrorKind::Io, std::string("cannot read the merge config: ") + e.what(), a.config);
  }
  auto plan = merge::build_plan(merge::parse_merge_config(text, a.config), {a.seed});
  const auto experts = experiments::merge_models(plan);
  std::vector<std::string> data(experts.size());
  for (const auto& [model_ref, file] : given) {
    const size_t i = experiments::find_merge_model(plan, experts, model_ref);
    if (!data[i].empty())
      throw Error(ErrorKind::Usage,
                  fmt::format("--data names the model '{}' twice", experts[i].written));
    data[i] = file;
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < experts.size(); ++i)
    if (data[i].empty()) missing.push_back("'" + experts[i].written + "'");
  if (!missing.empty())
    throw Error(
        ErrorKind::Usage,
        fmt::format(
            "approx --merge needs --data MODEL=FILE for every model of the config; missing: {}",
            fmt::join(missing, ", ")),
        a.config);
  for (size_t i = 0; i < experts.size(); ++i) {
    std::error_code ec;
    if (!fs::is_regular_file(data[i], ec))
      throw Error(ErrorKind::Io, fmt::format("data file of '{}' not found", experts[i].written),
                  data[i]);
    experiments::check_merge_shapes(plan, *plan.models[experts[i].model].checkpoint);
  }
  for (const auto& w : plan.warnings) std::cerr << "warning: " << w << "\n";

  std::optional<ScratchDir> scratch;
  if (a.save_merge.empty()) scratch.emplace();
  engine::RunOptions ro;
  ro.out = a.save_merge.empty() ? scratch->path / "merge" : fs::path(a.save_merge);
  ro.config_path = a.config;
  ro.threads = f.threads;
  engine::run_merge(plan, ro);
  const auto merged = io::Checkpoint::open(ro.out);
  const io::TensorSource* base = plan.base ? plan.models[*plan.base].checkpoint.get() : nullptr;
  const experiments::MergeApproxOptions opt{a.steps, model::parse_rule(a.rule), a.fisher};

  json out = json::array();
  if (!a.as_json)
    std::cout << fmt::format("merge {} ({}, {} models): D_i = W_merge − W_i on each model's data\n",
                             a.config, plan.config.method_name, experts.size());
  for (size_t i = 0; i < experts.size(); ++i) {
    const auto& pm = plan.models[experts[i].model];
    const experiments::MergeSources src{*pm.checkpoint, merged, base};
    DataFlags fi = f;
    fi.data = data[i];
    model::ApproxResult r;
    if (a.streamed) {
      const auto set = load_data(pm.dir, fi);
      r = experiments::merge_expert_approx_streamed(src, set, f.load_options(), opt);
    } else {
      auto L = load_all(pm.dir, fi, pm.checkpoint.get());
      r = experiments::merge_expert_approx(L.model, src, L.set, opt);
    }
    if (a.as_json) {
      json j = r.to_json();
      j["model"] = experts[i].written;
      j["data"] = data[i];
      out.push_back(std::move(j));
    } else {
      std::cout << fmt::format("model '{}' on {}:\n", experts[i].written, data[i]);
      print_approx_text(r, a.rule, a.steps, "W_merge", "W_i", "  ");
    }
  }
  if (a.as_json)
    std::cout << json{{"merge", a.config},
                      {"method", plan.config.method_name},
                      {"saved", a.save_merge.empty() ? json(nullptr) : json(a.save_merge)},
                      {"experts", out}}
                     .dump(2)
              << "\n";
  else if (!a.save_merge.empty())
    std::cout << fmt::format("merged model kept in {}\n", a.save_merge);
  return int(kOk);
}

Command add_approx(CLI::App& app) {
  auto* sub = app.add_subcommand("approx", torch_summary("approx"));
  sub->footer(
      "Builds D = Δ' − Δ with the same engine and seed as `edit` (nothing written), then reports\n"
      "(1/C) Σ ⟨∇L(W_post + t_c·D), D⟩, per-tensor contributions (they sum to it), the true\n"
      "ΔL = L(W_edit) − L(W_post) on the same data, the gap, and the intensity ‖D‖²/‖Δ‖².\n"
      "Weights are f32 (W_edit is not rounded to the checkpoint dtype).\n"
      "With --merge CONFIG.yaml (a `deltaedit merge` config) instead of --base/--post/--op: the "
      "merge is\n"
      "run (into a temporary directory, or kept with --save-merge DIR) and explained per model i "
      "of the\n"
      "config: D_i = W_merge − W_i on model i's data (--data MODEL=FILE, the model as the config "
      "names\n"
      "it, once for every model), the true ΔL_i = L(W_merge) − L(W_i), the gap and the "
      "contributions.\n"
      "Examples:\n  deltaedit approx --base B --post P --op dare:p=0.9 --data gsm8k.jsonl --steps "
      "5 --json\n"
      "  deltaedit approx --merge merge.yaml --data ./Llama-3-8B-math=math.jsonl --data "
      "./Llama-3-8B-code=code.jsonl --steps 5");
  auto f = std::make_shared<DataFlags>();
  auto base = std::make_shared<std::string>();
  auto post = std::make_shared<std::string>();
  auto ops = std::make_shared<std::vector<std::string>>();
  auto steps = std::make_shared<int>(5);
  auto rule = std::make_shared<std::string>("left");
  auto seed = std::make_shared<uint64_t>(0);
  auto fisher = std::make_shared<bool>(false);
  auto as_json = std::make_shared<bool>(false);
  auto grad = std::make_shared<std::string>();
  auto include = std::make_shared<std::string>();
  auto exclude = std::make_shared<std::string>();
  auto merge_config = std::make_shared<std::string>();
  auto save_merge = std::make_shared<std::string>();
  sub->add_option("--base", *base, "pre-trained checkpoint");
  sub->add_option("--post", *post,
                  "post-trained checkpoint, or a PEFT LoRA adapter directory over --base");
  sub->add_option("--op", *ops, "operation spec, repeatable (see `deltaedit ops`)");
  sub->add_option("--merge", *merge_config,
                  "explain a merge (mergekit YAML, as `deltaedit merge`) per model: instead of "
                  "--base/--post/--op");
  sub->add_option("--save-merge", *save_merge,
                  "with --merge: keep the merged model in this directory (must not exist)");
  sub->add_option("--steps", *steps, "Riemann nodes C (default 5)")->check(CLI::Range(1, 1000));
  sub->add_option("--rule", *rule, "left (default), mid or trapezoid")
      ->check(CLI::IsMember({"left", "mid", "trapezoid"}));
  sub->add_option("--seed", *seed,
                  "seed of the edit (as in `edit`); with --merge, of the merge (as in `merge`)");
  sub->add_option("--grad", *grad, "gradient file for biased:by=grad");
  sub->add_option("--include", *include, "edit only tensors matching this regex");
  sub->add_option("--exclude", *exclude, "do not edit tensors matching this regex");
  sub->add_flag("--fisher", *fisher,
                "also the second-order term ½ Σ F_ii D_i² (diagonal empirical Fisher)");
  sub->add_flag("--json", *as_json, "machine-readable output");
  auto streamed = std::make_shared<bool>(false);
  auto dry_run = std::make_shared<bool>(false);
  auto max_memory = std::make_shared<std::string>();
  sub->add_flag(
      "--streamed", *streamed,
      "memory bounded by one decoder layer: weights formed unit by unit, D regenerated per tensor");
  sub->add_option(
      "--max-memory", *max_memory,
      "stream (as --streamed) when the in-memory path would hold more than this (e.g. 16GB)");
  sub->add_flag("--dry-run", *dry_run, "print the planned memory and passes, run nothing");
  f->add(sub, true);
  return {
      sub, [=] {
        if (!merge_config->empty()) {
          for (const char* flag : {"--base", "--post", "--op", "--grad", "--include", "--exclude",
                                   "--dry-run", "--max-memory"})
            if (sub->count(flag) > 0)
              throw Error(
                  ErrorKind::Usage,
                  fmt::format("--merge and {} cannot be combined: approx --merge takes its models "
                              "from the merge config",
                              flag));
          ApproxMergeArgs a{*merge_config, *save_merge, *rule,     std::nullopt,
                            *steps,        *fisher,     *streamed, *as_json};
          if (sub->count("--seed") > 0) a.seed = *seed;
          return run_approx_merge(a, *f);
        }
        if (!save_merge->empty())
          throw Error(ErrorKind::Usage, "--save-merge needs --merge CONFIG.yaml");
        if (base->empty() || post->empty() || ops->empty())
          throw Error(ErrorKind::Usage,
                      "approx needs --base, --post and --op (or --merge CONFIG.yaml)");
        if (f->per_model_data.size() != 1)
          throw Error(ErrorKind::Usage,
                      "approx needs one --data FILE (several --data MODEL=FILE go with --merge)");
        f->data = f->per_model_data.front();
        auto chain = engine::OpChain::build(*ops, *seed, *include, *exclude);
        if (chain.needs_grad() && grad->empty())
          throw Error(ErrorKind::Usage, "an op needs --grad G.safetensors");
        auto bck = io::Checkpoint::open(*base);
        auto pck = io::open_post(*post, bck);  // a checkpoint or a PEFT adapter over base
        std::optional<io::SafetensorsFile> gf;
        if (!grad->empty()) gf = io::SafetensorsFile::open(*grad);
        const bool adapter = io::is_peft_adapter(*post);
        const fs::path data_dir = adapter ? fs::path(*base) : fs::path(*post);
        bool stream = *streamed;
        if (stream || *dry_run || !max_memory->empty()) {
          auto set = load_data(data_dir, *f);
          model::StreamedModel sm(*pck, f->load_options());
          engine::IncrementSource src(chain, bck, *pck, gf ? &*gf : nullptr);
          size_t edited = 0;
          for (const auto& n : src.names())
            edited += sm.arch().tied && n == "lm_head.weight" ? 0 : 1;
          const auto r_rule = model::parse_rule(*rule);
          const auto nodes = model::quadrature_nodes(*steps, r_rule);
          std::vector<double> pts;
          for (const auto& [t, w] : nodes) pts.push_back(t);
          const int64_t grad_pts = int64_t(pts.size()) +
                                   (*fisher && std::find(pts.begin(), pts.end(), 0.0) == pts.end());
          for (double t : {0.0, 1.0})
            if (std::find(pts.begin(), pts.end(), t) == pts.end()) pts.push_back(t);
          auto plan = sm.plan(set, int64_t(pts.size()), grad_pts, edited);
          if (!max_memory->empty() && plan.in_memory_bytes > engine::parse_size(*max_memory))
            stream = true;
          if (*dry_run) {
            if (*as_json) {
              auto j = plan.to_json();
              j["streamed"] = stream;
              j["edited_tensors"] = edited;
              std::cout << j.dump(2) << "\n";
              return int(kOk);
            }
            std::cout << fmt::format(
                "{} path: {} units (embedding, {} decoder layers, head), {} path points "
                "walked together ({} with a gradient), {} token positions\n",
                stream ? "streamed" : "in-memory", plan.units, sm.arch().layers, plan.streams,
                plan.gradient_streams, plan.tokens);
            std::cout << fmt::format(
                "streamed memory: about {} (one unit's weights, D and gradients {}; kept "
                "activations {}); in memory: about {}\n",
                gb(plan.peak_bytes), gb(plan.weight_bytes), gb(plan.activation_bytes),
                gb(plan.in_memory_bytes));
            std::cout << fmt::format(
                "passes: one forward walk over all units for all points, one backward walk "
                "for the {} gradient points; {} edited tensors, D formed {} times\n",
                plan.gradient_streams, edited, plan.increments_formed);
            return int(kOk);
          }
          if (stream) {
            model::StreamedEdit se;
            se.names = src.names();
            se.increment = [&](const std::string& n, double& dss) {
              return model::owning_tensor(src.increment(n, &dss));
            };
            se.delta_sumsq = [&](const std::string& n) { return src.delta_sumsq(n); };
            model::ApproxResult r;
            {
              WalkProgress wp(sm, "approx", *f, *as_json);
              r = sm.approximation_term(set, se, *steps, r_rule, *fisher);
            }
            return print_approx(r, *rule, *steps, *as_json);
          }
        }
        auto inc = engine::edit_increments(chain, bck, *pck, gf ? &*gf : nullptr);
        auto L = load_all(data_dir, *f, adapter ? pck.get() : nullptr);
        auto r = model::approximation_term(L.model, L.set, inc.d, inc.delta_sumsq, *steps,
                                           model::parse_rule(*rule), *fisher);
        return print_approx(r, *rule, *steps, *as_json);
      }};
}

Command add_zoo(CLI::App& app) {
  auto* sub = app.add_subcommand("zoo", torch_summary("zoo"));
  sub->footer(
      "Trains the in-house model family (deterministic for a seed and thread count):\n"
      "  base       pre-trained on a generated corpus that holds both tasks' content in prose\n"
      "  math-sft   light SFT of base on GSM8K-format arithmetic word problems\n"
      "  math-dpo   DPO of math-sft (reference = math-sft, beta 0.1) on correct/wrong solution "
      "pairs\n"
      "  order-sft  light SFT of base on the order task (the second expert)\n"
      "Writes OUT/<stage> (config.json, model.safetensors, tokenizer.json, zoo.json), OUT/data, "
      "OUT/zoo.json;\n"
      "an interrupted run continues where it stopped. --recipe retrain trains the large-delta "
      "pair\n"
      "instead (OUT/base, OUT/post: SFT at 2/3 of the pre-training learning rate, as the shipped "
      "models/zoo).\n"
      "Example:\n  deltaedit zoo --out zoo --seed 1");
  auto o = std::make_shared<zoo::ZooOptions>();
  auto f = std::make_shared<zoo::FamilyOptions>();
  auto out = std::make_shared<std::string>();
  auto recipe = std::make_shared<std::string>("family");
  auto seed = std::make_shared<uint64_t>(1);
  auto threads = std::make_shared<int>(1);
  sub->add_option("--out", *out, "output directory")->required();
  sub->add_option("--recipe", *recipe, "family (default) or retrain")
      ->check(CLI::IsMember({"family", "retrain"}));
  sub->add_option("--seed", *seed, "seed (default 1)");
  sub->add_option("--threads", *threads,
                  "CPU threads (default 1, as the shipped models; part of the determinism key)");
  sub->add_option("--pretrain-steps", f->pretrain_steps, "pre-training steps");
  sub->add_option("--pretrain-seq", f->pretrain_seq, "pre-training sequence length in tokens");
  sub->add_option("--pretrain-batch", f->pretrain_batch, "pre-training sequences per step");
  sub->add_option("--pretrain-lr", f->pretrain_lr, "pre-training peak learning rate");
  sub->add_option("--corpus-bytes", f->corpus_bytes, "size of the generated pre-training corpus in bytes");
  sub->add_option("--sft-steps", f->sft_steps, "SFT steps of each expert");
  sub->add_option("--sft-lr", f->sft_lr, "SFT peak learning rate of each expert");
  sub->add_option("--dpo-steps", f->dpo_steps, "DPO steps");
  sub->add_option("--eval", f->n_eval, "test problems used for the accuracy figures");
  sub->add_option("--stop-after", f->stop_after,
                  "stop after this stage (data, base, math-sft, math-dpo)");
  return {sub, [=] {
            const auto log = [](const std::string& m) { std::cerr << m << std::endl; };
            if (*recipe == "retrain") {
              o->seed = *seed;
              o->threads = *threads;
              auto s = zoo::build_zoo(*out, *o, log);
              std::cout << fmt::format(
                  "wrote {}: base accuracy {:.3f}, post accuracy {:.3f}, {} parameters\n", *out,
                  s["base"]["accuracy"].get<double>(), s["post"]["accuracy"].get<double>(),
                  s["post"]["parameters"].get<int64_t>());
              return int(kOk);
            }
            f->seed = *seed;
            f->threads = *threads;
            auto s = zoo::build_family(*out, *f, log);
            for (auto it = s["stages"].begin(); it != s["stages"].end(); ++it)
              std::cout << fmt::format("{}: math accuracy {:.3f}, order accuracy {:.3f}\n",
                                       it.key(),
                                       it.value()["evaluation"]["math_accuracy"].get<double>(),
                                       it.value()["evaluation"]["order_accuracy"].get<double>());
            std::cout << fmt::format("wrote {}\n", *out);
            return int(kOk);
          }};
}

int run_sweep_cli(const experiments::SweepConfig& cfg, const fs::path& out) {
  ProgressLine bar("sweep", stderr_is_tty());
  auto t0 = std::chrono::steady_clock::now();
  auto r = experiments::run_sweep(cfg, out, [&](size_t d, size_t n, const std::string& cur) {
    bar.update(double(d), double(n), fmt::format("{}/{} {}", d, n, cur.substr(0, 28)));
    if (!stderr_is_tty() && d < n) std::cerr << fmt::format("[{}/{}] {}\n", d, n, cur);
  });
  bar.finish();
  const auto& mo = r["models"];
  std::cout << fmt::format("base accuracy {:.3f} loss {:.4f}; post accuracy {:.3f} loss {:.4f}\n",
                           mo["base"]["accuracy"].get<double>(), mo["base"]["loss"].get<double>(),
                           mo["post"]["accuracy"].get<double>(), mo["post"]["loss"].get<double>());
  std::cout << fmt::format(
      "{} edits measured in {:.0f} s; report: {}\n", r["timing"]["points"].get<size_t>(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
      (out / "report/index.html").string());
  return kOk;
}

Command add_sweep(CLI::App& app) {
  auto* sub = app.add_subcommand("sweep", torch_summary("sweep"));
  sub->footer(
      "CONFIG (JSON): {\"base\", \"post\", \"eval_data\", \"loss_data\", \"seed\", "
      "\"eval_examples\",\n"
      "\"loss_examples\", \"max_new_tokens\", \"steps\", \"experiments\": {\"F1\": {\"p\": [...], "
      "\"k\": [...]}, ...}}.\n"
      "Paths are relative to the config file. Resumable: finished points are kept in OUT/points "
      "and\n"
      "not recomputed; Ctrl-C leaves them intact. Writes OUT/results.json, OUT/<ID>.csv, "
      "OUT/report/index.html.\n"
      "`deltaedit sweep --print-full-grid` prints the full grid of the paper to start a config "
      "from.\n"
      "Example:\n  deltaedit sweep docs/sweep-example.json --out sweep-llama3");
  auto config = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto print_grid = std::make_shared<bool>(false);
  sub->add_option("CONFIG", *config, "sweep configuration (JSON)");
  sub->add_option("--out", *out, "output directory (resumed when it holds the same sweep)");
  sub->add_flag("--print-full-grid", *print_grid,
                "print the full experiment grid as JSON and exit");
  return {sub, [=] {
            if (*print_grid) {
              std::cout << experiments::full_grid_json().dump(2) << "\n";
              return int(kOk);
            }
            if (config->empty() || out->empty())
              throw Error(ErrorKind::Usage, "sweep needs CONFIG and --out DIR");
            auto j = io::parse_json_strict(util::read_file(*config), *config);
            auto cfg = util::at_boundary(*config, "", [&] {
              return experiments::SweepConfig::from_json(j, fs::path(*config).parent_path());
            });
            return run_sweep_cli(cfg, *out);
          }};
}

// The shipped model pair: installed beside the binary (PREFIX/bin -> PREFIX/share/deltaedit/zoo),
// in the source tree above a build directory (build/ -> models/zoo), or under the working
// directory. Returned as the user would write it: relative to the working directory when it lies
// below it.
fs::path find_shipped_zoo() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) {
    const fs::path bin = exe.parent_path();
    candidates = {bin.parent_path() / "share/deltaedit/zoo", bin.parent_path() / "models/zoo",
                  bin / "models/zoo"};
  }
  candidates.push_back(fs::current_path(ec) / "models/zoo");
  std::string tried;
  for (const auto& c : candidates) {
    if (fs::exists(c / "base/model.safetensors", ec)) {
      const fs::path cwd = fs::current_path(ec);
      const fs::path rel = c.lexically_normal().lexically_relative(cwd);
      return !ec && !rel.empty() && *rel.begin() != ".." ? rel : c.lexically_normal();
    }
    tried += (tried.empty() ? "" : ", ") + c.lexically_normal().string();
  }
  throw Error(ErrorKind::Usage, "cannot find the shipped models (looked in " + tried +
                                    "); give it with --zoo DIR (a folder with base/ and data/)");
}

int run_merge_sweep_cli(const experiments::MergeSweepConfig& cfg, const fs::path& out) {
  ProgressLine bar("merges", stderr_is_tty());
  auto r = experiments::run_merge_sweep(cfg, out, [&](size_t d, size_t n, const std::string& cur) {
    bar.update(double(d), double(n), fmt::format("{}/{} {}", d, n, cur.substr(0, 28)));
    if (!stderr_is_tty() && d < n) std::cerr << fmt::format("[{}/{}] {}\n", d, n, cur);
  });
  bar.finish();
  std::cout << fmt::format("{} merges measured; results: {}\n", r["points"].size(),
                           (out / "merge-results.json").string());
  return kOk;
}

Command add_merge_sweep(CLI::App& app) {
  auto* sub = app.add_subcommand("merge-sweep", torch_summary("merge-sweep"));
  sub->footer(
      "M1: merges two experts of one base with each method of a grid and measures every merge on "
      "both\n"
      "tasks: accuracy, and for each task i the approximation term of D_i = W_merge - W_i against "
      "the\n"
      "true loss change L_i(W_merge) - L_i(W_i), with per-tensor contributions.\n"
      "CONFIG (JSON): {\"base\", \"experts\": [{\"name\", \"model\", \"eval_data\", \"loss_data\"} "
      "x 2],\n"
      "\"seed\", \"eval_examples\", \"loss_examples\", \"steps\", \"grid\": {\"task_arithmetic\": "
      "{\"lambda\": [...]},\n"
      "\"ties\": {\"density\": [...]}, \"dare_ties\": {\"drop\": [...]}, \"della\": {\"density\": "
      "[...]},\n"
      "\"model_stock\": {}, \"slerp\": {\"t\": [...]}}}. Without CONFIG: the shipped family's "
      "grid.\n"
      "Resumable (OUT/merge-points). Writes OUT/merge-results.json.\n"
      "Example:\n  deltaedit merge-sweep --out out/merges");
  auto config = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto zoo = std::make_shared<std::string>();
  sub->add_option("CONFIG", *config,
                  "merge sweep configuration (JSON); default: the family's grid");
  sub->add_option("--out", *out, "output directory (resumed when it holds the same sweep)")
      ->required();
  sub->add_option("--zoo", *zoo,
                  "family directory made by `deltaedit zoo` (default: the shipped one)");
  return {sub, [=] {
            const fs::path fam =
                config->empty() && zoo->empty() ? find_shipped_zoo() : fs::path(*zoo);
            json j = config->empty() ? experiments::merge_demo_config_json(fam)
                                     : io::parse_json_strict(util::read_file(*config), *config);
            auto cfg = util::at_boundary(config->empty() ? fam.string() : *config, "", [&] {
              return experiments::MergeSweepConfig::from_json(
                  j, config->empty() ? fs::path() : fs::path(*config).parent_path());
            });
            return run_merge_sweep_cli(cfg, *out);
          }};
}

// The demo on the family: both regimes' sweeps, EXPO with the DPO loss, the merges, one report.
int run_family_demo(const fs::path& zoo, const fs::path& out, bool full) {
  auto t0 = std::chrono::steady_clock::now();
  auto grid = [&](json cfg) {
    if (full) cfg["experiments"] = experiments::full_grid_json();
    return cfg;
  };
  json input{{"regimes", json::array()}, {"dpo", nullptr}, {"merge", nullptr}};
  const std::vector<std::tuple<std::string, std::string, fs::path>> regimes = {
      {"family", "light SFT (math-sft)", zoo}, {"retrain", "retrain pair", zoo / "retrain"}};
  for (const auto& [id, name, dir] : regimes) {
    if (!fs::exists(dir / "base")) continue;
    std::cout << fmt::format("== {}: the paper's experiments on {}\n", name, dir.string());
    const json cj = grid(experiments::demo_config_json(dir));
    auto cfg = experiments::SweepConfig::from_json(cj, {});
    run_sweep_cli(cfg, out / id);
    input["regimes"].push_back(
        {{"id", id},
         {"name", name},
         {"delta_over_weight", experiments::delta_over_weight(cfg.base, cfg.post)},
         {"results", io::parse_json_strict(util::read_file(out / id / "results.json"),
                                           (out / id / "results.json").string())}});
  }
  if (fs::exists(zoo / "math-dpo")) {
    std::cout << "== EXPO on math-sft -> math-dpo with the DPO loss\n";
    json cj = experiments::demo_config_json(zoo);
    cj["base"] = (zoo / "math-sft").string();
    cj["post"] = (zoo / "math-dpo").string();
    cj["loss_data"] = (zoo / "data/dpo_test.jsonl").string();
    cj["loss"] = "dpo";
    cj["beta"] = 0.1;
    cj["experiments"] = {{"F6", {{"alpha", {-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0}}}}};
    run_sweep_cli(experiments::SweepConfig::from_json(cj, {}), out / "dpo");
    input["dpo"] = io::parse_json_strict(util::read_file(out / "dpo/results.json"),
                                         (out / "dpo/results.json").string());
  }
  if (fs::exists(zoo / "order-sft")) {
    std::cout << "== M1: merges of math-sft and order-sft over base\n";
    run_merge_sweep_cli(
        experiments::MergeSweepConfig::from_json(experiments::merge_demo_config_json(zoo), {}),
        out / "merge");
    input["merge"] = io::parse_json_strict(util::read_file(out / "merge/merge-results.json"),
                                           (out / "merge/merge-results.json").string());
  }
  experiments::render_family_report(input, out);
  std::cout << fmt::format(
      "demo done in {:.0f} s; report: {}\n",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
      (out / "report/index.html").string());
  return kOk;
}

Command add_demo(CLI::App& app) {
  auto* sub = app.add_subcommand("demo", torch_summary("demo"));
  sub->footer(
      "Runs the paper's experiments (reduced grid) on the shipped family: the light-SFT regime "
      "(base ->\n"
      "math-sft) and the retrain pair (models/zoo/retrain), EXPO on math-sft -> math-dpo with the "
      "DPO loss,\n"
      "and M1 (merges of math-sft and order-sft). Writes OUT/report/index.html (both regimes side "
      "by side),\n"
      "OUT/<part>/ with each part's results, CSVs and report. Resumable. --full runs the full grid "
      "of the\n"
      "paper in both regimes: 115 edits per regime instead of 85 (F1's p in steps of 0.1, F6's "
      "alpha in\n"
      "steps of 0.1), about 1.35 times the sweeps' time.\n"
      "Example:\n  deltaedit demo --out out/demo");
  auto out = std::make_shared<std::string>("out/demo");
  auto zoo = std::make_shared<std::string>();
  auto full = std::make_shared<bool>(false);
  sub->add_option("--out", *out, "output directory (default out/demo)");
  sub->add_option("--zoo", *zoo,
                  "family (or pair) directory made by `deltaedit zoo` (default: the shipped one)");
  sub->add_flag("--full", *full, "the full grid instead of the reduced one");
  return {sub, [=] {
            const fs::path z = zoo->empty() ? find_shipped_zoo() : fs::path(*zoo);
            if (!fs::exists(z / "math-sft")) {  // a single pair (base, post)
              json cj = experiments::demo_config_json(z);
              if (*full) cj["experiments"] = experiments::full_grid_json();
              return run_sweep_cli(experiments::SweepConfig::from_json(cj, {}), *out);
            }
            return run_family_demo(z, *out, *full);
          }};
}

}  // namespace

std::vector<Command> add_torch_commands(CLI::App& app) {
  return {add_eval(app),  add_grad(app),        add_approx(app), add_zoo(app),
          add_sweep(app), add_merge_sweep(app), add_demo(app)};
}

}  // namespace deltaedit::cli
