#include "sequence_table.hpp"

#include <string>
#include <utility>

#include "kvbits/status.hpp"

namespace kvbits::cache_detail {

Sequence& SequenceTable::get(uint64_t id) const {
  Sequence* s = find(id);
  if (s == nullptr) fail(StatusCode::not_found, "cache: no sequence with id " + std::to_string(id));
  return *s;
}

void SequenceTable::require_room() const {
  if (full())
    fail(StatusCode::capacity_exhausted,
         "cache: all " + std::to_string(max_) + " sequence slots are in use (max_sequences)");
}

uint64_t SequenceTable::insert(std::unique_ptr<Sequence> seq) {
  require_room();
  if (free_ids_.empty()) {
    slots_.push_back(std::move(seq));  // may throw bad_alloc before anything changed
    ++live_;
    return slots_.size() - 1;
  }
  const uint64_t id = *free_ids_.begin();
  free_ids_.erase(free_ids_.begin());
  slots_[size_t(id)] = std::move(seq);
  ++live_;
  return id;
}

std::unique_ptr<Sequence> SequenceTable::take(uint64_t id) {
  std::unique_ptr<Sequence> s = std::move(slots_[size_t(id)]);
  --live_;
  // Trailing free slots are dropped so ids stay as small as possible; the set may allocate,
  // so a failure there simply keeps the id out of reuse (the table stays consistent).
  if (id + 1 == slots_.size()) {
    slots_.pop_back();
    while (!slots_.empty() && !slots_.back()) {
      free_ids_.erase(slots_.size() - 1);
      slots_.pop_back();
    }
  } else {
    try {
      free_ids_.insert(id);
    } catch (const std::bad_alloc&) {
    }
  }
  return s;
}

std::vector<uint64_t> SequenceTable::ids() const {
  std::vector<uint64_t> out;
  out.reserve(live_);
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i]) out.push_back(i);
  return out;
}

}  // namespace kvbits::cache_detail
