// Tokenizer against the Hugging Face reference cases (tests/data/hf-reference/tokenizers), plus
// error handling, added-token flags, normalization and round-trip properties.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "util/error.h"

namespace fs = std::filesystem;
using deltaedit::Error;
using deltaedit::ErrorKind;
using deltaedit::text::Tokenizer;
using nlohmann::json;

namespace {

fs::path style_dir(const std::string& style) {
  return fs::path(DELTAEDIT_TEST_DATA) / "hf-reference" / "tokenizers" / style;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in.good()) << p;
  return json::parse(in);
}

std::string show(const std::vector<int32_t>& v) {
  std::ostringstream s;
  for (auto x : v) s << x << ' ';
  return s.str();
}

class ReferenceCases : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceCases, MatchesHuggingFace) {
  const std::string style = GetParam();
  const Tokenizer tok = Tokenizer::load(style_dir(style) / "tokenizer.json");
  const json cases = read_json(style_dir(style) / "cases.json");
  ASSERT_EQ(cases.at("style").get<std::string>(), style);
  std::size_t n = 0, passed = 0;
  for (const auto& c : cases.at("cases")) {
    ++n;
    const auto text = c.at("text").get<std::string>();
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    const auto ids_special = c.at("ids_with_special").get<std::vector<int32_t>>();
    const auto toks = c.at("tokens").get<std::vector<std::string>>();
    const auto decoded = c.at("decoded").get<std::string>();
    SCOPED_TRACE(style + " text: \"" + text + "\"");

    const auto got = tok.encode(text, false);
    const auto got_special = tok.encode(text, true);
    const auto got_tokens = tok.tokens(got);
    const auto got_decoded = tok.decode(ids_special, /*skip_special_tokens=*/true);
    EXPECT_EQ(got, ids) << "got " << show(got) << "\nwant " << show(ids);
    EXPECT_EQ(got_special, ids_special);
    EXPECT_EQ(got_tokens, toks);
    EXPECT_EQ(got_decoded, decoded);
    EXPECT_EQ(tok.decode(ids, true), decoded);
    // Without special tokens among the ids, keeping specials changes nothing.
    if (std::none_of(ids.begin(), ids.end(), [&](int32_t id) { return tok.is_special(id); })) {
      EXPECT_EQ(tok.decode(ids, false), decoded);
    }
    if (got == ids && got_special == ids_special && got_tokens == toks && got_decoded == decoded)
      ++passed;
  }
  EXPECT_EQ(n, 22u);
  EXPECT_EQ(passed, n) << style << ": " << passed << "/" << n << " cases match";
}

INSTANTIATE_TEST_SUITE_P(Styles, ReferenceCases,
                         ::testing::Values("llama3", "qwen2", "gpt2", "spbpe"),
                         [](const auto& info) { return info.param; });

TEST(Tokenizer, LoadsFromModelDirectory) {
  const Tokenizer tok = Tokenizer::load(style_dir("llama3"));
  EXPECT_EQ(tok.vocab_size(), 1000u);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.token_to_id("<|eot_id|>"), 2);
  EXPECT_EQ(tok.id_to_token(2), "<|eot_id|>");
  EXPECT_FALSE(tok.token_to_id("definitely not a token").has_value());
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(100));

  const Tokenizer sp = Tokenizer::load(style_dir("spbpe"));
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  const Tokenizer qw = Tokenizer::load(style_dir("qwen2"));
  EXPECT_FALSE(qw.bos_id().has_value());
  EXPECT_EQ(qw.eos_id(), 0);
}

TEST(Tokenizer, SpecialTokensSkippedOrKeptWhenDecoding) {
  const Tokenizer tok = Tokenizer::load(style_dir("llama3"));
  const auto ids = tok.encode("<|begin_of_text|>hi<|eot_id|>", true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tok.decode(ids, false), "<|begin_of_text|><|begin_of_text|>hi<|eot_id|>");
  EXPECT_EQ(tok.decode(ids, true), "hi");
}

