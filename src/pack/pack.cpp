#include "pack/pack.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <map>
#include <unordered_map>

#include <fmt/format.h>

#include "io/convert.h"
#include "io/safetensors.h"
#include "util/boundary.h"
#include "util/checked.h"
#include "util/error.h"
#include "util/read_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::pack {
namespace {

uint32_t bits_of(float f) { return io::f32_to_bits(f); }

unsigned bits_for(size_t count) {  // index width for `count` symbols, at least 1
  unsigned k = 1;
  while ((size_t(1) << k) < count) ++k;
  return k;
}

uint64_t packed_bytes(uint64_t n, unsigned k) { return (n * k + 7) / 8; }

// Element i occupies bits [i·k, (i+1)·k) of the stream, least significant bit first.
void put_code(std::vector<std::byte>& buf, uint64_t i, unsigned k, uint32_t code) {
  uint64_t bit = i * k;
  for (unsigned b = 0; b < k; ++b, ++bit)
    if (code >> b & 1u) buf[bit / 8] |= std::byte(1u << (bit % 8));
}
uint32_t get_code(std::span<const std::byte> buf, uint64_t i, unsigned k) {
  uint64_t bit = i * k;
  uint32_t c = 0;
  for (unsigned b = 0; b < k; ++b, ++bit)
    c |= uint32_t(std::to_integer<unsigned>(buf[bit / 8]) >> (bit % 8) & 1u) << b;
  return c;
}

std::vector<std::byte> floats_to_bytes(std::span<const float> v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

Part f32_part(std::string suffix, std::vector<int64_t> shape, std::span<const float> v) {
  return {std::move(suffix), io::DType::F32, std::move(shape), floats_to_bytes(v)};
}
Part u8_part(std::string suffix, std::vector<std::byte> bytes) {
  const int64_t n = int64_t(bytes.size());
  return {std::move(suffix), io::DType::U8, {n}, std::move(bytes)};
}

// Distinct bit patterns of `v`, sorted, or nullopt when more than `limit`.
std::optional<std::vector<uint32_t>> distinct(std::span<const float> v, size_t limit, bool skip_zero) {
  std::vector<uint32_t> seen;
  for (float f : v) {
    uint32_t b = bits_of(f);
    if (skip_zero && b == 0) continue;
    if (std::find(seen.begin(), seen.end(), b) != seen.end()) continue;
    if (seen.size() == limit) return std::nullopt;
    seen.push_back(b);
  }
  std::sort(seen.begin(), seen.end());
  return seen;
}

std::vector<float> as_floats(const std::vector<uint32_t>& bits) {
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) f[i] = io::bits_to_f32(bits[i]);
  return f;
}

uint32_t index_in(const std::vector<uint32_t>& palette, uint32_t b) {
  return uint32_t(std::lower_bound(palette.begin(), palette.end(), b) - palette.begin());
}

std::span<const float> float_view(std::span<const std::byte> b, std::vector<float>& tmp) {
  if (b.size() % 4) throw Error(ErrorKind::Format, fmt::format("pack: an F32 part holds {} bytes, not a multiple of 4", b.size()));
  tmp.resize(b.size() / 4);
  if (!tmp.empty()) std::memcpy(tmp.data(), b.data(), tmp.size() * 4);
  return tmp;
}

}  // namespace

uint64_t Encoded::stored_bytes() const {
  uint64_t n = 0;
  for (const auto& p : parts) n += p.bytes.size();
  return n;
}

Encoded encode_raw(std::span<const std::byte> bytes, io::DType dtype, std::span<const int64_t> shape) {
  Encoded e;
  e.encoding = "raw";
  e.parts.push_back({"raw", dtype, std::vector<int64_t>(shape.begin(), shape.end()),
                     std::vector<std::byte>(bytes.begin(), bytes.end())});
  return e;
}

