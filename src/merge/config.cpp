#include "merge/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <set>

#include "edit/op.h"
#include "util/error.h"

namespace deltaedit::merge {
namespace {

constexpr size_t kMaxConfigBytes = 16u << 20;
constexpr int kMaxFlowDepth = 64;

int line_of(const YAML::Node& n) {
  const auto m = n.Mark();
  return m.line >= 0 ? m.line + 1 : 0;
}

struct Parser {
  std::string file;
  bool lenient = false;
  std::vector<std::string>* warnings = nullptr;
  const Method* method = nullptr;

  [[noreturn]] void fail(int line, const std::string& msg) const {
    throw Error(ErrorKind::Usage, line > 0 ? fmt::format("line {}: {}", line, msg) : msg, file);
  }
  // An unknown key or undeclared parameter: an error, or a warning with --lenient.
  void unknown(int line, const std::string& msg) const {
    if (!lenient) fail(line, msg + " (--lenient turns this into a warning)");
    warnings->push_back(fmt::format("{}: line {}: {} (ignored: --lenient)", file, line, msg));
  }

  static std::string suggestion(std::string_view word, const std::vector<std::string>& candidates) {
    auto c = closest(word, candidates);
    return c ? fmt::format(" (did you mean {}?)", *c) : std::string();
  }

  // The pairs of a mapping, with duplicate keys rejected (yaml-cpp keeps both silently) and every
  // key checked against `allowed`. Returns the accepted pairs in written order.
  std::vector<std::pair<std::string, YAML::Node>> mapping(const YAML::Node& n,
                                                          const std::string& where,
                                                          const std::vector<std::string>& allowed,
                                                          const std::string& hint = {}) const {
    if (!n.IsMap())
      fail(line_of(n), where + " must be a mapping" + (hint.empty() ? "" : ": " + hint));
    std::vector<std::pair<std::string, YAML::Node>> out;
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      const YAML::Node k = it->first;
      if (!k.IsScalar()) fail(line_of(k), "keys of " + where + " must be plain names");
      const std::string key = k.Scalar();
      if (!seen.insert(key).second)
        fail(line_of(k),
             fmt::format("duplicate key '{}' in {} (mergekit silently keeps one of them)", key,
                         where));
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        unknown(line_of(k), fmt::format("unknown key '{}' in {}{}; allowed here: {}", key, where,
                                        suggestion(key, allowed), fmt::join(allowed, ", ")));
        continue;
      }
      out.emplace_back(key, it->second);
    }
    return out;
  }

