// Error kinds reaching `main`: what is printed and which exit status each kind maps to.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "../engine/engine_test_util.h"
#include "cli/common.h"
#include "edit/op.h"
#include "io/writer.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

struct Guarded {
  int status;
  std::string err;
};
Guarded run_guarded(const std::function<int()>& body) {
  ::testing::internal::CaptureStderr();
  const int s = cli::guarded(body);
  return {s, ::testing::internal::GetCapturedStderr()};
}

ErrorKind kind_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "expected an Error";
  return ErrorKind::Io;
}

}  // namespace

TEST(Errors, InternalExitsOneAndSaysInternalError) {
  auto g = run_guarded([]() -> int {
    throw Error(ErrorKind::Internal, "plan and layout disagree", "x.safetensors", "w");
  });
  EXPECT_EQ(g.status, 1);
  EXPECT_NE(g.err.find("internal error"), std::string::npos) << g.err;
  EXPECT_NE(g.err.find("x.safetensors: tensor 'w': plan and layout disagree"), std::string::npos)
      << g.err;
  EXPECT_STREQ(to_string(ErrorKind::Internal), "internal");
}

// An exception no reader wrapped (a bug: every reader names its file at its I/O boundary) is an
// internal error, exit 1; filesystem errors name their paths and exit 1 too.
TEST(Errors, UnwrappedExceptionsAreInternal) {
  auto j = run_guarded([]() -> int { return nlohmann::json::parse("{").get<int>(); });
  EXPECT_EQ(j.status, 1);
  EXPECT_NE(j.err.find("internal error"), std::string::npos) << j.err;
  auto o = run_guarded([]() -> int { return std::vector<int>().at(3); });
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find("internal error"), std::string::npos) << o.err;
  auto f = run_guarded([]() -> int {
    return static_cast<int>(std::filesystem::file_size("/nonexistent/deltaedit-test-file"));
  });
  EXPECT_EQ(f.status, 1);
  EXPECT_NE(f.err.find("/nonexistent/deltaedit-test-file"), std::string::npos) << f.err;
  EXPECT_EQ(f.err.find("internal error"), std::string::npos) << f.err;
}

TEST(Errors, KindsMapToExitCodes) {
  EXPECT_EQ(run_guarded([]() -> int { throw Error(ErrorKind::Usage, "bad flag"); }).status, 2);
  EXPECT_EQ(run_guarded([]() -> int { throw Error(ErrorKind::Format, "bad file", "f"); }).status,
            1);
  EXPECT_EQ(run_guarded([]() -> int { throw Error(ErrorKind::Io, "cannot read", "f"); }).status, 1);
  EXPECT_EQ(run_guarded([]() -> int { throw Error(ErrorKind::Interrupted, "stopped"); }).status,
            130);
  // Only Internal says "internal error".
  EXPECT_EQ(run_guarded([]() -> int {
              throw Error(ErrorKind::Format, "bad file", "f");
            }).err.find("internal"),
            std::string::npos);
}

// Broken invariants of the writer and of the op interface are Internal, not the user's Usage.
TEST(Errors, WriterInvariantsAreInternal) {
  TempDir t;
  io::Staging st(t / "out.safetensors", {}, 0);
  const int fd = st.create("file");
  EXPECT_EQ(kind_of([&] {
              io::SafetensorsWriter w(fd, "out",
                                      {{"a", io::DType::F32, {2}}, {"a", io::DType::F32, {2}}}, {});
            }),
            ErrorKind::Internal);
  io::SafetensorsWriter w(fd, "out", {{"a", io::DType::F32, {2}}}, {});
  std::vector<std::byte> twelve(12);
  EXPECT_EQ(kind_of([&] { w.write("a", twelve); }),
            ErrorKind::Internal);  // 12 > the planned 8 bytes
  EXPECT_EQ(kind_of([&] { w.write("b", twelve); }), ErrorKind::Internal);  // never planned
  EXPECT_EQ(kind_of([&] { w.finish(); }), ErrorKind::Internal);            // 0 of 8 bytes written
  EXPECT_EQ(kind_of([&] { st.create("file"); }), ErrorKind::Internal);     // created twice
}

TEST(Errors, OpInterfaceMisuseIsInternal) {
  // lowrank has a whole-tensor form only: it has no streamed form to ask for (asking does not
  // compile: tests/edit/all_ops_test.cpp), and the casts to one say so.
  auto op = edit::make_op(edit::parse_op_spec("lowrank:rank=1"));
  EXPECT_EQ(op->kind(), edit::ExecKind::WholeTensor);
  EXPECT_EQ(edit::as_pointwise(*op), nullptr);
  EXPECT_EQ(edit::as_observing(*op), nullptr);
  edit::TensorContext ctx;
  ctx.name = "w";
  std::vector<float> v(4);
  // A buffer that does not hold the shape's elements is the caller's bug.
  const std::vector<int64_t> shape{3, 2};
  ctx.shape = shape;
  EXPECT_EQ(kind_of([&] { op->apply(v, ctx); }), ErrorKind::Internal);
}