Encoded encode_delta(std::span<const float> edited, std::span<const int64_t> shape, std::span<const std::byte> out,
                     const std::optional<linalg::LowRankFactors>& factors) {
  const uint64_t n = edited.size();
  const int64_t rows = shape.empty() ? 1 : shape[0];
  const uint64_t cols = rows > 0 ? n / uint64_t(rows) : 0;
  std::vector<int64_t> vshape(shape.begin(), shape.end());

  // Candidate sizes (bytes), smallest wins; ties keep the earlier (simpler) encoding.
  std::string best = "out";
  uint64_t best_size = out.size();
  auto consider = [&](const char* name, uint64_t size) {
    if (size < best_size) {
      best = name;
      best_size = size;
    }
  };
  consider("dense", n * 4);
  uint64_t nnz = 0;
  for (float f : edited) nnz += bits_of(f) != 0;
  const uint64_t mask_bytes = (n + 7) / 8;
  consider("sparse", mask_bytes + nnz * 4);
  auto pal = distinct(edited, 256, false);
  if (pal) consider("palette", packed_bytes(n, bits_for(pal->size())) + pal->size() * 4);
  auto nzpal = distinct(edited, 256, true);
  if (nzpal && !nzpal->empty())
    consider("sparse_palette", mask_bytes + packed_bytes(nnz, bits_for(nzpal->size())) + nzpal->size() * 4);
  // Per-row palettes (BitDelta with per-row scales): width from the row with most values.
  unsigned row_k = 0;
  if (rows > 1 && cols > 0 && n > 0 && !pal) {
    size_t worst = 0;
    for (int64_t r = 0; r < rows && worst <= 16; ++r) {
      auto d = distinct(edited.subspan(uint64_t(r) * cols, cols), 16, false);
      worst = d ? std::max(worst, d->size()) : 17;
    }
    if (worst <= 16) {
      row_k = bits_for(worst);
      consider("rowpalette", packed_bytes(n, row_k) + uint64_t(rows) * (uint64_t(1) << row_k) * 4);
    }
  }
  if (factors && factors->rows * factors->cols == int64_t(n)) {
    std::vector<float> check(n);
    linalg::reconstruct_lowrank(*factors, check);
    if (std::memcmp(check.data(), edited.data(), n * 4) == 0)
      consider("lowrank", uint64_t(factors->rows + factors->cols + 1) * uint64_t(factors->rank) * 4);
  }

  Encoded e;
  e.encoding = best;
  if (best == "out") {
    e.parts.push_back({"out", io::DType::U8, {int64_t(out.size())}, std::vector<std::byte>(out.begin(), out.end())});
  } else if (best == "dense") {
    e.parts.push_back(f32_part("delta", vshape, edited));
  } else if (best == "sparse") {
    std::vector<std::byte> mask(mask_bytes);
    std::vector<float> values;
    values.reserve(nnz);
    for (uint64_t i = 0; i < n; ++i)
      if (bits_of(edited[i]) != 0) {
        mask[i / 8] |= std::byte(1u << (i % 8));
        values.push_back(edited[i]);
      }
    e.parts.push_back(u8_part("mask", std::move(mask)));
    e.parts.push_back(f32_part("values", {int64_t(values.size())}, values));
  } else if (best == "palette") {
    const unsigned k = bits_for(pal->size());
    std::vector<std::byte> codes(packed_bytes(n, k));
    for (uint64_t i = 0; i < n; ++i) put_code(codes, i, k, index_in(*pal, bits_of(edited[i])));
    e.params = {{"bits", k}};
    e.parts.push_back(u8_part("codes", std::move(codes)));
    auto pf = as_floats(*pal);
    e.parts.push_back(f32_part("palette", {int64_t(pf.size())}, pf));
  } else if (best == "sparse_palette") {
    const unsigned k = bits_for(nzpal->size());
    std::vector<std::byte> mask(mask_bytes), codes(packed_bytes(nnz, k));
    uint64_t j = 0;
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t b = bits_of(edited[i]);
      if (b == 0) continue;
      mask[i / 8] |= std::byte(1u << (i % 8));
      put_code(codes, j++, k, index_in(*nzpal, b));
    }
    e.params = {{"bits", k}};
    e.parts.push_back(u8_part("mask", std::move(mask)));
    e.parts.push_back(u8_part("codes", std::move(codes)));
    auto pf = as_floats(*nzpal);
    e.parts.push_back(f32_part("palette", {int64_t(pf.size())}, pf));
  } else if (best == "rowpalette") {
    const unsigned k = row_k;
    const uint64_t width = uint64_t(1) << k;
    std::vector<std::byte> codes(packed_bytes(n, k));
    std::vector<float> palettes(uint64_t(rows) * width, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      auto row = edited.subspan(uint64_t(r) * cols, cols);
      auto d = *distinct(row, width, false);
      for (size_t c = 0; c < d.size(); ++c) palettes[uint64_t(r) * width + c] = io::bits_to_f32(d[c]);
      for (uint64_t c = 0; c < cols; ++c) put_code(codes, uint64_t(r) * cols + c, k, index_in(d, bits_of(row[c])));
    }
    e.params = {{"bits", k}};
    e.parts.push_back(u8_part("codes", std::move(codes)));
    e.parts.push_back(f32_part("palette", {rows, int64_t(width)}, palettes));
  } else if (best == "lowrank") {
    e.params = {{"rank", factors->rank}, {"rows", factors->rows}, {"cols", factors->cols}};
    e.parts.push_back(f32_part("u", {factors->rows, factors->rank}, factors->u));
    e.parts.push_back(f32_part("s", {factors->rank}, factors->s));
    e.parts.push_back(f32_part("v", {factors->cols, factors->rank}, factors->v));
  }
  return e;
}