  std::string string(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar() || (n.Tag() != "!" && n.Scalar().empty()))
      fail(line_of(n), fmt::format("'{}' must be a string", key));
    return n.Scalar();
  }

  // A number as YAML writes it: plain scalars only (a quoted "0.5" is a string); true/false are
  // 1 and 0 as in mergekit.
  double number(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar() || n.Tag() == "!")
      fail(line_of(n), fmt::format("'{}' must be a number, not {}", key, describe(n)));
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return 1.0;
    if (s == "false" || s == "False" || s == "FALSE") return 0.0;
    double v = 0;
    if (!YAML::convert<double>::decode(n, v) || s.empty())
      fail(line_of(n), fmt::format("'{}' must be a number, not '{}'", key, s));
    if (!std::isfinite(v)) fail(line_of(n), fmt::format("'{}' must be finite, not '{}'", key, s));
    return v;
  }

  int64_t integer(const YAML::Node& n, const std::string& key, int64_t lo, int64_t hi) const {
    if (!n.IsScalar() || n.Tag() == "!")
      fail(line_of(n), fmt::format("'{}' must be an integer, not {}", key, describe(n)));
    const std::string& s = n.Scalar();
    size_t pos = 0;
    long long v = 0;
    try {
      v = std::stoll(s, &pos, 10);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos == 0 || pos != s.size())
      fail(line_of(n), fmt::format("'{}' must be an integer, not '{}'", key, s));
    if (v < lo || v > hi)
      fail(line_of(n), fmt::format("'{}' = {} is out of range [{}, {}]", key, v, lo, hi));
    return v;
  }

  static std::string describe(const YAML::Node& n) {
    if (n.IsMap()) return "a mapping";
    if (n.IsSequence()) return "a list";
    if (n.IsNull()) return "empty";
    return "'" + n.Scalar() + "'";
  }

  ModelRef model_ref(const YAML::Node& n, const std::string& key) const {
    if (n.IsMap())
      fail(line_of(n), fmt::format("'{}': the mapping form of a model reference ({{model, lora, "
                                   "override_architecture}}) "
                                   "is not supported; write the local directory as a string",
                                   key));
    ModelRef r{string(n, key), line_of(n), {}};
    std::error_code ec;
    if (!std::filesystem::exists(r.path, ec)) {
      // base+adapter: the first '+' whose left side is an existing directory splits them.
      for (size_t at = r.path.find('+'); at != std::string::npos; at = r.path.find('+', at + 1)) {
        const std::string left = r.path.substr(0, at);
        if (!left.empty() && std::filesystem::is_directory(left, ec)) {
          r.lora = r.path.substr(at + 1);
          r.path = left;
          break;
        }
      }
      if (!r.lora.empty()) {
        if (r.lora.find('@') != std::string::npos && !std::filesystem::exists(r.lora, ec))
          fail(r.line, fmt::format("'{}: {}': revisions (lora@rev) are not supported: only local "
                                   "directories are; download that revision into a directory and "
                                   "name it",
                                   key, r.text()));
        return r;
      }
      if (r.path.find('@') != std::string::npos)
        fail(r.line, fmt::format("'{}: {}': revisions (path@rev) are not supported: only local "
                                 "directories are; download "
                                 "that revision into a directory and name it",
                                 key, r.path));
    }
    return r;
  }

  // --- parameters (MERGE.md §1.2) ---

  void check_value(double v, const ParamSpec& spec, int line) const {
    if (spec.kind == ParamSpec::Kind::Integer && v != std::floor(v))
      fail(line, fmt::format("parameter '{}' must be an integer, not {}", spec.name, v));
    if (spec.kind == ParamSpec::Kind::Bool && v != 0.0 && v != 1.0)
      fail(line,
           fmt::format("parameter '{}' is a boolean: write true or false, not {}", spec.name, v));
    if (!spec.in_range(v))
      fail(line, fmt::format("parameter '{}' = {} is out of range {}", spec.name, v,
                             util::range_text(spec)));
  }

  Setting setting(const YAML::Node& n, const ParamSpec& spec) const {
    Setting s;
    if (n.IsScalar()) {
      s.values.push_back(number(n, spec.name));
      check_value(s.values[0], spec, line_of(n));
      return s;
    }
    if (!n.IsSequence())
      fail(line_of(n),
           fmt::format("parameter '{}': a value must be a number or a list of numbers", spec.name));
    if (n.size() == 0)
      fail(line_of(n), fmt::format("parameter '{}': an empty gradient has no value", spec.name));
    s.gradient = true;
    for (const auto& e : n) {
      if (!e.IsScalar())
        fail(line_of(e), fmt::format("parameter '{}': gradient entries must be numbers, not {}",
                                     spec.name, describe(e)));
      s.values.push_back(number(e, spec.name));
      check_value(s.values.back(), spec, line_of(e));
    }
    return s;
  }

  ParamValue param_value(const YAML::Node& n, const ParamSpec& spec) const {
    ParamValue v;
    v.line = line_of(n);
    if (n.IsMap())
      fail(v.line, fmt::format("parameter '{}': a bare {{filter, value}} mapping is not a "
                               "condition list (mergekit fails "
                               "late on it); write it as a list: `{}: [{{filter: ..., value: "
                               "...}}, {{value: ...}}]`",
                               spec.name, spec.name));
    if (n.IsNull()) fail(v.line, fmt::format("parameter '{}' has no value", spec.name));
    if (n.IsScalar()) {
      v.kind = ParamValue::Kind::Scalar;
      v.direct = setting(n, spec);
      return v;
    }
    bool any_map = false, any_other = false;
    for (const auto& e : n) (e.IsMap() ? any_map : any_other) = true;
    if (any_map && any_other)
      fail(v.line, fmt::format("parameter '{}': a list is either a gradient of numbers or a list "
                               "of {{filter, value}} "
                               "conditions, not both",
                               spec.name));
    if (!any_map) {
      v.kind = ParamValue::Kind::Gradient;
      v.direct = setting(n, spec);
      return v;
    }
    v.kind = ParamValue::Kind::Conditions;
    for (const auto& e : n) {
      Condition c;
      c.line = line_of(e);
      bool have_value = false;
      for (auto& [k, x] : mapping(e, fmt::format("a condition of parameter '{}'", spec.name),
                                  {"filter", "value"})) {
        if (k == "filter") {
          c.filter = string(x, "filter");
        } else {
          if (x.IsMap())
            fail(line_of(x),
                 fmt::format("parameter '{}': a condition's value is a number or a gradient",
                             spec.name));
          c.value = setting(x, spec);
          have_value = true;
        }
      }
      if (!have_value)
        fail(c.line, fmt::format("parameter '{}': every condition needs a 'value'", spec.name));
      v.conditions.push_back(std::move(c));
    }
    return v;
  }

  enum class Level { Top, Slice, Model };

  Params params(const YAML::Node& n, Level level, const std::string& where) const {
    Params out;
    if (!n.IsMap()) fail(line_of(n), where + " must be a mapping of parameter names to values");
    std::vector<std::string> declared, all_known;
    for (const auto& p : method->info().params) declared.push_back(p.name);
    for (const auto* m : all_methods())
      for (const auto& p : m->info().params) all_known.push_back(p.name);
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      const YAML::Node k = it->first;
      if (!k.IsScalar()) fail(line_of(k), "parameter names must be plain names");
      const std::string name = k.Scalar();
      const int line = line_of(k);
      if (!seen.insert(name).second)
        fail(line, fmt::format("duplicate parameter '{}' in {}", name, where));
      const ParamSpec* spec = nullptr;
      for (const auto& p : method->info().params)
        if (p.name == name) spec = &p;
      const std::string takes = declared.empty()
                                    ? "it takes no parameters"
                                    : fmt::format("it takes: {}", fmt::join(declared, ", "));
      if (!spec) {
        if (std::find(all_known.begin(), all_known.end(), name) != all_known.end())
          unknown(line,
                  fmt::format("parameter '{}' is not used by {} ({}); mergekit ignores it silently",
                              name, method->info().name, takes));
        else
          unknown(line, fmt::format("unknown parameter '{}' for {}{}; {}", name,
                                    method->info().name, suggestion(name, declared), takes));
        continue;
      }
      if (level == Level::Model && !spec->per_model)
        fail(line, fmt::format("'{}' is a global parameter of {}: mergekit ignores it under a "
                               "model; move it to the "
                               "top-level (or slice) parameters",
                               name, method->info().name));
      out.emplace_back(name, param_value(it->second, *spec));
    }
    return out;
  }

  // --- deltaedit extension blocks (MERGE.md §0) ---

  std::vector<std::string> model_extension(const YAML::Node& n) const {
    std::vector<std::string> ops;
    for (auto& [k, v] : mapping(n, "a model's deltaedit block", {"ops"})) {
      if (!v.IsSequence())
        fail(line_of(v), "deltaedit.ops must be a list of op specs, e.g. [\"dare:p=0.9\"]");
      for (const auto& e : v) {
        const std::string spec = string(e, "deltaedit.ops");
        try {
          auto op = edit::make_op(edit::parse_op_spec(spec));
          if (op->needs_grad())
            fail(line_of(e),
                 fmt::format("op '{}' needs gradients, which merging does not provide", spec));
        } catch (const Error& err) {
          if (err.file() == file) throw;
          fail(line_of(e), fmt::format("deltaedit.ops: {}", err.what()));
        }
        ops.push_back(spec);
      }
      if (!method->info().needs_base && !method->info().optional_base)
        fail(line_of(v),
             fmt::format("deltaedit.ops edit task vectors, and {} does not use a base model",
                         method->info().name));
    }
    return ops;
  }

  void top_extension(const YAML::Node& n, MergeConfig& c) const {
    for (auto& [k, v] :
         mapping(n, "the top-level deltaedit block", {"conventions", "trim", "seed"})) {
      if (k == "conventions") {
        const std::string s = string(v, k);
        if (s == "mergekit")
          c.conventions = Conventions::Mergekit;
        else if (s == "paper")
          c.conventions = Conventions::Paper;
        else
          fail(line_of(v),
               fmt::format("deltaedit.conventions must be mergekit or paper, not '{}'{}", s,
                           suggestion(s, {"mergekit", "paper"})));
      } else if (k == "trim") {
        const std::string s = string(v, k);
        if (s == "tensor")
          c.trim = Trim::Tensor;
        else if (s == "model")
          c.trim = Trim::Model;
        else
          fail(line_of(v), fmt::format("deltaedit.trim must be tensor or model, not '{}'{}", s,
                                       suggestion(s, {"tensor", "model"})));
      } else {
        c.seed = uint64_t(integer(v, "deltaedit.seed", 0, INT64_MAX));
        c.seed_line = line_of(v);
      }
    }
  }

  std::optional<io::DType> dtype(const YAML::Node& n, const std::string& key) const {
    const std::string s = string(n, key);
    auto d = parse_torch_dtype(s);
    if (d) return d;
    std::string base = s.rfind("torch.", 0) == 0 ? s.substr(6) : s;
    if (base == "int64")
      fail(
          line_of(n),
          fmt::format(
              "{}: int64 is not a floating dtype; merging computes in bfloat16, float16 or float32",
              key));
    fail(line_of(n), fmt::format("{}: unknown dtype '{}'{}; use bfloat16, float16 or float32", key,
                                 s, suggestion(base, {"bfloat16", "float16", "float32"})));
  }

  SourceConfig model_entry(const YAML::Node& n, bool in_slice, size_t index) const {
    SourceConfig s;
    s.line = line_of(n);
    const std::string where =
        in_slice ? fmt::format("slice source {}", index) : fmt::format("models[{}]", index);
    std::vector<std::string> allowed = {"model", "parameters", "deltaedit"};
    if (in_slice) allowed.insert(allowed.begin() + 1, "layer_range");
    bool have_model = false;
    std::optional<YAML::Node> params_node, ext_node;
    for (auto& [k, v] : mapping(n, where, allowed, "write `- model: PATH`")) {
      if (k == "model") {
        s.model = model_ref(v, "model");
        have_model = true;
      } else if (k == "layer_range") {
        if (!v.IsSequence() || v.size() != 2)
          fail(line_of(v), "layer_range must be [start, end) with two integers, e.g. [0, 16]");
        const int64_t a = integer(v[0], "layer_range start", 0, 1 << 24),
                      b = integer(v[1], "layer_range end", 0, 1 << 24);
        if (b <= a)
          fail(line_of(v),
               fmt::format("layer_range [{}, {}) is empty: end must exceed start", a, b));
        s.layer_range = {a, b};
      } else if (k == "parameters") {
        params_node = v;
      } else {
        ext_node = v;
      }
    }
    if (!have_model) fail(s.line, where + " needs 'model: PATH'");
    if (in_slice && !s.layer_range) fail(s.line, where + " needs 'layer_range: [start, end)'");
    if (params_node) s.params = params(*params_node, Level::Model, where + " parameters");
    if (ext_node) s.ops = model_extension(*ext_node);
    return s;
  }

  void check_depth(std::string_view text) const {
    int depth = 0, line = 1;
    char quote = 0;
    bool comment = false;
    for (char ch : text) {
      if (ch == '\n') {
        ++line;
        comment = false;
        if (quote == 0) continue;
      }
      if (comment) continue;
      if (quote) {
        if (ch == quote) quote = 0;
        continue;
      }
      if (ch == '#')
        comment = true;
      else if (ch == '"' || ch == '\'')
        quote = ch;
      else if (ch == '[' || ch == '{') {
        if (++depth > kMaxFlowDepth)
          fail(line, fmt::format("nesting deeper than {} levels", kMaxFlowDepth));
      } else if ((ch == ']' || ch == '}') && depth > 0) {
        --depth;
      }
    }
  }
};

}  // namespace

