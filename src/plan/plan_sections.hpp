// kvbits — the sections of a plan file and their binary layouts (docs/plan-format.md §3).
// Internal header.
#pragma once

#include <vector>

#include "kvbits/plan.hpp"
#include "plan/plan_container.hpp"

namespace kvbits::plan_sections {

// The 1.0 sections in writer order; also the order in which they are decoded.
const std::vector<plan_file::SectionId>& section_ids();

// One raw payload per id of section_ids(), same order. The plan must be valid.
std::vector<plan_file::SectionToWrite> encode_sections(const Plan& plan);

// Decodes the sections returned by read_container(..., section_ids()). Checks every size and
// structural field it needs to go on; the caller runs Plan::validate for the remaining rules.
Plan decode_sections(const std::vector<plan_file::StoredSection>& sections);

}  // namespace kvbits::plan_sections
