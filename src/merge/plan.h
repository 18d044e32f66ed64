// The merge plan (MERGE.md §0 "Validation before any tensor is read", §1.3, §4.3, §4.4): every
// model's config.json and safetensors headers are opened and checked, then every output tensor is
// planned with its sources, evaluated parameters and the §5 surprises that apply to it. No tensor
// data is read here.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/tensor_source.h"
#include "merge/config.h"

namespace deltaedit::merge {

struct PlanModel {
  std::string path;  // as written in the config (path, or path+lora)
  int line = 0;      // where it is first named
  std::string dir, lora;  // the model directory, and the PEFT adapter applied to it (if any)
  std::unique_ptr<io::Checkpoint> base_checkpoint;  // dir, when an adapter is applied to it
  // The model's tensors: the checkpoint in dir, or W = W_dir + scaling·B·A per adapted tensor.
  std::unique_ptr<io::TensorSource> checkpoint;
};

// One input tensor of one output tensor.
struct PlanSource {
  size_t model = 0;            // index into MergePlan::models (config order: keys the RNG)
  std::string tensor;          // input tensor name
  std::vector<int64_t> shape;  // as stored; cropped to PlanTensor::shape when they differ
  std::map<std::string, double> params;  // per-model parameters evaluated for this tensor
  bool tied = false;                     // lm_head taken from this model's embed_tokens (§4.4)
};

struct PlanTensor {
  std::string name;            // output name (layers renumbered across slices)
  std::vector<int64_t> shape;  // output shape
  io::DType out_dtype = io::DType::F32;
  io::DType work = io::DType::F32;  // W: F32, BF16 or F16
  bool is_embed = false, layer = false;
  double t = 0;  // position used by gradients (§1.3)
  size_t slice = 0;
  std::optional<PlanSource> base;
  std::vector<PlanSource> models;  // the method's non-base inputs, config order
  std::map<std::string, double> global;
  std::vector<std::string> notes;  // §5 surprises that apply to this tensor
  uint64_t numel() const;
  uint64_t nbytes() const;
};

struct MergePlan {
  MergeConfig config;
  const Method* method = nullptr;
  std::vector<PlanModel> models;
  std::optional<size_t> base;       // the top-level base model, if any
  size_t donor = 0;                 // config.json and tokenizer donor: base, else first model
  size_t tokenizer_model = 0;       // whose tokenizer files are copied
  std::vector<PlanTensor> tensors;  // sorted by output name
  int64_t output_layers = 0;
  bool layers_renumbered = false;  // slices: the layer count key is rewritten
  uint64_t seed = 0;
  std::vector<std::string> warnings;
  uint64_t output_bytes() const;
  // Bytes of f32 buffers one worker holds for the largest buffered tensor ((N + 2) × numel × 4).
  uint64_t largest_tensor_need() const;
  nlohmann::json to_json() const;
};

struct PlanOptions {
  std::optional<uint64_t> seed;  // --seed: wins over the config's
};

// The identity of a model reference: its canonical directory (and canonical adapter directory), so
// that two spellings of one model are one model of the plan.
std::string model_key(const ModelRef& r);

// Throws Error(Usage) (exit 2) for config problems — wrong model counts, mismatched architectures,
// layer counts, tensor names or shapes, missing required parameters — naming the YAML line, and
// Error(Io/Format) (exit 1) for missing directories and unreadable files.
MergePlan build_plan(MergeConfig config, const PlanOptions& opt = {});

}  // namespace deltaedit::merge
