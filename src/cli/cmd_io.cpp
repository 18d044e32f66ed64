// inspect, verify, stats: read-only subcommands over checkpoints.
#include <filesystem>
#include <iostream>

#include <fmt/format.h>

#include "analysis/stats_runner.h"
#include "cli/common.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "io/peft.h"
#include "io/writer.h"
#include "pack/pack.h"
#include "util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::cli {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

json config_summary(const io::ModelConfig& c) {
  return {{"architecture", c.architecture}, {"model_type", c.model_type}, {"layers", c.num_hidden_layers},
          {"hidden_size", c.hidden_size},   {"vocab_size", c.vocab_size}, {"tied", c.tie_word_embeddings},
          {"heads", c.num_attention_heads}, {"kv_heads", c.num_key_value_heads}, {"head_dim", c.head_dim},
          {"rope_theta", c.rope.theta},     {"rope_type", c.rope.type}};
}

int print_pack(const fs::path& p, bool as_json) {
  const json out = pack::describe_pack(p);
  if (as_json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{}: delta pack, {} tensors, {} parameters, {} stored, {:.3f} bits per parameter\n",
                           p.string(), out["tensors"].size(), out["total_params"].get<uint64_t>(), out["total_bytes"].get<uint64_t>(), out["bits_per_param"].get<double>());
  std::cout << fmt::format("{:<56} {:<15} {:>12} {:>10}\n", "tensor", "encoding", "bytes", "bits/param");
  for (const auto& t : out["tensors"])
    std::cout << fmt::format("{:<56} {:<15} {:>12} {:>10.3f}\n", t["name"].get<std::string>(),
                             t["encoding"].get<std::string>(), t["bytes"].get<uint64_t>(),
                             t["bits_per_param"].get<double>());
  return 0;
}

