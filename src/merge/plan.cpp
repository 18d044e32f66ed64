#include "merge/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>

#include "io/peft.h"
#include "io/writer.h"
#include "merge/params.h"
#include "util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::merge {

std::string model_key(const ModelRef& r) {
  const auto canonical = [](const std::string& path) {
    std::error_code ec;
    auto p = fs::weakly_canonical(fs::absolute(path), ec);
    return ec ? path : p.string();
  };
  return r.lora.empty() ? canonical(r.path) : canonical(r.path) + "+" + canonical(r.lora);
}

namespace {

// "model.layers.12.mlp.up_proj.weight" → {"model.layers.", 12, ".mlp.up_proj.weight"}: the first
// `.<digits>.` component marks a layer weight (MERGE.md §4.1, inferred layouts).
struct LayerName {
  std::string prefix, suffix;
  int64_t index = -1;
};
std::optional<LayerName> split_layer(std::string_view n) {
  size_t i = 0;
  while ((i = n.find('.', i)) != std::string_view::npos) {
    size_t j = i + 1;
    while (j < n.size() && std::isdigit(static_cast<unsigned char>(n[j]))) ++j;
    if (j > i + 1 && j < n.size() && n[j] == '.' && j - i - 1 <= 9) {
      LayerName l{std::string(n.substr(0, i + 1)), std::string(n.substr(j)),
                  std::stoll(std::string(n.substr(i + 1, j - i - 1)))};
      return l;
    }
    i = j;
  }
  return std::nullopt;
}

bool is_embed_name(std::string_view n) {
  return n == "lm_head.weight" || n.ends_with("embed_tokens.weight") || n.ends_with("wte.weight") ||
         n.ends_with("embed_in.weight") || n.ends_with("embed_out.weight");
}
// Post-weights (final norm, lm_head) use the last slice's sources; everything else not in a layer
// is a pre-weight and uses slice 0's (MERGE.md §1.3).
bool is_post_name(std::string_view n) {
  return n.starts_with("lm_head") || n.find(".norm.") != std::string_view::npos ||
         n.starts_with("norm.") || n.find("ln_f.") != std::string_view::npos ||
         n.find("final_layernorm") != std::string_view::npos;
}

std::string num(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.1f}", v);
  return fmt::format("{}", v);
}
std::string list(const std::vector<double>& g) {
  std::vector<std::string> s;
  for (double v : g) s.push_back(fmt::format("{}", v));
  return "[" + fmt::format("{}", fmt::join(s, ", ")) + "]";
}

io::DType widest(io::DType a, io::DType b) {
  if (a == b) return a;
  return io::DType::F32;  // f32 with anything, bf16 with f16: f32 holds both exactly
}
io::DType work_of(io::DType d) {
  if (d == io::DType::BF16 || d == io::DType::F16) return d;
  return io::DType::F32;
}

struct Builder {
  MergeConfig& c;
  MergePlan& plan;
  const MethodInfo& info;

  [[noreturn]] void fail(int line, const std::string& msg) const {
    throw Error(ErrorKind::Usage, line > 0 ? fmt::format("line {}: {}", line, msg) : msg, c.file);
  }

  std::map<std::string, size_t> index;  // model_key → model
  size_t model(const ModelRef& r) {
    const std::string k = model_key(r);
    auto it = index.find(k);
    if (it != index.end()) return it->second;
    index[k] = plan.models.size();
    PlanModel m;
    m.path = r.text();
    m.line = r.line;
    m.dir = r.path;
    m.lora = r.lora;
    plan.models.push_back(std::move(m));
    return plan.models.size() - 1;
  }

