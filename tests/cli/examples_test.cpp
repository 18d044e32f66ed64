// Every example command of README.md and of each `--help` runs as written, with its placeholders
// (B, P, G.safetensors, merge.yaml, ...) mapped to the shipped pair and files made here. Examples
// that run for minutes by design (zoo training, sweeps, the demo) are started and must still be
// running, healthy, after a few seconds; they are then stopped with Ctrl-C and must exit 130.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "../engine/engine_test_util.h"
#include "io/checkpoint.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

const fs::path kSrc = DELTAEDIT_SOURCE_DIR;
const fs::path kZoo = kSrc / "models/zoo/retrain";
const fs::path kBinDir = fs::path(DELTAEDIT_BINARY).parent_path();

[[maybe_unused]] std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Without libtorch `eval` is unknown and `--help` prints the main help (also status 0).
bool has_model_runtime() {
  const auto r = run_cli({"eval", "--help"});
  return r.status == 0 && r.out.find("--model") != std::string::npos;
}

bool is_model_command(const std::string& line) {
  static const std::regex re(R"((^|[|;&]\s*)deltaedit (eval|grad|approx|zoo|sweep|demo)\b)");
  return std::regex_search(line, re);
}
bool runs_for_minutes(const std::string& line) {
  static const std::regex re(R"(deltaedit (zoo|sweep|demo)\b)");
  return std::regex_search(line, re);
}

struct Outcome {
  int status;
  std::string out;
  bool stopped = false;  // still running when the grace period ended (then signalled)
};

// Runs `script` with sh in `cwd`, `deltaedit` first on PATH. With `grace`, a script still running
// after it is sent SIGINT (to its process group) and waited for.
Outcome sh(const std::string& script, const fs::path& cwd,
           std::chrono::seconds grace = std::chrono::seconds(0)) {
  TempDir t;
  const fs::path log = t / "log";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    const std::string path =
        kBinDir.string() + ":" + (std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
    ::setenv("PATH", path.c_str(), 1);
    std::freopen(log.c_str(), "w", stdout);
    ::dup2(1, 2);
    ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  int st = 0;
  bool stopped = false;
  if (grace.count() > 0) {
    const auto end = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < end && ::waitpid(pid, &st, WNOHANG) == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (::waitpid(pid, &st, WNOHANG) == 0) {
      stopped = true;
      ::kill(-pid, SIGINT);
      const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (std::chrono::steady_clock::now() < limit && ::waitpid(pid, &st, WNOHANG) == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (::waitpid(pid, &st, WNOHANG) == 0) {
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &st, 0);
        return {-1, read_file(log) + "\n[still running 10 s after Ctrl-C]", true};
      }
    }
  } else {
    ::waitpid(pid, &st, 0);
  }
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), read_file(log), stopped};
}

// Replaces whole words (delimited by spaces) of `line` by their mapping.
std::string map_words(const std::string& line, const std::map<std::string, std::string>& m) {
  std::istringstream in(line);
  std::string w, out;
  while (in >> w) {
    auto it = m.find(w);
    out += (out.empty() ? "" : " ") + (it == m.end() ? w : it->second);
  }
  return out;
}

void run_example(const std::string& where, const std::string& prelude, const std::string& line,
                 const fs::path& cwd) {
  SCOPED_TRACE(where + ": " + line);
  if (runs_for_minutes(line)) {
    auto o = sh(prelude + line, cwd, std::chrono::seconds(8));
    if (o.stopped) {
      EXPECT_EQ(o.status, 130) << "a long example did not stop cleanly on Ctrl-C:\n" << o.out;
    } else {
      EXPECT_EQ(o.status, 0) << o.out;
    }
    return;
  }
  auto o = sh(prelude + line, cwd);
  EXPECT_EQ(o.status, 0) << o.out;
}

// The files the placeholders stand for, made once in `dir`.
struct Placeholders {
  fs::path dir;
  std::map<std::string, std::string> words;

