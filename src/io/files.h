// Whole-file text reads and atomic writes, with errors that name the file.
#pragma once

#include <string>

namespace anvil::io {

// The file's bytes; a user error names the file when it cannot be read.
std::string read_text_file(const std::string& path);

// Writes `path.partial`, fsyncs it and renames it over `path`: a reader sees the old file or
// the whole new one, never a torn one. A user error names the file on failure.
void write_text_file_atomic(const std::string& path, const std::string& text);

}  // namespace anvil::io
