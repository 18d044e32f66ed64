// The dtype names users type for --dtype, and the CLI's use of them.
#include "io/dtype.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../engine/engine_test_util.h"

using namespace deltaedit;
using namespace deltaedit::testing;

TEST(ComputeDtypeNames, EverySpellingMapsToItsDtype) {
  const std::vector<std::pair<std::string, io::DType>> cases{
      {"bf16", io::DType::BF16},     {"BF16", io::DType::BF16},   {"bfloat16", io::DType::BF16},
      {"BFloat16", io::DType::BF16}, {"fp16", io::DType::F16},    {"float16", io::DType::F16},
      {"F16", io::DType::F16},       {"half", io::DType::F16},    {"f32", io::DType::F32},
      {"F32", io::DType::F32},       {"float32", io::DType::F32}, {"fp32", io::DType::F32},
      {"FLOAT32", io::DType::F32},   {"f64", io::DType::F64},     {"float64", io::DType::F64},
      {"Float64", io::DType::F64},   {"FP64", io::DType::F64},    {"double", io::DType::F64}};
  for (const auto& [name, d] : cases) {
    auto got = io::parse_compute_dtype(name);
    ASSERT_TRUE(got.has_value()) << name;
    EXPECT_EQ(*got, d) << name;
  }
  for (const char* bad :
       {"", "bf", "f8", "F8_E4M3", "U8", "I32", "int8", "float8", "bfloat", "fp 16", "f32 "})
    EXPECT_FALSE(io::parse_compute_dtype(bad).has_value()) << bad;
  // The strict safetensors parser keeps accepting only the exact names.
  EXPECT_FALSE(io::parse_dtype("bf16").has_value());
  EXPECT_EQ(io::parse_dtype("BF16"), io::DType::BF16);
}

TEST(ComputeDtypeNames, EditAcceptsThemAndListsThemOnError) {
  TempDir t;
  const auto base = fixture("llama/base").string(), post = fixture("llama/post").string();
  auto r = run_cli({"edit", "--base", base, "--post", post, "--op", "scale:alpha=0.5", "--dtype",
                    "bfloat16", "--out", (t / "out").string()});
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(run_cli({"inspect", (t / "out").string(), "--json"}).out);
  for (const auto& x : j["tensors"]) EXPECT_EQ(x["dtype"], "BF16") << x["name"];

  auto bad = run_cli({"edit", "--base", base, "--post", post, "--op", "scale:alpha=0.5", "--dtype",
                      "int8", "--out", (t / "out2").string()});
  EXPECT_EQ(bad.status, 2) << bad.err;
  for (const char* n :
       {"'int8'", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32", "f64", "float64"})
    EXPECT_NE(bad.err.find(n), std::string::npos) << n << " in " << bad.err;
  EXPECT_FALSE(fs::exists(t / "out2"));
}
