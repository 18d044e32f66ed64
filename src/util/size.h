// Byte sizes as users type them (--max-memory 4GB, --max-shard-size 500MB): parsed exactly, with
// std::from_chars, never through floating point, and never past 2^64 − 1.
#pragma once
#include <cstdint>
#include <string_view>

namespace deltaedit::util {

// The units a size may carry (case-insensitive), for messages.
inline constexpr const char* kSizeUnits = "B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB";

// Bytes in `text`: digits, an optional fraction (".5"), an optional unit; e.g. 5GB, 1.5GiB, 4096.
// Throws Error(Usage) for anything else ("", ".", "1.2.3GB", "-1GB", "+1", "1e9") and for a value
// past 2^64 − 1 bytes. A fraction of a byte is rounded down.
uint64_t parse_size(std::string_view text);

// parse_size for the command-line option `flag`: errors name the flag; a size below `min` bytes
// is refused too.
uint64_t parse_size_option(std::string_view flag, std::string_view text, uint64_t min = 1);

}  // namespace deltaedit::util
