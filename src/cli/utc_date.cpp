#include "cli/utc_date.hpp"

#include <cstdlib>
#include <ctime>

namespace kvbits::cli {

std::string utc_date(const std::string& given, const char* format) {
  if (!given.empty()) return given;
  std::time_t t = std::time(nullptr);
  if (const char* sde = std::getenv("SOURCE_DATE_EPOCH")) t = std::time_t(std::strtoll(sde, nullptr, 10));
  char buf[64];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

}  // namespace kvbits::cli
