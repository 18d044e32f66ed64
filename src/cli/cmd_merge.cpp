// merge: mergekit's YAML dialect, validated before any tensor is read, streamed in bounded memory.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "engine/edit_engine.h"
#include "engine/merge_run.h"
#include "merge/config.h"
#include "merge/plan.h"
#include "util/error.h"
#include "util/param_schema.h"
#include "util/read_file.h"
#include "util/size.h"

using nlohmann::json;

namespace deltaedit::cli {
namespace {

constexpr const char* kMergeHelp =
    R"(The config is mergekit's YAML. Keys are checked strictly: an unknown key, a parameter the
method does not take, duplicate keys or a bad value is an error naming the line (--lenient turns
unknown keys and unused parameters into warnings).

Task arithmetic of two fine-tunes on a base:
  merge_method: task_arithmetic
  base_model: ./Llama-3-8B
  models:
    - model: ./Llama-3-8B-code
      parameters: {weight: 0.7}
    - model: ./Llama-3-8B-math
      parameters: {weight: 0.3}
  parameters: {lambda: 1.0}
  dtype: bfloat16            # W, the dtype the method computes in (bfloat16 | float16 | float32)
  out_dtype: bfloat16        # written dtype (default: dtype)

Parameters take three forms:
  weight: 0.5                          a scalar
  weight: [0.0, 0.5, 1.0]              a gradient over the layers: layer k of L gets t = k/(L-1)
                                       (t = 1 when L = 1); embeddings, final norm and lm_head get
                                       t = 0, the FIRST value (mergekit's rule; the plan warns)
  weight:                              conditions: the first entry whose filter is a substring of
    - {filter: self_attn, value: 0.2}  the tensor name wins; no filter (or "*") matches all
    - {value: 0.8}
Precedence: a model's parameters, then the slice's, then the top-level ones, then the default.
Per-model parameters (weight, density, gamma, epsilon, scale) may appear at every level; global
ones (lambda, normalize, t, ...) never under a model. `deltaedit merge --methods` lists them.

Layer stacking with slices (passthrough); layers are renumbered and gradients restart per slice:
  merge_method: passthrough
  slices:
    - sources: [{model: ./A, layer_range: [0, 16]}]
    - sources: [{model: ./B, layer_range: [8, 32]}]

Extensions (ignored by mergekit, so the same file runs there):
  deltaedit: {conventions: paper, seed: 7}    # paper formulas (MERGE.md §3) and the seed
  models:
    - model: ./ft
      parameters: {weight: 1}
      deltaedit: {ops: ["dare:p=0.9"]}         # edit ops on this model's task vector first
A top-level `random_seed:` is honoured as the seed unless --seed is given.

Output: safetensors shards (index when more than one), config.json and tokenizer files from the
donor (the base, else the first model), deltaedit.json (config, seed, warnings) and README.md.
Nothing is created under --out when validation fails; an interrupted run leaves nothing behind.
Examples:
  deltaedit merge merge.yaml --dry-run            # validate and print the per-tensor plan
  deltaedit merge merge.yaml --out merged --seed 1 --threads 4
  deltaedit merge --methods                       # methods and their parameters)";

uint64_t size_flag(const char* flag, const std::string& text, uint64_t min = 1) {
  return util::parse_size_option(flag, text, min);
}

int list_methods(bool as_json) {
  json a = json::array();
  for (const auto* m : merge::all_methods()) {
    const auto& i = m->info();
    json ps = json::array();
    for (const auto& p : i.params) ps.push_back(util::to_json(p));
    a.push_back({{"name", i.name},
                 {"summary", i.summary},
                 {"needs_base", i.needs_base},
                 {"min_models", i.min_models},
                 {"max_models", i.max_models},
                 {"random", i.random},
                 {"params", ps}});
  }
  if (as_json) {
    std::cout << a.dump(2) << "\n";
    return kOk;
  }
  for (const auto* m : merge::all_methods()) {
    const auto& i = m->info();
    std::cout << fmt::format("{:<18} {}{}\n", i.name, i.summary,
                             i.needs_base ? " (needs base_model)" : "");
    for (const auto& p : i.params)
      std::cout << fmt::format("  {:<16} {:<9} {}{} {}  {}\n", p.name,
                               p.per_model ? "per-model" : "global",
                               p.required ? "required" : "default ",
                               p.default_value ? " " + util::default_text(p) : std::string(),
                               util::range_text(p), p.doc);
  }
  return kOk;
}

void print_plan(const merge::MergePlan& plan) {
  const json j = plan.to_json();
  std::cout << fmt::format(
      "plan: {} with {} conventions, seed {}; {} tensors, {} layers, {} output bytes\n",
      j["method"].get<std::string>(), j["conventions"].get<std::string>(), plan.seed,
      plan.tensors.size(), plan.output_layers, plan.output_bytes());
  for (size_t i = 0; i < plan.models.size(); ++i)
    std::cout << fmt::format("  model {}: {}{}\n", i, plan.models[i].path,
                             plan.base && *plan.base == i ? " (base)"
                             : i == plan.donor            ? " (donor)"
                                                          : "");
  for (const auto& t : plan.tensors) {
    std::cout << fmt::format("{} {} {} (W {}) t={:.6g}", t.name, json(t.shape).dump(),
                             io::dtype_name(t.out_dtype), io::dtype_name(t.work), t.t);
    for (const auto& [k, v] : t.global) std::cout << fmt::format(" {}={:.6g}", k, v);
    std::cout << "\n";
    if (t.base) std::cout << fmt::format("    base  {}:{}\n", t.base->model, t.base->tensor);
    for (const auto& s : t.models) {
      std::cout << fmt::format("    model {}:{}", s.model, s.tensor);
      for (const auto& [k, v] : s.params) std::cout << fmt::format(" {}={:.6g}", k, v);
      std::cout << (s.tied ? " (tied)" : "") << "\n";
    }
    for (const auto& n : t.notes) std::cout << "    note: " << n << "\n";
  }
  for (const auto& w : plan.warnings) std::cerr << "warning: " << w << "\n";
}

}  // namespace

Command add_merge(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "merge",
      "Merge fine-tunes with a mergekit YAML config (validated before any tensor is read)");
  sub->footer(kMergeHelp);
  struct Args {
    std::string config, out, shard, memory;
    std::optional<uint64_t> seed;
    unsigned threads = 2;
    bool lenient = false, dry_run = false, as_json = false, methods = false;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("CONFIG", a->config, "merge config (mergekit YAML)");
  sub->add_option("--out", a->out, "output directory (must not exist)");
  sub->add_option("--seed", a->seed,
                  "seed of the keyed random generator (wins over the config's seed)");
  sub->add_option("--threads", a->threads,
                  "worker threads (default 2); output bytes do not depend on it")
      ->check(CLI::Range(1u, 256u));
  sub->add_option("--max-shard-size", a->shard,
                  "split the output at this size, e.g. 5GB (default), 500MB; 0 = one file");
  sub->add_option("--max-memory", a->memory,
                  "tensor buffers all workers may hold at once, e.g. 768MB (default), 4GB; a "
                  "larger tensor runs alone");
  sub->add_flag("--lenient", a->lenient,
                "unknown keys and unused parameters warn instead of failing");
  sub->add_flag("--dry-run", a->dry_run, "validate and print the per-tensor plan; write nothing");
  sub->add_flag("--json", a->as_json, "machine-readable output");
  sub->add_flag("--methods", a->methods, "list the merge methods with their parameters");
  return {sub, [a] {
            if (a->methods) return list_methods(a->as_json);
            if (a->config.empty())
              throw Error(ErrorKind::Usage,
                          "merge needs a CONFIG.yaml (see `deltaedit merge --help`)");
            if (a->out.empty() && !a->dry_run)
              throw Error(ErrorKind::Usage, "merge needs --out DIR (or --dry-run)");
            engine::RunOptions ro;
            if (!a->shard.empty()) ro.max_shard_size = size_flag("--max-shard-size", a->shard, 0);
            if (!a->memory.empty()) ro.max_memory = size_flag("--max-memory", a->memory);
            if (!a->out.empty() && !a->dry_run && std::filesystem::exists(a->out))
              throw Error(ErrorKind::Usage,
                          "output already exists; choose a new --out or remove it first", a->out);
            std::string text;
            try {
              text = util::read_file(a->config);
            } catch (const Error& e) {
              throw Error(ErrorKind::Io, std::string("cannot read the merge config: ") + e.what(),
                          a->config);
            }
            auto cfg = merge::parse_merge_config(text, a->config, {a->lenient});
            auto plan = merge::build_plan(std::move(cfg), {a->seed});
            if (a->dry_run) {
              if (a->as_json)
                std::cout << plan.to_json().dump(2) << "\n";
              else
                print_plan(plan);
              return int(kOk);
            }
            for (const auto& w : plan.warnings) std::cerr << "warning: " << w << "\n";
            ro.out = a->out;
            ro.config_path = a->config;
            ro.threads = a->threads;
            ProgressLine bar("merge", !a->as_json && stderr_is_tty());
            ro.progress = [&](size_t d, size_t n, uint64_t b) {
              bar.update(double(d), double(n), human_bytes(b));
            };
            auto r = engine::run_merge(plan, ro);
            bar.finish();
            if (a->as_json) {
              std::cout << r.to_json().dump(2) << "\n";
            } else {
              std::cout << fmt::format("wrote {} ({} tensors, {}, {} file{})\n", a->out, r.tensors,
                                       human_bytes(r.output_bytes), r.files.size(),
                                       r.files.size() == 1 ? "" : "s");
              if (r.nonfinite)
                std::cerr << fmt::format(
                    "warning: the merge wrote {} non-finite values (NaN/Inf)\n", r.nonfinite);
            }
            return int(kOk);
          }};
}

}  // namespace deltaedit::cli
