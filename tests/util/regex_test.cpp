// util::Regex, the one PCRE2 wrapper: compile errors, options, search, anchored match, find_all.
#include "util/regex.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "util/error.h"
#include "util/name_regex.h"

namespace {

using deltaedit::Error;
using deltaedit::ErrorKind;
using deltaedit::util::NameRegex;
using deltaedit::util::Regex;
using deltaedit::util::RegexCompileError;
using deltaedit::util::RegexMatch;
using deltaedit::util::RegexOptions;
using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;

Regex compile(const std::string& pattern, RegexOptions options = {}) {
  RegexCompileError err;
  auto re = Regex::compile(pattern, options, err);
  EXPECT_TRUE(re.has_value()) << pattern << ": " << err.reason;
  return re ? std::move(*re) : Regex();
}

TEST(Regex, CompileErrorGivesOffsetAndReason) {
  RegexCompileError err;
  EXPECT_FALSE(Regex::compile("ab(c", {}, err).has_value());
  EXPECT_EQ(err.offset, 4u);  // the end of the pattern, where the ')' is missing
  EXPECT_NE(err.reason.find("missing closing parenthesis"), std::string::npos) << err.reason;
  EXPECT_FALSE(Regex::compile("a{2,1}", {}, err).has_value());
  EXPECT_FALSE(err.reason.empty());
}

TEST(Regex, SearchAndAnchoredMatch) {
  const Regex re = compile("b+");
  RegexMatch m = re.match("aabbbc");
  ASSERT_TRUE(m.found());
  EXPECT_EQ(m.begin, 2u);
  EXPECT_EQ(m.end, 5u);
  EXPECT_FALSE(re.match("aabbbc", 0, /*anchored=*/true).found());
  EXPECT_TRUE(re.match("aabbbc", 2, /*anchored=*/true).found());
  EXPECT_FALSE(re.match("aabbbc", 5).found());
  EXPECT_EQ(re.match("xyz").status, RegexMatch::Status::NotFound);
  // Copies share the compiled pattern; an empty Regex matches nothing.
  const Regex copy = re;
  EXPECT_TRUE(copy.match("b").found());
  EXPECT_FALSE(Regex().match("b").found());
}

TEST(Regex, UcpChangesWordClass) {
  const std::string e_acute = "\xC3\xA9";
  EXPECT_FALSE(compile(R"(^\w$)").match(e_acute).found());
  RegexOptions ucp;
  ucp.ucp = true;
  EXPECT_TRUE(compile(R"(^\w$)", ucp).match(e_acute).found());
}

TEST(Regex, InvalidUtf8SubjectFailsUnlessAllowed) {
  const std::string bad =
      "a\xFF"
      "b";
  const RegexMatch strict = compile("b").match(bad);
  EXPECT_EQ(strict.status, RegexMatch::Status::Failed);
  EXPECT_FALSE(strict.failure.empty());
  RegexOptions lenient;
  lenient.match_invalid_utf = true;
  const RegexMatch m = compile("b", lenient).match(bad);
  ASSERT_TRUE(m.found());
  EXPECT_EQ(m.begin, 2u);
}

TEST(Regex, FindAllSkipsEmptyMatchesByWholeCharacters) {
  RegexOptions o;
  o.jit = true;
  Ranges out;
  EXPECT_FALSE(compile("x*", o).find_all("\xC3\xA9x\xE2\x82\xACxx", out).has_value());
  EXPECT_EQ(out, (Ranges{{2, 3}, {6, 8}}));
  out.clear();
  EXPECT_FALSE(compile("a|b", o).find_all("abcab", out).has_value());
  EXPECT_EQ(out, (Ranges{{0, 1}, {1, 2}, {3, 4}, {4, 5}}));
}

TEST(Regex, MatchLimitIsReportedAsFailure) {
  RegexOptions o;
  o.match_limit = 1000;
  Ranges out;
  const auto failure = compile("(a+)+$", o).find_all(std::string(40, 'a') + "b", out);
  ASSERT_TRUE(failure.has_value());
  EXPECT_NE(failure->find("limit"), std::string::npos) << *failure;
}

TEST(NameRegex, ErrorsNameTheOptionAndPattern) {
  try {
    NameRegex("layers\\.(", "--include");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("--include pattern 'layers\\.(' does not compile at offset 9: ", 0), 0u)
        << what;
  }
  const NameRegex re("mlp\\.(up|down)", "--include");
  EXPECT_TRUE(re.search("model.layers.0.mlp.up.weight"));
  EXPECT_FALSE(re.search("model.layers.0.mlp.gate.weight"));
  EXPECT_TRUE(NameRegex().search("anything"));
  EXPECT_TRUE(NameRegex().empty());
}

}  // namespace
