// safetensors header validation: the reference test vectors and every rejection rule of
// RELIABILITY.md, checked both on in-memory images (parse_header) and on files (open).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "util/error.h"

namespace fs = std::filesystem;
using deltaedit::Error;
using deltaedit::ErrorKind;
using namespace deltaedit::io;

namespace {

using Bytes = std::vector<std::byte>;

void put_u64(Bytes& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(std::byte(uint8_t(v >> (8 * i))));
}
void put_str(Bytes& out, std::string_view s) {
  for (char c : s) out.push_back(std::byte(uint8_t(c)));
}

// 8-byte little-endian N (the header length unless overridden), the header, then the data.
Bytes image(std::string_view header, std::string_view data = {}, std::optional<uint64_t> n = {}) {
  Bytes out;
  put_u64(out, n ? *n : header.size());
  put_str(out, header);
  put_str(out, data);
  return out;
}

// `len` bytes of a recognisable pattern.
std::string filler(size_t len) {
  std::string s(len, '\0');
  for (size_t i = 0; i < len; ++i) s[i] = char(uint8_t(i * 37 + 11));
  return s;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

std::string object(const std::vector<std::string>& members) {
  std::string s = "{";
  for (size_t i = 0; i < members.size(); ++i) s += (i ? "," : "") + members[i];
  return s + "}";
}

// The first reference vector: I32[2,2] at [0,16], header padded with spaces to 60 bytes, so the
// data starts at offset 68.
const std::string kValidHeader = [] {
  std::string h = object({entry("test", "I32", "[2,2]", "[0,16]")});
  h.resize(60, ' ');
  return h;
}();
const std::string kValidData = [] {
  const int32_t v[4] = {1, -2, 0x7FFFFFFF, INT32_MIN};
  std::string s(16, '\0');
  std::memcpy(s.data(), v, 16);
  return s;
}();

template <class F>
std::optional<Error> error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-deltaedit exception: " << e.what();
    return std::nullopt;
  }
  return std::nullopt;
}

void check_error(const std::optional<Error>& e, ErrorKind kind, const std::string& file,
                 const std::vector<std::string>& tensors) {
  ASSERT_TRUE(e.has_value()) << "accepted, but must be rejected";
  const std::string what = e->what();
  EXPECT_EQ(e->kind(), kind) << what;
  EXPECT_EQ(e->file(), file) << what;
  EXPECT_NE(what.find(file), std::string::npos) << "message does not name the file: " << what;
  if (!tensors.empty()) {
    bool named = false;
    for (const auto& t : tensors) named = named || what.find(t) != std::string::npos;
    EXPECT_TRUE(named) << "message does not name the tensor (" << tensors.front() << "...): " << what;
  }
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("deltaedit-st-" + std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const Bytes& img, const std::string& name = "t.safetensors") {
    const fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(img.data()), std::streamsize(img.size()));
    out.close();
    EXPECT_TRUE(out.good());
    return p;
  }

  // Parses the image both ways; both must accept and agree.
  Header accept(const Bytes& img) {
    Header h;
    try {
      h = parse_header(img, img.size(), "mem.safetensors");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "parse_header rejected a valid image: " << e.what();
      return h;
    }
    try {
      auto f = SafetensorsFile::open(write(img));
      EXPECT_EQ(f.file_size(), img.size());
      EXPECT_EQ(f.header().tensors.size(), h.tensors.size());
      for (size_t i = 0; i < h.tensors.size() && i < f.header().tensors.size(); ++i) {
        EXPECT_EQ(f.header().tensors[i].name, h.tensors[i].name);
        EXPECT_EQ(f.header().tensors[i].begin, h.tensors[i].begin);
        EXPECT_EQ(f.header().tensors[i].end, h.tensors[i].end);
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "open rejected a valid file: " << e.what();
    }
    return h;
  }

  // Both parse_header and SafetensorsFile::open must reject with Error(Format) naming the file
  // and, when `tensors` is given, one of those tensors.
  void reject(const Bytes& img, const std::vector<std::string>& tensors = {}) {
    {
      SCOPED_TRACE("parse_header");
      check_error(error_of([&] { parse_header(img, img.size(), "mem.safetensors"); }), ErrorKind::Format,
                  "mem.safetensors", tensors);
    }
    {
      SCOPED_TRACE("SafetensorsFile::open");
      const fs::path p = write(img);
      check_error(error_of([&] { SafetensorsFile::open(p); }), ErrorKind::Format, p.string(), tensors);
    }
  }

  fs::path dir_;
};

