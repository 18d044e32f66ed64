#include "engine/edit_engine.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "engine/delta_blocks.h"
#include "engine/edit_kernel.h"
#include "engine/edit_plan.h"
#include "engine/executor.h"
#include "engine/layout.h"
#include "engine/pack_sink.h"
#include "io/convert.h"
#include "io/peft.h"
#include "merge/config.h"
#include "pack/pack.h"
#include "util/boundary.h"
#include "util/checked.h"
#include "util/error.h"
#include "util/size.h"
#include "util/read_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::engine {

uint64_t parse_size(const std::string& text) { return util::parse_size(text); }

json EditResult::to_json() const {
  json j;
  j["plan"] = plan;
  j["total"] = total.to_json();
  j["nonfinite_out"] = nonfinite_out;
  j["output_bytes"] = output_bytes;
  j["tensors"] = json::array();
  for (const auto& t : tensors) {
    json o{{"name", t.name}, {"action", t.action}, {"ops", t.ops}, {"numel", t.numel}};
    if (t.action == "edited") o["stats"] = t.stats.to_json();
    if (t.nonfinite_out) o["nonfinite_out"] = t.nonfinite_out;
    if (!t.encoding.empty()) {
      o["encoding"] = t.encoding;
      o["stored_bytes"] = t.stored_bytes;
      o["bits_per_param"] = t.numel ? 8.0 * double(t.stored_bytes) / double(t.numel) : 0.0;
    }
    j["tensors"].push_back(o);
  }
  return j;
}

EditResult run_edit(const EditRequest& req, const Progress& progress) {
  // 1-2. Everything that can be checked without reading weights, and the plan.
  EditPlan P = plan_edit(req);
  EditResult result;
  result.plan = P.report;
  if (req.dry_run) return result;
  const OpChain& chain = P.chain;
  const io::Checkpoint& base = *P.base;
  const io::TensorSource& post = *P.post;
  const io::SafetensorsFile* grad = P.grad ? &*P.grad : nullptr;
  const OutLayout& layout = P.layout;

  // 3. The executor's tensors: edited ones stream W_pre + Δ' block by block (Δ' whole-tensor
  // first where an op needs the whole tensor); the others are copied or converted.
  std::vector<ExecTensor> ts(layout.tensors.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const OutTensor& ot = layout.tensors[i];
    ExecTensor& t = ts[i];
    t.name = ot.name;
    t.shape = ot.shape;
    t.out_dtype = ot.dtype;
    t.hold = P.tensors[i].need;
    if (P.tensors[i].edited && P.tensors[i].shared) {  // resized: post's rows, base read by the kernel
      t.mode = ExecMode::Stream;
      t.prepare = true;
      t.inputs = {{&post, ot.name, {}}};
    } else if (P.tensors[i].edited) {
      t.mode = ExecMode::Stream;
      t.prepare = true;
      t.inputs = {{&base, ot.name, {}}, {&post, ot.name, {}}};
    } else {
      t.mode = ExecMode::Copy;
      t.inputs = {{&post, ot.name, {}}};
    }
  }
  result.tensors.resize(ts.size());
  std::vector<std::unique_ptr<EditTensorState>> states(ts.size());
  std::vector<analysis::EditAccum> accs(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    TensorOutcome& out = result.tensors[i];
    out.name = ts[i].name;
    out.numel = post.info(ts[i].name).numel();
    out.action = P.tensors[i].edited                              ? "edited"
                 : ts[i].out_dtype == post.info(ts[i].name).dtype ? "copied"
                                                                  : "converted";
  }
  const auto kernel = [&](size_t i, std::span<const std::span<const float>> in,
                          std::span<float> out, uint64_t first, std::vector<std::string>&) {
    if (P.tensors[i].shared)
      return edit_resized_block(*states[i], base, ts[i].name, P.tensors[i].shared, in[0], out, first);
    return edit_block(*states[i], in[0], in[1], out, first);
  };

  ExecOptions eo;
  eo.out = req.out;
  eo.threads = P.workers;
  eo.max_memory = req.max_memory;
  eo.shards = layout.shard_plan();
  eo.metadata = shard_metadata(P.provenance);
  eo.block = kDeltaBlock;
  eo.inputs = base.input_paths();
  for (auto& p : post.input_paths()) eo.inputs.push_back(p);
  if (req.grad) eo.inputs.push_back(*req.grad);
  if (req.pack) eo.reserve_bytes = 0;
  eo.progress = progress;
  eo.prepare = [&](size_t i) {
    states[i] = std::make_unique<EditTensorState>();
    if (P.tensors[i].streamed)
      prepare_streamed(*states[i], chain, base, post, ts[i].name);
    else
      prepare_whole(*states[i], chain, base, post, ts[i].name, grad);
  };
  eo.after = [&](size_t i) {
    if (!states[i]) return;
    result.tensors[i].ops = std::move(states[i]->ops);
    accs[i] = states[i]->acc;
    result.tensors[i].stats = analysis::EditStats::from(accs[i]);
    states[i].reset();
  };
  for (const auto& e : post.extra_files()) eo.copies.push_back({e, e.filename().string()});

  std::unique_ptr<PackSink> pack_sink;
  if (req.pack)
    pack_sink = std::make_unique<PackSink>(ts, [&](size_t i, std::span<const std::byte> full) {
      TensorOutcome& out = result.tensors[i];
      pack::Encoded enc = P.tensors[i].edited
                              ? pack::encode_delta(states[i]->whole->edited, ts[i].shape, full,
                                                   states[i]->whole->factors)
                              : pack::encode_raw(full, ts[i].out_dtype, ts[i].shape);
      out.encoding = enc.encoding;
      out.stored_bytes = enc.stored_bytes();
      return enc;
    });

  // config.json: byte for byte unless the dtype changed.
  std::optional<std::string> config_text;
  if (const auto config_path = post.config_path()) {
    config_text = util::read_file(*config_path);
    if (req.dtype) {
      json c = io::parse_json_strict(*config_text, config_path->string());
      for (const char* k : {"torch_dtype", "dtype"})
        if (c.contains(k)) c[k] = merge::torch_dtype_name(*req.dtype);
      config_text = c.dump(2) + "\n";
    }
  }

  eo.texts = [&](const ExecReport& rep) {
    analysis::EditAccum total;
    for (size_t i = 0; i < accs.size(); ++i) {
      result.tensors[i].nonfinite_out = rep.nonfinite[i];
      total.merge(accs[i]);
      result.nonfinite_out += result.tensors[i].nonfinite_out;
    }
    result.total = analysis::EditStats::from(total);
    result.output_bytes = P.out_bytes;

    // The checkpoint's deltaedit.json: provenance + per-tensor outcome (identical from apply).
    json ck_meta = P.provenance;
    ck_meta["tensors"] = json::array();
    for (const auto& t : result.tensors) {
      json o{{"name", t.name}, {"action", t.action}, {"ops", t.ops}};
      if (t.action == "edited") o["stats"] = t.stats.to_json();
      if (t.nonfinite_out) o["nonfinite_out"] = t.nonfinite_out;
      ck_meta["tensors"].push_back(o);
    }
    ck_meta["total"] = result.total.to_json();
    ck_meta["skipped"] = P.skipped;
    std::vector<std::pair<std::string, std::string>> texts;
    if (config_text) texts.push_back({"config.json", *config_text});
    if (!req.pack) {
      texts.push_back({"deltaedit.json", ck_meta.dump(2) + "\n"});
      return texts;
    }
    json pm = {{"format", pack::kPackFormat},
               {"layout", layout.to_json()},
               {"tensors", json::array()},
               {"checkpoint_meta", ck_meta},
               {"shard_metadata", eo.metadata}};
    uint64_t stored = 0;
    for (size_t i = 0; i < ts.size(); ++i) {
      pm["tensors"].push_back(pack_sink->tensor_meta(i));
      stored += pack_sink->stored_bytes(i);
    }
    json pack_meta = P.provenance;
    pack_meta["pack"] = pm;
    pack_meta["pack_bits_per_param"] =
        post.total_params() ? 8.0 * double(stored) / double(post.total_params()) : 0.0;
    texts.push_back({"deltaedit.json", pack_meta.dump(2) + "\n"});
    return texts;
  };
  execute(ts, kernel, eo, pack_sink.get());
  return result;
}

