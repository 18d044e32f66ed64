// util::parse_json_strict: the error names the file, and a duplicate key its path.
#include "util/strict_json.h"

#include <gtest/gtest.h>

#include <string>

#include "util/error.h"

namespace {

using deltaedit::Error;
using deltaedit::ErrorKind;
using deltaedit::util::DuplicateKeyNaming;
using deltaedit::util::kMaxJsonDepth;
using deltaedit::util::parse_json_strict;

Error error_of(const std::string& text, DuplicateKeyNaming naming = DuplicateKeyNaming::Path) {
  try {
    parse_json_strict(text, "x.json", naming);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << text;
  return Error(ErrorKind::Io, "");
}

TEST(StrictJson, DuplicateKeyNamesItsPath) {
  EXPECT_EQ(error_of(R"({"a": 1, "a": 2})").detail(), "duplicate JSON key 'a'");
  EXPECT_EQ(error_of(R"({"m": {"v": {"k": 1, "k": 2}}})").detail(),
            "duplicate JSON key 'k' in m.v");
  EXPECT_EQ(error_of(R"({"l": [1, {"x": 0}, [true, {"k": 1, "k": 1}]]})").detail(),
            "duplicate JSON key 'k' in l[2][1]");
  EXPECT_EQ(error_of(R"([{}, {"k": 1, "k": 1}])").detail(), "duplicate JSON key 'k' in [1]");
  // Keys of closed objects do not leak into the path of later ones.
  EXPECT_EQ(error_of(R"({"a": {"b": {}}, "c": [{"d": 1}, {"e": 1, "e": 2}]})").detail(),
            "duplicate JSON key 'e' in c[1]");
  const Error e = error_of(R"({"a": 1, "a": 2})");
  EXPECT_EQ(e.kind(), ErrorKind::Format);
  EXPECT_EQ(e.file(), "x.json");
  EXPECT_TRUE(e.tensor().empty());
}

TEST(StrictJson, TopLevelEntryNamingKeepsTheSafetensorsForm) {
  const Error e =
      error_of(R"({"w": {"dtype": "F32", "dtype": "F32"}})", DuplicateKeyNaming::TopLevelEntry);
  EXPECT_EQ(e.tensor(), "w");
  EXPECT_EQ(e.detail(), "duplicate JSON key 'dtype'");
  EXPECT_EQ(
      error_of(R"({"w": {"x": {"k": 1, "k": 2}}})", DuplicateKeyNaming::TopLevelEntry).detail(),
      "duplicate JSON key 'k' (nested)");
}

TEST(StrictJson, SameKeysInSiblingObjectsAreFine) {
  const auto j =
      parse_json_strict(R"({"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 3}, {"k": 4}]})", "ok.json");
  EXPECT_EQ(j.at("c").at(1).at("k"), 4);
}

TEST(StrictJson, NulDepthAndSyntaxErrorsNameTheFile) {
  for (const std::string& text : {std::string("{\"a\": 1}") + std::string(1, '\0'),
                                  std::string(size_t(kMaxJsonDepth + 1), '['),
                                  std::string("{\"a\": }"), std::string("{} x")}) {
    const Error e = error_of(text);
    EXPECT_EQ(e.kind(), ErrorKind::Format);
    EXPECT_EQ(e.file(), "x.json");
  }
}

}  // namespace
