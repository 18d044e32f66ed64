// The merge-method registry: one line per method (MERGE.md §2). A new method is one file, one
// line here and its tests.
#include <memory>

#include "merge/method_impl.h"

namespace deltaedit::merge {
namespace {

using Factory = std::unique_ptr<Method> (*)();

constexpr Factory kMethods[] = {
    [] { return detail::make_linear(); },
    [] { return detail::make_task_arithmetic("task_arithmetic"); },
    [] { return detail::make_task_arithmetic("ties"); },
    [] { return detail::make_task_arithmetic("dare_ties"); },
    [] { return detail::make_task_arithmetic("dare_linear"); },
    [] { return detail::make_task_arithmetic("breadcrumbs"); },
    [] { return detail::make_task_arithmetic("breadcrumbs_ties"); },
    [] { return detail::make_task_arithmetic("della"); },
    [] { return detail::make_task_arithmetic("della_linear"); },
    [] { return detail::make_model_stock(); },
    [] { return detail::make_slerp(); },
    [] { return detail::make_nuslerp(); },
    [] { return detail::make_passthrough(); },
    [] { return detail::make_sce(); },
    [] { return detail::make_karcher(); },
    [] { return detail::make_multislerp(); },
    [] { return detail::make_nearswap(); },
    [] { return detail::make_ram(); },
    [] { return detail::make_ramplus_tl(); },
};

// Built once, immutable afterwards.
const std::vector<std::unique_ptr<Method>>& table() {
  static const std::vector<std::unique_ptr<Method>> methods = [] {
    std::vector<std::unique_ptr<Method>> v;
    for (Factory f : kMethods) v.push_back(f());
    return v;
  }();
  return methods;
}

}  // namespace

const Method* find_method(std::string_view name) {
  for (const auto& m : table()) {
    if (m->info().name == name) return m.get();
  }
  return nullptr;
}

std::vector<const Method*> all_methods() {
  std::vector<const Method*> v;
  for (const auto& m : table()) v.push_back(m.get());
  return v;
}

}  // namespace deltaedit::merge
