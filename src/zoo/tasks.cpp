#include "zoo/tasks.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "zoo/rng.h"
#include "io/writer.h"
#include "util/error.h"

namespace deltaedit::zoo {
namespace {

struct Person {
  std::string_view name, subject, object;  // "Mia", "she", "her"
};

constexpr std::array<Person, 12> kPeople{{
    {"Mia", "she", "her"}, {"Tom", "he", "him"}, {"Anna", "she", "her"}, {"Ben", "he", "him"},
    {"Lily", "she", "her"}, {"Sam", "he", "him"}, {"Emma", "she", "her"}, {"Jack", "he", "him"},
    {"Zoe", "she", "her"}, {"Leo", "he", "him"}, {"Nora", "she", "her"}, {"Max", "he", "him"},
}};

constexpr std::array<std::string_view, 12> kObjects{
    "apples", "pencils", "marbles", "stickers", "cookies", "books",
    "coins",  "cards",   "shells",  "stamps",   "balloons", "toys"};

struct Container {
  std::string_view singular, plural;
};
constexpr std::array<Container, 4> kContainers{
    {{"box", "boxes"}, {"bag", "bags"}, {"pack", "packs"}, {"jar", "jars"}}};

// Update phrases; {n} = operand, {o} = objects, {f} = friend's name.
constexpr std::array<std::string_view, 3> kAddPhrases{
    "buys {n} more {o}", "finds {n} more {o}", "gets {n} more {o} from {f}"};
constexpr std::array<std::string_view, 4> kSubPhrases{
    "gives away {n} {o}", "loses {n} {o}", "gives {n} {o} to {f}", "sells {n} {o}"};
// The same phrases in the past tense (same order), for the corpus's narrative form.
constexpr std::array<std::string_view, 3> kAddPast{
    "bought {n} more {o}", "found {n} more {o}", "got {n} more {o} from {f}"};
constexpr std::array<std::string_view, 4> kSubPast{
    "gave away {n} {o}", "lost {n} {o}", "gave {n} {o} to {f}", "sold {n} {o}"};

constexpr int kMaxValue = 99;
constexpr int kMinOperand = 2, kMaxOperand = 20;
constexpr int kOrderMin = 1, kOrderMax = 99;

std::string fill(std::string_view phrase, int n, std::string_view objects,
                 std::string_view friend_name) {
  std::string out;
  for (std::size_t i = 0; i < phrase.size(); ++i) {
    if (phrase[i] == '{' && i + 2 < phrase.size() && phrase[i + 2] == '}') {
      switch (phrase[i + 1]) {
        case 'n': out += std::to_string(n); break;
        case 'o': out += objects; break;
        case 'f': out += friend_name; break;
        default: out += phrase.substr(i, 3); break;
      }
      i += 2;
    } else {
      out += phrase[i];
    }
  }
  return out;
}

std::string capitalized(std::string_view s) {
  std::string out(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

char op_symbol(TaskOp op) {
  switch (op) {
    case TaskOp::Add: return '+';
    case TaskOp::Sub: return '-';
    case TaskOp::Mul: return '*';
  }
  return '?';
}

int apply(TaskOp op, int a, int b) {
  switch (op) {
    case TaskOp::Add: return a + b;
    case TaskOp::Sub: return a - b;
    case TaskOp::Mul: return a * b;
  }
  return 0;
}

const char* op_word(TaskOp op) {
  switch (op) {
    case TaskOp::Add: return "plus";
    case TaskOp::Sub: return "minus";
    case TaskOp::Mul: return "times";
  }
  return "?";
}

// "a, b, c and d" (or "a and b").
std::string spoken_list(std::span<const int> v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += i + 1 == v.size() ? " and " : ", ";
    out += std::to_string(v[i]);
  }
  return out;
}

std::string make_key(const std::vector<TaskOp>& ops, const std::vector<int>& numbers) {
  std::string key;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (i) key += ',';
    key += to_string(ops[i]);
  }
  key += '|';
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    if (i) key += ',';
    key += std::to_string(numbers[i]);
  }
  return key;
}

}  // namespace

const char* to_string(TaskOp op) {
  switch (op) {
    case TaskOp::Add: return "add";
    case TaskOp::Sub: return "sub";
    case TaskOp::Mul: return "mul";
  }
  return "?";
}

int solve_task(std::span<const TaskOp> ops, std::span<const int> numbers) {
  if (numbers.size() != ops.size() + 1)
    throw Error(ErrorKind::Internal, "solve_task: need one more number than operations");
  int value = numbers[0];
  for (std::size_t i = 0; i < ops.size(); ++i) value = apply(ops[i], value, numbers[i + 1]);
  return value;
}

