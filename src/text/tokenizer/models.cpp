#include "text/tokenizer/models.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <queue>

namespace deltaedit::text::detail {

BpeModel::BpeModel(const json& j, const std::string& file) {
  const std::string type = type_of(j, file, "model");
  if (type != "BPE") fail(ErrorKind::Unsupported, file, unsupported_msg("model", type, "BPE"));
  if (j.contains("dropout") && !j.at("dropout").is_null()) {
    const double d = j.at("dropout").get<double>();
    if (d > 0.0 && d < 1.0)
      fail(ErrorKind::Unsupported, file,
           "BPE dropout " + std::to_string(d) + " is not supported (encoding is deterministic)");
  }
  const json& vocab = j.at("vocab");
  if (!vocab.is_object()) fail(ErrorKind::Format, file, "model.vocab must be a JSON object");
  vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id =
        get_int(it.value(), file, "model.vocab id of token '" + it.key() + "'", 0, kMaxId);
    const auto id32 = static_cast<int32_t>(id);
    vocab_[it.key()] = id32;
    if (static_cast<std::size_t>(id32) >= id_to_token_.size()) {
      if (static_cast<std::size_t>(id32) > vocab.size() * 4 + 1024)
        fail(ErrorKind::Format, file,
             "model.vocab id " + std::to_string(id) + " is far beyond the vocabulary size " +
                 std::to_string(vocab.size()));
      id_to_token_.resize(static_cast<std::size_t>(id32) + 1);
      has_id_.resize(static_cast<std::size_t>(id32) + 1, false);
    }
    id_to_token_[static_cast<std::size_t>(id32)] = it.key();
    has_id_[static_cast<std::size_t>(id32)] = true;
  }

  if (j.contains("continuing_subword_prefix") && !j.at("continuing_subword_prefix").is_null())
    prefix_ = j.at("continuing_subword_prefix").get<std::string>();
  if (j.contains("end_of_word_suffix") && !j.at("end_of_word_suffix").is_null())
    suffix_ = j.at("end_of_word_suffix").get<std::string>();
  fuse_unk_ = get_bool(j, "fuse_unk", false);
  byte_fallback_ = get_bool(j, "byte_fallback", false);
  ignore_merges_ = get_bool(j, "ignore_merges", false);
  if (j.contains("unk_token") && !j.at("unk_token").is_null()) {
    unk_token_ = j.at("unk_token").get<std::string>();
    if (auto it = vocab_.find(*unk_token_); it != vocab_.end()) unk_id_ = it->second;
  }
  byte_ids_.fill(-1);
  if (byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      if (auto it = vocab_.find(name); it != vocab_.end())
        byte_ids_[static_cast<std::size_t>(b)] = it->second;
    }
  }

  const json& merges = j.contains("merges") ? j.at("merges") : json::array();
  if (!merges.is_array()) fail(ErrorKind::Format, file, "model.merges must be a JSON array");
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (const auto& m : merges) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(ErrorKind::Format, file,
             "merge #" + std::to_string(rank) + " '" + s +
                 "' is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(
          ErrorKind::Format, file,
          "merge #" + std::to_string(rank) + " must be a \"a b\" string or an [\"a\", \"b\"] pair");
    }
    const auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end() || ib == vocab_.end())
      fail(ErrorKind::Format, file,
           "merge #" + std::to_string(rank) + " '" + a + " " + b +
               "' uses a token that is not in model.vocab");
    std::string merged = a;
    if (!prefix_.empty() && b.starts_with(prefix_))
      merged += b.substr(prefix_.size());
    else
      merged += b;
    const auto im = vocab_.find(merged);
    if (im == vocab_.end())
      fail(ErrorKind::Format, file,
           "merge #" + std::to_string(rank) + " '" + a + " " + b + "' produces '" + merged +
               "', which is not in model.vocab");
    merges_.insert_or_assign(pair_key(ia->second, ib->second), MergeInfo{rank, im->second});
    ++rank;
  }
}

void BpeModel::encode_word(const std::string& word, std::vector<int32_t>& out,
                           const std::string& file) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() <= kCacheMaxWordBytes) {
    std::lock_guard lock(cache_->mu);
    if (auto it = cache_->map.find(word); it != cache_->map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word, file);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() > kCacheMaxWordBytes) return;
  std::lock_guard lock(cache_->mu);
  if (cache_->map.size() < kCacheCapacity) cache_->map.emplace(word, std::move(ids));
}

std::vector<int32_t> BpeModel::merge_word(const std::string& word, const std::string& file) const {
  // Initial symbols: one per character (byte-fallback tokens or unk for unknown characters).
  std::vector<int32_t> sym;
  sym.reserve(word.size());
  std::optional<int32_t> pending_unk;
  const auto flush_unk = [&] {
    if (pending_unk) sym.push_back(*pending_unk);
    pending_unk.reset();
  };
  std::string piece;
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t start = i;
    i += std::min(utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch(word.data() + start, i - start);
    piece.clear();
    if (start > 0) piece += prefix_;
    piece += ch;
    if (i == word.size()) piece += suffix_;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      flush_unk();
      sym.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all &= byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        flush_unk();
        for (char c : ch) sym.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_token_) {
      if (!unk_id_)
        fail(ErrorKind::Format, file,
             "model.unk_token '" + *unk_token_ + "' is needed but not in model.vocab");
      if (pending_unk && !fuse_unk_) flush_unk();
      pending_unk = *unk_id_;
    }
    // Without an unk token, an unknown character is dropped (as the reference does).
  }
  flush_unk();
  if (sym.size() < 2 || merges_.empty()) return sym;

  // Rank-ordered merging over a doubly linked list of symbols: always the lowest rank first,
  // the leftmost on ties; stale queue entries are skipped.
  const std::size_t n = sym.size();
  std::vector<long> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (std::size_t k = 0; k < n; ++k) {
    prev[k] = static_cast<long>(k) - 1;
    next[k] = k + 1 < n ? static_cast<long>(k + 1) : -1;
  }
  struct Entry {
    uint32_t rank;
    std::size_t pos;
    int32_t new_id;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
  for (std::size_t k = 0; k + 1 < n; ++k)
    if (const MergeInfo* m = find_merge(sym[k], sym[k + 1])) queue.push({m->rank, k, m->new_id});
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    const auto right = static_cast<std::size_t>(next[top.pos]);
    const MergeInfo* cur = find_merge(sym[top.pos], sym[right]);
    if (!cur || cur->new_id != top.new_id) continue;
    sym[top.pos] = top.new_id;
    alive[right] = 0;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[static_cast<std::size_t>(next[right])] = static_cast<long>(top.pos);
    if (prev[top.pos] >= 0) {
      const auto p = static_cast<std::size_t>(prev[top.pos]);
      if (const MergeInfo* m = find_merge(sym[p], sym[top.pos]))
        queue.push({m->rank, p, m->new_id});
    }
    if (next[top.pos] >= 0) {
      const auto q = static_cast<std::size_t>(next[top.pos]);
      if (const MergeInfo* m = find_merge(sym[top.pos], sym[q]))
        queue.push({m->rank, top.pos, m->new_id});
    }
  }
  std::vector<int32_t> result;
  result.reserve(n);
  for (long k = 0; k >= 0; k = next[static_cast<std::size_t>(k)])
    result.push_back(sym[static_cast<std::size_t>(k)]);
  return result;
}

}  // namespace deltaedit::text::detail
