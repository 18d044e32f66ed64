// Spec parsing, parameter validation and the op table.
#include <gtest/gtest.h>

#include "edit_test_util.h"
#include "util/error.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

// The Usage error message for a spec (fails the test when there is none).
std::string usage_message(std::string_view spec) {
  try {
    op(spec);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage) << spec;
    return e.what();
  }
  ADD_FAILURE() << "no error for " << spec;
  return {};
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

TEST(ParseSpec, Forms) {
  OpSpec s = parse_op_spec("dare");
  EXPECT_EQ(s.name, "dare");
  EXPECT_TRUE(s.params.empty());
  s = parse_op_spec(" dare : p = 0.5 , k=-1 ");
  EXPECT_EQ(s.name, "dare");
  ASSERT_EQ(s.params.size(), 2u);
  EXPECT_EQ(s.params[0], (std::pair<std::string, std::string>{"p", "0.5"}));
  EXPECT_EQ(s.params[1], (std::pair<std::string, std::string>{"k", "-1"}));
  EXPECT_EQ(s.text, " dare : p = 0.5 , k=-1 ");
  // A comma not followed by `key=` belongs to the value.
  s = parse_op_spec(R"(magnitude:p=0.5,include=layers\.\d{1,2}\.mlp,exclude=norm)");
  ASSERT_EQ(s.params.size(), 3u);
  EXPECT_EQ(s.params[1].second, R"(layers\.\d{1,2}\.mlp)");
  EXPECT_EQ(name_filter(s).include, R"(layers\.\d{1,2}\.mlp)");
  EXPECT_EQ(name_filter(s).exclude, "norm");
}

TEST(ParseSpec, SyntaxErrors) {
  for (const char* bad : {"", ":p=1", "dare:p", "dare:p=1,p=2", "dare:p=", "da re:p=1", "dare:=1", "dare:1x=2"}) {
    try {
      parse_op_spec(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage) << bad;
    }
  }
}

TEST(MakeOp, MessagesNameOpKeyAndRange) {
  EXPECT_EQ(usage_message("dare:p=1.5"), "op 'dare': key 'p' = 1.5 is out of range [0, 1)");
  EXPECT_EQ(usage_message("dare:p=1"), "op 'dare': key 'p' = 1 is out of range [0, 1)");
  EXPECT_TRUE(contains(usage_message("dare:p=abc"), "op 'dare': key 'p' = 'abc' is not a finite number"));
  EXPECT_TRUE(contains(usage_message("dare:p=nan"), "key 'p'"));
  EXPECT_TRUE(contains(usage_message("dare:k=inf"), "key 'k'"));
  EXPECT_TRUE(contains(usage_message("dare:p=0.5x"), "key 'p'"));
  const std::string unknown = usage_message("dare:q=0.5");
  EXPECT_TRUE(contains(unknown, "op 'dare': unknown key 'q'")) << unknown;
  EXPECT_TRUE(contains(unknown, "p, k, rescale")) << unknown;
  EXPECT_TRUE(contains(usage_message("nosuchop"), "unknown op 'nosuchop'"));
  EXPECT_EQ(usage_message("bitdelta:bits=9"), "op 'bitdelta': key 'bits' = 9 is out of range [0, 8]");
  EXPECT_TRUE(contains(usage_message("bitdelta:bits=1.5"), "key 'bits' = '1.5' is not an integer"));
  EXPECT_TRUE(contains(usage_message("bitdelta:bits=99999999999999999999999"), "key 'bits'"));
  EXPECT_TRUE(contains(usage_message("bitdelta:stat=max"), "key 'stat' = 'max' is not one of mean|median|rms"));
  EXPECT_TRUE(contains(usage_message("bitdelta:s=-1"), "key 's' = -1 is out of range [0, inf)"));
  EXPECT_TRUE(contains(usage_message("magnitude:p=-0.1"), "op 'magnitude': key 'p'"));
  EXPECT_TRUE(contains(usage_message("magnitude:scope=col"), "key 'scope'"));
  EXPECT_TRUE(contains(usage_message("drop:p=1.01"), "[0, 1]"));
  EXPECT_TRUE(contains(usage_message("lowrank:rank=4,ratio=0.2"), "op 'lowrank': key 'ratio'"));
  EXPECT_TRUE(contains(usage_message("lowrank:energy=0"), "(0, 1]"));
  EXPECT_TRUE(contains(usage_message("lowrank:energy=0.9,method=randomized"), "key 'energy'"));
  EXPECT_TRUE(contains(usage_message("lowrank:rank=-1"), "key 'rank'"));
  EXPECT_TRUE(contains(usage_message("resample:clip=maybe"), "key 'clip'"));
  EXPECT_TRUE(contains(usage_message("signflip:q=0.6,rescale=mean"), "key 'q'"));
  EXPECT_TRUE(contains(usage_message("biased:by=loss"), "key 'by'"));
  EXPECT_TRUE(contains(usage_message("scale:alpha=x"), "op 'scale': key 'alpha'"));
  EXPECT_TRUE(contains(usage_message("permute:seed=3"), "op 'permute': unknown key 'seed'"));
  EXPECT_TRUE(contains(usage_message("dare:include=("), "op 'dare': key 'include'"));
}

