#include "model/transformer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "io/convert.h"
#include "util/error.h"

namespace deltaedit::model {
namespace {

constexpr const char* kSupportedArchs =
    "LlamaForCausalLM (llama), MistralForCausalLM (mistral), Qwen2ForCausalLM (qwen2), "
    "Qwen3ForCausalLM (qwen3)";
constexpr const char* kSupportedRope = "default, linear, llama3";

[[noreturn]] void unsupported(const std::string& what) { throw Error(ErrorKind::Unsupported, what); }
[[noreturn]] void bad_config(const std::string& what) { throw Error(ErrorKind::Format, "config: " + what); }

std::optional<Family> family_from_arch(const std::string& a) {
  if (a == "LlamaForCausalLM") return Family::Llama;
  if (a == "MistralForCausalLM") return Family::Mistral;
  if (a == "Qwen2ForCausalLM") return Family::Qwen2;
  if (a == "Qwen3ForCausalLM") return Family::Qwen3;
  return std::nullopt;
}
std::optional<Family> family_from_type(const std::string& t) {
  if (t == "llama") return Family::Llama;
  if (t == "mistral") return Family::Mistral;
  if (t == "qwen2") return Family::Qwen2;
  if (t == "qwen3") return Family::Qwen3;
  return std::nullopt;
}

std::string shape_str(c10::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// x * rsqrt(mean(x²) + eps) in f32, cast back to x's dtype, then scaled by the weight.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto xf = x.to(torch::kFloat32);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  xf = xf * torch::rsqrt(var + eps);
  return w * xf.to(x.scalar_type());
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor* b) {
  return b ? torch::linear(x, w, *b) : torch::linear(x, w);
}

// [x1, x2] -> [-x2, x1] over the last dimension.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) throw Error(ErrorKind::Usage, "thread count must be at least 1");
  torch::set_num_threads(n);
}
int num_threads() { return torch::get_num_threads(); }

const char* family_name(Family f) {
  switch (f) {
    case Family::Llama: return "llama";
    case Family::Mistral: return "mistral";
    case Family::Qwen2: return "qwen2";
    case Family::Qwen3: return "qwen3";
  }
  return "?";
}

ArchSpec resolve_arch(const io::ModelConfig& c) {
  ArchSpec a;
  std::optional<Family> fam;
  if (!c.architecture.empty()) {
    fam = family_from_arch(c.architecture);
    if (!fam) unsupported("architecture '" + c.architecture + "' is not supported; supported: " + kSupportedArchs);
  } else {
    fam = family_from_type(c.model_type);
    if (!fam)
      unsupported("model_type '" + c.model_type + "' is not supported; supported: " + kSupportedArchs);
  }
  a.family = *fam;
  if (c.hidden_act != "silu" && c.hidden_act != "swish")
    unsupported("hidden_act '" + c.hidden_act + "' is not supported; supported: silu");
  const auto& raw = c.raw;
  if (auto it = raw.find("partial_rotary_factor"); it != raw.end() && it->is_number() && it->get<double>() != 1.0)
    unsupported("partial_rotary_factor other than 1 is not supported");
  for (const char* k : {"attn_logit_softcapping", "final_logit_softcapping"})
    if (auto it = raw.find(k); it != raw.end() && !it->is_null())
      unsupported(std::string(k) + " is not supported");

  a.hidden = c.hidden_size;
  a.intermediate = c.intermediate_size;
  a.layers = c.num_hidden_layers;
  a.heads = c.num_attention_heads;
  a.kv_heads = c.num_key_value_heads;
  a.head_dim = c.head_dim;
  a.vocab = c.vocab_size;
  a.rms_eps = c.rms_norm_eps;
  a.tied = c.tie_word_embeddings;
  const std::initializer_list<std::pair<int64_t, const char*>> sizes = {
      {a.hidden, "hidden_size"},         {a.intermediate, "intermediate_size"},
      {a.layers, "num_hidden_layers"},   {a.heads, "num_attention_heads"},
      {a.kv_heads, "num_key_value_heads"}, {a.head_dim, "head_dim"},
      {a.vocab, "vocab_size"}};
  for (const auto& [v, n] : sizes)
    if (v <= 0) bad_config(std::string(n) + " must be positive");
  if (a.heads % a.kv_heads != 0)
    bad_config(fmt::format("num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", a.heads,
                           a.kv_heads));
  if (a.head_dim % 2 != 0) bad_config("head_dim must be even for rotary embeddings");
  if (!(a.rms_eps > 0)) bad_config("rms_norm_eps must be positive");

  switch (a.family) {
    case Family::Llama:
      a.qkv_bias = a.o_bias = c.attention_bias;
      a.mlp_bias = c.mlp_bias;
      break;
    case Family::Mistral:
      a.qkv_bias = a.o_bias = c.attention_bias;
      break;
    case Family::Qwen2:
      a.qkv_bias = true;  // Qwen2 always has q/k/v biases, never an o_proj bias
      break;
    case Family::Qwen3:
      a.qkv_bias = a.o_bias = c.attention_bias;
      a.qk_norm = true;
      break;
  }

  a.rope = c.rope;
  if (a.rope.type != "default" && a.rope.type != "linear" && a.rope.type != "llama3")
    unsupported("rope type '" + a.rope.type + "' is not supported; supported: " + kSupportedRope);
  if (!(a.rope.theta > 0)) bad_config("rope_theta must be positive");
  if (a.rope.type != "default" && !(a.rope.factor > 0)) bad_config("rope factor must be positive");
  if (a.rope.type == "llama3") {
    if (a.rope.original_max_position_embeddings <= 0)
      bad_config("llama3 rope scaling needs original_max_position_embeddings");
    if (!(a.rope.high_freq_factor > a.rope.low_freq_factor) || !(a.rope.low_freq_factor > 0))
      bad_config("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor");
  }

  // Sliding-window attention, per layer.
  int64_t window = 0;
  if (auto it = raw.find("sliding_window"); it != raw.end() && it->is_number_integer()) window = it->get<int64_t>();
  a.window.assign(size_t(a.layers), 0);
  if (auto lt = raw.find("layer_types"); lt != raw.end() && !lt->is_null()) {
    if (!lt->is_array() || int64_t(lt->size()) != a.layers)
      bad_config("layer_types must list one type per layer");
    for (size_t i = 0; i < lt->size(); ++i) {
      const auto& t = (*lt)[i];
      if (!t.is_string()) bad_config("layer_types entries must be strings");
      const std::string s = t.get<std::string>();
      if (s == "sliding_attention")
        a.window[i] = c.sliding_window ? *c.sliding_window : 0;
      else if (s != "full_attention")
        unsupported("layer type '" + s + "' is not supported; supported: full_attention, sliding_attention");
    }
  } else if (a.family == Family::Mistral) {
    if (c.sliding_window) std::fill(a.window.begin(), a.window.end(), *c.sliding_window);
  } else if (a.family == Family::Qwen2 || a.family == Family::Qwen3) {
    bool use = false;
    if (auto it = raw.find("use_sliding_window"); it != raw.end() && it->is_boolean()) use = it->get<bool>();
    int64_t from = 28;
    if (auto it = raw.find("max_window_layers"); it != raw.end() && it->is_number_integer()) from = it->get<int64_t>();
    if (use && window > 0)
      for (int64_t i = from; i < a.layers; ++i) a.window[size_t(i)] = window;
  }
  for (int64_t w : a.window)
    if (w < 0) bad_config("sliding_window must be positive");
  return a;
}

torch::Tensor rope_inv_freq(const io::RopeConfig& rope, int64_t head_dim) {
  auto exps = torch::arange(0, head_dim, 2, torch::kLong).to(torch::kFloat32) / double(head_dim);
  auto inv = 1.0 / torch::pow(rope.theta, exps);
  if (rope.type == "linear") return inv / rope.factor;
  if (rope.type != "llama3") return inv;
  // Llama 3: wavelengths shorter than original_context / high_freq_factor are kept, those longer
  // than original_context / low_freq_factor are divided by `factor`, and the band between is a
  // linear blend of the two in (original_context / wavelength).
  const double ctx = double(rope.original_max_position_embeddings);
  const double low_wavelen = ctx / rope.low_freq_factor;
  const double high_wavelen = ctx / rope.high_freq_factor;
  auto wavelen = 2.0 * M_PI / inv;
  auto scaled = torch::where(wavelen > low_wavelen, inv / rope.factor, inv);
  auto smooth = (ctx / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  auto blended = (1.0 - smooth) * scaled / rope.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, blended, scaled);
}

// ---------------------------------------------------------------------------------------------

int Model::add_param(const std::string& name, std::vector<int64_t> shape) {
  const int i = int(names_.size());
  names_.push_back(name);
  shapes_.push_back(std::move(shape));
  by_name_.emplace(name, i);
  return i;
}

int Model::index(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) throw Error(ErrorKind::Usage, "the model has no such parameter", {}, std::string(name));
  return it->second;
}