TEST(Tokenizer, TokensRejectsUnknownIds) {
  const Tokenizer tok = Tokenizer::load(style_dir("gpt2"));
  const std::vector<int32_t> bad{5, 123456};
  EXPECT_THROW(tok.tokens(bad), Error);
  EXPECT_EQ(tok.decode(bad, false), tok.decode(std::vector<int32_t>{5}, false));
}

// ---------------------------------------------------------------------------------------------
// Errors

ErrorKind kind_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_FALSE(std::string(e.what()).empty());
    return e.kind();
  }
  ADD_FAILURE() << "no Error thrown";
  return ErrorKind::Numeric;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

json minimal_bpe() {
  return json::parse(R"({
    "version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
    "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
}

TEST(TokenizerErrors, MissingFile) {
  const fs::path p = fs::temp_directory_path() / "deltaedit-no-such-dir" / "tokenizer.json";
  EXPECT_EQ(kind_of([&] { Tokenizer::load(p); }), ErrorKind::Io);
  EXPECT_NE(message_of([&] { Tokenizer::load(p); }).find("tokenizer.json"), std::string::npos);
  const fs::path dir = fs::temp_directory_path() / "deltaedit-empty-tokenizer-dir";
  fs::create_directories(dir);
  EXPECT_EQ(kind_of([&] { Tokenizer::load(dir); }), ErrorKind::Io);
  fs::remove_all(dir);
}

TEST(TokenizerErrors, BrokenJson) {
  EXPECT_EQ(kind_of([] { Tokenizer::from_json_string("{\"model\": {", "broken.json"); }),
            ErrorKind::Format);
  EXPECT_NE(message_of([] {
              Tokenizer::from_json_string("{\"model\": {", "broken.json");
            }).find("broken.json"),
            std::string::npos);
  EXPECT_EQ(kind_of([] { Tokenizer::from_json_string("[1,2]"); }), ErrorKind::Format);
  EXPECT_EQ(kind_of([] { Tokenizer::from_json_string("{}"); }), ErrorKind::Format);
  json j = minimal_bpe();
  j["model"]["vocab"] = json::array({1, 2});
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Format);
  j = minimal_bpe();
  j["model"]["merges"] = json::array({"a c"});
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Format);
  j = minimal_bpe();
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Format);
  for (const char* bad_id : {"1e40", "1.5", "-3", "18446744073709551615"}) {
    j = minimal_bpe();
    j["model"]["vocab"]["a"] = json::parse(bad_id);
    EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Format) << bad_id;
  }
  j = minimal_bpe();
  j["added_tokens"] = json::array({{{"id", "zero"}, {"content", "x"}}});
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Format);
}

// tokenizer.json goes through the strict JSON layer of safetensors headers: a duplicate key is an
// error naming the key, where it sits and the file (never "last one wins").
TEST(TokenizerErrors, DuplicateVocabularyKeyNamesKeyAndFile) {
  const std::string text = R"({"model": {"type": "BPE", "merges": [],
      "vocab": {"a": 0, "hello": 1, "b": 2, "hello": 3}}})";
  const auto f = [&] { Tokenizer::from_json_string(text, "dup-vocab.json"); };
  EXPECT_EQ(kind_of(f), ErrorKind::Format);
  const std::string msg = message_of(f);
  EXPECT_NE(msg.find("dup-vocab.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("duplicate JSON key 'hello'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.vocab"), std::string::npos) << msg;
  // The same key spelled with an escape is the same key.
  const std::string escaped = R"({"model": {"type": "BPE", "merges": [],
      "vocab": {"hello": 0, "hello": 1}}})";
  EXPECT_NE(message_of([&] {
              Tokenizer::from_json_string(escaped, "esc.json");
            }).find("duplicate JSON key 'hello' in model.vocab"),
            std::string::npos);
  // Without the duplicate the same vocabulary loads.
  const Tokenizer ok = Tokenizer::from_json_string(
      R"({"model": {"type": "BPE", "merges": [], "vocab": {"a": 0, "hello": 1}}})");
  EXPECT_EQ(ok.token_to_id("hello"), 1);
}