// An integer parameter of a tensor's encoding entry in deltaedit.json, or a Format error naming it.
int64_t encoding_param(const json& params, const char* key, const std::string& enc) {
  if (!params.is_object() || !params.contains(key) || !params[key].is_number_integer())
    throw Error(ErrorKind::Format, fmt::format("pack: encoding '{}' needs an integer parameter '{}'", enc, key));
  return params[key].get<int64_t>();
}

bool decode(const std::string& enc, const json& params, const PartGetter& get, std::span<float> edited,
            std::span<std::byte> out) {
  const uint64_t n = edited.size();
  auto need = [&](std::span<const std::byte> b, uint64_t bytes, const char* what) {
    if (b.size() != bytes)
      throw Error(ErrorKind::Format, fmt::format("pack part '{}' holds {} bytes, expected {}", what, b.size(), bytes));
  };
  std::vector<float> tmp;
  if (enc == "raw" || enc == "out") {
    auto b = get(enc);
    need(b, out.size(), enc.c_str());
    if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
    return true;
  }
  if (enc == "dense") {
    auto b = get("delta");
    need(b, n * 4, "delta");
    if (n) std::memcpy(edited.data(), b.data(), n * 4);
  } else if (enc == "sparse" || enc == "sparse_palette") {
    auto mask = get("mask");
    need(mask, (n + 7) / 8, "mask");
    uint64_t nnz = 0;
    for (auto byte : mask) nnz += uint64_t(std::popcount(std::to_integer<unsigned>(byte)));
    std::span<const float> values, palette;
    std::span<const std::byte> codes;
    unsigned k = 0;
    std::vector<float> tmp2;
    if (enc == "sparse") {
      auto v = get("values");
      need(v, nnz * 4, "values");
      values = float_view(v, tmp);
    } else {
      const int64_t bits = encoding_param(params, "bits", enc);
      if (bits < 1 || bits > 8) throw Error(ErrorKind::Format, "pack: palette bits out of range");
      k = static_cast<unsigned>(bits);
      palette = float_view(get("palette"), tmp2);
      codes = get("codes");
      need(codes, packed_bytes(nnz, k), "codes");
    }
    uint64_t j = 0;
    for (uint64_t i = 0; i < n; ++i) {
      if (!(std::to_integer<unsigned>(mask[i / 8]) >> (i % 8) & 1u)) {
        edited[i] = 0.0f;
        continue;
      }
      if (enc == "sparse") {
        edited[i] = values[j++];
      } else {
        uint32_t c = get_code(codes, j++, k);
        if (c >= palette.size()) throw Error(ErrorKind::Format, "pack: code outside its palette");
        edited[i] = palette[c];
      }
    }
  } else if (enc == "palette" || enc == "rowpalette") {
    const int64_t bits = encoding_param(params, "bits", enc);
    if (bits < 1 || bits > 8) throw Error(ErrorKind::Format, "pack: palette bits out of range");
    const unsigned k = static_cast<unsigned>(bits);
    auto codes = get("codes");
    need(codes, packed_bytes(n, k), "codes");
    auto palette = float_view(get("palette"), tmp);
    const uint64_t width = uint64_t(1) << k;
    uint64_t rows = 1, cols = n;
    if (enc == "rowpalette") {
      if (palette.empty() || palette.size() % width) throw Error(ErrorKind::Format, "pack: bad row palette");
      rows = palette.size() / width;
      cols = rows ? n / rows : 0;
      if (rows * cols != n) throw Error(ErrorKind::Format, "pack: row palette does not match the tensor");
    }
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t c = get_code(codes, i, k);
      const uint64_t base = enc == "rowpalette" ? (i / cols) * width : 0;
      if (base + c >= palette.size()) throw Error(ErrorKind::Format, "pack: code outside its palette");
      edited[i] = palette[base + c];
    }
  } else if (enc == "lowrank") {
    linalg::LowRankFactors f;
    f.rank = encoding_param(params, "rank", enc);
    f.rows = encoding_param(params, "rows", enc);
    f.cols = encoding_param(params, "cols", enc);
    unsigned __int128 cells = static_cast<unsigned __int128>(uint64_t(f.rows)) * uint64_t(f.cols);
    if (f.rank < 0 || f.rows < 0 || f.cols < 0)
      throw Error(ErrorKind::Format, "pack: low-rank factors with a negative rank or shape");
    if (cells >> 64)
      throw Error(ErrorKind::Format, fmt::format("pack: low-rank shape {} x {} overflows 64 bits", f.rows, f.cols));
    if (cells != n) throw Error(ErrorKind::Format, "pack: low-rank factors do not match the tensor");
    std::vector<float> t1, t2, t3;
    auto u = float_view(get("u"), t1);
    auto s = float_view(get("s"), t2);
    auto v = float_view(get("v"), t3);
    if (u.size() != uint64_t(f.rows) * uint64_t(f.rank) || s.size() != uint64_t(f.rank) ||
        v.size() != uint64_t(f.cols) * uint64_t(f.rank))
      throw Error(ErrorKind::Format, "pack: low-rank factor sizes do not match");
    f.u.assign(u.begin(), u.end());
    f.s.assign(s.begin(), s.end());
    f.v.assign(v.begin(), v.end());
    linalg::reconstruct_lowrank(f, edited);
  } else {
    throw Error(ErrorKind::Format, "pack: unknown encoding '" + enc + "'");
  }
  return false;
}