int run_inspect(const std::string& path, bool as_json) {
  if (pack::is_pack(path)) return print_pack(path, as_json);
  auto ck = io::Checkpoint::open(path);
  json j;
  j["path"] = path;
  j["kind"] = ck.is_directory() ? (ck.is_sharded() ? "sharded checkpoint" : "checkpoint") : "safetensors file";
  j["tensors"] = json::array();
  for (const auto& name : ck.names()) {
    const auto& t = ck.info(name);
    j["tensors"].push_back({{"name", name},
                            {"dtype", io::dtype_name(t.dtype)},
                            {"shape", t.shape},
                            {"bytes", t.nbytes()},
                            {"file", ck.file_of(name)}});
  }
  j["total_bytes"] = ck.total_bytes();
  j["total_params"] = ck.total_params();
  j["shards"] = json::array();
  for (const auto& f : ck.files())
    j["shards"].push_back({{"file", f.path().filename().string()}, {"bytes", f.file_size()},
                           {"tensors", f.header().tensors.size()}, {"metadata", f.header().metadata}});
  j["config"] = ck.config() ? config_summary(*ck.config()) : json(nullptr);
  j["extra_files"] = json::array();
  for (const auto& e : ck.extra_files()) j["extra_files"].push_back(e.filename().string());
  j["warnings"] = ck.warnings();
  if (as_json) {
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  std::cout << fmt::format("{}: {}, {} tensors, {} parameters, {}\n", path, j["kind"].get<std::string>(),
                           ck.names().size(), ck.total_params(), human_bytes(ck.total_bytes()));
  if (ck.config()) {
    const auto& c = *ck.config();
    std::cout << fmt::format("config: {} ({}), {} layers, hidden {}, heads {}/{} (head_dim {}), vocab {}, {}\n",
                             c.architecture.empty() ? "?" : c.architecture, c.model_type, c.num_hidden_layers,
                             c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.vocab_size,
                             c.tie_word_embeddings ? "tied embeddings" : "untied head");
  }
  if (ck.files().size() > 1)
    for (const auto& f : ck.files())
      std::cout << fmt::format("shard {}: {} tensors, {}\n", f.path().filename().string(),
                               f.header().tensors.size(), human_bytes(f.file_size()));
  std::cout << fmt::format("{:<56} {:<6} {:<18} {:>12}  {}\n", "tensor", "dtype", "shape", "bytes", "file");
  for (const auto& t : j["tensors"])
    std::cout << fmt::format("{:<56} {:<6} {:<18} {:>12}  {}\n", t["name"].get<std::string>(),
                             t["dtype"].get<std::string>(), shape_str(t["shape"].get<std::vector<int64_t>>()),
                             t["bytes"].get<uint64_t>(), t["file"].get<std::string>());
  if (!ck.extra_files().empty()) {
    std::cout << "other files:";
    for (const auto& e : ck.extra_files()) std::cout << " " << e.filename().string();
    std::cout << "\n";
  }
  for (const auto& w : ck.warnings()) std::cerr << "warning: " << w << "\n";
  return kOk;
}

// Validates everything it can and lists every problem (not just the first).
int run_verify(const std::string& path, bool values) {
  std::vector<std::string> problems, warnings;
  auto note = [&](const std::exception& e) { problems.push_back(e.what()); };
  std::vector<io::SafetensorsFile> files;
  auto open_file = [&](const fs::path& p) {
    try {
      files.push_back(io::SafetensorsFile::open(p));
    } catch (const Error& e) {
      note(e);
    }
  };
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    std::cout << path << ": no such file or directory\n";
    return kFail;
  }
  if (fs::is_directory(path)) {
    const fs::path dir(path);
    const fs::path index = dir / io::kIndexName;
    if (fs::exists(index)) {
      try {
        std::ifstream in(index, std::ios::binary);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto idx = io::parse_index(text, index.string());
        std::map<std::string, std::vector<std::string>> by_file;
        for (const auto& [t, f] : idx.weight_map) by_file[f].push_back(t);
        std::map<std::string, std::string> seen;  // tensor -> shard holding it
        uint64_t bytes = 0;
        for (const auto& [f, ts] : by_file) {
          const fs::path sp = dir / f;
          if (!fs::is_regular_file(sp)) {
            problems.push_back(sp.string() + ": shard named by the index is missing");
            continue;
          }
          size_t before = files.size();
          open_file(sp);
          if (files.size() == before) continue;
          const auto& h = files.back().header();
          std::set<std::string> mapped(ts.begin(), ts.end());
          for (const auto& t : ts)
            if (!h.find(t)) problems.push_back(fmt::format("{}: tensor '{}': mapped to {} but not in it", index.string(), t, f));
          for (const auto& t : h.tensors) {
            bytes += t.nbytes();
            if (!mapped.count(t.name))
              problems.push_back(fmt::format("{}: tensor '{}': not mapped to this shard by the index", sp.string(), t.name));
            if (auto [it, fresh] = seen.emplace(t.name, f); !fresh)
              problems.push_back(fmt::format("{}: tensor '{}': also in {}", sp.string(), t.name, it->second));
          }
        }
        if (idx.total_size && *idx.total_size != bytes)
          warnings.push_back(fmt::format("{}: metadata.total_size is {} but the shards hold {} bytes", index.string(),
                                         *idx.total_size, bytes));
      } catch (const Error& e) {
        note(e);
      }
    } else if (fs::exists(dir / io::kSingleName)) {
      open_file(dir / io::kSingleName);
    } else {
      problems.push_back(path + ": no model.safetensors or model.safetensors.index.json");
    }
    if (fs::exists(dir / "config.json")) {
      try {
        io::load_config(dir / "config.json");
      } catch (const Error& e) {
        note(e);
      }
    }
  } else {
    open_file(path);
  }
  if (values) {
    for (const auto& f : files) {
      for (const auto& t : f.header().tensors) {
        if (!io::is_compute_dtype(t.dtype)) continue;
        auto bytes = f.data(t);
        const size_t esz = io::dtype_bits(t.dtype) / 8;
        uint64_t nan = 0, inf = 0;
        std::vector<float> buf(std::min<uint64_t>(t.numel(), 1u << 20));
        for (uint64_t off = 0; off < t.numel(); off += buf.size()) {
          size_t m = size_t(std::min<uint64_t>(buf.size(), t.numel() - off));
          io::to_f32(bytes.subspan(off * esz, m * esz), t.dtype, std::span(buf.data(), m));
          for (size_t i = 0; i < m; ++i) {
            nan += std::isnan(buf[i]);
            inf += std::isinf(buf[i]);
          }
        }
        f.release(t);
        if (nan || inf)
          warnings.push_back(fmt::format("{}: tensor '{}': {} NaN and {} Inf values", f.path().string(), t.name, nan, inf));
      }
    }
  }
  for (const auto& w : warnings) std::cout << "warning: " << w << "\n";
  for (const auto& p : problems) std::cout << p << "\n";
  if (problems.empty()) {
    std::cout << path << ": valid (" << files.size() << (files.size() == 1 ? " file" : " files") << ")\n";
    return kOk;
  }
  return kFail;
}