Model Model::build(const io::ModelConfig& config, const LoadOptions& options) {
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kBFloat16)
    throw Error(ErrorKind::Unsupported, "model dtype must be float32 or bfloat16");
  Model m;
  m.config_ = config;
  m.arch_ = resolve_arch(config);
  m.options_ = options;
  const ArchSpec& a = m.arch_;
  const int64_t h = a.hidden, qd = a.heads * a.head_dim, kvd = a.kv_heads * a.head_dim, f = a.intermediate;
  m.embed_ = m.add_param("model.embed_tokens.weight", {a.vocab, h});
  m.layers_.resize(size_t(a.layers));
  for (int64_t l = 0; l < a.layers; ++l) {
    Layer& L = m.layers_[size_t(l)];
    const std::string pre = fmt::format("model.layers.{}.", l);
    L.input_norm = m.add_param(pre + "input_layernorm.weight", {h});
    L.q_w = m.add_param(pre + "self_attn.q_proj.weight", {qd, h});
    if (a.qkv_bias) L.q_b = m.add_param(pre + "self_attn.q_proj.bias", {qd});
    L.k_w = m.add_param(pre + "self_attn.k_proj.weight", {kvd, h});
    if (a.qkv_bias) L.k_b = m.add_param(pre + "self_attn.k_proj.bias", {kvd});
    L.v_w = m.add_param(pre + "self_attn.v_proj.weight", {kvd, h});
    if (a.qkv_bias) L.v_b = m.add_param(pre + "self_attn.v_proj.bias", {kvd});
    L.o_w = m.add_param(pre + "self_attn.o_proj.weight", {h, qd});
    if (a.o_bias) L.o_b = m.add_param(pre + "self_attn.o_proj.bias", {h});
    if (a.qk_norm) {
      L.q_norm = m.add_param(pre + "self_attn.q_norm.weight", {a.head_dim});
      L.k_norm = m.add_param(pre + "self_attn.k_norm.weight", {a.head_dim});
    }
    L.post_norm = m.add_param(pre + "post_attention_layernorm.weight", {h});
    L.gate_w = m.add_param(pre + "mlp.gate_proj.weight", {f, h});
    if (a.mlp_bias) L.gate_b = m.add_param(pre + "mlp.gate_proj.bias", {f});
    L.up_w = m.add_param(pre + "mlp.up_proj.weight", {f, h});
    if (a.mlp_bias) L.up_b = m.add_param(pre + "mlp.up_proj.bias", {f});
    L.down_w = m.add_param(pre + "mlp.down_proj.weight", {h, f});
    if (a.mlp_bias) L.down_b = m.add_param(pre + "mlp.down_proj.bias", {h});
  }
  m.final_norm_ = m.add_param("model.norm.weight", {h});
  if (!a.tied) m.lm_head_ = m.add_param("lm_head.weight", {a.vocab, h});
  m.params_.resize(m.names_.size());
  m.inv_freq_ = rope_inv_freq(a.rope, a.head_dim).to(options.device);
  return m;
}

