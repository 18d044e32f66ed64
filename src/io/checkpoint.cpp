#include "io/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "util/error.h"
#include "util/read_file.h"

namespace fs = std::filesystem;

namespace deltaedit::io {
namespace {
bool is_weight_file(const fs::path& p) {
  const std::string n = p.filename().string();
  return p.extension() == ".safetensors" || n == kIndexName || p.extension() == ".bin" ||
         p.extension() == ".pt" || p.extension() == ".pth" || n == "pytorch_model.bin.index.json";
}
}  // namespace

void check_shard_name(const std::string& name, const std::string& index_file) {
  auto bad = [&](const std::string& why) {
    throw Error(ErrorKind::Format, "weight_map names shard '" + name + "': " + why, index_file);
  };
  if (name.empty()) bad("empty file name");
  if (name.find('/') != std::string::npos || name.find('\\') != std::string::npos)
    bad("must be a plain file name in the same directory");
  if (name == "." || name == ".." || name.find("..") != std::string::npos) bad("'..' is not allowed");
  if (name.size() >= 2 && name[1] == ':') bad("drive letters are not allowed");
  if (name.find('\0') != std::string::npos) bad("NUL in file name");
  if (name.size() <= 12 || name.substr(name.size() - 12) != ".safetensors")
    bad("shards must end in .safetensors");
}

IndexFile parse_index(std::string_view text, const std::string& ifile) {
  auto j = parse_json_strict(text, ifile);
  if (!j.is_object()) throw Error(ErrorKind::Format, "index is not a JSON object", ifile);
  IndexFile idx;
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object())
    throw Error(ErrorKind::Format, "index lacks a 'weight_map' object", ifile);
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      throw Error(ErrorKind::Format, "weight_map value is not a file name", ifile, it.key());
    const std::string f = it.value().get<std::string>();
    check_shard_name(f, ifile);
    idx.weight_map[it.key()] = f;
  }
  if (idx.weight_map.empty()) throw Error(ErrorKind::Format, "weight_map is empty", ifile);
  if (auto md = j.find("metadata"); md != j.end() && !md->is_null()) {
    if (!md->is_object()) throw Error(ErrorKind::Format, "'metadata' is not an object", ifile);
    if (auto ts = md->find("total_size"); ts != md->end() && !ts->is_null()) {
      if (!ts->is_number_unsigned())
        throw Error(ErrorKind::Format, "metadata.total_size is not a non-negative integer", ifile);
      idx.total_size = ts->get<uint64_t>();
    }
  }
  return idx;
}

std::string shard_file_name(size_t i, size_t n) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", i, n);
}