  void open_all() {
    for (auto& m : plan.models) {
      std::error_code ec;
      if (!fs::exists(m.dir, ec)) {
        const bool hub_like = m.dir.find('/') != std::string::npos && m.dir[0] != '/' &&
                              m.dir[0] != '.' &&
                              std::count(m.dir.begin(), m.dir.end(), '/') == 1;
        throw Error(
            ErrorKind::Io,
            fmt::format(
                "line {}: model directory '{}' does not exist{}", m.line, m.dir,
                hub_like
                    ? " (hub names are not downloaded: only local directories are read; fetch it "
                      "with `huggingface-cli download NAME --local-dir DIR` and name DIR)"
                    : m.dir.find('+') != std::string::npos
                        ? " (nor is the part before a '+' a directory, as the base of a "
                          "base+adapter reference)"
                        : ""),
            c.file);
      }
      if (!fs::is_directory(m.dir, ec))
        throw Error(ErrorKind::Usage,
                    fmt::format("line {}: '{}' is not a directory: a model is a Hugging Face "
                                "directory with config.json "
                                "and safetensors weights",
                                m.line, m.dir),
                    c.file);
      if (!m.lora.empty() && !fs::is_directory(m.lora, ec))
        throw Error(ErrorKind::Io,
                    fmt::format("line {}: adapter directory '{}' of '{}' does not exist", m.line,
                                m.lora, m.path),
                    c.file);
      try {
        if (m.lora.empty()) {
          m.checkpoint = std::make_unique<io::Checkpoint>(io::Checkpoint::open(m.dir));
        } else {
          m.base_checkpoint = std::make_unique<io::Checkpoint>(io::Checkpoint::open(m.dir));
          m.checkpoint = io::AdapterSource::open(m.lora, *m.base_checkpoint);
        }
      } catch (const Error& e) {
        throw Error(e.kind(),
                    fmt::format("{} (model named at {} line {})", e.detail(), c.file, m.line),
                    e.file(), e.tensor());
      }
      if (!m.checkpoint->config())
        throw Error(ErrorKind::Format,
                    fmt::format("model named at {} line {} has no config.json: merging needs its "
                                "architecture and layer count",
                                c.file, m.line),
                    m.path);
      for (const auto& w : m.checkpoint->warnings()) plan.warnings.push_back(m.path + ": " + w);
    }
  }

  const io::ModelConfig& cfg(size_t m) const { return *plan.models[m].checkpoint->config(); }
  const io::TensorSource& ck(size_t m) const { return *plan.models[m].checkpoint; }

  // One slice's sources resolved to models, with its range, base and parameter levels.
  struct Src {
    size_t model;
    int64_t start, end;
    const Params* params;
    const std::vector<std::string>* ops;
    int line;
    bool appended_base = false;
  };
  struct Slice {
    std::vector<Src> sources;  // config order
    std::optional<size_t> base;
    const Params* params = nullptr;
    int line = 0;
  };
  std::vector<Slice> slices;

  void resolve() {
    // Models in config order, then a base that no slice lists.
    const std::vector<std::string> none;
    if (!c.uses_slices) {
      Slice s;
      s.line = c.models.empty() ? 0 : c.models[0].line;
      for (const auto& m : c.models)
        s.sources.push_back({model(m.model), 0, -1, &m.params, &m.ops, m.line});
      slices.push_back(std::move(s));
    } else {
      for (const auto& sc : c.slices) {
        Slice s;
        s.line = sc.line;
        s.params = &sc.params;
        for (const auto& m : sc.sources)
          s.sources.push_back({model(m.model), m.layer_range->first, m.layer_range->second,
                               &m.params, &m.ops, m.line});
        slices.push_back(std::move(s));
      }
    }
    if (c.base_model) plan.base = model(*c.base_model);
    for (size_t i = 0; i < slices.size(); ++i) {
      if (c.uses_slices && c.slices[i].base_model)
        slices[i].base = model(*c.slices[i].base_model);
      else
        slices[i].base = plan.base;
    }
    if (c.tokenizer_source && !c.tokenizer_is_base) {
      const std::string k = model_key(*c.tokenizer_source);
      if (!index.count(k))
        fail(c.tokenizer_source->line, fmt::format("tokenizer_source '{}' is not one of the merged "
                                                   "models; use `base` or one of their paths",
                                                   c.tokenizer_source->text()));
    }
  }