TaskRecord make_task(uint64_t seed, std::string_view stream, uint64_t index) {
  std::string stream_name = "zoo/tasks/";
  stream_name += stream;
  Draws d(seed, stream_name, index);

  const Person& person = d.pick(std::span<const Person>(kPeople));
  const Person* friend_person = &person;
  while (friend_person->name == person.name) friend_person = &d.pick(std::span<const Person>(kPeople));
  const std::string_view objects = d.pick(std::span<const std::string_view>(kObjects));

  TaskRecord r;
  std::string prompt;
  std::string response;
  std::string story;     // the narrative form (past tense)
  std::string solution;  // the steps in words
  int value = 0;
  int updates = 0;
  if (d.chance(0.3)) {
    // Containers: one multiplication step, then one or two updates.
    const Container& c = d.pick(std::span<const Container>(kContainers));
    const int n = d.uniform_int(2, 5);
    const int m = d.uniform_int(2, 10);
    value = n * m;
    r.numbers = {n, m};
    r.ops = {TaskOp::Mul};
    prompt = std::string(person.name) + " has " + std::to_string(n) + " " + std::string(c.plural) +
             " of " + std::string(objects) + ". Each " + std::string(c.singular) + " holds " +
             std::to_string(m) + " " + std::string(objects) + ".";
    response = std::to_string(n) + " * " + std::to_string(m) + " = " + std::to_string(value) + ".";
    story = std::string(person.name) + " had " + std::to_string(n) + " " + std::string(c.plural) + " of " +
            std::string(objects) + ". Each " + std::string(c.singular) + " held " + std::to_string(m) + " " +
            std::string(objects) + ".";
    solution = std::to_string(n) + " times " + std::to_string(m) + " is " + std::to_string(value) + ".";
    updates = d.uniform_int(1, 2);
  } else {
    value = d.uniform_int(kMinOperand, kMaxOperand);
    r.numbers = {value};
    prompt = std::string(person.name) + " has " + std::to_string(value) + " " + std::string(objects) + ".";
    story = std::string(person.name) + " had " + std::to_string(value) + " " + std::string(objects) + ".";
    updates = d.uniform_int(2, 3);
  }

  for (int u = 0; u < updates; ++u) {
    const bool can_add = value + kMinOperand <= kMaxValue;
    const bool can_sub = value >= kMinOperand;
    const bool add = can_add && (!can_sub || d.chance(0.5));
    const int hi = add ? std::min(kMaxOperand, kMaxValue - value) : std::min(kMaxOperand, value);
    const int n = d.uniform_int(kMinOperand, hi);
    const TaskOp op = add ? TaskOp::Add : TaskOp::Sub;
    // The same draw as d.pick over the phrases; the index also selects the past-tense form.
    const auto which = static_cast<std::size_t>(
        d.uniform_int(0, static_cast<int>(add ? kAddPhrases.size() : kSubPhrases.size()) - 1));
    const std::string_view phrase = add ? kAddPhrases[which] : kSubPhrases[which];
    const std::string_view past = add ? kAddPast[which] : kSubPast[which];
    const int next = apply(op, value, n);

    std::string lead;
    if (u == 0) lead = capitalized(person.subject);
    else if (u == 1) lead = "Then " + std::string(person.subject);
    else lead = "After that, " + std::string(person.subject);
    prompt += ' ' + lead + ' ' + fill(phrase, n, objects, friend_person->name) + '.';
    story += ' ' + lead + ' ' + fill(past, n, objects, friend_person->name) + '.';
    if (!solution.empty()) solution += ' ';
    solution += std::to_string(value) + ' ' + op_word(op) + ' ' + std::to_string(n) + " is " + std::to_string(next) + '.';

    if (!response.empty()) response += ' ';
    response += std::to_string(value) + ' ' + op_symbol(op) + ' ' + std::to_string(n) + " = " +
                std::to_string(next) + '.';
    r.ops.push_back(op);
    r.numbers.push_back(n);
    value = next;
  }

  prompt += " How many " + std::string(objects) + " does " + std::string(person.name) + " have now?\n";
  const std::string in_the_end =
      " In the end, " + std::string(person.name) + " had " + std::to_string(value) + ' ' + std::string(objects) + '.';
  r.prose = story + ' ' + solution + in_the_end;
  r.prose_equations = story + ' ' + response + in_the_end;
  response += " #### " + std::to_string(value);
  r.prompt = std::move(prompt);
  r.response = std::move(response);
  r.answer = value;
  r.key = make_key(r.ops, r.numbers);
  return r;
}

namespace {
template <class Make>
TaskSplits make_splits(std::size_t n_train, std::size_t n_test, const Make& make) {
  TaskSplits out;
  std::unordered_set<std::string> seen;
  const auto fill_split = [&](std::string_view stream, std::size_t n, std::vector<TaskRecord>& dst) {
    dst.reserve(n);
    const uint64_t max_tries = 64 * static_cast<uint64_t>(n) + 4096;
    for (uint64_t i = 0; dst.size() < n; ++i) {
      if (i >= max_tries)
        throw Error(ErrorKind::Usage, "make_task_splits: could not find " + std::to_string(n) +
                                          " distinct problems for split '" + std::string(stream) + "'");
      TaskRecord r = make(stream, i);
      if (seen.insert(r.key).second) dst.push_back(std::move(r));
    }
  };
  fill_split("test", n_test, out.test);
  fill_split("train", n_train, out.train);
  return out;
}
}  // namespace

