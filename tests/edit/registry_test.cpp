// Spec parsing, parameter validation and the op table.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

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

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

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
  for (const char* bad :
       {"", ":p=1", "dare:p", "dare:p=1,p=2", "dare:p=", "da re:p=1", "dare:=1", "dare:1x=2"}) {
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
  EXPECT_TRUE(
      contains(usage_message("dare:p=abc"), "op 'dare': key 'p' = 'abc' is not a finite number"));
  EXPECT_TRUE(contains(usage_message("dare:p=nan"), "key 'p'"));
  EXPECT_TRUE(contains(usage_message("dare:k=inf"), "key 'k'"));
  EXPECT_TRUE(contains(usage_message("dare:p=0.5x"), "key 'p'"));
  const std::string unknown = usage_message("dare:q=0.5");
  EXPECT_TRUE(contains(unknown, "op 'dare': unknown key 'q'")) << unknown;
  EXPECT_TRUE(contains(unknown, "p, k, rescale")) << unknown;
  EXPECT_TRUE(contains(usage_message("nosuchop"), "unknown op 'nosuchop'"));
  EXPECT_EQ(usage_message("bitdelta:bits=9"),
            "op 'bitdelta': key 'bits' = 9 is out of range [0, 8]");
  EXPECT_TRUE(contains(usage_message("bitdelta:bits=1.5"), "key 'bits' = '1.5' is not an integer"));
  EXPECT_TRUE(contains(usage_message("bitdelta:bits=99999999999999999999999"), "key 'bits'"));
  EXPECT_TRUE(contains(usage_message("bitdelta:stat=max"),
                       "key 'stat' = 'max' is not one of mean|median|rms"));
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
  EXPECT_EQ(op("bitdelta")->params(), (nlohmann::json{{"stat", "mean"},
                                                      {"s", 1.0},
                                                      {"sign0", "zero"},
                                                      {"granularity", "tensor"},
                                                      {"bits", 0}}));
  EXPECT_EQ(op("lowrank")->params(), (nlohmann::json{{"ratio", 0.1}, {"method", "exact"}}));
  EXPECT_EQ(op("lowrank:rank=8,method=randomized")->params(),
            (nlohmann::json{
                {"rank", 8}, {"method", "randomized"}, {"oversample", 10}, {"power_iters", 4}}));
  EXPECT_EQ(op("scale:alpha=0.3")->params(), (nlohmann::json{{"alpha", 0.3}}));
  EXPECT_EQ(op("resample")->params(),
            (nlohmann::json{{"dist", "uniform"}, {"s", 1.0}, {"sigma", 1.0}, {"clip", false}}));
  EXPECT_EQ(op("signflip:q=0.1")->params(), (nlohmann::json{{"q", 0.1}, {"rescale", "none"}}));
  EXPECT_EQ(op("permute")->params(), nlohmann::json::object());
  EXPECT_EQ(op("scale:alpha=1,include=mlp")->params()["include"], "mlp");
  EXPECT_EQ(op("dare")->name(), "dare");
}

// The flags by behaviour: needs_grad() is true exactly for the op whose output depends on the
// gradient, and exactly the keyed-random ops change with the seed.
TEST(MakeOp, Flags) {
  const std::vector<float> d = gaussian(600, 4), g1 = gaussian(600, 5), g2 = gaussian(600, 6);
  const std::set<std::string> random{
      "dare", "drop", "resample", "permute", "signflip:q=0.1", "lowrank:rank=2,method=randomized"};
  size_t grad_ops = 0;
  for (const char* spec : {"dare", "drop", "biased", "biased:by=grad", "magnitude", "bitdelta",
                           "resample", "lowrank:rank=2", "lowrank:rank=2,method=randomized",
                           "scale:alpha=0.5", "permute", "signflip:q=0.1"}) {
    const auto o = op(spec);
    const auto a = run(*o, d, {20, 30}, 1, "t", 0, g1).out;
    const auto b = run(*o, d, {20, 30}, 1, "t", 0, g2).out;
    EXPECT_EQ(o->needs_grad(), !same_bytes(a, b)) << spec;
    grad_ops += o->needs_grad();
    const auto other_seed = run(*o, d, {20, 30}, 2, "t", 0, g1).out;
    EXPECT_EQ(random.count(spec) == 1, !same_bytes(a, other_seed)) << spec;
  }
  EXPECT_EQ(grad_ops, 1u);
}

// What `deltaedit ops`, `edit --help` and README print for each op is its declared schema, and
// the schema is what the parser does: every declared key is accepted, every declared choice builds
// and an undeclared one is refused, every declared default is the value the op takes without the
// key, every range's ends are accepted or refused as its brackets say (values past the ends
// always refused), and a required key is required. The one-line listing holds every key.
bool builds(const std::string& spec) {
  try {
    op(spec);
    return true;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage) << spec;
    return false;
  }
}

std::string text(double v) {
  std::ostringstream o;
  o.precision(17);
  o << v;
  return o.str();
}

