#include "io/peft.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "io/convert.h"
#include "io/writer.h"
#include "linalg/blas.h"
#include "util/error.h"
#include "util/read_file.h"
#include "util/strict_json.h"

namespace fs = std::filesystem;

namespace deltaedit::io {
namespace {

using nlohmann::json;
using ordered_json = nlohmann::ordered_json;

[[noreturn]] void bad(const std::string& file, const std::string& msg,
                      const std::string& key = {}) {
  throw Error(ErrorKind::Format, msg, file, key);
}
[[noreturn]] void unsupported(const std::string& file, const std::string& msg,
                              const std::string& key = {}) {
  throw Error(ErrorKind::Unsupported, msg, file, key);
}

bool is_null_or_empty(const ordered_json& v) {
  return v.is_null() || ((v.is_array() || v.is_object() || v.is_string()) && v.empty());
}

void read_name_list_or_regex(const ordered_json& v, const std::string& field,
                             const std::string& file, std::vector<std::string>& list,
                             std::string& regex) {
  if (v.is_null()) return;
  if (v.is_string()) {
    regex = v.get<std::string>();
    return;
  }
  if (!v.is_array())
    bad(file, "'" + field + "' must be a list of module names, a regex string or null");
  for (const auto& e : v) {
    if (!e.is_string()) bad(file, "'" + field + "' must list module names (strings)");
    list.push_back(e.get<std::string>());
  }
}

std::string leaf_of(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

util::NameRegex compile_peft_pattern(const std::string& key, const std::string& file,
                                     const std::string& field) {
  try {
    return util::NameRegex("^(?:.*\\.)?(?:" + key + ")$", field);
  } catch (const Error& e) {
    bad(file, "'" + field + "' key '" + key + "' is not a valid regular expression: " + e.detail());
  }
}

bool peft_pattern_matches(const util::NameRegex& compiled, const std::string& name) {
  return !compiled.empty() && compiled.search(name);
}

int64_t LoraConfig::rank_for(const std::string& module) const {
  for (size_t i = 0; i < rank_pattern.size(); ++i)
    if (peft_pattern_matches(rank_re[i], module)) return rank_pattern[i].second;
  return r;
}

double LoraConfig::alpha_for(const std::string& module) const {
  for (size_t i = 0; i < alpha_pattern.size(); ++i)
    if (peft_pattern_matches(alpha_re[i], module)) return alpha_pattern[i].second;
  return lora_alpha;
}

double LoraConfig::scaling_for(const std::string& module) const {
  const double rank = double(rank_for(module));
  const double alpha = alpha_for(module);
  return use_rslora ? alpha / std::sqrt(rank) : alpha / rank;
}

bool LoraConfig::targets(const std::string& module) const {
  if (!exclude_re.empty() && exclude_re.search(module)) return false;
  for (const auto& e : exclude_list)
    if (module == e || ends_with(module, "." + e)) return false;
  if (saves(module)) return false;
  if (all_linear) return true;
  if (!target_re.empty()) return target_re.search(module);
  for (const auto& t : target_list)
    if (module == t || ends_with(module, "." + t)) return true;
  return false;
}

bool LoraConfig::saves(const std::string& module) const {
  return std::any_of(modules_to_save.begin(), modules_to_save.end(),
                     [&](const std::string& m) { return ends_with(module, m); });
}

LoraConfig parse_adapter_config(std::string_view text, const std::string& file) {
  // Strict validation first (duplicate keys at any level, depth, UTF-8, trailing bytes); then the
  // same text in file order, which rank_pattern and alpha_pattern depend on.
  const json strict = util::parse_json_strict(text, file, util::DuplicateKeyNaming::Path);
  if (!strict.is_object()) bad(file, "adapter_config.json is not a JSON object");
  const ordered_json j = ordered_json::parse(text.begin(), text.end());
  LoraConfig c;
  c.file = file;
  auto field = [&](const char* k) -> const ordered_json* {
    auto it = j.find(k);
    return it == j.end() ? nullptr : &*it;
  };
  const ordered_json* pt = field("peft_type");
  if (!pt) bad(file, "lacks 'peft_type': not a PEFT adapter config");
  if (!pt->is_string()) bad(file, "'peft_type' must be a string");
  if (pt->get<std::string>() != "LORA")
    unsupported(file, "peft_type '" + pt->get<std::string>() +
                          "' is not supported: only LORA adapters are read");

  static const std::set<std::string> kKnown = {"peft_type",
                                               "r",
                                               "lora_alpha",
                                               "use_rslora",
                                               "fan_in_fan_out",
                                               "rank_pattern",
                                               "alpha_pattern",
                                               "target_modules",
                                               "exclude_modules",
                                               "modules_to_save",
                                               "base_model_name_or_path",
                                               "task_type",
                                               "use_dora",
                                               "lora_bias",
                                               "bias",
                                               "layer_replication",
                                               "target_parameters",
                                               "trainable_token_indices",
                                               "alora_invocation_tokens",
                                               "use_qalora",
                                               "layers_to_transform",
                                               "layers_pattern",
                                               "megatron_config",
                                               "arrow_config",
                                               "use_bdlora"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKnown.count(it.key())) c.ignored.push_back(it.key());

  auto get_int = [&](const char* k, int64_t def) {
    const ordered_json* v = field(k);
    if (!v || v->is_null()) return def;
    if (!v->is_number_integer()) bad(file, std::string("'") + k + "' must be an integer");
    return v->get<int64_t>();
  };
  auto get_num = [&](const char* k, double def) {
    const ordered_json* v = field(k);
    if (!v || v->is_null()) return def;
    if (!v->is_number()) bad(file, std::string("'") + k + "' must be a number");
    return v->get<double>();
  };
  auto get_bool = [&](const char* k, bool def) {
    const ordered_json* v = field(k);
    if (!v || v->is_null()) return def;
    if (!v->is_boolean()) bad(file, std::string("'") + k + "' must be true or false");
    return v->get<bool>();
  };
  c.r = get_int("r", 8);
  if (c.r <= 0) bad(file, "'r' must be a positive integer (got " + std::to_string(c.r) + ")");
  c.lora_alpha = get_num("lora_alpha", 8);
  if (!std::isfinite(c.lora_alpha)) bad(file, "'lora_alpha' must be finite");
  c.use_rslora = get_bool("use_rslora", false);
  c.fan_in_fan_out = get_bool("fan_in_fan_out", false);

  if (get_bool("use_dora", false))
    unsupported(file, "use_dora: DoRA adapters are not supported (plain LoRA only: W + s·B·A)");
  if (get_bool("lora_bias", false))
    unsupported(file, "lora_bias: LoRA adapters with a bias on lora_B are not supported");
  if (const ordered_json* v = field("bias"); v && !v->is_null()) {
    if (!v->is_string()) bad(file, "'bias' must be \"none\", \"all\" or \"lora_only\"");
    if (v->get<std::string>() != "none")
      unsupported(file, "bias '" + v->get<std::string>() +
                            "': adapters that train biases are not supported (bias \"none\" only)");
  }
  if (get_bool("use_qalora", false))
    unsupported(file, "use_qalora: QALoRA adapters are not supported");
  for (const char* k :
       {"layer_replication", "target_parameters", "trainable_token_indices",
        "alora_invocation_tokens", "megatron_config", "arrow_config", "use_bdlora"}) {
    const ordered_json* v = field(k);
    if (v && !is_null_or_empty(*v) && !(v->is_boolean() && !v->get<bool>()))
      unsupported(file, std::string("'") + k +
                            "' is set: this LoRA variant is not supported (plain LoRA only)");
  }
  for (const char* k : {"layers_to_transform", "layers_pattern"})
    if (const ordered_json* v = field(k); v && !is_null_or_empty(*v))
      c.ignored.push_back(std::string(k) + " (the adapter's keys decide which layers change)");

  for (const char* k : {"rank_pattern", "alpha_pattern"}) {
    const ordered_json* v = field(k);
    if (!v || v->is_null()) continue;
    if (!v->is_object())
      bad(file, std::string("'") + k + "' must be an object of module pattern -> number");
    for (auto it = v->begin(); it != v->end(); ++it) {
      const std::string& key = it.key();
      if (std::string(k) == "rank_pattern") {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() <= 0)
          bad(file, "rank_pattern['" + key + "'] must be a positive integer");
        c.rank_pattern.emplace_back(key, it.value().get<int64_t>());
        c.rank_re.push_back(compile_peft_pattern(key, file, k));
      } else {
        if (!it.value().is_number() || !std::isfinite(it.value().get<double>()))
          bad(file, "alpha_pattern['" + key + "'] must be a finite number");
        c.alpha_pattern.emplace_back(key, it.value().get<double>());
        c.alpha_re.push_back(compile_peft_pattern(key, file, k));
      }
    }
  }
  if (const ordered_json* v = field("target_modules")) {
    read_name_list_or_regex(*v, "target_modules", file, c.target_list, c.target_regex);
    if (c.target_regex == "all-linear" ||
        (c.target_list.size() == 1 && c.target_list[0] == "all-linear")) {
      c.all_linear = true;
      c.target_regex.clear();
      c.target_list.clear();
    }
  }
  if (const ordered_json* v = field("exclude_modules"))
    read_name_list_or_regex(*v, "exclude_modules", file, c.exclude_list, c.exclude_regex);
  try {
    if (!c.target_regex.empty())
      c.target_re = util::NameRegex("^(?:" + c.target_regex + ")$", "target_modules");
    if (!c.exclude_regex.empty())
      c.exclude_re = util::NameRegex("^(?:" + c.exclude_regex + ")$", "exclude_modules");
  } catch (const Error& e) {
    bad(file, e.detail());
  }
  if (const ordered_json* v = field("modules_to_save"); v && !v->is_null()) {
    if (!v->is_array()) bad(file, "'modules_to_save' must be a list of module names or null");
    for (const auto& e : *v) {
      if (!e.is_string() || e.get<std::string>().empty())
        bad(file, "'modules_to_save' must list module names");
      c.modules_to_save.push_back(e.get<std::string>());
    }
  }
  if (const ordered_json* v = field("base_model_name_or_path"); v && v->is_string())
    c.base_model_name_or_path = v->get<std::string>();
  if (const ordered_json* v = field("task_type"); v && v->is_string())
    c.task_type = v->get<std::string>();
  return c;
}

bool is_peft_adapter(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(path / kAdapterConfigName, ec);
}

// ---------------------------------------------------------------------------------------------

AdapterSource::AdapterSource(const fs::path& dir, const Checkpoint& base, LoraConfig cfg,
                             SafetensorsFile weights)
    : dir_(dir), base_(base), cfg_(std::move(cfg)), weights_(std::move(weights)) {}

std::unique_ptr<AdapterSource> AdapterSource::open(const fs::path& dir, const Checkpoint& base) {
  const fs::path cfg_path = dir / kAdapterConfigName;
  const fs::path w_path = dir / kAdapterWeightsName;
  LoraConfig cfg = parse_adapter_config(util::read_file(cfg_path), cfg_path.string());
  if (!fs::exists(w_path)) {
    const bool bin = fs::exists(dir / "adapter_model.bin");
    throw Error(ErrorKind::Format,
                bin ? "only pickle weights (adapter_model.bin) here; save the adapter with "
                      "safe_serialization=True"
                    : std::string("no ") + kAdapterWeightsName + " beside adapter_config.json",
                dir.string());
  }
  auto src = std::unique_ptr<AdapterSource>(
      new AdapterSource(dir, base, std::move(cfg), SafetensorsFile::open(w_path)));
  src->warnings_ = base.warnings();
  for (const auto& f : src->cfg_.ignored)
    src->warnings_.push_back(cfg_path.string() + ": field '" + f +
                             "' does not change the merged weights; ignored");
  const std::string wfile = w_path.string();
  const std::string prefix = kPeftKeyPrefix;

  // Group the keys by module and role.
  struct Parts {
    std::string a, b;
    bool embedding_a = false, embedding_b = false;
  };
  std::map<std::string, Parts> lora;
  std::vector<std::pair<std::string, std::string>> whole;  // key, base tensor it replaces
  for (const auto& t : src->weights_.header().tensors) {
    const std::string& key = t.name;
    if (key.rfind(prefix, 0) != 0)
      bad(wfile, "key does not start with '" + prefix + "' (peft's prefix for the wrapped model)",
          key);
    const std::string rest = key.substr(prefix.size());
    auto strip = [&](std::string_view suffix, std::string& module) {
      if (!ends_with(rest, suffix) || rest.size() == suffix.size()) return false;
      module = rest.substr(0, rest.size() - suffix.size());
      return true;
    };
    std::string m;
    if (strip(".lora_A.weight", m)) {
      lora[m].a = key;
    } else if (strip(".lora_B.weight", m)) {
      lora[m].b = key;
    } else if (strip(".lora_embedding_A", m)) {
      lora[m].a = key;
      lora[m].embedding_a = true;
    } else if (strip(".lora_embedding_B", m)) {
      lora[m].b = key;
      lora[m].embedding_b = true;
    } else if (strip(".lora_magnitude_vector", m) || strip(".lora_magnitude_vector.weight", m)) {
      unsupported(wfile,
                  "DoRA magnitude vector of module '" + m +
                      "': DoRA adapters are not supported (plain LoRA only)",
                  key);
    } else if (strip(".lora_B.bias", m) || strip(".lora_A.bias", m)) {
      unsupported(wfile,
                  "bias on the LoRA factors of module '" + m + "' (lora_bias) is not supported",
                  key);
    } else if (rest.find(".lora_") != std::string::npos) {
      unsupported(wfile,
                  "unknown LoRA key: supported are <module>.lora_A.weight, <module>.lora_B.weight, "
                  "<module>.lora_embedding_A, <module>.lora_embedding_B and whole tensors of "
                  "modules_to_save",
                  key);
    } else if (strip(".base_layer.weight", m)) {
      whole.emplace_back(key, m + ".weight");  // an embedding layer saved beside its LoRA
    } else {
      whole.emplace_back(key, rest);
    }
  }

  for (auto& [module, p] : lora) {
    if (p.a.empty() || p.b.empty())
      bad(wfile,
          "module '" + module + "' has " +
              (p.a.empty() ? "lora_B but no lora_A" : "lora_A but no lora_B"),
          p.a.empty() ? p.b : p.a);
    if (p.embedding_a != p.embedding_b)
      bad(wfile, "module '" + module + "' mixes linear and embedding LoRA factors", p.a);
    LoraModule lm;
    lm.kind = p.embedding_a ? LoraModule::Kind::Embedding : LoraModule::Kind::Linear;
    lm.module = module;
    lm.tensor = module + ".weight";
    lm.key_a = p.a;
    lm.key_b = p.b;
    lm.transposed = p.embedding_a || src->cfg_.fan_in_fan_out;
    if (!src->cfg_.targets(module))
      bad(cfg_path.string(),
          "the adapter holds LoRA factors for module '" + module +
              "' but target_modules/exclude_modules/modules_to_save do not select it (peft would "
              "ignore them)",
          p.a);
    if (!base.contains(lm.tensor))
      bad(base.path().string(),
          "the adapter changes module '" + module + "' but the base has no tensor '" + lm.tensor +
              "': is this the adapter's base model?",
          p.a);
    const TensorInfo& bi = base.info(lm.tensor);
    const TensorInfo& ai = *src->weights_.header().find(p.a);
    const TensorInfo& bb = *src->weights_.header().find(p.b);
    if (!is_compute_dtype(bi.dtype))
      unsupported(base.path().string(),
                  "module '" + module + "': base dtype " + std::string(dtype_name(bi.dtype)) +
                      " cannot be merged with (F16, BF16, F32, F64 only)",
                  lm.tensor);
    for (const TensorInfo* f : {&ai, &bb})
      if (!is_compute_dtype(f->dtype))
        unsupported(wfile,
                    "LoRA factor dtype " + std::string(dtype_name(f->dtype)) +
                        " (F16, BF16, F32, F64 only)",
                    f->name);
    if (bi.shape.size() != 2)
      unsupported(
          base.path().string(),
          "module '" + module +
              "': only 2-D weights (linear layers and embeddings) take LoRA here; this one has " +
              std::to_string(bi.shape.size()) + " dimensions",
          lm.tensor);
    if (ai.shape.size() != 2 || bb.shape.size() != 2)
      bad(wfile, "module '" + module + "': LoRA factors must be 2-D",
          ai.shape.size() != 2 ? p.a : p.b);
    const int64_t rank = ai.shape[0];
    // Linear (peft): A r×in, B out×r, W out×in (fan_in_fan_out: W in×out). Embedding: A r×vocab,
    // B dim×r, W vocab×dim.
    const int64_t w_out = lm.transposed ? bi.shape[1] : bi.shape[0];
    const int64_t w_in = lm.transposed ? bi.shape[0] : bi.shape[1];
    if (bb.shape[1] != rank)
      bad(wfile,
          fmt::format("module '{}': lora_A has rank {} but lora_B has {} columns", module, rank,
                      bb.shape[1]),
          p.b);
    if (ai.shape[1] != w_in || bb.shape[0] != w_out)
      bad(wfile,
          fmt::format(
              "module '{}': factors A [{}, {}] and B [{}, {}] do not fit the base weight [{}, "
              "{}]{}",
              module, ai.shape[0], ai.shape[1], bb.shape[0], bb.shape[1], bi.shape[0], bi.shape[1],
              lm.kind == LoraModule::Kind::Embedding ? " (embedding LoRA: A is r×vocab, B is dim×r)"
              : src->cfg_.fan_in_fan_out ? " (fan_in_fan_out: the weight is stored in×out)"
                                         : " (A is r×in, B is out×r)"),
          p.a);
    const int64_t want = src->cfg_.rank_for(module);
    if (rank != want)
      bad(wfile,
          fmt::format("module '{}': the factors have rank {} but the config gives it rank {} (r / "
                      "rank_pattern)",
                      module, rank, want),
          p.a);
    lm.rank = rank;
    lm.scaling = src->cfg_.scaling_for(module);
    src->modules_.push_back(std::move(lm));
  }
  for (const auto& entry : whole) {
    const std::string& key = entry.first;
    const std::string& tensor = entry.second;
    const std::string module =
        tensor.substr(0, tensor.rfind('.') == std::string::npos ? 0 : tensor.rfind('.'));
    const bool lora_module = lora.count(module) != 0;
    const std::string leaf = leaf_of(module);
    const bool embedding_layer = leaf == "embed_tokens" || leaf == "lm_head";
    if (!src->cfg_.saves(module) && !(lora_module && ends_with(key, ".base_layer.weight")) &&
        !embedding_layer)
      bad(wfile,
          "not a LoRA factor, and module '" + module +
              "' is not in modules_to_save (supported: <module>.lora_A.weight / lora_B.weight, "
              "lora_embedding_A / "
              "lora_embedding_B, whole tensors of modules_to_save and saved embedding layers)",
          key);
    if (!base.contains(tensor))
      bad(base.path().string(),
          "the adapter stores '" + key + "' whole but the base has no tensor '" + tensor + "'",
          key);
    const TensorInfo& bi = base.info(tensor);
    const TensorInfo& wi = *src->weights_.header().find(key);
    if (bi.shape != wi.shape)
      unsupported(wfile,
                  "stored tensor replaces base tensor '" + tensor +
                      "' but has a different shape (a resized vocabulary is not supported)",
                  key);
    if (!is_compute_dtype(bi.dtype) || !is_compute_dtype(wi.dtype)) {
      if (bi.dtype != wi.dtype)
        unsupported(wfile,
                    "stored tensor has dtype " + std::string(dtype_name(wi.dtype)) +
                        " but the base's '" + tensor + "' is " + std::string(dtype_name(bi.dtype)),
                    key);
    }
    if (src->by_tensor_.count(tensor) ||
        std::any_of(src->modules_.begin(), src->modules_.end(),
                    [&](const LoraModule& m) { return m.tensor == tensor; })) {
      // A LoRA module whose base layer is saved too: the saved base replaces the base's weight
      // first, then the LoRA delta is added. Only equal copies are supported.
      continue;
    }
    LoraModule lm;
    lm.kind = LoraModule::Kind::Whole;
    lm.module = module;
    lm.tensor = tensor;
    lm.key_a = key;
    src->modules_.push_back(std::move(lm));
  }
  // A saved base layer of a LoRA module must equal the base's (peft would merge onto it).
  for (const auto& entry : whole) {
    const std::string& key = entry.first;
    const std::string& tensor = entry.second;
    const std::string module = tensor.substr(0, tensor.rfind('.'));
    if (!lora.count(module) || !ends_with(key, ".base_layer.weight")) continue;
    const TensorInfo& wi = *src->weights_.header().find(key);
    const TensorInfo& bi = base.info(tensor);
    std::vector<float> a(wi.numel()), b(bi.numel());
    to_f32(src->weights_.data(wi), wi.dtype, a);
    to_f32(base.data(tensor), bi.dtype, b);
    for (size_t i = 0; i < a.size(); ++i)
      if (f32_to_bits(a[i]) != f32_to_bits(b[i]))
        unsupported(wfile,
                    "saved base layer of module '" + module + "' differs from the base's '" +
                        tensor +
                        "' (an adapter trained on another base?); only equal copies are supported",
                    key);
  }
  for (size_t i = 0; i < src->modules_.size(); ++i) {
    const LoraModule& m = src->modules_[i];
    if (!src->by_tensor_.emplace(m.tensor, i).second)
      bad(wfile, "two entries of the adapter form the same tensor '" + m.tensor + "'", m.key_a);
    TensorInfo ti = base.info(m.tensor);
    const uint64_t size = ti.nbytes();
    ti.begin = 0;
    ti.end = size;
    src->infos_.emplace(m.tensor, std::move(ti));
  }
  if (src->modules_.empty()) src->warnings_.push_back(wfile + ": the adapter changes no tensor");
  return src;
}

const LoraModule* AdapterSource::module_of(std::string_view name) const {
  auto it = by_tensor_.find(name);
  return it == by_tensor_.end() ? nullptr : &modules_[it->second];
}

const TensorInfo& AdapterSource::info(std::string_view name) const {
  auto it = infos_.find(name);
  return it == infos_.end() ? base_.info(name) : it->second;
}

uint64_t AdapterSource::formed_bytes(std::string_view name) const {
  // The formed tensor in the base dtype, plus the f32 factors and one block of rows while forming.
  const LoraModule* m = module_of(name);
  if (!m) return 0;
  uint64_t b = infos_.find(name)->second.nbytes();
  const TensorInfo& ti = infos_.find(name)->second;
  const uint64_t cols = ti.shape.size() == 2 ? uint64_t(ti.shape[1]) : ti.numel();
  b += 2 * 4 * kFormRows * cols;
  if (m->kind != LoraModule::Kind::Whole)
    b +=
        4 * (weights_.header().find(m->key_a)->numel() + weights_.header().find(m->key_b)->numel());
  return b;
}

std::vector<std::byte> AdapterSource::form(const LoraModule& m) const {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  const TensorInfo& ti = infos_.find(m.tensor)->second;  // base dtype and shape
  const size_t osz = dtype_bits(ti.dtype) / 8;
  std::vector<std::byte> out(ti.nbytes());
  if (m.kind == LoraModule::Kind::Whole) {  // converted in pieces
    const TensorInfo& si = *weights_.header().find(m.key_a);
    const auto src = weights_.data(si);
    const size_t isz = dtype_bits(si.dtype) / 8;
    std::vector<float> f(std::min<uint64_t>(si.numel(), kFormRows * 4096));
    for (uint64_t at = 0; at < si.numel(); at += f.size()) {
      const size_t c = size_t(std::min<uint64_t>(f.size(), si.numel() - at));
      to_f32(src.subspan(at * isz, c * isz), si.dtype, std::span(f.data(), c));
      from_f32(std::span<const float>(f.data(), c), ti.dtype,
               std::span(out.data() + at * osz, c * osz));
    }
    return out;
  }
  const TensorInfo& bi = base_.info(m.tensor);
  const auto base_bytes = base_.data(m.tensor);
  const size_t bsz = dtype_bits(bi.dtype) / 8;
  const TensorInfo& ai = *weights_.header().find(m.key_a);
  const TensorInfo& bb = *weights_.header().find(m.key_b);
  std::vector<float> a(ai.numel()), b(bb.numel());
  to_f32(weights_.data(ai), ai.dtype, a);
  to_f32(weights_.data(bb), bb.dtype, b);
  const int64_t r = m.rank;
  const int64_t rows = bi.shape[0], cols = bi.shape[1];
  const float s = float(m.scaling);
  const linalg::SerialBlas serial;  // same bytes for any number of workers
  const int64_t kRows = int64_t(kFormRows);
  std::vector<float> p(size_t(std::min(rows, kRows) * cols)), w(p.size());
  for (int64_t i0 = 0; i0 < rows; i0 += kRows) {
    check_interrupted();
    const int64_t h = std::min(kRows, rows - i0);
    const size_t c = size_t(h * cols), at = size_t(i0 * cols);
    if (r > 0) {
      if (!m.transposed) {
        // Row-major P (h×cols) = B[i0:i0+h, :] (h×r) · A (r×cols): column-major Pᵀ = Aᵀ·Bᵀ.
        linalg::gemm(false, false, cols, h, r, a.data(), cols, b.data() + i0 * r, r, p.data(),
                     cols);
      } else {
        // W is (B·A)ᵀ-shaped: rows index A's columns. Row-major P (h×cols) = A[:, i0:i0+h]ᵀ · Bᵀ,
        // i.e. column-major Pᵀ (cols×h) = B (cols×r) · A[:, i0:i0+h] (r×h).
        const int64_t in = rows;  // A is r×in with in = rows of W
        linalg::gemm(true, true, cols, h, r, b.data(), r, a.data() + i0, in, p.data(), cols);
      }
    } else {
      std::fill(p.begin(), p.begin() + ptrdiff_t(c), 0.0f);
    }
    to_f32(base_bytes.subspan(at * bsz, c * bsz), bi.dtype, std::span(w.data(), c));
    for (size_t k = 0; k < c; ++k) {
      const float d = p[k] * s;  // (B·A)·scaling, as peft's get_delta_weight
      w[k] = w[k] + d;           // then added to the weight (merge), rounded once below
    }
    from_f32(std::span<const float>(w.data(), c), ti.dtype,
             std::span(out.data() + at * osz, c * osz));
  }
  return out;
}

std::span<const std::byte> AdapterSource::data(std::string_view name) const {
  const LoraModule* m = module_of(name);
  if (!m) return base_.data(name);
  std::shared_ptr<Formed> f;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto& slot = formed_[std::string(name)];
    if (!slot) slot = std::make_shared<Formed>();
    f = slot;
  }
  std::call_once(f->once, [&] { f->bytes = form(*m); });
  return f->bytes;
}

void AdapterSource::release(std::string_view name) const {
  if (!module_of(name)) return base_.release(name);
  const LoraModule* m = module_of(name);
  if (m->kind == LoraModule::Kind::Linear || m->kind == LoraModule::Kind::Embedding)
    base_.release(name);
  std::lock_guard<std::mutex> g(mu_);
  if (auto it = formed_.find(name); it != formed_.end()) formed_.erase(it);
}

void AdapterSource::release_range(std::string_view name, uint64_t offset, uint64_t bytes) const {
  if (!module_of(name)) base_.release_range(name, offset, bytes);
  // Formed tensors stay whole until release(): they are read again when the output is composed.
}

std::vector<fs::path> AdapterSource::input_paths() const {
  std::vector<fs::path> v = base_.input_paths();
  v.push_back(dir_);
  v.push_back(dir_ / kAdapterConfigName);
  v.push_back(weights_.path());
  return v;
}

std::unique_ptr<TensorSource> open_post(const fs::path& post, const Checkpoint& base) {
  if (is_peft_adapter(post)) return AdapterSource::open(post, base);
  return std::make_unique<Checkpoint>(Checkpoint::open(post));
}

}  // namespace deltaedit::io
