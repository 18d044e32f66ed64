// mergekit's YAML merge configuration (MERGE.md §1), parsed strictly: every key is checked at
// every level against §1.1 and the method's declared parameters; duplicate keys, wrong types and
// out-of-range values are errors naming the key and its YAML line (MERGE.md §0 "Strict parsing").
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/dtype.h"
#include "merge/method.h"

namespace deltaedit::merge {

// A scalar (one value) or a layer gradient (two or more values, or a list of one).
struct Setting {
  std::vector<double> values;
  bool gradient = false;
};

// One entry of a condition list: `{filter?, value}`; no filter (or "*") matches every tensor.
struct Condition {
  std::optional<std::string> filter;
  Setting value;
  int line = 0;
};

// A parameter as written: a scalar, a gradient, or a first-match condition list (MERGE.md §1.2).
struct ParamValue {
  enum class Kind { Scalar, Gradient, Conditions } kind = Kind::Scalar;
  Setting direct;                     // Scalar, Gradient
  std::vector<Condition> conditions;  // Conditions
  int line = 0;
};

// Parameters of one level, in written order (names are unique: duplicates are rejected).
using Params = std::vector<std::pair<std::string, ParamValue>>;
const ParamValue* find_param(const Params& p, std::string_view name);

// A model reference: a local directory (MERGE.md §1.1 "model ref"; hub names and LoRA are refused).
struct ModelRef {
  std::string path;  // the model directory (the base of `lora` when one is named)
  int line = 0;
  std::string lora;  // `path+lora`: a PEFT adapter directory applied to path (io/peft.h)
  // As written: path, or path+lora.
  std::string text() const { return lora.empty() ? path : path + "+" + lora; }
};

struct SourceConfig {
  ModelRef model;
  std::optional<std::pair<int64_t, int64_t>> layer_range;  // [start, end); slices only
  Params params;
  std::vector<std::string> ops;  // deltaedit: {ops: [...]} — edit op specs applied to τ_i
  int line = 0;
};

struct SliceConfig {
  std::vector<SourceConfig> sources;
  std::optional<ModelRef> base_model;  // overrides the top-level base for this slice
  Params params;
  int line = 0;
};

enum class Trim { Tensor, Model };

struct MergeConfig {
  std::string text;  // the YAML as given (recorded in provenance and the model card)
  std::string file;  // where it came from (error messages)
  std::string method_name;
  const Method* method = nullptr;
  int method_line = 0;
  bool uses_slices = false;          // `slices:`; otherwise `models:` (one slice, no ranges)
  std::vector<SourceConfig> models;  // `models:`
  std::vector<SliceConfig> slices;   // `slices:`
  std::optional<ModelRef> base_model;
  Params params;  // top-level `parameters`
  int params_line = 0;
  std::optional<io::DType> dtype, out_dtype;
  // `tokenizer_source`: "base" or a model path; unset keeps the donor's tokenizer files.
  std::optional<ModelRef> tokenizer_source;
  bool tokenizer_is_base = false;
  Conventions conventions = Conventions::Mergekit;
  Trim trim = Trim::Tensor;
  std::optional<uint64_t> seed;  // deltaedit.seed, else random_seed
  int seed_line = 0;
  std::vector<std::string> warnings;  // --lenient downgrades, accepted-but-ignored keys
};

struct ParseOptions {
  bool lenient = false;  // unknown keys and undeclared parameters warn instead of failing
};

// Throws Error(Usage) naming `file`, the key and its line for every violation.
MergeConfig parse_merge_config(std::string_view text, const std::string& file,
                               const ParseOptions& opt = {});

// mergekit dtype names: bfloat16, float16, float32 (optionally `torch.`-prefixed). int64 is a
// legal mergekit name but cannot be merged: reported as such. nullopt for anything else.
std::optional<io::DType> parse_torch_dtype(std::string_view s);
const char* torch_dtype_name(io::DType d);

// Levenshtein distance, and the closest candidate within a small distance ("did you mean X?").
size_t edit_distance(std::string_view a, std::string_view b);
std::optional<std::string> closest(std::string_view word,
                                   const std::vector<std::string>& candidates);

}  // namespace deltaedit::merge
