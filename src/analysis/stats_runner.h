// `deltaedit stats`: per-tensor and total delta statistics, streaming over two checkpoints.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "analysis/delta_stats.h"
#include "io/pairing.h"
#include "util/thread_pool.h"
#include "io/checkpoint.h"

namespace deltaedit::analysis {

struct TensorStats {
  std::string name;
  DeltaStats stats;
  // A resized tensor (post has rows added, io::PairStatus::Resized): the statistics are over the
  // `shared_rows` rows both sides hold; post's other rows have no base to differ from.
  int64_t shared_rows = 0, post_rows = 0;
};

struct StatsReport {
  std::vector<TensorStats> tensors;   // editable and resized tensors, in post order
  DeltaStats total;
  std::vector<io::TensorPair> skipped;  // everything not editable, with the reason
  nlohmann::json to_json() const;
};

// Progress callback: (tensors done, tensors total, bytes done).
using Progress = std::function<void(size_t, size_t, uint64_t)>;

// post: a checkpoint, or any source of W_post (e.g. a PEFT adapter over base, io/peft.h).
StatsReport compute_stats(const io::Checkpoint& base, const io::TensorSource& post, unsigned threads,
                          const Progress& progress = {});

}  // namespace deltaedit::analysis
