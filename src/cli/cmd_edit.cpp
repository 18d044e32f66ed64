// edit, apply, ops: the edit engine on the command line.
#include <fmt/format.h>

#include <iostream>

#include "cli/common.h"
#include "edit/op.h"
#include "engine/edit_engine.h"
#include "util/error.h"
#include "util/param_schema.h"
#include "util/size.h"

using nlohmann::json;

namespace deltaedit::cli {
namespace {

// A size given to `flag` (e.g. --max-memory 4GB); a bad one is a usage error naming the flag.
uint64_t size_option(const char* flag, const std::string& text) {
  return util::parse_size_option(flag, text);
}

void print_result(const engine::EditResult& r, bool pack) {
  for (const auto& s : r.plan.value("resized", json::array()))
    std::cout << fmt::format("resized: {} ({})\n", s["name"].get<std::string>(),
                             s["note"].get<std::string>());
  size_t edited = 0;
  uint64_t stored = 0, params = 0;
  for (const auto& t : r.tensors) {
    edited += t.action == "edited";
    stored += t.stored_bytes;
    params += t.numel;
  }
  std::cout << fmt::format("wrote {} ({} tensors, {} edited)\n",
                           r.plan.value("output", std::string()), r.tensors.size(), edited);
  if (edited)
    std::cout << fmt::format(
        "edit: ‖D‖/‖Δ‖ = {:.6g}, intensity ‖D‖²/‖Δ‖² = {:.6g}, cos(Δ',Δ) = {:.6g}, sign agreement "
        "{:.4f}\n",
        r.total.d_over_delta, r.total.intensity, r.total.cosine, r.total.sign_agreement);
  if (pack && params)
    std::cout << fmt::format("pack: {} stored, {:.3f} bits per parameter\n", human_bytes(stored),
                             8.0 * double(stored) / double(params));
  if (r.nonfinite_out)
    std::cerr << fmt::format(
        "warning: the edit produced {} non-finite values (NaN/Inf) in the output:\n",
        r.nonfinite_out);
  for (const auto& t : r.tensors)
    if (t.nonfinite_out) std::cerr << fmt::format("  {}: {}\n", t.name, t.nonfinite_out);
}

void print_plan(const json& p) {
  std::cout << fmt::format(
      "plan: {} tensors in the output, {} edited ({} parameters), {} copied from post\n",
      p["tensors"].get<size_t>(), p["edited_tensors"].get<uint64_t>(),
      p["edited_params"].get<uint64_t>(), p["copied_tensors"].get<uint64_t>());
  for (const auto& s : p["scope"])
    std::cout << fmt::format("  op {}: {} tensors, {} parameters\n", s["op"].get<std::string>(),
                             s["tensors"].get<uint64_t>(), s["params"].get<uint64_t>());
  for (const auto& s : p["skipped"])
    std::cout << fmt::format("  not edited: {} ({})\n", s["name"].get<std::string>(),
                             s["note"].get<std::string>());
  for (const auto& s : p.value("resized", json::array()))
    std::cout << fmt::format("  resized: {} ({})\n", s["name"].get<std::string>(),
                             s["note"].get<std::string>());
  std::cout << fmt::format(
      "output: {} {} -> {} (checkpoint size {}, free {})\n", p["output_kind"].get<std::string>(),
      p["output"].get<std::string>().empty() ? std::string("(no --out)")
                                             : p["output"].get<std::string>(),
      p["output_files"].dump(), human_bytes(p["checkpoint_bytes"].get<uint64_t>()),
      human_bytes(p["free_bytes"].get<uint64_t>()));
  std::cout << fmt::format(
      "streaming: {} of the edited tensors without a whole-tensor buffer (pointwise and two-pass "
      "ops); "
      "the others are admitted against --max-memory {}\n",
      p.value("streamed_tensors", uint64_t(0)), human_bytes(p.value("max_memory", uint64_t(0))));
  std::cout << fmt::format("estimates: peak memory {}, time {:.1f} s\n",
                           human_bytes(p["peak_memory_estimate"].get<uint64_t>()),
                           p["time_estimate_s"].get<double>());
  for (const auto& w : p["warnings"]) std::cerr << "warning: " << w.get<std::string>() << "\n";
}

}  // namespace

std::string ops_help();

Command add_edit(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "edit", "Edit the delta of a (base, post) pair; write a checkpoint or a delta pack");
  sub->footer(
      "Writes W_pre + Δ' laid out like post (shards, config, tokenizer files) into a new "
      "directory.\n"
      "Ops apply in order to the running delta. SPEC syntax: name:key=value,... (see `deltaedit "
      "ops`).\n"
      "Every op also takes include=REGEX and exclude=REGEX on tensor names.\n"
      "Examples:\n"
      "  deltaedit edit --base B --post P --op dare:p=0.9,k=0.5 --seed 1 --out dare90\n"
      "  deltaedit edit --base B --post P --op bitdelta --pack --out bitdelta.pack   # ~1-2 "
      "bits/param\n"
      "  deltaedit edit --base B --post P --op scale:alpha=0.3 --out expo           # EXPO "
      "extrapolation\n"
      "  deltaedit edit --base B --post P --op biased:by=grad,k=0.9 --grad G.safetensors --out "
      "biased\n"
      "  deltaedit edit --base B --post P --op lowrank:ratio=0.1 --dry-run          # plan "
      "only\n\n" +
      ops_help());
  auto req = std::make_shared<engine::EditRequest>();
  auto as_json = std::make_shared<bool>(false);
  auto dtype = std::make_shared<std::string>();
  auto shard = std::make_shared<std::string>();
  auto grad = std::make_shared<std::string>();
  sub->add_option("--base", req->base, "pre-trained checkpoint (W_pre)")->required();
  sub->add_option("--post", req->post,
                  "post-trained checkpoint (W_post), or a PEFT LoRA adapter directory over --base")
      ->required();
  sub->add_option("--op", req->ops, "operation spec, repeatable: applied in order")->required();
  sub->add_option("--out", req->out,
                  "output directory (must not exist; not needed with --dry-run)");
  sub->add_flag("--pack", req->pack,
                "write a compact delta pack instead of a checkpoint (rebuild with `apply`)");
  sub->add_option("--seed", req->seed, "seed of the keyed random generator (default 0)");
  sub->add_option("--include", req->include, "edit only tensors whose name matches this regex");
  sub->add_option("--exclude", req->exclude, "do not edit tensors whose name matches this regex");
  sub->add_option("--threads", req->threads,
                  "worker threads (default 2); output bytes do not depend on it")
      ->check(CLI::Range(1u, 256u));
  sub->add_option("--dtype", *dtype,
                  "output dtype of floating tensors: bf16, fp16, fp32, fp64 (also BF16, bfloat16, "
                  "float32, ...; default: post's)");
  sub->add_option("--max-shard-size", *shard,
                  "reshard the output at this size, e.g. 5GB, 500MB (default: post's shards; a "
                  "single-file post is split at 5GB)");
  sub->add_option("--grad", *grad,
                  "safetensors file of ∇L(W_post) per tensor (for biased:by=grad)");
  auto memory = std::make_shared<std::string>();
  sub->add_option("--max-memory", *memory,
                  "tensor buffers all workers may hold at once, e.g. 768MB (default), 4GB; a "
                  "larger tensor runs alone");
  sub->add_flag("--dry-run", req->dry_run,
                "print the plan with memory, disk and time estimates, write nothing");
  sub->add_flag("--json", *as_json, "machine-readable report");
  return {sub, [=] {
            if (req->out.empty() && !req->dry_run)
              throw Error(ErrorKind::Usage,
                          "edit needs --out DIR (or --dry-run to print the plan only)");
            if (!dtype->empty()) {
              auto d = io::parse_compute_dtype(*dtype);
              if (!d)
                throw Error(ErrorKind::Usage, "--dtype '" + *dtype +
                                                  "' is not a dtype deltaedit writes; use one of " +
                                                  std::string(io::kComputeDtypeNames));
              req->dtype = *d;
            }
            if (!shard->empty()) req->max_shard_size = size_option("--max-shard-size", *shard);
            if (!grad->empty()) req->grad = *grad;
            if (!memory->empty()) req->max_memory = size_option("--max-memory", *memory);
            ProgressLine bar("edit", !*as_json && stderr_is_tty() && !req->dry_run);
            auto r = engine::run_edit(*req, [&](size_t d, size_t n, uint64_t b) {
              bar.update(double(d), double(n), human_bytes(b));
            });
            bar.finish();
            if (*as_json) {
              std::cout << r.to_json().dump(2) << "\n";
            } else if (req->dry_run) {
              print_plan(r.plan);
            } else {
              print_result(r, req->pack);
            }
            return int(kOk);
          }};
}