TaskSplits make_task_splits(uint64_t seed, std::size_t n_train, std::size_t n_test) {
  return make_splits(n_train, n_test, [&](std::string_view stream, uint64_t i) { return make_task(seed, stream, i); });
}

TaskRecord make_order_task(uint64_t seed, std::string_view stream, uint64_t index) {
  std::string stream_name = "zoo/order/";
  stream_name += stream;
  Draws d(seed, stream_name, index);
  const Person& person = d.pick(std::span<const Person>(kPeople));
  const std::string_view objects = d.pick(std::span<const std::string_view>(kObjects));
  const int count = d.chance(0.5) ? 3 : 5;
  std::vector<int> numbers;
  while (numbers.size() < static_cast<std::size_t>(count)) {
    const int v = d.uniform_int(kOrderMin, kOrderMax);
    if (std::find(numbers.begin(), numbers.end(), v) == numbers.end()) numbers.push_back(v);
  }
  std::vector<int> sorted = numbers;
  std::sort(sorted.begin(), sorted.end());
  const int middle = sorted[sorted.size() / 2];

  TaskRecord r;
  r.numbers = numbers;
  r.answer = middle;
  std::string listed;
  for (std::size_t i = 0; i < numbers.size(); ++i) listed += (i ? ", " : "") + std::to_string(numbers[i]);
  std::string in_order;
  for (std::size_t i = 0; i < sorted.size(); ++i) in_order += (i ? ", " : "") + std::to_string(sorted[i]);
  r.prompt = "Put these numbers in order from the smallest to the largest and give the middle one: " + listed + ".\n";
  r.response = in_order + ". #### " + std::to_string(middle);
  const std::string name(person.name);
  if (d.chance(0.5)) {
    r.prose = name + " had " + std::to_string(count) + " " + std::string(objects) + " with the numbers " +
              spoken_list(numbers) + " on them. In order from the smallest, they were " + spoken_list(sorted) +
              ". The one in the middle was " + std::to_string(middle) + ".";
  } else {
    r.prose = name + " wrote down " + spoken_list(numbers) + ". " + capitalized(person.subject) +
              " sorted them: " + spoken_list(sorted) + ". The middle number was " + std::to_string(middle) + ".";
  }
  r.key = "order|" + in_order;
  return r;
}

TaskSplits make_order_splits(uint64_t seed, std::size_t n_train, std::size_t n_test) {
  return make_splits(n_train, n_test,
                     [&](std::string_view stream, uint64_t i) { return make_order_task(seed, stream, i); });
}

PreferencePair make_preference_pair(uint64_t seed, const TaskRecord& record, uint64_t index) {
  if (record.ops.empty() || record.numbers.size() != record.ops.size() + 1)
    throw Error(ErrorKind::Usage, "make_preference_pair: needs an arithmetic problem (operations and numbers)");
  Draws d(seed, "zoo/dpo", index);
  const int steps = static_cast<int>(record.ops.size());
  const int wrong_step = d.uniform_int(0, steps - 1);
  int error = d.uniform_int(1, 3) * (d.chance(0.5) ? 1 : -1);
  // Values along the worked solution, and along the one with the slip at `wrong_step` (every later
  // step computed correctly from the wrong value). A slip that would make a value negative goes up.
  const auto walk = [&](int e) {
    std::vector<int> v{record.numbers[0]};
    for (int i = 0; i < steps; ++i) {
      int next = apply(record.ops[size_t(i)], v.back(), record.numbers[size_t(i) + 1]);
      if (i == wrong_step) next += e;
      v.push_back(next);
    }
    return v;
  };
  std::vector<int> wrong = walk(error);
  if (std::any_of(wrong.begin(), wrong.end(), [](int x) { return x < 0; })) {
    error = -error;
    wrong = walk(error);
  }
  std::string rejected;
  for (int i = 0; i < steps; ++i) {
    if (i) rejected += ' ';
    rejected += std::to_string(wrong[size_t(i)]) + ' ' + op_symbol(record.ops[size_t(i)]) + ' ' +
                std::to_string(record.numbers[size_t(i) + 1]) + " = " + std::to_string(wrong[size_t(i) + 1]) + '.';
  }
  rejected += " #### " + std::to_string(wrong.back());
  PreferencePair p;
  p.prompt = record.prompt;
  p.chosen = record.response;
  p.rejected = std::move(rejected);
  p.wrong_step = wrong_step;
  p.error = error;
  return p;
}

std::string preference_jsonl_line(const PreferencePair& pair) {
  nlohmann::ordered_json j;
  j["prompt"] = pair.prompt;
  j["chosen"] = pair.chosen;
  j["rejected"] = pair.rejected;
  return j.dump();
}

std::string task_jsonl_line(const TaskRecord& record) {
  nlohmann::ordered_json j;
  j["prompt"] = record.prompt;
  j["response"] = record.response;
  return j.dump();
}

void write_task_jsonl(const std::filesystem::path& path, std::span<const TaskRecord> records) {
  std::string text;
  for (const auto& r : records) text += task_jsonl_line(r) + '\n';
  io::replace_file(path, text);
}

}  // namespace deltaedit::zoo
