// kvbits CLI — the date a command records: the given one, else SOURCE_DATE_EPOCH (for
// reproducible outputs), else now; always UTC, formatted with strftime's `format`.
#pragma once

#include <string>

namespace kvbits::cli {

std::string utc_date(const std::string& given, const char* format);

}  // namespace kvbits::cli
