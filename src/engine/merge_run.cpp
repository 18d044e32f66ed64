#include "engine/merge_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "edit/op.h"
#include "engine/executor.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/philox.h"
#include "util/read_file.h"
#include "util/version.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::engine {

using namespace merge;
namespace {

// Files carried from the donor (MERGE.md §4.2 step 4): the tokenizer's from the tokenizer model.
const std::set<std::string> kTokenizerFiles = {"tokenizer_config.json",
                                               "special_tokens_map.json",
                                               "tokenizer.json",
                                               "tokenizer.model",
                                               "added_tokens.json",
                                               "merges.txt",
                                               "vocab.json",
                                               "chat_template.jinja",
                                               "chat_template.json"};
const std::set<std::string> kDonorFiles = {"generation_config.json", "preprocessor_config.json",
                                           "video_preprocessor_config.json"};

WorkType work_type(io::DType d) {
  if (d == io::DType::BF16) return WorkType::BF16;
  if (d == io::DType::F16) return WorkType::F16;
  return WorkType::F32;
}

std::string conventions_name(Conventions c) {
  return c == Conventions::Paper ? "paper" : "mergekit";
}

// The seed of model i's op chain: distinct per model so that DARE on k models draws k masks.
uint64_t model_seed(uint64_t seed, size_t model) {
  return util::splitmix64(seed ^ util::splitmix64(uint64_t(model) + 1));
}

std::string model_card(const MergePlan& plan) {
  std::string s = "---\nlibrary_name: transformers\ntags:\n- deltaedit\n- merge\n---\n";
  s += "# Merged model\n\n";
  s += fmt::format(
      "This model was merged with `deltaedit merge` using the **{}** method ({} conventions, seed "
      "{}).\n\n",
      plan.method->info().name, conventions_name(plan.config.conventions), plan.seed);
  if (plan.base) s += fmt::format("Base model: `{}`\n\n", plan.models[*plan.base].path);
  s += "## Models\n\n";
  for (size_t i = 0; i < plan.models.size(); ++i)
    if (!plan.base || *plan.base != i) s += fmt::format("- `{}`\n", plan.models[i].path);
  s += "\n## Configuration\n\n```yaml\n" + plan.config.text;
  if (!plan.config.text.empty() && plan.config.text.back() != '\n') s += "\n";
  s += "```\n";
  return s;
}

}  // namespace

json provenance(const MergePlan& plan, const std::vector<std::string>& warnings) {
  json j{{"tool", "deltaedit"},
         {"version", util::kVersion},
         {"command", "merge"},
         {"method", plan.method->info().name},
         {"conventions", conventions_name(plan.config.conventions)},
         {"seed", plan.seed},
         {"config", plan.config.text},
         {"config_file", plan.config.file},
         {"donor", plan.models[plan.donor].path},
         {"models", json::array()},
         {"warnings", warnings}};
  for (size_t i = 0; i < plan.models.size(); ++i)
    j["models"].push_back(
        {{"index", i}, {"path", plan.models[i].path}, {"base", plan.base && *plan.base == i}});
  return j;
}

json RunResult::to_json() const {
  return {{"files", files},
          {"warnings", warnings},
          {"output_bytes", output_bytes},
          {"nonfinite", nonfinite},
          {"peak_buffer_bytes", peak_buffer_bytes},
          {"tensors", tensors},
          {"streamed_tensors", streamed}};
}