EditResult run_apply(const ApplyRequest& req, const Progress& progress) {
  std::error_code ec;
  if (!fs::exists(req.pack, ec))
    throw Error(ErrorKind::Io, "no such delta pack", req.pack.string());
  if (!pack::is_pack(req.pack))
    throw Error(ErrorKind::Format, "not a delta pack (needs pack.safetensors and deltaedit.json)",
                req.pack.string());
  if (fs::exists(req.out))
    throw Error(ErrorKind::Usage, "output already exists; choose a new --out or remove it first",
                req.out.string());
  // Everything read from deltaedit.json names that file when it is malformed (Format, exit 1).
  const fs::path meta_path = req.pack / "deltaedit.json";
  const std::string meta_label = meta_path.string();
  json meta = io::parse_json_strict(util::read_file(meta_path), meta_label);
  if (!meta.contains("pack") || !meta["pack"].is_object() ||
      meta["pack"].value("format", "") != pack::kPackFormat)
    throw Error(ErrorKind::Format, std::string("not a ") + pack::kPackFormat + " pack", meta_label);
  const json& pm = meta["pack"];
  struct TensorMeta {
    std::string encoding;
    json params;
  };
  OutLayout layout;
  std::map<std::string, TensorMeta> tmeta;
  std::map<std::string, std::string> md;
  std::string checkpoint_meta;
  auto packf = io::SafetensorsFile::open(req.pack / pack::kPackFile);
  util::at_boundary(meta_label, "", [&] {
    layout = OutLayout::from_json(pm.at("layout"), meta_label);
    for (const auto& t : pm.at("tensors")) {
      const std::string name = t.at("name").get<std::string>();
      util::at_boundary(meta_label, name, [&] {
        TensorMeta m{t.at("encoding").get<std::string>(), t.value("params", json::object())};
        for (const auto& part : t.at("parts"))
          if (!packf.header().find(name + "::" + part.get<std::string>()))
            throw Error(ErrorKind::Format, "pack lacks part '" + part.get<std::string>() + "'",
                        packf.path().string(), name);
        tmeta[name] = std::move(m);
      });
    }
    md = pm.at("shard_metadata").get<std::map<std::string, std::string>>();
    checkpoint_meta = pm.at("checkpoint_meta").dump(2) + "\n";
  });
  auto base = io::Checkpoint::open(req.base);
  // Check the base matches before writing anything.
  for (const auto& t : layout.tensors) {
    auto it = tmeta.find(t.name);
    if (it == tmeta.end())
      throw Error(ErrorKind::Format, "pack lacks this tensor", meta_label, t.name);
    const std::string& enc = it->second.encoding;
    if (enc == "raw" || enc == "out") continue;
    if (!base.contains(t.name))
      throw Error(ErrorKind::Usage, "base lacks a tensor the pack edits: is this the right base?",
                  req.base.string(), t.name);
    const auto& bi = base.info(t.name);
    if (bi.shape != t.shape || !io::is_compute_dtype(bi.dtype))
      throw Error(ErrorKind::Usage,
                  "base tensor has a different shape or dtype than the pack expects",
                  req.base.string(), t.name);
  }
  uint64_t out_bytes = 0;
  for (const auto& t : layout.tensors) out_bytes += t.nbytes();

  // Raw and final-byte parts are copied; the others stream base + Δ' from the decoded delta.
  std::vector<ExecTensor> ts(layout.tensors.size());
  EditResult result;
  result.tensors.resize(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const OutTensor& ot = layout.tensors[i];
    const TensorMeta& tm = tmeta.at(ot.name);
    ExecTensor& t = ts[i];
    t.name = ot.name;
    t.shape = ot.shape;
    t.out_dtype = ot.dtype;
    TensorOutcome& out = result.tensors[i];
    out.name = ot.name;
    out.numel = util::checked_numel(ot.shape, meta_label, ot.name);
    out.encoding = tm.encoding;
    if (tm.encoding == "raw" || tm.encoding == "out") {
      auto b = packf.data(ot.name + "::" + tm.encoding);
      if (b.size() != ot.nbytes())
        throw Error(ErrorKind::Format, "pack part has the wrong size", packf.path().string(),
                    ot.name);
      t.mode = ExecMode::Copy;
      t.inputs = {{nullptr, ot.name, b}};
      out.action = tm.encoding == "raw" ? "copied" : "edited";
    } else {
      t.mode = ExecMode::Stream;
      t.prepare = true;
      t.hold = out.numel * 4;
      t.inputs = {{&base, ot.name, {}}};
      out.action = "edited";
    }
  }
  std::vector<std::vector<float>> edited(ts.size());
  ExecOptions eo;
  eo.out = req.out;
  eo.threads = std::max(1u, req.threads);
  eo.max_memory = req.max_memory;
  eo.shards = layout.shard_plan();
  eo.metadata = md;
  eo.block = kDeltaBlock;
  eo.inputs = {req.pack};
  eo.progress = progress;
  eo.prepare = [&](size_t i) {
    const TensorMeta& tm = tmeta.at(ts[i].name);
    edited[i].resize(result.tensors[i].numel);
    auto get = [&](const std::string& suffix) { return packf.data(ts[i].name + "::" + suffix); };
    util::at_boundary(req.pack.string(), ts[i].name,
                      [&] { pack::decode(tm.encoding, tm.params, get, edited[i], {}); });
  };
  eo.after = [&](size_t i) { std::vector<float>().swap(edited[i]); };
  for (const auto& e : fs::directory_iterator(req.pack)) {
    const std::string n = e.path().filename().string();
    if (!e.is_regular_file() || n == pack::kPackFile || n == "deltaedit.json") continue;
    eo.copies.push_back({e.path(), n});
  }
  eo.texts = [&](const ExecReport&) {
    return std::vector<std::pair<std::string, std::string>>{{"deltaedit.json", checkpoint_meta}};
  };
  const auto kernel = [&](size_t i, std::span<const std::span<const float>> in,
                          std::span<float> out, uint64_t first, std::vector<std::string>&) {
    return apply_block(std::span<const float>(edited[i].data() + first, out.size()), in[0], out);
  };
  const ExecReport rep = execute(ts, kernel, eo);
  for (size_t i = 0; i < ts.size(); ++i) result.tensors[i].nonfinite_out = rep.nonfinite[i];
  result.output_bytes = out_bytes;
  result.plan = {{"output", req.out.string()},
                 {"output_files", layout.files},
                 {"tensors", layout.tensors.size()}};
  return result;
}

}  // namespace deltaedit::engine
