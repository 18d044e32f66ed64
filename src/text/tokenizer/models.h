// Models: BPE (merges as "a b" strings or ["a","b"] pairs, byte_fallback, unk_token, fuse_unk,
// ignore_merges, continuing_subword_prefix, end_of_word_suffix). Internal.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer/common.h"

namespace deltaedit::text::detail {

class BpeModel {
 public:
  // Error(Unsupported) for another model type or BPE dropout, Error(Format) for malformed fields,
  // merges that use or produce tokens missing from the vocabulary.
  BpeModel(const json& j, const std::string& file);

  std::optional<int32_t> token_to_id(std::string_view t) const {
    auto it = vocab_.find(std::string(t));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* id_to_token(int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() ||
        !has_id_[static_cast<std::size_t>(id)])
      return nullptr;
    return &id_to_token_[static_cast<std::size_t>(id)];
  }
  std::size_t id_bound() const { return id_to_token_.size(); }

  // Appends the ids of one pre-tokenized word. Thread-safe (the word cache is locked).
  void encode_word(const std::string& word, std::vector<int32_t>& out,
                   const std::string& file) const;

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t new_id;
  };
  struct Cache {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  static constexpr std::size_t kCacheCapacity = 10000;
  static constexpr std::size_t kCacheMaxWordBytes = 256;

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeInfo* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  std::vector<int32_t> merge_word(const std::string& word, const std::string& file) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::string prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::optional<std::string> unk_token_;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

}  // namespace deltaedit::text::detail