Command add_apply(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "apply",
      "Rebuild a checkpoint from a base and a delta pack (bit for bit what `edit` writes)");
  sub->footer(
      "Example:\n  deltaedit apply --base Meta-Llama-3-8B --pack bitdelta.pack --out "
      "llama-bitdelta");
  auto req = std::make_shared<engine::ApplyRequest>();
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("--base", req->base, "the pre-trained checkpoint the pack was made against")
      ->required();
  sub->add_option("--pack", req->pack, "delta pack directory written by `edit --pack`")->required();
  sub->add_option("--out", req->out, "output directory (must not exist)")->required();
  sub->add_option("--threads", req->threads, "worker threads (default 2)")
      ->check(CLI::Range(1u, 256u));
  auto memory = std::make_shared<std::string>();
  sub->add_option("--max-memory", *memory,
                  "tensor buffers all workers may hold at once (default 768MB)");
  sub->add_flag("--json", *as_json, "machine-readable report");
  return {sub, [=] {
            if (!memory->empty()) req->max_memory = size_option("--max-memory", *memory);
            ProgressLine bar("apply", !*as_json && stderr_is_tty());
            auto r = engine::run_apply(*req, [&](size_t d, size_t n, uint64_t b) {
              bar.update(double(d), double(n), human_bytes(b));
            });
            bar.finish();
            if (*as_json)
              std::cout << r.to_json().dump(2) << "\n";
            else
              std::cout << fmt::format("wrote {} ({} tensors, {})\n", req->out.string(),
                                       r.tensors.size(), human_bytes(r.output_bytes));
            return int(kOk);
          }};
}

