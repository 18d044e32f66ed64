// Multi-step arithmetic word problems in GSM8K format for the zoo's post-training task.
//
// A problem is a start value followed by 1–3 operations, 2–3 arithmetic steps in all:
//   * "has" start:  "Mia has 5 apples."                          numbers [a]
//   * "mul" start:  "Tom has 3 boxes of pencils. Each box holds 4 pencils."  numbers [n, m], n*m
//   * updates:      add ("buys / finds / gets ... more") or sub ("gives away / loses / sells ...")
//   * question:     "How many apples does Mia have now?"
// Numbers are small: start 2..20 (boxes 2..5 of 2..10), update operands 2..20, every
// intermediate result in 0..99. The response spells out each step as one equation and ends with
// the GSM8K answer line:
//   prompt:   "Mia has 5 apples. She buys 3 more apples. Then she gives away 2 apples. How many
//              apples does Mia have now?\n"
//   response: "5 + 3 = 8. 8 - 2 = 6. #### 6"
//
// Identity: a problem's key is its operation structure plus its numbers ("add,sub|5,3,2"),
// independent of names, objects and verbs. The test split is generated first; train skips every
// key of the test split (and repeats of its own keys), so no train problem shares structure and
// numbers with a test problem.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace deltaedit::zoo {

enum class TaskOp { Add, Sub, Mul };

// "add", "sub", "mul".
const char* to_string(TaskOp op);

struct TaskRecord {
  std::string prompt;    // question text, ends with "\n"
  std::string response;  // step equations, then "#### <answer>"
  std::vector<TaskOp> ops;    // in order; Mul only first
  std::vector<int> numbers;   // numbers[0] is the start, numbers[i + 1] the operand of ops[i]
  int answer = 0;
  std::string key;  // structure and numbers: "mul,add|3,4,5"
  // The same problem told in the past tense with its solution in words, the form in which the
  // family's pre-training corpus holds the skill: "Mia had 5 apples. She bought 3 more apples.
  // ... 5 plus 3 is 8. 8 minus 2 is 6. In the end, Mia had 6 apples."
  std::string prose;
  // The same story with the worked solution in the response's equation syntax ("5 + 3 = 8.
  // 8 - 2 = 6."), as a base model meets equations in its pre-training text; never "####" nor the
  // task's question.
  std::string prose_equations;
};

// Folds the operations over the numbers: numbers[0] op[0] numbers[1] op[1] ... Throws
// Error(Usage) when numbers.size() != ops.size() + 1.
int solve_task(std::span<const TaskOp> ops, std::span<const int> numbers);

// The problem at `index` of the named stream; a pure function of (seed, stream, index).
TaskRecord make_task(uint64_t seed, std::string_view stream, uint64_t index);

struct TaskSplits {
  std::vector<TaskRecord> train;
  std::vector<TaskRecord> test;
};

// n_test problems with distinct keys from stream "test", then n_train problems with distinct keys
// from stream "train" that are not in the test split. For a fixed (seed, n_test), the train split
// of a smaller n_train is a prefix of a larger one (and the same holds for test). Throws
// Error(Usage) when the key space runs out (it holds well over a million problems).
TaskSplits make_task_splits(uint64_t seed, std::size_t n_train, std::size_t n_test);

// The family's second task ("order"): 3 or 5 distinct numbers in 1..99, to be sorted; the answer is
// the middle one (exact match of the number after "####", as for the arithmetic task).
//   prompt:   "Put these numbers in order from the smallest to the largest and give the middle
//              one: 12, 45, 7.\n"
//   response: "7, 12, 45. #### 12"
// numbers holds the list as given, ops is empty, key = "order|" + the sorted list (so no
// permutation of a test list is in train), prose = a sentence form of the same content.
TaskRecord make_order_task(uint64_t seed, std::string_view stream, uint64_t index);
TaskSplits make_order_splits(uint64_t seed, std::size_t n_train, std::size_t n_test);

// A DPO preference pair for an arithmetic problem: chosen = the worked solution; rejected = the
// same steps with one slip (a result off by ±1..±3 at one step, every later step computed
// correctly from the wrong value, so the final answer is off by the same amount). A pure function
// of (seed, record, index); a slip that would make a value negative is made positive instead.
struct PreferencePair {
  std::string prompt, chosen, rejected;
  int wrong_step = 0;  // 0-based step with the slip
  int error = 0;       // the slip, ±1..±3
};
PreferencePair make_preference_pair(uint64_t seed, const TaskRecord& record, uint64_t index);
// {"prompt": ..., "chosen": ..., "rejected": ...} without the trailing newline.
std::string preference_jsonl_line(const PreferencePair& pair);

// One JSON object line {"prompt": ..., "response": ...} without the trailing newline.
std::string task_jsonl_line(const TaskRecord& record);

// Writes one task_jsonl_line per record, each ending in "\n". Throws Error(Io) on failure.
void write_task_jsonl(const std::filesystem::path& path, std::span<const TaskRecord> records);

}  // namespace deltaedit::zoo
