// deltaedit: edit, compress, evaluate and analyse the delta parameters of post-trained models.
#include <iostream>
#include <vector>

#include "cli/common.h"
#include "io/writer.h"

using namespace deltaedit::cli;

#ifdef DELTAEDIT_HAVE_TORCH
namespace deltaedit::cli {
std::vector<Command> add_torch_commands(CLI::App& app);
}
#endif

int main(int argc, char** argv) {
  deltaedit::io::install_signal_handlers();
  CLI::App app{
      "deltaedit — delta parameter editing of post-trained models.\n"
      "A fine-tune differs from its base by Δ = W_post − W_pre. deltaedit reads Hugging Face\n"
      "checkpoints (safetensors, single or sharded), edits Δ (DARE, BitDelta, low-rank, EXPO\n"
      "scaling, ...), writes checkpoints or compact delta packs, and measures what edits do.\n"
      "Run `deltaedit SUBCOMMAND --help` for each subcommand.",
      "deltaedit"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "deltaedit 0.1.0");
  std::vector<Command> cmds{add_inspect(app), add_verify(app), add_stats(app),
                            add_edit(app),    add_apply(app),  add_ops(app),
                            add_tokenize(app)};
#ifdef DELTAEDIT_HAVE_TORCH
  for (auto& c : add_torch_commands(app)) cmds.push_back(c);
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
  for (auto& c : cmds)
    if (c.app && c.app->parsed()) return guarded(c.run);
  return kUsage;
}
