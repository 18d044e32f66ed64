// One declared parameter of an edit op or a merge method: the single schema that parsing,
// validation, `deltaedit ops`, `deltaedit merge --methods`, every --help and the README tables
// read. Ops and methods declare their parameters once, as a list of these.
#pragma once
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace deltaedit::util {

struct ParamSpec {
  enum class Kind { Number, Bool, Integer, Choice, Text };

  std::string name;
  Kind kind = Kind::Number;
  bool per_model = false;               // merge: weight, density, … are given per model
  std::optional<double> default_value;  // Number, Integer, Bool (1/0); nullopt: no default
  bool required = false;                // absent → error "… is required"
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::string doc;  // one line
  // Ends of the range: closed unless marked open ([0, 1) is min_open=false, max_open=true).
  bool min_open = false, max_open = false;
  std::vector<std::string> choices;  // Choice: the accepted values
  std::string default_choice;        // Choice: the default (one of choices), or "" for none
  std::string
      constraint;  // a rule across keys, shown after the keys ("one of rank, ratio, energy")

  ParamSpec() = default;
  // The merge methods' positional form: name, kind, per_model, default, required, [min, max], doc.
  ParamSpec(std::string name_, Kind kind_, bool per_model_, std::optional<double> def,
            bool required_, double min_, double max_, std::string doc_)
      : name(std::move(name_)),
        kind(kind_),
        per_model(per_model_),
        default_value(def),
        required(required_),
        min(min_),
        max(max_),
        doc(std::move(doc_)) {}

  // Builders for the edit ops' declarations.
  static ParamSpec number(std::string name, std::optional<double> def, double lo, double hi,
                          std::string doc, bool lo_open = false, bool hi_open = false);
  static ParamSpec integer(std::string name, std::optional<int64_t> def, int64_t lo, int64_t hi,
                           std::string doc);
  static ParamSpec boolean(std::string name, bool def, std::string doc);
  static ParamSpec choice(std::string name, std::vector<std::string> options, std::string def,
                          std::string doc);
  static ParamSpec text(std::string name, std::string doc);
  ParamSpec& make_required() {
    required = true;
    return *this;
  }
  ParamSpec& with_constraint(std::string c) {
    constraint = std::move(c);
    return *this;
  }

  bool bounded_below() const { return min > -1e299; }
  bool bounded_above() const { return max < 1e299; }
  bool in_range(double v) const;
};

// "[0, 1)", "(0, 1]", ">= 0", "any real", "true|false", "paper|l1", "regex" — what a user may give.
std::string range_text(const ParamSpec& p);
// The default as a user would write it ("0.9", "paper", "false"), or "" when there is none.
std::string default_text(const ParamSpec& p);
// "p=0.9 [0, 1)", "rescale=paper|l1", "q (required) [0, 1]" — one key in one line.
std::string key_text(const ParamSpec& p);
// {name, kind, default, required, range, doc[, per_model][, choices][, constraint]}.
nlohmann::json to_json(const ParamSpec& p);
// A number as the schema prints it: the shortest text that reads back to the same double.
std::string format_real(double v);
const char* kind_name(ParamSpec::Kind k);

}  // namespace deltaedit::util