  void check_models() {
    plan.donor = plan.base ? *plan.base : slices[0].sources[0].model;
    plan.tokenizer_model = plan.donor;
    if (c.tokenizer_source && !c.tokenizer_is_base)
      plan.tokenizer_model = index.at(model_key(*c.tokenizer_source));
    if (c.tokenizer_source && c.tokenizer_is_base && !plan.base)
      fail(c.tokenizer_source->line, "tokenizer_source: base needs a base_model");
    const auto& d = cfg(plan.donor);
    for (size_t m = 0; m < plan.models.size(); ++m) {
      const auto& x = cfg(m);
      if (x.architecture != d.architecture)
        fail(plan.models[m].line,
             fmt::format("'{}' is a {} but '{}' is a {}: mixed architectures cannot be merged",
                         plan.models[m].path, x.architecture, plan.models[plan.donor].path,
                         d.architecture));
    }
    if (c.trim == Trim::Model)
      fail(0,
           "deltaedit.trim: model (one magnitude threshold per model) is not implemented yet; use "
           "trim: tensor");
    // Ranges and lengths (§1.3).
    for (size_t si = 0; si < slices.size(); ++si) {
      auto& s = slices[si];
      for (auto& src : s.sources) {
        const int64_t n = cfg(src.model).num_hidden_layers;
        if (src.end < 0) {
          src.end = n;
        } else if (src.end > n) {
          fail(src.line, fmt::format("layer_range [{}, {}) exceeds the {} layers of '{}'",
                                     src.start, src.end, n, plan.models[src.model].path));
        }
      }
      for (const auto& src : s.sources)
        if (src.end - src.start != s.sources[0].end - s.sources[0].start)
          fail(src.line,
               c.uses_slices
                   ? fmt::format(
                         "all sources of slice {} must have the same length: {} layers here, {} in "
                         "its first source",
                         si, src.end - src.start, s.sources[0].end - s.sources[0].start)
                   : fmt::format("layer counts differ: '{}' has {} layers, '{}' has {}",
                                 plan.models[src.model].path, src.end - src.start,
                                 plan.models[s.sources[0].model].path,
                                 s.sources[0].end - s.sources[0].start));
      // The base: a listed base is the base; an unlisted one joins methods that take no base.
      if (info.needs_base) {
        if (!s.base)
          fail(c.method_line,
               fmt::format("{} needs a base_model (it merges task vectors x_i − base)", info.name));
      } else if (s.base && !info.optional_base && info.shape_rule != ShapeRule::Single) {
        bool listed = false;
        for (const auto& src : s.sources) listed |= src.model == *s.base;
        if (!listed) {
          static const Params kNone;
          static const std::vector<std::string> kNoOps;
          const auto& f = s.sources[0];
          if (cfg(*s.base).num_hidden_layers < f.end)
            fail(plan.models[*s.base].line,
                 fmt::format("the base model has {} layers, fewer than the slice needs",
                             cfg(*s.base).num_hidden_layers));
          s.sources.push_back(
              {*s.base, f.start, f.end, &kNone, &kNoOps, plan.models[*s.base].line, true});
        }
      }
      size_t inputs = 0;
      for (const auto& src : s.sources) inputs += !(takes_base(s) && src.model == *s.base);
      if (int(inputs) < info.min_models || int(inputs) > info.max_models) {
        const std::string range = info.min_models == info.max_models
                                      ? fmt::format("exactly {}", info.min_models)
                                  : info.max_models >= (1 << 20)
                                      ? fmt::format("at least {}", info.min_models)
                                      : fmt::format("{} to {}", info.min_models, info.max_models);
        fail(c.uses_slices ? s.line : c.method_line,
             fmt::format("{} takes {} model{}{}, and {} {} given", info.name, range,
                         info.max_models == 1 ? "" : "s", takes_base(s) ? " besides the base" : "",
                         inputs, inputs == 1 ? "is" : "are"));
      }
    }
    const int64_t n0 = cfg(plan.donor).num_hidden_layers;
    int64_t total = 0;
    for (const auto& s : slices) total += s.sources[0].end - s.sources[0].start;
    plan.output_layers = c.uses_slices ? total : n0;
    plan.layers_renumbered = c.uses_slices;
  }

  // --- tensors ---

  struct Input {
    size_t model;
    std::string tensor;
    const Params* params;
    bool is_base = false, tied = false;
    int line = 0;
  };