  explicit Placeholders(const fs::path& d) : dir(d) {
    const std::string base = (kZoo / "base").string(), post = (kZoo / "post").string();
    const std::string data = (kZoo / "data/eval.jsonl").string();
    // A gradient file: f32 per floating tensor of post, as `grad` writes.
    auto ck = io::Checkpoint::open(kZoo / "post");
    std::vector<SynthTensor> g;
    uint32_t seed = 1;
    for (const auto& n : ck.names()) {
      const auto& ti = ck.info(n);
      g.push_back({n, io::DType::F32, ti.shape, random_values(ti.numel(), seed++, 1e-3f)});
    }
    write_safetensors(dir / "G.safetensors", g);
    std::ofstream(dir / "merge.yaml") << "merge_method: task_arithmetic\nbase_model: " << base
                                      << "\nmodels:\n  - model: " << post << "\n    parameters: {weight: 0.5}\n"
                                      << "  - model: " << base << "\n    parameters: {weight: 0.5}\n";
    {
      // Data files: the first 16 held-out problems (the whole 200 take minutes to decode here).
      std::ifstream in(kZoo / "data/eval.jsonl");
      std::ofstream out(dir / "prefs.jsonl"), small(dir / "data.jsonl");
      std::string l;
      for (int i = 0; i < 16 && std::getline(in, l); ++i) {
        small << l << "\n";
        auto j = nlohmann::json::parse(l);
        out << nlohmann::json{{"prompt", j["prompt"]},
                              {"chosen", j["response"]},
                              {"rejected", "#### 0"}}
                   .dump()
            << "\n";
      }
    }
    auto sweep = nlohmann::json::parse(read_file(kSrc / "docs/sweep-example.json"));
    sweep["base"] = base;
    sweep["post"] = post;
    sweep["eval_data"] = data;
    sweep["loss_data"] = data;
    std::ofstream(dir / "sweep.json") << sweep.dump(2);
    auto r = run_cli({"edit", "--base", base, "--post", post, "--op", "bitdelta", "--pack", "--out",
                      (dir / "my.pack").string()});
    EXPECT_EQ(r.status, 0) << r.err;
    words = {{"B", base},
             {"Meta-Llama-3-8B", base},
             {"sft", base},
             {"P", post},
             {"post", post},
             {"aligned", post},
             {"Meta-Llama-3-8B-Instruct", post},
             {"~/models/Llama-3-8B-Instruct", post},
             {"path/to/model", post},
             {"model.safetensors", post + "/model.safetensors"},
             {"my.pack", (dir / "my.pack").string()},
             {"G.safetensors", (dir / "G.safetensors").string()},
             {"merge.yaml", (dir / "merge.yaml").string()},
             {"prefs.jsonl", (dir / "prefs.jsonl").string()},
             {"test.jsonl", (dir / "data.jsonl").string()},
             {"train.jsonl", (dir / "data.jsonl").string()},
             {"gsm8k.jsonl", (dir / "data.jsonl").string()},
             {"docs/sweep-example.json", (dir / "sweep.json").string()},
             // approx --merge merge.yaml: the two models of the placeholder merge.yaml.
             {"./Llama-3-8B-math=math.jsonl", post + "=" + (dir / "data.jsonl").string()},
             {"./Llama-3-8B-code=code.jsonl", base + "=" + (dir / "data.jsonl").string()}};
  }
};

}  // namespace

TEST(Examples, EveryHelpExampleRuns) {
  TempDir t;
  fs::create_directories(t / "files");
  fs::create_directories(t / "cwd");
  Placeholders ph(t / "files");
  const bool torch = has_model_runtime();
  auto top = run_cli({"--help"});
  ASSERT_EQ(top.status, 0);
  // The subcommands as --help lists them ("  name   summary" under "SUBCOMMANDS:").
  std::vector<std::string> subs;
  {
    std::istringstream in(top.out);
    std::string l;
    bool in_list = false;
    while (std::getline(in, l)) {
      if ((l == "Subcommands:" || l == "SUBCOMMANDS:")) {
        in_list = true;
        continue;
      }
      std::smatch m;
      static const std::regex item(R"(^  ([a-z][a-z-]*)\s)");
      if (in_list && std::regex_search(l, m, item)) subs.push_back(m[1]);
    }
  }
  ASSERT_GE(subs.size(), 9u) << top.out;
  size_t ran = 0;
  for (const auto& sub : subs) {
    auto h = run_cli({sub, "--help"});
    ASSERT_EQ(h.status, 0) << sub;
    std::istringstream in(h.out);
    std::string l;
    bool in_examples = false;
    size_t found = 0;
    while (std::getline(in, l)) {
      if (l.rfind("Example", 0) == 0) {
        in_examples = true;
        continue;
      }
      if (!in_examples) continue;
      if (l.rfind("  ", 0) != 0 || l.find("deltaedit ") == std::string::npos) {
        in_examples = false;
        continue;
      }
      ++found;
      std::string cmd = l.substr(l.find_first_not_of(' '));
      // Quoted text (echo 'Hello world' | ...) is one word for the mapping.
      static const std::regex quoted(R"('[^']*')");
      std::smatch q;
      std::string quoted_text;
      if (std::regex_search(cmd, q, quoted)) {
        quoted_text = q[0];
        cmd = q.prefix().str() + "@Q@" + q.suffix().str();
      }
      if (is_model_command(cmd) && !torch) continue;
      std::string mapped = map_words(cmd.substr(0, cmd.find(" #")), ph.words);
      if (!quoted_text.empty()) mapped = std::regex_replace(mapped, std::regex("@Q@"), quoted_text);
      run_example(sub + " --help", "", mapped, t / "cwd");
      ++ran;
    }
    EXPECT_GT(found, 0u) << "`" << sub << " --help` shows no example";
  }
  EXPECT_GT(ran, torch ? 20u : 14u);
}

