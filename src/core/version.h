#pragma once

namespace anvil {
// Set by CMake from project(VERSION); the checkpoint format has its own version.
const char* version_string();
}  // namespace anvil
