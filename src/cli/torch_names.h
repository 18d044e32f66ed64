// The subcommands that need the libtorch model runtime, with their one-line summaries.
//
// In a build with libtorch they live in a second executable, deltaedit-torch, beside deltaedit:
// loading libtorch's shared libraries takes about half a second, which the I/O and edit
// commands should not pay. `deltaedit` lists these commands in its help and hands them, with the
// command line unchanged, to deltaedit-torch (exec).
#pragma once
#include <string>
#include <string_view>

namespace deltaedit::cli {

struct TorchCommand {
  std::string_view name, summary;
};

inline constexpr TorchCommand kTorchCommands[] = {
    {"eval", "Loss (causal LM or DPO) and GSM8K-style accuracy of a model on JSONL data"},
    {"grad", "f32 gradient of the mean loss for every parameter, as safetensors"},
    {"approx", "Approximation term of an edit: Riemann sum of ⟨∇L(W_post + t·D), D⟩"},
    {"zoo", "Train the in-house model family (base, math-sft, math-dpo, order-sft) and its data"},
    {"sweep", "Run the paper's experiments (F1, T1, F3, F4, F5, F6) from a JSON config"},
    {"merge-sweep", "M1: merge two experts by each method of a grid; accuracy and each task's term vs ΔL"},
    {"demo", "The paper's experiments in two regimes, EXPO with DPO and merges, with one report"},
};

inline std::string torch_summary(std::string_view name) {
  for (const auto& c : kTorchCommands)
    if (c.name == name) return std::string(c.summary);
  return {};
}

}  // namespace deltaedit::cli
