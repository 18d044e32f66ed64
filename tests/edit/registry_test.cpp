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

// The flags by behaviour: needs_grad() is true exactly for the op whose output depends on the
// gradient, and exactly the keyed-random ops change with the seed.
TEST(MakeOp, Flags) {
  const std::vector<float> d = gaussian(600, 4), g1 = gaussian(600, 5), g2 = gaussian(600, 6);
  const std::set<std::string> random{"dare", "drop", "resample", "permute", "signflip:q=0.1",
                                     "lowrank:rank=2,method=randomized"};
  size_t grad_ops = 0;
  for (const char* spec : {"dare", "drop", "biased", "biased:by=grad", "magnitude", "bitdelta", "resample",
                           "lowrank:rank=2", "lowrank:rank=2,method=randomized", "scale:alpha=0.5", "permute",
                           "signflip:q=0.1"}) {
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

// What `deltaedit ops` and --help print for each op's keys is what the parser does: every listed
// key is accepted, every listed choice builds and an unlisted one is refused, every listed
// default is the value the op takes without the key, and every listed range's ends are accepted
// or refused as its brackets say (values past the ends always refused).
struct ListedKey {
  std::string name, default_text, choices_text;
  bool required = false;
  std::optional<std::pair<std::string, std::string>> range;  // the bracketed text, e.g. "[0", "1)"
};

std::vector<ListedKey> parse_keys(std::string text) {
  std::vector<ListedKey> keys;
  if (text == "(none)") return keys;
  if (text.rfind("one of ", 0) == 0) text = text.substr(7);
  // Entries are separated by "; " and, inside "one of", by ", " before a new key=.
  const std::regex entry(R"(([a-z_]+)(=([^ ;,]+))?( \(required\))?( \([^)]*\))?( ([\[(])([^,]+), ([^\])]+)([\])]))?)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), entry); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    if (m.position(0) > 0 && text[size_t(m.position(0)) - 1] != ' ') continue;  // inside a word
    if (m.position(0) > 1 && text.substr(size_t(m.position(0)) - 2, 2) != "; " &&
        text.substr(size_t(m.position(0)) - 2, 2) != ", " && m.position(0) != 0)
      continue;  // e.g. "then q in [0, 0.5)": prose, not an entry
    ListedKey k;
    k.name = m[1];
    const std::string v = m[3];
    if (v.find('|') != std::string::npos) k.choices_text = v;
    else k.default_text = v;
    k.required = m[4].matched;
    if (m[6].matched) k.range = std::make_pair(m[7].str() + m[8].str(), m[9].str() + m[10].str());
    keys.push_back(k);
  }
  return keys;
}

double number(const std::string& t) {
  if (t == "inf") return INFINITY;
  if (t == "2^31") return 2147483648.0;
  return std::stod(t);
}

bool builds(const std::string& spec) {
  try {
    op(spec);
    return true;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage) << spec;
    return false;
  }
}

TEST(ListOps, EveryListedOpBuilds) {
  const std::vector<OpInfo> ops = list_ops();
  EXPECT_EQ(ops.size(), 10u);
  size_t checked_defaults = 0, checked_ranges = 0, checked_choices = 0;
  for (const OpInfo& info : ops) {
    SCOPED_TRACE(info.name + " keys: " + info.keys);
    EXPECT_FALSE(info.summary.empty());
    EXPECT_FALSE(info.keys.empty());
    const auto keys = parse_keys(info.keys);
    std::string required;  // what a spec must hold to build at all
    for (const auto& k : keys)
      if (k.required) required += k.name + "=0.1,";
    auto spec = [&](const std::string& extra) {
      std::string body = required;
      // A key given explicitly replaces its required placeholder.
      const std::string key = extra.substr(0, extra.find('='));
      if (!key.empty()) body = std::regex_replace(body, std::regex("(^|,)" + key + "=0\\.1,"), "$1");
      body += extra;
      if (!body.empty() && body.back() == ',') body.pop_back();
      return body.empty() ? info.name : info.name + ":" + body;
    };
    EXPECT_EQ(op(spec(""))->name(), info.name);
    EXPECT_FALSE(builds(spec("no_such_key=1"))) << "an unlisted key is accepted";
    if (info.keys == "(none)") continue;
    EXPECT_FALSE(keys.empty()) << "no key could be read from the listing";
    const nlohmann::json plain = op(spec(""))->params();
    for (const auto& k : keys) {
      if (!k.choices_text.empty()) {
        std::stringstream ss(k.choices_text);
        std::string c;
        while (std::getline(ss, c, '|')) {
          EXPECT_TRUE(builds(spec(k.name + "=" + c))) << k.name << "=" << c;
          ++checked_choices;
        }
        EXPECT_FALSE(builds(spec(k.name + "=zzz"))) << k.name << "=zzz accepted";
      }
      if (!k.default_text.empty() && k.default_text != "r" && k.default_text != "e" && k.default_text != "false" &&
          k.default_text != "true") {
        const double d = number(k.default_text);
        // Given explicitly, the listed default builds the op the listing says it is without the key.
        const nlohmann::json given = op(spec(k.name + "=" + k.default_text))->params();
        EXPECT_EQ(given, plain) << k.name << "=" << k.default_text << " is not the default";
        if (plain.contains(k.name)) EXPECT_EQ(plain[k.name].get<double>(), d) << k.name;
        ++checked_defaults;
      }
      if (k.default_text == "false" || k.default_text == "true") {
        EXPECT_EQ(op(spec(k.name + "=" + k.default_text))->params(), plain) << k.name;
        ++checked_defaults;
      }
      if (k.range) {
        const bool lo_closed = k.range->first[0] == '[', hi_closed = k.range->second.back() == ']';
        const double lo = number(k.range->first.substr(1));
        const double hi = number(k.range->second.substr(0, k.range->second.size() - 1));
        auto text = [](double v) {
          std::ostringstream o;
          o.precision(17);
          o << v;
          return o.str();
        };
        if (std::isfinite(lo)) {
          EXPECT_EQ(builds(spec(k.name + "=" + text(lo))), lo_closed) << k.name << " at " << lo;
          EXPECT_FALSE(builds(spec(k.name + "=" + text(lo - 1)))) << k.name << " below the range";
        }
        if (std::isfinite(hi)) {
          EXPECT_EQ(builds(spec(k.name + "=" + text(hi))), hi_closed) << k.name << " at " << hi;
          EXPECT_FALSE(builds(spec(k.name + "=" + text(hi + 1)))) << k.name << " above the range";
        }
        ++checked_ranges;
      }
    }
  }
  // The listing was read (not silently skipped): the counts of what the ops list today.
  EXPECT_GE(checked_defaults, 12u);
  EXPECT_GE(checked_ranges, 12u);
  EXPECT_GE(checked_choices, 15u);
}

}  // namespace
}  // namespace deltaedit::edit