// ---------------------------------------------------------------- reference vectors: valid

TEST_F(SafetensorsTest, ValidI32AtUnalignedOffset68) {
  ASSERT_EQ(kValidHeader.size(), 60u);
  const Bytes img = image(kValidHeader, kValidData);
  ASSERT_EQ(img.size(), 8u + 60u + 16u);
  Header h = accept(img);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.header_len, 60u);
  EXPECT_EQ(h.data_offset(), 68u);
  const TensorInfo& t = h.tensors[0];
  EXPECT_EQ(t.name, "test");
  EXPECT_EQ(t.dtype, DType::I32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.begin, 0u);
  EXPECT_EQ(t.end, 16u);
  EXPECT_EQ(t.numel(), 4u);
  EXPECT_EQ(t.nbytes(), 16u);
  EXPECT_TRUE(h.metadata.empty());
  EXPECT_EQ(h.find("test"), &h.tensors[0]);
  EXPECT_EQ(h.find("missing"), nullptr);

  auto f = SafetensorsFile::open(write(img));
  auto d = f.data("test");
  ASSERT_EQ(d.size(), 16u);
  int32_t v[4];
  std::memcpy(v, d.data(), 16);
  EXPECT_EQ(v[0], 1);
  EXPECT_EQ(v[1], -2);
  EXPECT_EQ(v[2], 0x7FFFFFFF);
  EXPECT_EQ(v[3], INT32_MIN);
  // The bytes handed out are the file's bytes 68..84.
  EXPECT_EQ(std::memcmp(d.data(), img.data() + 68, 16), 0);
  check_error(error_of([&] { f.data("missing"); }), ErrorKind::Format, f.path().string(), {"missing"});

  // A moved-from file keeps nothing; the moved-to one still reads.
  SafetensorsFile g = std::move(f);
  EXPECT_EQ(std::memcmp(g.data("test").data(), img.data() + 68, 16), 0);
}

TEST_F(SafetensorsTest, HeaderBytesNeedOnlyCoverTheHeader) {
  // parse_header gets the first 8+N bytes and the true file size, as a streaming reader would.
  const Bytes img = image(kValidHeader, kValidData);
  std::span<const std::byte> prefix(img.data(), 68);
  Header h = parse_header(prefix, img.size(), "prefix.safetensors");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].end, 16u);
  // ...and the size check still sees a wrong file size.
  check_error(error_of([&] { parse_header(prefix, img.size() + 1, "prefix.safetensors"); }), ErrorKind::Format,
              "prefix.safetensors", {});
}

TEST_F(SafetensorsTest, ValidEmptyObjectPaddedWithJsonWhitespace) {
  for (std::string h : {"{}\r \t\n", "{}\r\n\t      ", "{} \t\r\n"}) {
    SCOPED_TRACE(h.size());
    Header hd = accept(image(h));
    EXPECT_TRUE(hd.tensors.empty());
    EXPECT_TRUE(hd.metadata.empty());
  }
}

TEST_F(SafetensorsTest, ValidLeadingWhitespace) {
  Header h = accept(image(" \t\r\n" + object({entry("lead", "I32", "[2,2]", "[0,16]")}), kValidData));
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].name, "lead");
  EXPECT_TRUE(accept(image("\n\n{}")).tensors.empty());
}

TEST_F(SafetensorsTest, ValidEmptyTensor) {
  Header h = accept(image(object({entry("empty", "I32", "[2,0]", "[0,0]")})));
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].numel(), 0u);
  EXPECT_EQ(h.tensors[0].nbytes(), 0u);
  auto f = SafetensorsFile::open(write(image(object({entry("empty", "I32", "[2,0]", "[0,0]")}))));
  EXPECT_EQ(f.data("empty").size(), 0u);
}

