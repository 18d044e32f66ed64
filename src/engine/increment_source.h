// The increments D = Δ' − Δ of an edit, one tensor at a time, for consumers that must not hold
// every tensor's D at once (the streamed model passes). Each call recomputes the tensor's edit
// with edit_tensor (the keyed RNG makes every random op reproducible per tensor), so asking twice
// gives the same bytes as edit_increments.
#pragma once
#include <span>
#include <string>
#include <vector>

#include "engine/edit_engine.h"
#include "util/big_buffer.h"

namespace deltaedit::engine {

class IncrementSource {
 public:
  // The sources must outlive this object.
  IncrementSource(const OpChain& chain, const io::Checkpoint& base, const io::TensorSource& post,
                  const io::SafetensorsFile* grad);

  // The tensors the chain edits, in the order edit_increments visits them.
  const std::vector<std::string>& names() const { return names_; }
  bool edits(const std::string& name) const;
  // Writes D of `name` (f32, numel of the tensor) into `out` and returns ‖Δ‖² of the tensor.
  double increment(const std::string& name, std::span<float> out) const;
  // D of `name` in the buffer the edit was computed in (no second copy); ‖Δ‖² into *delta_sumsq.
  util::BigFloatBuffer increment(const std::string& name, double* delta_sumsq) const;
  // ‖Δ‖² of one tensor, without running the chain.
  double delta_sumsq(const std::string& name) const;

 private:
  const OpChain& chain_;
  const io::Checkpoint& base_;
  const io::TensorSource& post_;
  const io::SafetensorsFile* grad_;
  std::vector<std::string> names_;
};

}  // namespace deltaedit::engine
