// The per-tensor kernels of `edit` and `apply` on the executor: the state of one edited tensor in
// flight (a whole-tensor Δ' from buffered ops, or the streamed steps of pointwise and observing
// ops), and the block kernels composing W' = W_pre + Δ' in f32 with the edit statistics and the
// count of non-finite values the edit made.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "analysis/delta_stats.h"
#include "engine/op_chain.h"

namespace deltaedit::engine {

struct EditTensorState {
  struct Step {
    // Exactly one is set: the op's streamed form.
    const edit::PointwiseOp* pointwise = nullptr;
    const edit::ObservingOp* observing = nullptr;
    edit::TensorContext ctx;
    std::unique_ptr<edit::ObservingOp::State>
        state;  // set once an observing op has observed the tensor
  };
  std::optional<TensorEdit> whole;  // buffered: Δ' of the whole tensor
  std::vector<Step> steps;          // streamed: the touching ops, in chain order
  analysis::EditAccum acc;          // statistics of Δ' against Δ, in element order
  std::vector<std::string> ops;     // names of the ops applied
};

// Buffered: Δ' of the whole tensor (edit_tensor).
void prepare_whole(EditTensorState& st, const OpChain& chain, const io::Checkpoint& base,
                   const io::TensorSource& post, const std::string& name,
                   const io::SafetensorsFile* grad);

// Streamed: the touching ops, each two- or multi-pass op first observing the tensor as the ops
// before it leave it (one more read of the inputs per pass, from the page cache).
void prepare_streamed(EditTensorState& st, const OpChain& chain, const io::Checkpoint& base,
                      const io::TensorSource& post, const std::string& name);

// One block of an edit: inputs base and post (f32), out = base + Δ' at elements [at, at + size).
// Returns the values non-finite in `out` whose base and post are finite.
uint64_t edit_block(EditTensorState& st, std::span<const float> base, std::span<const float> post,
                    std::span<float> out, uint64_t at);

// One block of a resized vocabulary's tensor (post has rows added): elements below `shared` are
// edited as edit_block does, with base read from `base`; the others are post's added rows, copied.
uint64_t edit_resized_block(EditTensorState& st, const io::Checkpoint& base,
                            const std::string& name, uint64_t shared, std::span<const float> post,
                            std::span<float> out, uint64_t at);

// One block of `apply`: out = base + Δ' with Δ' decoded from the pack. Returns the values
// non-finite in `out` whose base and Δ' are finite.
uint64_t apply_block(std::span<const float> edited, std::span<const float> base,
                     std::span<float> out);

}  // namespace deltaedit::engine