TEST(TokenizerErrors, DuplicateKeysAnywhereNameThePath) {
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{" + model + ", " + model + "}", "duplicate JSON key 'model'"},
      {R"({"model": {"type": "BPE", "type": "BPE", "vocab": {"a": 0}, "merges": []}})",
       "duplicate JSON key 'type' in model"},
      {"{" + model + R"(, "added_tokens": [{"id": 1, "content": "x"},
          {"id": 2, "content": "y", "special": true, "special": false}]})",
       "duplicate JSON key 'special' in added_tokens[1]"},
      {"{" + model + R"(, "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"},
          {"type": "Replace", "pattern": {"String": "a", "String": "b"}, "content": ""}]}})",
       "duplicate JSON key 'String' in normalizer.normalizers[1].pattern"},
  };
  for (const auto& c : cases) {
    const std::string& text = c.first;
    const std::string& want = c.second;
    SCOPED_TRACE(text);
    const auto f = [&] { Tokenizer::from_json_string(text, "dups.json"); };
    EXPECT_EQ(kind_of(f), ErrorKind::Format);
    const std::string msg = message_of(f);
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_NE(msg.find("dups.json"), std::string::npos) << msg;
  }
}

TEST(TokenizerErrors, NulBytesAndDeepNestingAreRejectedNamingTheFile) {
  const std::string good = minimal_bpe().dump();
  const std::vector<std::string> bad = {
      good + std::string(1, '\0'),
      std::string(R"({"note": "1)") + std::string(1, '\0') + R"(", )" + good.substr(1),
      R"({"extra": )" + std::string(65, '[') + std::string(65, ']') + ", " + good.substr(1),
      std::string(1'000'000, '['),
      good + " x",
  };
  for (const std::string& text : bad) {
    const auto f = [&] { Tokenizer::from_json_string(text, "strict.json"); };
    EXPECT_EQ(kind_of(f), ErrorKind::Format);
    EXPECT_NE(message_of(f).find("strict.json"), std::string::npos) << message_of(f);
  }
  // 64 levels are fine (the limit of safetensors headers too).
  EXPECT_NO_THROW(Tokenizer::from_json_string(R"({"extra": )" + std::string(63, '[') +
                                              std::string(63, ']') + ", " + good.substr(1)));
}

TEST(TokenizerErrors, JsonErrorsInFilesNameTheFile) {
  const fs::path dir = fs::temp_directory_path() / "deltaedit-tokenizer-json-errors";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto write = [](const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  };
  const fs::path tok = dir / "tokenizer.json", cfg = dir / "tokenizer_config.json";
  write(tok, R"({"model": {"type": "BPE", "merges": [], "vocab": {"a": 0, "a": 1}}})");
  std::string msg = message_of([&] { Tokenizer::load(dir); });
  EXPECT_NE(msg.find(tok.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("duplicate JSON key 'a' in model.vocab"), std::string::npos) << msg;
  EXPECT_EQ(kind_of([&] { Tokenizer::load(tok); }), ErrorKind::Format);

  write(tok, minimal_bpe().dump());
  EXPECT_NO_THROW(Tokenizer::load(dir));
  for (const std::string& bad_cfg :
       {std::string(R"({"bos_token": "a", "bos_token": "b"})"), std::string("{\"bos_token\": "),
        std::string("[]"), std::string(R"({"x": ")") + std::string(1, '\0') + "\"}"}) {
    SCOPED_TRACE(bad_cfg);
    write(cfg, bad_cfg);
    EXPECT_EQ(kind_of([&] { Tokenizer::load(dir); }), ErrorKind::Format);
    msg = message_of([&] { Tokenizer::load(dir); });
    EXPECT_NE(msg.find(cfg.string()), std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

TEST(TokenizerErrors, UnsupportedComponents) {
  json j = minimal_bpe();
  j["model"]["type"] = "Unigram";
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump(), "uni.json"); }),
            ErrorKind::Unsupported);
  const std::string msg = message_of([&] { Tokenizer::from_json_string(j.dump(), "uni.json"); });
  EXPECT_NE(msg.find("Unigram"), std::string::npos) << msg;
  EXPECT_NE(msg.find("BPE"), std::string::npos) << msg;
  EXPECT_NE(msg.find("uni.json"), std::string::npos) << msg;

  j = minimal_bpe();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Unsupported);
  j = minimal_bpe();
  j["pre_tokenizer"] = {{"type", "UnicodeScripts"}};
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Unsupported);
  j = minimal_bpe();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Unsupported);
  j = minimal_bpe();
  j["post_processor"] = {{"type", "Mystery"}};
  EXPECT_EQ(kind_of([&] { Tokenizer::from_json_string(j.dump()); }), ErrorKind::Unsupported);
}