TEST(MakeOp, CanonicalParams) {
  EXPECT_EQ(op("dare")->params(), (nlohmann::json{{"p", 0.9}, {"k", 0.0}, {"rescale", "paper"}}));
  EXPECT_EQ(op("dare:p=+0.5,k=-1")->params()["k"], -1.0);
  EXPECT_EQ(op("biased")->params(), (nlohmann::json{{"by", "delta"}, {"k", 0.5}}));
  EXPECT_EQ(op("magnitude")->params(), (nlohmann::json{{"p", 0.9}, {"scope", "tensor"}}));
  EXPECT_EQ(op("bitdelta")->params(), (nlohmann::json{{"stat", "mean"}, {"s", 1.0}, {"sign0", "zero"},
                                                      {"granularity", "tensor"}, {"bits", 0}}));
  EXPECT_EQ(op("lowrank")->params(), (nlohmann::json{{"ratio", 0.1}, {"method", "exact"}}));
  EXPECT_EQ(op("lowrank:rank=8,method=randomized")->params(),
            (nlohmann::json{{"rank", 8}, {"method", "randomized"}, {"oversample", 10}, {"power_iters", 4}}));
  EXPECT_EQ(op("scale:alpha=0.3")->params(), (nlohmann::json{{"alpha", 0.3}}));
  EXPECT_EQ(op("resample")->params(),
            (nlohmann::json{{"dist", "uniform"}, {"s", 1.0}, {"sigma", 1.0}, {"clip", false}}));
  EXPECT_EQ(op("signflip:q=0.1")->params(), (nlohmann::json{{"q", 0.1}, {"rescale", "none"}}));
  EXPECT_EQ(op("permute")->params(), nlohmann::json::object());
  EXPECT_EQ(op("scale:alpha=1,include=mlp")->params()["include"], "mlp");
  EXPECT_EQ(op("dare")->name(), "dare");
}

TEST(MakeOp, Flags) {
  EXPECT_TRUE(op("dare")->uses_rng());
  EXPECT_TRUE(op("drop")->uses_rng());
  EXPECT_TRUE(op("permute")->uses_rng());
  EXPECT_TRUE(op("resample")->uses_rng());
  EXPECT_TRUE(op("signflip:q=0.1")->uses_rng());
  EXPECT_TRUE(op("lowrank:method=randomized")->uses_rng());
  EXPECT_FALSE(op("lowrank")->uses_rng());
  EXPECT_FALSE(op("magnitude")->uses_rng());
  EXPECT_FALSE(op("bitdelta")->uses_rng());
  EXPECT_FALSE(op("scale")->uses_rng());
  EXPECT_FALSE(op("biased")->uses_rng());
  EXPECT_TRUE(op("biased:by=grad")->needs_grad());
  for (const char* s : {"dare", "drop", "magnitude", "bitdelta", "resample", "lowrank", "scale", "permute"}) {
    EXPECT_FALSE(op(s)->needs_grad()) << s;
  }
}

TEST(ListOps, EveryListedOpBuilds) {
  const std::vector<OpInfo> ops = list_ops();
  EXPECT_EQ(ops.size(), 10u);
  for (const OpInfo& info : ops) {
    EXPECT_FALSE(info.summary.empty());
    EXPECT_FALSE(info.keys.empty());
    const std::string spec = info.name == "signflip" ? "signflip:q=0.1" : info.name;
    EXPECT_EQ(op(spec)->name(), info.name);
  }
}

}  // namespace
}  // namespace deltaedit::edit
