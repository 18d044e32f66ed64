// Writes the bytes of reconstruct_lowrank on the probe factors to the file named by argv[1]. Built
// from linalg/lowrank.cpp with other code-generation flags (see tests/linalg/CMakeLists).
#include <cstdio>
#include <vector>

#include "fma_input.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const auto f = deltaedit::testing::contraction_probe_factors();
  std::vector<float> out(size_t(f.rows * f.cols));
  deltaedit::linalg::reconstruct_lowrank(f, out);
  FILE* fp = std::fopen(argv[1], "wb");
  if (!fp) return 1;
  const size_t n = std::fwrite(out.data(), sizeof(float), out.size(), fp);
  return std::fclose(fp) == 0 && n == out.size() ? 0 : 1;
}