TEST_F(SafetensorsTest, ValidScalar) {
  Header h = accept(image(object({entry("scalar", "F32", "[]", "[0,4]")}), filler(4)));
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_TRUE(h.tensors[0].shape.empty());
  EXPECT_EQ(h.tensors[0].numel(), 1u);
  EXPECT_EQ(h.tensors[0].nbytes(), 4u);
}

TEST_F(SafetensorsTest, ValidMetadataAndSeveralTensorsSortedByOffset) {
  // Written out of offset order; the header lists them by offset.
  const std::string h = object({entry("second", "BF16", "[3]", "[8,14]"), "\"__metadata__\":{\"format\":\"pt\",\"x\":\"\"}",
                                entry("first", "F64", "[1]", "[0,8]"), entry("third", "U8", "[2]", "[14,16]")});
  Header hd = accept(image(h, filler(16)));
  ASSERT_EQ(hd.tensors.size(), 3u);
  EXPECT_EQ(hd.tensors[0].name, "first");
  EXPECT_EQ(hd.tensors[1].name, "second");
  EXPECT_EQ(hd.tensors[2].name, "third");
  EXPECT_EQ(hd.tensors[1].dtype, DType::BF16);
  EXPECT_EQ(hd.metadata.size(), 2u);
  EXPECT_EQ(hd.metadata.at("format"), "pt");
  EXPECT_EQ(hd.metadata.at("x"), "");
}

TEST_F(SafetensorsTest, ValidZeroSizeTensorsMayShareAnOffset) {
  const std::string h = object({entry("z_start", "I32", "[0]", "[0,0]"), entry("full", "I32", "[4]", "[0,16]"),
                                entry("z_end", "F16", "[0,7]", "[16,16]"), entry("z_end2", "F32", "[3,0]", "[16,16]")});
  Header hd = accept(image(h, filler(16)));
  EXPECT_EQ(hd.tensors.size(), 4u);
  // Only zero-size tensors: all at [0,0], no data.
  accept(image(object({entry("a", "I32", "[0]", "[0,0]"), entry("b", "I32", "[0]", "[0,0]")})));
}

TEST_F(SafetensorsTest, ValidSubByteDtypesWithWholeBytes) {
  Header h = accept(image(object({entry("f4", "F4", "[2]", "[0,1]"), entry("f6a", "F6_E2M3", "[4]", "[1,4]"),
                                  entry("f6b", "F6_E3M2", "[2,2]", "[4,7]")}),
                          filler(7)));
  EXPECT_EQ(h.tensors.size(), 3u);
}