int run_stats(const std::string& base_path, const std::string& post_path, bool as_json, unsigned threads, int top) {
  auto base = io::Checkpoint::open(base_path);
  const auto post = io::open_post(post_path, base);  // a checkpoint or a PEFT adapter over base
  ProgressLine bar("stats", !as_json && stderr_is_tty());
  auto r = analysis::compute_stats(base, *post, threads, [&](size_t d, size_t n, uint64_t b) {
    bar.update(double(d), double(n), human_bytes(b));
  });
  bar.finish();
  if (as_json) {
    auto j = r.to_json();
    j["base"] = base_path;
    j["post"] = post_path;
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  std::cout << fmt::format("{:<56} {:>10} {:>10} {:>11} {:>10} {:>10} {:>10} {:>6} {:>6}\n", "tensor", "|Δ|",
                           "|Δ|/|W|", "mean", "std", "mean|Δ|", "max|Δ|", "pos", "zero");
  auto row = [](const std::string& name, const analysis::DeltaStats& s) {
    return fmt::format("{:<56} {:>10.4g} {:>10.4g} {:>11.3e} {:>10.4g} {:>10.4g} {:>10.4g} {:>6.3f} {:>6.3f}{}\n", name,
                       s.norm, s.rel_norm, s.mean, s.std, s.mean_abs, s.max_abs, s.frac_positive, s.frac_zero,
                       s.nonfinite ? fmt::format("  ({} non-finite)", s.nonfinite) : "");
  };
  size_t shown = 0;
  for (const auto& t : r.tensors) {
    if (top >= 0 && shown++ >= size_t(top)) break;
    std::cout << row(t.name, t.stats);
  }
  if (top >= 0 && r.tensors.size() > size_t(top))
    std::cout << fmt::format("... {} more tensors (use --top -1 or --json for all)\n", r.tensors.size() - size_t(top));
  std::cout << row(fmt::format("TOTAL ({} tensors, {} parameters)", r.tensors.size(), r.total.n), r.total);
  for (const auto& t : r.tensors)
    if (t.post_rows)
      std::cout << fmt::format("resized: {} — statistics over the {} rows shared with base ({} rows added in post)\n",
                               t.name, t.shared_rows, t.post_rows - t.shared_rows);
  for (const auto& s : r.skipped) std::cout << fmt::format("not compared: {} — {}\n", s.name, s.note);
  return kOk;
}

}  // namespace

Command add_inspect(CLI::App& app) {
  auto* sub = app.add_subcommand("inspect", "List the tensors, shards and config of a checkpoint, file or delta pack");
  sub->footer("Examples:\n  deltaedit inspect path/to/model            # directory, single or sharded\n"
              "  deltaedit inspect model.safetensors --json # {\"tensors\": [{name,dtype,shape,bytes,file}], ...}\n"
              "  deltaedit inspect my.pack                  # bits per parameter of a delta pack");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("PATH", *path, "safetensors file, checkpoint directory or delta pack")->required();
  sub->add_flag("--json", *as_json, "machine-readable output");
  return {sub, [=] { return run_inspect(*path, *as_json); }};
}

Command add_verify(CLI::App& app) {
  auto* sub = app.add_subcommand("verify", "Validate a safetensors file or checkpoint directory completely");
  sub->footer("Exit status: 0 valid, 1 invalid (one line per problem), 2 bad usage.\n"
              "Checks every safetensors rule (header, offsets, sizes, duplicate keys), the index (shard names,\n"
              "mapping both ways, total_size), config.json, and counts NaN/Inf values (warnings).\n"
              "Example:\n  deltaedit verify ~/models/Llama-3-8B-Instruct");
  auto path = std::make_shared<std::string>();
  auto no_values = std::make_shared<bool>(false);
  sub->add_option("PATH", *path, "safetensors file or checkpoint directory")->required();
  sub->add_flag("--no-values", *no_values, "skip the scan of tensor values for NaN/Inf");
  return {sub, [=] {
            try {
              return run_verify(*path, !*no_values);
            } catch (const std::exception& e) {
              std::cout << e.what() << "\n";
              return int(kFail);
            }
          }};
}

Command add_stats(CLI::App& app) {
  auto* sub = app.add_subcommand("stats", "Per-tensor and total statistics of the delta Δ = post − base");
  sub->footer("Streams both checkpoints; they may differ in dtype and sharding.\n"
              "Columns: ‖Δ‖, ‖Δ‖/‖W_pre‖, mean, std, mean|Δ|, max|Δ|, fraction positive, fraction zero.\n"
              "Example:\n  deltaedit stats --base Meta-Llama-3-8B --post Meta-Llama-3-8B-Instruct --json > stats.json");
  auto base = std::make_shared<std::string>();
  auto post = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto threads = std::make_shared<unsigned>(2);
  auto top = std::make_shared<int>(-1);
  sub->add_option("--base", *base, "pre-trained checkpoint (W_pre)")->required();
  sub->add_option("--post", *post, "post-trained checkpoint (W_post), or a PEFT LoRA adapter directory over --base")
      ->required();
  sub->add_flag("--json", *as_json, "machine-readable output");
  sub->add_option("--threads", *threads, "worker threads (default 2)")->check(CLI::Range(1u, 256u));
  sub->add_option("--top", *top, "show only the first N tensors in the table (-1: all)");
  return {sub, [=] { return run_stats(*base, *post, *as_json, *threads, *top); }};
}

}  // namespace deltaedit::cli