const ParamValue* find_param(const Params& p, std::string_view name) {
  for (const auto& [k, v] : p)
    if (k == name) return &v;
  return nullptr;
}

std::optional<io::DType> parse_torch_dtype(std::string_view s) {
  if (s.rfind("torch.", 0) == 0) s.remove_prefix(6);
  if (s == "bfloat16") return io::DType::BF16;
  if (s == "float16") return io::DType::F16;
  if (s == "float32") return io::DType::F32;
  return std::nullopt;
}

const char* torch_dtype_name(io::DType d) {
  switch (d) {
    case io::DType::BF16:
      return "bfloat16";
    case io::DType::F16:
      return "float16";
    case io::DType::F32:
      return "float32";
    case io::DType::F64:
      return "float64";
    default:
      return "";
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::optional<std::string> closest(std::string_view word,
                                   const std::vector<std::string>& candidates) {
  // Within half the longer word (at least 2): catches typos and abbreviations (bf16 → bfloat16).
  std::optional<std::string> best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d <= std::max<size_t>(2, std::max(word.size(), c.size()) / 2) && d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

MergeConfig parse_merge_config(std::string_view text, const std::string& file,
                               const ParseOptions& opt) {
  MergeConfig c;
  c.text = std::string(text);
  c.file = file;
  Parser p{file, opt.lenient, &c.warnings, nullptr};
  if (text.size() > kMaxConfigBytes) p.fail(0, "the merge config is larger than 16 MB");
  p.check_depth(text);
  YAML::Node root;
  try {
    root = YAML::Load(c.text);
  } catch (const YAML::Exception& e) {
    p.fail(e.mark.line >= 0 ? e.mark.line + 1 : 0, "invalid YAML: " + e.msg);
  }
  try {
    if (root.IsNull())
      p.fail(0, "the merge config is empty; see `deltaedit merge --help` for an example");
    const std::vector<std::string> top_keys = {
        "merge_method",  "models",      "slices",    "modules",          "base_model",
        "parameters",    "dtype",       "out_dtype", "tokenizer_source", "tokenizer",
        "chat_template", "random_seed", "deltaedit"};
    auto entries = p.mapping(root, "the top level", top_keys);
    std::map<std::string, YAML::Node> top;
    for (auto& [k, v] : entries) top.emplace(k, v);

    // The method first: it declares the parameters every level is checked against.
    auto mm = top.find("merge_method");
    if (mm == top.end())
      p.fail(line_of(root), "merge_method is required (see `deltaedit merge --methods`)");
    c.method_name = p.string(mm->second, "merge_method");
    c.method_line = line_of(mm->second);
    c.method = find_method(c.method_name);
    if (!c.method) {
      std::vector<std::string> names;
      for (const auto* m : all_methods()) names.push_back(m->info().name);
      p.fail(c.method_line,
             fmt::format("unknown merge_method '{}'{}; the methods are: {}", c.method_name,
                         Parser::suggestion(c.method_name, names), fmt::join(names, ", ")));
    }
    p.method = c.method;

    const int kinds =
        int(top.count("models")) + int(top.count("slices")) + int(top.count("modules"));
    if (kinds == 0)
      p.fail(line_of(root),
             "the config needs `models:` (or `slices:`) listing the models to merge");
    if (kinds > 1) p.fail(line_of(root), "write exactly one of models:, slices: and modules:");
    if (top.count("modules"))
      p.fail(line_of(top["modules"]),
             "modules: (multi-module architectures) is not supported yet; use models: or slices:");
    if (top.count("tokenizer") && top.count("tokenizer_source"))
      p.fail(line_of(top["tokenizer_source"]),
             "write either tokenizer: or tokenizer_source:, not both (mergekit refuses both)");
    if (top.count("chat_template"))
      p.fail(line_of(top["chat_template"]),
             "chat_template is not supported yet; leave it out (the donor's tokenizer files, chat "
             "template included, are "
             "copied)");

    for (auto& [k, v] : entries) {
      if (k == "base_model") {
        c.base_model = p.model_ref(v, "base_model");
      } else if (k == "dtype") {
        c.dtype = p.dtype(v, "dtype");
      } else if (k == "out_dtype") {
        c.out_dtype = p.dtype(v, "out_dtype");
      } else if (k == "tokenizer_source") {
        if (!v.IsScalar())
          p.fail(line_of(v),
                 "tokenizer_source must be `base` or the path of one of the merged models");
        const std::string s = v.Scalar();
        if (s == "union")
          p.fail(line_of(v),
                 "tokenizer_source: union is not supported yet; use `base` or the path of one of "
                 "the merged models");
        if (s == "base") {
          c.tokenizer_is_base = true;
          c.tokenizer_source = ModelRef{s, line_of(v), {}};
        } else {
          c.tokenizer_source = p.model_ref(v, "tokenizer_source");
        }
      } else if (k == "tokenizer") {
        // MERGE.md §1.1: {source (default union), tokens, pad_to_multiple_of}. A source that is
        // `base` or a merged model, without tokens or padding, is tokenizer_source.
        std::optional<ModelRef> source;
        bool is_base = false;
        for (auto& [tk, tv] :
             p.mapping(v, "the tokenizer block", {"source", "tokens", "pad_to_multiple_of"})) {
          if (tk == "tokens")
            p.fail(line_of(tv),
                   "tokenizer.tokens (per-token embedding sources) is not supported yet; leave it "
                   "out to keep every model's own rows");
          if (tk == "pad_to_multiple_of")
            p.fail(line_of(tv),
                   "tokenizer.pad_to_multiple_of (padding the embedding rows) is not supported "
                   "yet; leave it out");
          if (!tv.IsScalar())
            p.fail(line_of(tv),
                   "tokenizer.source must be `base` or the path of one of the merged models");
          if (tv.Scalar() == "base") {
            is_base = true;
            source = ModelRef{"base", line_of(tv), {}};
          } else if (tv.Scalar() != "union") {
            source = p.model_ref(tv, "tokenizer.source");
          }
        }
        if (!source)
          p.fail(line_of(v),
                 "the tokenizer block's source is union (its default), which is not supported "
                 "yet; write `source: base` or `source: PATH` of one of the merged models");
        c.tokenizer_source = source;
        c.tokenizer_is_base = is_base;
      } else if (k == "random_seed") {
        if (!c.seed) {
          c.seed = uint64_t(p.integer(v, "random_seed", 0, INT64_MAX));
          c.seed_line = line_of(v);
        }
      } else if (k == "deltaedit") {
        const auto had = c.seed;
        c.seed.reset();
        p.top_extension(v, c);
        if (!c.seed) c.seed = had;
      }
    }
    if (auto it = top.find("parameters"); it != top.end()) {
      c.params_line = line_of(it->second);
      c.params = p.params(it->second, Parser::Level::Top, "the top-level parameters");
    }
    if (auto it = top.find("models"); it != top.end()) {
      if (!it->second.IsSequence() || it->second.size() == 0)
        p.fail(line_of(it->second), "models: must be a non-empty list of `- model: PATH` entries");
      size_t i = 0;
      for (const auto& m : it->second) c.models.push_back(p.model_entry(m, false, i++));
    }
    if (auto it = top.find("slices"); it != top.end()) {
      c.uses_slices = true;
      if (!it->second.IsSequence() || it->second.size() == 0)
        p.fail(line_of(it->second),
               "slices: must be a non-empty list of `- sources: [...]` entries");
      size_t si = 0;
      for (const auto& sn : it->second) {
        SliceConfig s;
        s.line = line_of(sn);
        const std::string where = fmt::format("slices[{}]", si);
        bool have_sources = false;
        std::optional<YAML::Node> params_node;
        for (auto& [k, v] :
             p.mapping(sn, where, {"sources", "base_model", "parameters", "residual_weight"})) {
          if (k == "sources") {
            if (!v.IsSequence() || v.size() == 0)
              p.fail(line_of(v), where + ".sources must be a non-empty list");
            size_t j = 0;
            for (const auto& src : v) s.sources.push_back(p.model_entry(src, true, j++));
            have_sources = true;
          } else if (k == "base_model") {
            s.base_model = p.model_ref(v, "base_model");
          } else if (k == "parameters") {
            params_node = v;
          } else {
            p.fail(line_of(v), "residual_weight is parsed by mergekit but never used; remove it");
          }
        }
        if (!have_sources) p.fail(s.line, where + " needs 'sources:'");
        if (params_node)
          s.params = p.params(*params_node, Parser::Level::Slice, where + " parameters");
        c.slices.push_back(std::move(s));
        ++si;
      }
    }
  } catch (const YAML::Exception& e) {
    p.fail(e.mark.line >= 0 ? e.mark.line + 1 : 0, "invalid YAML: " + e.msg);
  }
  return c;
}

}  // namespace deltaedit::merge