Model Model::load(const io::TensorSource& ck, const LoadOptions& options) {
  const auto* file = dynamic_cast<const io::Checkpoint*>(&ck);
  const auto file_of = [&](const std::string& n) { return file ? file->file_of(n) : ck.path().string(); };
  if (!ck.config())
    throw Error(ErrorKind::Format, "checkpoint has no config.json; the model runtime needs one",
                ck.path().string());
  Model m = build(*ck.config(), options);
  // Tensors the checkpoint holds that the architecture does not use.
  for (const auto& n : ck.names()) {
    if (m.by_name_.count(n)) continue;
    if (n.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (n == "lm_head.weight" && m.arch_.tied) {
      m.warnings_.push_back("lm_head.weight is ignored: the config ties the head to model.embed_tokens.weight");
      continue;
    }
    throw Error(ErrorKind::Unsupported,
                fmt::format("tensor is not part of the {} architecture as configured", family_name(m.arch_.family)),
                file_of(n), n);
  }
  for (size_t i = 0; i < m.names_.size(); ++i) {
    const std::string& n = m.names_[i];
    if (!ck.contains(n))
      throw Error(ErrorKind::Format, "tensor missing from the checkpoint", ck.path().string(), n);
    const auto& info = ck.info(n);
    if (!io::is_compute_dtype(info.dtype))
      throw Error(ErrorKind::Unsupported,
                  "dtype " + std::string(io::dtype_name(info.dtype)) + " is not loadable (F16, BF16, F32, F64 are)",
                  file_of(n), n);
    if (info.shape != m.shapes_[i])
      throw Error(ErrorKind::Format,
                  "shape " + shape_str(info.shape) + " does not match the config's " + shape_str(m.shapes_[i]),
                  file_of(n), n);
    auto t = torch::empty(m.shapes_[i], torch::kFloat32);
    io::to_f32(ck.data(n), info.dtype, std::span<float>(t.data_ptr<float>(), size_t(t.numel())));
    ck.release(n);
    m.params_[i] = t.to(options.device, options.dtype);
  }
  return m;
}

Model Model::random(const io::ModelConfig& config, uint64_t seed, const LoadOptions& options) {
  Model m = build(config, options);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (size_t i = 0; i < m.names_.size(); ++i) {
    const std::string& n = m.names_[i];
    torch::Tensor t;
    if (n.find("norm.weight") != std::string::npos)
      t = torch::ones(m.shapes_[i], torch::kFloat32);
    else
      t = torch::randn(m.shapes_[i], gen, torch::kFloat32) * 0.02;
    m.params_[i] = t.to(options.device, options.dtype);
  }
  return m;
}

bool Model::has_param(std::string_view name) const { return by_name_.count(std::string(name)) != 0; }
torch::Tensor& Model::param(std::string_view name) { return params_[size_t(index(name))]; }
const torch::Tensor& Model::param(std::string_view name) const { return params_[size_t(index(name))]; }
int64_t Model::num_params() const {
  int64_t n = 0;
  for (const auto& t : params_) n += t.numel();
  return n;
}

void Model::set_requires_grad(bool on) {
  for (auto& t : params_) t.requires_grad_(on);
}
void Model::zero_grad() {
  for (auto& t : params_)
    if (t.grad().defined()) t.mutable_grad() = torch::Tensor();
}

void Model::add_(std::string_view name, const torch::Tensor& d, double t) {
  torch::NoGradGuard ng;
  auto& p = param(name);
  if (d.sizes() != p.sizes())
    throw Error(ErrorKind::Usage, "delta shape " + shape_str(d.sizes()) + " does not match " + shape_str(p.sizes()),
                {}, std::string(name));
  if (p.scalar_type() == torch::kFloat32) {
    p.add_(d.to(p.device(), torch::kFloat32), t);
  } else {
    p.copy_(p.to(torch::kFloat32).add_(d.to(p.device(), torch::kFloat32), t));
  }
}

void Model::set_(std::string_view name, const torch::Tensor& values) {
  torch::NoGradGuard ng;
  auto& p = param(name);
  if (values.sizes() != p.sizes())
    throw Error(ErrorKind::Usage,
                "value shape " + shape_str(values.sizes()) + " does not match " + shape_str(p.sizes()), {},
                std::string(name));
  p.copy_(values.to(p.device(), torch::kFloat32));
}

void Model::set_(std::string_view name, std::span<const float> values) {
  auto& p = param(name);
  if (int64_t(values.size()) != p.numel())
    throw Error(ErrorKind::Usage,
                fmt::format("{} values given for a parameter of {} elements", values.size(), p.numel()), {},
                std::string(name));
  auto cpu = torch::from_blob(const_cast<float*>(values.data()), p.sizes(), torch::kFloat32);
  set_(name, cpu);
}

std::unordered_map<std::string, torch::Tensor> Model::state() const {
  std::unordered_map<std::string, torch::Tensor> s;
  for (size_t i = 0; i < names_.size(); ++i) s.emplace(names_[i], params_[i].detach().clone());
  return s;
}

void Model::load_state(const std::unordered_map<std::string, torch::Tensor>& state) {
  for (const auto& [n, t] : state) set_(n, t);
}

// ---------------------------------------------------------------------------------------------

std::vector<std::pair<std::string, torch::Tensor LayerWeights::*>> layer_weight_names(const ArchSpec& a, int64_t l) {
  using W = LayerWeights;
  const std::string pre = fmt::format("model.layers.{}.", l);
  std::vector<std::pair<std::string, torch::Tensor W::*>> v;
  v.emplace_back(pre + "input_layernorm.weight", &W::input_norm);
  v.emplace_back(pre + "self_attn.q_proj.weight", &W::q_w);
  if (a.qkv_bias) v.emplace_back(pre + "self_attn.q_proj.bias", &W::q_b);
  v.emplace_back(pre + "self_attn.k_proj.weight", &W::k_w);
  if (a.qkv_bias) v.emplace_back(pre + "self_attn.k_proj.bias", &W::k_b);
  v.emplace_back(pre + "self_attn.v_proj.weight", &W::v_w);
  if (a.qkv_bias) v.emplace_back(pre + "self_attn.v_proj.bias", &W::v_b);
  v.emplace_back(pre + "self_attn.o_proj.weight", &W::o_w);
  if (a.o_bias) v.emplace_back(pre + "self_attn.o_proj.bias", &W::o_b);
  if (a.qk_norm) {
    v.emplace_back(pre + "self_attn.q_norm.weight", &W::q_norm);
    v.emplace_back(pre + "self_attn.k_norm.weight", &W::k_norm);
  }
  v.emplace_back(pre + "post_attention_layernorm.weight", &W::post_norm);
  v.emplace_back(pre + "mlp.gate_proj.weight", &W::gate_w);
  if (a.mlp_bias) v.emplace_back(pre + "mlp.gate_proj.bias", &W::gate_b);
  v.emplace_back(pre + "mlp.up_proj.weight", &W::up_w);
  if (a.mlp_bias) v.emplace_back(pre + "mlp.up_proj.bias", &W::up_b);
  v.emplace_back(pre + "mlp.down_proj.weight", &W::down_w);
  if (a.mlp_bias) v.emplace_back(pre + "mlp.down_proj.bias", &W::down_b);
  return v;
}

const torch::Tensor& PassTables::mask(int64_t window) {
  auto it = masks.find(window);
  if (it != masks.end()) return it->second;
  const int64_t Tk = past + T;
  auto m = causal;
  if (window > 0) m = m.logical_and((qidx - kidx) < window);
  m = m.view({1, 1, 1, T, Tk});
  if (key_valid.defined()) m = m.logical_and(key_valid.view({B, 1, 1, 1, Tk}));
  return masks.emplace(window, m).first->second;
}

PassTables pass_tables(const torch::Tensor& inv_freq, const torch::Tensor& positions, const torch::Tensor& key_valid,
                       int64_t B, int64_t T, int64_t past, torch::Device dev) {
  PassTables t;
  t.B = B;
  t.T = T;
  t.past = past;
  const int64_t Tk = past + T;
  // RoPE tables [B, 1, T, hd] in f32.
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);
  t.cos = emb.cos();
  t.sin = emb.sin();
  // Allowed (query, key) pairs by sequence index.
  t.qidx = torch::arange(past, Tk, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(1);
  t.kidx = torch::arange(0, Tk, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0);
  t.causal = t.kidx <= t.qidx;  // [T, Tk]
  t.key_valid = key_valid;
  return t;
}

torch::Tensor batch_positions(const torch::Tensor& valid) {
  return (valid.to(torch::kLong).cumsum(1) - 1).clamp_min(0);
}

torch::Tensor decoder_layer(const ArchSpec& a, const LayerWeights& L, const torch::Tensor& x_in, PassTables& tab,
                            size_t l, torch::ScalarType dtype, KVCache* cache) {
  const int64_t B = tab.B, T = tab.T;
  const int64_t rep = a.heads / a.kv_heads, hd = a.head_dim;
  const double scale = 1.0 / std::sqrt(double(hd));
  const auto lowest = std::numeric_limits<float>::lowest();
  auto opt = [](const torch::Tensor& t) { return t.defined() ? &t : nullptr; };
  auto x = x_in;
  // Attention.
  auto hn = rms_norm(x, L.input_norm, a.rms_eps);
  auto q = linear(hn, L.q_w, opt(L.q_b)).view({B, T, a.heads, hd});
  auto k = linear(hn, L.k_w, opt(L.k_b)).view({B, T, a.kv_heads, hd});
  auto v = linear(hn, L.v_w, opt(L.v_b)).view({B, T, a.kv_heads, hd});
  if (a.qk_norm) {
    q = rms_norm(q, L.q_norm, a.rms_eps);
    k = rms_norm(k, L.k_norm, a.rms_eps);
  }
  q = q.transpose(1, 2).to(torch::kFloat32);  // [B, H, T, hd]
  k = k.transpose(1, 2).to(torch::kFloat32);  // [B, KV, T, hd]
  v = v.transpose(1, 2).to(torch::kFloat32);
  q = q * tab.cos + rotate_half(q) * tab.sin;
  k = k * tab.cos + rotate_half(k) * tab.sin;
  if (cache) {
    if (cache->k.size() <= l) {
      cache->k.push_back(k);
      cache->v.push_back(v);
    } else {
      cache->k[l] = torch::cat({cache->k[l], k}, 2);
      cache->v[l] = torch::cat({cache->v[l], v}, 2);
    }
    k = cache->k[l];
    v = cache->v[l];
  }
  // Query heads grouped by the key/value head they share: [B, KV, rep, T, hd].
  auto qg = q.view({B, a.kv_heads, rep, T, hd});
  auto scores = torch::matmul(qg, k.unsqueeze(2).transpose(-1, -2)) * scale;  // [B, KV, rep, T, Tk]
  scores = torch::where(tab.mask(a.window[l]), scores, torch::full({}, lowest, scores.options()));
  auto probs = torch::softmax(scores, -1);
  auto ctx = torch::matmul(probs, v.unsqueeze(2));  // [B, KV, rep, T, hd]
  ctx = ctx.reshape({B, a.heads, T, hd}).transpose(1, 2).reshape({B, T, a.heads * hd}).to(dtype);
  x = x + linear(ctx, L.o_w, opt(L.o_b));
  // MLP.
  auto hm = rms_norm(x, L.post_norm, a.rms_eps);
  auto g = linear(hm, L.gate_w, opt(L.gate_b));
  auto u = linear(hm, L.up_w, opt(L.up_b));
  return x + linear(torch::silu(g) * u, L.down_w, opt(L.down_b));
}

torch::Tensor final_norm(const ArchSpec& a, const torch::Tensor& x, const torch::Tensor& norm_w) {
  return rms_norm(x, norm_w, a.rms_eps);
}

torch::Tensor output_logits(const ArchSpec& a, const torch::Tensor& x, const torch::Tensor& norm_w,
                            const torch::Tensor& head_w) {
  auto h = rms_norm(x, norm_w, a.rms_eps);
  return torch::linear(h, head_w).to(torch::kFloat32);
}

torch::Tensor Model::run(const torch::Tensor& ids, const torch::Tensor& positions, const torch::Tensor& key_valid,
                         KVCache* cache) {
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t past = cache ? cache->length : 0;
  auto tab = pass_tables(inv_freq_, positions, key_valid, B, T, past, options_.device);
  auto opt = [&](int i) { return i >= 0 ? p(i) : torch::Tensor(); };
  auto x = torch::embedding(p(embed_), ids);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    LayerWeights w{p(L.input_norm), p(L.post_norm), p(L.q_w),       p(L.k_w),       p(L.v_w),
                   p(L.o_w),        opt(L.q_b),     opt(L.k_b),     opt(L.v_b),     opt(L.o_b),
                   opt(L.q_norm),   opt(L.k_norm),  p(L.gate_w),    p(L.up_w),      p(L.down_w),
                   opt(L.gate_b),   opt(L.up_b),    opt(L.down_b)};
    x = decoder_layer(arch_, w, x, tab, l, options_.dtype, cache);
  }
  if (cache) cache->length = past + T;
  return output_logits(arch_, x, p(final_norm_), lm_head_ >= 0 ? p(lm_head_) : p(embed_));
}