TEST(TokenizerErrors, InvalidUtf8Input) {
  const Tokenizer tok = Tokenizer::load(style_dir("gpt2"));
  EXPECT_EQ(kind_of([&] { tok.encode("ok \xC3\x28 bad", false); }), ErrorKind::Usage);
}

// ---------------------------------------------------------------------------------------------
// Components on small hand-made tokenizers

json char_vocab_tokenizer(const std::string& chars) {
  json j = minimal_bpe();
  json vocab = json::object();
  int id = 0;
  for (std::size_t i = 0; i < chars.size();) {
    std::size_t n = 1;
    const auto b = static_cast<unsigned char>(chars[i]);
    if (b >= 0xF0)
      n = 4;
    else if (b >= 0xE0)
      n = 3;
    else if (b >= 0xC0)
      n = 2;
    vocab[chars.substr(i, n)] = id++;
    i += n;
  }
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = json::array();
  return j;
}

TEST(TokenizerComponents, MergesAsArraysAndRankOrder) {
  json j = minimal_bpe();
  j["model"]["vocab"] = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
  j["model"]["merges"] =
      json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"a", "bc"})});
  const Tokenizer tok = Tokenizer::from_json_string(j.dump());
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{5}));
  EXPECT_EQ(tok.encode("ab", false), (std::vector<int32_t>{3}));
  EXPECT_EQ(tok.encode("abab", false), (std::vector<int32_t>{3, 3}));
  // Unknown characters without unk token are dropped (and their neighbours may then merge).
  EXPECT_EQ(tok.encode("axb", false), (std::vector<int32_t>{3}));
  EXPECT_EQ(tok.encode("xcx", false), (std::vector<int32_t>{2}));
}

TEST(TokenizerComponents, IgnoreMergesEmitsWholeVocabWords) {
  json j = minimal_bpe();
  j["model"]["vocab"] = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}};
  j["model"]["merges"] = json::array({"a b"});
  EXPECT_EQ(Tokenizer::from_json_string(j.dump()).encode("abc", false),
            (std::vector<int32_t>{3, 2}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(Tokenizer::from_json_string(j.dump()).encode("abc", false), (std::vector<int32_t>{4}));
}

TEST(TokenizerComponents, UnkAndFuseUnk) {
  json j = minimal_bpe();
  j["model"]["vocab"] = {{"<unk>", 0}, {"a", 1}};
  j["model"]["merges"] = json::array();
  j["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(Tokenizer::from_json_string(j.dump()).encode("axya", false),
            (std::vector<int32_t>{1, 0, 0, 1}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(Tokenizer::from_json_string(j.dump()).encode("axya", false),
            (std::vector<int32_t>{1, 0, 1}));
}

TEST(TokenizerComponents, AddedTokenFlags) {
  json j = char_vocab_tokenizer("abcdefghijklmnopqrstuvwxyz <>_");
  j["added_tokens"] = json::array({
      {{"id", 100}, {"content", "<l>"}, {"lstrip", true}, {"special", true}, {"normalized", false}},
      {{"id", 101}, {"content", "<r>"}, {"rstrip", true}, {"special", true}, {"normalized", false}},
      {{"id", 102},
       {"content", "word"},
       {"single_word", true},
       {"special", false},
       {"normalized", false}},
  });
  const Tokenizer tok = Tokenizer::from_json_string(j.dump());
  const auto id = [&](const char* t) { return *tok.token_to_id(t); };
  // lstrip swallows the spaces before the token, rstrip those after it.
  EXPECT_EQ(tok.encode("a  <l>b", false), (std::vector<int32_t>{id("a"), 100, id("b")}));
  EXPECT_EQ(tok.encode("a<r>  b", false), (std::vector<int32_t>{id("a"), 101, id("b")}));
  EXPECT_EQ(tok.encode("a <r> b", false), (std::vector<int32_t>{id("a"), id(" "), 101, id("b")}));
  // single_word: only matched when not inside a word.
  EXPECT_EQ(tok.encode("a word b", false),
            (std::vector<int32_t>{id("a"), id(" "), 102, id(" "), id("b")}));
  EXPECT_EQ(tok.encode("words", false),
            (std::vector<int32_t>{id("w"), id("o"), id("r"), id("d"), id("s")}));
  EXPECT_EQ(tok.decode(tok.encode("x<l>y", false), true), "x y");  // no decoder: joined by spaces
  EXPECT_EQ(tok.vocab_size(), 103u);
}

TEST(TokenizerComponents, NormalizedAddedTokensMatchAfterNormalization) {
  json j = char_vocab_tokenizer("abcXY");
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "X"}}}, {"content", "Y"}};
  j["added_tokens"] = json::array({
      {{"id", 50}, {"content", "aY"}, {"normalized", true}, {"special", false}},
      {{"id", 51}, {"content", "bX"}, {"normalized", false}, {"special", false}},
  });
  const Tokenizer tok = Tokenizer::from_json_string(j.dump());
  EXPECT_EQ(tok.encode("aX", false), (std::vector<int32_t>{50}));
  EXPECT_EQ(tok.encode("bX", false), (std::vector<int32_t>{51}));
  EXPECT_EQ(tok.encode("cX", false), (std::vector<int32_t>{2, 4}));
}