  // Whether the method receives this slice's base as TensorJob::base.
  bool takes_base(const Slice& s) const {
    return s.base && (info.needs_base || info.optional_base);
  }

  std::string where_model(size_t m) const {
    return fmt::format("'{}' (line {})", plan.models[m].path, plan.models[m].line);
  }

  void plan_tensor(const std::string& out_name, const std::string& template_name,
                   std::optional<int64_t> k, int64_t L, const Slice& s, size_t si,
                   const std::function<std::string(const Src&)>& input_name) {
    PlanTensor t;
    t.name = out_name;
    t.slice = si;
    t.layer = k.has_value();
    t.is_embed = is_embed_name(template_name);
    if (k)
      t.t = L == 1 ? 1.0 : double(*k) / double(L - 1);
    else
      t.t = (c.conventions == Conventions::Paper && is_post_name(template_name)) ? 1.0 : 0.0;
    if (k && L == 1 && si < 64)
      t.notes.push_back(
          fmt::format("t = 1 for the single layer of slice {} (mergekit's rule)", si));

    // Resolve each source's tensor (tied lm_head falls back to embed_tokens, §4.4).
    std::vector<Input> inputs;
    bool any_has = false;
    for (const auto& src : s.sources) any_has |= ck(src.model).contains(input_name(src));
    if (!any_has) return;  // e.g. no input has an lm_head: none is written
    for (const auto& src : s.sources) {
      Input in{src.model, input_name(src), src.params, takes_base(s) && src.model == *s.base,
               false,     src.line};
      if (!ck(src.model).contains(in.tensor)) {
        const std::string embed = "model.embed_tokens.weight";
        if (template_name == "lm_head.weight" && ck(src.model).contains(embed)) {
          in.tensor = embed;
          in.tied = true;
          t.notes.push_back(
              fmt::format("{} has no lm_head.weight: its embed_tokens stands in (tied embeddings)",
                          plan.models[src.model].path));
        } else {
          fail(src.line, fmt::format("tensor '{}' is missing from '{}'", in.tensor,
                                     plan.models[src.model].path));
        }
      }
      inputs.push_back(std::move(in));
    }
    if (takes_base(s)) {
      bool have = false;
      for (const auto& in : inputs) have |= in.is_base;
      if (!have) {
        // The base is not a listed source: read the same tensor from it.
        std::string n = template_name;
        if (k) {
          auto ln = split_layer(template_name);
          n = ln->prefix + std::to_string(s.sources[0].start + *k) + ln->suffix;
        }
        Input in{*s.base, n, nullptr, true, false, plan.models[*s.base].line};
        if (!ck(*s.base).contains(n)) {
          if (template_name == "lm_head.weight" &&
              ck(*s.base).contains("model.embed_tokens.weight")) {
            in.tensor = "model.embed_tokens.weight";
            in.tied = true;
          } else {
            fail(in.line, fmt::format("tensor '{}' is missing from the base model '{}'", n,
                                      plan.models[*s.base].path));
          }
        }
        inputs.insert(inputs.begin(), std::move(in));
      } else {
        std::stable_partition(inputs.begin(), inputs.end(),
                              [](const Input& a) { return a.is_base; });
      }
    }

    // Dtypes (§2.0): W = dtype, else the base's dtype for task-vector methods, else the widest
    // input.
    std::optional<io::DType> stored;
    for (const auto& in : inputs) {
      const auto& ti = ck(in.model).info(in.tensor);
      if (!io::is_compute_dtype(ti.dtype))
        throw Error(ErrorKind::Unsupported,
                    fmt::format("dtype {} cannot be merged (F16, BF16, F32 and F64 can)",
                                io::dtype_name(ti.dtype)),
                    plan.models[in.model].path, in.tensor);
      if (info.needs_base && in.is_base) stored = ti.dtype;
      if (!info.needs_base)
        stored = stored ? widest(*stored, ti.dtype) : ti.dtype;  // optional bases too
    }
    t.work = work_of(c.dtype ? *c.dtype : *stored);
    t.out_dtype = c.out_dtype ? *c.out_dtype : c.dtype ? *c.dtype : t.work;

    // Shapes (§2.1, §2.3, §4.3).
    std::vector<int64_t> out_shape = ck(inputs[0].model).info(inputs[0].tensor).shape;
    bool differ = false;
    for (const auto& in : inputs) differ |= ck(in.model).info(in.tensor).shape != out_shape;
    std::set<size_t> skipped;
    if (differ) {
      const bool embed2d = t.is_embed && out_shape.size() == 2;
      auto shape_list = [&] {
        std::vector<std::string> v;
        for (const auto& in : inputs)
          v.push_back(fmt::format("{} {}", plan.models[in.model].path,
                                  json(ck(in.model).info(in.tensor).shape).dump()));
        return fmt::format("{}", fmt::join(v, ", "));
      };
      if (c.tokenizer_source && embed2d)
        fail(c.tokenizer_source->line,
             fmt::format("the vocabularies differ ({}: {}) and re-indexing embeddings by tokenizer "
                         "is not supported "
                         "yet; leave tokenizer_source out to crop the rows as mergekit does",
                         out_name, shape_list()));
      switch (info.shape_rule) {
        case ShapeRule::CropEmbedToBaseSkipOthers:
          for (size_t i = 1; i < inputs.size(); ++i) {
            const auto& sh = ck(inputs[i].model).info(inputs[i].tensor).shape;
            if (sh == out_shape) continue;
            if (embed2d && sh.size() == 2) {
              if (sh[0] < out_shape[0] || sh[1] < out_shape[1])
                fail(
                    inputs[i].line,
                    fmt::format("'{}' of '{}' is smaller than the base's ({}): task-vector methods "
                                "crop embeddings to the base and cannot grow them",
                                out_name, plan.models[inputs[i].model].path, shape_list()));
              t.notes.push_back(fmt::format("{} cropped to the base's shape {}",
                                            plan.models[inputs[i].model].path,
                                            json(out_shape).dump()));
            } else {
              skipped.insert(i);
              plan.warnings.push_back(
                  fmt::format("{}: '{}' is skipped for this tensor: its shape {} differs from the "
                              "base's {} (mergekit skips it with only a warning)",
                              out_name, plan.models[inputs[i].model].path, json(sh).dump(),
                              json(out_shape).dump()));
            }
          }
          break;
        case ShapeRule::CropEmbedToMin:
          if (!embed2d)
            fail(inputs[0].line,
                 fmt::format("tensor '{}' has different shapes: {}", out_name, shape_list()));
          for (const auto& in : inputs) {
            const auto& sh = ck(in.model).info(in.tensor).shape;
            if (sh.size() != 2)
              fail(in.line,
                   fmt::format("tensor '{}' has different ranks: {}", out_name, shape_list()));
            out_shape[0] = std::min(out_shape[0], sh[0]);
            out_shape[1] = std::min(out_shape[1], sh[1]);
          }
          t.notes.push_back(
              fmt::format("inputs cropped to the common shape {}", json(out_shape).dump()));
          break;
        case ShapeRule::Error:
        case ShapeRule::Single:
          fail(inputs[0].line, fmt::format("{} needs equal shapes, and tensor '{}' has {}",
                                           info.name, out_name, shape_list()));
      }
    }
    t.shape = out_shape;

    // Parameters (§1.4): per-model ones match the input name, global ones the output name.
    const ParamLevels base_levels{nullptr, s.params, &c.params};
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (skipped.count(i)) continue;
      const auto& in = inputs[i];
      PlanSource ps{in.model, in.tensor, ck(in.model).info(in.tensor).shape, {}, in.tied};
      for (const auto& spec : info.params) {
        if (!spec.per_model) continue;
        ParamLevels lv = base_levels;
        lv.source = in.params;
        auto e = lookup(spec, lv, in.tensor, t.t);
        if (!e) {
          if (in.is_base || !spec.required) continue;
          const bool appended =
              in.params && in.params->empty() && plan.base && in.model == *plan.base;
          fail(in.line,
               fmt::format(
                   "missing required parameter {} for {}.{}{}", spec.name,
                   plan.models[in.model].path, in.tensor,
                   appended
                       ? fmt::format(" (the base_model joins {} as an input: give it a {} under "
                                     "models:, or a top-level one)",
                                     info.name, spec.name)
                       : ""));
        }
        ps.params[spec.name] = e->value;
        if (!t.layer && e->from_gradient)
          t.notes.push_back(
              fmt::format("{} takes {} {}, the {} value of the gradient {}, for '{}' (t = {} for "
                          "non-layer tensors{})",
                          out_name, spec.name, num(e->value), t.t == 0 ? "first" : "last",
                          list(e->setting->values), plan.models[in.model].path, t.t == 0 ? 0 : 1,
                          t.t == 0 ? ", as in mergekit" : ": post-weights, paper conventions"));
      }
      if (in.is_base)
        t.base = std::move(ps);
      else
        t.models.push_back(std::move(ps));
    }
    for (const auto& spec : info.params) {
      if (spec.per_model) continue;
      auto e = lookup(spec, base_levels, out_name, t.t);
      if (!e) {
        if (spec.required)
          fail(c.method_line, fmt::format("missing required parameter {} for {} (tensor {})",
                                          spec.name, info.name, out_name));
        continue;
      }
      t.global[spec.name] = e->value;
      if (!t.layer && e->from_gradient)
        t.notes.push_back(fmt::format(
            "{} takes {} {}, the {} value of the gradient {} (t = {} for non-layer tensors{})",
            out_name, spec.name, num(e->value), t.t == 0 ? "first" : "last",
            list(e->setting->values), t.t == 0 ? 0 : 1,
            t.t == 0 ? ", as in mergekit" : ": post-weights, paper conventions"));
    }
    method_checks(t);
    plan.tensors.push_back(std::move(t));
  }

  // Rules of particular methods that mergekit reports late or not at all (MERGE.md §0, §5).
  void method_checks(PlanTensor& t) {
    const std::string& m = info.name;
    const uint64_t n = t.numel();
    for (const auto& src : t.models) {
      auto d = src.params.find("density");
      const double density = d == src.params.end() ? 1.0 : d->second;
      const std::string who = plan.models[src.model].path;
      if (m == "ties" && density < 1.0 && int64_t(density * double(n)) == 0)
        fail(plan.models[src.model].line,
             fmt::format("ties keeps k = int(density·n) = int({}·{}) = 0 elements of '{}' for '{}' "
                         "(mergekit crashes "
                         "here); raise density or exclude the tensor with a filter",
                         density, n, t.name, who));
      if ((m == "della" || m == "della_linear") && density > 0 && density < 1.0) {
        auto e = src.params.find("epsilon");
        const double eps = e == src.params.end() ? 0.15 : e->second;
        if (!(density - eps > 0 && density + eps < 1)) {
          const std::string msg = fmt::format(
              "{} needs density − epsilon > 0 and density + epsilon < 1; '{}' has density "
              "{} and epsilon {} for '{}'",
              m, who, density, eps, t.name);
          if (c.conventions == Conventions::Mergekit) fail(plan.models[src.model].line, msg);
          t.notes.push_back(msg + " (q is clamped to [0, 1], as the paper's code does)");
        }
      }
    }
  }

  void plan_tensors() {
    const size_t first = 0, last = slices.size() - 1;
    // Layer tensors, slice by slice, renumbered consecutively.
    int64_t offset = 0;
    std::set<std::string> seen;
    for (size_t si = 0; si < slices.size(); ++si) {
      const auto& s = slices[si];
      const auto& f = s.sources[0];
      const int64_t L = f.end - f.start;
      for (int64_t k = 0; k < L; ++k) {
        for (const auto& n : ck(f.model).names()) {
          auto ln = split_layer(n);
          if (!ln || ln->index != f.start + k) continue;
          const std::string out = ln->prefix + std::to_string(offset + k) + ln->suffix;
          if (!seen.insert(out).second) continue;
          plan_tensor(out, n, k, L, s, si, [&](const Src& src) {
            return ln->prefix + std::to_string(src.start + k) + ln->suffix;
          });
        }
      }
      offset += L;
    }
    // Non-layer tensors: every name that some model of the first/last slice has, donor order first.
    std::vector<std::string> loose;
    std::set<std::string> loose_set;
    auto add_from = [&](size_t m) {
      for (const auto& n : ck(m).names())
        if (!split_layer(n) && loose_set.insert(n).second) loose.push_back(n);
    };
    add_from(plan.donor);
    for (const auto* s : {&slices[first], &slices[last]})
      for (const auto& src : s->sources) add_from(src.model);
    for (const auto& n : loose) {
      const size_t si = is_post_name(n) ? last : first;
      if (!seen.insert(n).second) continue;
      plan_tensor(n, n, std::nullopt, 0, slices[si], si, [&](const Src&) { return n; });
    }
    std::sort(plan.tensors.begin(), plan.tensors.end(),
              [](const PlanTensor& a, const PlanTensor& b) { return a.name < b.name; });
    // Aggregate the t = 0 surprise into one warning per parameter (MERGE.md §5.1).
    std::vector<std::string> gradient_notes;
    for (const auto& t : plan.tensors)
      for (const auto& note : t.notes)
        if (note.find("value of the gradient") != std::string::npos) gradient_notes.push_back(note);
    for (const auto& n : gradient_notes) plan.warnings.push_back(n);
  }
};

}  // namespace