RunResult run_merge(const MergePlan& plan, const RunOptions& opt) {
  const MethodInfo& info = plan.method->info();

  // Per-model op chains (deltaedit: {ops: [...]}), built once.
  std::map<size_t, std::vector<std::unique_ptr<edit::Op>>> chains;
  auto add_chain = [&](const ModelRef& ref, const std::vector<std::string>& ops) {
    if (ops.empty()) return;
    size_t m = plan.models.size();
    for (size_t i = 0; i < plan.models.size(); ++i)
      if (plan.models[i].path == ref.text()) m = i;
    if (m == plan.models.size() || chains.count(m)) return;
    auto& v = chains[m];
    for (const auto& s : ops) v.push_back(edit::make_op(edit::parse_op_spec(s)));
  };
  for (const auto& m : plan.config.models) add_chain(m.model, m.ops);
  for (const auto& sl : plan.config.slices)
    for (const auto& m : sl.sources) add_chain(m.model, m.ops);

  std::vector<ExecTensor> ts;
  ts.reserve(plan.tensors.size());
  for (const auto& t : plan.tensors) {
    ExecTensor e;
    e.name = t.name;
    e.shape = t.shape;
    e.out_dtype = t.out_dtype;
    e.work = t.work;
    if (t.base)
      e.inputs.push_back({plan.models[t.base->model].checkpoint.get(), t.base->tensor, {}});
    for (const auto& s : t.models)
      e.inputs.push_back({plan.models[s.model].checkpoint.get(), s.tensor, {}});
    for (const auto& in : e.inputs) e.hold += in.checkpoint->formed_bytes(in.tensor);  // adapters
    ts.push_back(std::move(e));
  }

  // The job of one output tensor over input spans (empty spans to ask Method::pointwise).
  auto make_job = [&](const PlanTensor& t, std::span<const std::span<const float>> in,
                      uint64_t first) {
    TensorJob job;
    job.name = t.name;
    job.shape = t.shape;
    job.work = work_type(t.work);
    job.is_embed = t.is_embed;
    job.global = t.global;
    job.conventions = plan.config.conventions;
    job.seed = plan.seed;
    job.first = first;
    job.model_values_writable = true;  // the executor's decoded copies, one per input
    size_t k = 0;
    if (t.base)
      job.base = TensorInput{in[k++], t.base->params, uint32_t(t.base->model), std::nullopt};
    for (const auto& s : t.models)
      job.models.push_back(TensorInput{in[k++], s.params, uint32_t(s.model), std::nullopt});
    if (!chains.empty()) {
      job.edit_task_vector = [&t, &chains, &plan](size_t model, std::span<float> tau) {
        const size_t m = t.models.at(model).model;
        auto it = chains.find(m);
        if (it == chains.end()) return;
        for (size_t l = 0; l < it->second.size(); ++l) {
          edit::TensorContext ctx;
          ctx.name = t.name;
          ctx.shape = t.shape;
          ctx.seed = model_seed(plan.seed, m);
          ctx.op_index = uint32_t(l);
          it->second[l]->apply(tau, ctx);
        }
      };
    }
    return job;
  };
  // Jobs that need per-tensor statistics (ties' magnitude cuts, L1 rescales, della's row ranks)
  // stream as MethodStreams when the method offers it: read passes, then the output pass, block
  // by block (tensors of one block are cheaper whole).
  ExecOptions eo;
  std::vector<std::unique_ptr<MethodStream>> streams(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    // Ops run on whole task vectors, so a model with ops makes its tensors buffered.
    const std::vector<std::span<const float>> none(ts[i].inputs.size());
    const TensorJob job = make_job(plan.tensors[i], none, 0);
    ts[i].pointwise = chains.empty() && plan.method->pointwise(job);
    if (ts[i].pointwise || !chains.empty() || ts[i].numel() <= eo.block) continue;
    if (auto sp = plan.method->stream_plan(job)) {
      ts[i].mode = ExecMode::Stream;
      ts[i].passes = true;
      ts[i].prepare = true;
      ts[i].quantum = sp->quantum;
      ts[i].hold += sp->state_bytes;
    }
  }
  const auto no_values = [&](size_t i) {
    const std::vector<std::span<const float>> none(ts[i].inputs.size());
    return make_job(plan.tensors[i], none, 0);
  };
  eo.prepare = [&](size_t i) { streams[i] = plan.method->stream(no_values(i)); };
  eo.after = [&](size_t i) { streams[i].reset(); };
  eo.next_pass = [&](size_t i) { return streams[i]->next_pass(); };
  eo.observe = [&](size_t i, std::span<const std::span<const float>> in, uint64_t first) {
    streams[i]->observe(make_job(plan.tensors[i], in, first));
  };
  auto kernel = [&](size_t i, std::span<const std::span<const float>> in, std::span<float> out,
                    uint64_t first, std::vector<std::string>& warnings) {
    const TensorJob job = make_job(plan.tensors[i], in, first);
    if (streams[i])
      streams[i]->merge(job, out, warnings);
    else
      plan.method->merge(job, out, warnings);
    return count_nonfinite(out);
  };

  // Output files (MERGE.md §4.2).
  const auto& donor = *plan.models[plan.donor].checkpoint;
  const auto& tok = *plan.models[plan.tokenizer_model].checkpoint;
  eo.out = opt.out;
  eo.threads = opt.threads;
  eo.max_memory = opt.max_memory;
  eo.max_shard_size = opt.max_shard_size;
  eo.progress = opt.progress;
  if (!opt.config_path.empty()) eo.inputs.push_back(opt.config_path);
  eo.metadata = {{"deltaedit.version", util::kVersion},
                 {"deltaedit.method", info.name},
                 {"deltaedit.seed", std::to_string(plan.seed)},
                 {"deltaedit.conventions", conventions_name(plan.config.conventions)},
                 {"deltaedit.config", plan.config.text}};
  for (const auto& p : tok.extra_files())
    if (kTokenizerFiles.count(p.filename().string()))
      eo.copies.push_back({p, p.filename().string()});
  for (const auto& p : donor.extra_files())
    if (kDonorFiles.count(p.filename().string())) eo.copies.push_back({p, p.filename().string()});

  // config.json: the donor's, with the dtype (the most common output dtype) and layer count set.
  std::map<io::DType, size_t> dtype_count;
  for (const auto& t : plan.tensors) ++dtype_count[t.out_dtype];
  io::DType out_dtype = plan.tensors.front().out_dtype;
  for (const auto& [d, n] : dtype_count)
    if (n > dtype_count[out_dtype]) out_dtype = d;
  json cj = donor.config()->raw;
  bool set = false;
  for (const char* k : {"torch_dtype", "dtype"})
    if (cj.contains(k)) {
      cj[k] = torch_dtype_name(out_dtype);
      set = true;
    }
  if (!set) cj["torch_dtype"] = torch_dtype_name(out_dtype);
  if (plan.layers_renumbered) cj["num_hidden_layers"] = plan.output_layers;
  const std::string config_text = cj.dump(2) + "\n";

  RunResult res;
  eo.texts = [&](const ExecReport& rep) {
    std::vector<std::string> warnings = plan.warnings;
    for (size_t i = 0; i < rep.warnings.size(); ++i)
      for (const auto& w : rep.warnings[i]) warnings.push_back(w);
    res.warnings = warnings;
    json prov = provenance(plan, warnings);
    prov["files"] = rep.files;
    prov["tensors"] = json::array();
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
      const auto& t = plan.tensors[i];
      json o{{"name", t.name}, {"t", t.t}, {"global", t.global}, {"models", json::array()}};
      if (t.base) o["base"] = {{"model", t.base->model}, {"tensor", t.base->tensor}};
      for (const auto& s : t.models)
        o["models"].push_back({{"model", s.model}, {"tensor", s.tensor}, {"params", s.params}});
      if (rep.nonfinite[i]) o["nonfinite"] = rep.nonfinite[i];
      prov["tensors"].push_back(o);
    }
    return std::vector<std::pair<std::string, std::string>>{
        {"config.json", config_text},
        {"README.md", model_card(plan)},
        {"deltaedit.json", prov.dump(2) + "\n"}};
  };
  auto rep = execute(ts, kernel, eo);
  res.files = rep.files;
  res.output_bytes = rep.output_bytes;
  res.peak_buffer_bytes = rep.peak_buffer_bytes;
  res.tensors = ts.size();
  for (size_t i = 0; i < ts.size(); ++i) {
    res.nonfinite += rep.nonfinite[i];
    res.streamed += rep.streamed[i];
  }
  return res;
}

}  // namespace deltaedit::engine
