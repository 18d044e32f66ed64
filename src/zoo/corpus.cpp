#include "zoo/corpus.h"

#include <algorithm>
#include <array>
#include <span>
#include <string_view>

#include "zoo/rng.h"
#include "zoo/tasks.h"

namespace deltaedit::zoo {
namespace {

using sv = std::string_view;

struct Person {
  sv name, subject, object, possessive;
};
constexpr std::array<Person, 20> kPeople{{
    {"Mia", "she", "her", "her"},   {"Tom", "he", "him", "his"},   {"Anna", "she", "her", "her"},
    {"Ben", "he", "him", "his"},    {"Lily", "she", "her", "her"}, {"Sam", "he", "him", "his"},
    {"Emma", "she", "her", "her"},  {"Jack", "he", "him", "his"},  {"Zoe", "she", "her", "her"},
    {"Leo", "he", "him", "his"},    {"Nora", "she", "her", "her"}, {"Max", "he", "him", "his"},
    {"Ava", "she", "her", "her"},   {"Noah", "he", "him", "his"},  {"Ella", "she", "her", "her"},
    {"Finn", "he", "him", "his"},   {"Ruby", "she", "her", "her"}, {"Owen", "he", "him", "his"},
    {"Ivy", "she", "her", "her"},   {"Eli", "he", "him", "his"},
}};

struct Noun {
  sv singular, plural;
};
constexpr std::array<Noun, 20> kThings{{
    {"apple", "apples"},   {"pencil", "pencils"}, {"marble", "marbles"}, {"sticker", "stickers"},
    {"cookie", "cookies"}, {"book", "books"},     {"coin", "coins"},     {"card", "cards"},
    {"shell", "shells"},   {"stamp", "stamps"},   {"balloon", "balloons"}, {"toy", "toys"},
    {"ball", "balls"},     {"hat", "hats"},       {"cup", "cups"},       {"kite", "kites"},
    {"flower", "flowers"}, {"stone", "stones"},   {"leaf", "leaves"},    {"box", "boxes"},
}};
constexpr std::array<Noun, 12> kAnimals{{
    {"dog", "dogs"},   {"cat", "cats"},     {"bird", "birds"}, {"fox", "foxes"},
    {"rabbit", "rabbits"}, {"horse", "horses"}, {"duck", "ducks"}, {"frog", "frogs"},
    {"bear", "bears"}, {"mouse", "mice"},   {"fish", "fish"},  {"sheep", "sheep"},
}};
constexpr std::array<sv, 13> kAdjectives{"red",  "blue", "green", "yellow", "big",   "small", "little",
                                         "old",  "new",  "soft",  "round",  "shiny", "tiny"};
constexpr std::array<sv, 10> kPlaces{"the park",   "the garden", "the river", "the school",
                                     "the market", "the forest", "the kitchen", "the beach",
                                     "the farm",   "the library"};
constexpr std::array<sv, 6> kPlaceWords{"quiet", "busy", "big", "small", "pretty", "warm"};
constexpr std::array<sv, 8> kTimes{"in the morning", "at night",     "after lunch",  "on Sunday",
                                   "every day",      "in the evening", "before school", "today"};
struct Verb {
  sv present, past;
};
constexpr std::array<Verb, 9> kTransitive{{{"sees", "saw"},
                                           {"likes", "liked"},
                                           {"finds", "found"},
                                           {"buys", "bought"},
                                           {"holds", "held"},
                                           {"carries", "carried"},
                                           {"paints", "painted"},
                                           {"wants", "wanted"},
                                           {"keeps", "kept"}}};
constexpr std::array<Verb, 9> kIntransitive{{{"walks", "walked"},
                                             {"runs", "ran"},
                                             {"sleeps", "slept"},
                                             {"sings", "sang"},
                                             {"plays", "played"},
                                             {"waits", "waited"},
                                             {"smiles", "smiled"},
                                             {"jumps", "jumped"},
                                             {"reads", "read"}}};
constexpr std::array<sv, 7> kFeelings{"happy", "tired", "hungry", "glad", "sleepy", "excited", "calm"};

constexpr std::array<sv, 20> kOnes{"zero",    "one",     "two",      "three",    "four",
                                   "five",    "six",     "seven",    "eight",    "nine",
                                   "ten",     "eleven",  "twelve",   "thirteen", "fourteen",
                                   "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
constexpr std::array<sv, 10> kTens{"",      "",      "twenty",  "thirty", "forty",
                                   "fifty", "sixty", "seventy", "eighty", "ninety"};

std::string number_word(int n) {
  if (n < 20) return std::string(kOnes[static_cast<std::size_t>(n)]);
  std::string s(kTens[static_cast<std::size_t>(n / 10)]);
  if (n % 10) s += "-" + std::string(kOnes[static_cast<std::size_t>(n % 10)]);
  return s;
}

std::string cap(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string article(sv word) {
  const char c = word.empty() ? 'x' : word[0];
  const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
  return std::string(vowel ? "an " : "a ") + std::string(word);
}

// Builds one document; every draw comes from the document's own stream.
class Writer {
 public:
  Writer(uint64_t seed, uint64_t index, const CorpusSkills* skills)
      : d_(seed, "zoo/corpus", index), seed_(seed), index_(index), skills_(skills) {}

  std::string document() {
    if (skills_) {
      // The family's mix: 30 % general text, 30 % word problems, 15 % sums, 25 % ordering.
      switch (d_.uniform_int(0, 19)) {
        case 0: case 1: return story();
        case 2: return scene();
        case 3: return counting();
        case 4: return number_talk();
        case 5: return dialogue();
        case 6: case 7: case 8: case 9: case 10: case 11: return skill_problem(false);
        case 12: case 13: case 14: return sums();
        default: return skill_problem(true);
      }
    }
    switch (d_.uniform_int(0, 9)) {
      case 0: case 1: case 2: case 3: return story();
      case 4: case 5: return scene();
      case 6: case 7: return counting();
      case 8: return number_talk();
      default: return dialogue();
    }
  }

 private:
  template <class T, std::size_t N>
  const T& pick(const std::array<T, N>& a) { return d_.pick(std::span<const T>(a)); }

  const Person& other_than(const Person& p) {
    const Person* q = &p;
    while (q->name == p.name) q = &pick(kPeople);
    return *q;
  }

  // A number written as digits or as words.
  std::string num(int n) { return d_.chance(0.5) ? std::to_string(n) : number_word(n); }

  std::string count_of(int n, const Noun& noun) {
    return num(n) + " " + std::string(n == 1 ? noun.singular : noun.plural);
  }

  void add(std::string& doc, const std::string& sentence) {
    if (!doc.empty()) doc += ' ';
    doc += sentence;
  }

  std::string story() {
    const Person& hero = pick(kPeople);
    const Person& pal = other_than(hero);
    const std::string name(hero.name);
    std::string doc;
    switch (d_.uniform_int(0, 2)) {
      case 0:
        add(doc, "Once upon a time, there was " + article(pick(kAdjectives)) + " " +
                     std::string(pick(kAnimals).singular) + " named " + name + ".");
        break;
      case 1: add(doc, "One day, " + name + " went to " + std::string(pick(kPlaces)) + "."); break;
      default: add(doc, name + " lived near " + std::string(pick(kPlaces)) + "."); break;
    }
    const int n = d_.uniform_int(3, 6);
    for (int i = 0; i < n; ++i) {
      const std::string s = d_.chance(0.5) ? name : cap(std::string(hero.subject));
      switch (d_.uniform_int(0, 8)) {
        case 0: add(doc, s + " saw " + article(pick(kAdjectives)) + " " + std::string(pick(kThings).singular) + "."); break;
        case 1: add(doc, s + " found " + count_of(d_.uniform_int(1, 20), pick(kThings)) + " near " + std::string(pick(kPlaces)) + "."); break;
        case 2: add(doc, s + " " + std::string(pick(kIntransitive).past) + " " + std::string(pick(kTimes)) + "."); break;
        case 3: add(doc, s + " went to " + std::string(pick(kPlaces)) + " " + std::string(pick(kTimes)) + "."); break;
        case 4: add(doc, s + " had " + count_of(d_.uniform_int(1, 30), pick(kThings)) + "."); break;
        case 5: add(doc, s + " gave " + count_of(d_.uniform_int(1, 10), pick(kThings)) + " to " + std::string(pal.name) + "."); break;
        case 6: add(doc, std::string(pal.name) + " and " + name + " played in " + std::string(pick(kPlaces)) + "."); break;
        case 7: add(doc, s + " was " + std::string(pick(kFeelings)) + "."); break;
        default: add(doc, "\"I like " + std::string(pick(kThings).plural) + ",\" " + std::string(hero.subject) + " said."); break;
      }
    }
    switch (d_.uniform_int(0, 2)) {
      case 0: add(doc, "The end."); break;
      case 1: add(doc, name + " was " + std::string(pick(kFeelings)) + "."); break;
      default: add(doc, cap(std::string(hero.subject)) + " went home."); break;
    }
    return doc;
  }

  std::string scene() {
    const sv place = pick(kPlaces);
    std::string doc = cap(std::string(place)) + " is " + std::string(pick(kPlaceWords)) + ".";
    const int n = d_.uniform_int(2, 5);
    for (int i = 0; i < n; ++i) {
      switch (d_.uniform_int(0, 4)) {
        case 0: {
          const int k = d_.uniform_int(2, 40);
          add(doc, "There are " + num(k) + " " + std::string(d_.chance(0.5) ? pick(kThings).plural : pick(kAnimals).plural) + " in " + std::string(place) + ".");
          break;
        }
        case 1: add(doc, "There is " + article(pick(kAdjectives)) + " " + std::string(pick(kThings).singular) + " near the door."); break;
        case 2: add(doc, std::string(pick(kPeople).name) + " " + std::string(pick(kIntransitive).present) + " there " + std::string(pick(kTimes)) + "."); break;
        case 3: add(doc, "The " + std::string(pick(kAnimals).singular) + " " + std::string(pick(kTransitive).present) + " " + article(pick(kAdjectives)) + " " + std::string(pick(kThings).singular) + "."); break;
        default: add(doc, std::string(pick(kPeople).name) + " " + std::string(pick(kTransitive).present) + " " + count_of(d_.uniform_int(1, 20), pick(kThings)) + "."); break;
      }
    }
    return doc;
  }

  std::string counting() {
    const Person& p = pick(kPeople);
    const Noun& noun = d_.chance(0.5) ? pick(kThings) : pick(kAnimals);
    const bool words = d_.chance(0.4);
    const auto w = [&](int k) { return words ? number_word(k) : std::to_string(k); };
    std::string doc;
    if (d_.chance(0.2)) {
      const int from = d_.uniform_int(3, 12);
      std::string seq;
      for (int k = from; k >= 1; --k) seq += (k == from ? "" : ", ") + w(k);
      add(doc, std::string(p.name) + " counts down: " + seq + ".");
      add(doc, "Then " + std::string(p.subject) + " jumps.");
      return doc;
    }
    const int start = d_.chance(0.7) ? 1 : d_.uniform_int(2, 40);
    const int len = d_.uniform_int(3, 12);
    std::string seq;
    for (int k = start; k < start + len; ++k) seq += (k == start ? "" : ", ") + w(k);
    if (start == 1) {
      add(doc, std::string(p.name) + " counts the " + std::string(noun.plural) + " in " + std::string(pick(kPlaces)) + ".");
      add(doc, cap(seq) + ".");
      add(doc, "There are " + (words ? number_word(len) : std::to_string(len)) + " " + std::string(noun.plural) + ".");
    } else {
      add(doc, std::string(p.name) + " counts from " + w(start) + ".");
      add(doc, cap(seq) + ".");
      add(doc, cap(std::string(p.subject)) + " stops at " + w(start + len - 1) + ".");
    }
    return doc;
  }

  std::string number_talk() {
    std::string doc;
    const int n = d_.uniform_int(3, 6);
    for (int i = 0; i < n; ++i) {
      const int a = d_.uniform_int(1, 98);
      switch (d_.uniform_int(0, 4)) {
        case 0: add(doc, cap(number_word(a)) + " is written " + std::to_string(a) + "."); break;
        case 1: add(doc, "After " + num(a) + " comes " + num(a + 1) + "."); break;
        case 2: add(doc, "Before " + num(a) + " comes " + num(a - 1) + "."); break;
        case 3: {
          const int b = d_.uniform_int(0, 99);
          if (a == b) add(doc, cap(num(a)) + " is the same as " + num(b) + ".");
          else add(doc, cap(num(a)) + (a > b ? " is more than " : " is less than ") + num(b) + ".");
          break;
        }
        default: add(doc, cap(num(a)) + (a % 2 == 0 ? " is an even number." : " is an odd number.")); break;
      }
    }
    return doc;
  }

  std::string dialogue() {
    const Person& a = pick(kPeople);
    const Person& b = other_than(a);
    std::string doc;
    const int n = d_.uniform_int(1, 3);
    for (int i = 0; i < n; ++i) {
      const Noun& t = pick(kThings);
      switch (d_.uniform_int(0, 3)) {
        case 0:
          add(doc, "\"Where is my " + std::string(t.singular) + "?\" asked " + std::string(a.name) + ".");
          add(doc, "\"It is in " + std::string(pick(kPlaces)) + ",\" said " + std::string(b.name) + ".");
          break;
        case 1:
          add(doc, "\"Do you want " + count_of(d_.uniform_int(1, 9), t) + "?\" asked " + std::string(b.name) + ".");
          add(doc, std::string(d_.chance(0.5) ? "\"Yes, please,\" said " : "\"No, thank you,\" said ") + std::string(a.name) + ".");
          break;
        case 2:
          add(doc, "\"I have " + count_of(d_.uniform_int(2, 50), t) + ",\" said " + std::string(a.name) + ".");
          add(doc, "\"That is a lot of " + std::string(t.plural) + ",\" said " + std::string(b.name) + ".");
          break;
        default:
          add(doc, "\"Let us go to " + std::string(pick(kPlaces)) + ",\" said " + std::string(b.name) + ".");
          add(doc, "\"Good idea,\" said " + std::string(a.name) + ".");
          break;
      }
    }
    return doc;
  }

  // A task problem in its prose form; candidates whose key is excluded are skipped (candidate
  // a of document i is problem 64·i + a of the "corpus" stream).
  std::string skill_problem(bool order) {
    for (uint64_t a = 0; a < 64; ++a) {
      const TaskRecord r = order ? make_order_task(seed_, "corpus", 64 * index_ + a)
                                 : make_task(seed_, "corpus", 64 * index_ + a);
      if (!skills_->excluded_keys.contains(r.key))
        return order || !d_.chance(0.5) ? r.prose : r.prose_equations;
    }
    return sums();
  }

  std::string sums() {
    std::string doc;
    const int n = d_.uniform_int(4, 8);
    for (int i = 0; i < n; ++i) {
      const bool words = d_.chance(0.2);
      // Half the facts as equations ("12 - 5 = 7."), the syntax of the task's worked solutions.
      const bool symbols = !words && d_.chance(0.5);
      const auto w = [&](int k) { return words ? number_word(k) : std::to_string(k); };
      const auto fact = [&](int a, const char* word, const char* sym, int b, int c) {
        return symbols ? w(a) + " " + sym + " " + w(b) + " = " + w(c) + "." : w(a) + " " + word + " " + w(b) + " is " + w(c) + ".";
      };
      std::string s;
      switch (d_.uniform_int(0, 4)) {
        case 0: case 1: {
          const int b = d_.uniform_int(2, 20);
          const int a = d_.uniform_int(0, 99 - b);
          s = fact(a, "plus", "+", b, a + b);
          break;
        }
        case 2: case 3: {
          const int a = d_.uniform_int(2, 99);
          const int b = d_.uniform_int(2, std::min(20, a));
          s = fact(a, "minus", "-", b, a - b);
          break;
        }
        default: {
          const int a = d_.uniform_int(2, 5);
          const int b = d_.uniform_int(2, 10);
          s = fact(a, "times", "*", b, a * b);
          break;
        }
      }
      add(doc, cap(s));
    }
    return doc;
  }

  Draws d_;
  uint64_t seed_, index_;
  const CorpusSkills* skills_;
};

}  // namespace

std::string corpus_document(uint64_t seed, uint64_t index, const CorpusSkills* skills) {
  return Writer(seed, index, skills).document();
}

std::vector<std::string> corpus_documents(uint64_t seed, std::size_t count, const CorpusSkills* skills) {
  std::vector<std::string> docs;
  docs.reserve(count);
  for (std::size_t i = 0; i < count; ++i) docs.push_back(corpus_document(seed, i, skills));
  return docs;
}

std::string corpus_text(uint64_t seed, std::size_t min_bytes, const CorpusSkills* skills) {
  std::string text;
  for (uint64_t i = 0; text.size() < min_bytes; ++i) {
    if (i) text += '\n';
    text += corpus_document(seed, i, skills);
    text += '\n';
  }
  return text;
}

}  // namespace deltaedit::zoo