uint64_t PlanTensor::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return n;
}
uint64_t PlanTensor::nbytes() const { return io::PlannedTensor{name, out_dtype, shape}.nbytes(); }

uint64_t MergePlan::output_bytes() const {
  uint64_t b = 0;
  for (const auto& t : tensors) b += t.nbytes();
  return b;
}

uint64_t MergePlan::largest_tensor_need() const {
  uint64_t m = 0;
  for (const auto& t : tensors)
    m = std::max(m, (t.models.size() + (t.base ? 1 : 0) + 2) * t.numel() * 4);
  return m;
}

json MergePlan::to_json() const {
  json j;
  j["method"] = method->info().name;
  j["conventions"] = config.conventions == Conventions::Paper ? "paper" : "mergekit";
  j["seed"] = seed;
  j["models"] = json::array();
  for (size_t i = 0; i < models.size(); ++i) {
    std::string role = base && *base == i ? "base" : "model";
    j["models"].push_back(
        {{"index", i}, {"path", models[i].path}, {"line", models[i].line}, {"role", role}});
  }
  j["donor"] = models[donor].path;
  j["tokenizer_from"] = models[tokenizer_model].path;
  j["output_layers"] = output_layers;
  j["output_bytes"] = output_bytes();
  auto src_json = [&](const PlanSource& s) {
    json o{{"model", s.model},
           {"path", models[s.model].path},
           {"tensor", s.tensor},
           {"params", s.params}};
    if (s.tied) o["tied"] = true;
    return o;
  };
  j["tensors"] = json::array();
  for (const auto& t : tensors) {
    json o{{"name", t.name},
           {"shape", t.shape},
           {"dtype", io::dtype_name(t.out_dtype)},
           {"work", io::dtype_name(t.work)},
           {"t", t.t},
           {"layer", t.layer},
           {"slice", t.slice},
           {"global", t.global},
           {"models", json::array()}};
    if (t.base) o["base"] = src_json(*t.base);
    for (const auto& s : t.models) o["models"].push_back(src_json(s));
    if (!t.notes.empty()) o["notes"] = t.notes;
    j["tensors"].push_back(o);
  }
  j["warnings"] = warnings;
  return j;
}

MergePlan build_plan(MergeConfig config, const PlanOptions& opt) {
  MergePlan plan;
  plan.config = std::move(config);
  plan.method = plan.config.method;
  plan.seed = opt.seed ? *opt.seed : plan.config.seed.value_or(0);
  plan.warnings = plan.config.warnings;
  Builder b{plan.config, plan, plan.method->info(), {}, {}};
  b.resolve();
  b.open_all();
  b.check_models();
  b.plan_tensors();
  if (plan.tensors.empty())
    throw Error(ErrorKind::Usage, "the merge would write no tensor", plan.config.file);
  return plan;
}

}  // namespace deltaedit::merge