Checkpoint Checkpoint::open(const fs::path& path) {
  Checkpoint c;
  c.path_ = path;
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw Error(ErrorKind::Io, "no such file or directory", path.string());
  if (fs::is_regular_file(st)) {
    c.files_.push_back(SafetensorsFile::open(path));
    c.file_names_.push_back(path.filename().string());
  } else if (fs::is_directory(st)) {
    c.is_dir_ = true;
    const fs::path index = path / kIndexName;
    const fs::path single = path / kSingleName;
    std::set<std::string> referenced;
    if (fs::exists(index)) {
      c.sharded_ = true;
      const std::string ifile = index.string();
      IndexFile idx = parse_index(util::read_file(index), ifile);
      std::map<std::string, std::vector<std::string>> by_file;
      for (const auto& [tensor, f] : idx.weight_map) by_file[f].push_back(tensor);
      for (auto& [fname, tensors] : by_file) {
        const fs::path sp = path / fname;
        if (!fs::is_regular_file(sp))
          throw Error(ErrorKind::Io, "shard named by the index is missing", sp.string());
        SafetensorsFile sf = SafetensorsFile::open(sp);
        std::set<std::string> mapped(tensors.begin(), tensors.end());
        for (const auto& t : tensors)
          if (!sf.header().find(t))
            throw Error(ErrorKind::Format, "index maps this tensor to " + fname + " but the shard lacks it",
                        ifile, t);
        for (const auto& t : sf.header().tensors)
          if (!mapped.count(t.name))
            throw Error(ErrorKind::Format,
                        "tensor in the shard is not mapped to this shard by the index (mapped elsewhere or not at all)",
                        sp.string(), t.name);
        c.files_.push_back(std::move(sf));
        c.file_names_.push_back(fname);
        referenced.insert(fname);
      }
      if (idx.total_size) {
        uint64_t have = 0;
        for (const auto& f : c.files_)
          for (const auto& t : f.header().tensors) have += t.nbytes();
        if (*idx.total_size != have)
          c.warnings_.push_back(fmt::format("{}: metadata.total_size is {} but the shards hold {} tensor bytes",
                                            ifile, *idx.total_size, have));
      }
      if (fs::exists(single))
        c.warnings_.push_back(single.string() + " ignored: the directory has an index");
    } else if (fs::exists(single)) {
      c.files_.push_back(SafetensorsFile::open(single));
      c.file_names_.push_back(kSingleName);
      referenced.insert(kSingleName);
    } else {
      bool bin = fs::exists(path / "pytorch_model.bin") || fs::exists(path / "pytorch_model.bin.index.json");
      throw Error(ErrorKind::Format,
                  bin ? "only pickle weights (pytorch_model.bin) here; convert them to safetensors first"
                      : "no model.safetensors or model.safetensors.index.json in this directory",
                  path.string());
    }
    for (const auto& e : fs::directory_iterator(path)) {
      if (!e.is_regular_file()) continue;
      const fs::path p = e.path();
      const std::string n = p.filename().string();
      if (n == "config.json") continue;
      if (is_weight_file(p)) {
        if (p.extension() == ".safetensors" && !referenced.count(n))
          c.warnings_.push_back(p.string() + " is not part of the checkpoint (not in the index); ignored");
        continue;
      }
      if (n == "deltaedit.json") continue;  // provenance of a previous edit: rewritten, not carried
      c.extra_.push_back(p);
    }
    std::sort(c.extra_.begin(), c.extra_.end());
    if (fs::exists(path / "config.json")) c.config_ = load_config(path / "config.json");
  } else {
    throw Error(ErrorKind::Io, "not a regular file or directory", path.string());
  }
  for (size_t fi = 0; fi < c.files_.size(); ++fi) {
    for (const auto& t : c.files_[fi].header().tensors) {
      if (c.index_.count(t.name))
        throw Error(ErrorKind::Format, "tensor appears in two shards", c.files_[fi].path().string(), t.name);
      c.index_[t.name] = TensorRef{fi, &t};
      c.names_.push_back(t.name);
    }
  }
  return c;
}

const TensorRef& Checkpoint::ref(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(ErrorKind::Format, "no such tensor", path_.string(), std::string(name));
  return it->second;
}

std::span<const std::byte> Checkpoint::data(std::string_view name) const {
  const auto& r = ref(name);
  return files_[r.file].data(*r.info);
}

void Checkpoint::release(std::string_view name) const {
  const auto& r = ref(name);
  files_[r.file].release(*r.info);
}

void Checkpoint::release_range(std::string_view name, uint64_t offset, uint64_t bytes) const {
  const auto& r = ref(name);
  files_[r.file].release_range(*r.info, offset, bytes);
}

std::optional<fs::path> Checkpoint::config_path() const {
  if (!is_dir_ || !config_) return std::nullopt;
  return path_ / "config.json";
}

const std::string& Checkpoint::file_of(std::string_view name) const { return file_names_[ref(name).file]; }

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_)
    for (const auto& t : f.header().tensors) n += t.nbytes();
  return n;
}

uint64_t Checkpoint::total_params() const {
  uint64_t n = 0;
  for (const auto& f : files_)
    for (const auto& t : f.header().tensors) n += t.numel();
  return n;
}

std::vector<fs::path> Checkpoint::input_paths() const {
  std::vector<fs::path> v;
  v.push_back(path_);
  for (const auto& f : files_) v.push_back(f.path());
  if (sharded_) v.push_back(path_ / kIndexName);
  if (is_dir_ && fs::exists(path_ / "config.json")) v.push_back(path_ / "config.json");
  for (const auto& e : extra_) v.push_back(e);
  return v;
}

}  // namespace deltaedit::io