TEST(TokenizerComponents, NfcNormalizer) {
  json j = char_vocab_tokenizer("e\xC3\xA9\xCC\x81\xEA\xB0\x80");  // e é U+0301 가
  j["normalizer"] = {{"type", "NFC"}};
  const Tokenizer tok = Tokenizer::from_json_string(j.dump());
  EXPECT_EQ(tok.encode("e\xCC\x81", false), (std::vector<int32_t>{1}));  // e + ◌́ -> é
  EXPECT_EQ(tok.encode("\xE1\x84\x80\xE1\x85\xA1", false),
            (std::vector<int32_t>{3}));  // ᄀ+ᅡ -> 가
  EXPECT_EQ(tok.encode("\xC3\xA9", false), (std::vector<int32_t>{1}));
}

TEST(TokenizerComponents, NfcReordersMarksBeforeComposing) {
  // Unicode canonical ordering: U+0316 (ccc 220) sorts before U+0301 (ccc 230); U+0301 then still
  // composes with the starter 'a' (U+0316 does not block it), giving U+00E1 U+0316.
  json j = char_vocab_tokenizer("a\xC3\xA1\xCC\x96\xCC\x81");  // a á ◌̖ ◌́
  j["normalizer"] = {{"type", "NFC"}};
  const Tokenizer tok = Tokenizer::from_json_string(j.dump());
  EXPECT_EQ(tok.encode("a\xCC\x81\xCC\x96", false), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(tok.encode("a\xCC\x96\xCC\x81", false), (std::vector<int32_t>{1, 2}));
  // U+212B ANGSTROM SIGN is a singleton decomposition: NFC gives U+00C5, never U+212B back.
  json k = char_vocab_tokenizer("\xC3\x85\xE2\x84\xAB");  // Å (U+00C5) Å (U+212B)
  k["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(Tokenizer::from_json_string(k.dump()).encode("\xE2\x84\xAB", false),
            (std::vector<int32_t>{0}));
}

TEST(TokenizerComponents, SplitBehaviors) {
  json base = char_vocab_tokenizer("ab-");
  base["model"]["vocab"]["a-"] = 10;
  base["model"]["vocab"]["-b"] = 11;
  base["model"]["merges"] = json::array({"a -", "- b"});
  const auto run = [&](const char* behavior, bool invert) {
    json j = base;
    j["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"String", "-"}}},
                          {"behavior", behavior},
                          {"invert", invert}};
    return Tokenizer::from_json_string(j.dump()).encode("a-b", false);
  };
  EXPECT_EQ(run("Removed", false), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(run("Isolated", false), (std::vector<int32_t>{0, 2, 1}));
  EXPECT_EQ(run("MergedWithPrevious", false), (std::vector<int32_t>{10, 1}));
  EXPECT_EQ(run("MergedWithNext", false), (std::vector<int32_t>{0, 11}));
  EXPECT_EQ(run("Removed", true), (std::vector<int32_t>{2}));
}

TEST(TokenizerComponents, MetaspacePreTokenizerAndDecoder) {
  json j = char_vocab_tokenizer(
      "\xE2\x96\x81"
      "abc");
  j["model"]["vocab"]
   ["\xE2\x96\x81"
    "a"] = 10;
  j["model"]["merges"] = json::array({"\xE2\x96\x81 a"});
  j["pre_tokenizer"] = {{"type", "Metaspace"},
                        {"replacement", "\xE2\x96\x81"},
                        {"prepend_scheme", "always"},
                        {"split", true}};
  j["decoder"] = {{"type", "Metaspace"},
                  {"replacement", "\xE2\x96\x81"},
                  {"prepend_scheme", "always"},
                  {"split", true}};
  const Tokenizer tok = Tokenizer::from_json_string(j.dump());
  const auto ids = tok.encode("ab a", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{10, 2, 10}));
  EXPECT_EQ(tok.decode(ids, false), "ab a");
}

// ---------------------------------------------------------------------------------------------
// Properties

std::string random_utf8(std::mt19937& rng, std::size_t max_chars) {
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},     {0x09, 0x0D},     {0xA0, 0x24F},    {0x370, 0x52F},
      {0x3040, 0x30FF}, {0x4E00, 0x4F00}, {0xAC00, 0xAD00}, {0x1F300, 0x1F6FF},
      {0x200B, 0x200D}, {0x300, 0x36F},   {0xE000, 0xE010}, {0x10000, 0x10100}};
  std::uniform_int_distribution<std::size_t> len(0, max_chars), pick(0, ranges.size() - 1);
  std::string s;
  const std::size_t n = len(rng);
  for (std::size_t i = 0; i < n; ++i) {
    const auto [lo, hi] = ranges[pick(rng)];
    const char32_t c = std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
    if (c < 0x80) {
      s.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (c >> 6)));
      s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      s.push_back(static_cast<char>(0xE0 | (c >> 12)));
      s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xF0 | (c >> 18)));
      s.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return s;
}

