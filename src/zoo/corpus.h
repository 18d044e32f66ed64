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
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace deltaedit::zoo {

// Document `index` of the corpus for `seed`: a pure function of (seed, index). Sentences are
// separated by single spaces, with no trailing newline.
std::string corpus_document(uint64_t seed, uint64_t index);

// Documents 0 .. count-1.
std::vector<std::string> corpus_documents(uint64_t seed, std::size_t count);

// Documents 0, 1, ... joined by "\n\n" (with a final "\n"), stopping at the first document that
// brings the size to at least `min_bytes` (a corpus of N MB: min_bytes = N << 20).
std::string corpus_text(uint64_t seed, std::size_t min_bytes);

}  // namespace deltaedit::zoo
