// tokenize: a Hugging Face tokenizer.json on stdin text.
#include <iostream>
#include <iterator>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace deltaedit::cli {

Command add_tokenize(CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "Encode text from stdin with a tokenizer.json; print the ids");
  sub->footer("TOKENIZER is a tokenizer.json or a model directory holding one.\n"
              "Example:\n  echo 'Hello world' | deltaedit tokenize Meta-Llama-3-8B --special --json");
  auto path = std::make_shared<std::string>();
  auto special = std::make_shared<bool>(false);
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("TOKENIZER", *path, "tokenizer.json or model directory")->required();
  sub->add_flag("--special", *special, "add the special-token template (e.g. BOS)");
  sub->add_flag("--json", *as_json, "print {\"ids\": [...], \"tokens\": [...]}");
  auto jsonl = std::make_shared<bool>(false);
  sub->add_flag("--jsonl", *jsonl,
                "many texts: each stdin line is a JSON string; print one {\"ids\", \"tokens\"} "
                "line per text");
  return {sub, [=] {
            auto tok = text::Tokenizer::load(*path);
            if (*jsonl) {
              std::string line;
              for (size_t n = 1; std::getline(std::cin, line); ++n) {
                nlohmann::json text = nlohmann::json::parse(line, nullptr, false);
                if (!text.is_string())
                  throw Error(
                      ErrorKind::Usage,
                      fmt::format("tokenize --jsonl: stdin line {} is not a JSON string", n));
                auto ids = tok.encode(text.get<std::string>(), *special);
                std::cout << nlohmann::json{{"ids", ids}, {"tokens", tok.tokens(ids)}}.dump()
                          << "\n";
              }
              return int(kOk);
            }
            std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
            auto ids = tok.encode(input, *special);
            if (*as_json) {
              nlohmann::json j{{"ids", ids}, {"tokens", tok.tokens(ids)}};
              std::cout << j.dump() << "\n";
            } else {
              for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
              std::cout << "\n";
            }
            return int(kOk);
          }};
}

}  // namespace deltaedit::cli