TEST(ListOps, EveryListedOpBuilds) {
  const std::vector<OpInfo> ops = list_ops();
  EXPECT_EQ(ops.size(), 10u);
  size_t checked_defaults = 0, checked_ranges = 0, checked_choices = 0, checked_required = 0;
  for (const OpInfo& info : ops) {
    SCOPED_TRACE(info.name + " keys: " + info.keys);
    EXPECT_FALSE(info.summary.empty());
    EXPECT_FALSE(info.keys.empty());
    std::string required;  // what a spec must hold to build at all
    for (const ParamSpec& k : info.params) {
      EXPECT_NE(info.keys.find(util::key_text(k)), std::string::npos) << k.name << " is not listed";
      EXPECT_FALSE(k.doc.empty()) << k.name;
      if (k.required)
        required += k.name + "=" + text(k.min_open ? (k.min + k.max) / 2 : k.min) + ",";
    }
    auto spec = [&](const std::string& extra) {
      std::string body;
      const std::string key = extra.substr(0, extra.find('='));
      for (const ParamSpec& k : info.params)  // a key given explicitly replaces its placeholder
        if (k.required && k.name != key)
          body += k.name + "=" + text(k.min_open ? (k.min + k.max) / 2 : k.min) + ",";
      body += extra;
      if (!body.empty() && body.back() == ',') body.pop_back();
      return body.empty() ? info.name : info.name + ":" + body;
    };
    EXPECT_EQ(op(spec(""))->name(), info.name);
    EXPECT_FALSE(builds(spec("no_such_key=1"))) << "an undeclared key is accepted";
    const nlohmann::json plain = op(spec(""))->params();
    for (const ParamSpec& k : info.params) {
      using K = ParamSpec::Kind;
      if (k.required) {
        std::string without = required;
        without = std::regex_replace(without, std::regex("(^|,)" + k.name + "=[^,]*,"), "$1");
        if (!without.empty() && without.back() == ',') without.pop_back();
        EXPECT_FALSE(builds(without.empty() ? info.name : info.name + ":" + without))
            << k.name << " is required";
        ++checked_required;
      }
      if (k.kind == K::Choice) {
        for (const std::string& c : k.choices) {
          EXPECT_TRUE(builds(spec(k.name + "=" + c))) << k.name << "=" << c;
          ++checked_choices;
        }
        EXPECT_FALSE(builds(spec(k.name + "=zzz"))) << k.name << "=zzz accepted";
        // The default is the op without the key.
        EXPECT_EQ(op(spec(k.name + "=" + k.default_choice))->params(), plain) << k.name;
        ++checked_defaults;
      }
      if (k.kind == K::Bool) {
        EXPECT_EQ(op(spec(k.name + "=" + util::default_text(k)))->params(), plain) << k.name;
        EXPECT_FALSE(builds(spec(k.name + "=maybe")));
        ++checked_defaults;
      }
      if ((k.kind == K::Number || k.kind == K::Integer) && k.default_value) {
        // Given explicitly, the declared default builds the op it is without the key.
        const nlohmann::json given = op(spec(k.name + "=" + text(*k.default_value)))->params();
        EXPECT_EQ(given, plain) << k.name << "=" << *k.default_value << " is not the default";
        if (plain.contains(k.name)) {
          EXPECT_EQ(plain[k.name].get<double>(), *k.default_value) << k.name;
        }
        ++checked_defaults;
      }
      if (k.kind == K::Number || k.kind == K::Integer) {
        if (k.kind == K::Integer) {
          EXPECT_FALSE(builds(spec(k.name + "=1.5"))) << k.name;
        }
        EXPECT_FALSE(builds(spec(k.name + "=abc"))) << k.name;
        if (k.bounded_below()) {
          EXPECT_EQ(builds(spec(k.name + "=" + text(k.min))), !k.min_open)
              << k.name << " at " << k.min;
          EXPECT_FALSE(builds(spec(k.name + "=" + text(k.min - 1))))
              << k.name << " below the range";
        }
        if (k.bounded_above()) {
          EXPECT_EQ(builds(spec(k.name + "=" + text(k.max))), !k.max_open)
              << k.name << " at " << k.max;
          EXPECT_FALSE(builds(spec(k.name + "=" + text(k.max + 1))))
              << k.name << " above the range";
        }
        if (!k.bounded_below() && !k.bounded_above()) {
          EXPECT_TRUE(builds(spec(k.name + "=-12345.5"))) << k.name;
        }
        ++checked_ranges;
      }
    }
  }
  // The schema was read (not silently empty): the counts of what the ops declare today.
  EXPECT_GE(checked_defaults, 20u);
  EXPECT_GE(checked_ranges, 15u);
  EXPECT_GE(checked_choices, 19u);
  EXPECT_EQ(checked_required, 1u);  // signflip's q
}

// include= and exclude= are declared once for every op.
TEST(ListOps, CommonKeys) {
  const auto common = common_params();
  ASSERT_EQ(common.size(), 2u);
  EXPECT_EQ(common[0].name, "include");
  EXPECT_EQ(common[1].name, "exclude");
  for (const OpInfo& info : list_ops()) {
    EXPECT_TRUE(builds(info.name + (info.name == "signflip" ? ":q=0.1," : ":") +
                       "include=mlp,exclude=bias"))
        << info.name;
    for (const ParamSpec& k : info.params) EXPECT_NE(k.name, "include");
  }
}

}  // namespace
}  // namespace deltaedit::edit