// The README's operations table, rendered from the ops' declared schema (`deltaedit ops
// --markdown`; a test checks that README.md holds exactly this text).
std::string ops_markdown() {
  auto cell = [](std::string s) {
    std::string out;
    for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
    return out;
  };
  std::string md =
      "| op | what it does | key | default | range | meaning |\n|---|---|---|---|---|---|\n";
  for (const auto& o : edit::list_ops()) {
    if (o.params.empty()) {
      md += fmt::format("| `{}` | {} | — | | | |\n", o.name, cell(o.summary));
      continue;
    }
    for (size_t i = 0; i < o.params.size(); ++i) {
      const auto& p = o.params[i];
      std::string def = util::default_text(p);
      if (p.required) def = "required";
      std::string doc = p.doc;
      if (!p.constraint.empty() &&
          (i + 1 == o.params.size() || o.params[i + 1].constraint != p.constraint))
        doc += " (" + p.constraint + ")";
      md += fmt::format("| {} | {} | `{}` | {} | {} | {} |\n", i == 0 ? "`" + o.name + "`" : "",
                        i == 0 ? cell(o.summary) : "", p.name, cell(def.empty() ? "—" : def),
                        cell(util::range_text(p)), cell(doc));
    }
  }
  md += "\nEvery op also takes ";
  const auto common = edit::common_params();
  for (size_t i = 0; i < common.size(); ++i)
    md += fmt::format("{}`{}=REGEX` ({})", i ? " and " : "", common[i].name, common[i].doc);
  md += ".\n";
  return md;
}

// The op list of `edit --help`, from the same schema.
std::string ops_help() {
  std::string h = "Operations (name: keys with defaults and ranges):\n";
  for (const auto& o : edit::list_ops())
    h += fmt::format("  {:<10} {}\n  {:<10} {}\n", o.name, o.summary, "", o.keys);
  return h;
}

Command add_ops(CLI::App& app) {
  auto* sub =
      app.add_subcommand("ops", "List the edit operations with their keys, defaults and ranges");
  sub->footer(
      "Examples:\n  deltaedit ops\n  deltaedit ops --json       # [{name, summary, keys, params: "
      "[{name, kind, default, "
      "range, doc, ...}]}]\n  deltaedit ops --markdown   # the README's operations table");
  auto as_json = std::make_shared<bool>(false);
  auto as_md = std::make_shared<bool>(false);
  auto* j = sub->add_flag("--json", *as_json, "machine-readable output");
  sub->add_flag("--markdown", *as_md, "the operations table as Markdown")->excludes(j);
  return {sub, [=] {
            auto ops = edit::list_ops();
            if (*as_json) {
              json a = json::array();
              for (const auto& o : ops) {
                json ps = json::array();
                for (const auto& p : o.params) ps.push_back(util::to_json(p));
                for (const auto& p : edit::common_params()) ps.push_back(util::to_json(p));
                a.push_back(
                    {{"name", o.name}, {"summary", o.summary}, {"keys", o.keys}, {"params", ps}});
              }
              std::cout << a.dump(2) << "\n";
              return int(kOk);
            }
            if (*as_md) {
              std::cout << ops_markdown();
              return int(kOk);
            }
            for (const auto& o : ops)
              std::cout << fmt::format("{:<10} {}\n{:<10} keys: {}\n", o.name, o.summary, "",
                                       o.keys);
            std::cout << "every op also takes include=REGEX, exclude=REGEX (tensor names)\n";
            return int(kOk);
          }};
}

}  // namespace deltaedit::cli
