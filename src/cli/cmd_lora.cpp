// extract-lora: a PEFT LoRA adapter of the truncated SVD of Δ.
#include <fmt/format.h>

#include <iostream>

#include "cli/common.h"
#include "engine/extract_lora.h"
#include "util/error.h"
#include "util/size.h"

namespace deltaedit::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string item =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty())
      throw Error(ErrorKind::Usage, "--save-modules '" + s + "': empty module name in the list");
    out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void print_report(const engine::ExtractLoraResult& r, const std::string& out) {
  const nlohmann::json j = r.to_json();
  std::cout << fmt::format("{:<56} {:>12} {:>5} {:>10} {:>11} {:>10}\n", "module", "shape", "rank",
                           "method", "rel. error", "bytes");
  for (const auto& m : r.modules)
    std::cout << fmt::format("{:<56} {:>12} {:>5} {:>10} {:>11.4e} {:>10}\n", m.module,
                             fmt::format("{}x{}", m.rows, m.cols), m.rank, m.method, m.rel_error(),
                             m.bytes);
  const auto& t = j["total"];
  std::cout << fmt::format(
      "TOTAL: {} modules, ranks {}..{}, relative Frobenius error {:.4e} over the modules, "
      "{:.4e} over all of Δ; adapter {}\n",
      r.modules.size(), t["rank_min"].get<int64_t>(), t["rank_max"].get<int64_t>(),
      t["rel_error"].get<double>(), t["rel_error_all"].get<double>(), human_bytes(r.adapter_bytes));
  for (const auto& s : r.saved)
    std::cout << fmt::format("saved whole: {} ({})\n", s.tensor, human_bytes(s.bytes));
  for (const auto& l : r.left_out)
    std::cout << fmt::format("left out: {} (‖Δ‖ = {:.4g}): {}\n", l.tensor, l.delta_norm, l.reason);
  if (r.unchanged) std::cout << fmt::format("{} tensors have Δ = 0\n", r.unchanged);
  std::cout << "wrote " << out << "\n";
}

}  // namespace

Command add_extract_lora(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "extract-lora", "Write a PEFT LoRA adapter of the truncated SVD of Δ = post − base");
  sub->footer(
      "Per 2-D linear weight: Δ ≈ U_r·S_r·V_rᵀ by the lowrank op of `edit` (same factors as\n"
      "`edit --op lowrank:rank=R` with the same --seed), written as lora_A = √S·Vᵀ, lora_B = U·√S "
      "(F32),\n"
      "lora_alpha = r so that peft's scaling is 1; rank_pattern/alpha_pattern where ranks differ.\n"
      "--method auto: randomized SVD (4 power iterations, oversample 10) when (R + 10)·4 ≤ "
      "min(rows, cols),\n"
      "else exact; every module's relative Frobenius error is measured and reported.\n"
      "Norms, biases, embeddings and lm_head are listed as left out (with ‖Δ‖), or saved whole "
      "with\n"
      "--save-modules (peft's modules_to_save: module names ending with an entry). Name an "
      "embedding\n"
      "with --include to extract it as embedding LoRA.\n"
      "--vllm: ranks rounded up into {1, 8, 16, 32, 64, 128, 256, 320, 512}, no modules_to_save, "
      "no bias keys.\n"
      "Examples:\n"
      "  deltaedit extract-lora --base B --post P --rank 16 --out lora16\n"
      "  deltaedit extract-lora --base B --post P --energy 0.9 --vllm --json --out lora-e90");
  auto req = std::make_shared<engine::ExtractLoraRequest>();
  auto rank = std::make_shared<int64_t>(0);
  auto energy = std::make_shared<double>(0);
  auto save = std::make_shared<std::string>();
  auto memory = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("--base", req->base, "pre-trained checkpoint (W_pre)")->required();
  sub->add_option("--post", req->post,
                  "post-trained checkpoint, or a PEFT LoRA adapter directory over --base")
      ->required();
  sub->add_option("--out", req->out, "output adapter directory (must not exist)")->required();
  auto* ro = sub->add_option("--rank", *rank, "rank of every module (capped at min(rows, cols))");
  auto* eo = sub->add_option("--energy", *energy,
                             "per module, the smallest rank keeping this fraction of Σσ² (0, 1]");
  ro->excludes(eo);
  sub->add_option("--include", req->include, "extract only tensors whose name matches this regex");
  sub->add_option("--exclude", req->exclude,
                  "do not extract tensors whose name matches this regex");
  sub->add_option(
      "--save-modules", *save,
      "comma-separated modules saved whole (modules_to_save), e.g. lm_head,embed_tokens");
  sub->add_flag("--vllm", req->vllm,
                "keep the adapter loadable by vLLM (ranks, no modules_to_save, no bias keys)");
  sub->add_option("--method", req->method, "auto (default), exact or randomized SVD")
      ->check(CLI::IsMember({"auto", "exact", "randomized"}));
  sub->add_option("--seed", req->seed,
                  "seed of the randomized SVD's test matrix (as edit --seed; default 0)");
  sub->add_option("--threads", req->threads, "worker threads (default 2)")
      ->check(CLI::Range(1u, 256u));
  sub->add_option("--max-memory", *memory,
                  "tensor buffers all workers may hold at once (default 768MB)");
  sub->add_flag("--json", *as_json, "machine-readable report");
  return {sub, [=] {
            if (ro->count()) req->rank = *rank;
            if (eo->count()) req->energy = *energy;
            if (!ro->count() && !eo->count())
              throw Error(ErrorKind::Usage, "give --rank R or --energy E");
            if (!save->empty()) req->save_modules = split_list(*save);
            if (!memory->empty()) req->max_memory = util::parse_size_option("--max-memory", *memory);
            ProgressLine bar("extract-lora", !*as_json && stderr_is_tty());
            auto r = engine::run_extract_lora(*req, [&](size_t d, size_t n, uint64_t b) {
              bar.update(double(d), double(n), human_bytes(b));
            });
            bar.finish();
            if (*as_json) {
              auto j = r.to_json();
              j["output"] = req->out.string();
              std::cout << j.dump(2) << "\n";
            } else {
              print_report(r, req->out.string());
            }
            return int(kOk);
          }};
}

}  // namespace deltaedit::cli
