// Sizes as users type them: exact values, and every malformed or out-of-range text is refused.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "util/error.h"
#include "util/size.h"

using namespace deltaedit;

namespace {

std::string usage_message(const std::string& text) {
  try {
    util::parse_size(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage) << text;
    return e.what();
  }
  ADD_FAILURE() << "'" << text << "' was accepted";
  return {};
}

}  // namespace

TEST(Size, ExactValuesOfEveryUnit) {
  EXPECT_EQ(util::parse_size("4096"), 4096u);
  EXPECT_EQ(util::parse_size("7B"), 7u);
  EXPECT_EQ(util::parse_size("3kb"), 3000u);
  EXPECT_EQ(util::parse_size("500MB"), 500000000u);
  EXPECT_EQ(util::parse_size("5GB"), 5000000000u);
  EXPECT_EQ(util::parse_size("2TB"), 2000000000000u);
  EXPECT_EQ(util::parse_size("1KiB"), 1024u);
  EXPECT_EQ(util::parse_size("3mib"), 3u << 20);
  EXPECT_EQ(util::parse_size("1GiB"), uint64_t(1) << 30);
  EXPECT_EQ(util::parse_size("16TiB"), uint64_t(1) << 44);
  // Fractions are exact (no double on the way): 1.1GB is 1,100,000,000, not 1,100,000,000.0000001.
  EXPECT_EQ(util::parse_size("1.1GB"), 1100000000u);
  EXPECT_EQ(util::parse_size("1.5GiB"), 3u << 29);
  EXPECT_EQ(util::parse_size("0.001KB"), 1u);
  EXPECT_EQ(util::parse_size("2.9"), 2u);  // a fraction of a byte rounds down
}

TEST(Size, TheLargestValueAndOneMore) {
  EXPECT_EQ(util::parse_size("18446744073709551615"), UINT64_MAX);
  EXPECT_NE(usage_message("18446744073709551616").find("2^64"), std::string::npos);
  EXPECT_NE(usage_message("18446744073709551615KB").find("2^64"), std::string::npos);
  EXPECT_NE(usage_message("16777216TiB").find("2^64"), std::string::npos);  // 2^24 · 2^40
  EXPECT_EQ(util::parse_size("16777215TiB"), UINT64_MAX - (uint64_t(1) << 40) + 1);  // 2^64 − 2^40
  EXPECT_NE(usage_message("99999999999999999999999999GB").find("2^64"), std::string::npos);
}

TEST(Size, MalformedTextIsAUsageError) {
  for (const char* text : {"", ".", "..", "1.2.3GB", "-1GB", "-0", "+5GB", "GB", "5.GB", ".5GB",
                           "1e9", "5 GB", " 5GB", "5GB ", "5XB", "0x10", "5G B", "5GBB", "inf", "nan"})
    EXPECT_FALSE(usage_message(text).empty()) << text;
  EXPECT_NE(usage_message("5XB").find("unknown unit 'XB'"), std::string::npos);
  EXPECT_NE(usage_message("1.2.3GB").find("not a size"), std::string::npos);
}

TEST(Size, OptionErrorsNameTheFlagAndTheMinimum) {
  try {
    util::parse_size_option("--max-memory", ".");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_EQ(std::string(e.what()).rfind("--max-memory: '.'", 0), 0u) << e.what();
  }
  EXPECT_THROW(util::parse_size_option("--max-memory", "0"), Error);
  EXPECT_EQ(util::parse_size_option("--max-shard-size", "0", 0), 0u);
}