TEST(Examples, EveryReadmeExampleRuns) {
  TempDir t;
  fs::create_directories(t / "files");
  Placeholders ph(t / "files");
  const bool torch = has_model_runtime();
  // Without the model runtime `grad` is skipped: its output, which a later example reads, is
  // stood in for by the placeholder gradient.
  if (!torch) fs::copy_file(t / "files/G.safetensors", t / "g.safetensors");
  std::istringstream in(read_file(kSrc / "README.md"));
  std::string l, prelude;
  bool in_sh = false;
  size_t ran = 0;
  static const std::regex assignment(R"(^[A-Z]+=)");
  while (std::getline(in, l)) {
    if (l.rfind("```", 0) == 0) {
      in_sh = !in_sh && l == "```sh";
      continue;
    }
    if (!in_sh || l.rfind("make ", 0) == 0) continue;  // `make demo`/`make test`: the build itself
    // Output paths under /tmp go to this test's directory; the sweep template gets the zoo paths.
    std::string line = std::regex_replace(l, std::regex("/tmp/"), (t / "").string());
    line = std::regex_replace(line, std::regex(R"(docs/sweep-example\.json)"),
                              (t / "files/sweep.json").string());
    if (std::regex_search(line, assignment)) {
      prelude += line + "; ";
      continue;
    }
    if (line.find("deltaedit ") == std::string::npos) continue;
    if (is_model_command(line) && !torch) continue;
    run_example("README.md", prelude, line, kSrc);
    ++ran;
  }
  EXPECT_GT(ran, torch ? 15u : 10u);
}

// README's operations table is `deltaedit ops --markdown`, rendered from the ops' declared
// schema, verbatim between its markers: a new op or a changed default that is not in README fails
// here (regenerate it with `make readme-ops`).
TEST(Examples, ReadmeOpsTableIsTheSchema) {
  const std::string readme = read_file(kSrc / "README.md");
  const std::string begin = "<!-- ops table: generated by `deltaedit ops --markdown` -->\n";
  const std::string end = "<!-- end of ops table -->";
  const size_t a = readme.find(begin);
  ASSERT_NE(a, std::string::npos) << "README.md has no generated ops table";
  const size_t b = readme.find(end, a);
  ASSERT_NE(b, std::string::npos);
  const auto r = run_cli({"ops", "--markdown"});
  ASSERT_EQ(r.status, 0);
  EXPECT_EQ(readme.substr(a + begin.size(), b - a - begin.size()), r.out)
      << "run `make readme-ops`";
  // Every op and every one of its keys is in the table.
  const auto j = nlohmann::json::parse(run_cli({"ops", "--json"}).out);
  ASSERT_EQ(j.size(), 10u);
  for (const auto& op : j) {
    EXPECT_NE(r.out.find("| `" + op.at("name").get<std::string>() + "` |"), std::string::npos)
        << op.at("name");
    for (const auto& p : op.at("params")) {
      const std::string key = p.at("name");
      if (key == "include" || key == "exclude") continue;
      EXPECT_NE(r.out.find("| `" + key + "` |"), std::string::npos) << op.at("name") << " " << key;
    }
  }
}

// `edit --help` lists every op with the keys of its schema.
TEST(Examples, EditHelpListsTheSchema) {
  const auto h = run_cli({"edit", "--help"});
  ASSERT_EQ(h.status, 0);
  const auto j = nlohmann::json::parse(run_cli({"ops", "--json"}).out);
  for (const auto& op : j) {
    EXPECT_NE(h.out.find("  " + op.at("name").get<std::string>() + " "), std::string::npos)
        << op.at("name");
    EXPECT_NE(h.out.find(op.at("keys").get<std::string>()), std::string::npos) << op.at("keys");
  }
}
