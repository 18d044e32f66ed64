// eval, grad, approx: subcommands that run the model (libtorch).
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "cli/common.h"
#include "cli/torch_names.h"
#include "engine/edit_engine.h"
#include "experiments/sweep.h"
#include "zoo/train.h"
#include "io/checkpoint.h"
#include "io/peft.h"
#include "io/convert.h"
#include "io/writer.h"
#include "model/evaluate.h"
#include "text/dataset.h"
#include "util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::cli {
namespace {

struct DataFlags {
  std::string data, loss = "ce", ref, tokenizer, device = "cpu", dtype = "f32";
  size_t batch_size = 8, max_length = 0, limit = 0;
  double beta = 0.1;
  unsigned threads = 2;
  void add(CLI::App* sub) {
    sub->add_option("--data", data, "JSONL records: {text} | {prompt,response} | {input_ids} | {prompt,chosen,rejected}")
        ->required();
    sub->add_option("--loss", loss, "ce (causal LM, default) or dpo")->check(CLI::IsMember({"ce", "dpo"}));
    sub->add_option("--ref", ref, "reference model of the DPO loss");
    sub->add_option("--beta", beta, "DPO β (default 0.1)");
    sub->add_option("--batch-size", batch_size, "sequences per batch (default 8)")->check(CLI::Range(size_t(1), size_t(4096)));
    sub->add_option("--max-length", max_length, "truncate sequences to this many tokens (default: none)");
    sub->add_option("--limit", limit, "use only the first N records");
    sub->add_option("--tokenizer", tokenizer, "tokenizer.json (default: the model directory's)");
    sub->add_option("--threads", threads, "CPU threads (default 2)")->check(CLI::Range(1u, 256u));
    sub->add_option("--device", device, "cpu or cuda (when libtorch has CUDA)")->check(CLI::IsMember({"cpu", "cuda"}));
    sub->add_option("--compute-dtype", dtype, "f32 (default) or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  }
  model::LoadOptions load_options() const {
    model::LoadOptions o;
    o.dtype = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    if (device == "cuda") {
      if (!torch::cuda::is_available())
        throw Error(ErrorKind::Usage, "--device cuda: this libtorch build has no CUDA or no GPU is visible");
      o.device = torch::kCUDA;
    }
    return o;
  }
  model::LossKind kind() const { return loss == "dpo" ? model::LossKind::DPO : model::LossKind::CausalLM; }
};

std::optional<text::Tokenizer> load_tokenizer(const std::string& explicit_path, const fs::path& model_dir) {
  if (!explicit_path.empty()) return text::Tokenizer::load(explicit_path);
  if (fs::is_directory(model_dir) && fs::exists(model_dir / "tokenizer.json")) return text::Tokenizer::load(model_dir);
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
Loaded load_all(const fs::path& model_path, const DataFlags& f, const io::TensorSource* model_source = nullptr) {
  torch::set_num_threads(int(f.threads));
  std::optional<io::Checkpoint> ck;
  if (!model_source) ck = io::Checkpoint::open(model_path);
  const io::TensorSource& weights = model_source ? *model_source : static_cast<const io::TensorSource&>(*ck);
  auto m = model::Model::load(weights, f.load_options());
  auto tok = load_tokenizer(f.tokenizer, model_path);
  text::DataOptions dopt{f.max_length, f.limit};
  auto records = text::load_jsonl(f.data, tok ? &*tok : nullptr, dopt);
  std::optional<model::Model> ref;
  if (f.kind() == model::LossKind::DPO) {
    if (f.ref.empty()) throw Error(ErrorKind::Usage, "--loss dpo needs --ref MODEL (the reference, e.g. the SFT model)");
    ref = model::Model::load(io::Checkpoint::open(f.ref), f.load_options());
  }
  auto set = model::make_eval_set(std::move(records), f.batch_size, f.kind(), ref ? &*ref : nullptr, f.beta);
  return {std::move(m), std::move(tok), std::move(ref), std::move(set)};
}

Command add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", torch_summary("eval"));
  sub->footer("Loss = mean token cross-entropy over all scored tokens (DPO: mean over records).\n"
              "Accuracy: greedy decoding of each response; the answer is the number after the last ####.\n"
              "Examples:\n  deltaedit eval --model post --data test.jsonl --metric accuracy --json\n"
              "  deltaedit eval --model aligned --data prefs.jsonl --loss dpo --ref sft");
  auto f = std::make_shared<DataFlags>();
  auto model_path = std::make_shared<std::string>();
  auto metric = std::make_shared<std::string>("loss");
  auto max_new = std::make_shared<int64_t>(64);
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("--model", *model_path, "checkpoint directory")->required();
  sub->add_option("--metric", *metric, "loss (default) or accuracy (reports loss too)")->check(CLI::IsMember({"loss", "accuracy"}));
  sub->add_option("--max-new-tokens", *max_new, "generation budget for accuracy (default 64)");
  sub->add_flag("--json", *as_json, "machine-readable output: {loss, tokens, accuracy, examples}");
  f->add(sub);
  return {sub, [=] {
            auto L = load_all(*model_path, *f);
            double loss = model::dataset_loss(L.model, L.set);
            int64_t tokens = 0;
            for (const auto& r : L.set.records)
              for (auto s : r.seq.scored) tokens += s;
            std::optional<model::AccuracyResult> acc;
            if (*metric == "accuracy") {
              if (!L.tok) throw Error(ErrorKind::Usage, "accuracy needs a tokenizer (tokenizer.json in the model directory or --tokenizer)");
              acc = model::dataset_accuracy(L.model, *L.tok, L.set.records, *max_new);
            }
            if (*as_json) {
              json j{{"loss", loss}, {"tokens", tokens}, {"examples", L.set.records.size()},
                     {"accuracy", acc ? json(acc->accuracy()) : json(nullptr)}};
              std::cout << j.dump(2) << "\n";
            } else {
              std::cout << fmt::format("loss {:.6f} over {} scored tokens in {} records\n", loss, tokens,
                                       L.set.records.size());
              if (acc) std::cout << fmt::format("accuracy {:.4f} ({}/{})\n", acc->accuracy(), acc->correct, acc->examples);
            }
            return int(kOk);
          }};
}

Command add_grad(CLI::App& app) {
  auto* sub = app.add_subcommand("grad", torch_summary("grad"));
  sub->footer("The output names tensors like the parameters; feed it to `edit --op biased:by=grad --grad G`.\n"
              "Example:\n  deltaedit grad --model post --data train.jsonl --out grad.safetensors");
  auto f = std::make_shared<DataFlags>();
  auto model_path = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  sub->add_option("--model", *model_path, "checkpoint directory")->required();
  sub->add_option("--out", *out, "output .safetensors file (must not exist)")->required();
  f->add(sub);
  return {sub, [=] {
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
            std::cout << fmt::format("wrote {} ({} tensors; loss {:.6f})\n", *out, g.grads.size(), g.loss());
            return int(kOk);
          }};
}

Command add_approx(CLI::App& app) {
  auto* sub = app.add_subcommand("approx", torch_summary("approx"));
  sub->footer(
      "Builds D = Δ' − Δ with the same engine and seed as `edit` (nothing written), then reports\n"
      "(1/C) Σ ⟨∇L(W_post + t_c·D), D⟩, per-tensor contributions (they sum to it), the true\n"
      "ΔL = L(W_edit) − L(W_post) on the same data, the gap, and the intensity ‖D‖²/‖Δ‖².\n"
      "Weights are f32 (W_edit is not rounded to the checkpoint dtype).\n"
      "Example:\n  deltaedit approx --base B --post P --op dare:p=0.9 --data gsm8k.jsonl --steps 5 --json");
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
  sub->add_option("--base", *base, "pre-trained checkpoint")->required();
  sub->add_option("--post", *post, "post-trained checkpoint, or a PEFT LoRA adapter directory over --base")->required();
  sub->add_option("--op", *ops, "operation spec, repeatable (see `deltaedit ops`)")->required();
  sub->add_option("--steps", *steps, "Riemann nodes C (default 5)")->check(CLI::Range(1, 1000));
  sub->add_option("--rule", *rule, "left (default), mid or trapezoid")->check(CLI::IsMember({"left", "mid", "trapezoid"}));
  sub->add_option("--seed", *seed, "seed of the edit (as in `edit`)");
  sub->add_option("--grad", *grad, "gradient file for biased:by=grad");
  sub->add_option("--include", *include, "edit only tensors matching this regex");
  sub->add_option("--exclude", *exclude, "do not edit tensors matching this regex");
  sub->add_flag("--fisher", *fisher, "also the second-order term ½ Σ F_ii D_i² (diagonal empirical Fisher)");
  sub->add_flag("--json", *as_json, "machine-readable output");
  f->add(sub);
  return {sub, [=] {
            auto chain = engine::OpChain::build(*ops, *seed, *include, *exclude);
            if (chain.needs_grad() && grad->empty()) throw Error(ErrorKind::Usage, "an op needs --grad G.safetensors");
            auto bck = io::Checkpoint::open(*base);
            auto pck = io::open_post(*post, bck);  // a checkpoint or a PEFT adapter over base
            std::optional<io::SafetensorsFile> gf;
            if (!grad->empty()) gf = io::SafetensorsFile::open(*grad);
            auto inc = engine::edit_increments(chain, bck, *pck, gf ? &*gf : nullptr);
            const bool adapter = io::is_peft_adapter(*post);
            auto L = load_all(adapter ? fs::path(*base) : fs::path(*post), *f, adapter ? pck.get() : nullptr);
            auto r = model::approximation_term(L.model, L.set, inc.d, inc.delta_sumsq, *steps, model::parse_rule(*rule), *fisher);
            if (*as_json) {
              std::cout << r.to_json().dump(2) << "\n";
              return int(kOk);
            }
            std::cout << fmt::format("approximation term ({} rule, C={}): {:+.6e}\n", *rule, *steps, r.approximation_term);
            std::cout << fmt::format("true ΔL = L(W_edit) − L(W_post) = {:.6f} − {:.6f} = {:+.6e}\n", r.loss_edit,
                                     r.loss_post, r.true_delta_loss);
            std::cout << fmt::format("gap (ΔL − term): {:+.3e}; intensity ‖D‖²/‖Δ‖² = {:.6g}\n", r.gap, r.intensity);
            if (r.fisher_term) std::cout << fmt::format("second-order Fisher term: {:+.6e}\n", *r.fisher_term);
            auto pt = r.per_tensor;
            std::sort(pt.begin(), pt.end(), [](auto& a, auto& b) { return std::fabs(a.second) > std::fabs(b.second); });
            std::cout << "largest per-tensor contributions:\n";
            for (size_t i = 0; i < std::min<size_t>(10, pt.size()); ++i)
              std::cout << fmt::format("  {:<56} {:+.6e}\n", pt[i].first, pt[i].second);
            return int(kOk);
          }};
}

Command add_zoo(CLI::App& app) {
  auto* sub = app.add_subcommand("zoo", torch_summary("zoo"));
  sub->footer("Pre-trains a small LM on a generated English corpus (base), then post-trains it (SFT) on GSM8K-format\n"
              "arithmetic word problems (post). Deterministic for a seed and thread count.\n"
              "Writes OUT/base, OUT/post (config.json, model.safetensors, tokenizer.json, zoo.json), OUT/data.\n"
              "Example:\n  deltaedit zoo --out zoo --seed 1");
  auto o = std::make_shared<zoo::ZooOptions>();
  auto out = std::make_shared<std::string>();
  sub->add_option("--out", *out, "output directory (must not exist)")->required();
  sub->add_option("--seed", o->seed, "seed (default 1)");
  sub->add_option("--pretrain-steps", o->pretrain_steps, "pre-training steps");
  sub->add_option("--sft-steps", o->sft_steps, "post-training steps");
  sub->add_option("--hidden", o->hidden, "hidden size");
  sub->add_option("--layers", o->layers, "layers");
  sub->add_option("--threads", o->threads, "CPU threads (default 1, as the shipped pair; part of the determinism key)");
  sub->add_option("--eval", o->n_eval, "test problems used for the accuracy bars");
  return {sub, [=] {
            auto s = zoo::build_zoo(*out, *o, [](const std::string& m) { std::cerr << m << std::endl; });
            std::cout << fmt::format("wrote {}: base accuracy {:.3f}, post accuracy {:.3f}, {} parameters\n", *out,
                                     s["base"]["accuracy"].get<double>(), s["post"]["accuracy"].get<double>(),
                                     s["post"]["parameters"].get<int64_t>());
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
  std::cout << fmt::format("{} edits measured in {:.0f} s; report: {}\n", r["timing"]["points"].get<size_t>(),
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                           (out / "report/index.html").string());
  return kOk;
}

Command add_sweep(CLI::App& app) {
  auto* sub = app.add_subcommand("sweep", torch_summary("sweep"));
  sub->footer("CONFIG (JSON): {\"base\", \"post\", \"eval_data\", \"loss_data\", \"seed\", \"eval_examples\",\n"
              "\"loss_examples\", \"max_new_tokens\", \"steps\", \"experiments\": {\"F1\": {\"p\": [...], \"k\": [...]}, ...}}.\n"
              "Paths are relative to the config file. Resumable: finished points are kept in OUT/points and\n"
              "not recomputed; Ctrl-C leaves them intact. Writes OUT/results.json, OUT/<ID>.csv, OUT/report/index.html.\n"
              "`deltaedit sweep --print-full-grid` prints the full grid of the paper to start a config from.\n"
              "Example:\n  deltaedit sweep docs/sweep-example.json --out sweep-llama3");
  auto config = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto print_grid = std::make_shared<bool>(false);
  sub->add_option("CONFIG", *config, "sweep configuration (JSON)");
  sub->add_option("--out", *out, "output directory (resumed when it holds the same sweep)");
  sub->add_flag("--print-full-grid", *print_grid, "print the full experiment grid as JSON and exit");
  return {sub, [=] {
            if (*print_grid) {
              std::cout << experiments::full_grid_json().dump(2) << "\n";
              return int(kOk);
            }
            if (config->empty() || out->empty()) throw Error(ErrorKind::Usage, "sweep needs CONFIG and --out DIR");
            std::ifstream in(*config, std::ios::binary);
            if (!in) throw Error(ErrorKind::Io, "cannot open sweep config", *config);
            std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            auto j = io::parse_json_strict(text, *config);
            auto cfg = experiments::SweepConfig::from_json(j, fs::path(*config).parent_path());
            return run_sweep_cli(cfg, *out);
          }};
}

Command add_demo(CLI::App& app) {
  auto* sub = app.add_subcommand("demo", torch_summary("demo"));
  sub->footer("Runs the built-in sweep (reduced grid) on models/zoo: base = pre-trained, post = post-trained on\n"
              "GSM8K-format arithmetic. Writes OUT/report/index.html, OUT/results.json and CSVs. Resumable.\n"
              "Example:\n  deltaedit demo --out out/demo");
  auto out = std::make_shared<std::string>("out/demo");
  auto zoo = std::make_shared<std::string>(DELTAEDIT_DEFAULT_ZOO);
  sub->add_option("--out", *out, "output directory (default out/demo)");
  sub->add_option("--zoo", *zoo, "model pair directory made by `deltaedit zoo` (default: the shipped one)");
  return {sub, [=] {
            auto cfg = experiments::SweepConfig::from_json(experiments::demo_config_json(*zoo), {});
            return run_sweep_cli(cfg, *out);
          }};
}

}  // namespace

std::vector<Command> add_torch_commands(CLI::App& app) {
  return {add_eval(app), add_grad(app), add_approx(app), add_zoo(app), add_sweep(app), add_demo(app)};
}

}  // namespace deltaedit::cli