TEST(TokenizerProperties, ByteLevelRoundTripOnRandomUtf8) {
  for (const char* style : {"llama3", "qwen2", "gpt2"}) {
    const Tokenizer tok = Tokenizer::load(style_dir(style));
    std::mt19937 rng(1234);
    for (int i = 0; i < 300; ++i) {
      const std::string s = random_utf8(rng, 40);
      const auto ids = tok.encode(s, true);
      ASSERT_EQ(tok.decode(ids, true), s) << style << " case " << i;
      ASSERT_EQ(tok.decode(tok.encode(s, false), false), s) << style << " case " << i;
    }
  }
}

TEST(TokenizerProperties, SentencePieceStyleRoundTrip) {
  const Tokenizer tok = Tokenizer::load(style_dir("spbpe"));
  std::mt19937 rng(99);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_utf8(rng, 40);
    if (s.find("\xE2\x96\x81") != std::string::npos) continue;
    ASSERT_EQ(tok.decode(tok.encode(s, true), true), s) << "case " << i;
  }
}

TEST(TokenizerProperties, LargeInputIsFastAndThreadSafe) {
  const Tokenizer tok = Tokenizer::load(style_dir("llama3"));
  std::mt19937 rng(7);
  std::string big;
  while (big.size() < (1u << 20)) big += random_utf8(rng, 64) + " the quick brown fox 12345\n";
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(big, false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 20.0) << "encoding 1 MiB took " << secs << " s";
  EXPECT_EQ(tok.decode(ids, false), big);

  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  const std::string part = big.substr(0, 100000);
  for (auto& r : results) threads.emplace_back([&] { r = tok.encode(part, false); });
  for (auto& t : threads) t.join();
  const auto want = tok.encode(part, false);
  for (const auto& r : results) EXPECT_EQ(r, want);
}

}  // namespace