bool is_pack(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) && fs::exists(p / kPackFile, ec) && fs::exists(p / "deltaedit.json", ec);
}

namespace {
json describe(const fs::path& p, const json& meta, const io::SafetensorsFile& file) {
  json out;
  out["path"] = p.string();
  out["kind"] = "delta pack";
  out["ops"] = meta.value("ops", json::array());
  out["seed"] = meta.value("seed", json(nullptr));
  out["tensors"] = json::array();
  uint64_t params = 0, stored = 0;
  const std::string label = (p / "deltaedit.json").string();
  for (const auto& t : meta["pack"]["tensors"]) {
    const std::string name = t.at("name").get<std::string>();
    util::at_boundary(label, name, [&] {
      const uint64_t numel = util::checked_numel(t.at("shape").get<std::vector<int64_t>>(), label, name);
      uint64_t bytes = 0;
      for (const auto& part : t.at("parts")) {
        const auto* ti = file.header().find(name + "::" + part.get<std::string>());
        if (!ti) throw Error(ErrorKind::Format, "missing part " + part.get<std::string>(), (p / kPackFile).string(), name);
        bytes += ti->nbytes();
      }
      params = util::checked_add(params, numel, "parameter count");
      stored += bytes;
      out["tensors"].push_back({{"name", name},
                                {"encoding", t.at("encoding")},
                                {"dtype", t.at("dtype")},
                                {"shape", t.at("shape")},
                                {"bytes", bytes},
                                {"file", kPackFile},
                                {"bits_per_param", numel ? 8.0 * double(bytes) / double(numel) : 0.0}});
    });
  }
  out["total_params"] = params;
  out["total_bytes"] = stored;
  out["bits_per_param"] = params ? 8.0 * double(stored) / double(params) : 0.0;
  return out;
}
}  // namespace

json describe_pack(const fs::path& p) {
  const std::string meta_label = (p / "deltaedit.json").string();
  json meta = io::parse_json_strict(util::read_file(p / "deltaedit.json"), meta_label);
  auto file = io::SafetensorsFile::open(p / kPackFile);
  if (!meta.contains("pack") || !meta["pack"].is_object() || !meta["pack"].contains("tensors"))
    throw Error(ErrorKind::Format, "deltaedit.json has no pack section", meta_label);
  return util::at_boundary(meta_label, "", [&] { return describe(p, meta, file); });
}


}  // namespace deltaedit::pack