TEST_F(SafetensorsTest, ValidEveryDtypeWidth) {
  struct D { const char* name; unsigned bytes; };
  const D dtypes[] = {{"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
                      {"F8_E4M3FNUZ", 1}, {"F8_E5M2FNUZ", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2},
                      {"I32", 4}, {"U32", 4}, {"F32", 4}, {"C64", 8}, {"F64", 8}, {"I64", 8}, {"U64", 8}};
  for (const D& d : dtypes) {
    SCOPED_TRACE(d.name);
    const unsigned n = 3 * d.bytes;
    Header h = accept(image(object({entry("x", d.name, "[3]", "[0," + std::to_string(n) + "]")}), filler(n)));
    ASSERT_EQ(h.tensors.size(), 1u);
    EXPECT_EQ(h.tensors[0].nbytes(), n);
    // One element more than the offsets hold is rejected.
    reject(image(object({entry("x", d.name, "[4]", "[0," + std::to_string(n) + "]")}), filler(n)), {"x"});
  }
}

TEST_F(SafetensorsTest, ValidLargestIntegerIs2Pow53) {
  // 2^53 is allowed as a dimension (here with a zero dimension, so no data).
  accept(image(object({entry("big", "F32", "[9007199254740992,0]", "[0,0]")})));
}

// ---------------------------------------------------------------- reference vectors: invalid

TEST_F(SafetensorsTest, RejectTrailingBytes) {
  Bytes img = image(kValidHeader, kValidData + "x");
  reject(img);
  reject(image(kValidHeader, kValidData + std::string(8, '\0')));
}

TEST_F(SafetensorsTest, RejectShortByTwoBytes) {
  Bytes img = image(kValidHeader, kValidData);
  img.resize(img.size() - 2);
  reject(img);
}

TEST_F(SafetensorsTest, RejectHeaderLengthWithHighBitsSet) {
  for (uint64_t n : {uint64_t(0x8000000000000000ull | 60), ~uint64_t(0), ~uint64_t(0) - 7, uint64_t(1) << 32,
                     uint64_t(60) << 40}) {
    SCOPED_TRACE(n);
    reject(image(kValidHeader, kValidData, n));
  }
}

TEST_F(SafetensorsTest, RejectEmptyAndShortFiles) {
  reject(Bytes{});
  for (size_t len = 1; len < 8; ++len) {
    Bytes img = image("{}");
    img.resize(len);
    SCOPED_TRACE(len);
    reject(img);
  }
}

TEST_F(SafetensorsTest, RejectLengthWithoutHeader) {
  reject(image("", "", 60));
  // N = 0: no JSON at all.
  reject(image(""));
}

TEST_F(SafetensorsTest, RejectHeaderByteFF) {
  reject(image("\xFF"));
  std::string h = kValidHeader;
  h[0] = '\xFF';
  reject(image(h, kValidData));
}

TEST_F(SafetensorsTest, RejectUnterminatedObject) { reject(image("{")); }

TEST_F(SafetensorsTest, RejectShapeNotMatchingOffsets) {
  reject(image(object({entry("test", "I32", "[2,2]", "[0,4]")}), filler(4)), {"test"});
}

TEST_F(SafetensorsTest, RejectHugeShape) {
  reject(image(object({entry("huge", "I32", "[2,18446744073709551614]", "[0,16]")}), filler(16)), {"huge"});
}

TEST_F(SafetensorsTest, RejectTenTensorsAtTheSameOffsets) {
  std::vector<std::string> members, names;
  for (int i = 0; i < 10; ++i) {
    names.push_back("blk." + std::to_string(i) + ".w");
    members.push_back(entry(names.back(), "I32", "[2,2]", "[0,16]"));
  }
  reject(image(object(members), filler(16)), names);
}

// ---------------------------------------------------------------- the other rejection rules

TEST_F(SafetensorsTest, RejectHeaderLongerThanTheLimit) {
  // A header of exactly the limit is accepted; one byte more is refused before parsing. Both are
  // valid JSON (an object and spaces), so only the length rule can refuse the second.
  for (uint64_t n : {kMaxHeaderBytes, kMaxHeaderBytes + 1}) {
    Bytes img;
    img.reserve(8 + n);
    put_u64(img, n);
    put_str(img, "{}");
    img.resize(8 + n, std::byte(' '));
    if (n <= kMaxHeaderBytes) {
      EXPECT_NO_THROW(parse_header(img, img.size(), "big.safetensors"));
    } else {
      check_error(error_of([&] { parse_header(img, img.size(), "big.safetensors"); }), ErrorKind::Format,
                  "big.safetensors", {});
      // The length alone condemns it: no header bytes are needed.
      check_error(error_of([&] { parse_header(std::span(img).first(8), img.size(), "big.safetensors"); }),
                  ErrorKind::Format, "big.safetensors", {});
    }
  }
}

TEST_F(SafetensorsTest, RejectHeaderRunningPastTheFile) {
  // N one past the end of the file (the file is otherwise a valid image).
  Bytes img = image(kValidHeader, kValidData, 60 + 16 + 1);
  reject(img);
  // N reaching into the data area exactly to the end: no data left, and the JSON is not closed
  // by the data bytes.
  reject(image(kValidHeader, kValidData, 60 + 16));
}

TEST_F(SafetensorsTest, RejectInvalidUtf8) {
  const char* bad[] = {"\xC3\x28", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF8\x88\x80\x80\x80",
                       "\x80", "\xF4\x90\x80\x80", "\xE2\x82"};
  for (const char* b : bad) {
    SCOPED_TRACE(b);
    // In a tensor name...
    reject(image(object({entry(std::string("t") + b, "I32", "[2,2]", "[0,16]")}), kValidData));
    // ...and in a metadata value.
    reject(image(object({"\"__metadata__\":{\"k\":\"" + std::string(b) + "\"}",
                         entry("t", "I32", "[2,2]", "[0,16]")}),
                 kValidData));
  }
  // Lone surrogates written as escapes are not valid UTF-8 text either.
  reject(image(object({"\"__metadata__\":{\"k\":\"\\ud800\"}"})));
  reject(image(object({"\"__metadata__\":{\"k\":\"\\udc00x\"}"})));
  // Valid multi-byte UTF-8 is fine.
  Header h = accept(image(object({"\"__metadata__\":{\"k\":\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\\u00e9\"}",
                                  entry("w\xC3\xA9", "I32", "[2,2]", "[0,16]")}),
                          kValidData));
  EXPECT_EQ(h.metadata.at("k"), "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xC3\xA9");
  EXPECT_EQ(h.tensors.at(0).name, "w\xC3\xA9");
}

TEST_F(SafetensorsTest, RejectHeaderThatIsNotAnObject) {
  for (const char* h : {"[]", "\"x\"", "1", "null", "true", "[{}]"}) {
    SCOPED_TRACE(h);
    reject(image(h));
  }
}

TEST_F(SafetensorsTest, RejectTrailingNonWhitespaceAfterTheObject) {
  const std::string valid = object({entry("test", "I32", "[2,2]", "[0,16]")});
  const std::vector<std::string> tails = {"x", "{}", ",", "}", "\f", "\v", "\xC2\xA0", std::string("\0", 1),
                                          std::string("\0\0\0\0", 4), std::string(" \0", 2), std::string("\0x", 2)};
  for (const std::string& tail : tails) {
    SCOPED_TRACE(testing::PrintToString(tail));
    reject(image(valid + tail, kValidData));
    reject(image("{}" + tail));
  }
}

TEST_F(SafetensorsTest, NestingLimit) {
  auto nested = [](int depth, char open, char close) {
    return std::string(size_t(depth), open) + std::string(size_t(depth), close);
  };
  // kMaxJsonDepth levels are accepted by the strict parser; one more is refused.
  EXPECT_NO_THROW(parse_json_strict(nested(kMaxJsonDepth, '[', ']'), "deep.json"));
  check_error(error_of([&] { parse_json_strict(nested(kMaxJsonDepth + 1, '[', ']'), "deep.json"); }),
              ErrorKind::Format, "deep.json", {});
  std::string objs;
  for (int i = 0; i < kMaxJsonDepth + 1; ++i) objs += "{\"a\":";
  objs += "1" + std::string(size_t(kMaxJsonDepth + 1), '}');
  check_error(error_of([&] { parse_json_strict(objs, "deep.json"); }), ErrorKind::Format, "deep.json", {});
  // Very deep input is refused without exhausting the stack.
  check_error(error_of([&] { parse_json_strict(std::string(1'000'000, '['), "deep.json"); }), ErrorKind::Format,
              "deep.json", {});
  // In a header.
  reject(image("{\"__metadata__\":" + nested(kMaxJsonDepth + 1, '[', ']') + "}"));
  reject(image("{\"t\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16],\"x\":" +
                   nested(200, '[', ']') + "}}",
               kValidData));
}

TEST_F(SafetensorsTest, RejectDuplicateTensorNames) {
  // Last-one-wins would leave one valid tensor: the duplicate alone must condemn the file.
  reject(image(object({entry("dup.weight", "I32", "[2,2]", "[0,16]"), entry("dup.weight", "I32", "[2,2]", "[0,16]")}),
               kValidData),
         {"dup.weight"});
  // The same name spelled with an escape is the same key.
  reject(image(object({entry("dup.weight", "I32", "[2,2]", "[0,16]"), entry("dup.\\u0077eight", "I32", "[2,2]", "[0,16]")}),
               kValidData),
         {"dup.weight"});
}

TEST_F(SafetensorsTest, RejectDuplicateFieldsInsideAnEntry) {
  reject(image("{\"inner.w\":{\"dtype\":\"I32\",\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
               kValidData),
         {"inner.w"});
  reject(image("{\"inner.w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"shape\":[2,2],\"data_offsets\":[0,16]}}",
               kValidData),
         {"inner.w"});
  // The smuggling case: the first offsets are what a lenient reader would not use.
  reject(image("{\"inner.w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,4],\"data_offsets\":[0,16]}}",
               kValidData),
         {"inner.w"});
}

TEST_F(SafetensorsTest, RejectDuplicateMetadataKeys) {
  reject(image(object({"\"__metadata__\":{\"format\":\"pt\",\"format\":\"pt\"}", entry("t", "I32", "[2,2]", "[0,16]")}),
               kValidData));
  reject(image(object({"\"__metadata__\":{\"format\":\"pt\"}", "\"__metadata__\":{\"format\":\"pt\"}"})));
}

TEST_F(SafetensorsTest, RejectUnknownFieldInEntry) {
  reject(image("{\"odd.w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16],\"offset\":0}}", kValidData),
         {"odd.w"});
  reject(image("{\"odd.w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16],\"__metadata__\":{}}}",
               kValidData),
         {"odd.w"});
}

TEST_F(SafetensorsTest, RejectIncompleteEntry) {
  reject(image("{\"part.w\":{\"shape\":[2,2],\"data_offsets\":[0,16]}}", kValidData), {"part.w"});
  reject(image("{\"part.w\":{\"dtype\":\"I32\",\"data_offsets\":[0,16]}}", kValidData), {"part.w"});
  reject(image("{\"part.w\":{\"dtype\":\"I32\",\"shape\":[2,2]}}", kValidData), {"part.w"});
  reject(image("{\"part.w\":[]}", kValidData), {"part.w"});
  reject(image("{\"part.w\":\"I32\"}", kValidData), {"part.w"});
  reject(image("{\"part.w\":{\"dtype\":7,\"shape\":[2,2],\"data_offsets\":[0,16]}}", kValidData), {"part.w"});
  reject(image("{\"part.w\":{\"dtype\":\"I32\",\"shape\":{},\"data_offsets\":[0,16]}}", kValidData), {"part.w"});
}

TEST_F(SafetensorsTest, RejectNonStringMetadataValues) {
  for (const char* v : {"1", "null", "true", "{}", "[]", "[\"a\"]", "1.5"}) {
    SCOPED_TRACE(v);
    reject(image(object({std::string("\"__metadata__\":{\"format\":\"pt\",\"bad\":") + v + "}",
                         entry("t", "I32", "[2,2]", "[0,16]")}),
                 kValidData));
  }
  for (const char* m : {"null", "[]", "\"pt\"", "1"}) {
    SCOPED_TRACE(m);
    reject(image(object({std::string("\"__metadata__\":") + m})));
  }
}

TEST_F(SafetensorsTest, RejectBadShapeNumbers) {
  // Every one of these would describe 16 bytes (or wrap to it) if read leniently.
  for (const char* shape : {"[2,-2]", "[-2,-2]", "[2.0,2]", "[2,2.5]", "[4e0]", "[2,2.0]", "[9007199254740993,0]",
                            "[0,9007199254740993]", "[18446744073709551616,0]", "[\"2\",2]", "[null,2]", "[[2],2]",
                            "[true]"}) {
    SCOPED_TRACE(shape);
    reject(image(object({entry("shape.w", "I32", shape, "[0,16]")}), kValidData), {"shape.w"});
  }
}

TEST_F(SafetensorsTest, RejectShapeNumbersThatAZeroDimensionWouldHide) {
  // With a zero dimension the size rule cannot see the bad number: only the number rules can.
  accept(image(object({entry("zero.w", "I32", "[4,0]", "[0,0]")})));
  for (const char* shape : {"[9007199254740993,0]", "[0,9007199254740993]", "[-4,0]", "[0,-1]", "[2.5,0]",
                            "[0,1e300]", "[0,18446744073709551615]"}) {
    SCOPED_TRACE(shape);
    reject(image(object({entry("zero.w", "I32", shape, "[0,0]")})), {"zero.w"});
  }
}

TEST_F(SafetensorsTest, RejectBadOffsets) {
  for (const char* offs : {"[0,16.0]", "[0.0,16]", "[0,-16]", "[0,1.6e1]", "[0,9007199254740993]",
                           "[9007199254740993,9007199254740993]", "[0,18446744073709551632]", "[0]", "[]",
                           "[0,16,16]", "[0,8,16]", "\"0,16\"", "null", "{\"0\":16}", "[\"0\",16]", "[0,[16]]"}) {
    SCOPED_TRACE(offs);
    reject(image(object({entry("offs.w", "I32", "[2,2]", offs)}), kValidData), {"offs.w"});
  }
}

TEST_F(SafetensorsTest, RejectEndBeforeBegin) {
  // Reversed offsets (a reader subtracting without the check would see a wrapped size).
  reject(image(object({entry("a.w", "I32", "[4]", "[0,16]"), entry("rev.w", "I32", "[0]", "[16,0]")}), filler(16)),
         {"rev.w"});
  reject(image(object({entry("rev.w", "I32", "[4]", "[16,0]")}), filler(16)), {"rev.w"});
}

TEST_F(SafetensorsTest, RejectGaps) {
  // Gap between two tensors (file size matches the last end).
  reject(image(object({entry("g0", "I32", "[4]", "[0,16]"), entry("g1", "I32", "[4]", "[20,36]")}), filler(36)),
         {"g0", "g1"});
  // The first tensor not at 0.
  reject(image(object({entry("g1", "I32", "[4]", "[4,20]")}), filler(20)), {"g1"});
  // A zero-size tensor beyond the end of the data.
  reject(image(object({entry("g0", "I32", "[4]", "[0,16]"), entry("gz", "I32", "[0]", "[20,20]")}), filler(16)),
         {"gz"});
}

TEST_F(SafetensorsTest, RejectOverlaps) {
  reject(image(object({entry("o0", "I32", "[4]", "[0,16]"), entry("o1", "I32", "[4]", "[8,24]")}), filler(24)),
         {"o0", "o1"});
  // Same span twice.
  reject(image(object({entry("o0", "I32", "[4]", "[0,16]"), entry("o1", "F32", "[4]", "[0,16]")}), filler(16)),
         {"o0", "o1"});
  // A zero-size tensor strictly inside another one is an overlap, not a shared boundary.
  reject(image(object({entry("o0", "I32", "[4]", "[0,16]"), entry("oz", "I32", "[0]", "[8,8]")}), filler(16)),
         {"o0", "oz"});
  // One tensor nested inside a bigger one.
  reject(image(object({entry("o0", "I32", "[8]", "[0,32]"), entry("o1", "I32", "[2]", "[8,16]"),
                       entry("o2", "I32", "[2]", "[32,40]")}),
               filler(40)),
         {"o0", "o1", "o2"});
}

TEST_F(SafetensorsTest, RejectProductOverflow) {
  // 2^32 * 2^32 wraps to 0 and would match the empty span [0,0].
  reject(image(object({entry("ovf.w", "F32", "[4294967296,4294967296]", "[0,0]")})), {"ovf.w"});
  // 2^61 elements * 8 bits = 2^64 bits wraps to 0.
  reject(image(object({entry("ovf.w", "U8", "[2147483648,1073741824]", "[0,0]")})), {"ovf.w"});
  // 2^62 elements * 32 bits wraps to 0.
  reject(image(object({entry("ovf.w", "F32", "[1073741824,4294967296]", "[0,0]")})), {"ovf.w"});
  // Wrapping to exactly 16 bytes, every dimension below 2^53: 4 * (2^19 + 1) * (2^38 - 2^19 + 1)
  // = 2^59 + 4 elements; * 32 bits = 2^64 + 128 bits -> 128 bits.
  reject(image(object({entry("ovf.w", "I32", "[4,524289,274877382657]", "[0,16]")}), kValidData), {"ovf.w"});
  // Negative dimensions read as unsigned: (2^64 - 4)^2 wraps to 16.
  reject(image(object({entry("ovf.w", "U8", "[-4,-4]", "[0,16]")}), kValidData), {"ovf.w"});
}

TEST_F(SafetensorsTest, RejectNonWholeBytes) {
  // F4 [3] is 12 bits: neither 1 nor 2 bytes.
  reject(image(object({entry("f4.w", "F4", "[3]", "[0,1]")}), filler(1)), {"f4.w"});
  reject(image(object({entry("f4.w", "F4", "[3]", "[0,2]")}), filler(2)), {"f4.w"});
  reject(image(object({entry("f6.w", "F6_E2M3", "[1]", "[0,0]")})), {"f6.w"});
  reject(image(object({entry("f6.w", "F6_E3M2", "[5]", "[0,3]")}), filler(3)), {"f6.w"});
}

TEST_F(SafetensorsTest, RejectDataSizeMismatch) {
  // Last end short of the data (appended bytes) and past it (truncation).
  reject(image(object({entry("t", "I32", "[2,2]", "[0,16]")}), filler(17)));
  reject(image(object({entry("t", "I32", "[2,2]", "[0,16]")}), filler(15)));
  reject(image("{}", "x"));
  reject(image(object({entry("t", "I32", "[0]", "[0,0]")}), "x"));
}

TEST_F(SafetensorsTest, RejectGitLfsPointer) {
  const std::string ptr =
      "version https://git-lfs.github.com/spec/v1\n"
      "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
      "size 884072\n";
  const Bytes img(reinterpret_cast<const std::byte*>(ptr.data()),
                  reinterpret_cast<const std::byte*>(ptr.data()) + ptr.size());
  reject(img);
  auto e = error_of([&] { parse_header(img, img.size(), "model.safetensors"); });
  ASSERT_TRUE(e);
  EXPECT_NE(std::string(e->what()).find("git-lfs"), std::string::npos) << e->what();
  const fs::path p = write(img, "model.safetensors");
  e = error_of([&] { SafetensorsFile::open(p); });
  ASSERT_TRUE(e);
  EXPECT_NE(std::string(e->what()).find("git-lfs"), std::string::npos) << e->what();
}

TEST_F(SafetensorsTest, OpenFailuresAreIoErrors) {
  const fs::path missing = dir_ / "missing.safetensors";
  check_error(error_of([&] { SafetensorsFile::open(missing); }), ErrorKind::Io, missing.string(), {});
  const fs::path sub = dir_ / "sub.safetensors";
  fs::create_directories(sub);
  check_error(error_of([&] { SafetensorsFile::open(sub); }), ErrorKind::Io, sub.string(), {});
}

TEST_F(SafetensorsTest, TruncatedPrefixesOfAValidFileAreAllRejected) {
  // Every strict prefix of a valid two-tensor file is refused with a typed error.
  const std::string h = object({"\"__metadata__\":{\"format\":\"pt\"}", entry("a", "F16", "[3]", "[0,6]"),
                                entry("b", "F32", "[1]", "[6,10]")});
  const Bytes img = image(h, filler(10));
  accept(img);
  for (size_t len = 0; len < img.size(); ++len) {
    Bytes cut(img.begin(), img.begin() + std::ptrdiff_t(len));
    auto e = error_of([&] { parse_header(cut, cut.size(), "cut.safetensors"); });
    ASSERT_TRUE(e) << "prefix of " << len << " bytes accepted";
    EXPECT_EQ(e->kind(), ErrorKind::Format) << e->what();
  }
}

}  // namespace