namespace {
torch::Tensor checked_ids(const torch::Tensor& ids, int64_t vocab, torch::Device dev) {
  if (!ids.defined() || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1)
    throw Error(ErrorKind::Usage, "input_ids must be a non-empty [batch, length] tensor");
  if (ids.is_floating_point() || ids.is_complex() || ids.scalar_type() == torch::kBool)
    throw Error(ErrorKind::Usage, "input_ids must hold integer token ids");
  auto t = ids.to(dev, torch::kLong);
  const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  if (lo < 0 || hi >= vocab)
    throw Error(ErrorKind::Usage, fmt::format("token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, vocab));
  return t;
}
}  // namespace

torch::Tensor Model::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  auto ids = checked_ids(input_ids, arch_.vocab, options_.device);
  const int64_t B = ids.size(0), T = ids.size(1);
  if (!attention_mask.defined()) {
    auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(options_.device));
    return run(ids, pos.unsqueeze(0).expand({B, T}), {}, nullptr);
  }
  if (attention_mask.sizes() != ids.sizes())
    throw Error(ErrorKind::Usage, "attention_mask shape " + shape_str(attention_mask.sizes()) +
                                      " does not match input_ids " + shape_str(ids.sizes()));
  auto valid = attention_mask.to(options_.device) != 0;
  auto pos = batch_positions(valid);
  return run(ids, pos, valid, nullptr);
}

