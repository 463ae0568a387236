// Records the largest single operator-new request, so tests can prove that a file declaring
// absurd sizes is refused without a matching allocation (alloc_probe.cpp replaces the global
// operator new of the test binary).
#pragma once

#include <cstddef>

namespace kvbits::test {

void reset_largest_allocation();
size_t largest_allocation();

}  // namespace kvbits::test
