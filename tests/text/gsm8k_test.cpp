// GSM8K-style final-answer extraction and comparison.
#include <gtest/gtest.h>

#include "text/gsm8k.h"

using namespace deltaedit::text;

TEST(Gsm8kAnswer, Extraction) {
  EXPECT_EQ(extract_answer("so the total is #### 1,234"), "1234");
  EXPECT_EQ(extract_answer("#### 5.0"), "5");
  EXPECT_EQ(extract_answer("#### 2.50"), "2.5");
  EXPECT_EQ(extract_answer("#### 007"), "7");
  EXPECT_EQ(extract_answer("#### -3"), "-3");
  EXPECT_EQ(extract_answer("#### -0"), "0");
  EXPECT_EQ(extract_answer("5 + 3 = 8. 8 - 2 = 6. #### 6"), "6");
  EXPECT_EQ(extract_answer("#### 4 #### 9"), "9");
  EXPECT_EQ(extract_answer("#### 12 apples and 3 pears"), "12");
  EXPECT_EQ(extract_answer("She has 3 apples, then 10."), "10");
  EXPECT_EQ(extract_answer("5 + 3 = 8. 8 - 2 = 6."), "6");
  EXPECT_EQ(extract_answer("8-2 gives 6"), "6");
  EXPECT_EQ(extract_answer("it is 1,234,567 in all"), "1234567");
  EXPECT_EQ(extract_answer("counts 1,2,3"), "3");
  EXPECT_EQ(extract_answer("5 + 3 = 8. #### "), "8");  // nothing after the marker
  EXPECT_EQ(extract_answer("no numbers here"), "");
  EXPECT_EQ(extract_answer(""), "");
  EXPECT_EQ(extract_answer("####"), "");
}

TEST(Gsm8kAnswer, Matching) {
  EXPECT_TRUE(answers_match("1,234", "1234"));
  EXPECT_TRUE(answers_match("5.0", "5"));
  EXPECT_TRUE(answers_match(" 42\n", "42"));
  EXPECT_TRUE(answers_match("-0", "0"));
  EXPECT_FALSE(answers_match("42", "24"));
  EXPECT_FALSE(answers_match("4.5", "4"));
  EXPECT_FALSE(answers_match("", ""));
  EXPECT_FALSE(answers_match("abc", "abc"));
  EXPECT_FALSE(answers_match("4 2", "42"));
  EXPECT_EQ(normalize_number("1,234.500"), "1234.5");
  EXPECT_EQ(normalize_number("12a"), "");
}

// ------------------------------------------------------------------------------------------------
// Corpus