torch::Tensor Model::forward(const torch::Tensor& input_ids, KVCache& cache) {
  auto ids = checked_ids(input_ids, arch_.vocab, options_.device);
  const int64_t B = ids.size(0), T = ids.size(1);
  if (cache.length > 0 && !cache.k.empty() && cache.k[0].size(0) != B)
    throw Error(ErrorKind::Usage, "batch size differs from the cache's");
  auto pos = torch::arange(cache.length, cache.length + T,
                           torch::TensorOptions().dtype(torch::kLong).device(options_.device));
  return run(ids, pos.unsqueeze(0).expand({B, T}), {}, &cache);
}

std::vector<int64_t> Model::generate(std::span<const int64_t> prompt, int64_t max_new_tokens,
                                     std::optional<int64_t> eos) {
  if (prompt.empty()) throw Error(ErrorKind::Usage, "generation needs a non-empty prompt");
  if (max_new_tokens < 0) throw Error(ErrorKind::Usage, "max_new_tokens must not be negative");
  torch::NoGradGuard ng;
  std::vector<int64_t> out;
  if (max_new_tokens == 0) return out;
  KVCache cache;
  auto ids = torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), torch::kLong).view({1, -1});
  auto logits = forward(ids, cache);
  for (;;) {
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    if ((eos && next == *eos) || int64_t(out.size()) >= max_new_tokens) break;
    logits = forward(torch::full({1, 1}, next, torch::kLong), cache);
  }
  return out;
}

}  // namespace deltaedit::model
