#include "experiments/sweep_report.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "report/cell.h"
#include "report/correlation.h"
#include "report/csv.h"
#include "report/svg.h"

namespace deltaedit::experiments {

using namespace deltaedit::report;
namespace {

using nlohmann::json;
using Rules = VerdictRules;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr const char* kBaseColor = "#9c755f";
constexpr const char* kPostColor = "#59a14f";

// ---------------------------------------------------------------- reading results.json

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

double number_of(const json& j) { return j.is_number() ? j.get<double>() : kNaN; }

const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

double number_field(const json& j, const char* key) {
  const json* v = member(j, key);
  return v ? number_of(*v) : kNaN;
}

std::string text_field(const json& j, const char* key) {
  const json* v = member(j, key);
  if (!v || v->is_null()) return {};
  return v->is_string() ? v->get<std::string>() : dump(*v);
}

struct Point {
  const json* raw = nullptr;
  std::string experiment, id, label, ops;
  json params = json::object();
  double accuracy = kNaN, loss = kNaN, loss_post = kNaN, term = kNaN, true_dl = kNaN, gap = kNaN, intensity = kNaN,
         seconds = kNaN;
  std::vector<std::pair<std::string, double>> per_tensor;

  double param(const char* key) const { return number_field(params, key); }
  std::string param_text(const char* key) const { return text_field(params, key); }
};

Point parse_point(const json& j, const std::string& experiment) {
  Point p;
  p.raw = &j;
  p.experiment = experiment;
  p.id = text_field(j, "id");
  p.label = text_field(j, "label");
  if (const json* ops = member(j, "ops"); ops && ops->is_array()) {
    for (const auto& op : *ops) {
      if (!p.ops.empty()) p.ops += "; ";
      p.ops += op.is_string() ? op.get<std::string>() : dump(op);
    }
  }
  if (const json* params = member(j, "params"); params && params->is_object()) p.params = *params;
  if (p.label.empty()) p.label = !p.id.empty() ? p.id : p.ops;
  p.accuracy = number_field(j, "accuracy");
  p.loss = number_field(j, "loss");
  p.loss_post = number_field(j, "loss_post");
  p.term = number_field(j, "approximation_term");
  p.true_dl = number_field(j, "true_delta_loss");
  p.gap = number_field(j, "gap");
  if (std::isnan(p.gap) && std::isfinite(p.term) && std::isfinite(p.true_dl)) p.gap = p.true_dl - p.term;
  p.intensity = number_field(j, "intensity");
  p.seconds = number_field(j, "seconds");
  if (const json* pt = member(j, "per_tensor"); pt && pt->is_array()) {
    for (const auto& t : *pt) {
      const double c = number_field(t, "contribution");
      if (std::isfinite(c)) p.per_tensor.emplace_back(text_field(t, "name"), c);
    }
  }
  return p;
}

struct Experiment {
  bool present = false;  // the id is a key of results["experiments"]
  bool malformed = false;
  std::vector<Point> points;
};

struct Sweep {
  json config = json::object();
  double base_acc = kNaN, base_loss = kNaN, post_acc = kNaN, post_loss = kNaN;
  double seconds = kNaN;
  std::vector<std::string> ids;  // kSweepExperiments, then any other id present
  std::map<std::string, Experiment> experiments;

