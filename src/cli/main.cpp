// deltaedit: edit, compress, evaluate and analyse the delta parameters of post-trained models.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/torch_names.h"
#include "io/writer.h"
#include "linalg/blas.h"
#include "util/version.h"

using namespace deltaedit::cli;

#ifdef DELTAEDIT_HAVE_TORCH
namespace deltaedit::cli {
std::vector<Command> add_torch_commands(CLI::App& app);
}
#endif

namespace {

#ifdef DELTAEDIT_TORCH_HELPER
bool is_torch_command(const char* arg) {
  for (const auto& c : kTorchCommands)
    if (c.name == arg) return true;
  return false;
}

// Replaces this process by deltaedit-torch (beside this executable) with the same arguments.
int exec_torch_helper(char** argv) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const auto dir = (ec ? std::filesystem::path(argv[0]) : self).parent_path();
  if (dir.empty()) {
    std::cerr << "error: cannot locate deltaedit-torch (the directory of this executable is "
                 "unknown); run "
                 "deltaedit by its path\n";
    return 1;
  }
  const auto helper = dir / "deltaedit-torch";
  ::execv(helper.c_str(), argv);
  const int err = errno;
  std::cerr << "error: " << helper.string() << ": cannot run the model runtime ("
            << std::strerror(err) << "); it is built beside deltaedit by `make build`\n";
  return 1;
}
#endif

}  // namespace

int main(int argc, char** argv) {
#ifdef DELTAEDIT_TORCH_HELPER
  if (argc >= 2 && is_torch_command(argv[1])) return exec_torch_helper(argv);
#endif
  deltaedit::io::install_signal_handlers();
  deltaedit::linalg::park_blas_threads();
  CLI::App app{
      "deltaedit — delta parameter editing of post-trained models.\n"
      "A fine-tune differs from its base by Δ = W_post − W_pre. deltaedit reads Hugging Face\n"
      "checkpoints (safetensors, single or sharded), edits Δ (DARE, BitDelta, low-rank, EXPO\n"
      "scaling, ...), writes checkpoints or compact delta packs, and measures what edits do.\n"
      "Run `deltaedit SUBCOMMAND --help` for each subcommand.",
      "deltaedit"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("deltaedit ") + deltaedit::util::kVersion);
  std::vector<Command> cmds{add_inspect(app),  add_verify(app), add_stats(app),
                            add_edit(app),     add_apply(app),  add_ops(app),
                            add_tokenize(app), add_merge(app),  add_extract_lora(app)};
#ifdef DELTAEDIT_HAVE_TORCH
  for (auto& c : add_torch_commands(app)) cmds.push_back(c);
#elif defined(DELTAEDIT_TORCH_HELPER)
  // Listed for --help; reached only when an option precedes the command name.
  for (const auto& c : kTorchCommands) {
    auto* sub = app.add_subcommand(std::string(c.name), std::string(c.summary));
    sub->allow_extras()->prefix_command();
    cmds.push_back({sub, [argv] { return exec_torch_helper(argv); }});
  }
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message
    return kUsage;
  }
  for (auto& c : cmds) {
    if (!c.app || !c.app->parsed()) continue;
    const int status = guarded(c.run);
    if (status == kInterrupted) {
      // The outputs are already removed (unwinding); an interrupted SVD may still run on its own
      // thread over buffers it owns, so end without running static destructors under it.
      std::cout.flush();
      std::cerr.flush();
      std::_Exit(status);
    }
    return status;
  }
  return kUsage;
}
