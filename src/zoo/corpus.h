// General-text pre-training corpus for the zoo's base model: simple English generated from a small
// grammar, deterministic for a seed and identical on every machine (no system files are read).
//
// Documents are of five kinds, each a short paragraph:
//   * stories     — a character (the task generator's names among others) goes places, sees,
//                   finds and carries things, with numbers written as digits or words;
//   * scenes      — descriptions of a place: "There are 12 trees in the park.";
//   * counting    — "Ben counts the shells: 1, 2, 3, 4. There are 4 shells.";
//   * number talk — "Seven is written 7. After 15 comes 16. 9 is more than 4.";
//   * dialogue    — short quoted exchanges.
// The corpus shares words and numbers with the arithmetic task but never its format: it holds no
// "#", no "=", no arithmetic operator sentences and no "How many ... have now?" questions, so a
// model pre-trained on it alone cannot produce the task's "#### <answer>" responses.
//
// With skills (the model family's corpus), the same generator also writes the post-training
// tasks' content in other surface forms, so that the base already holds the skills and
// post-training teaches the format:
//   * word problems — the arithmetic task's problems told in the past tense with the solution in
//                     words ("5 plus 3 is 8. 8 minus 2 is 6. In the end, Mia had 6 apples.") or,
//                     half the time, in equations ("5 + 3 = 8. 8 - 2 = 6. In the end, ...");
//   * sums          — arithmetic facts in the task's ranges ("12 minus 5 is 7.", "12 - 5 = 7.");
//   * ordering      — the order task's lists sorted in a sentence ("... they were 7, 12 and 45.
//                     The one in the middle was 12.").
// As a real base meets equations in its pre-training text, this one does; it never meets the
// tasks' format: no "#", no "How many ... now?" question, no order-task instruction; problems whose key is in
// `excluded_keys` (the held-out test splits) never appear.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

namespace deltaedit::zoo {

struct CorpusSkills {
  std::unordered_set<std::string> excluded_keys;
};

// Document `index` of the corpus for `seed`: a pure function of (seed, index). Sentences are
// separated by single spaces, with no trailing newline.
std::string corpus_document(uint64_t seed, uint64_t index, const CorpusSkills* skills = nullptr);

// Documents 0 .. count-1.
std::vector<std::string> corpus_documents(uint64_t seed, std::size_t count, const CorpusSkills* skills = nullptr);

// Documents 0, 1, ... joined by "\n\n" (with a final "\n"), stopping at the first document that
// brings the size to at least `min_bytes` (a corpus of N MB: min_bytes = N << 20).
std::string corpus_text(uint64_t seed, std::size_t min_bytes, const CorpusSkills* skills = nullptr);

}  // namespace deltaedit::zoo