  const std::vector<Point>& points(const std::string& id) const {
    static const std::vector<Point> none;  // immutable empty list
    const auto it = experiments.find(id);
    return it == experiments.end() ? none : it->second.points;
  }
  std::vector<const Point*> all() const {
    std::vector<const Point*> out;
    for (const auto& id : ids)
      for (const auto& p : points(id)) out.push_back(&p);
    return out;
  }
};

Sweep parse_sweep(const json& results) {
  Sweep s;
  if (const json* c = member(results, "config"); c && c->is_object()) s.config = *c;
  if (const json* m = member(results, "models")) {
    if (const json* b = member(*m, "base")) s.base_acc = number_field(*b, "accuracy"), s.base_loss = number_field(*b, "loss");
    if (const json* p = member(*m, "post")) s.post_acc = number_field(*p, "accuracy"), s.post_loss = number_field(*p, "loss");
  }
  if (const json* t = member(results, "timing")) s.seconds = number_field(*t, "seconds");
  for (const char* id : kSweepExperiments) s.ids.emplace_back(id);
  const json* ex = member(results, "experiments");
  if (ex && ex->is_object()) {
    for (const auto& [id, list] : ex->items()) {
      if (std::find(s.ids.begin(), s.ids.end(), id) == s.ids.end()) s.ids.push_back(id);
      Experiment& e = s.experiments[id];
      e.present = true;
      if (!list.is_array()) {
        e.malformed = !list.is_null();
        continue;
      }
      for (const auto& pj : list)
        if (pj.is_object()) e.points.push_back(parse_point(pj, id));
    }
  }
  return s;
}

bool is_known(const std::string& id) {
  return std::find_if(kSweepExperiments.begin(), kSweepExperiments.end(),
                      [&](const char* k) { return id == k; }) != kSweepExperiments.end();
}

// ---------------------------------------------------------------- small statistics and text

std::vector<double> finite(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  return v;
}

double median(std::vector<double> v) {
  v = finite(std::move(v));
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean_abs(const std::vector<double>& v) {
  double sum = 0.0;
  std::size_t n = 0;
  for (double x : v)
    if (std::isfinite(x)) sum += std::fabs(x), ++n;
  return n ? sum / static_cast<double>(n) : kNaN;
}

std::string pct(double a) { return std::isfinite(a) ? format_fixed(100.0 * a, 1) + "%" : "n/a"; }
std::string sci(double v) { return std::isnan(v) ? "n/a" : format_number(v, 3); }
std::string points_text(double fraction) { return format_number(100.0 * fraction, 3); }

std::string range_text(const std::vector<double>& values, const std::function<std::string(double)>& show) {
  const auto v = finite(values);
  if (v.empty()) return "n/a";
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *lo == *hi ? show(*lo) : show(*lo) + "\u2013" + show(*hi);
}

std::string seconds_text(double s) {
  if (!std::isfinite(s)) return "n/a";
  if (s < 120.0) return format_number(s, 3) + " s";
  if (s < 7200.0) return format_number(s / 60.0, 3) + " min (" + format_fixed(s, 0) + " s)";
  return format_number(s / 3600.0, 3) + " h (" + format_fixed(s, 0) + " s)";
}

bool near_post(double acc, double post) { return std::fabs(acc - post) <= Rules::near_post + 1e-12; }
bool destroyed(double acc, double post) {
  return acc <= Rules::destroyed_fraction * post && post - acc > Rules::near_post;
}

const char* verdict_word(Verdict v) {
  switch (v) {
    case Verdict::Supported: return "holds";
    case Verdict::Partial: return "partly holds";
    case Verdict::NotSupported: return "does not hold";
    case Verdict::Inconclusive: return "inconclusive";
    case Verdict::Neutral: return "";
  }
  return "";
}

// All checks true: holds; none: does not hold; some: partly; no checks: inconclusive.
Verdict combine(const std::vector<bool>& checks) {
  if (checks.empty()) return Verdict::Inconclusive;
  const auto held = std::count(checks.begin(), checks.end(), true);
  if (held == static_cast<std::ptrdiff_t>(checks.size())) return Verdict::Supported;
  return held == 0 ? Verdict::NotSupported : Verdict::Partial;
}

void set_verdict(Claim& c, Verdict v, const std::string& why) {
  c.kind = v;
  c.verdict = std::string(verdict_word(v)) + (why.empty() ? "" : ": " + why);
}

// ---------------------------------------------------------------- point selection

std::vector<const Point*> where(const std::vector<Point>& pts, const std::function<bool(const Point&)>& pred) {
  std::vector<const Point*> out;
  for (const auto& p : pts)
    if (pred(p)) out.push_back(&p);
  return out;
}

std::vector<double> values(const std::vector<const Point*>& pts, double Point::*field) {
  std::vector<double> out;
  for (const auto* p : pts) out.push_back(p->*field);
  return out;
}

int method_rank(const std::string& experiment, const std::string& method) {
  static constexpr std::array<std::pair<const char*, const char*>, 11> order = {{{"T1", "random"},
                                                                                 {"T1", "biased_delta"},
                                                                                 {"T1", "biased_grad"},
                                                                                 {"F3", "dare"},
                                                                                 {"F3", "drop"},
                                                                                 {"F3", "magnitude"},
                                                                                 {"F3", "bitdelta"},
                                                                                 {"F3", "lowrank"},
                                                                                 {"F5", "multiple"},
                                                                                 {"F5", "uniform"},
                                                                                 {"F5", "normal"}}};
  int rank = 0;
  for (const auto& [e, m] : order) {
    if (experiment == e) {
      if (method == m) return rank;
      ++rank;
    }
  }
  return 100;
}

std::string method_name(const std::string& method) {
  if (method == "random") return "random";
  if (method == "biased_delta") return "biased by \u0394";
  if (method == "biased_grad") return "biased by \u0394\u00b7\u2207";
  if (method == "multiple") return "magnitude multiple s";
  if (method == "uniform") return "resampled: uniform";
  if (method == "normal") return "resampled: normal";
  return method.empty() ? "(no method)" : method;
}

// The F3 methods whose loss the paper reports as increased by the edit.
bool decreased_class(const std::string& method) {
  return method == "drop" || method == "magnitude" || method == "bitdelta" || method == "lowrank";
}

// Median |approximation term| of the decreased-class methods of F3 (NaN when none).
double zero_reference(const Sweep& s) {
  std::vector<double> a;
  for (const auto& p : s.points("F3"))
    if (decreased_class(p.param_text("method")) && std::isfinite(p.term)) a.push_back(std::fabs(p.term));
  return median(a);
}

bool near_zero(double term, double reference) {
  return std::isfinite(term) && std::isfinite(reference) && reference > 0.0 &&
         std::fabs(term) < Rules::near_zero_fraction * reference;
}

// ---------------------------------------------------------------- claims

// Accuracies that should stay within Rules::near_post of post.
void near_post_claim(Claim& c, const std::vector<const Point*>& pts, double post, const std::string& source) {
  const auto acc = finite(values(pts, &Point::accuracy));
  if (acc.empty()) {
    c.measured = source + ": no accuracy measured";
    set_verdict(c, Verdict::Inconclusive, "nothing to compare");
    return;
  }
  if (!std::isfinite(post)) {
    c.measured = source + ": accuracy " + range_text(acc, pct) + "; post accuracy unknown";
    set_verdict(c, Verdict::Inconclusive, "no post accuracy to compare with");
    return;
  }
  std::vector<bool> checks;
  double worst = 0.0;
  for (double a : acc) {
    checks.push_back(near_post(a, post));
    worst = std::max(worst, std::fabs(a - post));
  }
  const auto within = std::count(checks.begin(), checks.end(), true);
  c.measured = fmt::format("{}: accuracy {} over {} edits vs post {} (largest deviation {} points)", source,
                           range_text(acc, pct), acc.size(), pct(post), points_text(worst));
  set_verdict(c, combine(checks),
              fmt::format("{} of {} within {} points of post", within, acc.size(), points_text(Rules::near_post)));
}

Claim claim_random(const Sweep& s) {
  Claim c{"F1/T1",
          "Random DARE-extension keeps accuracy near the post model for k in [0.5, 1.5] (paper: 75.4\u201376.4% "
          "for LLaMA-3-8B-Instruct on GSM8K).",
          {}, {}, Verdict::Inconclusive};
  auto pts = where(s.points("T1"), [](const Point& p) { return p.param_text("method") == "random"; });
  std::string source = "T1 random";
  if (finite(values(pts, &Point::accuracy)).empty()) {
    pts = where(s.points("F1"), [](const Point& p) {
      const double k = p.param("k");
      return k >= 0.5 - 1e-9 && k <= 1.5 + 1e-9;
    });
    source = "F1 with k in [0.5, 1.5]";
  }
  near_post_claim(c, pts, s.post_acc, source);
  return c;
}

Claim claim_biased_delta(const Sweep& s) {
  Claim c{"T1", "Biased selection by \u0394 (M = [\u0394<0]) keeps performance (paper: 74.2\u201376.0%).", {}, {},
          Verdict::Inconclusive};
  near_post_claim(c, where(s.points("T1"), [](const Point& p) { return p.param_text("method") == "biased_delta"; }),
                  s.post_acc, "T1 biased by \u0394");
  return c;
}

Claim claim_biased_grad(const Sweep& s) {
  Claim c{"T1", "Biased selection by \u0394\u00b7\u2207 (M = [\u0394\u00b7G<0]) destroys performance (paper: 0\u201326.8%).",
          {}, {}, Verdict::Inconclusive};
  const auto pts = where(s.points("T1"), [](const Point& p) { return p.param_text("method") == "biased_grad"; });
  const auto acc = finite(values(pts, &Point::accuracy));
  if (acc.empty() || !std::isfinite(s.post_acc)) {
    c.measured = acc.empty() ? "T1 biased by \u0394\u00b7\u2207: no accuracy measured"
                             : "T1 biased by \u0394\u00b7\u2207: accuracy " + range_text(acc, pct) + "; post unknown";
    set_verdict(c, Verdict::Inconclusive, "nothing to compare");
    return c;
  }
  std::vector<bool> checks;
  for (double a : acc) checks.push_back(destroyed(a, s.post_acc));
  const auto n = std::count(checks.begin(), checks.end(), true);
  c.measured = fmt::format("T1 biased by \u0394\u00b7\u2207: accuracy {} over {} edits vs post {} (base {})",
                           range_text(acc, pct), acc.size(), pct(s.post_acc), pct(s.base_acc));
  set_verdict(c, combine(checks), fmt::format("{} of {} destroyed (at most {}% of post and more than {} points below it)",
                                              n, acc.size(), format_number(100.0 * Rules::destroyed_fraction, 3),
                                              points_text(Rules::near_post)));
  return c;
}

Claim claim_dare_competitive(const Sweep& s) {
  Claim c{"F1",
          "DARE (k = 0) is competitive even at p = 0.9: approximation term \u2248 0 (small next to the other "
          "methods) and accuracy near the post model.",
          {}, {}, Verdict::Inconclusive};
  const Point* best = nullptr;
  for (const auto& p : s.points("F1")) {
    const double k = p.param("k"), pp = p.param("p");
    if (std::isfinite(k) && std::fabs(k) < 1e-12 && std::isfinite(pp) && (!best || pp > best->param("p"))) best = &p;
  }
  if (!best) {
    c.measured = "F1 has no DARE (k = 0) points";
    set_verdict(c, Verdict::Inconclusive, "nothing to compare");
    return c;
  }
  const double ref = zero_reference(s);
  std::vector<bool> checks;
  std::vector<std::string> why;
  if (std::isfinite(best->accuracy) && std::isfinite(s.post_acc)) {
    const bool ok = near_post(best->accuracy, s.post_acc);
    checks.push_back(ok);
    why.push_back(ok ? "accuracy near post" : "accuracy not near post");
  } else {
    why.push_back("accuracy not measured");
  }
  if (std::isfinite(best->term) && std::isfinite(ref) && ref > 0.0) {
    const bool ok = near_zero(best->term, ref);
    checks.push_back(ok);
    why.push_back(ok ? "term \u2248 0" : "term not \u2248 0");
  } else {
    why.push_back("no F3 reference for \u2248 0");
  }
  c.measured = fmt::format("DARE p = {} (k = 0): accuracy {} vs post {}; approximation term {} vs {}% of the median "
                           "|term| of drop/magnitude/bitdelta/lowrank = {}",
                           format_number(best->param("p"), 3), pct(best->accuracy), pct(s.post_acc), sci(best->term),
                           format_number(100.0 * Rules::near_zero_fraction, 3),
                           sci(Rules::near_zero_fraction * ref));
  std::string text;
  for (const auto& w : why) text += (text.empty() ? "" : ", ") + w;
  set_verdict(c, combine(checks), text);
  return c;
}

Claim claim_term_classes(const Sweep& s) {
  Claim c{"F3",
          "The approximation term is \u2248 0 for DARE and > 0 (loss increases) for drop, magnitude pruning, "
          "BitDelta and low-rank.",
          {}, {}, Verdict::Inconclusive};
  const double ref = zero_reference(s);
  std::vector<bool> checks;
  std::vector<std::string> parts, why;
  const auto dare = where(s.points("F3"), [](const Point& p) { return p.param_text("method") == "dare"; });
  const auto dare_terms = finite(values(dare, &Point::term));
  if (!dare_terms.empty() && std::isfinite(ref) && ref > 0.0) {
    std::size_t zero = 0;
    double worst = 0.0;
    for (double t : dare_terms) zero += near_zero(t, ref), worst = std::max(worst, std::fabs(t));
    checks.push_back(zero == dare_terms.size());
    parts.push_back(fmt::format("DARE max |term| {} ({} of {} below {})", sci(worst), zero, dare_terms.size(),
                                sci(Rules::near_zero_fraction * ref)));
    why.push_back(zero == dare_terms.size() ? "DARE \u2248 0" : "DARE not \u2248 0");
  } else {
    why.push_back(dare_terms.empty() ? "no DARE terms" : "no reference for \u2248 0");
  }
  for (const char* m : {"drop", "magnitude", "bitdelta", "lowrank"}) {
    const auto terms = finite(values(where(s.points("F3"), [&](const Point& p) { return p.param_text("method") == m; }),
                                     &Point::term));
    if (terms.empty()) continue;
    const double med = median(terms);
    const auto positive = std::count_if(terms.begin(), terms.end(), [](double t) { return t > 0.0; });
    checks.push_back(med > 0.0);
    parts.push_back(fmt::format("{} median {} ({} of {} > 0)", m, sci(med), positive, terms.size()));
    why.push_back(std::string(m) + (med > 0.0 ? " > 0" : " not > 0"));
  }
  c.measured = parts.empty() ? "F3: no approximation terms measured" : "";
  for (const auto& p : parts) c.measured += (c.measured.empty() ? "" : "; ") + p;
  std::string text;
  for (const auto& w : why) text += (text.empty() ? "" : ", ") + w;
  set_verdict(c, combine(checks), text);
  return c;
}

Claim claim_multibit(const Sweep& s) {
  Claim c{"F4", "BitDelta with \u2265 4 bits is about as good as the post model.", {}, {}, Verdict::Inconclusive};
  const auto high = where(s.points("F4"), [](const Point& p) { return p.param("bits") >= 4.0; });
  near_post_claim(c, high, s.post_acc, "F4 with \u2265 4 bits");
  const auto terms = finite(values(high, &Point::term));
  if (!terms.empty()) c.measured += "; approximation term " + range_text(terms, sci);
  const auto low = where(s.points("F4"), [](const Point& p) { return p.param("bits") < 4.0; });
  const auto low_acc = finite(values(low, &Point::accuracy));
  if (!low_acc.empty()) c.measured += "; below 4 bits: accuracy " + range_text(low_acc, pct);
  return c;
}

Claim claim_scale(const Sweep& s) {
  Claim c{"F6/F7",
          "Extrapolation (\u03b1 > 0, EXPO) can improve the model, seen as a negative approximation term; "
          "interpolation toward the base (\u03b1 < 0) increases the loss.",
          {}, {}, Verdict::Inconclusive};
  const auto ext = where(s.points("F6"), [](const Point& p) { return p.param("alpha") > 0.0 && std::isfinite(p.term); });
  const auto inter = where(s.points("F6"), [](const Point& p) { return p.param("alpha") < 0.0 && std::isfinite(p.term); });
  std::vector<bool> checks;
  std::vector<std::string> parts, why;
  if (!ext.empty()) {
    const Point* low = *std::min_element(ext.begin(), ext.end(), [](auto* a, auto* b) { return a->term < b->term; });
    const auto negative = std::count_if(ext.begin(), ext.end(), [](auto* p) { return p->term < 0.0; });
    checks.push_back(negative > 0);
    parts.push_back(fmt::format("\u03b1 > 0: {} of {} terms < 0, lowest {} at \u03b1 = {}", negative, ext.size(),
                                sci(low->term), format_number(low->param("alpha"), 3)));
    why.push_back(negative > 0 ? "some extrapolation lowers the loss" : "no extrapolation lowers the loss");
  }
  if (!inter.empty()) {
    const auto positive = std::count_if(inter.begin(), inter.end(), [](auto* p) { return p->term > 0.0; });
    checks.push_back(positive == static_cast<std::ptrdiff_t>(inter.size()));
    parts.push_back(fmt::format("\u03b1 < 0: {} of {} terms > 0", positive, inter.size()));
    why.push_back(positive == static_cast<std::ptrdiff_t>(inter.size()) ? "interpolation raises the loss"
                                                                        : "not every interpolation raises the loss");
  }
  const auto acc_pts = where(s.points("F6"), [](const Point& p) { return std::isfinite(p.accuracy); });
  if (!acc_pts.empty()) {
    const Point* top = *std::max_element(acc_pts.begin(), acc_pts.end(),
                                         [](auto* a, auto* b) { return a->accuracy < b->accuracy; });
    parts.push_back(fmt::format("best accuracy {} at \u03b1 = {} (post {})", pct(top->accuracy),
                                format_number(top->param("alpha"), 3), pct(s.post_acc)));
  }
  c.measured = parts.empty() ? "F6: no approximation terms measured" : "";
  for (const auto& p : parts) c.measured += (c.measured.empty() ? "" : "; ") + p;
  std::string text;
  for (const auto& w : why) text += (text.empty() ? "" : ", ") + w;
  set_verdict(c, combine(checks), text.empty() ? "nothing to compare" : text);
  return c;
}

struct Pairs {
  std::vector<double> term, true_dl, gap;
};

Pairs term_pairs(const std::vector<const Point*>& pts) {
  Pairs p;
  for (const auto* q : pts) {
    p.term.push_back(q->term);
    p.true_dl.push_back(q->true_dl);
    p.gap.push_back(q->gap);
  }
  return p;
}

Claim claim_sign(const Sweep& s) {
  Claim c{"all", "The sign of the approximation term agrees with the sign of the true loss change \u0394L.", {}, {},
          Verdict::Inconclusive};
  const Pairs p = term_pairs(s.all());
  const Agreement a = agreement(p.term, p.true_dl);
  c.measured = fmt::format("{} edits: sign agreement {}, Pearson {}, Spearman {}, mean |gap| {}", a.used,
                           a.used ? pct(a.sign_agreement) : "n/a", sci(a.pearson), sci(a.spearman), sci(mean_abs(p.gap)));
  if (a.used < Rules::min_pairs) {
    set_verdict(c, Verdict::Inconclusive, fmt::format("fewer than {} (term, \u0394L) pairs", Rules::min_pairs));
    return c;
  }
  const bool sign_strong = a.sign_agreement >= Rules::sign_strong;
  const bool rank_strong = std::isfinite(a.spearman) && a.spearman >= Rules::spearman_strong;
  const bool sign_weak = a.sign_agreement >= Rules::sign_weak;
  const bool rank_weak = std::isfinite(a.spearman) && a.spearman >= Rules::spearman_weak;
  const Verdict v = sign_strong && rank_strong ? Verdict::Supported
                    : (sign_weak || rank_weak) ? Verdict::Partial
                                               : Verdict::NotSupported;
  // Compare with the thresholds that decided the verdict: the strong ones when it holds, else the weak ones.
  const bool strong = v == Verdict::Supported;
  const double sign_bar = strong ? Rules::sign_strong : Rules::sign_weak;
  const double rank_bar = strong ? Rules::spearman_strong : Rules::spearman_weak;
  const bool sign_ok = strong ? sign_strong : sign_weak, rank_ok = strong ? rank_strong : rank_weak;
  set_verdict(c, v,
              fmt::format("sign agreement {} {} {} {} Spearman {} {} {}", pct(a.sign_agreement),
                          sign_ok ? "\u2265" : "<", pct(sign_bar), v == Verdict::Partial ? "or" : "and",
                          sci(a.spearman), rank_ok ? "\u2265" : "<", format_number(rank_bar, 2)));
  return c;
}

std::vector<Claim> claims_of(const Sweep& s) {
  return {claim_random(s),          claim_biased_delta(s), claim_biased_grad(s), claim_dare_competitive(s),
          claim_term_classes(s),    claim_multibit(s),     claim_scale(s),       claim_sign(s)};
}

// ---------------------------------------------------------------- charts

struct Group {
  double order;
  std::string name;
  bool operator<(const Group& o) const { return order != o.order ? order < o.order : name < o.name; }
};

using PointFn = std::function<double(const Point&)>;

// One series per group, points sorted by x; non-finite pairs and empty series left out.
std::vector<Series> grouped_series(const std::vector<const Point*>& pts, const std::function<Group(const Point&)>& group,
                                   const PointFn& x, const PointFn& y) {
  std::map<Group, std::vector<std::pair<double, double>>> groups;
  for (const auto* p : pts) {
    Group g = group(*p);
    if (!std::isfinite(g.order)) g.order = std::numeric_limits<double>::infinity();
    auto& list = groups[g];
    const double xv = x(*p), yv = y(*p);
    if (std::isfinite(xv) && std::isfinite(yv)) list.emplace_back(xv, yv);
  }
  std::vector<Series> out;
  for (auto& [g, list] : groups) {
    if (list.empty()) continue;
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    Series s;
    s.name = g.name;
    for (const auto& [xv, yv] : list) s.x.push_back(xv), s.y.push_back(yv);
    out.push_back(std::move(s));
  }
  return out;
}

Group single_group(const std::string& name) { return {0.0, name}; }

double percent_of(double a) { return 100.0 * a; }

std::vector<RefLine> accuracy_refs(const Sweep& s) {
  std::vector<RefLine> r;
  if (std::isfinite(s.base_acc)) r.push_back({percent_of(s.base_acc), "base " + pct(s.base_acc), false, kBaseColor});
  if (std::isfinite(s.post_acc)) r.push_back({percent_of(s.post_acc), "post " + pct(s.post_acc), false, kPostColor});
  return r;
}

std::vector<RefLine> loss_refs(const Sweep& s) {
  std::vector<RefLine> r;
  if (std::isfinite(s.base_loss)) r.push_back({s.base_loss, "base " + format_number(s.base_loss, 4), false, kBaseColor});
  if (std::isfinite(s.post_loss)) r.push_back({s.post_loss, "post " + format_number(s.post_loss, 4), false, kPostColor});
  return r;
}

RefLine zero_line() { return {0.0, "0", false, "#444444"}; }

// Width of the linear part of a symmetric-log axis: a power of ten near the
// small end of the non-zero magnitudes, so that tick labels stay round.
double symlog_width_for(const std::vector<double>& ys) {
  std::vector<double> a;
  for (double y : ys)
    if (std::isfinite(y) && y != 0.0) a.push_back(std::fabs(y));
  if (a.empty()) return 1e-6;
  std::sort(a.begin(), a.end());
  const double w = a[a.size() / 10];
  return std::pow(10.0, std::floor(std::log10(w)));
}

double symlog_width_for(const std::vector<Series>& series) {
  std::vector<double> ys;
  for (const auto& s : series) ys.insert(ys.end(), s.y.begin(), s.y.end());
  return symlog_width_for(ys);
}

ChartOptions chart(std::string title, std::string x_title, std::string y_title) {
  ChartOptions o;
  o.title = std::move(title);
  o.x_title = std::move(x_title);
  o.y_title = std::move(y_title);
  return o;
}

ChartOptions term_chart(std::string title, std::string x_title, const std::vector<Series>& series) {
  ChartOptions o = chart(std::move(title), std::move(x_title), "approximation term (symlog)");
  o.y_scale = Scale::SymLog;
  o.symlog_width = symlog_width_for(series);
  return o;
}

void add_line(Report& r, const ChartOptions& o, const std::vector<Series>& series, const std::vector<RefLine>& refs,
              const std::string& caption, const std::string& what) {
  if (series.empty()) {
    r.add_paragraph("No " + what + " to plot for \u201c" + o.title + "\u201d (missing or non-finite values).");
    return;
  }
  r.add_chart(line_chart(o, series, refs), caption);
}

std::string term_caption(const ChartOptions& o) {
  return "Symmetric-log y axis, linear within \u00b1" + format_number(o.symlog_width, 3) +
         "; the line at 0 separates edits that lower the loss (below) from edits that raise it (above).";
}

// ---------------------------------------------------------------- tables and CSV

std::vector<std::string> param_keys(const std::string& id, const std::vector<Point>& pts) {
  static constexpr std::array<std::pair<const char*, std::array<const char*, 2>>, 6> preferred = {{
      {"F1", {"p", "k"}},
      {"T1", {"method", "k"}},
      {"F3", {"method", "p"}},
      {"F4", {"bits", nullptr}},
      {"F5", {"variant", "s"}},
      {"F6", {"alpha", nullptr}},
  }};
  std::vector<std::string> keys;
  for (const auto& [e, ks] : preferred)
    if (id == e)
      for (const char* k : ks)
        if (k) keys.emplace_back(k);
  for (const auto& p : pts)
    for (const auto& [k, v] : p.params.items())
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  return keys;
}

// Exact value for CSV: numbers keep every digit, null or missing is an empty field.
Cell exact_cell(const json* v) {
  if (!v || v->is_null()) return {};
  if (v->is_number_unsigned()) return Cell(v->get<std::uint64_t>());
  if (v->is_number_integer()) return Cell(v->get<std::int64_t>());
  if (v->is_number()) return Cell(v->get<double>());
  if (v->is_string()) return Cell(v->get<std::string>());
  if (v->is_boolean()) return Cell(v->get<bool>());
  return Cell(dump(*v));
}

// A parameter for people.
Cell param_cell(const json& params, const std::string& key) {
  const json* v = member(params, key.c_str());
  if (v && v->is_number_float()) return Cell::number(v->get<double>(), 4);
  return exact_cell(v);
}

Cell num_cell(double v, int significant = 4) { return std::isnan(v) ? Cell("n/a") : Cell::number(v, significant); }
Cell acc_cell(double a) { return std::isfinite(a) ? Cell::percent(a, 1) : Cell("n/a"); }

void add_points_table(Report& r, const std::string& id, const std::vector<Point>& pts) {
  const auto keys = param_keys(id, pts);
  std::vector<std::string> header = {"edit"};
  header.insert(header.end(), keys.begin(), keys.end());
  for (const char* h : {"accuracy", "loss", "approx. term", "true \u0394L", "gap", "intensity", "time (s)"})
    header.emplace_back(h);
  std::vector<std::vector<Cell>> rows;
  for (const auto& p : pts) {
    std::vector<Cell> row = {p.label};
    for (const auto& k : keys) row.push_back(param_cell(p.params, k));
    row.push_back(acc_cell(p.accuracy));
    row.push_back(num_cell(p.loss, 6));
    row.push_back(num_cell(p.term));
    row.push_back(num_cell(p.true_dl));
    row.push_back(num_cell(p.gap));
    row.push_back(num_cell(p.intensity));
    row.push_back(num_cell(p.seconds, 3));
    rows.push_back(std::move(row));
  }
  r.add_table(std::move(header), std::move(rows), fmt::format("All {} edits of {}", pts.size(), id));
}

void write_experiment_csv(const std::filesystem::path& file, const std::string& id, const std::vector<Point>& pts) {
  const auto keys = param_keys(id, pts);
  std::vector<std::string> header = {"id", "label", "ops"};
  header.insert(header.end(), keys.begin(), keys.end());
  const std::vector<std::string> fields = {"accuracy", "loss",      "loss_post", "approximation_term", "true_delta_loss",
                                           "gap",      "intensity", "seconds"};
  header.insert(header.end(), fields.begin(), fields.end());
  std::vector<std::vector<Cell>> rows;
  for (const auto& p : pts) {
    std::vector<Cell> row = {exact_cell(member(*p.raw, "id")), exact_cell(member(*p.raw, "label")), Cell(p.ops)};
    for (const auto& k : keys) row.push_back(exact_cell(member(p.params, k.c_str())));
    for (const auto& f : fields) row.push_back(exact_cell(member(*p.raw, f.c_str())));
    rows.push_back(std::move(row));
  }
  write_csv(file, header, rows);
}

// ---------------------------------------------------------------- sections

const char* section_title(const std::string& id) {
  if (id == "F1") return "F1: DARE extension, accuracy and loss vs p for several k";
  if (id == "T1") return "T1: random vs biased selection";
  if (id == "F3") return "F3: approximation term per method and over tensors";
  if (id == "F4") return "F4: multi-bit BitDelta";
  if (id == "F5") return "F5: BitDelta magnitude multiple and resampled magnitudes";
  if (id == "F6") return "F6/F7: scaling the delta, interpolation and extrapolation";
  return nullptr;
}

void section_f1(Report& r, const Sweep& s, const std::vector<Point>& pts) {
  r.add_paragraph("DARE extension: a fraction p of the delta is selected at random and multiplied by k, the rest "
                  "rescaled by (1\u2212k\u00b7p)/(1\u2212p) so that the expectation is kept. k = 0 is DARE; k < 0 flips "
                  "the signs of the selected entries.");
  const auto all = where(pts, [](const Point&) { return true; });
  const auto by_k = [](const Point& p) { return Group{p.param("k"), "k=" + format_number(p.param("k"), 3)}; };
  const PointFn x = [](const Point& p) { return p.param("p"); };
  add_line(r, chart("F1: accuracy vs p", "drop rate p", "accuracy (%)"),
           grouped_series(all, by_k, x, [](const Point& p) { return percent_of(p.accuracy); }), accuracy_refs(s),
           "One line per k; reference lines at the base and post accuracy.", "accuracy");
  add_line(r, chart("F1: loss vs p", "drop rate p", "loss L(W_edit)"),
           grouped_series(all, by_k, x, [](const Point& p) { return p.loss; }), loss_refs(s),
           "One line per k; reference lines at the base and post loss.", "loss");
  const auto terms = grouped_series(all, by_k, x, [](const Point& p) { return p.term; });
  const auto o = term_chart("F1: approximation term vs p", "drop rate p", terms);
  add_line(r, o, terms, {zero_line()}, term_caption(o), "approximation term");
}

void section_t1(Report& r, const Sweep& s, const std::vector<Point>& pts) {
  r.add_paragraph("The selection M of the DARE extension drawn at random, or chosen: biased by \u0394 selects the "
                  "entries with \u0394 < 0, biased by \u0394\u00b7\u2207 those with \u0394\u00b7G < 0 (G = \u2207L at the "
                  "post model). k = 1 is the identity.");
  const auto all = where(pts, [](const Point&) { return true; });
  const auto by_method = [](const Point& p) {
    const std::string m = p.param_text("method");
    return Group{static_cast<double>(method_rank("T1", m)), method_name(m)};
  };
  const PointFn x = [](const Point& p) { return p.param("k"); };
  std::vector<RefLine> refs = accuracy_refs(s);
  refs.push_back({1.0, "k=1 (identity)", true, "#bbbbbb"});
  add_line(r, chart("T1: accuracy vs k", "k", "accuracy (%)"),
           grouped_series(all, by_method, x, [](const Point& p) { return percent_of(p.accuracy); }), refs,
           "Random vs biased selection; reference lines at the base and post accuracy.", "accuracy");
  const auto terms = grouped_series(all, by_method, x, [](const Point& p) { return p.term; });
  const auto o = term_chart("T1: approximation term vs k", "k", terms);
  add_line(r, o, terms, {zero_line()}, term_caption(o), "approximation term");
}

std::string f3_label(const Point& p) {
  const std::string m = p.param_text("method");
  const double pp = p.param("p");
  if (!m.empty()) return std::isfinite(pp) ? m + " p=" + format_number(pp, 3) : m;
  return p.label;
}

void section_f3(Report& r, const Sweep& s, const std::vector<Point>& pts) {
  r.add_paragraph("Approximation term only (accuracy is not measured here). Per tensor, the contributions sum to the "
                  "total term; their distribution shows whether a few tensors or all of them carry the loss change.");
  std::vector<const Point*> sorted = where(pts, [](const Point&) { return true; });
  std::stable_sort(sorted.begin(), sorted.end(), [](const Point* a, const Point* b) {
    const int ra = method_rank("F3", a->param_text("method")), rb = method_rank("F3", b->param_text("method"));
    if (ra != rb) return ra < rb;
    const double pa = a->param("p"), pb = b->param("p");
    return std::isfinite(pa) && std::isfinite(pb) ? pa < pb : std::isfinite(pa) && !std::isfinite(pb);
  });

  // Bars: approximation term and true ΔL per edit.
  std::vector<std::string> categories;
  ValueSeries term{"approximation term", {}, {}}, truth{"true \u0394L", {}, {}};
  for (const auto* p : sorted) {
    categories.push_back(f3_label(*p));
    term.values.push_back(p->term);
    truth.values.push_back(p->true_dl);
  }
  std::vector<ValueSeries> bars;
  for (auto* v : {&term, &truth})
    if (!finite(v->values).empty()) bars.push_back(*v);
  if (bars.empty()) {
    r.add_paragraph("No finite approximation terms to plot for F3.");
  } else {
    ChartOptions o = chart("F3: approximation term per method", "", "approximation term / \u0394L (symlog)");
    o.y_scale = Scale::SymLog;
    std::vector<double> ys = term.values;
    ys.insert(ys.end(), truth.values.begin(), truth.values.end());
    o.symlog_width = symlog_width_for(ys);
    o.width = std::max(640, 40 + 34 * static_cast<int>(categories.size()));
    o.width = std::min(o.width, 1040);
    r.add_chart(bar_chart(o, categories, bars, {zero_line()}), term_caption(o));
  }

  // Method classes by the rule of the claims table.
  const double ref = zero_reference(s);
  std::map<std::pair<int, std::string>, std::vector<double>> by_method;
  for (const auto* p : sorted) {
    const std::string m = p->param_text("method");
    by_method[{method_rank("F3", m), m}].push_back(p->term);
  }
  std::vector<std::vector<Cell>> class_rows;
  for (const auto& [key, terms] : by_method) {
    const double med = median(terms);
    const auto f = finite(terms);
    std::string cls = "n/a";
    if (std::isfinite(med)) {
      if (near_zero(med, ref)) cls = "\u2248 0 (competitive)";
      else if (med > 0.0) cls = "> 0 (loss increases)";
      else if (med < 0.0) cls = "< 0 (loss decreases)";
      else cls = "0";
    }
    class_rows.push_back({method_name(key.second), Cell(f.size()), num_cell(med), Cell(range_text(f, sci)), Cell(cls)});
  }
  if (!class_rows.empty())
    r.add_table({"method", "edits", "median term", "range", "class"}, std::move(class_rows),
                "Class of each method: \u2248 0 when the median |term| is below " +
                    format_number(100.0 * Rules::near_zero_fraction, 3) +
                    "% of the median |term| of drop, magnitude, bitdelta and lowrank (" +
                    sci(Rules::near_zero_fraction * ref) + " here), else by its sign.");

  // Representative edits: per method, the point with the largest p.
  std::map<std::pair<int, std::string>, const Point*> reps;
  for (const auto* p : sorted) {
    if (p->per_tensor.empty()) continue;
    const std::string m = p->param_text("method");
    const auto key = std::make_pair(method_rank("F3", m), m);
    const auto it = reps.find(key);
    const double pp = p->param("p");
    if (it == reps.end() || (std::isfinite(pp) && !(pp <= it->second->param("p")))) reps[key] = p;
  }
  if (reps.empty()) {
    r.add_paragraph("No per-tensor contributions in the F3 results: the distribution over tensors cannot be shown.");
  } else {
    r.add_subsection("Distribution over tensors");
    std::vector<std::vector<Cell>> top_rows;
    for (const auto& [key, p] : reps) {
      std::vector<double> c;
      double sum = 0.0, sum_abs = 0.0;
      for (const auto& [name, v] : p->per_tensor) c.push_back(v), sum += v, sum_abs += std::fabs(v);
      ChartOptions o = chart("F3: per-tensor contributions, " + f3_label(*p), "contribution to the approximation term",
                             "tensors");
      o.width = 520;
      o.height = 300;
      r.add_chart(histogram_chart(o, {{f3_label(*p), c, {}}}, {{0.0, "0", true, "#444444"}}),
                  fmt::format("{} tensors; contributions sum to {} (total term {}).", c.size(), sci(sum), sci(p->term)));
      auto order = p->per_tensor;
      std::stable_sort(order.begin(), order.end(),
                       [](const auto& a, const auto& b) { return std::fabs(a.second) > std::fabs(b.second); });
      for (std::size_t i = 0; i < order.size() && i < 5; ++i)
        top_rows.push_back({f3_label(*p), Cell(i + 1), order[i].first, num_cell(order[i].second),
                            sum_abs > 0.0 ? Cell::percent(std::fabs(order[i].second) / sum_abs) : Cell("n/a")});
    }
    r.add_table({"edit", "rank", "tensor", "contribution", "share of \u03a3|c|"}, std::move(top_rows),
                "Top 5 tensors by |contribution| for each representative edit.");
  }
}

void section_f4(Report& r, const Sweep& s, const std::vector<Point>& pts) {
  r.add_paragraph("Multi-bit BitDelta: |\u0394| sorted and split into 2^b equal-count blocks, each replaced by its mean; "
                  "signs kept. 0 bits is plain BitDelta.");
  const auto all = where(pts, [](const Point&) { return true; });
  const auto one = [](const Point&) { return single_group("multi-bit BitDelta"); };
  const PointFn x = [](const Point& p) { return p.param("bits"); };
  add_line(r, chart("F4: accuracy vs bits", "bits", "accuracy (%)"),
           grouped_series(all, one, x, [](const Point& p) { return percent_of(p.accuracy); }), accuracy_refs(s),
           "Reference lines at the base and post accuracy.", "accuracy");
  const auto terms = grouped_series(all, one, x, [](const Point& p) { return p.term; });
  const auto o = term_chart("F4: approximation term vs bits", "bits", terms);
  add_line(r, o, terms, {zero_line()}, term_caption(o), "approximation term");
}

void section_f5(Report& r, const Sweep& s, const std::vector<Point>& pts) {
  r.add_paragraph("BitDelta with its magnitude multiplied by s (s = 1 is plain BitDelta), and magnitudes resampled "
                  "per element from a uniform or normal distribution with mean s\u00b7mean|\u0394| (drawn at s = 1 when "
                  "no s is given).");
  const auto all = where(pts, [](const Point&) { return true; });
  const auto by_variant = [](const Point& p) {
    const std::string v = p.param_text("variant");
    return Group{static_cast<double>(method_rank("F5", v)), method_name(v)};
  };
  const PointFn x = [](const Point& p) {
    const double sv = p.param("s");
    return std::isnan(sv) && p.param_text("variant") != "multiple" ? 1.0 : sv;
  };
  add_line(r, chart("F5: accuracy vs magnitude multiple s", "s", "accuracy (%)"),
           grouped_series(all, by_variant, x, [](const Point& p) { return percent_of(p.accuracy); }), accuracy_refs(s),
           "The resampled variants are separate points; reference lines at the base and post accuracy.", "accuracy");
  const auto terms = grouped_series(all, by_variant, x, [](const Point& p) { return p.term; });
  const auto o = term_chart("F5: approximation term vs s", "s", terms);
  add_line(r, o, terms, {zero_line()}, term_caption(o), "approximation term");

  std::vector<std::string> categories;
  ValueSeries acc{"accuracy (%)", {}, {}};
  for (const auto* p : all) {
    categories.push_back(p->label);
    acc.values.push_back(percent_of(p->accuracy));
  }
  if (!finite(acc.values).empty()) {
    ChartOptions bo = chart("F5: accuracy per variant", "", "accuracy (%)");
    r.add_chart(bar_chart(bo, categories, {acc}, accuracy_refs(s)), "Every F5 edit as a bar.");
  }
}

void section_f6(Report& r, const Sweep& s, const std::vector<Point>& pts) {
  r.add_paragraph("\u0394' = (1+\u03b1)\u00b7\u0394. \u03b1 < 0 interpolates toward the base (\u03b1 = \u22121 is the "
                  "base model), \u03b1 = 0 is the post model, \u03b1 > 0 extrapolates beyond it (EXPO). Interpolation "
                  "lies left of the vertical line at \u03b1 = 0, extrapolation right of it.");
  const auto all = where(pts, [](const Point&) { return true; });
  const auto one = [](const Point&) { return single_group("scale \u03b1"); };
  const PointFn x = [](const Point& p) { return p.param("alpha"); };
  const RefLine post_line{0.0, "post (\u03b1=0)", true, kPostColor};
  const auto terms = grouped_series(all, one, x, [](const Point& p) { return p.term; });
  const auto o = term_chart("F6: approximation term vs \u03b1", "\u03b1", terms);
  add_line(r, o, terms, {zero_line(), post_line}, term_caption(o), "approximation term");
  auto refs = accuracy_refs(s);
  refs.push_back(post_line);
  add_line(r, chart("F7: accuracy vs \u03b1", "\u03b1", "accuracy (%)"),
           grouped_series(all, one, x, [](const Point& p) { return percent_of(p.accuracy); }), refs,
           "Reference lines at the base and post accuracy.", "accuracy");

  const auto ext = where(pts, [](const Point& p) { return p.param("alpha") > 0.0; });
  const auto inter = where(pts, [](const Point& p) { return p.param("alpha") < 0.0; });
  const auto ext_terms = finite(values(ext, &Point::term)), inter_terms = finite(values(inter, &Point::term));
  r.add_paragraph(fmt::format("Interpolation (\u03b1 < 0, {} edits): approximation term {}, accuracy {}. "
                              "Extrapolation (\u03b1 > 0, {} edits): approximation term {}, accuracy {}.",
                              inter.size(), range_text(inter_terms, sci),
                              range_text(values(inter, &Point::accuracy), pct), ext.size(), range_text(ext_terms, sci),
                              range_text(values(ext, &Point::accuracy), pct)));
}

void section_agreement(Report& r, const Sweep& s) {
  r.add_section("How well the approximation term predicts \u0394L");
  r.add_paragraph("Every measured edit: the approximation term (x) against the true loss change \u0394L = "
                  "L(W_edit) \u2212 L(W_post) on the same data (y). On the dotted identity line the term predicts "
                  "\u0394L exactly.");
  std::vector<Series> series;
  for (const auto& id : s.ids) {
    Series sr;
    sr.name = id;
    for (const auto& p : s.points(id))
      if (std::isfinite(p.term) && std::isfinite(p.true_dl)) sr.x.push_back(p.term), sr.y.push_back(p.true_dl);
    if (!sr.x.empty()) series.push_back(std::move(sr));
  }
  if (series.empty()) {
    r.add_paragraph("No edit has both a finite approximation term and a finite true \u0394L.");
  } else {
    ChartOptions o = chart("approximation term vs true \u0394L", "approximation term", "true \u0394L");
    o.identity_line = true;
    o.height = 480;
    r.add_chart(scatter_chart(o, series, {zero_line(), {0.0, "", true, "#444444"}}), "One colour per experiment.");
  }
  std::vector<std::vector<Cell>> rows;
  const auto row = [&](const std::string& scope, const std::vector<const Point*>& pts) {
    const Pairs p = term_pairs(pts);
    const Agreement a = agreement(p.term, p.true_dl);
    rows.push_back({scope, Cell(a.used), Cell(a.dropped), num_cell(a.pearson), num_cell(a.spearman),
                    num_cell(a.sign_agreement), num_cell(mean_abs(p.gap)), num_cell(mean_abs(p.true_dl))});
  };
  row("all edits", s.all());
  for (const auto& id : s.ids) {
    const auto& pts = s.points(id);
    if (!pts.empty()) row(id, where(pts, [](const Point&) { return true; }));
  }
  r.add_table({"scope", "pairs", "dropped", "Pearson", "Spearman", "sign agreement", "mean |gap|", "mean |\u0394L|"},
              std::move(rows),
              "Pairs with a non-finite term or \u0394L are dropped. Sign agreement: fraction of pairs with the same sign "
              "(\u22121, 0, +1). gap = \u0394L \u2212 term.");
}

Report build(const Sweep& s, const std::vector<Claim>& claims) {
  Report r("deltaedit sweep: editing delta parameters");
  const auto text = [](const json& c, const char* key) {
    const std::string t = text_field(c, key);
    return t.empty() ? std::string("n/a") : t;
  };
  r.add_summary("base model", text(s.config, "base"));
  r.add_summary("post model", text(s.config, "post"));
  r.add_summary("base accuracy / loss", pct(s.base_acc) + " / " + sci(s.base_loss));
  r.add_summary("post accuracy / loss", pct(s.post_acc) + " / " + sci(s.post_loss));
  const auto all = s.all();
  const auto with_acc = std::count_if(all.begin(), all.end(), [](auto* p) { return std::isfinite(p->accuracy); });
  r.add_summary("edits measured", fmt::format("{} ({} with accuracy)", all.size(), with_acc));
  r.add_summary("total time", seconds_text(s.seconds));
  r.add_summary("seed", text(s.config, "seed"));
  r.add_summary("C (nodes of the approximation term)", text(s.config, "steps"));
  if (member(s.config, "eval_examples")) r.add_summary("accuracy examples", text(s.config, "eval_examples"));
  if (member(s.config, "loss_examples")) r.add_summary("loss examples", text(s.config, "loss_examples"));

  std::string present, missing;
  for (const auto& id : s.ids) {
    const auto it = s.experiments.find(id);
    if (it != s.experiments.end() && !it->second.points.empty())
      present += fmt::format("{}{} ({} edits)", present.empty() ? "" : ", ", id, it->second.points.size());
    else
      missing += (missing.empty() ? "" : ", ") + id;
  }
  r.add_summary_text("Experiments measured: " + (present.empty() ? std::string("none") : present) +
                     (missing.empty() ? "." : "; without results: " + missing + "."));
  r.add_summary_text("Approximation term: (1/C) \u03a3 \u27e8\u2207L(W_post + t_c\u00b7D), D\u27e9 over t_c = c/C, with the "
                     "increment D = \u0394' \u2212 \u0394 of the edit; it approximates \u0394L = L(W_edit) \u2212 "
                     "L(W_post). Accuracies are fractions of exact-match answers.");

  r.add_section("Claims vs measured");
  r.add_paragraph(fmt::format(
      "Verdicts are computed from the measurements by fixed rules. Near post: within {} accuracy points of the post "
      "model. Destroyed: at most {}% of the post accuracy and more than {} points below it. \u2248 0: |approximation "
      "term| below {}% of the median |term| of the decreased-class methods of F3 (drop, magnitude, bitdelta, lowrank). "
      "A method's term is > 0 when its median term over its grid is > 0. Sign agreement: holds with sign agreement "
      "\u2265 {} and Spearman \u2265 {}, partly with sign agreement \u2265 {} or Spearman \u2265 {}. A claim holds when "
      "every check holds, partly holds when some do, does not hold when none do, and is inconclusive when nothing "
      "could be checked. The paper's numbers come from LLaMA-3-8B-Instruct; on another model pair only the shape of "
      "each result is comparable.",
      points_text(Rules::near_post), format_number(100.0 * Rules::destroyed_fraction, 3), points_text(Rules::near_post),
      format_number(100.0 * Rules::near_zero_fraction, 3), pct(Rules::sign_strong),
      format_number(Rules::spearman_strong, 2), pct(Rules::sign_weak), format_number(Rules::spearman_weak, 2)));
  r.add_claims(claims);

  for (const auto& id : s.ids) {
    const char* known = section_title(id);
    r.add_section(known ? std::string(known) : id + ": other experiment");
    const auto it = s.experiments.find(id);
    if (it == s.experiments.end() || !it->second.present) {
      r.add_paragraph("Not measured: results.json has no \u201c" + id + "\u201d experiment.");
      continue;
    }
    if (it->second.malformed) {
      r.add_paragraph("Not shown: the \u201c" + id + "\u201d entry of results.json is not a list of points.");
      continue;
    }
    const auto& pts = it->second.points;
    if (pts.empty()) {
      r.add_paragraph("Not measured: the \u201c" + id + "\u201d experiment of results.json holds no points.");
      continue;
    }
    if (id == "F1") section_f1(r, s, pts);
    else if (id == "T1") section_t1(r, s, pts);
    else if (id == "F3") section_f3(r, s, pts);
    else if (id == "F4") section_f4(r, s, pts);
    else if (id == "F5") section_f5(r, s, pts);
    else if (id == "F6") section_f6(r, s, pts);
    add_points_table(r, id, pts);
  }

  section_agreement(r, s);

  r.add_section("Configuration");
  r.add_paragraph("The sweep configuration recorded in results.json:");
  r.add_preformatted(s.config.dump(2, ' ', false, json::error_handler_t::replace));
  r.set_footer("Reproduce: deltaedit sweep CONFIG --out DIR runs (or resumes) this sweep from a configuration like the "
               "one above and writes DIR/results.json, DIR/<experiment>.csv and DIR/report/index.html; deltaedit demo "
               "runs the built-in reduced sweep on the shipped model pair. Generated by deltaedit.");
  return r;
}

}  // namespace

std::vector<Claim> sweep_claims(const nlohmann::json& results) { return claims_of(parse_sweep(results)); }

std::string sweep_report_html(const nlohmann::json& results) {
  const Sweep s = parse_sweep(results);
  return build(s, claims_of(s)).render();
}

void render_sweep_report(const nlohmann::json& results, const std::filesystem::path& out) {
  const Sweep s = parse_sweep(results);
  const Report report = build(s, claims_of(s));
  std::error_code ec;
  std::filesystem::create_directories(out / "report", ec);
  if (ec) throw std::runtime_error("cannot create " + (out / "report").string() + ": " + ec.message());
  report.write(out / "report" / "index.html");
  for (const auto& id : s.ids) {
    const auto it = s.experiments.find(id);
    if (!is_known(id) || it == s.experiments.end() || !it->second.present) continue;
    write_experiment_csv(out / (id + ".csv"), id, it->second.points);
  }
}

}  // namespace deltaedit::experiments
